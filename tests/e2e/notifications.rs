//! Patients' e-mails against a real SMTP server (Python's aiosmtpd from PyPI, writing a maildir):
//! a contract to sign, charges issued, a payment confirmed, an installment due, a refund completed
//! — each arrives once with its content, also when the SMTP server is down for a while and comes
//! back; the app lists them.

use crate::support::{Patient, Provider, TestApp, pay};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const AIOSMTPD_VERSION: &str = "1.4.6";

/// A Python with aiosmtpd: `MEDPAY_AIOSMTPD_PYTHON` when set, else a virtual environment made in
/// the tests' scratch folder on first use.
fn aiosmtpd_python() -> PathBuf {
    if let Ok(path) = std::env::var("MEDPAY_AIOSMTPD_PYTHON") {
        return PathBuf::from(path);
    }
    crate::support::python_venv(&format!("aiosmtpd=={AIOSMTPD_VERSION}")).join("python")
}

struct Smtp {
    process: std::process::Child,
}

impl Smtp {
    fn start(python: &Path, port: u16, maildir: &Path) -> Smtp {
        let mut process = std::process::Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        // Listening once it accepts a connection.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Smtp { process };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = process.kill();
        let _ = process.wait();
        panic!("aiosmtpd never listened on {port}");
    }

    fn stop(self) {
        drop(self);
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Every message in the maildir: Message-ID → (subject, text).
fn received(maildir: &Path) -> Vec<(String, String, String)> {
    let mut messages = Vec::new();
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else { return messages };
    for entry in entries.flatten() {
        let raw = std::fs::read(entry.path()).unwrap();
        let message = mail_parser::MessageParser::default().parse(&raw).expect("an e-mail");
        messages.push((
            message.message_id().unwrap_or_default().to_owned(),
            message.subject().unwrap_or_default().to_owned(),
            message.body_text(0).map(|text| text.into_owned()).unwrap_or_default(),
        ));
    }
    messages
}

async fn wait_for_messages(maildir: &Path, count: usize) -> Vec<(String, String, String)> {
    let mut messages = Vec::new();
    for _ in 0..400 {
        messages = received(maildir);
        if messages.len() >= count {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{count} e-mails never arrived; {} did: {messages:#?}", messages.len());
}

async fn attempts(pool: &sqlx::AnyPool, kind: &str) -> i64 {
    let sql = "SELECT COALESCE(MAX(attempts), 0) AS n FROM patient_notifications WHERE kind = $1";
    sqlx::query_scalar::<_, i64>(sql).bind(kind.to_owned()).fetch_one(pool).await.unwrap()
}

async fn contract_envelope(app: &TestApp, provider: &Provider, id: &str) -> String {
    for _ in 0..200 {
        let (_, events) =
            app.request(Method::GET, &format!("/v1/payments/{id}/events"), Some(&provider.key), None, None).await;
        let envelope = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|event| event["type"] == "payment.contract_sent")
            .and_then(|event| event["data"]["contract"]["envelope_id"].as_str().map(str::to_owned));
        if let Some(envelope) = envelope {
            return envelope;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no contract was sent");
}

async fn patient_named(app: &TestApp, provider: &Provider) -> Patient {
    let body = json!({"name": "Helena Costa", "cpf": crate::support::unique_cpf(), "email": "helena.costa@example.com", "phone": "+55 31 97777-1234"});
    let (status, created) = app.request(Method::POST, "/v1/patients", Some(&provider.key), Some(&body), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    Patient { id: created["id"].as_str().unwrap().to_owned(), token: created["token"].as_str().unwrap().to_owned() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notification_arrives_once_also_across_an_smtp_outage() {
    let python = aiosmtpd_python();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let maildir = std::env::temp_dir().join(format!("medpay-maildir-{}", uuid::Uuid::new_v4().simple()));
    let smtp = Smtp::start(&python, port, &maildir);
    let app = TestApp::spawn_with(crate::support::Engine::Sqlite, |config| {
        config.patients.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        config.patients.public_url = Some("https://pagamentos.medpay.test".to_owned());
    })
    .await;
    let pool = {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(app.database_url()).await.unwrap()
    };
    let clinic = app.provider(json!({"name": "Clínica Horizonte"})).await;
    let helena = patient_named(&app, &clinic).await;
    let body = json!({
        "patient_id": helena.id, "provider_id": clinic.id,
        "procedure": {"tuss_code": "30715016", "description": "Cirurgia de catarata"},
        "amount_centavos": 450_000, "method": "pix", "installments": 3, "monthly_interest_bps": 199,
        "device": {"id": "phone-of-helena", "ip": "200.100.50.25"}
    });
    let created = pay(&app, &clinic, &body).await;
    assert_eq!(created["status"], "approved", "waiting for the contract: {created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let cet = created["cet_annual_bps"].as_i64().unwrap();

    // The contract to sign.
    let envelope = contract_envelope(&app, &clinic, &id).await;
    let first = wait_for_messages(&maildir, 1).await;
    assert!(first[0].1.starts_with("Assine o contrato do seu parcelamento"), "{first:?}");
    assert!(first[0].2.contains(&format!("CET de {},{:02}% ao ano", cet / 100, cet % 100)), "{}", first[0].2);

    // SMTP goes down; the contract is signed and the first charge issued and paid meanwhile.
    smtp.stop();
    let signed = app.client.post(format!("{}/sandbox/envelopes/{envelope}/sign", app.clicksign)).send().await.unwrap();
    assert_eq!(signed.status(), StatusCode::NO_CONTENT);
    let charged = crate::money::wait_for(&app, &clinic, &id, |p| p["charge"]["status"] == "active").await;
    let first_charge = charged["charge"].clone();
    for _ in 0..200 {
        if attempts(&pool, "charge_issued").await >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(attempts(&pool, "charge_issued").await >= 2, "tried, and tried again, while SMTP was down");
    let paid = app
        .client
        .post(format!("{}/sandbox/charges/{}/pay", app.celcoin, first_charge["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), StatusCode::NO_CONTENT);
    let second = crate::money::wait_for(&app, &clinic, &id, |p| p["charge"]["installment"] == 2).await;
    assert_eq!(received(&maildir).len(), 1, "nothing arrives while SMTP is down");

    // Installment 3 falls due in two days (as if a month went by): a reminder.
    let due = (chrono::Utc::now() - chrono::Duration::hours(3)).date_naive() + chrono::Duration::days(2);
    sqlx::query("UPDATE installments SET due_date = $1 WHERE payment_id = $2 AND number = 3")
        .bind(due.to_string())
        .bind(id.clone())
        .execute(&pool)
        .await
        .unwrap();
    // SMTP comes back on the same port.
    let smtp = Smtp::start(&python, port, &maildir);
    // A refund of R$ 10,00 completes.
    let refund = json!({"amount_centavos": 1_000, "reason": "cobrança de taxa indevida"});
    let (status, refunded) = app
        .request(
            Method::POST,
            &format!("/v1/payments/{id}/refunds"),
            Some(&clinic.key),
            Some(&refund),
            Some(&crate::support::new_key()),
        )
        .await;
    assert!(status.is_success(), "{refunded}");

    // contract, charge 1, confirmation 1, charge 2, installment 3 due, refund.
    let messages = wait_for_messages(&maildir, 6).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let messages = if received(&maildir).len() > messages.len() { received(&maildir) } else { messages };
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for (message_id, _, _) in &messages {
        *by_id.entry(message_id.clone()).or_default() += 1;
    }
    assert!(by_id.values().all(|count| *count == 1), "each once: {by_id:?}");
    assert_eq!(messages.len(), 6, "{messages:#?}");
    let find = |prefix: &str| -> Vec<&(String, String, String)> {
        messages.iter().filter(|(_, subject, _)| subject.starts_with(prefix)).collect()
    };
    let amount = medpay_models::Money::from_centavos(first_charge["amount_centavos"].as_i64().unwrap()).brl();
    let charges = find(&format!("Sua cobrança PIX de {amount} — Clínica Horizonte"));
    assert_eq!(charges.len(), 2, "{messages:#?}");
    let codes = [first_charge["pix_br_code"].as_str().unwrap(), second["charge"]["pix_br_code"].as_str().unwrap()];
    for code in codes {
        assert!(charges.iter().any(|(_, _, text)| text.contains(code)), "the BR Code {code} is in an e-mail");
    }
    let confirmed = find(&format!("Pagamento confirmado: {amount}"));
    assert_eq!(confirmed.len(), 1, "{messages:#?}");
    assert!(confirmed[0].2.contains("parcela 1 de 3 de Cirurgia de catarata"), "{}", confirmed[0].2);
    let reminder = find("Sua parcela 3 de 3 vence em");
    assert_eq!(reminder.len(), 1, "{messages:#?}");
    assert!(reminder[0].1.ends_with(&due.format("%d/%m/%Y").to_string()), "{}", reminder[0].1);
    let refund = find("Reembolso concluído: R$ 10,00 — Clínica Horizonte");
    assert_eq!(refund.len(), 1, "{messages:#?}");
    for (_, subject, text) in &messages {
        assert!(text.starts_with("Olá, Helena!"), "{subject}: {text}");
        assert!(text.contains("https://pagamentos.medpay.test/paciente#codigo=mpl_"), "a sign-in link: {text}");
    }

    // The app lists them, as sent, without the sign-in link.
    let (status, listed) = app.request(Method::GET, "/v1/me/notifications", Some(&helena.token), None, None).await;
    assert_eq!(status, StatusCode::OK);
    let listed = listed["data"].as_array().unwrap();
    assert_eq!(listed.len(), 6, "{listed:#?}");
    assert!(listed.iter().all(|n| n["state"] == "sent" && n["payment_id"] == id.as_str()), "{listed:#?}");
    assert!(listed.iter().all(|n| !n["body"].as_str().unwrap().contains("codigo=")), "{listed:#?}");
    let kinds: std::collections::BTreeSet<&str> = listed.iter().map(|n| n["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 5, "every kind: {kinds:?}");
    smtp.stop();
    app.stop().await;
    let _ = std::fs::remove_dir_all(&maildir);
}

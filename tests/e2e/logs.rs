//! No personal data in the logs (issue 12): the service's own flows run with every MedPay log line
//! captured as JSON at debug level, and none of them holds a CPF, CNPJ, e-mail, phone or token in
//! the clear — in any spelling of it.

use crate::money::{sandbox, wait_for};
use crate::support::{Engine, TestApp, new_key, pay, payment_body, unique_cnpj, unique_cpf};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// Where the captured lines go.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Every way a secret or a personal number might be written out.
fn spellings(value: &str) -> Vec<String> {
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    let mut all = vec![value.to_owned()];
    if digits.len() == 11 && value.chars().all(|c| c.is_ascii_digit()) {
        all.push(format!("{}.{}.{}-{}", &digits[..3], &digits[3..6], &digits[6..9], &digits[9..]));
    }
    if digits.len() == 14 {
        all.push(digits.clone());
        all.push(format!("{}.{}.{}/{}-{}", &digits[..2], &digits[2..5], &digits[5..8], &digits[8..12], &digits[12..]));
    }
    if value.starts_with('+') {
        all.push(digits.clone());
        all.push(digits[2..].to_owned());
    }
    all.sort();
    all.dedup();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_holds_personal_data_or_a_token() {
    let captured = Captured::default();
    let filter = tracing_subscriber::EnvFilter::new(
        "info,medpay=debug,medpay_api=debug,medpay_actors=debug,medpay_store=debug,medpay_gateways=debug,\
         medpay_chatbot=debug,medpay_ml=debug",
    );
    tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(captured.clone()).init();
    let app = TestApp::spawn(Engine::Sqlite).await;
    let mut secrets: Vec<String> = vec![app.admin.clone(), app.analyst.clone()];

    // A provider with its CNPJ written with punctuation.
    let raw_cnpj = unique_cnpj();
    let cnpj =
        format!("{}.{}.{}/{}-{}", &raw_cnpj[..2], &raw_cnpj[2..5], &raw_cnpj[5..8], &raw_cnpj[8..12], &raw_cnpj[12..]);
    let body = json!({"name": "Clínica Aurora", "cnpj": cnpj, "fee_bps": 500, "escrow": true});
    let (status, created) = app.request(Method::POST, "/v1/providers", Some(&app.admin), Some(&body), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let provider = crate::support::Provider {
        id: created["id"].as_str().unwrap().to_owned(),
        key: created["api_key"].as_str().unwrap().to_owned(),
        cnpj: created["cnpj"].as_str().unwrap().to_owned(),
    };
    secrets.extend([provider.key.clone(), raw_cnpj.clone()]);

    // Two patients with their CPF, e-mail and phone.
    let mut patients = Vec::new();
    for (name, email, phone) in [
        ("Joana Prado", "joana.prado@example.com", "+55 21 98765-4321"),
        ("Rui Lima", "rui@example.org", "+55 11 91234-5678"),
    ] {
        let cpf = unique_cpf();
        let body = json!({"name": name, "cpf": cpf, "email": email, "phone": phone});
        let (status, created) = app.request(Method::POST, "/v1/patients", Some(&provider.key), Some(&body), None).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        // Registered again: refused, with the CPF in the request.
        let (status, _) = app.request(Method::POST, "/v1/patients", Some(&provider.key), Some(&body), None).await;
        assert!(status.is_client_error(), "{status}");
        let token = created["token"].as_str().unwrap().to_owned();
        secrets.extend([cpf.clone(), email.to_owned(), phone.to_owned(), token.clone()]);
        patients.push(crate::support::Patient { id: created["id"].as_str().unwrap().to_owned(), token });
    }
    // Bad input of every kind, with personal data in it.
    let refused_cpf = unique_cpf();
    secrets.push(refused_cpf.clone());
    for body in [
        json!({"name": "X", "cpf": "123.456.789-00", "email": "x@example.com", "phone": "+55 11 90000-0000"}),
        json!({"name": "X", "cpf": refused_cpf, "email": "not-an-email", "phone": "1"}),
    ] {
        let (status, _) = app.request(Method::POST, "/v1/patients", Some(&provider.key), Some(&body), None).await;
        assert!(status.is_client_error(), "{status}");
    }

    // Payments: one paid and refunded in part, one in review, one for nobody.
    let paid = pay(&app, &provider, &payment_body(&provider, &patients[0], 120_000)).await;
    let charge = paid["charge"]["id"].as_str().unwrap().to_owned();
    let (status, _) = sandbox(&app, &format!("/sandbox/charges/{charge}/pay"), json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let id = paid["id"].as_str().unwrap().to_owned();
    wait_for(&app, &provider, &id, |payment| payment["status"] == "held_in_escrow").await;
    let refund = json!({"amount_centavos": 20_000, "reason": "sessão remarcada"});
    let path = format!("/v1/payments/{id}/refunds");
    let (status, body) = app.request(Method::POST, &path, Some(&provider.key), Some(&refund), Some(&new_key())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    crate::support::review_above(&app, 200_000).await;
    pay(&app, &provider, &payment_body(&provider, &patients[1], 250_000)).await;
    let mut nobody = payment_body(&provider, &patients[1], 1_000);
    nobody["patient_id"] = json!(uuid::Uuid::new_v4().to_string());
    let (status, _) =
        app.request(Method::POST, "/v1/payments", Some(&provider.key), Some(&nobody), Some(&new_key())).await;
    assert!(status.is_client_error());

    // The patient tells the bot their CPF and e-mail in the chat.
    let (status, opened) =
        app.request(Method::POST, "/v1/chat/conversations", Some(&patients[0].token), None, None).await;
    assert_eq!(status, StatusCode::CREATED);
    let path = format!("/v1/chat/conversations/{}/messages", opened["id"].as_str().unwrap());
    for text in [format!("meu cpf é {}", secrets[4]), "já caiu meu pix? meu email é joana.prado@example.com".to_owned()]
    {
        let (status, said) =
            app.request(Method::POST, &path, Some(&patients[0].token), Some(&json!({"text": text})), None).await;
        assert_eq!(status, StatusCode::OK, "{said}");
    }

    // The patient app: a sign-in link, its code traded for a session, the session used, a code
    // that does not work. The notifier meanwhile writes the patients' e-mails (to a folder).
    let path = format!("/v1/patients/{}/sign-in-links", patients[0].id);
    let (status, link) = app.request(Method::POST, &path, Some(&provider.key), None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let code = link["path"].as_str().unwrap().split("codigo=").nth(1).unwrap().to_owned();
    let (status, session) =
        app.request(Method::POST, "/v1/patient-sessions", None, Some(&json!({"code": code})), None).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let session = session["token"].as_str().unwrap().to_owned();
    let (status, _) = app.request(Method::GET, "/v1/me/payments", Some(&session), None, None).await;
    assert_eq!(status, StatusCode::OK);
    let wrong_code = "mpl_0123456789abcdef0123456789abcdef".to_owned();
    let (status, _) =
        app.request(Method::POST, "/v1/patient-sessions", None, Some(&json!({"code": wrong_code})), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    secrets.extend([code, session, wrong_code]);

    // People, their tokens, and tokens that do not work.
    let person = json!({"name": "Ana Souza", "email": "ana.souza@medpay.com.br", "role": "analyst"});
    let (status, made) = app.request(Method::POST, "/v1/people", Some(&app.admin), Some(&person), None).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    secrets.extend(["ana.souza@medpay.com.br".to_owned(), made["token"].as_str().unwrap().to_owned()]);
    for wrong in ["mpk_0123456789abcdef0123456789abcdef", "mpp_guessguessguessguess", "mpt_nope"] {
        secrets.push(wrong.to_owned());
        let (status, _) = app.request(Method::GET, "/v1/payments", Some(wrong), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // A webhook endpoint and its secret.
    let url = json!({"url": "https://hooks.aurora.example/medpay"});
    let (status, endpoint) =
        app.request(Method::POST, "/v1/webhook-endpoints", Some(&provider.key), Some(&url), None).await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    secrets.push(endpoint["secret"].as_str().unwrap().to_owned());
    app.stop().await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 15, "the flows were logged: {} lines", lines.len());
    for line in &lines {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
    // The lines that name a party name it masked: the check below looks where the data would be.
    assert!(lines.iter().any(|line| line.contains("\"cpf\":\"***.***.***-")), "a masked CPF is logged");
    assert!(lines.iter().any(|line| line.contains("\"cnpj\":\"**.***.***/****-")), "a masked CNPJ is logged");
    let mut leaks = Vec::new();
    for secret in &secrets {
        for spelling in spellings(secret) {
            if let Some(line) = lines.iter().find(|line| line.contains(&spelling)) {
                leaks.push(format!("{spelling:?} in {line}"));
            }
        }
    }
    assert!(leaks.is_empty(), "{} leaks:\n{}", leaks.len(), leaks.join("\n"));
}

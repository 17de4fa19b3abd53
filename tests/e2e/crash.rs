//! The real binary killed with SIGKILL, again and again, while clients that retry with their
//! Idempotency-Key send card payments to a Celcoin sandbox running as its own process (a card is
//! captured as soon as it is charged, so a charge made before its payment was recorded would be
//! money taken for nothing). Afterwards: every charge at Celcoin belongs to exactly one stored
//! payment, no payment was charged twice, every key made one payment and replays one answer byte
//! for byte, the ledger balances and `medpay reconcile` finds no difference.

use crate::on_both_engines;
use crate::support::{Engine, TestDatabase, unique_cnpj, unique_cpf};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

const ADMIN: &str = "crash-admin-token";
const WEBHOOK_PASSWORD: &str = "crash-webhook-password";
const CLIENTS: usize = 8;
const PAYMENTS_PER_CLIENT: usize = 40;
const KILLS: usize = 3;
/// Attempts of one payment by its client before the test gives up on the service.
const ATTEMPTS_MAX: usize = 400;

/// Starts `medpay` with `arguments` and returns it with the address it printed after `prefix`.
async fn spawn(
    arguments: &[&str],
    environment: &[(&str, String)],
    directory: &std::path::Path,
    prefix: &str,
) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_medpay"));
    command.args(arguments).current_dir(directory).env_remove("REDIS_URL").env("RUST_LOG", "warn");
    for (name, value) in environment {
        command.env(name, value);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..50 {
        let line = lines.next_line().await.unwrap().expect("the process printed where it listens");
        if let Some(rest) = line.strip_prefix(prefix) {
            let address = rest.split_whitespace().next().unwrap_or_default().trim_start_matches("http://").to_owned();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (child, address);
        }
    }
    panic!("{arguments:?} did not say where it listens");
}

/// POSTs `body` and reads the 201's JSON.
async fn created(client: &reqwest::Client, url: &str, token: &str, body: &Value) -> Value {
    let response = client.post(url).bearer_auth(token).json(body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Node {
    database_url: String,
    celcoin: String,
    port: u16,
    directory: std::path::PathBuf,
}

impl Node {
    fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MEDPAY_BIND", format!("127.0.0.1:{}", self.port)),
            ("DATABASE_URL", self.database_url.clone()),
            ("MEDPAY_ADMIN_TOKEN", ADMIN.to_owned()),
            ("MEDPAY_SCORING_HOUR", "14".to_owned()),
            ("MEDPAY_MONEY_SWEEP_MS", "200".to_owned()),
            ("MEDPAY_PAYMENTS_PER_PATIENT_PER_MINUTE", "1000".to_owned()),
            ("CELCOIN_URL", format!("http://{}", self.celcoin)),
            ("CELCOIN_WEBHOOK_PASSWORD", WEBHOOK_PASSWORD.to_owned()),
        ]
    }

    async fn start(&self) -> Child {
        spawn(&["serve"], &self.environment(), &self.directory, "MedPay listening on ").await.0
    }
}

/// Sends one payment until it gets its 201, through refused connections, 5xx and 409s. Returns
/// every 201 body it was given.
async fn pay_until_acknowledged(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
    api_key: &str,
) -> Vec<String> {
    let mut answers = Vec::new();
    for _ in 0..ATTEMPTS_MAX {
        let sent = client
            .post(format!("{base}/v1/payments"))
            .bearer_auth(api_key)
            .header("Idempotency-Key", key)
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(response) = sent {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status == StatusCode::CREATED {
                answers.push(text);
                // Once more after the first answer: a retry must replay it.
                if answers.len() == 2 {
                    return answers;
                }
                continue;
            }
            assert!(
                status.is_server_error() || status == StatusCode::CONFLICT,
                "only a retryable refusal is expected, got {status}: {text}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("payment {key} was never acknowledged");
}

async fn sigkill_while_card_payments_are_charged_leaves_no_charge_without_a_payment(engine: Engine) {
    let database = TestDatabase::create(engine).await;
    let directory = std::env::temp_dir().join(format!("medpay-crash-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&directory).unwrap();
    let port = free_port();
    let webhook = format!("http://127.0.0.1:{port}/v1/gateways/celcoin/webhooks");
    let (mut sandbox, celcoin) = spawn(
        &[
            "sandbox",
            "celcoin",
            "--bind",
            "127.0.0.1:0",
            "--webhook-url",
            &webhook,
            "--webhook-password",
            WEBHOOK_PASSWORD,
        ],
        &[],
        &directory,
        "Celcoin sandbox listening on ",
    )
    .await;
    let node =
        Node { database_url: database.url.clone(), celcoin: celcoin.clone(), port, directory: directory.clone() };
    let base = format!("http://127.0.0.1:{port}");
    let client = crate::support::client();
    let mut server = node.start().await;

    let provider = json!({"name": "Hospital Central", "cnpj": unique_cnpj(), "fee_bps": 300, "escrow": false, "score_fail_mode": "open"});
    let provider = created(&client, &format!("{base}/v1/providers"), ADMIN, &provider).await;
    let api_key = provider["api_key"].as_str().unwrap().to_owned();
    let mut patients = Vec::new();
    for index in 0..CLIENTS * PAYMENTS_PER_CLIENT / 3 {
        let patient = json!({"name": format!("Paciente {index}"), "cpf": unique_cpf(), "email": "p@example.com", "phone": "+55 11 98888-7777"});
        let created = created(&client, &format!("{base}/v1/patients"), &api_key, &patient).await;
        patients.push(created["id"].as_str().unwrap().to_owned());
    }

    let answers: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let mut clients = Vec::new();
    for number in 0..CLIENTS {
        let (client, base, api_key, answers) = (client.clone(), base.clone(), api_key.clone(), answers.clone());
        let provider_id = provider["id"].as_str().unwrap().to_owned();
        let patients = patients.clone();
        clients.push(tokio::spawn(async move {
            for index in 0..PAYMENTS_PER_CLIENT {
                let key = format!("client-{number}-payment-{index}-{}", uuid::Uuid::new_v4().simple());
                let patient = (number * PAYMENTS_PER_CLIENT + index) % patients.len();
                let body = json!({
                    "patient_id": patients[patient], "provider_id": provider_id,
                    "procedure": {"tuss_code": "10101012", "description": "Consulta"},
                    "amount_centavos": 20_000 + i64::try_from(index).unwrap(), "method": "card",
                    "device": {"id": format!("phone-{patient}"), "ip": "200.100.50.25", "card_fingerprint": format!("card-{patient}")}
                });
                let given = pay_until_acknowledged(&client, &base, &key, &body, &api_key).await;
                answers.lock().await.insert(key, given);
            }
        }));
    }
    // Kill the node while the clients pay, and start it again each time.
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(300 + 200 * u64::try_from(kill).unwrap())).await;
        server.start_kill().unwrap();
        server.wait().await.unwrap();
        server = node.start().await;
    }
    for handle in clients {
        handle.await.unwrap();
    }

    // Every key: one payment, one answer replayed byte for byte.
    let answers = answers.lock().await.clone();
    assert_eq!(answers.len(), CLIENTS * PAYMENTS_PER_CLIENT);
    let mut payment_ids = HashSet::new();
    let mut approved = 0u64;
    for (key, given) in &answers {
        assert!(given.windows(2).all(|pair| pair[0] == pair[1]), "key {key} answered differently: {given:?}");
        let answer: Value = serde_json::from_str(&given[0]).unwrap();
        payment_ids.insert(answer["id"].as_str().unwrap().to_owned());
        approved += u64::from(answer["decision"]["outcome"] == "approve");
    }
    assert!(approved > 0, "some payments were approved and charged");
    assert_eq!(payment_ids.len(), answers.len(), "one payment per key");
    let mut stored = HashSet::new();
    let mut before = String::new();
    loop {
        let path = if before.is_empty() {
            "/v1/payments?limit=200".to_owned()
        } else {
            format!("/v1/payments?limit=200&before={before}")
        };
        let page: Value =
            client.get(format!("{base}{path}")).bearer_auth(&api_key).send().await.unwrap().json().await.unwrap();
        stored.extend(page["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        match page["next_before"].as_str() {
            Some(next) => before = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(stored, payment_ids, "the store holds exactly the acknowledged payments");

    // The sweep finishes what the kills cut short; the sandbox delivers its last webhooks.
    let mut report = String::new();
    for _ in 0..100 {
        let stats: Value =
            client.get(format!("http://{celcoin}/sandbox/stats")).send().await.unwrap().json().await.unwrap();
        let reconciled = Command::new(env!("CARGO_BIN_EXE_medpay"))
            .arg("reconcile")
            .current_dir(&directory)
            .envs(node.environment())
            .output()
            .await
            .unwrap();
        report = String::from_utf8_lossy(&reconciled.stdout).into_owned();
        if reconciled.status.success() && stats["webhooks_pending"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The report is the JSON document it prints (after its log lines, if any).
    let report: Value =
        report.find('{').and_then(|start| serde_json::from_str(&report[start..]).ok()).unwrap_or(Value::String(report));
    assert_eq!(report["ok"], true, "medpay reconcile: {report}");
    // Reconciliation compares charge by charge: one charge per approved payment, none unknown to us.
    assert_eq!(report["charges_compared"].as_u64(), Some(approved), "{report}");
    let check: Value =
        client.get(format!("{base}/v1/ledger/check")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    assert_eq!(check["ok"], true, "{check}");

    server.start_kill().unwrap();
    server.wait().await.unwrap();
    sandbox.start_kill().unwrap();
    let _ = std::fs::remove_dir_all(&directory);
    database.drop_database().await;
}
on_both_engines!(sigkill_while_card_payments_are_charged_leaves_no_charge_without_a_payment);

//! The real binary, killed with SIGKILL right after a 201 and started again: nothing that was
//! acknowledged is lost, and a retry replays the acknowledged response.

use crate::on_both_engines;
use crate::support::{Engine, TestDatabase, new_key, unique_cnpj, unique_cpf};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const ADMIN: &str = "durability-admin-token";
/// Lines of output read while waiting for the server to say where it listens.
const STARTUP_LINES_MAX: usize = 50;

async fn start(database_url: &str, data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_medpay"))
        .current_dir(data_dir)
        .env("MEDPAY_BIND", "127.0.0.1:0")
        .env("DATABASE_URL", database_url)
        .env("MEDPAY_ADMIN_TOKEN", ADMIN)
        .env("MEDPAY_WEBHOOK_BACKOFF_BASE_MS", "50")
        .env("MEDPAY_OUTBOX_POLL_MS", "50")
        // The test's receiver listens on loopback: the development setting allows it.
        .env("MEDPAY_WEBHOOK_ALLOW_LOOPBACK", "true")
        .env("MEDPAY_SCORING_HOUR", "14")
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..STARTUP_LINES_MAX {
        let line = lines.next_line().await.unwrap().expect("the server printed where it listens");
        if let Some(address) = line.strip_prefix("MedPay listening on ") {
            // Keep reading stdout so that the server never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (child, address.trim().to_owned());
        }
    }
    panic!("the server did not say where it listens");
}

async fn post(
    client: &reqwest::Client,
    url: String,
    token: &str,
    body: &Value,
    key: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = client.post(url).bearer_auth(token).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.headers().clone(), response.text().await.unwrap())
}

async fn sigkill_after_acknowledgement_loses_nothing(engine: Engine) {
    let database = TestDatabase::create(engine).await;
    let data_dir = std::env::temp_dir().join(format!("medpay-kill-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let client = crate::support::client();
    let (mut child, base) = start(&database.url, &data_dir).await;

    let provider = json!({"name": "Hospital Central", "cnpj": unique_cnpj(), "fee_bps": 300, "escrow": true, "score_fail_mode": "closed"});
    let (status, _, provider) = post(&client, format!("{base}/v1/providers"), ADMIN, &provider, None).await;
    assert_eq!(status, StatusCode::CREATED);
    let provider: Value = serde_json::from_str(&provider).unwrap();
    let key = provider["api_key"].as_str().unwrap().to_owned();
    let patient =
        json!({"name": "João Souza", "cpf": unique_cpf(), "email": "joao@example.com", "phone": "+55 21 98888-7777"});
    let (status, _, patient) = post(&client, format!("{base}/v1/patients"), &key, &patient, None).await;
    assert_eq!(status, StatusCode::CREATED);
    let patient: Value = serde_json::from_str(&patient).unwrap();
    let body = json!({
        "patient_id": patient["id"], "provider_id": provider["id"],
        "procedure": {"tuss_code": "30101012", "description": "Cirurgia"},
        "amount_centavos": 1_250_000, "method": "boleto", "installments": 6, "monthly_interest_bps": 150,
        "device": {"id": "tablet-7", "ip": "2804:14c::1"}
    });
    let idempotency_key = new_key();
    let (status, _, acknowledged) =
        post(&client, format!("{base}/v1/payments"), &key, &body, Some(&idempotency_key)).await;
    assert_eq!(status, StatusCode::CREATED);
    // SIGKILL at once: no graceful shutdown, no flush beyond what the 201 already promised.
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let (mut child, base) = start(&database.url, &data_dir).await;
    let acknowledged_value: Value = serde_json::from_str(&acknowledged).unwrap();
    let id = acknowledged_value["id"].as_str().unwrap();
    let fetched: Value =
        client.get(format!("{base}/v1/payments/{id}")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(fetched, acknowledged_value, "the payment and its decision survived");
    let events: Value = client
        .get(format!("{base}/v1/payments/{id}/events"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sequence: Vec<i64> = events["data"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(sequence, vec![1, 2]);
    let (status, headers, replayed) =
        post(&client, format!("{base}/v1/payments"), &key, &body, Some(&idempotency_key)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(replayed, acknowledged, "the retry replays the acknowledged response byte for byte");
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    let listed: Value =
        client.get(format!("{base}/v1/payments")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "the retry created nothing");

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
    database.drop_database().await;
}
on_both_engines!(sigkill_after_acknowledgement_loses_nothing);

/// Events committed, not yet delivered (the receiver is down), then SIGKILL: after a restart, with
/// the receiver up, every one of them arrives.
async fn committed_events_are_delivered_after_a_sigkill(engine: Engine) {
    let database = TestDatabase::create(engine).await;
    let data_dir = std::env::temp_dir().join(format!("medpay-outbox-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let client = crate::support::client();
    // A port with nothing listening yet: every delivery is refused until the receiver starts.
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (mut child, base) = start(&database.url, &data_dir).await;
    let provider = json!({"name": "Clínica Webhook", "cnpj": unique_cnpj(), "fee_bps": 300});
    let (_, _, provider) = post(&client, format!("{base}/v1/providers"), ADMIN, &provider, None).await;
    let provider: Value = serde_json::from_str(&provider).unwrap();
    let key = provider["api_key"].as_str().unwrap().to_owned();
    let (status, _, endpoint) = post(
        &client,
        format!("{base}/v1/webhook-endpoints"),
        &key,
        &json!({"url": format!("http://{address}/hooks")}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let endpoint: Value = serde_json::from_str(&endpoint).unwrap();
    let mut expected = Vec::new();
    for _ in 0..3 {
        let patient = json!({"name": "Ana", "cpf": unique_cpf(), "email": "ana@example.com", "phone": "11988887777"});
        let (_, _, patient) = post(&client, format!("{base}/v1/patients"), &key, &patient, None).await;
        let patient: Value = serde_json::from_str(&patient).unwrap();
        let body = json!({"patient_id": patient["id"], "provider_id": provider["id"], "procedure": {"tuss_code": "10101012", "description": "Consulta"},
                          "amount_centavos": 20_000, "method": "pix", "device": {"id": format!("phone-{}", patient["id"]), "ip": "10.1.2.3"}});
        let (status, _, created) = post(&client, format!("{base}/v1/payments"), &key, &body, Some(&new_key())).await;
        assert_eq!(status, StatusCode::CREATED);
        let id = serde_json::from_str::<Value>(&created).unwrap()["id"].as_str().unwrap().to_owned();
        expected.extend([format!("{id}.1"), format!("{id}.2")]);
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let receiver = crate::events::Receiver::default();
    crate::events::start_receiver(tokio::net::TcpListener::bind(address).await.unwrap(), receiver.clone()).await;
    let (mut child, _) = start(&database.url, &data_dir).await;
    let mut received = Vec::new();
    for _ in 0..600 {
        received =
            crate::events::verify_all(&receiver.accepted.lock().unwrap().clone(), endpoint["secret"].as_str().unwrap());
        if expected.iter().all(|id| received.contains(id)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        expected.iter().all(|id| received.contains(id)),
        "all {} events delivered after the restart: {received:?}",
        expected.len()
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
    database.drop_database().await;
}
on_both_engines!(committed_events_are_delivered_after_a_sigkill);

/// Models are data: a champion promoted over HTTP is still the champion after a SIGKILL and a
/// restart (the registry's champion is loaded, not the bundled model).
async fn the_promoted_champion_survives_a_restart(engine: Engine) {
    let database = TestDatabase::create(engine).await;
    let data_dir = std::env::temp_dir().join(format!("medpay-models-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let client = crate::support::client();
    let (mut child, base) = start(&database.url, &data_dir).await;
    let tree: Value = serde_json::from_str(include_str!("../../ml/models/tree.json")).unwrap();
    let (status, _, registered) =
        post(&client, format!("{base}/v1/models"), ADMIN, &json!({"artefact": tree}), None).await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let registered: Value = serde_json::from_str(&registered).unwrap();
    let promote = json!({"version_id": registered["id"], "reason": "tree wins on the hold-out"});
    let (status, _, moved) = post(&client, format!("{base}/v1/models/aliases/champion"), ADMIN, &promote, None).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let (mut child, base) = start(&database.url, &data_dir).await;
    let models: Value =
        client.get(format!("{base}/v1/models")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["in_force"], registered["version"], "{models}");
    let champion = models["data"].as_array().unwrap().iter().find(|m| m["aliases"] == json!(["champion"])).unwrap();
    assert_eq!(champion["id"], registered["id"]);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
    database.drop_database().await;
}
on_both_engines!(the_promoted_champion_survives_a_restart);

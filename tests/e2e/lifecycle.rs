//! Graceful shutdown: a request in flight when shutdown starts is finished and acknowledged.

use crate::on_both_engines;
use crate::support::{Engine, TestDatabase, config, new_key, unique_cnpj, unique_cpf};
use async_trait::async_trait;
use medpay_ml::{Assessment, RiskScorer, ScoringError, ScoringInput};
use medpay_models::DecisionOutcome;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::Notify;

/// Holds each scoring until released, and says when one has started.
struct GatedScorer {
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

#[async_trait]
impl RiskScorer for GatedScorer {
    async fn score(&self, _input: &ScoringInput) -> Result<Assessment, ScoringError> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(Assessment {
            outcome: DecisionOutcome::Approve,
            score: 10,
            reasons: Vec::new(),
            rules_hit: Vec::new(),
            model_version: "gated-test".to_owned(),
            features: None,
            shadow: None,
        })
    }
}

async fn shutdown_finishes_in_flight_requests(engine: Engine) {
    let database = TestDatabase::create(engine).await;
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let scorer = Arc::new(GatedScorer { entered: entered.clone(), release: release.clone() });
    let mut settings = config(&database.url);
    // Long enough that the gate, not the budget, decides when scoring ends.
    settings.runtime.score_budget_ms = 30_000;
    let admin = settings.admin_token.clone().unwrap();
    let server =
        medpay_api::start_with(settings, move |_| async move { Ok(scorer as Arc<dyn RiskScorer>) }).await.unwrap();
    let base = format!("http://{}", server.addr);
    let client = crate::support::client();
    let provider: Value = client
        .post(format!("{base}/v1/providers"))
        .bearer_auth(&admin)
        .json(&json!({"name": "Clínica", "cnpj": unique_cnpj(), "fee_bps": 100}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = provider["api_key"].as_str().unwrap().to_owned();
    let patient: Value = client
        .post(format!("{base}/v1/patients"))
        .bearer_auth(&key)
        .json(&json!({"name": "Ana", "cpf": unique_cpf(), "email": "ana@example.com", "phone": "11988887777"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let body = json!({
        "patient_id": patient["id"], "provider_id": provider["id"],
        "procedure": {"tuss_code": "10101012", "description": "Consulta"},
        "amount_centavos": 20_000, "method": "card", "device": {"id": "d", "ip": "127.0.0.1"}
    });
    let in_flight = tokio::spawn({
        let request = client
            .post(format!("{base}/v1/payments"))
            .bearer_auth(&key)
            .header("Idempotency-Key", new_key())
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    });
    entered.notified().await;
    let stopping = tokio::spawn(server.shutdown());
    // Wait until the server refuses new connections: shutdown has begun, with the request held.
    let mut refused = false;
    for _ in 0..500 {
        if crate::support::client().get(format!("{base}/healthz")).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "shutdown stops accepting new connections");
    release.notify_one();
    let (status, created) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["decision"]["model_version"], "gated-test");
    stopping.await.unwrap();
    database.drop_database().await;
}
on_both_engines!(shutdown_finishes_in_flight_requests);

//! Refunds where the money path had holes (issue 10): what is left in escrow after a partial
//! refund, refunds while the money is still held, and refund keys reused with another amount or on
//! another payment.

use crate::money::{admin_get, balance, procedure, sandbox, wait_for};
use crate::on_both_engines;
use crate::support::{Engine, Provider, TestApp, new_key, pay, payment_body};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A payment of `amount` paid through the sandbox (held in escrow when the provider holds).
async fn paid(app: &TestApp, provider: &Provider, amount: i64, settled: &str) -> String {
    let patient = app.patient(provider).await;
    let created = pay(app, provider, &payment_body(provider, &patient, amount)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let charge = created["charge"]["id"].as_str().expect("charged in the answer").to_owned();
    let (status, _) = sandbox(app, &format!("/sandbox/charges/{charge}/pay"), json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    wait_for(app, provider, &id, |payment| payment["status"] == settled).await;
    id
}

async fn refund(app: &TestApp, provider: &Provider, id: &str, amount: i64, key: &str) -> (StatusCode, Value) {
    let body = json!({"amount_centavos": amount, "reason": "sessão não realizada"});
    app.request(Method::POST, &format!("/v1/payments/{id}/refunds"), Some(&provider.key), Some(&body), Some(key)).await
}

async fn escrow_left_after_partial_refunds_is_released(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({"fee_bps": 500, "escrow": true})).await;
    let id = paid(&app, &provider, 150_000, "held_in_escrow").await;
    assert_eq!(balance(&app, &provider).await, (0, 142_500));
    // R$ 500,00 back while held: 475,00 of it leaves the escrow.
    let (status, body) = refund(&app, &provider, &id, 50_000, &new_key()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(balance(&app, &provider).await, (0, 95_000));
    // A second refund while the money is still held comes out of the escrow too, not out of money
    // the provider never received.
    let (status, body) = refund(&app, &provider, &id, 10_000, &new_key()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(balance(&app, &provider).await, (0, 85_500));
    // The procedure happened: what is left in escrow is released to the provider.
    procedure(&app, &provider, &id, "performed").await;
    assert_eq!(balance(&app, &provider).await, (85_500, 0));
    let check = admin_get(&app, "/v1/ledger/check").await;
    assert_eq!(check["ok"], true, "{check}");
    app.stop().await;
}
on_both_engines!(escrow_left_after_partial_refunds_is_released);

async fn a_refund_key_names_one_refund_of_one_payment(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({"fee_bps": 500})).await;
    let first = paid(&app, &provider, 100_000, "paid").await;
    let key = new_key();
    let (status, made) = refund(&app, &provider, &first, 10_000, &key).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    // The same key with a larger amount is another refund: refused, nothing more given back.
    let (status, body) = refund(&app, &provider, &first, 20_000, &key).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")),
        "{body}"
    );
    let (_, refunds) =
        app.request(Method::GET, &format!("/v1/payments/{first}/refunds"), Some(&provider.key), None, None).await;
    let total: i64 = refunds["data"].as_array().unwrap().iter().map(|r| r["amount_centavos"].as_i64().unwrap()).sum();
    assert_eq!(total, 10_000, "{refunds}");
    // The same key on another payment names another refund too: refused, not a server error.
    let second = paid(&app, &provider, 100_000, "paid").await;
    let (status, body) = refund(&app, &provider, &second, 10_000, &key).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")),
        "{body}"
    );
    let check = admin_get(&app, "/v1/ledger/check").await;
    assert_eq!(check["ok"], true, "{check}");
    app.stop().await;
}
on_both_engines!(a_refund_key_names_one_refund_of_one_payment);

async fn a_chargeback_after_a_partial_refund_is_posted_and_its_excess_held_in_suspense(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({"fee_bps": 500})).await;
    let id = paid(&app, &provider, 100_000, "paid").await;
    let (status, body) = refund(&app, &provider, &id, 30_000, &new_key()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The payer's bank takes all of it back anyway.
    let payment = crate::money::payment(&app, &provider, &id).await;
    let charge = payment["charge"]["id"].as_str().unwrap();
    let (status, _) =
        sandbox(&app, &format!("/sandbox/charges/{charge}/chargeback"), json!({"amount_centavos": 100_000})).await;
    assert!(status.is_success(), "{status}");
    wait_for(&app, &provider, &id, |payment| payment["status"] == "charged_back").await;
    // What was left (700,00) came back from the provider and the fee; the 300,00 beyond it, taken
    // from money already refunded, is in suspense with a case for a person.
    let mut check = Value::Null;
    for _ in 0..100 {
        check = admin_get(&app, "/v1/ledger/check").await;
        if check["suspense_centavos"] == -30_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!((check["ok"].as_bool(), check["suspense_centavos"].as_i64()), (Some(true), Some(-30_000)), "{check}");
    let (_, reviews) = app.request(Method::GET, "/v1/reviews", Some(&app.analyst), None, None).await;
    let case = reviews["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["payment"]["id"] == id && c["reason"] == "unexpected_money");
    assert!(case, "{reviews}");
    app.stop().await;
}
on_both_engines!(a_chargeback_after_a_partial_refund_is_posted_and_its_excess_held_in_suspense);

//! Moving the money end to end, against the in-process Celcoin and ClickSign sandboxes: a PIX
//! charge paid, held, released, partly refunded, with a balance checked by hand; a contract signed
//! before the first of several installments; and a thousand payments with every fault the sandbox
//! has, ending with no double charge, no lost webhook effect, a balanced ledger and a clean
//! reconciliation.

use crate::on_both_engines;
use crate::support::{Engine, Patient, Provider, TestApp, new_key, pay, payment_body};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

pub(crate) async fn payment(app: &TestApp, provider: &Provider, id: &str) -> Value {
    let (status, body) = app.request(Method::GET, &format!("/v1/payments/{id}"), Some(&provider.key), None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Polls the payment until `done` holds (or fails after 30 s, showing the payment).
pub(crate) async fn wait_for(app: &TestApp, provider: &Provider, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        last = payment(app, provider, id).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("payment {id} never got there: {last}");
}

pub(crate) async fn sandbox(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    let response = app.client.post(format!("{}{path}", app.celcoin)).json(&body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn balance(app: &TestApp, provider: &Provider) -> (i64, i64) {
    let (status, body) = app.request(Method::GET, "/v1/providers/me/balance", Some(&provider.key), None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (body["available_centavos"].as_i64().unwrap(), body["held_centavos"].as_i64().unwrap())
}

/// POSTs `body` with a fresh Idempotency-Key.
async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    app.request(Method::POST, path, Some(token), Some(&body), Some(&new_key())).await
}

/// The provider says the procedure was `performed` or `cancelled`; it must be taken.
pub(crate) async fn procedure(app: &TestApp, provider: &Provider, id: &str, outcome: &str) {
    let path = format!("/v1/payments/{id}/procedure");
    let (status, body) =
        app.request(Method::POST, &path, Some(&provider.key), Some(&json!({"outcome": outcome})), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

pub(crate) async fn admin_get(app: &TestApp, path: &str) -> Value {
    let (status, body) = app.request(Method::GET, path, Some(&app.admin), None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn walk_through(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({"fee_bps": 500, "escrow": true})).await;
    let patient = app.patient(&provider).await;
    // R$ 1.500,00 by PIX: approved and charged in the same answer.
    let created = pay(&app, &provider, &payment_body(&provider, &patient, 150_000)).await;
    assert_eq!(created["decision"]["outcome"], "approve", "{created}");
    assert_eq!(created["status"], "awaiting_payment", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let code = created["charge"]["pix_br_code"].as_str().expect("a BR Code to pay");
    let parsed = medpay_models::pix::BrCode::parse(code).unwrap();
    assert_eq!(parsed.amount, Some(medpay_models::Money::from_centavos(150_000)));
    assert!(created["charge"]["pix_expires_at"].is_string());
    let (_, pending) = app.request(Method::GET, "/v1/providers/me/balance", Some(&provider.key), None, None).await;
    assert_eq!(pending["pending_centavos"], 142_500, "the share of the charge waiting to be paid: {pending}");

    // Nothing to release or refund before the money arrives.
    let (status, body) = app
        .request(
            Method::POST,
            &format!("/v1/payments/{id}/procedure"),
            Some(&provider.key),
            Some(&json!({"outcome": "performed"})),
            None,
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("payment_not_held")));

    // The patient pays through the sandbox; Celcoin's webhook moves the payment into escrow.
    let charge_id = created["charge"]["id"].as_str().unwrap();
    let (status, _) = sandbox(&app, &format!("/sandbox/charges/{charge_id}/pay"), json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    wait_for(&app, &provider, &id, |p| p["status"] == "held_in_escrow").await;
    // By hand: 5 % of 1.500,00 is 75,00 for the platform; 1.425,00 held for the provider.
    assert_eq!(balance(&app, &provider).await, (0, 142_500));

    // A webhook without Celcoin's credentials changes nothing.
    let forged = app
        .client
        .post(format!("{}/v1/gateways/celcoin/webhooks", app.base))
        .basic_auth("celcoin", Some("wrong"))
        .json(&json!({"Id": "x", "TransactionType": "CHARGEBACK", "RequestBody": {"TransactionId": "a", "OriginalTransactionId": "b", "Amount": 1500}}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    // The provider confirms the procedure: the held share becomes available.
    let (status, released) = app
        .request(
            Method::POST,
            &format!("/v1/payments/{id}/procedure"),
            Some(&provider.key),
            Some(&json!({"outcome": "performed"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released["status"], "released");
    assert_eq!(balance(&app, &provider).await, (142_500, 0));

    // A partial refund of R$ 500,00 gives back 475,00 of the provider's share and 25,00 of the fee.
    let path = format!("/v1/payments/{id}/refunds");
    let (status, body) = post(&app, &patient.token, &path, json!({"amount_centavos": 50_000, "reason": "x"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the patient does not refund: {body}");
    let (status, body) = post(&app, &provider.key, &path, json!({"amount_centavos": 0, "reason": "x"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_amount")));
    let refund = json!({"amount_centavos": 50_000, "reason": "sessão não realizada"});
    let key = new_key();
    let (status, body) = app.request(Method::POST, &path, Some(&provider.key), Some(&refund), Some(&key)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"][0]["amount_centavos"], 50_000);
    // A retry with the same key returns the same refund and gives nothing back twice.
    let (status, again) = app.request(Method::POST, &path, Some(&provider.key), Some(&refund), Some(&key)).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["data"][0]["id"], body["data"][0]["id"]);
    let other = json!({"amount_centavos": 10_000, "reason": "outra"});
    let (status, reused) = app.request(Method::POST, &path, Some(&provider.key), Some(&other), Some(&key)).await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused"))
    );
    let (status, _) = app.request(Method::POST, &path, Some(&provider.key), Some(&refund), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a refund needs an Idempotency-Key");
    assert_eq!(payment(&app, &provider, &id).await["status"], "partially_refunded");
    assert_eq!(balance(&app, &provider).await, (95_000, 0));
    let (status, body) =
        post(&app, &provider.key, &path, json!({"amount_centavos": 100_001, "reason": "demais"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("refund_exceeds_paid")));

    // Celcoin confirms the devolução: the refund is completed; ledger and gateway agree.
    for _ in 0..200 {
        let (_, refunds) = app.request(Method::GET, &path, Some(&provider.key), None, None).await;
        if refunds["data"][0]["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, refunds) = app.request(Method::GET, &path, Some(&provider.key), None, None).await;
    assert_eq!(refunds["data"][0]["status"], "completed", "{refunds}");
    let check = admin_get(&app, "/v1/ledger/check").await;
    assert_eq!(check["ok"], true, "{check}");
    let reconciliation = admin_get(&app, "/v1/ledger/reconciliation").await;
    assert_eq!(reconciliation["ok"], true, "{reconciliation}");
    assert_eq!(reconciliation["charges_compared"], 1);
    let (status, _) = app.request(Method::GET, "/v1/ledger/check", Some(&provider.key), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}
on_both_engines!(walk_through);

fn installment_body(provider: &Provider, patient: &Patient, amount: i64, count: u32, method: &str) -> Value {
    let mut body = payment_body(provider, patient, amount);
    body["installments"] = json!(count);
    body["monthly_interest_bps"] = json!(199);
    body["method"] = json!(method);
    body
}

async fn installments_wait_for_a_signed_contract_and_are_charged_one_by_one(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({"fee_bps": 300})).await;
    let patient = app.patient(&provider).await;
    let created = pay(&app, &provider, &installment_body(&provider, &patient, 400_000, 3, "boleto")).await;
    assert_eq!(created["decision"]["outcome"], "approve", "{created}");
    assert_eq!(created["status"], "approved", "no charge before the contract is signed: {created}");
    assert!(created["charge"].is_null());
    let id = created["id"].as_str().unwrap().to_owned();
    // The contract goes out for signature; its event names the envelope.
    let mut envelope = None;
    for _ in 0..200 {
        let (_, events) =
            app.request(Method::GET, &format!("/v1/payments/{id}/events"), Some(&provider.key), None, None).await;
        envelope = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|event| event["type"] == "payment.contract_sent")
            .and_then(|event| event["data"]["contract"]["envelope_id"].as_str().map(str::to_owned));
        if envelope.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let envelope = envelope.expect("a contract sent for signature");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(payment(&app, &provider, &id).await["status"], "approved", "still waiting for the signature");
    let signed = app.client.post(format!("{}/sandbox/envelopes/{envelope}/sign", app.clicksign)).send().await.unwrap();
    assert_eq!(signed.status(), StatusCode::NO_CONTENT);
    // Signed: the first installment's boleto is issued, due on its date.
    let first = wait_for(&app, &provider, &id, |p| p["status"] == "awaiting_payment").await;
    assert_eq!(first["charge"]["installment"], 1);
    let line = first["charge"]["boleto_linha_digitavel"].as_str().unwrap();
    let boleto = medpay_models::boleto::Boleto::from_line(line).unwrap();
    assert_eq!(boleto.amount.centavos(), first["installments"][0]["amount_centavos"].as_i64().unwrap());
    assert_eq!(first["charge"]["due_date"], first["installments"][0]["due_date"]);
    // Paid: the second installment is charged next, not before.
    let charge = first["charge"]["id"].as_str().unwrap();
    sandbox(&app, &format!("/sandbox/charges/{charge}/pay"), json!({})).await;
    let second = wait_for(&app, &provider, &id, |p| p["charge"]["installment"] == 2).await;
    assert_eq!(second["status"], "paid", "one snapshot: the new charge comes with the new status");
    assert_eq!(second["charge"]["status"], "active");
    let check = admin_get(&app, "/v1/ledger/check").await;
    assert_eq!(check["ok"], true, "{check}");

    // A refused contract cancels the payment, and nothing is charged.
    let other = pay(&app, &provider, &installment_body(&provider, &patient, 350_000, 2, "pix")).await;
    let other_id = other["id"].as_str().unwrap().to_owned();
    let mut envelope = None;
    for _ in 0..200 {
        let (_, events) =
            app.request(Method::GET, &format!("/v1/payments/{other_id}/events"), Some(&provider.key), None, None).await;
        envelope = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|event| event["data"]["contract"]["envelope_id"].as_str().map(str::to_owned));
        if envelope.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let envelope = envelope.expect("a contract");
    app.client.post(format!("{}/sandbox/envelopes/{envelope}/refuse", app.clicksign)).send().await.unwrap();
    let cancelled = wait_for(&app, &provider, &other_id, |p| p["status"] == "cancelled").await;
    assert!(cancelled["charge"].is_null());
    app.stop().await;
}
on_both_engines!(installments_wait_for_a_signed_contract_and_are_charged_one_by_one);

/// A thousand payments with the sandbox injecting every fault it has: time-outs (done but not
/// answered), 5xx, duplicate and delayed (so out-of-order) webhooks.
async fn a_thousand_payments_through_every_fault_end_clean(engine: Engine) {
    const PAYMENTS: usize = 1_000;
    let app = TestApp::spawn_with(engine, |config| {
        config.money.gateway_timeout_ms = 300;
        // Five failures in a row open the breaker; on a loaded machine (time-outs on top of the
        // injected faults) 30 s of it outlasted the test's wait for a charge.
        config.money.gateway_breaker_open_ms = 1_000;
        config.limits.payments_per_patient_per_minute = 1_000;
    })
    .await;
    let (status, _) = sandbox(&app, "/sandbox/faults", json!({})).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "faults are set with PUT");
    let faults = json!({"seed": 7, "timeout_rate": 0.05, "error_rate": 0.1, "duplicate_rate": 0.3, "delay_ms_max": 300, "stall_ms": 500});
    let set = app.client.put(format!("{}/sandbox/faults", app.celcoin)).json(&faults).send().await.unwrap();
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let escrow = app.provider(json!({"fee_bps": 450, "escrow": true})).await;
    let plain = app.provider(json!({"fee_bps": 250})).await;
    let mut patients = Vec::new();
    // Four payments per patient: under the velocity rule (five in an hour goes to review).
    const PATIENTS: usize = PAYMENTS / 4;
    for index in 0..PATIENTS {
        let provider = if index.is_multiple_of(2) { &escrow } else { &plain };
        patients.push(app.patient(provider).await);
    }
    // Payments from 8 workers, alternating method.
    let app = std::sync::Arc::new(app);
    let patients = std::sync::Arc::new(patients);
    let escrow = std::sync::Arc::new(escrow);
    let plain = std::sync::Arc::new(plain);
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (app, patients, escrow, plain) = (app.clone(), patients.clone(), escrow.clone(), plain.clone());
        workers.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for index in (worker..PAYMENTS).step_by(8) {
                let patient_index = index % PATIENTS;
                let provider = if patient_index.is_multiple_of(2) { &*escrow } else { &*plain };
                let method = ["pix", "boleto", "card"][index % 3];
                let mut body = payment_body(provider, &patients[patient_index], 10_000 + (index as i64 % 50) * 1_000);
                body["method"] = json!(method);
                body["device"]["id"] = json!(format!("device-{patient_index}"));
                let (status, created) =
                    app.request(Method::POST, "/v1/payments", Some(&provider.key), Some(&body), Some(&new_key())).await;
                assert_eq!(status, StatusCode::CREATED, "{created}");
                made.push((patient_index.is_multiple_of(2), method, created));
            }
            made
        }));
    }
    let mut made = Vec::new();
    for worker in workers {
        made.extend(worker.await.unwrap());
    }
    assert_eq!(made.len(), PAYMENTS);
    let approved: Vec<_> = made.iter().filter(|(_, _, created)| created["decision"]["outcome"] == "approve").collect();
    assert!(approved.len() >= PAYMENTS * 8 / 10, "most of these ordinary payments are approved: {}", approved.len());

    // Every approved payment gets its charge (some only from the sweep, after a fault); the
    // patients pay every one that is not a card (cards are captured at once).
    let mut paid_ids = Vec::new();
    for (escrowed, method, created) in &approved {
        let id = created["id"].as_str().unwrap();
        let provider = if *escrowed { &*escrow } else { &*plain };
        let current = wait_for(&app, provider, id, |p| !p["charge"].is_null()).await;
        if *method != "card" {
            let charge = current["charge"]["id"].as_str().unwrap();
            let (status, body) = sandbox(&app, &format!("/sandbox/charges/{charge}/pay"), json!({})).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
        paid_ids.push((*escrowed, *method, id.to_owned()));
    }
    let settled = |escrowed: bool| move |p: &Value| p["status"] == if escrowed { "held_in_escrow" } else { "paid" };
    for (index, (escrowed, method, id)) in paid_ids.iter().enumerate() {
        let provider = if *escrowed { &*escrow } else { &*plain };
        wait_for(&app, provider, id, settled(*escrowed)).await;
        // Then some money moves back and forth: procedures confirmed, refunds, chargebacks, MED.
        match index % 10 {
            0 if *escrowed => procedure(&app, provider, id, "performed").await,
            1 if *escrowed => procedure(&app, provider, id, "cancelled").await,
            2 => {
                let (status, body) = post(
                    &app,
                    &provider.key,
                    &format!("/v1/payments/{id}/refunds"),
                    json!({"amount_centavos": 3_000, "reason": "desconto"}),
                )
                .await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
            }
            3 if *method == "card" => {
                let (status, body) = sandbox(&app, &format!("/sandbox/charges/{id}-1/chargeback"), json!({})).await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
            4 if *method == "pix" => {
                let (status, body) =
                    sandbox(&app, &format!("/sandbox/charges/{id}-1/med"), json!({"amount_centavos": 5_000})).await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
            _ => {}
        }
    }
    // Quiet: the sandbox has delivered every webhook, and the ledger and Celcoin agree.
    let mut last = (Value::Null, Value::Null);
    for _ in 0..600 {
        let stats: Value =
            app.client.get(format!("{}/sandbox/stats", app.celcoin)).send().await.unwrap().json().await.unwrap();
        if stats["webhooks_pending"] == 0 {
            // Celcoin's statement is read through the faults too: a 503 here means "not now".
            let (_, check) = app.request(Method::GET, "/v1/ledger/check", Some(&app.admin), None, None).await;
            let (_, reconciliation) =
                app.request(Method::GET, "/v1/ledger/reconciliation", Some(&app.admin), None, None).await;
            if check["ok"] == true && reconciliation["ok"] == true {
                last = (check, reconciliation);
                break;
            }
            last = (check, reconciliation);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0["ok"], true, "ledger: {}", last.0);
    assert_eq!(last.1["ok"], true, "reconciliation: {}", last.1);
    // No double charge: one charge at Celcoin per approved payment.
    assert_eq!(last.1["charges_compared"].as_u64().unwrap() as usize, approved.len());
    let stats: Value =
        app.client.get(format!("{}/sandbox/stats", app.celcoin)).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["charges"].as_u64().unwrap() as usize, approved.len(), "{stats}");
    // Every webhook's effect is there: each payment ended where its story says.
    for (index, (escrowed, method, id)) in paid_ids.iter().enumerate() {
        let provider = if *escrowed { &*escrow } else { &*plain };
        let expected = match index % 10 {
            0 if *escrowed => "released",
            1 if *escrowed => "refunded",
            2 => "partially_refunded",
            3 if *method == "card" => "charged_back",
            4 if *method == "pix" => "partially_refunded",
            _ if *escrowed => "held_in_escrow",
            _ => "paid",
        };
        assert_eq!(payment(&app, provider, id).await["status"], expected, "payment {index}");
    }
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("workers still hold the app"),
    }
}
on_both_engines!(a_thousand_payments_through_every_fault_end_clean);

/// A PIX left unpaid past its expiry expires the payment; the sandbox then refuses to take it, as
/// the patient's bank would, and Celcoin and the ledger still agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_pix_expires_the_payment() {
    let app = TestApp::spawn_with(Engine::Sqlite, |config| config.money.runtime.pix_expiration_seconds = 1).await;
    let provider = app.provider(json!({"fee_bps": 500})).await;
    let patient = app.patient(&provider).await;
    let created = pay(&app, &provider, &payment_body(&provider, &patient, 12_000)).await;
    assert_eq!(created["status"], "awaiting_payment", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let expired = wait_for(&app, &provider, &id, |p| p["status"] == "expired").await;
    assert_eq!(expired["charge"]["status"], "cancelled");
    let charge = created["charge"]["id"].as_str().unwrap();
    let (status, body) = sandbox(&app, &format!("/sandbox/charges/{charge}/pay"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "an expired PIX cannot be paid: {body}");
    let check = admin_get(&app, "/v1/ledger/check").await;
    assert_eq!(check["ok"], true, "{check}");
    let reconciliation = admin_get(&app, "/v1/ledger/reconciliation").await;
    assert_eq!(reconciliation["ok"], true, "{reconciliation}");
    let (_, balance) = app.request(Method::GET, "/v1/providers/me/balance", Some(&provider.key), None, None).await;
    assert_eq!(balance["pending_centavos"], 0, "nothing is pending any more: {balance}");
    app.stop().await;
}

/// A payment notice moves money only as Celcoin confirms it when asked: a notice with the right
/// credentials for a charge nobody paid changes nothing, and one with a wrong amount for a paid
/// charge applies the amount Celcoin holds.
async fn celcoin_notices_move_money_only_as_celcoin_confirms_them(engine: Engine) {
    const PASSWORD: &str = "celcoin-webhook-test-password";
    let app = TestApp::spawn_with(engine, |config| config.money.celcoin_webhook_password = PASSWORD.to_owned()).await;
    let provider = app.provider(json!({"fee_bps": 500, "escrow": false})).await;
    let patient = app.patient(&provider).await;
    let created = pay(&app, &provider, &payment_body(&provider, &patient, 20_000)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let charge = created["charge"]["id"].as_str().expect("charged in the answer").to_owned();
    // Celcoin's transaction id for our charge, as Celcoin's own notice would name it.
    let (_, token) = sandbox(&app, "/v5/token", json!({})).await;
    let found = app.client.get(format!("{}/v5/charge/external/{charge}", app.celcoin));
    let found: Value =
        found.bearer_auth(token["access_token"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    let transaction = found["transactionId"].as_str().unwrap_or_else(|| panic!("{found}")).to_owned();
    let notice = |webhook: &str, reais: f64| {
        json!({"Id": webhook, "TransactionType": "RECEIVEPIX",
               "RequestBody": {"TransactionId": transaction, "ClientRequestId": charge, "Amount": reais}})
    };
    let send = |body: Value| {
        app.client
            .post(format!("{}/v1/gateways/celcoin/webhooks", app.base))
            .basic_auth("celcoin", Some(PASSWORD))
            .json(&body)
            .send()
    };
    // Nobody paid: Celcoin says the charge is ACTIVE, so the notice is kept and not applied.
    assert_eq!(send(notice("forged-1", 200.0)).await.unwrap().status(), StatusCode::OK);
    let (_, payment) = app.request(Method::GET, &format!("/v1/payments/{id}"), Some(&provider.key), None, None).await;
    assert_eq!(payment["status"], "awaiting_payment", "{payment}");
    assert_eq!(balance(&app, &provider).await, (0, 0));

    // The patient pays, but Celcoin's own notice is lost; one claiming R$ 1,00 arrives instead.
    let lost = json!({"url": "http://127.0.0.1:9/lost", "username": "celcoin", "password": PASSWORD});
    let response = app.client.put(format!("{}/sandbox/webhook", app.celcoin)).json(&lost).send().await.unwrap();
    assert!(response.status().is_success());
    let (status, _) = sandbox(&app, &format!("/sandbox/charges/{charge}/pay"), json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(send(notice("late-1", 1.0)).await.unwrap().status(), StatusCode::OK);
    wait_for(&app, &provider, &id, |p| p["status"] == "paid").await;
    // R$ 200,00 as Celcoin holds it, 5 % to the platform: the provider has 190,00.
    assert_eq!(balance(&app, &provider).await, (19_000, 0));
    let (_, check) = app.request(Method::GET, "/v1/ledger/check", Some(&app.admin), None, None).await;
    assert_eq!((check["ok"].as_bool(), check["suspense_centavos"].as_i64()), (Some(true), Some(0)), "{check}");
    // The forged notice, sent again, is still not applied: the payment was paid once.
    assert_eq!(send(notice("forged-1", 200.0)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(balance(&app, &provider).await, (19_000, 0));

    // A chargeback nobody made: Celcoin lists no return on the charge, so nothing moves.
    let taken_back = |webhook: &str, reversal: &str, reais: f64| {
        json!({"Id": webhook, "TransactionType": "CHARGEBACK",
               "RequestBody": {"TransactionId": reversal, "OriginalTransactionId": transaction,
                               "ClientRequestId": charge, "Amount": reais}})
    };
    assert_eq!(send(taken_back("forged-cb", "cb-made-up", 200.0)).await.unwrap().status(), StatusCode::OK);
    let (_, payment) = app.request(Method::GET, &format!("/v1/payments/{id}"), Some(&provider.key), None, None).await;
    assert_eq!(payment["status"], "paid", "{payment}");
    assert_eq!(balance(&app, &provider).await, (19_000, 0));
    // The payer's bank takes all of it back (its notice lost again); one claiming R$ 500,00 of it
    // arrives: R$ 200,00 leaves, as Celcoin lists it, and nothing lands in suspense.
    let (status, dispute) = sandbox(&app, &format!("/sandbox/charges/{charge}/chargeback"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{dispute}");
    let reversal = dispute["transactionId"].as_str().unwrap();
    // Named as a MED return, it is not that return either.
    let as_med = {
        let mut body = taken_back("wrong-kind", reversal, 200.0);
        body["TransactionType"] = json!("MED_RETURN");
        body
    };
    assert_eq!(send(as_med).await.unwrap().status(), StatusCode::OK);
    assert_eq!(balance(&app, &provider).await, (19_000, 0));
    assert_eq!(send(taken_back("late-cb", reversal, 500.0)).await.unwrap().status(), StatusCode::OK);
    wait_for(&app, &provider, &id, |p| p["status"] == "charged_back").await;
    assert_eq!(balance(&app, &provider).await, (0, 0));
    let (_, check) = app.request(Method::GET, "/v1/ledger/check", Some(&app.admin), None, None).await;
    assert_eq!((check["ok"].as_bool(), check["suspense_centavos"].as_i64()), (Some(true), Some(0)), "{check}");
    app.stop().await;
}
on_both_engines!(celcoin_notices_move_money_only_as_celcoin_confirms_them);

//! Who may do what, for every route: the route list comes from the served OpenAPI description,
//! and each route is asked by eight principals — the admin, an analyst, a support agent (both
//! people with their own tokens), provider A, provider B, patient A (registered by A), patient B
//! (registered by B) and nobody. Every target belongs to A or to patient A, so provider B and
//! patient B must learn nothing. A route without an entry here fails the test, and so does an entry
//! for a route that no longer exists.

use crate::money::{sandbox, wait_for};
use crate::on_both_engines;
use crate::people::person;
use crate::support::{
    Engine, Patient, Provider, TestApp, app_session, new_key, pay, payment_body, review_above, unique_cnpj, unique_cpf,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const PRINCIPALS: [&str; 8] =
    ["admin", "analyst", "support", "provider A", "provider B", "patient A", "patient B", "anonymous"];

/// The expected status for each principal, in the order of `PRINCIPALS`.
/// 401: no credential; 403: a role that never may; 404: a tenant that may, but not on this target
/// (its existence is not confirmed). Anything else is the route's own answer once let in.
const EXPECTED: &[(&str, [u16; 8])] = &[
    // Columns: admin, analyst, support, provider A, provider B, patient A, patient B, anonymous.
    ("GET /healthz", [200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET /readyz", [200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET /metrics", [200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET /openapi.json", [200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET /dashboard", [200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET /console", [200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET /v1/audit", [200, 403, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/chat/conversations", [403, 403, 403, 403, 403, 201, 201, 401]),
    ("GET /v1/chat/conversations/{id}", [200, 200, 200, 404, 404, 200, 404, 401]),
    ("POST /v1/chat/conversations/{id}/agent-messages", [201, 201, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/chat/conversations/{id}/messages", [403, 403, 403, 403, 403, 200, 404, 401]),
    ("GET /v1/chat/handoffs", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/chat/ws", [403, 403, 403, 403, 403, 101, 101, 401]),
    ("GET /v1/events", [403, 403, 403, 200, 200, 403, 403, 401]),
    ("GET /v1/events/stream", [403, 403, 403, 200, 200, 403, 403, 401]),
    ("GET /v1/events/ws", [403, 403, 403, 101, 101, 403, 403, 401]),
    ("POST /v1/gateways/celcoin/webhooks", [401, 401, 401, 401, 401, 401, 401, 401]),
    ("POST /v1/gateways/clicksign/webhooks", [401, 401, 401, 401, 401, 401, 401, 401]),
    ("GET /v1/labels", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/ledger/check", [200, 403, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/ledger/reconciliation", [200, 403, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/lists", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/lists", [201, 201, 403, 403, 403, 403, 403, 401]),
    ("DELETE /v1/lists/{list}/{kind}/{value_hash}", [204, 204, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/models", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/models", [201, 200, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/models/aliases/champion/rollback", [409, 409, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/models/aliases/history", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/models/aliases/{alias}", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("PUT /v1/models/canary", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/models/drift", [409, 409, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/models/shadow", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/models/training-runs", [400, 400, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/models/training-runs/{id}", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/models/{id}/plots/{plot}", [404, 404, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/patients", [201, 403, 403, 201, 201, 403, 403, 401]),
    ("GET /v1/patients/{id}", [200, 200, 200, 200, 404, 200, 404, 401]),
    ("GET /v1/payments", [200, 200, 200, 200, 200, 200, 200, 401]),
    ("POST /v1/payments", [403, 403, 403, 201, 404, 201, 404, 401]),
    ("GET /v1/payments/{id}", [200, 200, 200, 200, 404, 200, 404, 401]),
    ("GET /v1/payments/{id}/events", [200, 200, 200, 200, 404, 200, 404, 401]),
    ("POST /v1/payments/{id}/label", [204, 204, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/payments/{id}/procedure", [409, 403, 403, 409, 404, 403, 403, 401]),
    ("GET /v1/payments/{id}/refunds", [200, 200, 200, 200, 404, 200, 404, 401]),
    ("POST /v1/payments/{id}/refunds", [201, 403, 403, 201, 404, 403, 403, 401]),
    ("GET /v1/people", [200, 403, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/people", [201, 403, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/people/{id}/tokens", [201, 403, 201, 403, 403, 403, 403, 401]),
    ("DELETE /v1/people/{id}/tokens/{token_id}", [204, 403, 204, 403, 403, 403, 403, 401]),
    ("POST /v1/providers", [201, 403, 403, 403, 403, 403, 403, 401]),
    ("PATCH /v1/providers/{id}", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/providers/{id}/balance", [200, 200, 200, 200, 404, 403, 403, 401]),
    ("GET /v1/providers/{id}/keys", [200, 403, 403, 200, 404, 403, 403, 401]),
    ("GET /v1/providers/{id}/prices", [200, 403, 403, 200, 404, 403, 403, 401]),
    ("PUT /v1/providers/{id}/prices", [200, 403, 403, 200, 404, 403, 403, 401]),
    ("POST /v1/providers/{id}/keys", [201, 403, 403, 201, 404, 403, 403, 401]),
    ("DELETE /v1/providers/{id}/keys/{key_id}", [204, 403, 403, 204, 404, 403, 403, 401]),
    ("GET /v1/reviews", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/reviews/{id}", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/reviews/{id}/claim", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/rules", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/rules", [201, 201, 403, 403, 403, 403, 403, 401]),
    ("POST /v1/rules/backtest", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("DELETE /v1/rules/{id}", [204, 204, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/webhook-endpoints", [403, 403, 403, 200, 200, 403, 403, 401]),
    ("POST /v1/webhook-endpoints", [403, 403, 403, 201, 201, 403, 403, 401]),
    ("DELETE /v1/webhook-endpoints/{id}", [403, 403, 403, 204, 404, 403, 403, 401]),
    ("GET /v1/webhook-endpoints/{id}/deliveries", [403, 403, 403, 200, 404, 403, 403, 401]),
    ("POST /v1/webhook-endpoints/{id}/deliveries/{delivery_id}/resend", [403, 403, 403, 202, 404, 403, 403, 401]),
    ("GET /v1/patients/{id}/export", [200, 403, 403, 403, 403, 200, 404, 401]),
    ("POST /v1/providers/{id}/checkout-links", [201, 403, 403, 201, 404, 403, 403, 401]),
    // A's checkout link is A's to give to anyone, but a credential another provider was handed
    // (patient B's token, shown to B) chooses no provider but B (see scopes.rs for the patient's own).
    ("POST /v1/checkout/{token}", [403, 403, 403, 403, 403, 200, 403, 401]),
    // The patient app: links are given by the patient's provider or support; the app's own routes
    // answer only a patient (a session or the patient's token).
    ("POST /v1/patients/{id}/sign-in-links", [201, 403, 201, 201, 404, 403, 403, 401]),
    ("POST /v1/patient-sessions", [401, 401, 401, 401, 401, 401, 401, 401]),
    ("DELETE /v1/patient-sessions/current", [403, 403, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/me/payments", [403, 403, 403, 403, 403, 200, 200, 401]),
    ("GET /v1/me/stream", [403, 403, 403, 403, 403, 200, 200, 401]),
    ("GET /v1/me/notifications", [403, 403, 403, 403, 403, 200, 200, 401]),
    // Reports: a provider its own numbers (B too: its own), staff the platform's.
    ("GET /v1/analytics/payments", [200, 200, 403, 200, 200, 403, 403, 401]),
    ("GET /v1/analytics/models", [200, 200, 403, 403, 403, 403, 403, 401]),
    ("GET /v1/analytics/charts/{chart}", [200, 200, 403, 200, 200, 403, 403, 401]),
    ("GET /v1/payments/{id}/pix-qr", [200, 200, 200, 200, 404, 200, 404, 401]),
    ("GET /v1/simulations", [200, 200, 200, 200, 200, 200, 200, 401]),
    // A's payment has no contract: those who may see it learn that, the others nothing.
    ("GET /v1/payments/{id}/contract.pdf", [404, 404, 404, 404, 404, 404, 404, 401]),
    ("GET /v1/payments/{id}/signed-contract.pdf", [404, 404, 404, 404, 404, 404, 404, 401]),
    ("POST /v1/payments/{id}/contract/notifications", [409, 409, 409, 409, 404, 409, 404, 401]),
    // The probe's body is no PDF: those who may give evidence are told so.
    ("POST /v1/payments/{id}/evidence", [400, 400, 400, 400, 404, 403, 403, 401]),
    ("GET /v1/payments/{id}/evidence", [200, 200, 200, 200, 404, 403, 403, 401]),
    ("GET /v1/payments/{id}/evidence/{evidence_id}", [404, 404, 404, 404, 404, 403, 403, 401]),
    ("GET /paciente", [200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET /paciente/manifest.webmanifest", [200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET /paciente/sw.js", [200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET /paciente/icon.svg", [200, 200, 200, 200, 200, 200, 200, 200]),
    // Last. The others aim at a fresh patient of A's; patient A's token, shown to A, erases nobody
    // (the patient's own sign-in does: scopes.rs, privacy.rs).
    ("POST /v1/patients/{id}/erasure", [200, 403, 403, 403, 403, 403, 404, 401]),
];

/// Who asks: a bearer token, or none.
struct Principals {
    tokens: [Option<String>; 8],
    provider_b_id: String,
}

/// What every principal's requests aim at: A's things and patient A's.
struct World {
    provider_a: Provider,
    patient_a: Patient,
    payment_a: String,
    /// A payment of A's with a PIX charge to pay.
    pix_payment: String,
    conversation_a: String,
    handed_off_a: String,
    endpoint_a: String,
    key_a: String,
    delivery_a: String,
    support_id: String,
    model_id: String,
    training_run: String,
}

/// Targets a route consumes (a rule deleted, a case claimed): made anew for each principal so that
/// every principal meets the same state.
struct Fresh {
    rule: String,
    list_hash: String,
    endpoint: String,
    key_id: String,
    token_id: String,
    case: String,
    claimed_case: String,
    /// A patient of A's to erase.
    erasable: String,
    /// A checkout link of A's.
    link: String,
}

async fn world(app: &TestApp) -> (Principals, World) {
    let (_, analyst) = person(app, "Ana Souza", "ana.tenancy@medpay.com.br", "analyst").await;
    let (support_id, support) = person(app, "Sam Reis", "sam.tenancy@medpay.com.br", "support").await;
    let provider_a = app.provider(json!({})).await;
    let provider_b = app.provider(json!({})).await;
    let patient_a = app.patient(&provider_a).await;
    let patient_b = app.patient(&provider_b).await;
    let url = json!({"url": "http://127.0.0.1:9/medpay-hooks"});
    let (status, endpoint) =
        app.request(Method::POST, "/v1/webhook-endpoints", Some(&provider_a.key), Some(&url), None).await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let endpoint_a = endpoint["id"].as_str().unwrap().to_owned();
    let payment_a =
        pay(app, &provider_a, &payment_body(&provider_a, &patient_a, 12_000)).await["id"].as_str().unwrap().to_owned();
    // Paid, so that those who may refund it can.
    let charged = wait_for(app, &provider_a, &payment_a, |p| p["charge"]["id"].is_string()).await;
    let (status, _) =
        sandbox(app, &format!("/sandbox/charges/{}/pay", charged["charge"]["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    wait_for(app, &provider_a, &payment_a, |p| p["status"] == "paid").await;
    let deliveries = format!("/v1/webhook-endpoints/{endpoint_a}/deliveries");
    let mut delivery_a = String::new();
    for _ in 0..100 {
        let (_, listed) = app.request(Method::GET, &deliveries, Some(&provider_a.key), None, None).await;
        if let Some(id) = listed["data"][0]["id"].as_str() {
            delivery_a = id.to_owned();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!delivery_a.is_empty(), "the payment's events were queued for A's endpoint");
    let conversation_a = conversation(app, &patient_a).await;
    let handed_off_a = conversation(app, &patient_a).await;
    let asked = json!({"text": "quero falar com um atendente"});
    let path = format!("/v1/chat/conversations/{handed_off_a}/messages");
    let (status, reply) = app.request(Method::POST, &path, Some(&patient_a.token), Some(&asked), None).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (_, models) = app.request(Method::GET, "/v1/models", Some(&app.admin), None, None).await;
    let model_id = models["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, run) = app
        .request(Method::POST, "/v1/models/training-runs", Some(&app.admin), Some(&json!({"kind": "logistic"})), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let training_run = run["id"].as_str().unwrap().to_owned();
    review_above(app, 40_000).await;
    let pix = pay(app, &provider_a, &payment_body(&provider_a, &patient_a, 9_100)).await;
    let pix_payment = pix["id"].as_str().unwrap().to_owned();
    wait_for(app, &provider_a, &pix_payment, |p| p["charge"]["status"] == "active").await;
    let (_, keys) = app.request(Method::GET, "/v1/providers/me/keys", Some(&provider_a.key), None, None).await;
    let key_a = keys["data"][0]["id"].as_str().unwrap().to_owned();
    let principals = Principals {
        tokens: [
            Some(app.admin.clone()),
            Some(analyst),
            Some(support),
            Some(provider_a.key.clone()),
            Some(provider_b.key.clone()),
            Some(patient_a.token.clone()),
            Some(patient_b.token.clone()),
            None,
        ],
        provider_b_id: provider_b.id.clone(),
    };
    let world = World {
        pix_payment,
        provider_a,
        patient_a,
        payment_a,
        conversation_a,
        handed_off_a,
        endpoint_a,
        key_a,
        delivery_a,
        support_id,
        model_id,
        training_run,
    };
    (principals, world)
}

/// A rule name no other rule has.
fn unique_name() -> String {
    format!("probe_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

async fn conversation(app: &TestApp, patient: &Patient) -> String {
    let (status, created) = app.request(Method::POST, "/v1/chat/conversations", Some(&patient.token), None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// What one principal's pass added to A beyond its limits (five keys, ten endpoints) goes before
/// the next pass: every key but the first, every endpoint but A's own.
async fn tidy(app: &TestApp, world: &World) {
    let a = &world.provider_a;
    let (_, keys) = app.request(Method::GET, "/v1/providers/me/keys", Some(&a.key), None, None).await;
    for key in keys["data"].as_array().unwrap().iter().filter(|key| key["revoked_at"].is_null()) {
        let id = key["id"].as_str().unwrap();
        if id != world.key_a {
            let path = format!("/v1/providers/me/keys/{id}");
            assert_eq!(app.request(Method::DELETE, &path, Some(&a.key), None, None).await.0, StatusCode::NO_CONTENT);
        }
    }
    let (_, endpoints) = app.request(Method::GET, "/v1/webhook-endpoints", Some(&a.key), None, None).await;
    for endpoint in endpoints["data"].as_array().unwrap() {
        let id = endpoint["id"].as_str().unwrap();
        if id != world.endpoint_a {
            let path = format!("/v1/webhook-endpoints/{id}");
            app.request(Method::DELETE, &path, Some(&a.key), None, None).await;
        }
    }
}

/// A payment of A's held for review, and its case's id.
async fn review_case(app: &TestApp, world: &World) -> String {
    let a = &world.provider_a;
    let held = pay(app, a, &payment_body(a, &world.patient_a, 45_000)).await;
    assert_eq!(held["status"], "in_review", "{held}");
    let (_, queue) = app.request(Method::GET, "/v1/reviews?limit=500", Some(&app.admin), None, None).await;
    let case = queue["data"].as_array().unwrap().iter().find(|case| case["payment"]["id"] == held["id"]);
    case.unwrap_or_else(|| panic!("the held payment's case is queued: {queue}"))["id"].as_str().unwrap().to_owned()
}

async fn fresh(app: &TestApp, world: &World) -> Fresh {
    let created = |status: StatusCode, body: &Value| assert_eq!(status, StatusCode::CREATED, "{body}");
    let rule = json!({"name": unique_name(), "source": "review if amount_centavos > 99999999"});
    let (status, rule) = app.request(Method::POST, "/v1/rules", Some(&app.admin), Some(&rule), None).await;
    created(status, &rule);
    let entry = json!({"list": "block", "kind": "device", "value": new_key(), "reason": "probe"});
    let (status, entry) = app.request(Method::POST, "/v1/lists", Some(&app.admin), Some(&entry), None).await;
    created(status, &entry);
    let url = json!({"url": "http://127.0.0.1:9/medpay-probe"});
    let a = &world.provider_a;
    let (status, endpoint) = app.request(Method::POST, "/v1/webhook-endpoints", Some(&a.key), Some(&url), None).await;
    created(status, &endpoint);
    let (status, key) =
        app.request(Method::POST, "/v1/providers/me/keys", Some(&a.key), Some(&json!({"label": "probe"})), None).await;
    created(status, &key);
    let path = format!("/v1/people/{}/tokens", world.support_id);
    let (status, token) = app.request(Method::POST, &path, Some(&app.admin), Some(&json!({})), None).await;
    created(status, &token);
    let case = review_case(app, world).await;
    let claimed_case = review_case(app, world).await;
    let erasable = app.patient(a).await.id;
    let link = json!({"label": "site da clínica"});
    let (status, link) =
        app.request(Method::POST, "/v1/providers/me/checkout-links", Some(&a.key), Some(&link), None).await;
    created(status, &link);
    let link = link["token"].as_str().unwrap().to_owned();
    Fresh {
        rule: rule["id"].as_str().unwrap().to_owned(),
        list_hash: entry["value_hash"].as_str().unwrap().to_owned(),
        endpoint: endpoint["id"].as_str().unwrap().to_owned(),
        key_id: key["id"].as_str().unwrap().to_owned(),
        token_id: token["token_id"].as_str().unwrap().to_owned(),
        case,
        claimed_case,
        erasable,
        link,
    }
}

/// The request each route gets: its path with A's targets, its body, and an Idempotency-Key where
/// the route takes one. `None` for a route this test does not know.
fn request(route: &str, who: &str, w: &World, f: &Fresh) -> Option<(String, Option<Value>)> {
    let payment = &w.payment_a;
    let a = &w.provider_a.id;
    let reason = json!({"reason": "probe"});
    let (path, body) = match route {
        "GET /healthz" | "GET /readyz" | "GET /metrics" | "GET /openapi.json" | "GET /dashboard" | "GET /console" => {
            (route[4..].to_owned(), None)
        }
        "GET /v1/audit" => ("/v1/audit".to_owned(), None),
        "POST /v1/chat/conversations" => ("/v1/chat/conversations".to_owned(), None),
        "GET /v1/chat/conversations/{id}" => (format!("/v1/chat/conversations/{}", w.conversation_a), None),
        "POST /v1/chat/conversations/{id}/messages" => {
            (format!("/v1/chat/conversations/{}/messages", w.conversation_a), Some(json!({"text": "oi"})))
        }
        "POST /v1/chat/conversations/{id}/agent-messages" => (
            format!("/v1/chat/conversations/{}/agent-messages", w.handed_off_a),
            Some(json!({"text": "Olá, sou da equipe MedPay."})),
        ),
        "GET /v1/chat/handoffs" => ("/v1/chat/handoffs".to_owned(), None),
        "GET /v1/chat/ws" => ("/v1/chat/ws".to_owned(), None),
        "GET /v1/events" => ("/v1/events".to_owned(), None),
        "GET /v1/events/stream" => ("/v1/events/stream".to_owned(), None),
        "GET /v1/events/ws" => ("/v1/events/ws".to_owned(), None),
        "POST /v1/gateways/celcoin/webhooks" => ("/v1/gateways/celcoin/webhooks".to_owned(), Some(json!({}))),
        "POST /v1/gateways/clicksign/webhooks" => ("/v1/gateways/clicksign/webhooks".to_owned(), Some(json!({}))),
        "GET /v1/labels" => ("/v1/labels".to_owned(), None),
        "GET /v1/ledger/check" => ("/v1/ledger/check".to_owned(), None),
        "GET /v1/ledger/reconciliation" => ("/v1/ledger/reconciliation".to_owned(), None),
        "GET /v1/lists" => ("/v1/lists".to_owned(), None),
        "POST /v1/lists" => (
            "/v1/lists".to_owned(),
            Some(json!({"list": "block", "kind": "device", "value": new_key(), "reason": "probe"})),
        ),
        "DELETE /v1/lists/{list}/{kind}/{value_hash}" => (format!("/v1/lists/block/device/{}", f.list_hash), None),
        "GET /v1/models" => ("/v1/models".to_owned(), None),
        "POST /v1/models" => (
            "/v1/models".to_owned(),
            Some(
                json!({"artefact": serde_json::from_str::<Value>(include_str!("../../ml/models/tree.json")).unwrap()}),
            ),
        ),
        "POST /v1/models/aliases/champion/rollback" => {
            ("/v1/models/aliases/champion/rollback".to_owned(), Some(reason))
        }
        "GET /v1/models/aliases/history" => ("/v1/models/aliases/history".to_owned(), None),
        "POST /v1/models/aliases/{alias}" => {
            ("/v1/models/aliases/challenger".to_owned(), Some(json!({"version_id": w.model_id, "reason": "probe"})))
        }
        "PUT /v1/models/canary" => ("/v1/models/canary".to_owned(), Some(json!({"share_bps": 0, "reason": "probe"}))),
        "GET /v1/models/drift" => ("/v1/models/drift".to_owned(), None),
        "GET /v1/models/shadow" => ("/v1/models/shadow".to_owned(), None),
        "POST /v1/models/training-runs" => ("/v1/models/training-runs".to_owned(), Some(json!({"kind": "unknown"}))),
        "GET /v1/models/training-runs/{id}" => (format!("/v1/models/training-runs/{}", w.training_run), None),
        "GET /v1/models/{id}/plots/{plot}" => (format!("/v1/models/{}/plots/roc.svg", w.model_id), None),
        "POST /v1/patients" => (
            "/v1/patients".to_owned(),
            Some(
                json!({"name": "João Lima", "cpf": unique_cpf(), "email": "joao@example.com", "phone": "+55 11 98888-0000"}),
            ),
        ),
        "GET /v1/patients/{id}" => (format!("/v1/patients/{}", w.patient_a.id), None),
        "POST /v1/providers/{id}/checkout-links" => {
            (format!("/v1/providers/{a}/checkout-links"), Some(json!({"label": "probe"})))
        }
        "POST /v1/checkout/{token}" => (format!("/v1/checkout/{}", f.link), None),
        "POST /v1/patients/{id}/sign-in-links" => (format!("/v1/patients/{}/sign-in-links", w.patient_a.id), None),
        "POST /v1/patient-sessions" => ("/v1/patient-sessions".to_owned(), Some(json!({"code": "mpl_probe"}))),
        "DELETE /v1/patient-sessions/current" => ("/v1/patient-sessions/current".to_owned(), None),
        "GET /v1/me/payments" => ("/v1/me/payments".to_owned(), None),
        "GET /v1/me/stream" => ("/v1/me/stream".to_owned(), None),
        "GET /v1/me/notifications" => ("/v1/me/notifications".to_owned(), None),
        "GET /v1/analytics/payments" => ("/v1/analytics/payments?period=week&by=procedure".to_owned(), None),
        "GET /v1/analytics/models" => ("/v1/analytics/models?period=month".to_owned(), None),
        "GET /v1/analytics/charts/{chart}" => ("/v1/analytics/charts/outcomes.svg".to_owned(), None),
        "GET /v1/payments/{id}/pix-qr" => (format!("/v1/payments/{}/pix-qr", w.pix_payment), None),
        "GET /v1/payments/{id}/contract.pdf" => (format!("/v1/payments/{payment}/contract.pdf"), None),
        "POST /v1/payments/{id}/evidence" => (format!("/v1/payments/{payment}/evidence"), Some(json!({}))),
        "GET /v1/payments/{id}/evidence" => (format!("/v1/payments/{payment}/evidence"), None),
        "GET /v1/payments/{id}/evidence/{evidence_id}" => {
            (format!("/v1/payments/{payment}/evidence/01a23515-34fd-7290-9cfb-5714d12a3a9c"), None)
        }
        "POST /v1/payments/{id}/contract/notifications" => {
            (format!("/v1/payments/{payment}/contract/notifications"), None)
        }
        "GET /v1/payments/{id}/signed-contract.pdf" => (format!("/v1/payments/{payment}/signed-contract.pdf"), None),
        "GET /v1/simulations" => ("/v1/simulations?amount_centavos=150000&installments=6".to_owned(), None),
        "GET /paciente" | "GET /paciente/manifest.webmanifest" | "GET /paciente/sw.js" | "GET /paciente/icon.svg" => {
            (route[4..].to_owned(), None)
        }
        "GET /v1/patients/{id}/export" => (format!("/v1/patients/{}/export", w.patient_a.id), None),
        "POST /v1/patients/{id}/erasure" => {
            let target = if who == "patient A" { &w.patient_a.id } else { &f.erasable };
            (format!("/v1/patients/{target}/erasure"), None)
        }
        "GET /v1/payments" => ("/v1/payments".to_owned(), None),
        "POST /v1/payments" => ("/v1/payments".to_owned(), Some(payment_body(&w.provider_a, &w.patient_a, 9_000))),
        "GET /v1/payments/{id}" => (format!("/v1/payments/{payment}"), None),
        "GET /v1/payments/{id}/events" => (format!("/v1/payments/{payment}/events"), None),
        "POST /v1/payments/{id}/label" => {
            (format!("/v1/payments/{payment}/label"), Some(json!({"is_fraud": false, "note": "probe"})))
        }
        "POST /v1/payments/{id}/procedure" => {
            (format!("/v1/payments/{payment}/procedure"), Some(json!({"outcome": "performed"})))
        }
        "GET /v1/payments/{id}/refunds" => (format!("/v1/payments/{payment}/refunds"), None),
        "POST /v1/payments/{id}/refunds" => {
            (format!("/v1/payments/{payment}/refunds"), Some(json!({"amount_centavos": 100, "reason": "probe"})))
        }
        "GET /v1/people" => ("/v1/people".to_owned(), None),
        "POST /v1/people" => (
            "/v1/people".to_owned(),
            Some(json!({"name": "Probe", "email": format!("{}@medpay.com.br", new_key()), "role": "support"})),
        ),
        "POST /v1/people/{id}/tokens" => (format!("/v1/people/{}/tokens", w.support_id), Some(json!({}))),
        "DELETE /v1/people/{id}/tokens/{token_id}" => {
            (format!("/v1/people/{}/tokens/{}", w.support_id, f.token_id), None)
        }
        "POST /v1/providers" => (
            "/v1/providers".to_owned(),
            Some(
                json!({"name": "Clínica Probe", "cnpj": unique_cnpj(), "fee_bps": 500, "escrow": false, "score_fail_mode": "open"}),
            ),
        ),
        "PATCH /v1/providers/{id}" => (format!("/v1/providers/{a}"), Some(json!({"review_time_limit_hours": 48}))),
        "GET /v1/providers/{id}/balance" => (format!("/v1/providers/{a}/balance"), None),
        "GET /v1/providers/{id}/keys" => (format!("/v1/providers/{a}/keys"), None),
        "GET /v1/providers/{id}/prices" => (format!("/v1/providers/{a}/prices"), None),
        "PUT /v1/providers/{id}/prices" => (
            format!("/v1/providers/{a}/prices"),
            Some(json!({"prices": [{"tuss_code": "10101012", "price_centavos": 25_000}]})),
        ),
        "POST /v1/providers/{id}/keys" => (format!("/v1/providers/{a}/keys"), Some(json!({"label": "probe"}))),
        "DELETE /v1/providers/{id}/keys/{key_id}" => (format!("/v1/providers/{a}/keys/{}", f.key_id), None),
        "GET /v1/reviews" => ("/v1/reviews".to_owned(), None),
        "POST /v1/reviews/{id}" => {
            (format!("/v1/reviews/{}", f.case), Some(json!({"outcome": "approve", "note": "probe"})))
        }
        "POST /v1/reviews/{id}/claim" => (format!("/v1/reviews/{}/claim", f.claimed_case), None),
        "GET /v1/rules" => ("/v1/rules".to_owned(), None),
        "POST /v1/rules" => (
            "/v1/rules".to_owned(),
            Some(json!({"name": unique_name(), "source": "review if amount_centavos > 99999999"})),
        ),
        "POST /v1/rules/backtest" => {
            ("/v1/rules/backtest".to_owned(), Some(json!({"source": "review if amount_centavos > 1000"})))
        }
        "DELETE /v1/rules/{id}" => (format!("/v1/rules/{}", f.rule), None),
        "GET /v1/webhook-endpoints" => ("/v1/webhook-endpoints".to_owned(), None),
        "POST /v1/webhook-endpoints" => {
            ("/v1/webhook-endpoints".to_owned(), Some(json!({"url": "http://127.0.0.1:9/medpay-more"})))
        }
        "DELETE /v1/webhook-endpoints/{id}" => (format!("/v1/webhook-endpoints/{}", f.endpoint), None),
        "GET /v1/webhook-endpoints/{id}/deliveries" => {
            (format!("/v1/webhook-endpoints/{}/deliveries", w.endpoint_a), None)
        }
        "POST /v1/webhook-endpoints/{id}/deliveries/{delivery_id}/resend" => {
            (format!("/v1/webhook-endpoints/{}/deliveries/{}/resend", w.endpoint_a, w.delivery_a), None)
        }
        _ => return None,
    };
    Some((path, body))
}

/// Asks once: the status, an error's code, and the body (streams and WebSockets are answered with
/// their headers — a WebSocket route gets a real upgrade request — and dropped unread).
async fn ask(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String, String) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.client.request(method, format!("{}{path}", app.base)).header("Idempotency-Key", new_key());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let streams = path.ends_with("/ws") || path.ends_with("/stream");
    if path.ends_with("/ws") {
        request = request
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if streams && (response.status().is_success() || status == 101) {
        return (status, String::new(), String::new());
    }
    let text = tokio::time::timeout(std::time::Duration::from_secs(10), response.text()).await;
    let text = text.ok().and_then(Result::ok).unwrap_or_default();
    let code =
        serde_json::from_str::<Value>(&text).ok().and_then(|body| body["error"]["code"].as_str().map(str::to_owned));
    (status, code.unwrap_or_default(), text)
}

async fn every_route_answers_each_principal_as_its_role_and_tenant_allow(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let (spec_status, spec) = app.request(Method::GET, "/openapi.json", None, None, None).await;
    assert_eq!(spec_status, StatusCode::OK);
    // The route list: every operation the description has, and the description itself.
    let mut routes: BTreeSet<String> = BTreeSet::from(["GET /openapi.json".to_owned()]);
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let listed: BTreeSet<String> = EXPECTED.iter().map(|(route, _)| (*route).to_owned()).collect();
    let unlisted: Vec<&String> = routes.difference(&listed).collect();
    let gone: Vec<&String> = listed.difference(&routes).collect();
    assert!(unlisted.is_empty(), "routes with no entry in this test's table: {unlisted:?}");
    assert!(gone.is_empty(), "entries for routes that do not exist: {gone:?}");

    let (principals, world) = world(&app).await;
    // A patient pays only a provider that registered them.
    let mut elsewhere = payment_body(&world.provider_a, &world.patient_a, 9_000);
    elsewhere["provider_id"] = json!(principals.provider_b_id);
    let (status, code, _) = ask(&app, "POST", "/v1/payments", Some(&world.patient_a.token), Some(&elsewhere)).await;
    assert_eq!((status, code.as_str()), (404, "provider_not_found"), "patient A pays provider B");
    let mut wrong = Vec::new();
    for (index, name) in PRINCIPALS.iter().enumerate() {
        tidy(&app, &world).await;
        let fresh = fresh(&app, &world).await;
        for (route, expected) in EXPECTED {
            let (path, body) = request(route, name, &world, &fresh).unwrap_or_else(|| panic!("no request for {route}"));
            let (method, _) = route.split_once(' ').unwrap();
            let (status, code, text) =
                ask(&app, method, &path, principals.tokens[index].as_deref(), body.as_ref()).await;
            // Provider B, patient B and nobody never read anything of A's or of patient A's.
            if matches!(*name, "provider B" | "patient B" | "anonymous") {
                for (what, id) in
                    [("A", &world.provider_a.id), ("patient A", &world.patient_a.id), ("A's payment", &world.payment_a)]
                {
                    if text.contains(id.as_str()) {
                        wrong.push(format!("{route} as {name}: the answer names {what} ({id})"));
                    }
                }
            }
            if status != expected[index] {
                wrong.push(format!("{route} as {name}: {status} {code} (expected {})", expected[index]));
            }
        }
    }
    assert!(wrong.is_empty(), "{} answers not as expected:\n{}", wrong.len(), wrong.join("\n"));
    // Nothing provider B or patient B asked changed A's payment or showed B anything of A's.
    let (status, payment) = app
        .request(Method::GET, &format!("/v1/payments/{}", world.payment_a), Some(&world.provider_a.key), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{payment}");
    app.stop().await;
}
on_both_engines!(every_route_answers_each_principal_as_its_role_and_tenant_allow);

/// One credential may have only its share of the server in flight: while provider A's payment
/// waits at a stalled gateway, A's next request is refused (503 `tenant_busy`, Retry-After) and
/// provider B is served; once A's payment is answered, A is served again.
async fn a_busy_tenant_cannot_take_the_whole_server(engine: Engine) {
    let app = TestApp::spawn_with(engine, |config| {
        config.limits.tenant_concurrency_max = 1;
        config.money.gateway_timeout_ms = 5_000;
    })
    .await;
    let a = app.provider(json!({})).await;
    let b = app.provider(json!({})).await;
    let patient = app.patient(&a).await;
    let stats_url = format!("{}/sandbox/stats", app.celcoin);
    let calls = |client: reqwest::Client, url: String| async move {
        let stats: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        stats["calls"].as_u64().unwrap()
    };
    let before = calls(app.client.clone(), stats_url.clone()).await;
    let faults = json!({"timeout_rate": 1.0, "stall_ms": 3_000});
    let set = app.client.put(format!("{}/sandbox/faults", app.celcoin)).json(&faults).send().await.unwrap();
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let held = app
        .client
        .post(format!("{}/v1/payments", app.base))
        .bearer_auth(&a.key)
        .header("Idempotency-Key", new_key())
        .json(&payment_body(&a, &patient, 10_000))
        .send();
    let held = tokio::spawn(held);
    // A's payment is at the gateway (the sandbox has its call) and so still in flight here.
    while calls(app.client.clone(), stats_url.clone()).await == before {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, code, _) = ask(&app, "GET", "/v1/payments", Some(&a.key), None).await;
    assert_eq!((status, code.as_str()), (503, "tenant_busy"));
    let (status, _, _) = ask(&app, "GET", "/v1/payments", Some(&b.key), None).await;
    assert_eq!(status, 200, "another provider is served meanwhile");
    let answered = held.await.unwrap().unwrap();
    assert_eq!(answered.status(), StatusCode::CREATED, "{:?}", answered.text().await);
    let (status, _, _) = ask(&app, "GET", "/v1/payments", Some(&a.key), None).await;
    assert_eq!(status, 200, "A's share came back");
    app.stop().await;
}
on_both_engines!(a_busy_tenant_cannot_take_the_whole_server);

/// A patient pays a provider that did not register them only after choosing it through the
/// provider's checkout link, with their own sign-in (the token B was shown chooses nobody but B);
/// an unknown link changes nothing.
async fn a_patient_chooses_a_provider_through_its_checkout_link(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let a = app.provider(json!({})).await;
    let b = app.provider(json!({})).await;
    let shown_to_b = app.patient(&b).await;
    let patient = Patient { id: shown_to_b.id.clone(), token: app_session(&app, &app.admin, &shown_to_b.id).await };
    let mut body = payment_body(&a, &patient, 9_000);
    let (status, code, _) = ask(&app, "POST", "/v1/payments", Some(&patient.token), Some(&body)).await;
    assert_eq!((status, code.as_str()), (404, "provider_not_found"), "not chosen yet");
    let path = format!("/v1/patients/{}", patient.id);
    assert_eq!(ask(&app, "GET", &path, Some(&a.key), None).await.0, 404, "A does not see the patient yet");
    let (status, code, _) = ask(&app, "POST", "/v1/checkout/mpc_nonsense", Some(&patient.token), None).await;
    assert_eq!((status, code.as_str()), (404, "checkout_link_not_found"));
    for bad in [
        json!({"label": ""}),
        json!({"label": "x", "expires_in_days": 0}),
        json!({"label": "x", "expires_in_days": 366}),
    ] {
        let (status, _, _) = ask(&app, "POST", "/v1/providers/me/checkout-links", Some(&a.key), Some(&bad)).await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, link) = app
        .request(Method::POST, "/v1/providers/me/checkout-links", Some(&a.key), Some(&json!({"label": "site"})), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let open = format!("/v1/checkout/{}", link["token"].as_str().unwrap());
    let (status, code, _) = ask(&app, "POST", &open, Some(&shown_to_b.token), None).await;
    assert_eq!((status, code.as_str()), (403, "credential_scoped"), "B's token chooses nobody but B");
    let (status, opened) = app.request(Method::POST, &open, Some(&patient.token), None, None).await;
    assert_eq!((status, opened["provider_id"].as_str()), (StatusCode::OK, Some(a.id.as_str())), "{opened}");
    body["amount_centavos"] = json!(9_100);
    let (status, _, text) = ask(&app, "POST", "/v1/payments", Some(&patient.token), Some(&body)).await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(ask(&app, "GET", &path, Some(&a.key), None).await.0, 200, "A sees the patient who chose it");
    app.stop().await;
}
on_both_engines!(a_patient_chooses_a_provider_through_its_checkout_link);

//! The payment flow through the real router, on both engines.

use crate::on_both_engines;
use crate::support::{Engine, TestApp, new_key, payment_body, redis_url};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn walk_through(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({})).await;
    let patient = app.patient(&provider).await;
    let mut body = payment_body(&provider, &patient, 1_000_000);
    body["installments"] = json!(12);
    body["monthly_interest_bps"] = json!(200);
    let (status, created) =
        app.request(Method::POST, "/v1/payments", Some(&provider.key), Some(&body), Some(&new_key())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    // Approved; twelve installments of this size need a signed contract before the first charge.
    assert_eq!(created["status"], "approved");
    assert!(created["charge"].is_null());
    assert_eq!(created["decision"]["outcome"], "approve");
    let score = created["decision"]["score"].as_u64().unwrap();
    assert!(score < u64::from(medpay_api::DEFAULT_REVIEW_SCORE_MIN), "a regular payment scores low: {score}");
    let bundled = medpay_ml::ModelArtefact::from_json(medpay_ml::DEFAULT_MODEL_JSON).unwrap();
    assert_eq!(created["decision"]["model_version"], bundled.version.as_str());
    let amounts: Vec<i64> =
        created["installments"].as_array().unwrap().iter().map(|i| i["amount_centavos"].as_i64().unwrap()).collect();
    assert_eq!(amounts.len(), 12);
    assert!(amounts[..11].iter().all(|amount| *amount == 94_560));
    assert_eq!(amounts[11], 94_555);
    assert_eq!(created["total_centavos"], 11 * 94_560 + 94_555);
    let cet = created["cet_annual_bps"].as_i64().unwrap();
    assert!((2_680..=2_700).contains(&cet), "CET depends on the real day counts from today: {cet}");

    let id = created["id"].as_str().unwrap();
    let (status, fetched) =
        app.request(Method::GET, &format!("/v1/payments/{id}"), Some(&provider.key), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, created, "a read returns what the creation returned");

    let (status, events) =
        app.request(Method::GET, &format!("/v1/payments/{id}/events"), Some(&patient.token), None, None).await;
    assert_eq!(status, StatusCode::OK);
    let kinds: Vec<(i64, &str)> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["seq"].as_i64().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    // Then the contract goes out (`payment.contract_sent`), maybe already.
    assert_eq!(kinds[..2], [(1, "payment.requested"), (2, "payment.approved")]);
    // The patient sees the outcome in the status, never the scoring (score, reasons, rules, model);
    // the provider sees it in both.
    assert!(events["data"].as_array().unwrap().iter().all(|e| e["data"]["payment"]["decision"].is_null()), "{events}");
    let (_, provider_events) =
        app.request(Method::GET, &format!("/v1/payments/{id}/events"), Some(&provider.key), None, None).await;
    assert_eq!(provider_events["data"][1]["data"]["payment"]["decision"]["outcome"], "approve");
    let (status, seen) =
        app.request(Method::GET, &format!("/v1/payments/{id}"), Some(&patient.token), None, None).await;
    assert_eq!((status, seen["status"].as_str()), (StatusCode::OK, Some("approved")));
    assert!(seen["decision"].is_null(), "{seen}");
    assert_eq!(seen["installments"], created["installments"]);
    let (_, after_one) =
        app.request(Method::GET, &format!("/v1/payments/{id}/events?after=1"), Some(&patient.token), None, None).await;
    assert!(after_one["data"].as_array().unwrap().len() >= kinds.len() - 1);
    assert_eq!(after_one["data"][0]["seq"], 2);

    let (status, listed) = app
        .request(Method::GET, &format!("/v1/payments?patient_id={}", patient.id), Some(&provider.key), None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["data"][0]["id"], id);
    app.stop().await;
}
on_both_engines!(walk_through);

async fn idempotent_retries(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({})).await;
    let patient = app.patient(&provider).await;
    let key = new_key();
    let body = payment_body(&provider, &patient, 25_000).to_string();
    let first = app.raw(Method::POST, "/v1/payments", Some(&provider.key), Some(body.clone()), Some(&key)).await;
    assert_eq!(first.0, StatusCode::CREATED);
    assert!(first.1.get("idempotent-replayed").is_none());
    // Same key, same request (fields in another order): the first response, byte for byte.
    let reordered: Value = serde_json::from_str(&body).unwrap();
    let reordered = {
        let object = reordered.as_object().unwrap();
        let mut keys: Vec<&String> = object.keys().collect();
        keys.reverse();
        let fields: Vec<String> =
            keys.iter().map(|k| format!("{}:{}", serde_json::to_string(k).unwrap(), object[*k])).collect();
        format!("{{{}}}", fields.join(","))
    };
    assert_ne!(reordered, body);
    let replay = app.raw(Method::POST, "/v1/payments", Some(&provider.key), Some(reordered), Some(&key)).await;
    assert_eq!(replay.0, StatusCode::CREATED);
    assert_eq!(replay.2, first.2);
    assert_eq!(replay.1.get("idempotent-replayed").unwrap(), "true");
    // Same key, another request: 422, and nothing new is recorded.
    let other = payment_body(&provider, &patient, 25_001).to_string();
    let (status, _, error) = app.raw(Method::POST, "/v1/payments", Some(&provider.key), Some(other), Some(&key)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error.contains("idempotency_key_reused"), "{error}");
    // The same key from another caller is another key.
    let (status, _, answer) =
        app.raw(Method::POST, "/v1/payments", Some(&patient.token), Some(body.clone()), Some(&key)).await;
    assert_eq!(status, StatusCode::CREATED);
    // A patient's own request: decided in the same answer, shown without the scoring, and its
    // replay is that answer byte for byte.
    let shown: Value = serde_json::from_str(&answer).unwrap();
    // (Approved and charged at once: its PIX charge is what the patient pays.)
    assert!(shown["decision"].is_null() && shown["status"] == "awaiting_payment", "{answer}");
    assert!(shown["charge"]["pix_br_code"].is_string(), "{answer}");
    let again = app.raw(Method::POST, "/v1/payments", Some(&patient.token), Some(body.clone()), Some(&key)).await;
    assert_eq!((again.0, again.2.as_str()), (StatusCode::CREATED, answer.as_str()));
    assert_eq!(again.1.get("idempotent-replayed").unwrap(), "true");
    let (_, listed) = app.request(Method::GET, "/v1/payments", Some(&provider.key), None, None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    app.stop().await;
}
on_both_engines!(idempotent_retries);

async fn concurrent_duplicates_make_one_payment(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({})).await;
    let patient = app.patient(&provider).await;
    let key = new_key();
    let body = payment_body(&provider, &patient, 30_000).to_string();
    let attempts =
        (0..8).map(|_| app.raw(Method::POST, "/v1/payments", Some(&provider.key), Some(body.clone()), Some(&key)));
    let results = futures::future::join_all(attempts).await;
    let created: Vec<&String> = results.iter().filter(|r| r.0 == StatusCode::CREATED).map(|r| &r.2).collect();
    let in_progress = results.iter().filter(|r| r.0 == StatusCode::CONFLICT).count();
    assert!(!created.is_empty());
    assert_eq!(created.len() + in_progress, 8, "only 201 (first or replay) and 409 (in progress) are possible");
    assert!(created.iter().all(|body| *body == created[0]), "every 201 is the same response");
    for (status, _, text) in results.iter().filter(|r| r.0 == StatusCode::CONFLICT) {
        assert!(text.contains("idempotency_key_in_use"), "{status} {text}");
    }
    let (_, listed) = app.request(Method::GET, "/v1/payments", Some(&provider.key), None, None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "exactly one payment");
    app.stop().await;
}
on_both_engines!(concurrent_duplicates_make_one_payment);

async fn bad_input_is_refused_and_changes_nothing(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({})).await;
    let patient = app.patient(&provider).await;
    let good = payment_body(&provider, &patient, 10_000);
    let change = |path: &[&str], value: Value| {
        let mut body = good.clone();
        let mut cursor = &mut body;
        for segment in &path[..path.len() - 1] {
            cursor = &mut cursor[*segment];
        }
        cursor[path[path.len() - 1]] = value;
        body
    };
    let cases: Vec<(Value, &str)> = vec![
        (change(&["amount_centavos"], json!(99)), "invalid_amount"),
        (change(&["amount_centavos"], json!(-5)), "invalid_amount"),
        (change(&["amount_centavos"], json!(100.5)), "invalid_request"),
        (change(&["amount_centavos"], json!("100")), "invalid_request"),
        (change(&["installments"], json!(0)), "invalid_installments"),
        (change(&["installments"], json!(25)), "invalid_installments"),
        (change(&["monthly_interest_bps"], json!(1_001)), "invalid_interest"),
        (change(&["method"], json!("cash")), "invalid_method"),
        (change(&["procedure", "tuss_code"], json!("1234")), "invalid_tuss_code"),
        (change(&["procedure", "description"], json!("")), "invalid_description"),
        (change(&["device", "ip"], json!("999.1.1.1")), "invalid_ip"),
        (change(&["device", "id"], json!("")), "invalid_device"),
        (change(&["patient_id"], json!("nope")), "invalid_patient_id"),
        (change(&["provider_id"], json!("nope")), "invalid_provider_id"),
        (change(&["surprise"], json!(1)), "invalid_request"),
    ];
    for (body, code) in cases {
        let (status, error) =
            app.request(Method::POST, "/v1/payments", Some(&provider.key), Some(&body), Some(&new_key())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {error}");
        assert_eq!(error["error"]["code"], code, "{body}");
        assert!(!error["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, _, text) = app
        .raw(Method::POST, "/v1/payments", Some(&provider.key), Some("{not json".to_owned()), Some(&new_key()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let (status, error) = app.request(Method::POST, "/v1/payments", Some(&provider.key), Some(&good), None).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("missing_idempotency_key")));
    let oversized = format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    // On a connection of its own: the server answers 413 without reading the body and closes the
    // connection, which the shared client's pool could otherwise hand to the next request.
    let response = crate::support::client()
        .post(format!("{}/v1/payments", app.base))
        .bearer_auth(&provider.key)
        .header("Idempotency-Key", new_key())
        .header("Content-Type", "application/json")
        .body(oversized)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Bad documents on registration.
    for (path, body, code) in [
        ("/v1/providers", json!({"name": "X", "cnpj": "11.222.333/0001-82", "fee_bps": 100}), "invalid_cnpj"),
        ("/v1/providers", json!({"name": "X", "cnpj": "11.222.333/0001-81", "fee_bps": 10_001}), "invalid_fee"),
        (
            "/v1/patients",
            json!({"name": "X", "cpf": "111.111.111-11", "email": "x@y.com", "phone": "11999990000"}),
            "invalid_cpf",
        ),
        (
            "/v1/patients",
            json!({"name": "X", "cpf": "529.982.247-25", "email": "not-an-email", "phone": "11999990000"}),
            "invalid_email",
        ),
    ] {
        let (status, error) = app.request(Method::POST, path, Some(&app.admin), Some(&body), None).await;
        assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{body}");
    }
    let (_, listed) = app.request(Method::GET, "/v1/payments", Some(&provider.key), None, None).await;
    assert_eq!(listed["data"], json!([]), "no bad request recorded anything");
    app.stop().await;
}
on_both_engines!(bad_input_is_refused_and_changes_nothing);

async fn callers_see_only_their_own(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let clinic = app.provider(json!({})).await;
    let other_clinic = app.provider(json!({})).await;
    let patient = app.patient(&clinic).await;
    let other_patient = app.patient(&other_clinic).await;
    let (status, created) = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&clinic.key),
            Some(&payment_body(&clinic, &patient, 10_000)),
            Some(&new_key()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let path = format!("/v1/payments/{}", created["id"].as_str().unwrap());
    for token in [Some(other_clinic.key.as_str()), Some(other_patient.token.as_str())] {
        let (status, error) = app.request(Method::GET, &path, token, None, None).await;
        assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("payment_not_found")));
        let (status, _) = app.request(Method::GET, &format!("{path}/events"), token, None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    for token in [None, Some("mpk_not-a-key"), Some("garbage")] {
        let (status, error) = app.request(Method::GET, &path, token, None, None).await;
        assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    }
    for token in [clinic.key.as_str(), patient.token.as_str(), app.admin.as_str()] {
        assert_eq!(app.request(Method::GET, &path, Some(token), None, None).await.0, StatusCode::OK);
    }
    // A clinic cannot charge another clinic's patient, nor in another clinic's name.
    let (status, error) = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&clinic.key),
            Some(&payment_body(&clinic, &other_patient, 10_000)),
            Some(&new_key()),
        )
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("patient_not_found")));
    let (status, _) = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&clinic.key),
            Some(&payment_body(&other_clinic, &other_patient, 10_000)),
            Some(&new_key()),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A patient pays for themself only.
    let (status, _) = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&patient.token),
            Some(&payment_body(&clinic, &other_patient, 10_000)),
            Some(&new_key()),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Lists are narrowed to the caller.
    let (_, listed) = app.request(Method::GET, "/v1/payments", Some(&other_clinic.key), None, None).await;
    assert_eq!(listed["data"], json!([]));
    let (_, listed) = app
        .request(Method::GET, &format!("/v1/payments?provider_id={}", clinic.id), Some(&other_clinic.key), None, None)
        .await;
    assert_eq!(listed["data"], json!([]));
    let (_, listed) = app.request(Method::GET, "/v1/payments", Some(&other_patient.token), None, None).await;
    assert_eq!(listed["data"], json!([]));
    // Patients: the clinic that registered them, the patient, the admin.
    let patient_path = format!("/v1/patients/{}", patient.id);
    assert_eq!(app.request(Method::GET, &patient_path, Some(&clinic.key), None, None).await.0, StatusCode::OK);
    assert_eq!(
        app.request(Method::GET, &patient_path, Some(&other_clinic.key), None, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.request(Method::GET, &patient_path, Some(&other_patient.token), None, None).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, shown) = app.request(Method::GET, &patient_path, Some(&patient.token), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(shown.get("token").is_none(), "a token is shown once, at creation");
    // Only the admin registers providers.
    let (status, _) = app
        .request(
            Method::POST,
            "/v1/providers",
            Some(&clinic.key),
            Some(&json!({"name": "X", "cnpj": "11.222.333/0001-81", "fee_bps": 1})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}
on_both_engines!(callers_see_only_their_own);

async fn rules_decide_review_and_decline(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({"max_amount_centavos": 500_000})).await;
    let patient = app.patient(&provider).await;
    let (status, declined) = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&provider.key),
            Some(&payment_body(&provider, &patient, 500_001)),
            Some(&new_key()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "a decline is an outcome, not an error");
    assert_eq!(declined["status"], "declined");
    assert_eq!(declined["decision"]["outcome"], "decline");
    assert_eq!(declined["decision"]["reasons"][0]["code"], "amount_above_provider_limit");
    let (_, events) = app
        .request(
            Method::GET,
            &format!("/v1/payments/{}/events", declined["id"].as_str().unwrap()),
            Some(&provider.key),
            None,
            None,
        )
        .await;
    assert_eq!(events["data"][1]["type"], "payment.declined");
    // Velocity: the patient's sixth request within the hour goes to review.
    let mut last = Value::Null;
    for _ in 0..5 {
        let (status, created) = app
            .request(
                Method::POST,
                "/v1/payments",
                Some(&patient.token),
                Some(&payment_body(&provider, &patient, 10_000)),
                Some(&new_key()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        last = created;
    }
    // The patient (who asked) sees the outcome in the status, not the scoring; the provider sees
    // which rule held it.
    assert_eq!(last["status"], "in_review");
    assert!(last["decision"].is_null(), "{last}");
    let path = format!("/v1/payments/{}", last["id"].as_str().unwrap());
    let (_, seen) = app.request(Method::GET, &path, Some(&provider.key), None, None).await;
    assert_eq!(seen["decision"]["outcome"], "review");
    assert_eq!(seen["decision"]["rules_hit"], json!(["velocity_payments_1h"]));
    app.stop().await;
}
on_both_engines!(rules_decide_review_and_decline);

async fn patient_rate_limit(engine: Engine) {
    let app = TestApp::spawn_with(engine, |config| config.limits.payments_per_patient_per_minute = 2).await;
    let provider = app.provider(json!({})).await;
    let patient = app.patient(&provider).await;
    for _ in 0..2 {
        let (status, _) = app
            .request(
                Method::POST,
                "/v1/payments",
                Some(&provider.key),
                Some(&payment_body(&provider, &patient, 10_000)),
                Some(&new_key()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, headers, text) = app
        .raw(
            Method::POST,
            "/v1/payments",
            Some(&provider.key),
            Some(payment_body(&provider, &patient, 10_000).to_string()),
            Some(&new_key()),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert!(text.contains("rate_limited"));
    assert!(headers.get("retry-after").is_some());
    let (_, listed) = app.request(Method::GET, "/v1/payments", Some(&provider.key), None, None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    app.stop().await;
}
on_both_engines!(patient_rate_limit);

/// Two nodes on one database and one Redis share the patient's limit.
async fn nodes_share_rate_limits_through_redis(engine: Engine) {
    let limit = |config: &mut medpay_api::Config| {
        config.redis_url = Some(redis_url());
        config.limits.payments_per_patient_per_minute = 3;
    };
    let first = TestApp::spawn_with(engine, limit).await;
    let database_url = first_database_url(&first).await;
    let second = TestApp::on_database(&database_url, |config| {
        limit(config);
        config.admin_token = Some(first.admin.clone());
    })
    .await;
    let provider = first.provider(json!({})).await;
    let patient = first.patient(&provider).await;
    let nodes = [&first, &second, &first];
    for node in nodes {
        let (status, created) = node
            .request(
                Method::POST,
                "/v1/payments",
                Some(&provider.key),
                Some(&payment_body(&provider, &patient, 10_000)),
                Some(&new_key()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    let (status, error) = second
        .request(
            Method::POST,
            "/v1/payments",
            Some(&provider.key),
            Some(&payment_body(&provider, &patient, 10_000)),
            Some(&new_key()),
        )
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    second.stop().await;
    first.stop().await;
}
on_both_engines!(nodes_share_rate_limits_through_redis);

async fn first_database_url(app: &TestApp) -> String {
    app.database_url().to_owned()
}

async fn openapi_describes_every_endpoint(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let (status, spec) = app.request(Method::GET, "/openapi.json", None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("/v1/providers", "post"),
        ("/v1/patients", "post"),
        ("/v1/patients/{id}", "get"),
        ("/v1/patients/{id}/export", "get"),
        ("/v1/patients/{id}/erasure", "post"),
        ("/v1/providers/{id}/checkout-links", "post"),
        ("/v1/checkout/{token}", "post"),
        ("/v1/payments", "post"),
        ("/v1/payments", "get"),
        ("/v1/payments/{id}", "get"),
        ("/v1/payments/{id}/events", "get"),
        ("/v1/payments/{id}/label", "post"),
        ("/v1/rules", "get"),
        ("/v1/rules", "post"),
        ("/v1/rules/{id}", "delete"),
        ("/v1/rules/backtest", "post"),
        ("/v1/lists", "get"),
        ("/v1/lists", "post"),
        ("/v1/lists/{list}/{kind}/{value_hash}", "delete"),
        ("/v1/events", "get"),
        ("/v1/events/stream", "get"),
        ("/v1/events/ws", "get"),
        ("/v1/webhook-endpoints", "post"),
        ("/v1/webhook-endpoints", "get"),
        ("/v1/webhook-endpoints/{id}", "delete"),
        ("/v1/webhook-endpoints/{id}/deliveries", "get"),
        ("/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/resend", "post"),
        ("/v1/providers/{id}/balance", "get"),
        ("/v1/providers/{id}/keys", "post"),
        ("/v1/providers/{id}/keys", "get"),
        ("/v1/providers/{id}/keys/{key_id}", "delete"),
        ("/v1/providers/{id}", "patch"),
        ("/v1/payments/{id}/refunds", "post"),
        ("/v1/payments/{id}/refunds", "get"),
        ("/v1/payments/{id}/procedure", "post"),
        ("/v1/gateways/celcoin/webhooks", "post"),
        ("/v1/gateways/clicksign/webhooks", "post"),
        ("/v1/ledger/check", "get"),
        ("/v1/ledger/reconciliation", "get"),
        ("/v1/chat/conversations", "post"),
        ("/v1/chat/conversations/{id}/messages", "post"),
        ("/v1/chat/conversations/{id}", "get"),
        ("/v1/chat/handoffs", "get"),
        ("/v1/chat/conversations/{id}/agent-messages", "post"),
        ("/v1/chat/ws", "get"),
        ("/v1/reviews", "get"),
        ("/v1/reviews/{id}", "post"),
        ("/v1/reviews/{id}/claim", "post"),
        ("/v1/people", "post"),
        ("/v1/people", "get"),
        ("/v1/people/{id}/tokens", "post"),
        ("/v1/people/{id}/tokens/{token_id}", "delete"),
        ("/v1/audit", "get"),
        ("/v1/labels", "get"),
        ("/v1/models", "get"),
        ("/v1/models", "post"),
        ("/v1/models/aliases/{alias}", "post"),
        ("/v1/models/aliases/champion/rollback", "post"),
        ("/v1/models/aliases/history", "get"),
        ("/v1/models/shadow", "get"),
        ("/v1/models/canary", "put"),
        ("/v1/models/drift", "get"),
        ("/v1/models/{id}/plots/{plot}", "get"),
        ("/v1/models/training-runs", "post"),
        ("/v1/models/training-runs/{id}", "get"),
        ("/v1/patients/{id}/sign-in-links", "post"),
        ("/v1/patient-sessions", "post"),
        ("/v1/patient-sessions/current", "delete"),
        ("/v1/me/payments", "get"),
        ("/v1/me/stream", "get"),
        ("/v1/me/notifications", "get"),
        ("/v1/analytics/payments", "get"),
        ("/v1/analytics/models", "get"),
        ("/v1/analytics/charts/{chart}", "get"),
        ("/v1/payments/{id}/pix-qr", "get"),
        ("/v1/payments/{id}/contract.pdf", "get"),
        ("/v1/payments/{id}/signed-contract.pdf", "get"),
        ("/v1/payments/{id}/contract/notifications", "post"),
        ("/v1/payments/{id}/evidence", "post"),
        ("/v1/payments/{id}/evidence", "get"),
        ("/v1/payments/{id}/evidence/{evidence_id}", "get"),
        ("/v1/providers/{id}/prices", "put"),
        ("/v1/providers/{id}/prices", "get"),
        ("/v1/simulations", "get"),
        ("/dashboard", "get"),
        ("/console", "get"),
        ("/paciente", "get"),
        ("/paciente/manifest.webmanifest", "get"),
        ("/paciente/sw.js", "get"),
        ("/paciente/icon.svg", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ];
    for (path, method) in expected {
        assert!(spec["paths"][path][method].is_object(), "{method} {path} is described");
    }
    let described: usize =
        spec["paths"].as_object().unwrap().values().map(|item| item.as_object().unwrap().len()).sum();
    assert_eq!(described, expected.len(), "nothing undescribed, nothing extra");
    assert!(spec["components"]["schemas"]["PaymentView"].is_object());
    // The constraints the handlers enforce are stated, from the same constants.
    let payment = &spec["components"]["schemas"]["CreatePayment"]["properties"];
    assert_eq!(payment["amount_centavos"]["minimum"], json!(medpay_models::installments::AMOUNT_MIN_CENTAVOS));
    assert_eq!(payment["amount_centavos"]["maximum"], json!(medpay_models::installments::AMOUNT_MAX_CENTAVOS));
    assert_eq!(payment["installments"]["maximum"], json!(medpay_models::installments::INSTALLMENTS_MAX));
    assert_eq!(payment["method"]["enum"], json!(["pix", "boleto", "card"]));
    assert_eq!(payment["patient_id"]["format"], "uuid");
    let key = &spec["paths"]["/v1/payments"]["post"]["parameters"][0];
    assert_eq!(key["name"], "Idempotency-Key");
    let pattern = format!("^[!-~]{{1,{}}}$", medpay_store::IDEMPOTENCY_KEY_LENGTH_MAX);
    assert_eq!(key["schema"]["pattern"].as_str(), Some(pattern.as_str()));
    let person = &spec["components"]["schemas"]["CreatePerson"]["properties"];
    assert_eq!(person["role"]["enum"], json!(["admin", "analyst", "support"]));
    let (status, ready) = app.request(Method::GET, "/readyz", None, None, None).await;
    assert_eq!((status, ready["status"].as_str()), (StatusCode::OK, Some("ready")));
    let provider = app.provider(json!({})).await;
    let patient = app.patient(&provider).await;
    app.request(
        Method::POST,
        "/v1/payments",
        Some(&provider.key),
        Some(&payment_body(&provider, &patient, 10_000)),
        Some(&new_key()),
    )
    .await;
    let (status, _, metrics) = app.raw(Method::GET, "/metrics", None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.contains("medpay_decisions_total"), "{metrics}");
    assert!(metrics.contains("medpay_http_requests_total"));
    let (status, error) = app.request(Method::GET, "/v2/nothing", None, None, None).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("route_not_found")));
    app.stop().await;
}
on_both_engines!(openapi_describes_every_endpoint);

async fn receita_status_refuses_irregular_cpf_and_inactive_cnpj(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({})).await;
    let patient = app.patient(&provider).await;
    let (_, shown) =
        app.request(Method::GET, &format!("/v1/patients/{}", patient.id), Some(&provider.key), None, None).await;
    let cpf: String = shown["cpf"].as_str().unwrap().chars().filter(char::is_ascii_digit).collect();
    // Receita says the CPF is suspended.
    let status = app
        .client
        .put(format!("{}/sandbox/cpf/{cpf}", app.receita))
        .json(&json!({"codigo": "2"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, error) = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&provider.key),
            Some(&payment_body(&provider, &patient, 10_000)),
            Some(&new_key()),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("cpf_irregular")),
        "{error}"
    );
    assert!(error["error"]["message"].as_str().unwrap().contains("Suspensa"));
    // A clinic whose CNPJ is "inapta".
    let other = app.provider(json!({})).await;
    let other_patient = app.patient(&other).await;
    let cnpj: String = other.cnpj.chars().filter(char::is_ascii_alphanumeric).collect();
    app.client.put(format!("{}/sandbox/cnpj/{cnpj}", app.receita)).json(&json!({"codigo": "4"})).send().await.unwrap();
    let (status, error) = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&other.key),
            Some(&payment_body(&other, &other_patient, 10_000)),
            Some(&new_key()),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("cnpj_inactive")),
        "{error}"
    );
    let (_, listed) = app.request(Method::GET, "/v1/payments", Some(&app.admin), None, None).await;
    assert_eq!(listed["data"], json!([]), "nothing recorded");
    app.stop().await;
}
on_both_engines!(receita_status_refuses_irregular_cpf_and_inactive_cnpj);

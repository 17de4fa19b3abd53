//! Real-time scoring through the API: the model names the fraud it sees, analysts' rules and lists
//! change the next decision without a restart, backtests count labelled fraud.

use crate::on_both_engines;
use crate::support::{Engine, Patient, Provider, TestApp, pay, payment_body, payment_once, review_above};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn codes(decision: &Value) -> Vec<String> {
    decision["decision"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|reason| reason["code"].as_str().unwrap().to_owned())
        .collect()
}

async fn patients(app: &TestApp, provider: &Provider, count: usize) -> Vec<Patient> {
    let mut patients = Vec::new();
    for _ in 0..count {
        patients.push(app.patient(provider).await);
    }
    patients
}

async fn an_amount_far_above_the_usual_is_caught_and_named(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({})).await;
    let regulars = patients(&app, &provider, 6).await;
    for (index, patient) in regulars.iter().take(5).enumerate() {
        let created = pay(&app, &provider, &payment_body(&provider, patient, 25_000 + 500 * index as i64)).await;
        assert_eq!(created["decision"]["outcome"], "approve", "{created}");
    }
    // The generator's "overpriced" pattern: ten times this provider's usual consultation.
    let created = pay(&app, &provider, &payment_body(&provider, &regulars[5], 260_000)).await;
    let outcome = created["decision"]["outcome"].as_str().unwrap();
    assert!(outcome == "review" || outcome == "decline", "{created}");
    assert!(codes(&created).contains(&"amount_far_above_usual".to_owned()), "{created}");
    let reason = created["decision"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "amount_far_above_usual")
        .unwrap();
    assert!(reason["message"].as_str().unwrap().contains("usual amount"));
    assert!(reason["message_pt"].as_str().unwrap().contains("habitual"));
    assert!(created["decision"]["score"].as_u64().unwrap() >= u64::from(medpay_api::DEFAULT_REVIEW_SCORE_MIN));
    app.stop().await;
}
on_both_engines!(an_amount_far_above_the_usual_is_caught_and_named);

async fn one_device_behind_many_cpfs_is_declined(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({})).await;
    let victims = patients(&app, &provider, 4).await;
    let mut last = Value::Null;
    for patient in &victims {
        let mut body = payment_body(&provider, patient, 9_000);
        body["method"] = json!("card");
        body["device"]["id"] = json!("burner-phone");
        last = pay(&app, &provider, &body).await;
    }
    // The generator's "card_testing" pattern: the fourth CPF on one device in minutes.
    assert_eq!(last["decision"]["outcome"], "decline", "{last}");
    assert_eq!(codes(&last)[0], "device_many_patients");
    assert!(last["decision"]["rules_hit"].as_array().unwrap().contains(&json!("device_many_patients")));
    assert!(codes(&last).contains(&"device_shared".to_owned()), "the model names it too: {last}");
    app.stop().await;
}
on_both_engines!(one_device_behind_many_cpfs_is_declined);

async fn a_rule_changed_over_http_decides_the_next_payment(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let analyst = app.analyst.clone();
    let provider = app.provider(json!({})).await;
    let patient = app.patient(&provider).await;
    let before = pay(&app, &provider, &payment_body(&provider, &patient, 40_000)).await;
    assert_eq!(before["decision"]["outcome"], "approve");

    let (status, error) = app
        .request(
            Method::POST,
            "/v1/rules",
            Some(&analyst),
            Some(&json!({"name": "big", "source": "review if amount > 30000"})),
            None,
        )
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_rule")));
    assert!(
        error["error"]["message"].as_str().unwrap().starts_with("at position 10: unknown name \"amount\""),
        "{error}"
    );
    let (status, _) = app
        .request(
            Method::POST,
            "/v1/rules",
            Some(&provider.key),
            Some(&json!({"name": "big", "source": "review if amount_centavos > 30000"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "providers do not write rules");

    let (status, rule) = app
        .request(
            Method::POST,
            "/v1/rules",
            Some(&analyst),
            Some(&json!({"name": "big_consultation", "source": "review if amount_centavos > 30000 and score >= 0"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    assert_eq!(rule["action"], "review");
    let during = pay(&app, &provider, &payment_body(&provider, &patient, 40_000)).await;
    assert_eq!(during["decision"]["outcome"], "review", "{during}");
    assert_eq!(codes(&during)[0], "big_consultation");
    let (_, listed) = app.request(Method::GET, "/v1/rules", Some(&analyst), None, None).await;
    assert!(listed["data"].as_array().unwrap().iter().any(|r| r["name"] == "big_consultation"));
    assert!(listed["variables"].as_array().unwrap().contains(&json!("score")));

    let (status, _) = app
        .request(Method::DELETE, &format!("/v1/rules/{}", rule["id"].as_str().unwrap()), Some(&analyst), None, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let after = pay(&app, &provider, &payment_body(&provider, &patient, 40_000)).await;
    assert_eq!(after["decision"]["outcome"], "approve", "{after}");
    let (status, _) = app
        .request(Method::DELETE, &format!("/v1/rules/{}", rule["id"].as_str().unwrap()), Some(&analyst), None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}
on_both_engines!(a_rule_changed_over_http_decides_the_next_payment);

async fn lists_block_and_allow_from_the_next_payment(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let analyst = app.analyst.clone();
    let provider = app.provider(json!({})).await;
    let patient = app.patient(&provider).await;
    let mut body = payment_body(&provider, &patient, 12_000);
    body["device"]["card_fingerprint"] = json!("card-fp-123");
    let (status, entry) = app
        .request(
            Method::POST,
            "/v1/lists",
            Some(&analyst),
            Some(&json!({"list": "block", "kind": "card", "value": "card-fp-123", "reason": "chargeback ring"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{entry}");
    assert_ne!(entry["value_hash"], "card-fp-123", "stored hashed");
    let blocked = pay(&app, &provider, &body).await;
    assert_eq!(blocked["decision"]["outcome"], "decline");
    assert_eq!(codes(&blocked)[0], "blocklisted_card");

    let path = format!("/v1/lists/block/card/{}", entry["value_hash"].as_str().unwrap());
    assert_eq!(app.request(Method::DELETE, &path, Some(&analyst), None, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(pay(&app, &provider, &body).await["decision"]["outcome"], "approve");

    // An allowed CPF is approved even where a rule would send it to review.
    let (status, _) = app
        .request(
            Method::POST,
            "/v1/rules",
            Some(&analyst),
            Some(&json!({"name": "all", "source": "review if amount_centavos > 0"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, shown) =
        app.request(Method::GET, &format!("/v1/patients/{}", patient.id), Some(&analyst), None, None).await;
    let (status, _) = app
        .request(
            Method::POST,
            "/v1/lists",
            Some(&analyst),
            Some(&json!({"list": "allow", "kind": "cpf", "value": shown["cpf"], "reason": "VIP"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let allowed = pay(&app, &provider, &body).await;
    assert_eq!(
        (allowed["decision"]["outcome"].as_str(), codes(&allowed)[0].as_str()),
        (Some("approve"), "allowlisted")
    );
    let (status, error) = app
        .request(
            Method::POST,
            "/v1/lists",
            Some(&analyst),
            Some(&json!({"list": "block", "kind": "cpf", "value": "111.111.111-11", "reason": "x"})),
            None,
        )
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_cpf")));
    let (status, listed) = app.request(Method::GET, "/v1/lists", Some(&analyst), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    app.stop().await;
}
on_both_engines!(lists_block_and_allow_from_the_next_payment);

async fn a_backtest_counts_what_a_rule_would_have_caught(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let analyst = app.analyst.clone();
    let provider = app.provider(json!({})).await;
    let patient = app.patient(&provider).await;
    let mut ids = Vec::new();
    for amount in [10_000, 20_000, 35_000, 45_000] {
        ids.push(
            pay(&app, &provider, &payment_body(&provider, &patient, amount)).await["id"].as_str().unwrap().to_owned(),
        );
    }
    for (id, is_fraud) in [(&ids[3], true), (&ids[2], false), (&ids[0], true)] {
        let (status, _) = app
            .request(
                Method::POST,
                &format!("/v1/payments/{id}/label"),
                Some(&analyst),
                Some(&json!({"is_fraud": is_fraud, "note": "reviewed"})),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (status, result) = app
        .request(
            Method::POST,
            "/v1/rules/backtest",
            Some(&analyst),
            Some(&json!({"source": "decline if amount_centavos > 30000"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["evaluated"], 4);
    assert_eq!(result["matched"], 2);
    assert_eq!(result["would_decline"], 2);
    assert_eq!(result["matched_labelled_fraud"], 1);
    assert_eq!(result["matched_labelled_legitimate"], 1);
    assert_eq!(result["labelled_fraud"], 2);
    app.stop().await;
}
on_both_engines!(a_backtest_counts_what_a_rule_would_have_caught);

async fn provider_thresholds_change_the_next_decision(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({})).await;
    let patient = app.patient(&provider).await;
    let first = pay(&app, &provider, &payment_body(&provider, &patient, 20_000)).await;
    assert_eq!(first["decision"]["outcome"], "approve");
    let score = first["decision"]["score"].as_u64().unwrap();
    // An analyst makes this provider strict: every score at or above the last one is declined.
    let path = format!("/v1/providers/{}", provider.id);
    let (status, updated) = app
        .request(
            Method::PATCH,
            &path,
            Some(&app.analyst),
            Some(&json!({"review_score_min": 0, "decline_score_min": score})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["decline_score_min"], score);
    let second = pay(&app, &provider, &payment_body(&provider, &patient, 20_000)).await;
    let outcome = second["decision"]["outcome"].as_str().unwrap();
    let second_score = second["decision"]["score"].as_u64().unwrap();
    let expected = if second_score >= score { "decline" } else { "review" };
    assert_eq!(outcome, expected, "{second}");
    let (status, error) = app
        .request(
            Method::PATCH,
            &path,
            Some(&app.analyst),
            Some(&json!({"review_score_min": 900, "decline_score_min": 100})),
            None,
        )
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_thresholds")));
    let (status, _) =
        app.request(Method::PATCH, &path, Some(&provider.key), Some(&json!({"decline_score_min": 1000})), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a provider does not set its own thresholds");
    app.stop().await;
}
on_both_engines!(provider_thresholds_change_the_next_decision);

/// A payment sent to review by its decision is a case in the analysts' queue (in the same commit);
/// an analyst approves it — and it goes on as an approved payment does: charged at Celcoin, its
/// BR Code shown, the approval an event — or declines it; each decision is a label.
async fn an_analyst_approves_or_declines_a_payment_in_review(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let analyst = app.analyst.clone();
    let provider = app.provider(json!({})).await;
    review_above(&app, 30_000).await;
    let (first, second) = (app.patient(&provider).await, app.patient(&provider).await);
    let approved = pay(&app, &provider, &payment_body(&provider, &first, 40_000)).await;
    let declined = pay(&app, &provider, &payment_body(&provider, &second, 41_000)).await;
    for created in [&approved, &declined] {
        assert_eq!(created["status"], "in_review", "{created}");
        assert!(created["charge"].is_null(), "nothing is charged while in review: {created}");
    }
    let (status, queue) = app.request(Method::GET, "/v1/reviews", Some(&analyst), None, None).await;
    assert_eq!(status, StatusCode::OK, "{queue}");
    let case_of = |payment: &Value| -> String {
        queue["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|case| case["payment"]["id"] == payment["id"])
            .unwrap_or_else(|| panic!("no case for {payment}: {queue}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (approve_case, decline_case) = (case_of(&approved), case_of(&declined));
    // The queue filters: by provider, by reason, by age; oldest first.
    let ids = |queue: &Value| -> Vec<String> {
        queue["data"].as_array().unwrap().iter().map(|case| case["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(&queue), vec![approve_case.clone(), decline_case.clone()], "oldest first: {queue}");
    let other = app.provider(json!({})).await;
    for (query, expected) in [
        (format!("provider_id={}", provider.id), 2),
        (format!("provider_id={}", other.id), 0),
        ("reason=decision_review".to_owned(), 2),
        ("reason=patient_disputed".to_owned(), 0),
        ("older_than_minutes=0".to_owned(), 2),
        ("older_than_minutes=60".to_owned(), 0),
    ] {
        let (status, filtered) =
            app.request(Method::GET, &format!("/v1/reviews?{query}"), Some(&analyst), None, None).await;
        assert_eq!((status, ids(&filtered).len()), (StatusCode::OK, expected), "{query}: {filtered}");
    }
    for (query, code) in [
        ("reason=whatever", "invalid_reason"),
        ("provider_id=nope", "invalid_provider_id"),
        ("older_than_minutes=-1", "invalid_age"),
    ] {
        let (status, error) =
            app.request(Method::GET, &format!("/v1/reviews?{query}"), Some(&analyst), None, None).await;
        assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{query}");
    }
    assert!(queue["data"].as_array().unwrap().iter().all(|case| case["reason"] == "decision_review"), "{queue}");

    let (status, error) = app
        .request(
            Method::POST,
            &format!("/v1/reviews/{approve_case}"),
            Some(&analyst),
            Some(&json!({"outcome": "maybe", "note": "x"})),
            None,
        )
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_outcome")));
    let (status, after) = app
        .request(
            Method::POST,
            &format!("/v1/reviews/{approve_case}"),
            Some(&analyst),
            Some(&json!({"outcome": "approve", "note": "called the patient: it is theirs"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["id"], approved["id"]);
    // Approved, then charged by the actor right after its commit (the sandbox answers at once).
    let payment = payment_once(&app, &provider.key, &approved, "awaiting_payment").await;
    assert_eq!(payment["status"], "awaiting_payment", "{payment}");
    assert!(payment["charge"]["pix_br_code"].as_str().is_some_and(|code| code.starts_with("000201")), "{payment}");

    let (status, after) = app
        .request(
            Method::POST,
            &format!("/v1/reviews/{decline_case}"),
            Some(&analyst),
            Some(&json!({"outcome": "decline", "note": "stolen card reported"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["status"], "declined", "{after}");
    assert!(after["charge"].is_null(), "{after}");
    // Deciding a closed case again changes nothing.
    let (status, error) = app
        .request(
            Method::POST,
            &format!("/v1/reviews/{decline_case}"),
            Some(&analyst),
            Some(&json!({"outcome": "approve", "note": "changed my mind"})),
            None,
        )
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("review_case_closed")));
    let (_, queue) = app.request(Method::GET, "/v1/reviews", Some(&analyst), None, None).await;
    assert!(
        queue["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|case| case["payment"]["id"] != approved["id"] && case["payment"]["id"] != declined["id"]),
        "{queue}"
    );
    // Each decision is a label from an analyst: the approved one legitimate, the declined fraud.
    let (status, error) = app.request(Method::GET, "/v1/labels?source=robot", Some(&analyst), None, None).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_source")));
    let (_, labels) = app.request(Method::GET, "/v1/labels?source=analyst", Some(&analyst), None, None).await;
    let label_of = |payment: &Value| {
        labels["data"].as_array().unwrap().iter().find(|label| label["payment_id"] == payment["id"]).cloned()
    };
    assert_eq!(label_of(&approved).map(|label| label["is_fraud"].clone()), Some(json!(false)), "{labels}");
    assert_eq!(label_of(&declined).map(|label| label["is_fraud"].clone()), Some(json!(true)), "{labels}");
    assert!(label_of(&declined).unwrap()["note"].as_str().unwrap().contains("stolen card reported"));
    assert_eq!(label_of(&declined).unwrap()["labelled_by"], "analyst", "the shared analyst token is its author");
    // The events tell the provider: approved after review, then awaiting payment.
    let path = format!("/v1/payments/{}/events", approved["id"].as_str().unwrap());
    let (_, events) = app.request(Method::GET, &path, Some(&provider.key), None, None).await;
    let kinds: Vec<&str> = events["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.ends_with(&["payment.review_closed", "payment.approved", "payment.awaiting_payment"]), "{kinds:?}");
    app.stop().await;
}
on_both_engines!(an_analyst_approves_or_declines_a_payment_in_review);

/// A payment left in review past its provider's review time limit is decided by the provider's
/// fail mode, and its case says so: open approves (and it is charged), closed declines. Nobody
/// looked at it, so it is no label.
async fn a_review_past_its_time_limit_is_decided_by_the_fail_mode(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let analyst = app.analyst.clone();
    review_above(&app, 30_000).await;
    // Kept in review until an analyst decides (24 h by default).
    let patient_provider = app.provider(json!({})).await;
    let (_, unchanged) = app
        .request(
            Method::PATCH,
            &format!("/v1/providers/{}", patient_provider.id),
            Some(&analyst),
            Some(&json!({})),
            None,
        )
        .await;
    assert_eq!(unchanged["review_time_limit_hours"], 24, "{unchanged}");
    let open = app.provider(json!({"score_fail_mode": "open", "review_time_limit_hours": 0})).await;
    let closed = app.provider(json!({"score_fail_mode": "closed"})).await;
    let (status, error) = app
        .request(
            Method::PATCH,
            &format!("/v1/providers/{}", closed.id),
            Some(&analyst),
            Some(&json!({"review_time_limit_hours": 721})),
            None,
        )
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_review_time_limit")));
    let (status, updated) = app
        .request(
            Method::PATCH,
            &format!("/v1/providers/{}", closed.id),
            Some(&analyst),
            Some(&json!({"review_time_limit_hours": 0})),
            None,
        )
        .await;
    assert_eq!((status, updated["review_time_limit_hours"].as_u64()), (StatusCode::OK, Some(0)), "{updated}");

    let waiting =
        pay(&app, &patient_provider, &payment_body(&patient_provider, &app.patient(&patient_provider).await, 40_000))
            .await;
    let approved = pay(&app, &open, &payment_body(&open, &app.patient(&open).await, 40_000)).await;
    let declined = pay(&app, &closed, &payment_body(&closed, &app.patient(&closed).await, 40_000)).await;
    let status_of = |payment: Value, key: String| {
        let app = &app;
        async move {
            let path = format!("/v1/payments/{}", payment["id"].as_str().unwrap());
            app.request(Method::GET, &path, Some(&key), None, None).await.1
        }
    };
    let mut last = (Value::Null, Value::Null);
    for _ in 0..100 {
        last = (
            status_of(approved.clone(), open.key.clone()).await,
            status_of(declined.clone(), closed.key.clone()).await,
        );
        if last.0["status"] == "awaiting_payment" && last.1["status"] == "declined" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last.0["status"], "awaiting_payment", "open: approved by the fail mode, then charged: {}", last.0);
    assert!(last.0["charge"]["pix_br_code"].is_string(), "{}", last.0);
    assert_eq!(last.1["status"], "declined", "closed: declined by the fail mode: {}", last.1);
    assert_eq!(status_of(waiting.clone(), patient_provider.key.clone()).await["status"], "in_review");
    // The case's closing event names the fail mode.
    let path = format!("/v1/payments/{}/events", declined["id"].as_str().unwrap());
    let (_, events) = app.request(Method::GET, &path, Some(&closed.key), None, None).await;
    let closing = events["data"].as_array().unwrap().iter().find(|e| e["type"] == "payment.review_closed").unwrap();
    assert!(closing["data"]["review"]["note"].as_str().unwrap().contains("fail mode (closed)"), "{closing}");
    // Nobody looked at them: no label.
    let (_, labels) = app.request(Method::GET, "/v1/labels", Some(&analyst), None, None).await;
    assert!(
        labels["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|label| label["payment_id"] != approved["id"] && label["payment_id"] != declined["id"]),
        "{labels}"
    );
    let (_, queue) = app.request(Method::GET, "/v1/reviews", Some(&analyst), None, None).await;
    let open_cases: Vec<&Value> = queue["data"].as_array().unwrap().iter().map(|case| &case["payment"]["id"]).collect();
    assert!(open_cases.contains(&&waiting["id"]) && !open_cases.contains(&&declined["id"]), "{queue}");
    app.stop().await;
}
on_both_engines!(a_review_past_its_time_limit_is_decided_by_the_fail_mode);

/// Models are data: the bundled model is the first champion in the registry; an analyst registers
/// another artefact, promotes it while payments keep coming (none fails, each decision names the
/// model that made it, and the ones after the move name the new champion), rolls it back, and the
/// history shows every move with who and why.
async fn a_model_is_registered_promoted_under_load_and_rolled_back(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let analyst = app.analyst.clone();
    let (status, models) = app.request(Method::GET, "/v1/models", Some(&analyst), None, None).await;
    assert_eq!(status, StatusCode::OK, "{models}");
    let first = models["data"].as_array().unwrap();
    assert_eq!(first.len(), 1, "{models}");
    assert_eq!(first[0]["aliases"], json!(["champion"]));
    assert_eq!(first[0]["lineage"]["source"], "bundled");
    let (bundled_id, bundled_version) =
        (first[0]["id"].as_str().unwrap().to_owned(), first[0]["version"].as_str().unwrap().to_owned());
    assert_eq!(models["in_force"], json!(bundled_version));

    let provider = app.provider(json!({})).await;
    let (status, _) = app.request(Method::GET, "/v1/models", Some(&provider.key), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "providers do not see models");
    let (status, error) =
        app.request(Method::POST, "/v1/models", Some(&analyst), Some(&json!({"artefact": {"format": 1}})), None).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_model")), "{error}");
    let tree: Value = serde_json::from_str(include_str!("../../ml/models/tree.json")).unwrap();
    let report: Value = serde_json::from_str(include_str!("../../ml/models/tree.report.json")).unwrap();
    let body = json!({"artefact": tree, "report": report});
    let (status, registered) = app.request(Method::POST, "/v1/models", Some(&analyst), Some(&body), None).await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let (status, again) = app.request(Method::POST, "/v1/models", Some(&analyst), Some(&body), None).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &registered["id"]), "the same artefact is one version");
    let (tree_id, tree_version) =
        (registered["id"].as_str().unwrap().to_owned(), registered["version"].as_str().unwrap().to_owned());
    assert_ne!(tree_version, bundled_version);
    assert!(registered["report"].is_object());

    // Payments keep coming while the champion moves.
    let patients: Vec<_> = {
        let mut patients = Vec::new();
        for _ in 0..4 {
            patients.push(app.patient(&provider).await);
        }
        patients
    };
    let load = async {
        let mut decided = Vec::new();
        for round in 0..15 {
            let patient = &patients[round % patients.len()];
            let created = pay(&app, &provider, &payment_body(&provider, patient, 9_000 + round as i64)).await;
            decided.push(created["decision"]["model_version"].as_str().unwrap().to_owned());
        }
        decided
    };
    let promote = json!({"version_id": tree_id, "reason": "better PR-AUC on the last month"});
    let promotion = async {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        app.request(Method::POST, "/v1/models/aliases/champion", Some(&analyst), Some(&promote), None).await
    };
    let (decided, (status, moved)) = tokio::join!(load, promotion);
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(
        (moved["from_version"].as_str(), moved["to_version"].as_str()),
        (Some(bundled_id.as_str()), Some(tree_id.as_str()))
    );
    assert!(decided.iter().all(|version| *version == bundled_version || *version == tree_version), "{decided:?}");
    let after = pay(&app, &provider, &payment_body(&provider, &patients[0], 9_500)).await;
    assert_eq!(after["decision"]["model_version"], json!(tree_version), "the next decision is the new champion's");
    let (_, models) = app.request(Method::GET, "/v1/models", Some(&analyst), None, None).await;
    assert_eq!(models["in_force"], json!(tree_version));

    let (status, error) = app
        .request(
            Method::POST,
            "/v1/models/aliases/champion/rollback",
            Some(&analyst),
            Some(&json!({"reason": ""})),
            None,
        )
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_reason")));
    let (status, rolled) = app
        .request(
            Method::POST,
            "/v1/models/aliases/champion/rollback",
            Some(&analyst),
            Some(&json!({"reason": "more reviews than expected"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rolled}");
    assert_eq!(rolled["to_version"], json!(bundled_id));
    let back = pay(&app, &provider, &payment_body(&provider, &patients[1], 9_600)).await;
    assert_eq!(back["decision"]["model_version"], json!(bundled_version), "rolled back: {back}");

    let (_, history) = app.request(Method::GET, "/v1/models/aliases/history", Some(&analyst), None, None).await;
    let moves: Vec<(&str, &str, &str)> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["to_version"].as_str().unwrap(), m["moved_by"].as_str().unwrap(), m["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        moves,
        vec![
            (bundled_id.as_str(), "analyst", "more reviews than expected"),
            (tree_id.as_str(), "analyst", "better PR-AUC on the last month"),
            (bundled_id.as_str(), "system", "first start"),
        ],
        "{history}"
    );
    let (status, error) = app
        .request(
            Method::POST,
            "/v1/models/aliases/champion",
            Some(&analyst),
            Some(&json!({"version_id": "nope", "reason": "x"})),
            None,
        )
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("model_not_found")));
    app.stop().await;
}
on_both_engines!(a_model_is_registered_promoted_under_load_and_rolled_back);

/// Training from the store: the features recorded with each decision and the labels; the run goes
/// on in the background, its progress and result readable, and what it made is a registered
/// version with its lineage and report, ready to promote. A run with nothing to learn from fails
/// and says why.
async fn a_training_run_from_the_store_registers_a_candidate(engine: Engine) {
    // Drift measured every second for /metrics (five minutes by default).
    let app = TestApp::spawn_with(engine, |config| config.limits.drift_interval_ms = 1_000).await;
    let analyst = app.analyst.clone();
    let wait = |id: String| {
        let (app, analyst) = (&app, analyst.clone());
        async move {
            let mut run = Value::Null;
            for _ in 0..300 {
                run = app
                    .request(Method::GET, &format!("/v1/models/training-runs/{id}"), Some(&analyst), None, None)
                    .await
                    .1;
                if run["status"] != "running" {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            run
        }
    };
    let start = json!({"kind": "logistic"});
    let (status, empty) =
        app.request(Method::POST, "/v1/models/training-runs", Some(&analyst), Some(&start), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{empty}");
    let failed = wait(empty["id"].as_str().unwrap().to_owned()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"].as_str().unwrap().starts_with("no labelled decisions"), "{failed}");
    let (status, error) = app
        .request(Method::POST, "/v1/models/training-runs", Some(&analyst), Some(&json!({"kind": "forest"})), None)
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_kind")));

    let provider = app.provider(json!({})).await;
    for index in 0..48 {
        let patient = app.patient(&provider).await;
        let fraud = index % 4 == 0;
        let amount = if fraud { 180_000 + index * 1_000 } else { 20_000 + index * 100 };
        let created = pay(&app, &provider, &payment_body(&provider, &patient, amount)).await;
        let path = format!("/v1/payments/{}/label", created["id"].as_str().unwrap());
        let (status, _) = app
            .request(Method::POST, &path, Some(&analyst), Some(&json!({"is_fraud": fraud, "note": "seen"})), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (status, started) = app
        .request(
            Method::POST,
            "/v1/models/training-runs",
            Some(&analyst),
            Some(&json!({"kind": "logistic", "holdout": 0.25})),
            None,
        )
        .await;
    assert_eq!((status, started["status"].as_str()), (StatusCode::ACCEPTED, Some("running")), "{started}");
    // One at a time (this second one may come after the first finished: then it runs too).
    let (status, second) = app
        .request(Method::POST, "/v1/models/training-runs", Some(&analyst), Some(&json!({"kind": "logistic"})), None)
        .await;
    match status {
        StatusCode::CONFLICT => assert_eq!(second["error"]["code"], "training_run_running", "{second}"),
        StatusCode::ACCEPTED => {
            wait(second["id"].as_str().unwrap().to_owned()).await;
        }
        other => panic!("{other}: {second}"),
    }
    let done = wait(started["id"].as_str().unwrap().to_owned()).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!((done["rows_used"].as_i64(), done["positives"].as_i64()), (Some(48), Some(12)), "{done}");
    assert_eq!(done["stages_done"], done["stages"]);
    let model_id = done["model_id"].as_str().unwrap().to_owned();
    let (_, models) = app.request(Method::GET, "/v1/models", Some(&analyst), None, None).await;
    let candidate = models["data"].as_array().unwrap().iter().find(|m| m["id"] == json!(model_id)).unwrap().clone();
    assert_eq!(candidate["lineage"]["source"], "store", "{candidate}");
    assert_eq!(candidate["lineage"]["training_run"], done["id"]);
    assert_eq!(candidate["lineage"]["labelled_rows"], 48);
    assert_eq!(candidate["report"]["holdout"]["rows"], 12, "{candidate}");
    // Beside the champion on the same hold-out, with the expected loss in reais.
    let beside = &candidate["report"]["beside_champion"];
    assert_eq!(beside["champion"]["model_version"], models["in_force"], "{beside}");
    for side in [&beside["candidate"], &beside["champion"]] {
        let (through, declined, loss) = (
            side["fraud_let_through_centavos"].as_i64().unwrap(),
            side["good_declined_centavos"].as_i64().unwrap(),
            side["expected_loss_centavos"].as_i64().unwrap(),
        );
        assert_eq!(through + declined, loss, "{side}");
        assert!(side["pr_auc"].is_number(), "{side}");
        // Judged at each payment's own provider thresholds: flagged at review ⊇ flagged at decline.
        let (review, decline) = (&side["at_review_thresholds"], &side["at_decline_thresholds"]);
        assert!(review["flagged"].as_u64().unwrap() >= decline["flagged"].as_u64().unwrap(), "{side}");
        assert!(side["curves"]["roc"].as_array().is_some_and(|points| points.len() >= 2), "{side}");
    }
    // Its plots, drawn by the service, the champion beside it on the same hold-out.
    let plot = |id: &str, file: &str, token: &str| {
        let request = app.client.get(format!("{}/v1/models/{id}/plots/{file}", app.base)).bearer_auth(token.to_owned());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let kind = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
            (status, kind, response.text().await.unwrap())
        }
    };
    for file in ["roc.svg", "precision-recall.svg", "calibration.svg", "scores.svg"] {
        let (status, kind, svg) = plot(&model_id, file, &analyst).await;
        assert_eq!((status, kind.as_deref()), (StatusCode::OK, Some("image/svg+xml")), "{file}: {svg}");
        assert!(svg.starts_with("<svg") && svg.contains(candidate["version"].as_str().unwrap()), "{file}");
        assert!(
            svg.contains(&format!("campeão {}", models["in_force"].as_str().unwrap())),
            "{file}: the champion beside it"
        );
    }
    let (status, _, body) = plot(&model_id, "roc.png", &analyst).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("plot_not_found"), "{body}");
    let (status, _, body) = plot(&model_id, "roc.svg", &provider.key).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _, body) = plot("no-such-version", "roc.svg", &analyst).await;
    assert!(status == StatusCode::NOT_FOUND && body.contains("model_not_found"), "{body}");
    let bundled = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["report"]["holdout"]["curves"].is_null())
        .map(|m| m["id"].clone());
    if let Some(bundled) = bundled {
        let (status, _, body) = plot(bundled.as_str().unwrap(), "roc.svg", &analyst).await;
        assert!(status == StatusCode::NOT_FOUND && body.contains("no_curves"), "{body}");
    }
    assert!(candidate["aliases"].as_array().unwrap().is_empty(), "a candidate, not promoted");
    // Gradient-boosted trees from the same labels.
    let (status, run) = app
        .request(
            Method::POST,
            "/v1/models/training-runs",
            Some(&analyst),
            Some(&json!({"kind": "boosted", "holdout": 0.25})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let boosted = wait(run["id"].as_str().unwrap().to_owned()).await;
    assert_eq!((boosted["status"].as_str(), boosted["kind"].as_str()), (Some("done"), Some("boosted")), "{boosted}");
    let promote = json!({"version_id": model_id, "reason": "trained on our own labels"});
    let (status, _) =
        app.request(Method::POST, "/v1/models/aliases/champion", Some(&analyst), Some(&promote), None).await;
    assert_eq!(status, StatusCode::OK);
    let next = pay(&app, &provider, &payment_body(&provider, &app.patient(&provider).await, 21_000)).await;
    assert_eq!(next["decision"]["model_version"], candidate["version"], "{next}");
    // Its training reference makes drift measurable: the last 24 h of decisions against it, for
    // every provider or one, and on /metrics from the timer.
    // First the timer (no one has read the drift yet).
    let mut metrics = String::new();
    for _ in 0..60 {
        metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
        if metrics.contains("medpay_drift_psi{value=") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(metrics.contains("medpay_drift_psi{value="), "the timer sets the gauges");
    let (status, drift) = app.request(Method::GET, "/v1/models/drift", Some(&analyst), None, None).await;
    assert_eq!(status, StatusCode::OK, "{drift}");
    assert_eq!(drift["model_version"], candidate["version"]);
    assert!(drift["live_rows"].as_u64().unwrap() >= 49, "{drift}");
    assert!(drift["features"].as_array().is_some_and(|features| !features.is_empty()), "{drift}");
    let other = app.provider(json!({})).await;
    let path = format!("/v1/models/drift?provider_id={}", other.id);
    let (status, theirs) = app.request(Method::GET, &path, Some(&analyst), None, None).await;
    assert_eq!((status, theirs["live_rows"].as_u64()), (StatusCode::OK, Some(0)), "no payments of theirs: {theirs}");
    let (status, error) =
        app.request(Method::GET, "/v1/models/drift?provider_id=nope", Some(&analyst), None, None).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_provider_id")));
    app.stop().await;
}
on_both_engines!(a_training_run_from_the_store_registers_a_candidate);

/// List hashes are keyed with the server's list key (a leaked hash cannot be reversed by trying
/// every CPF); an entry made before the key, holding a plain SHA-256, still blocks, and is shown as
/// one to enter again.
async fn list_hashes_are_keyed_and_old_entries_still_match(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({})).await;
    let patient = app.patient(&provider).await;
    let entry = json!({"list": "block", "kind": "device", "value": "new-burner", "reason": "ring"});
    let (status, entry) = app.request(Method::POST, "/v1/lists", Some(&app.admin), Some(&entry), None).await;
    assert_eq!(status, StatusCode::CREATED, "{entry}");
    assert_eq!(entry["hash"], "hmac-sha256");
    assert_ne!(entry["value_hash"].as_str(), Some(medpay_ml::legacy_list_hash("new-burner").as_str()), "keyed");
    // An entry as the store held them before the key.
    sqlx::any::install_default_drivers();
    let mut database = <sqlx::AnyConnection as sqlx::Connection>::connect(app.database_url()).await.unwrap();
    sqlx::query("INSERT INTO list_entries (list, kind, value_hash, reason, created_at_ms) VALUES ('block', 'device', $1, 'old ring', 1)")
        .bind(medpay_ml::legacy_list_hash("old-burner"))
        .execute(&mut database)
        .await
        .unwrap();
    // Another node on the same database sees it when it starts.
    let node = TestApp::on_database(app.database_url(), |_| {}).await;
    let (_, lists) = node.request(Method::GET, "/v1/lists", Some(&node.admin), None, None).await;
    let old = lists["data"].as_array().unwrap().iter().find(|e| e["reason"] == "old ring").cloned().unwrap();
    assert_eq!(old["hash"], "sha256", "{lists}");
    for (device, listed) in [("old-burner", true), ("new-burner", true), ("own-phone", false)] {
        let mut body = payment_body(&provider, &patient, 12_000);
        body["device"]["id"] = json!(device);
        let (status, paid) = node
            .request(Method::POST, "/v1/payments", Some(&provider.key), Some(&body), Some(&crate::support::new_key()))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{paid}");
        assert_eq!(paid["decision"]["outcome"] == "decline", listed, "{device}: {paid}");
    }
    node.stop().await;
    app.stop().await;
}
on_both_engines!(list_hashes_are_keyed_and_old_entries_still_match);

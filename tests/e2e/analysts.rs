//! The risk analysts' flow in one walk (issue 11), on both engines: payments go to review and
//! patients dispute charges in the chat; an analyst with her own token claims and decides the
//! cases, and the approved ones are charged; patients pay and banks charge some back; a training
//! run from the store turns those labels into a candidate with its report beside the champion's;
//! the candidate scores in shadow; it is promoted while payments keep coming (none fails) and
//! rolled back; the alias history shows every move, with who and why.

use crate::money::{sandbox, wait_for};
use crate::on_both_engines;
use crate::people::person;
use crate::support::{Engine, Patient, Provider, TestApp, pay, payment_body, review_above};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

async fn get(app: &TestApp, token: &str, path: &str) -> Value {
    let (status, body) = app.request(Method::GET, path, Some(token), None, None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let (status, answer) = app.request(Method::POST, path, Some(token), Some(&body), None).await;
    assert!(status.is_success(), "{path} {body}: {status} {answer}");
    answer
}

/// The patient tells the bot they do not recognise the charge of `payment`.
async fn dispute(app: &TestApp, patient: &Patient, payment: &Value) {
    let (status, opened) = app.request(Method::POST, "/v1/chat/conversations", Some(&patient.token), None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let short = &payment["id"].as_str().unwrap()[..8];
    let path = format!("/v1/chat/conversations/{}/messages", opened["id"].as_str().unwrap());
    let text = format!("não reconheço a cobrança {short}");
    let said = post(app, &patient.token, &path, json!({"text": text})).await;
    assert_eq!(said["intent"], "not_recognized", "{said}");
}

/// Pays the payment's charge at the Celcoin sandbox and waits for it to be paid.
async fn paid(app: &TestApp, provider: &Provider, payment: &Value) -> String {
    let id = payment["id"].as_str().unwrap();
    let charged = wait_for(app, provider, id, |p| p["charge"]["id"].is_string()).await;
    let charge = charged["charge"]["id"].as_str().unwrap().to_owned();
    let (status, _) = sandbox(app, &format!("/sandbox/charges/{charge}/pay"), json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    wait_for(app, provider, id, |p| p["status"] == "paid").await;
    charge
}

async fn training_run(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, started) = app.request(Method::POST, "/v1/models/training-runs", Some(token), Some(&body), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let path = format!("/v1/models/training-runs/{}", started["id"].as_str().unwrap());
    for _ in 0..600 {
        let run = get(app, token, &path).await;
        if run["status"] != "running" {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the training run never finished");
}

async fn an_analyst_turns_the_queue_and_the_chargebacks_into_a_new_champion(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let (ana_id, ana) = person(&app, "Ana Souza", "ana.souza@medpay.com.br", "analyst").await;
    let ana_actor = format!("person:{ana_id}");
    let provider = app.provider(json!({"fee_bps": 300})).await;
    review_above(&app, 100_000).await;
    let bundled = get(&app, &ana, "/v1/models").await;
    let (bundled_id, bundled_version) = (
        bundled["data"][0]["id"].as_str().unwrap().to_owned(),
        bundled["data"][0]["version"].as_str().unwrap().to_owned(),
    );

    // Twelve large payments go to review; twenty-four small ones, made between them, are
    // approved and charged.
    let (mut reviewed, mut approved) = (Vec::new(), Vec::new());
    for index in 0..12 {
        let patient = app.patient(&provider).await;
        let created = pay(&app, &provider, &payment_body(&provider, &patient, 150_000 + index * 5_000)).await;
        assert_eq!(created["status"], "in_review", "{created}");
        reviewed.push(created);
        for small in 0..2 {
            let patient = app.patient(&provider).await;
            let amount = 20_000 + (index * 2 + small) * 300;
            let created = pay(&app, &provider, &payment_body(&provider, &patient, amount)).await;
            assert_eq!(created["status"], "awaiting_payment", "{created}");
            approved.push((patient, created));
        }
    }
    // Two patients do not recognise their charge.
    for (patient, payment) in &approved[..2] {
        dispute(&app, patient, payment).await;
    }

    // The queue: the reviews and the disputes, oldest first, each with its reason.
    let queue = get(&app, &ana, &format!("/v1/reviews?provider_id={}", provider.id)).await;
    let cases = queue["data"].as_array().unwrap();
    let reasons: Vec<&str> = cases.iter().map(|case| case["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons.iter().filter(|reason| **reason == "decision_review").count(), 12, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|reason| **reason == "patient_disputed").count(), 2, "{reasons:?}");
    assert!(reasons.ends_with(&["patient_disputed", "patient_disputed"]), "oldest first: {reasons:?}");
    let case_of = |payment: &Value| -> String {
        cases.iter().find(|case| case["payment"]["id"] == payment["id"]).unwrap()["id"].as_str().unwrap().to_owned()
    };

    // Ana claims each case and decides it: the even ones are fraud, the odd ones the patient's own.
    for (index, payment) in reviewed.iter().enumerate() {
        let case = case_of(payment);
        let claimed = post(&app, &ana, &format!("/v1/reviews/{case}/claim"), json!({})).await;
        assert_eq!(claimed["claimed_by"], json!(ana_actor), "{claimed}");
        if index == 0 {
            // The queue says who holds it.
            let queue = get(&app, &ana, &format!("/v1/reviews?provider_id={}", provider.id)).await;
            let held = queue["data"].as_array().unwrap().iter().find(|c| c["id"] == json!(case)).unwrap().clone();
            assert_eq!(
                (held["claim"]["by"].as_str(), held["claim"]["name"].as_str()),
                (Some(ana_actor.as_str()), Some("Ana Souza")),
                "{held}"
            );
            let free = queue["data"].as_array().unwrap().iter().find(|c| c["id"] != json!(case)).unwrap().clone();
            assert!(free["claim"].is_null(), "{free}");
        }
        let (outcome, note) =
            if index % 2 == 0 { ("decline", "cartão de terceiro") } else { ("approve", "paciente confirmou") };
        let decided = post(&app, &ana, &format!("/v1/reviews/{case}"), json!({"outcome": outcome, "note": note})).await;
        assert_eq!(decided["id"], payment["id"], "{decided}");
    }
    for (_, payment) in &approved[..2] {
        let case = case_of(payment);
        post(&app, &ana, &format!("/v1/reviews/{case}/claim"), json!({})).await;
        let closed =
            post(&app, &ana, &format!("/v1/reviews/{case}"), json!({"outcome": "upheld", "note": "cobrança indevida"}))
                .await;
        assert_eq!(closed["status"], "cancelled", "{closed}");
    }
    let left = get(&app, &ana, &format!("/v1/reviews?provider_id={}", provider.id)).await;
    assert!(left["data"].as_array().unwrap().is_empty(), "every case decided: {left}");

    // The approved reviews are charged as any approved payment; the patients pay them and the
    // small ones; the banks take the last two small ones back.
    for (index, payment) in reviewed.iter().enumerate() {
        let id = payment["id"].as_str().unwrap();
        if index % 2 == 0 {
            assert_eq!(wait_for(&app, &provider, id, |_| true).await["status"], "declined");
        } else {
            paid(&app, &provider, payment).await;
        }
    }
    let mut charged_back = Vec::new();
    for (index, (_, payment)) in approved.iter().enumerate().skip(2) {
        let charge = paid(&app, &provider, payment).await;
        if index >= 22 {
            let (status, body) = sandbox(&app, &format!("/sandbox/charges/{charge}/chargeback"), json!({})).await;
            assert!(status.is_success(), "{status} {body}");
            let id = payment["id"].as_str().unwrap();
            wait_for(&app, &provider, id, |p| p["status"] == "charged_back").await;
            charged_back.push(payment["id"].clone());
        }
    }
    // The rest were the patients' own: Ana labels them by hand.
    for (_, payment) in &approved[2..22] {
        let path = format!("/v1/payments/{}/label", payment["id"].as_str().unwrap());
        let (status, body) =
            app.request(Method::POST, &path, Some(&ana), Some(&json!({"is_fraud": false, "note": "pago"})), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }

    // Every label with its source and author.
    let labels = get(&app, &ana, "/v1/labels").await;
    let labels = labels["data"].as_array().unwrap();
    assert_eq!(labels.len(), 12 + 2 + 2 + 20, "{labels:?}");
    for label in labels {
        let from_bank = charged_back.contains(&label["payment_id"]);
        let (source, author) = if from_bank { ("chargeback", "celcoin") } else { ("analyst", ana_actor.as_str()) };
        assert_eq!((label["source"].as_str(), label["labelled_by"].as_str()), (Some(source), Some(author)), "{label}");
    }
    assert_eq!(labels.iter().filter(|label| label["is_fraud"] == true).count(), 6 + 2 + 2);

    // A training run from the store: those 36 labels joined with the features of each decision.
    let run = training_run(&app, &ana, json!({"kind": "boosted", "holdout": 0.25})).await;
    assert_eq!(run["status"], "done", "{run}");
    assert_eq!((run["rows_used"].as_i64(), run["positives"].as_i64()), (Some(36), Some(10)), "{run}");
    let candidate_id = run["model_id"].as_str().unwrap().to_owned();
    let models = get(&app, &ana, "/v1/models").await;
    let candidate = models["data"].as_array().unwrap().iter().find(|m| m["id"] == json!(candidate_id)).unwrap().clone();
    let candidate_version = candidate["version"].as_str().unwrap().to_owned();
    assert_eq!(
        (candidate["lineage"]["source"].as_str(), candidate["lineage"]["labelled_rows"].as_i64()),
        (Some("store"), Some(36))
    );
    // Its report beside the champion's, on the same hold-out.
    let beside = &candidate["report"]["beside_champion"];
    assert_eq!(beside["champion"]["model_version"], json!(bundled_version), "{beside}");
    for side in [&beside["candidate"], &beside["champion"]] {
        assert!(side["roc_auc"].is_number() && side["pr_auc"].is_number(), "{side}");
        let loss =
            side["fraud_let_through_centavos"].as_i64().unwrap() + side["good_declined_centavos"].as_i64().unwrap();
        assert_eq!(side["expected_loss_centavos"].as_i64(), Some(loss), "{side}");
    }

    // The candidate as challenger: it scores every new payment in shadow and decides none.
    let moved = post(
        &app,
        &ana,
        "/v1/models/aliases/challenger",
        json!({"version_id": candidate_id, "reason": "trained on this month's reviews"}),
    )
    .await;
    assert_eq!(moved["to_version"], json!(candidate_id), "{moved}");
    let patient = app.patient(&provider).await;
    let shadowed = pay(&app, &provider, &payment_body(&provider, &patient, 30_000)).await;
    assert_eq!(shadowed["decision"]["model_version"], json!(bundled_version), "the champion decides: {shadowed}");
    let path = format!("/v1/payments/{}", shadowed["id"].as_str().unwrap());
    let seen = get(&app, &ana, &path).await;
    assert_eq!(seen["decision"]["shadow"]["model_version"], json!(candidate_version), "{seen}");
    assert!(seen["decision"]["shadow"]["score"].as_u64().is_some_and(|score| score <= 1_000), "{seen}");
    let theirs = get(&app, &provider.key, &path).await;
    assert!(theirs["decision"]["shadow"].is_null(), "the provider never sees the challenger: {theirs}");
    let comparison = get(&app, &ana, "/v1/models/shadow").await;
    assert_eq!(comparison["challenger"], json!(candidate_version), "{comparison}");
    assert!(comparison["decisions"].as_u64().unwrap() >= 1, "{comparison}");

    // Promoted while three clients keep paying: every answer a 201, every decision names one of
    // the two models, and the ones after the move the new champion.
    let mut patients = Vec::new();
    for _ in 0..6 {
        patients.push(app.patient(&provider).await);
    }
    let started = tokio::sync::Notify::new();
    let client = |offset: usize| {
        let (app, provider, patients, started) = (&app, &provider, &patients, &started);
        async move {
            let mut versions = Vec::new();
            for round in 0..10 {
                if offset == 0 && round == 3 {
                    // The move starts once payments are flowing.
                    started.notify_one();
                }
                let patient = &patients[(offset + round) % patients.len()];
                let body = payment_body(provider, patient, 10_000 + (offset * 100 + round) as i64);
                let (status, created) = app
                    .request(
                        Method::POST,
                        "/v1/payments",
                        Some(&provider.key),
                        Some(&body),
                        Some(&crate::support::new_key()),
                    )
                    .await;
                assert_eq!(status, StatusCode::CREATED, "{created}");
                versions.push(created["decision"]["model_version"].as_str().unwrap().to_owned());
            }
            versions
        }
    };
    let promotion = async {
        started.notified().await;
        let reason = json!({"version_id": candidate_id, "reason": "catches more with fewer reviews"});
        post(&app, &ana, "/v1/models/aliases/champion", reason).await
    };
    let (first, second, third, promoted) = tokio::join!(client(0), client(2), client(4), promotion);
    assert_eq!(promoted["to_version"], json!(candidate_id), "{promoted}");
    for version in first.iter().chain(&second).chain(&third) {
        assert!(*version == bundled_version || *version == candidate_version, "{version}");
    }
    assert_eq!(first[..3], [bundled_version.clone(), bundled_version.clone(), bundled_version.clone()]);
    let after = pay(&app, &provider, &payment_body(&provider, &patients[0], 12_345)).await;
    assert_eq!(after["decision"]["model_version"], json!(candidate_version), "{after}");

    // Rolled back: the previous champion decides the next payment.
    let rolled = post(&app, &ana, "/v1/models/aliases/champion/rollback", json!({"reason": "too many reviews"})).await;
    assert_eq!(rolled["to_version"], json!(bundled_id), "{rolled}");
    let back = pay(&app, &provider, &payment_body(&provider, &patients[1], 12_346)).await;
    assert_eq!(back["decision"]["model_version"], json!(bundled_version), "{back}");

    // The history: every move, newest first, with who and why.
    let history = get(&app, &ana, "/v1/models/aliases/history").await;
    let moves: Vec<(&str, &str, &str, &str)> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["alias"].as_str().unwrap(),
                m["to_version"].as_str().unwrap(),
                m["moved_by"].as_str().unwrap(),
                m["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        vec![
            ("champion", bundled_id.as_str(), ana_actor.as_str(), "too many reviews"),
            ("champion", candidate_id.as_str(), ana_actor.as_str(), "catches more with fewer reviews"),
            ("challenger", candidate_id.as_str(), ana_actor.as_str(), "trained on this month's reviews"),
            ("champion", bundled_id.as_str(), "system", "first start"),
        ],
        "{history}"
    );
    // Each move by a person is in the audit log, with the version it moved from (filled in by
    // the move's own transaction); the first start's is nobody's.
    let audit = get(&app, &app.admin, "/v1/audit?limit=1000").await;
    let audited: Vec<(&str, &str, Value, Value)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["action"] == "model.alias.move")
        .map(|entry| {
            (
                entry["actor"].as_str().unwrap(),
                entry["target"].as_str().unwrap(),
                entry["before"]["version_id"].clone(),
                entry["after"]["version_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        audited,
        vec![
            (ana_actor.as_str(), "model_alias:champion", json!(candidate_id), json!(bundled_id)),
            (ana_actor.as_str(), "model_alias:champion", json!(bundled_id), json!(candidate_id)),
            (ana_actor.as_str(), "model_alias:challenger", Value::Null, json!(candidate_id)),
        ],
        "{audit}"
    );
    // And the money of it all adds up.
    let check = get(&app, &app.admin, "/v1/ledger/check").await;
    assert_eq!(check["ok"], true, "{check}");
    app.stop().await;
}
on_both_engines!(an_analyst_turns_the_queue_and_the_chargebacks_into_a_new_champion);

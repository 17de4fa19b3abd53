//! People with their own identities: the admin makes accounts, each person's token is theirs
//! (rotated, revoked, never shown again), roles decide the routes, a review case is claimed by
//! one analyst at a time, and what people write is in the audit log, with who did it.

use crate::on_both_engines;
use crate::support::{Engine, TestApp, pay, payment_body, review_above};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub(crate) async fn person(app: &TestApp, name: &str, email: &str, role: &str) -> (String, String) {
    let body = json!({"name": name, "email": email, "role": role});
    let (status, created) = app.request(Method::POST, "/v1/people", Some(&app.admin), Some(&body), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["token"].as_str().unwrap().starts_with("mpp_"), "{created}");
    (created["person_id"].as_str().unwrap().to_owned(), created["token"].as_str().unwrap().to_owned())
}

async fn people_have_their_own_tokens_roles_claims_and_an_audit_log(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let (ana, ana_token) = person(&app, "Ana Souza", "ana@medpay.com.br", "analyst").await;
    let (bia, bia_token) = person(&app, "Bia Lima", "bia@medpay.com.br", "analyst").await;
    let (_sam, sam_token) = person(&app, "Sam Reis", "sam@medpay.com.br", "support").await;
    // Bad input changes nothing.
    for (body, code) in [
        (json!({"name": "X", "email": "not-an-email", "role": "analyst"}), "invalid_email"),
        (json!({"name": "X", "email": "x@medpay.com.br", "role": "root"}), "invalid_role"),
        (json!({"name": "", "email": "x@medpay.com.br", "role": "analyst"}), "invalid_name"),
        (json!({"name": "X", "email": "x@medpay.com.br", "role": "analyst", "expires_in_days": 0}), "invalid_expiry"),
    ] {
        let (status, error) = app.request(Method::POST, "/v1/people", Some(&app.admin), Some(&body), None).await;
        assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{body}");
    }
    let again = json!({"name": "Ana", "email": "ANA@medpay.com.br", "role": "support"});
    let (status, error) = app.request(Method::POST, "/v1/people", Some(&app.admin), Some(&again), None).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("person_exists")));
    let (_, people) = app.request(Method::GET, "/v1/people", Some(&app.admin), None, None).await;
    assert_eq!(people["data"].as_array().unwrap().len(), 3, "{people}");
    assert!(!people.to_string().contains("mpp_") && !people.to_string().contains("hash"), "no token in a listing");

    // Roles: analysts reach the risk routes, support does not; nobody but the admin makes people.
    assert_eq!(app.request(Method::GET, "/v1/models", Some(&ana_token), None, None).await.0, StatusCode::OK);
    assert_eq!(app.request(Method::GET, "/v1/models", Some(&sam_token), None, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        app.request(Method::POST, "/v1/people", Some(&ana_token), Some(&again), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.request(Method::GET, "/v1/audit", Some(&ana_token), None, None).await.0, StatusCode::FORBIDDEN);

    // One analyst at a time on a case.
    review_above(&app, 30_000).await;
    let provider = app.provider(json!({})).await;
    let patient = app.patient(&provider).await;
    let held = pay(&app, &provider, &payment_body(&provider, &patient, 45_000)).await;
    assert_eq!(held["status"], "in_review", "{held}");
    let (_, queue) = app.request(Method::GET, "/v1/reviews", Some(&ana_token), None, None).await;
    let case = queue["data"].as_array().unwrap().iter().find(|case| case["payment"]["id"] == held["id"]).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Support agents read the payment (they answer patients about it) but do not decide it.
    let path = format!("/v1/payments/{}", held["id"].as_str().unwrap());
    assert_eq!(app.request(Method::GET, &path, Some(&sam_token), None, None).await.0, StatusCode::OK);
    let claim = format!("/v1/reviews/{case}/claim");
    let (status, claimed) = app.request(Method::POST, &claim, Some(&ana_token), None, None).await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    assert_eq!(claimed["claimed_by"], format!("person:{ana}"));
    let (status, taken) = app.request(Method::POST, &claim, Some(&bia_token), None, None).await;
    assert_eq!((status, taken["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("case_claimed")), "{taken}");
    let decide = format!("/v1/reviews/{case}");
    let approve = json!({"outcome": "approve", "note": "documento conferido"});
    let (status, refused) = app.request(Method::POST, &decide, Some(&bia_token), Some(&approve), None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("case_claimed")));
    let (status, decided) = app.request(Method::POST, &decide, Some(&ana_token), Some(&approve), None).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    let (status, _) = app.request(Method::POST, "/v1/reviews/no-such-case/claim", Some(&ana_token), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The decision is a label with its source and its author.
    let (_, labels) = app.request(Method::GET, "/v1/labels", Some(&app.admin), None, None).await;
    let label = labels["data"].as_array().unwrap().iter().find(|label| label["payment_id"] == held["id"]).cloned();
    let label = label.unwrap_or_else(|| panic!("no label for the decided payment: {labels}"));
    assert_eq!((label["source"].as_str(), label["is_fraud"].as_bool()), (Some("analyst"), Some(false)), "{label}");
    assert_eq!(label["labelled_by"], format!("person:{ana}"), "{label}");
    // A label set by hand names its author too.
    let other = pay(&app, &provider, &payment_body(&provider, &app.patient(&provider).await, 12_000)).await;
    let path = format!("/v1/payments/{}/label", other["id"].as_str().unwrap());
    let mark = json!({"is_fraud": true, "note": "cartão clonado"});
    assert_eq!(app.request(Method::POST, &path, Some(&bia_token), Some(&mark), None).await.0, StatusCode::NO_CONTENT);
    let (_, labels) = app.request(Method::GET, "/v1/labels", Some(&app.admin), None, None).await;
    let by_hand =
        labels["data"].as_array().unwrap().iter().find(|label| label["payment_id"] == other["id"]).unwrap().clone();
    assert_eq!(by_hand["labelled_by"], format!("person:{bia}"), "{by_hand}");
    // Lists, a provider's thresholds and the canary: each change is in the audit log as Ana's.
    let entry = json!({"list": "block", "kind": "device", "value": "burner-phone-1", "reason": "ring"});
    let (status, listed) = app.request(Method::POST, "/v1/lists", Some(&ana_token), Some(&entry), None).await;
    assert_eq!(status, StatusCode::CREATED, "{listed}");
    let unlist = format!("/v1/lists/block/device/{}", listed["value_hash"].as_str().unwrap());
    assert_eq!(app.request(Method::DELETE, &unlist, Some(&ana_token), None, None).await.0, StatusCode::NO_CONTENT);
    // A refused write leaves no audit entry (each entry commits with its write or not at all).
    assert_eq!(app.request(Method::DELETE, &unlist, Some(&ana_token), None, None).await.0, StatusCode::NOT_FOUND);
    let no_rule = "/v1/rules/no-such-rule";
    assert_eq!(app.request(Method::DELETE, no_rule, Some(&ana_token), None, None).await.0, StatusCode::NOT_FOUND);
    let (_, rules) = app.request(Method::GET, "/v1/rules", Some(&ana_token), None, None).await;
    let existing = rules["data"][0].clone();
    let again = json!({"name": existing["name"], "source": existing["source"]});
    let (status, refused) = app.request(Method::POST, "/v1/rules", Some(&ana_token), Some(&again), None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("rule_exists")), "{refused}");
    let thresholds = json!({"review_score_min": 150});
    let path = format!("/v1/providers/{}", provider.id);
    assert_eq!(app.request(Method::PATCH, &path, Some(&ana_token), Some(&thresholds), None).await.0, StatusCode::OK);
    let canary = json!({"share_bps": 0, "reason": "no challenger yet"});
    let (status, set) = app.request(Method::PUT, "/v1/models/canary", Some(&ana_token), Some(&canary), None).await;
    assert_eq!(status, StatusCode::OK, "{set}");

    // Rotation: the new token works, the old ones do not; nobody rotates another's tokens.
    let rotate = format!("/v1/people/{ana}/tokens");
    let (status, _) =
        app.request(Method::POST, &rotate, Some(&bia_token), Some(&json!({"revoke_others": true})), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not Bia's to rotate");
    let (status, rotated) =
        app.request(Method::POST, &rotate, Some(&ana_token), Some(&json!({"revoke_others": true})), None).await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let new_token = rotated["token"].as_str().unwrap().to_owned();
    assert_eq!(app.request(Method::GET, "/v1/models", Some(&ana_token), None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.request(Method::GET, "/v1/models", Some(&new_token), None, None).await.0, StatusCode::OK);
    // Revoked by the admin: it authenticates nothing from then on.
    let revoke = format!("/v1/people/{ana}/tokens/{}", rotated["token_id"].as_str().unwrap());
    assert_eq!(app.request(Method::DELETE, &revoke, Some(&app.admin), None, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.request(Method::GET, "/v1/models", Some(&new_token), None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.request(Method::DELETE, &revoke, Some(&app.admin), None, None).await.0, StatusCode::NOT_FOUND);

    // The audit log: who did what, newest first.
    let (status, audit) = app.request(Method::GET, "/v1/audit", Some(&app.admin), None, None).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let entries = audit["data"].as_array().unwrap();
    let find = |action: &str| -> Value {
        entries
            .iter()
            .find(|entry| entry["action"] == action)
            .cloned()
            .unwrap_or_else(|| panic!("no {action}: {audit}"))
    };
    let decided = find("review.decide");
    assert_eq!(decided["actor"], format!("person:{ana}"));
    assert_eq!(decided["target"], format!("review_case:{case}"));
    assert_eq!(decided["after"]["outcome"], "approve");
    assert_eq!(find("review.claim")["actor"], format!("person:{ana}"));
    // Bia's claim of Ana's case was refused: its entry went with it.
    assert_eq!(entries.iter().filter(|entry| entry["action"] == "review.claim").count(), 1, "{audit}");
    assert_eq!(find("person.token.revoke")["actor"], "admin");
    assert_eq!(find("person.create")["actor"], "admin");
    assert_eq!(find("rule.create")["actor"], "analyst", "the shared analyst token is still an actor of its own");
    let ana_as = format!("person:{ana}");
    let added = find("list.add");
    assert_eq!(added["actor"], ana_as);
    assert!(!added.to_string().contains("burner-phone-1"), "the value is not in the audit log: {added}");
    assert_eq!(find("list.remove")["target"], added["target"]);
    let count = |action: &str| entries.iter().filter(|entry| entry["action"] == action).count();
    assert_eq!((count("list.remove"), count("rule.delete"), count("rule.create")), (1, 0, 1), "{audit}");
    let moved = find("provider.risk.update");
    assert_eq!(
        (moved["actor"].as_str(), moved["target"].as_str()),
        (Some(ana_as.as_str()), Some(format!("provider:{}", provider.id).as_str()))
    );
    assert_eq!(
        (moved["before"]["review_score_min"].as_i64(), moved["after"]["review_score_min"].as_i64()),
        (Some(200), Some(150))
    );
    assert_eq!(find("payment.label")["actor"], format!("person:{bia}"));
    assert_eq!(find("model.canary.set")["actor"], ana_as);
    let (_, mine) =
        app.request(Method::GET, &format!("/v1/audit?actor=person:{ana}"), Some(&app.admin), None, None).await;
    assert!(mine["data"].as_array().unwrap().iter().all(|entry| entry["actor"] == format!("person:{ana}")), "{mine}");
    app.stop().await;
}
on_both_engines!(people_have_their_own_tokens_roles_claims_and_an_audit_log);

/// Guessing tokens is limited per client address before any lookup: past the limit of failures in
/// a minute, the address gets 429 `too_many_auth_failures` even with a valid token; other callers
/// are not affected by it (each address has its own count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_limited_per_address_before_any_lookup() {
    let app = TestApp::spawn_with(crate::support::Engine::Sqlite, |config| {
        config.limits.auth_failures_per_address_per_minute = 5
    })
    .await;
    let provider = app.provider(json!({})).await;
    // A valid key works, and its successes count for nothing.
    for _ in 0..8 {
        assert_eq!(app.request(Method::GET, "/v1/payments", Some(&provider.key), None, None).await.0, StatusCode::OK);
    }
    for guess in 0..5 {
        let (status, error) =
            app.request(Method::GET, "/v1/payments", Some(&format!("mpk_guess{guess}")), None, None).await;
        assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    }
    // The sixth failure in the minute: refused before anything is looked up, the right key too.
    let response = app
        .client
        .get(format!("{}/v1/payments", app.base))
        .bearer_auth(format!("mpk_guess{}", 6))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().get("retry-after").is_some(), "says when to come back");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "too_many_auth_failures", "{error}");
    let (status, _) = app.request(Method::GET, "/v1/payments", Some(&provider.key), None, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "this address is refused for the minute, whatever it sends");
    // Unauthenticated routes are not behind it.
    let health = app.client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("medpay_auth_failures_total 5"), "the failures are counted");
    assert!(metrics.contains("medpay_auth_refused_total"), "and the refusals");
    app.stop().await;
}

/// A provider holds several API keys: it adds one (shown once), rotates to it, and revokes the old
/// one, which stops working at once; it never revokes its last key, holds at most five that work,
/// and nobody else sees or touches them (the admin may). Each change is in the audit log.
async fn providers_rotate_their_api_keys(engine: crate::support::Engine) {
    let app = TestApp::spawn(engine).await;
    let (clinic, other) = (app.provider(json!({})).await, app.provider(json!({})).await);
    let works = |key: String| {
        let app = &app;
        async move { app.request(Method::GET, "/v1/payments", Some(&key), None, None).await.0 }
    };
    let (_, keys) = app.request(Method::GET, "/v1/providers/me/keys", Some(&clinic.key), None, None).await;
    let first = keys["data"].as_array().unwrap();
    assert_eq!(first.len(), 1, "the key made with the provider is its first: {keys}");
    let first_id = first[0]["id"].as_str().unwrap().to_owned();
    for label in [json!({"label": ""}), json!({"label": "x".repeat(81)}), json!({"name": "produção"})] {
        let (status, _) =
            app.request(Method::POST, "/v1/providers/me/keys", Some(&clinic.key), Some(&label), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{label}");
    }
    let (status, second) = app
        .request(Method::POST, "/v1/providers/me/keys", Some(&clinic.key), Some(&json!({"label": "produção"})), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second_key = second["api_key"].as_str().unwrap().to_owned();
    assert!(second_key.starts_with("mpk_"));
    assert_eq!(works(second_key.clone()).await, StatusCode::OK, "works at once");
    assert_eq!(works(clinic.key.clone()).await, StatusCode::OK, "beside the first");
    let (_, keys) = app.request(Method::GET, "/v1/providers/me/keys", Some(&second_key), None, None).await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 2);
    assert!(!keys.to_string().contains("mpk_"), "never the key itself in a listing: {keys}");
    // Nobody else's.
    let theirs = format!("/v1/providers/{}/keys", clinic.id);
    assert_eq!(app.request(Method::GET, &theirs, Some(&other.key), None, None).await.0, StatusCode::NOT_FOUND);
    let revoke_first = format!("/v1/providers/{}/keys/{first_id}", clinic.id);
    assert_eq!(app.request(Method::DELETE, &revoke_first, Some(&other.key), None, None).await.0, StatusCode::NOT_FOUND);
    // Rotated: the old key stops working at once.
    assert_eq!(
        app.request(Method::DELETE, &revoke_first, Some(&second_key), None, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(works(clinic.key.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(works(second_key.clone()).await, StatusCode::OK);
    assert_eq!(
        app.request(Method::DELETE, &revoke_first, Some(&second_key), None, None).await.0,
        StatusCode::NOT_FOUND
    );
    // The last key that works stays.
    let revoke_second = format!("/v1/providers/me/keys/{}", second["id"].as_str().unwrap());
    let (status, error) = app.request(Method::DELETE, &revoke_second, Some(&second_key), None, None).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("last_key")));
    // At most five that work; the admin may add one too.
    let (status, by_admin) =
        app.request(Method::POST, &theirs, Some(&app.admin), Some(&json!({"label": "suporte"})), None).await;
    assert_eq!((status, by_admin["created_by"].as_str()), (StatusCode::CREATED, Some("admin")), "{by_admin}");
    for n in 0..3 {
        let body = json!({"label": format!("chave {n}")});
        let (status, _) =
            app.request(Method::POST, "/v1/providers/me/keys", Some(&second_key), Some(&body), None).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, error) = app
        .request(Method::POST, "/v1/providers/me/keys", Some(&second_key), Some(&json!({"label": "sexta"})), None)
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("too_many_keys")));
    let (_, audit) = app.request(Method::GET, "/v1/audit", Some(&app.admin), None, None).await;
    let actions: Vec<(&str, &str)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (entry["action"].as_str().unwrap(), entry["actor"].as_str().unwrap()))
        .collect();
    let provider_actor = format!("provider:{}", clinic.id);
    assert!(actions.contains(&("provider.key.revoke", provider_actor.as_str())), "{actions:?}");
    assert!(actions.contains(&("provider.key.create", "admin")), "{actions:?}");
    app.stop().await;
}
crate::on_both_engines!(providers_rotate_their_api_keys);

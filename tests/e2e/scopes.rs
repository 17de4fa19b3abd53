//! A CPF registered at one provider tells another nothing, and a credential a provider was handed
//! (the token shown at registration, a session from its sign-in link) opens only that provider's
//! part of the patient: its payments, its view, its conversations, its notifications. The
//! patient's own sign-in (a link from support or the admin) opens all of it.

use crate::money::{sandbox, wait_for};
use crate::on_both_engines;
use crate::support::{Engine, Patient, Provider, TestApp, app_session, new_key, pay, payment_body, unique_cpf};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn register(app: &TestApp, provider: &Provider, body: &Value) -> (StatusCode, Value) {
    app.request(Method::POST, "/v1/patients", Some(&provider.key), Some(body), None).await
}

/// The ids of the payments `token` lists, through the API and through the app.
async fn listed(app: &TestApp, token: &str) -> (Vec<String>, Vec<String>) {
    // The app's rows hold the payment beside its words.
    let ids = |body: &Value| -> Vec<String> {
        let rows = body["data"].as_array().unwrap_or_else(|| panic!("{body}"));
        let id = |row: &Value| row["id"].as_str().or_else(|| row["payment"]["id"].as_str()).unwrap().to_owned();
        let mut ids: Vec<String> = rows.iter().map(id).collect();
        ids.sort_unstable();
        ids
    };
    let (status, api) = app.request(Method::GET, "/v1/payments?limit=100", Some(token), None, None).await;
    assert_eq!(status, StatusCode::OK, "{api}");
    let (status, mine) = app.request(Method::GET, "/v1/me/payments", Some(token), None, None).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    (ids(&api), ids(&mine))
}

async fn bot(app: &TestApp, token: &str, text: &str) -> (String, String) {
    let (status, chat) = app.request(Method::POST, "/v1/chat/conversations", Some(token), None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let id = chat["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/chat/conversations/{id}/messages");
    let (status, reply) = app.request(Method::POST, &path, Some(token), Some(&json!({"text": text})), None).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    (id, reply["reply"].as_str().unwrap_or_default().to_owned())
}

async fn a_cpf_registered_elsewhere_tells_a_provider_nothing(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let a = app.provider(json!({"escrow": false})).await;
    let b = app.provider(json!({"escrow": false})).await;
    let cpf = unique_cpf();
    let at_a = json!({"name": "Maria Aparecida Souza", "cpf": cpf, "email": "maria.a@example.com", "phone": "+55 11 98765-4321"});
    let (status, maria) = register(&app, &a, &at_a).await;
    assert_eq!(status, StatusCode::CREATED, "{maria}");
    let id = maria["id"].as_str().unwrap().to_owned();
    let at_a_token = Patient { id: id.clone(), token: maria["token"].as_str().unwrap().to_owned() };
    let paid_at_a = pay(&app, &a, &payment_body(&a, &at_a_token, 23_456)).await;
    let a_payment = paid_at_a["id"].as_str().unwrap().to_owned();
    let charge = wait_for(&app, &a, &a_payment, |p| p["charge"]["id"].is_string()).await;
    let (status, _) =
        sandbox(&app, &format!("/sandbox/charges/{}/pay", charge["charge"]["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    wait_for(&app, &a, &a_payment, |p| p["status"] == "paid").await;

    // B registers the same CPF with what it knows: a 201 like any other, with B's own view, from
    // now, and a token of B's; the id is the patient's (random, so it tells no time).
    let asked_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let at_b =
        json!({"name": "Maria A. Souza", "cpf": cpf, "email": "maria.b@example.com", "phone": "+55 21 91234-5678"});
    let (status, seen_by_b) = register(&app, &b, &at_b).await;
    assert_eq!(status, StatusCode::CREATED, "{seen_by_b}");
    assert_eq!(seen_by_b["id"].as_str(), Some(id.as_str()));
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4, "a patient's id tells no time");
    assert_eq!(
        (seen_by_b["name"].as_str(), seen_by_b["email"].as_str(), seen_by_b["phone"].as_str()),
        (Some("Maria A. Souza"), Some("maria.b@example.com"), Some("+55 21 91234-5678")),
        "{seen_by_b}"
    );
    assert!(seen_by_b["created_at"].as_str().unwrap() >= asked_at.as_str(), "{seen_by_b} vs {asked_at}");
    let text = seen_by_b.to_string();
    for of_a in ["Aparecida", "maria.a@example.com", "98765-4321"] {
        assert!(!text.contains(of_a), "A's {of_a} shown to B: {text}");
    }
    let maria_b = Patient { id: id.clone(), token: seen_by_b["token"].as_str().unwrap().to_owned() };
    // Only a provider's own registration is a conflict.
    let (status, again) = register(&app, &b, &at_b).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("patient_exists")), "{again}");
    let (status, again) = register(&app, &a, &at_b).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("patient_exists")), "{again}");
    // Each provider reads its own view; the admin the patient's.
    let path = format!("/v1/patients/{id}");
    let (_, by_a) = app.request(Method::GET, &path, Some(&a.key), None, None).await;
    let (_, by_b) = app.request(Method::GET, &path, Some(&b.key), None, None).await;
    let (_, by_admin) = app.request(Method::GET, &path, Some(&app.admin), None, None).await;
    assert_eq!(by_a["email"], "maria.a@example.com", "{by_a}");
    assert_eq!(by_b["email"], "maria.b@example.com", "{by_b}");
    assert_eq!(by_admin["email"], "maria.a@example.com", "{by_admin}");

    // B's token pays B and sees B's part only.
    let b_payment = pay(&app, &b, &payment_body(&b, &maria_b, 17_890)).await["id"].as_str().unwrap().to_owned();
    let mut to_a = payment_body(&a, &maria_b, 9_900);
    to_a["device"]["id"] = json!("phone-of-maria");
    let (status, refused) =
        app.request(Method::POST, "/v1/payments", Some(&maria_b.token), Some(&to_a), Some(&new_key())).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("provider_not_found")));
    assert_eq!(listed(&app, &maria_b.token).await, (vec![b_payment.clone()], vec![b_payment.clone()]));
    let filtered = format!("/v1/payments?provider_id={}", a.id);
    let (_, none) = app.request(Method::GET, &filtered, Some(&maria_b.token), None, None).await;
    assert_eq!(none["data"], json!([]), "{none}");
    for path in [format!("/v1/payments/{a_payment}"), format!("/v1/payments/{a_payment}/events")] {
        assert_eq!(app.request(Method::GET, &path, Some(&maria_b.token), None, None).await.0, StatusCode::NOT_FOUND);
    }
    let (_, notes) = app.request(Method::GET, "/v1/me/notifications", Some(&maria_b.token), None, None).await;
    assert!(notes["data"].as_array().unwrap().iter().all(|n| n["payment_id"] == b_payment.as_str()), "{notes}");
    let (_, own) = app.request(Method::GET, &path, Some(&maria_b.token), None, None).await;
    assert_eq!(own["email"], "maria.b@example.com", "B's token reads B's view: {own}");
    // The export is B's part; erasure and choosing another provider are not a provider's token's.
    let export = format!("/v1/patients/{id}/export");
    let (status, exported) = app.request(Method::GET, &export, Some(&maria_b.token), None, None).await;
    assert_eq!(status, StatusCode::OK, "{exported}");
    let ids: Vec<&str> = exported["payments"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!((ids, exported["patient"]["name"].as_str()), (vec![b_payment.as_str()], Some("Maria A. Souza")));
    assert!(!exported.to_string().contains(&a_payment), "A's payment in B's part: {exported}");
    let erase = format!("/v1/patients/{id}/erasure");
    let (status, refused) = app.request(Method::POST, &erase, Some(&maria_b.token), None, None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("credential_scoped")));
    let (status, link) = app
        .request(Method::POST, "/v1/providers/me/checkout-links", Some(&a.key), Some(&json!({"label": "site"})), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let open = format!("/v1/checkout/{}", link["token"].as_str().unwrap());
    let (status, refused) = app.request(Method::POST, &open, Some(&maria_b.token), None, None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("credential_scoped")));

    // A's newest payment is the patient's newest: the bot tells B's credential of B's.
    let latest_at_a = pay(&app, &a, &payment_body(&a, &at_a_token, 24_680)).await["id"].as_str().unwrap().to_owned();
    let question = "já caiu meu pix?";
    let (b_chat, reply) = bot(&app, &maria_b.token, question).await;
    assert!(reply.contains("R$ 178,90") && !reply.contains("246,80"), "{reply}");
    // A session from B's sign-in link is B's too; one from the admin's is the patient's own.
    let b_session = app_session(&app, &b.key, &id).await;
    assert_eq!(listed(&app, &b_session).await, (vec![b_payment.clone()], vec![b_payment.clone()]));
    let own_session = app_session(&app, &app.admin, &id).await;
    let mut both = vec![a_payment.clone(), b_payment.clone(), latest_at_a];
    both.sort_unstable();
    assert_eq!(listed(&app, &own_session).await, (both.clone(), both));
    let (own_chat, reply) = bot(&app, &own_session, question).await;
    assert!(reply.contains("R$ 246,80"), "{reply}");
    // A conversation of the patient's own is not B's credential's to read; B's is the patient's.
    let read = |chat: &str| format!("/v1/chat/conversations/{chat}");
    assert_eq!(
        app.request(Method::GET, &read(&own_chat), Some(&maria_b.token), None, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.request(Method::GET, &read(&b_chat), Some(&own_session), None, None).await.0, StatusCode::OK);
    let say = format!("{}/messages", read(&own_chat));
    let (status, _) = app.request(Method::POST, &say, Some(&b_session), Some(&json!({"text": "oi"})), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, exported) = app.request(Method::GET, &export, Some(&own_session), None, None).await;
    assert_eq!((status, exported["payments"].as_array().map(Vec::len)), (StatusCode::OK, Some(3)), "{exported}");

    // The patient's own erasure: every token stops, the providers' copies go.
    let (status, erased) = app.request(Method::POST, &erase, Some(&own_session), None, None).await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    for token in [&at_a_token.token, &maria_b.token, &b_session, &own_session] {
        let (status, _) = app.request(Method::GET, "/v1/payments", Some(token), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (_, by_b) = app.request(Method::GET, &path, Some(&b.key), None, None).await;
    assert!(by_b["erased_at"].is_string() && !by_b.to_string().contains("maria.b@example.com"), "{by_b}");
    // A provider that registers her afterwards is not told of the erasure either: its own view,
    // its own sign-in link, a session that works.
    let c = app.provider(json!({"escrow": false})).await;
    let at_c = json!({"name": "Maria Souza", "cpf": cpf, "email": "maria.c@example.com", "phone": "+55 31 97777-1234"});
    let (status, seen_by_c) = register(&app, &c, &at_c).await;
    assert_eq!(status, StatusCode::CREATED, "{seen_by_c}");
    assert!(seen_by_c["erased_at"].is_null() && seen_by_c["name"] == "Maria Souza", "{seen_by_c}");
    let c_session = app_session(&app, &c.key, &id).await;
    assert_eq!(listed(&app, &c_session).await, (vec![], vec![]));
    let (_, own) = app.request(Method::GET, &path, Some(&c_session), None, None).await;
    assert_eq!((own["email"].as_str(), own["erased_at"].as_str()), (Some("maria.c@example.com"), None), "{own}");
    app.stop().await;
}
on_both_engines!(a_cpf_registered_elsewhere_tells_a_provider_nothing);

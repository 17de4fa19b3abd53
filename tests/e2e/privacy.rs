//! LGPD: a patient downloads everything held about them (and nobody else's), and asks for
//! erasure; afterwards no route shows a personal field of theirs, while the ledger balances and
//! the provider's reports still count their payments.

use crate::money::{balance, sandbox, wait_for};
use crate::on_both_engines;
use crate::support::{Engine, TestApp, app_session, new_key, pay, payment_body, unique_cpf};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn get(app: &TestApp, token: &str, path: &str) -> Value {
    let (status, body) = app.request(Method::GET, path, Some(token), None, None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

async fn a_patient_exports_their_data_and_has_it_erased(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({"fee_bps": 500, "escrow": false})).await;
    let cpf = unique_cpf();
    let registered = json!({"name": "Maria Aparecida Souza", "cpf": cpf, "email": "maria.souza@example.com", "phone": "+55 11 98765-4321"});
    let (status, maria) = app.request(Method::POST, "/v1/patients", Some(&provider.key), Some(&registered), None).await;
    assert_eq!(status, StatusCode::CREATED, "{maria}");
    let maria = crate::support::Patient {
        id: maria["id"].as_str().unwrap().to_owned(),
        token: maria["token"].as_str().unwrap().to_owned(),
    };
    let joao = app.patient(&provider).await;
    // Maria pays twice (one paid, then partly refunded); João once.
    let paid = pay(&app, &provider, &payment_body(&provider, &maria, 20_000)).await;
    let paid_id = paid["id"].as_str().unwrap().to_owned();
    let (status, _) =
        sandbox(&app, &format!("/sandbox/charges/{}/pay", paid["charge"]["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    wait_for(&app, &provider, &paid_id, |p| p["status"] == "paid").await;
    let refund = json!({"amount_centavos": 5_000, "reason": "sessão encurtada"});
    let path = format!("/v1/payments/{paid_id}/refunds");
    let (status, body) = app.request(Method::POST, &path, Some(&provider.key), Some(&refund), Some(&new_key())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let unpaid = pay(&app, &provider, &payment_body(&provider, &maria, 8_000)).await;
    let joaos = pay(&app, &provider, &payment_body(&provider, &joao, 9_000)).await;
    // Maria chats, and types her e-mail.
    let (status, chat) = app.request(Method::POST, "/v1/chat/conversations", Some(&maria.token), None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let chat = chat["id"].as_str().unwrap().to_owned();
    let said = json!({"text": "Olá, qual o status do meu pagamento? meu email é maria.souza@example.com"});
    let path = format!("/v1/chat/conversations/{chat}/messages");
    let (status, reply) = app.request(Method::POST, &path, Some(&maria.token), Some(&said), None).await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    // The export: hers, in full, and nobody else's.
    let export = get(&app, &maria.token, &format!("/v1/patients/{}/export", maria.id)).await;
    assert_eq!(export["patient"]["name"], "Maria Aparecida Souza");
    assert_eq!(export["patient"]["email"], "maria.souza@example.com");
    let mut ids: Vec<&str> = export["payments"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut hers = vec![paid_id.as_str(), unpaid["id"].as_str().unwrap()];
    hers.sort_unstable();
    assert_eq!(ids, hers, "{export}");
    assert_eq!(export["refunds"].as_array().unwrap().len(), 1, "{export}");
    let transcript = &export["conversations"][0]["messages"];
    assert!(transcript.as_array().unwrap().iter().any(|m| m["text"] == said["text"]), "{export}");
    let notifications = export["notifications"].as_array().unwrap();
    assert!(notifications.len() >= 3, "created, paid, refunded: {export}");
    assert!(notifications.iter().all(|n| hers.contains(&n["payment_id"].as_str().unwrap())));
    let text = export.to_string();
    for other in [joao.id.as_str(), joaos["id"].as_str().unwrap()] {
        assert!(!text.contains(other), "João's {other} in Maria's export");
    }
    // Nobody else exports her.
    let path = format!("/v1/patients/{}/export", maria.id);
    assert_eq!(app.request(Method::GET, &path, Some(&provider.key), None, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.request(Method::GET, &path, Some(&joao.token), None, None).await.0, StatusCode::NOT_FOUND);

    let (_, listed) = app.request(Method::GET, "/v1/payments?limit=100", Some(&provider.key), None, None).await;
    let counted = listed["data"].as_array().unwrap().len();
    let balance_before = balance(&app, &provider).await;

    // Erasure, asked by Maria with her own sign-in (the token her provider was shown erases
    // nobody): her session and that token stop at once.
    let path = format!("/v1/patients/{}/erasure", maria.id);
    let (status, refused) = app.request(Method::POST, &path, Some(&maria.token), None, None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("credential_scoped")));
    let own = app_session(&app, &app.admin, &maria.id).await;
    let (status, erased) = app.request(Method::POST, &path, Some(&own), None, None).await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    assert!(erased["financial_records_kept_until"].as_str().unwrap() > erased["erased_at"].as_str().unwrap());
    for token in [&maria.token, &own] {
        let (status, _) = app.request(Method::GET, "/v1/payments", Some(token), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, again) = app.request(Method::POST, &path, Some(&app.admin), None, None).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_erased")));

    // No route shows a personal field of hers to anyone.
    let formatted = format!("{}.{}.{}-{}", &cpf[..3], &cpf[3..6], &cpf[6..9], &cpf[9..]);
    let personal = [
        "Maria Aparecida Souza",
        cpf.as_str(),
        formatted.as_str(),
        "maria.souza@example.com",
        "98765-4321",
        &format!("phone-of-{}", maria.id),
    ];
    let mut answers = vec![
        get(&app, &app.admin, &format!("/v1/patients/{}", maria.id)).await,
        get(&app, &provider.key, &format!("/v1/patients/{}", maria.id)).await,
        get(&app, &app.admin, &format!("/v1/patients/{}/export", maria.id)).await,
        get(&app, &app.admin, &format!("/v1/chat/conversations/{chat}")).await,
        get(&app, &provider.key, "/v1/payments?limit=100").await,
        get(&app, &app.admin, &format!("/v1/payments?patient_id={}", maria.id)).await,
    ];
    for id in &hers {
        answers.push(get(&app, &provider.key, &format!("/v1/payments/{id}")).await);
        answers.push(get(&app, &provider.key, &format!("/v1/payments/{id}/events")).await);
        answers.push(get(&app, &app.admin, &format!("/v1/payments/{id}/refunds")).await);
    }
    for answer in &answers {
        let text = answer.to_string();
        for field in personal {
            assert!(!text.contains(field), "{field} is still readable: {text}");
        }
    }
    let shown = &answers[0];
    assert_eq!((shown["name"].as_str(), shown["cpf"].as_str()), (Some(store_name()), Some("removido")), "{shown}");
    assert!(shown["erased_at"].is_string());
    assert_eq!(answers[3]["messages"], json!([]), "the chat's messages are gone");

    // The money is as it was: the ledger balances, the provider's reports count her payments.
    let (_, check) = app.request(Method::GET, "/v1/ledger/check", Some(&app.admin), None, None).await;
    assert_eq!((check["ok"].as_bool(), check["suspense_centavos"].as_i64()), (Some(true), Some(0)), "{check}");
    assert_eq!(answers[4]["data"].as_array().unwrap().len(), counted);
    assert_eq!(balance(&app, &provider).await, balance_before);
    // The request, its outcome and its date, in the audit log, without the data.
    let audit = get(&app, &app.admin, "/v1/audit").await;
    let entry = audit["data"].as_array().unwrap().iter().find(|e| e["action"] == "patient.erase").cloned();
    let entry = entry.unwrap_or_else(|| panic!("no erasure in the audit log: {audit}"));
    assert_eq!(
        (entry["actor"].as_str(), entry["target"].as_str()),
        (Some(format!("patient:{}", maria.id).as_str()), Some(format!("patient:{}", maria.id).as_str()))
    );
    assert!(entry["at"].is_string(), "{entry}");
    for field in personal {
        assert!(!entry.to_string().contains(field), "{field} in the audit log");
    }
    app.stop().await;
}
on_both_engines!(a_patient_exports_their_data_and_has_it_erased);

fn store_name() -> &'static str {
    medpay_store::ERASED_NAME
}

//! The TUSS catalogue (issue 14): the real table that the `voa-tiss` package (PyPI) ships is
//! imported with `medpay catalogue import`; then a payment for an unknown or an expired code is a
//! 422 naming it, with nothing written, and payments show the official term.

use crate::on_both_engines;
use crate::support::{Engine, TestApp, new_key, pay, payment_body};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

/// The TUSS table of the voa-tiss package, installed from PyPI (its licence allows only verbatim
/// redistribution: it is never committed here).
fn voa_tiss_table() -> std::path::PathBuf {
    let bin = crate::support::python_venv("voa-tiss==0.3.1");
    let found = std::process::Command::new(bin.join("python"))
        .args([
            "-c",
            "import pathlib, voa_tiss.tuss as t; print(pathlib.Path(t.__file__).parent / '_data' / 'tuss.json')",
        ])
        .output()
        .expect("the venv's python runs");
    assert!(found.status.success(), "{}", String::from_utf8_lossy(&found.stderr));
    std::path::PathBuf::from(String::from_utf8(found.stdout).unwrap().trim())
}

async fn a_loaded_catalogue_refuses_unknown_and_expired_codes(engine: Engine) {
    let table = voa_tiss_table();
    let app = TestApp::spawn(engine).await;
    let clinic = app.provider(json!({"name": "Clínica Horizonte"})).await;
    let patient = app.patient(&clinic).await;
    // Before any catalogue: any well-formed code is taken, as before, with no term.
    let before = pay(&app, &clinic, &payment_body(&clinic, &patient, 10_000)).await;
    assert!(before.get("procedure_term").is_none(), "{before}");

    let imported = std::process::Command::new(env!("CARGO_BIN_EXE_medpay"))
        .args(["catalogue", "import"])
        .arg(&table)
        .env("DATABASE_URL", app.database_url())
        .output()
        .expect("medpay runs");
    let said = String::from_utf8_lossy(&imported.stdout);
    assert!(imported.status.success(), "{said}{}", String::from_utf8_lossy(&imported.stderr));
    let count: usize = said.split_whitespace().next().and_then(|n| n.parse().ok()).expect("a count");
    assert!(count > 50_000, "tens of thousands of codes: {said}");

    // The running service reads it within seconds (with its rules).
    let path = format!("/v1/payments/{}", before["id"].as_str().unwrap());
    let mut shown = json!(null);
    for _ in 0..300 {
        let (_, payment) = app.request(Method::GET, &path, Some(&clinic.key), None, None).await;
        shown = payment["procedure_term"].clone();
        if shown.is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shown, json!("Consulta em consultório (no horário normal ou preestabelecido)"));

    let (_, listed) = app.request(Method::GET, "/v1/payments", Some(&clinic.key), None, None).await;
    let payments = listed["data"].as_array().unwrap().len();
    for (code, status, error, named) in [
        ("99999999", StatusCode::UNPROCESSABLE_ENTITY, "unknown_procedure", "99999999"),
        // "Aluguel / taxa de monitor de vídeo", valid until 30 June 2023.
        ("60027452", StatusCode::UNPROCESSABLE_ENTITY, "procedure_not_valid", "2023-06-30"),
    ] {
        let mut body = payment_body(&clinic, &patient, 10_000);
        body["procedure"]["tuss_code"] = json!(code);
        let (got, refused) =
            app.request(Method::POST, "/v1/payments", Some(&clinic.key), Some(&body), Some(&new_key())).await;
        assert_eq!((got, refused["error"]["code"].as_str()), (status, Some(error)), "{refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains(named), "{refused}");
    }
    let (_, listed) = app.request(Method::GET, "/v1/payments", Some(&clinic.key), None, None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), payments, "nothing was written");

    // A valid code: the payment carries its official term, for the provider, the analyst and the
    // patient's app.
    let mut body = payment_body(&clinic, &patient, 25_000);
    body["procedure"]["tuss_code"] = json!("40301630");
    let created = pay(&app, &clinic, &body).await;
    let term = created["procedure_term"].as_str().expect("the official term").to_owned();
    assert_eq!(term, "Creatinina - pesquisa e/ou dosagem");
    let path = format!("/v1/payments/{}", created["id"].as_str().unwrap());
    let (_, seen) = app.request(Method::GET, &path, Some(&app.analyst), None, None).await;
    assert_eq!(seen["procedure_term"].as_str(), Some(term.as_str()));
    let (_, mine) = app.request(Method::GET, "/v1/me/payments", Some(&patient.token), None, None).await;
    let listed = mine["data"].as_array().unwrap();
    assert!(listed.iter().any(|p| p["payment"]["procedure_term"].as_str() == Some(term.as_str())), "{mine}");
    app.stop().await;
}
on_both_engines!(a_loaded_catalogue_refuses_unknown_and_expired_codes);

/// A provider's price list is its usual amount for a code: a rule on the amount against it holds
/// a payment at six times the listed price, which without the list is the provider's usual amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_price_list_is_its_usual_amount() {
    let app = TestApp::spawn(Engine::Sqlite).await;
    let clinic = app.provider(json!({"name": "Clínica Horizonte"})).await;
    let rule = json!({"name": "above_price", "source": "review if amount_to_procedure_median > 5"});
    let (status, created) = app.request(Method::POST, "/v1/rules", Some(&app.analyst), Some(&rule), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let first = pay(&app, &clinic, &payment_body(&clinic, &app.patient(&clinic).await, 60_000)).await;
    assert!(!first["decision"]["rules_hit"].as_array().unwrap().contains(&json!("above_price")), "{first}");

    let list = json!({"prices": [{"tuss_code": "10101012", "price_centavos": 10_000}, {"tuss_code": "40301630", "price_centavos": 1_500}]});
    let (status, saved) =
        app.request(Method::PUT, "/v1/providers/me/prices", Some(&clinic.key), Some(&list), None).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    let (_, read) = app.request(Method::GET, "/v1/providers/me/prices", Some(&clinic.key), None, None).await;
    assert_eq!(read["prices"].as_array().unwrap().len(), 2, "{read}");
    let second = pay(&app, &clinic, &payment_body(&clinic, &app.patient(&clinic).await, 60_000)).await;
    assert!(second["decision"]["rules_hit"].as_array().unwrap().contains(&json!("above_price")), "{second}");
    assert_eq!(second["status"], "in_review", "{second}");

    // Bad lists change nothing; nobody else edits the list.
    for (bad, code) in [
        (
            json!({"prices": [{"tuss_code": "10101012", "price_centavos": 1}, {"tuss_code": "10101012", "price_centavos": 2}]}),
            "duplicate_code",
        ),
        (json!({"prices": [{"tuss_code": "1010", "price_centavos": 1}]}), "invalid_tuss_code"),
        (json!({"prices": [{"tuss_code": "10101012", "price_centavos": 0}]}), "invalid_price"),
    ] {
        let (status, refused) =
            app.request(Method::PUT, "/v1/providers/me/prices", Some(&clinic.key), Some(&bad), None).await;
        assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{refused}");
    }
    let (_, read) = app.request(Method::GET, "/v1/providers/me/prices", Some(&clinic.key), None, None).await;
    assert_eq!(read["prices"].as_array().unwrap().len(), 2, "unchanged: {read}");
    let other = app.provider(json!({})).await;
    let path = format!("/v1/providers/{}/prices", clinic.id);
    let (status, _) = app.request(Method::PUT, &path, Some(&other.key), Some(&list), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.request(Method::PUT, &path, Some(&app.analyst), Some(&list), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, audit) = app.request(Method::GET, "/v1/audit", Some(&app.admin), None, None).await;
    assert!(audit["data"].as_array().unwrap().iter().any(|e| e["action"] == "provider.prices.replace"), "{audit}");
    app.stop().await;
}

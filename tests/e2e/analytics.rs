//! The event log in MongoDB and the reports (issue 14), against nx-27017 (PyPI): a MongoDB
//! wire-protocol server on SQLite, the stand-in for a MongoDB server that no registry here has.
//! Events, decisions, webhooks, chat messages and audit entries reach it once each, also across
//! a MongoDB outage and a MedPay restart; every report gives the same numbers from MongoDB's
//! aggregation as from SQL; a provider sees only its own.

use crate::money::{sandbox, wait_for};
use crate::on_both_engines;
use crate::support::{Engine, Provider, TestApp, TestDatabase, new_key, pay, payment_body, review_above};
use medpay_store::mongo::LogStore;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

const NX_27017_VERSION: &str = "0.8.1";

/// A Python with nx-27017: `MEDPAY_NX_27017_PYTHON` when set, else a virtual environment made in
/// the tests' scratch folder on first use. Run as a module: the venv's own `nx-27017` script
/// names the folder the venv was made in, which may have been renamed since.
fn nx_27017() -> PathBuf {
    if let Ok(path) = std::env::var("MEDPAY_NX_27017_PYTHON") {
        return PathBuf::from(path);
    }
    crate::support::python_venv(&format!("nx-27017=={NX_27017_VERSION}")).join("python")
}

pub struct Mongo {
    process: std::process::Child,
}

impl Mongo {
    /// A server on `port` keeping its data in `file` (kept across a restart).
    pub fn start(python: &Path, port: u16, file: &Path) -> Mongo {
        let log = file.with_extension("log");
        let pid = file.with_extension("pid");
        let mut process = std::process::Command::new(python)
            .args(["-m", "nx_27017.nx_27017", "--host", "127.0.0.1", "-p", &port.to_string(), "--db"])
            .arg(file)
            .arg("--log-file")
            .arg(&log)
            .arg("--pid-file")
            .arg(&pid)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nx-27017 starts");
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Mongo { process };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = process.kill();
        let _ = process.wait();
        panic!("nx-27017 never listened on {port}");
    }
}

impl Drop for Mongo {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn adjust(url: String) -> impl FnOnce(&mut medpay_api::Config) {
    move |config| {
        config.mongodb_url = Some(url);
        config.limits.log_export_poll_ms = 100;
    }
}

async fn metric(app: &TestApp, name: &str) -> Option<f64> {
    let text = app.client.get(format!("{}/metrics", app.base)).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Every event the API shows for these payments, by id (`payment.seq`).
async fn event_ids(app: &TestApp, provider: &Provider, payments: &[String]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for payment in payments {
        let (status, events) =
            app.request(Method::GET, &format!("/v1/payments/{payment}/events"), Some(&provider.key), None, None).await;
        assert_eq!(status, StatusCode::OK, "{events}");
        for event in events["data"].as_array().unwrap() {
            ids.insert(format!("{payment}.{}", event["seq"]));
        }
    }
    ids
}

/// Waits until MongoDB holds exactly `expected` events and the backlog is empty.
async fn wait_exported(app: &TestApp, log: &LogStore, expected: &BTreeSet<String>) {
    let mut held = BTreeSet::new();
    for _ in 0..600 {
        let documents = log.find("events", &json!({}), 100_000).await.unwrap_or_default();
        held = documents.iter().filter_map(|document| document["_id"].as_str().map(str::to_owned)).collect();
        if &held == expected && metric(app, "medpay_log_export_backlog").await == Some(0.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing: Vec<_> = expected.difference(&held).collect();
    let extra: Vec<_> = held.difference(expected).collect();
    panic!("MongoDB never held the events: missing {missing:?}, extra {extra:?}");
}

struct Made {
    a: Provider,
    b: Provider,
    a_payments: Vec<String>,
    b_payments: Vec<String>,
}

/// Payments of two providers that cover the reports: approved (paid or not, some in
/// installments, one refunded, one released from escrow), sent to review and declined, some
/// labelled; and a chat message and audit entries.
async fn make_payments(app: &TestApp) -> Made {
    review_above(app, 50_000).await;
    let rule = json!({"name": "too_big", "source": "decline if amount_centavos > 90000"});
    let (status, body) = app.request(Method::POST, "/v1/rules", Some(&app.analyst), Some(&rule), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let a = app.provider(json!({"fee_bps": 500, "escrow": true})).await;
    let b = app.provider(json!({"fee_bps": 300})).await;
    let (mut a_payments, mut b_payments) = (Vec::new(), Vec::new());
    for (provider, amounts) in
        [(&a, vec![12_000, 23_000, 31_000, 60_000, 95_000, 18_000]), (&b, vec![15_000, 70_000, 99_000])]
    {
        let patient = app.patient(provider).await;
        for (index, amount) in amounts.into_iter().enumerate() {
            let mut body = payment_body(provider, &patient, amount);
            if index == 2 {
                body["procedure"] = json!({"tuss_code": "40101010", "description": "Eletrocardiograma"});
            }
            let created = pay(app, provider, &body).await;
            let id = created["id"].as_str().unwrap().to_owned();
            if created["decision"]["outcome"] == "approve" && index % 2 == 0 {
                let charge = created["charge"]["id"].as_str().expect("charged in the answer");
                let (status, _) = sandbox(app, &format!("/sandbox/charges/{charge}/pay"), json!({})).await;
                assert_eq!(status, StatusCode::NO_CONTENT);
                let settled = if provider.id == a.id { "held_in_escrow" } else { "paid" };
                wait_for(app, provider, &id, |payment| payment["status"] == settled).await;
            }
            if provider.id == a.id { a_payments.push(id) } else { b_payments.push(id) }
        }
    }
    let made = Made { a, b, a_payments, b_payments };
    let a = &made.a;
    // A's first payment: the procedure happened (escrow released); its third refunded in part.
    crate::money::procedure(app, a, &made.a_payments[0], "performed").await;
    wait_for(app, a, &made.a_payments[0], |payment| payment["status"] == "released").await;
    let refund = json!({"amount_centavos": 5_000, "reason": "exame não realizado"});
    let path = format!("/v1/payments/{}/refunds", made.a_payments[2]);
    let (status, body) = app.request(Method::POST, &path, Some(&a.key), Some(&refund), Some(&new_key())).await;
    assert!(status.is_success(), "{body}");
    for attempt in 0.. {
        let (_, refunds) = app.request(Method::GET, &path, Some(&a.key), None, None).await;
        if refunds["data"][0]["status"] == "completed" {
            break;
        }
        assert!(attempt < 300, "the refund never completed: {refunds}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Labels: one fraud that was approved, one fraud declined, one legitimate sent to review.
    for (id, is_fraud) in [(&made.a_payments[1], true), (&made.a_payments[4], true), (&made.a_payments[3], false)] {
        let (status, _) = app
            .request(
                Method::POST,
                &format!("/v1/payments/{id}/label"),
                Some(&app.analyst),
                Some(&json!({"is_fraud": is_fraud, "note": "checked"})),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    made
}

/// Every report, from SQL and from MongoDB, as the admin and as each provider: the same.
async fn reports_agree(app: &TestApp, made: &Made) {
    let staff = [("admin", app.admin.clone()), ("A", made.a.key.clone()), ("B", made.b.key.clone())];
    for (who, token) in &staff {
        for period in ["day", "week", "month"] {
            let splits: &[&str] =
                if *who == "admin" { &["none", "procedure", "provider"] } else { &["none", "procedure"] };
            for by in splits {
                let path = format!("/v1/analytics/payments?period={period}&by={by}");
                let (status, sql) =
                    app.request(Method::GET, &format!("{path}&source=sql"), Some(token), None, None).await;
                assert_eq!(status, StatusCode::OK, "{sql}");
                let (status, mongo) =
                    app.request(Method::GET, &format!("{path}&source=mongodb"), Some(token), None, None).await;
                assert_eq!(status, StatusCode::OK, "{mongo}");
                assert_eq!(sql["rows"], mongo["rows"], "{who} {path}: SQL and MongoDB differ");
                assert_eq!((sql["source"].as_str(), mongo["source"].as_str()), (Some("sql"), Some("mongodb")));
            }
        }
    }
    for period in ["day", "month"] {
        let path = format!("/v1/analytics/models?period={period}");
        let (_, sql) = app.request(Method::GET, &format!("{path}&source=sql"), Some(&app.analyst), None, None).await;
        let (_, mongo) =
            app.request(Method::GET, &format!("{path}&source=mongodb"), Some(&app.analyst), None, None).await;
        assert!(!sql["rows"].as_array().unwrap().is_empty(), "{sql}");
        assert_eq!(sql["rows"], mongo["rows"], "{path}: SQL and MongoDB differ");
    }
}

fn total(report: &Value, name: &str) -> i64 {
    report["rows"].as_array().unwrap().iter().map(|row| row["counts"][name].as_i64().unwrap_or(0)).sum()
}

async fn the_event_log_reaches_mongodb_once_and_the_reports_agree(engine: Engine) {
    let command = nx_27017();
    let folder = std::env::temp_dir().join(format!("medpay-mongo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join("log.db");
    let port = free_port();
    let mut mongo = Some(Mongo::start(&command, port, &file));
    let url = format!("mongodb://127.0.0.1:{port}/medpay");
    let log = LogStore::connect(&url).await.unwrap();
    let database = TestDatabase::create(engine).await;
    let app = TestApp::on_database(&database.url, adjust(url.clone())).await;

    let made = make_payments(&app).await;
    let mut expected = event_ids(&app, &made.a, &made.a_payments).await;
    expected.extend(event_ids(&app, &made.b, &made.b_payments).await);
    wait_exported(&app, &log, &expected).await;
    let payments = made.a_payments.len() + made.b_payments.len();
    assert_eq!(log.count("payments", &json!({})).await.unwrap(), payments as u64);
    assert_eq!(log.count("decisions", &json!({})).await.unwrap(), payments as u64, "one decision each");
    let decision = log.find("decisions", &json!({"payment_id": made.a_payments[0]}), 1).await.unwrap();
    assert!(decision[0]["features"].is_object() && decision[0]["model_version"].is_string(), "{decision:?}");
    assert!(log.count("gateway_webhooks", &json!({})).await.unwrap() >= 4, "the paid charges' webhooks");
    assert!(log.count("audit", &json!({})).await.unwrap() >= 3, "the labels and rules, audited");
    let fact = log.find("payments", &json!({"_id": made.a_payments[2]}), 1).await.unwrap();
    assert_eq!(fact[0]["refunded_centavos"], 5_000, "{fact:?}");
    assert_eq!(fact[0]["tuss_code"], "40101010", "{fact:?}");
    reports_agree(&app, &made).await;

    // MongoDB goes away: payments go on, the backlog grows; MedPay restarts meanwhile.
    drop(mongo.take());
    let patient = app.patient(&made.a).await;
    let mut later = Vec::new();
    for amount in [14_000, 16_000] {
        later.push(
            pay(&app, &made.a, &payment_body(&made.a, &patient, amount)).await["id"].as_str().unwrap().to_owned(),
        );
    }
    let mut backlog = None;
    for _ in 0..200 {
        // Set after each pass; a pass waits up to the driver's 2 s for a server that is gone.
        backlog = metric(&app, "medpay_log_export_backlog").await;
        if backlog.is_some_and(|backlog| backlog >= 2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(backlog.is_some_and(|backlog| backlog >= 2.0), "the backlog shows: {backlog:?}");
    app.stop().await;
    let app = TestApp::on_database(&database.url, adjust(url.clone())).await;
    later.push(pay(&app, &made.a, &payment_body(&made.a, &patient, 17_000)).await["id"].as_str().unwrap().to_owned());
    mongo = Some(Mongo::start(&command, port, &file));
    expected.extend(event_ids(&app, &made.a, &later).await);
    wait_exported(&app, &log, &expected).await;
    assert_eq!(log.count("payments", &json!({})).await.unwrap(), (payments + later.len()) as u64);
    let mut made = made;
    made.a_payments.extend(later);
    reports_agree(&app, &made).await;

    // What the numbers say, read off what was made (SQL and MongoDB agree, so either will do).
    let (_, platform) =
        app.request(Method::GET, "/v1/analytics/payments?period=month", Some(&app.admin), None, None).await;
    assert_eq!(platform["source"], "mongodb", "MongoDB answers by default when it is set");
    assert_eq!(total(&platform, "payments"), 12);
    // The rules send two to review and decline two; the model may send another to review.
    assert_eq!(total(&platform, "declined"), 2, "{platform}");
    assert!(total(&platform, "review") >= 2, "{platform}");
    assert_eq!(total(&platform, "approved") + total(&platform, "review") + total(&platform, "declined"), 12);
    assert_eq!(total(&platform, "fraud"), 2);
    assert_eq!(total(&platform, "labelled"), 3);
    assert_eq!(total(&platform, "refunded_centavos"), 5_000);
    assert_eq!(total(&platform, "escrow_released_centavos"), 11_400, "95 % of R$ 120,00");
    let (_, own) = app.request(Method::GET, "/v1/analytics/payments?period=month", Some(&made.b.key), None, None).await;
    assert_eq!(total(&own, "payments"), 3, "B sees its own three: {own}");
    assert_eq!(own["provider_id"], made.b.id.as_str());
    let (_, models) =
        app.request(Method::GET, "/v1/analytics/models?period=month", Some(&app.analyst), None, None).await;
    // The approved fraud was missed, the declined one caught, the legitimate one sent to review.
    assert_eq!(
        (total(&models, "true_positives"), total(&models, "false_negatives"), total(&models, "false_positives")),
        (1, 1, 1),
        "{models}"
    );

    // A patient chats (the messages reach MongoDB), then asks for erasure: the copies go too.
    let (status, chat) = app.request(Method::POST, "/v1/chat/conversations", Some(&patient.token), None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let conversation = chat["id"].as_str().unwrap().to_owned();
    let said = json!({"text": "qual o status do meu pagamento?"});
    let path = format!("/v1/chat/conversations/{conversation}/messages");
    let (status, reply) = app.request(Method::POST, &path, Some(&patient.token), Some(&said), None).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let mine = json!({"conversation_id": conversation});
    let mut held = 0;
    for _ in 0..300 {
        held = log.count("chat_messages", &mine).await.unwrap();
        if held >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held >= 2, "the question and the answer in MongoDB: {held}");
    let texts = log.find("chat_messages", &mine, 10).await.unwrap();
    assert!(texts.iter().any(|message| message["text"] == said["text"]), "{texts:?}");
    let path = format!("/v1/patients/{}/erasure", patient.id);
    let (status, erased) = app.request(Method::POST, &path, Some(&app.admin), None, None).await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    for _ in 0..300 {
        held = log.count("chat_messages", &mine).await.unwrap();
        if held == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held, 0, "the erased patient's messages are gone from MongoDB too");

    app.stop().await;
    database.drop_database().await;
    drop(mongo);
    let _ = std::fs::remove_dir_all(&folder);
}
on_both_engines!(the_event_log_reaches_mongodb_once_and_the_reports_agree);

/// Without MongoDB: the reports on SQL, each caller's own, as JSON and CSV.
async fn a_provider_sees_only_its_own_numbers(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let made = make_payments(&app).await;
    let (status, own) =
        app.request(Method::GET, "/v1/analytics/payments?period=week", Some(&made.a.key), None, None).await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(own["source"], "sql");
    assert_eq!(total(&own, "payments"), made.a_payments.len() as i64);
    let (status, error) = app
        .request(
            Method::GET,
            &format!("/v1/analytics/payments?provider_id={}", made.b.id),
            Some(&made.a.key),
            None,
            None,
        )
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{error}");
    let (status, _) =
        app.request(Method::GET, "/v1/analytics/payments?by=provider", Some(&made.a.key), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.request(Method::GET, "/v1/analytics/models", Some(&made.a.key), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, error) =
        app.request(Method::GET, "/v1/analytics/payments?source=mongodb", Some(&app.admin), None, None).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("mongodb_not_configured")));
    let (status, error) = app
        .request(Method::GET, "/v1/analytics/payments?from=2020-01-01&to=2026-01-01", Some(&app.admin), None, None)
        .await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("range_too_long")));
    for path in ["/v1/analytics/payments?from=2026-12-02&to=2026-11-01", "/v1/analytics/payments?from=1492-10-12"] {
        let (status, error) = app.request(Method::GET, path, Some(&app.admin), None, None).await;
        assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_range")), "{path}");
    }
    let (status, error) =
        app.request(Method::GET, "/v1/analytics/payments?period=year", Some(&app.admin), None, None).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));

    // The admin splits the platform by provider: A's and B's rows, and nothing else.
    let (_, split) =
        app.request(Method::GET, "/v1/analytics/payments?period=month&by=provider", Some(&app.admin), None, None).await;
    let keys: BTreeSet<&str> =
        split["rows"].as_array().unwrap().iter().map(|row| row["key"].as_str().unwrap()).collect();
    assert_eq!(keys, BTreeSet::from([made.a.id.as_str(), made.b.id.as_str()]));

    // CSV: a header and one line per row, the same numbers.
    let (status, headers, csv) = app
        .raw(Method::GET, "/v1/analytics/payments?period=month&by=procedure&format=csv", Some(&made.a.key), None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(headers["content-disposition"].to_str().unwrap().contains("medpay-pagamentos-month-"));
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("period_start,key,procedure_term,payments,amount_centavos,approved,"), "{}", lines[0]);
    let (_, json_report) = app
        .request(Method::GET, "/v1/analytics/payments?period=month&by=procedure", Some(&made.a.key), None, None)
        .await;
    assert_eq!(lines.len() - 1, json_report["rows"].as_array().unwrap().len());
    let payments_column: i64 =
        lines[1..].iter().map(|line| line.split(',').nth(3).unwrap().parse::<i64>().unwrap()).sum();
    assert_eq!(payments_column, made.a_payments.len() as i64);
    app.stop().await;
}
on_both_engines!(a_provider_sees_only_its_own_numbers);

//! Starting the real app on port 0 against a fresh database (a temporary SQLite file, or a new
//! PostgreSQL database per test), and a small HTTP client for it.

use medpay_api::{Config, Limits, Server};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub fn postgres_admin_url() -> String {
    std::env::var("MEDPAY_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// An HTTP client for the tests. reqwest is built without a TLS crypto provider of its own (the
/// service uses ring, as sqlx does); install it once.
pub fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new()
}

pub fn redis_url() -> String {
    std::env::var("MEDPAY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A database of its own for one test. PostgreSQL must be reachable: a test never skips.
pub struct TestDatabase {
    pub url: String,
    postgres_name: Option<String>,
}

impl TestDatabase {
    pub async fn create(engine: Engine) -> TestDatabase {
        let name = format!("medpay_test_{}", uuid::Uuid::new_v4().simple());
        match engine {
            Engine::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                TestDatabase { url: format!("sqlite://{}", path.display()), postgres_name: None }
            }
            Engine::Postgres => {
                let admin_url = postgres_admin_url();
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|error| panic!("PostgreSQL at {admin_url} is required for these tests: {error}"));
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
                let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base).to_owned();
                TestDatabase { url: format!("{base}/{name}"), postgres_name: Some(name) }
            }
        }
    }

    pub async fn drop_database(self) {
        let Some(name) = self.postgres_name else { return };
        // Best effort: a database left behind costs disk, not correctness.
        if let Ok(mut admin) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut admin)
                .await;
        }
    }
}

pub fn config(database_url: &str) -> Config {
    Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        database_url: database_url.to_owned(),
        redis_url: None,
        mongodb_url: None,
        admin_token: Some(format!("test-admin-{}", uuid::Uuid::new_v4().simple())),
        analyst_token: Some(format!("test-analyst-{}", uuid::Uuid::new_v4().simple())),
        receita_url: None,
        receita_client_id: "medpay".to_owned(),
        receita_client_secret: String::new(),
        model_path: None,
        list_key: None,
        // Night payments score higher: the tests' outcomes must not depend on when they run.
        // The tests' webhook receivers listen on loopback: the development setting allows it.
        runtime: medpay_actors::RuntimeConfig {
            scoring_hour: Some(14),
            webhooks: medpay_actors::outbox::WebhookConfig { allow_loopback: true, ..Default::default() },
            ..Default::default()
        },
        limits: Limits::default(),
        money: medpay_api::MoneySettings {
            runtime: medpay_actors::money::MoneyConfig { sweep_ms: 200, ..Default::default() },
            ..medpay_api::MoneySettings::default()
        },
        patients: medpay_api::PatientSettings {
            mail_dir: std::env::temp_dir().join(format!("medpay-mail-{}", uuid::Uuid::new_v4().simple())),
            notify_poll_ms: 100,
            notify_retry_base_ms: 200,
            notify_due_check_ms: 200,
            documents_dir: std::env::temp_dir().join(format!("medpay-documents-{}", uuid::Uuid::new_v4().simple())),
            ..Default::default()
        },
    }
}

/// The service's warnings and errors, printed with a failing test's output (nextest shows a
/// test's output only when it fails): a test that times out waiting says why the service did not
/// get there. `MEDPAY_TEST_LOG` (an `EnvFilter`) asks for more.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEDPAY_TEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Several apps in one test: the first installs it, the others find it there.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

pub struct TestApp {
    pub base: String,
    /// The app's Receita Federal sandbox.
    pub receita: String,
    /// The app's Celcoin and ClickSign sandboxes.
    pub celcoin: String,
    pub clicksign: String,
    pub admin: String,
    pub analyst: String,
    pub client: Client,
    server: Option<Server>,
    database: Option<TestDatabase>,
}

static CPF_SEQUENCE: AtomicU64 = AtomicU64::new(1);

/// A CPF no other test uses.
pub fn unique_cpf() -> String {
    // A random start per process, then consecutive: no two CPFs of one test collide (a random
    // part per call made a thousand-patient test collide now and then).
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| rand_u64() % 700_000_000);
    let seed = start + CPF_SEQUENCE.fetch_add(1, Ordering::SeqCst);
    let base = format!("{:09}", 100_000_000 + seed % 800_000_000);
    format!("{base}{}", medpay_models::Cpf::check_digits(&base).unwrap())
}

/// A numeric CNPJ no other test uses.
pub fn unique_cnpj() -> String {
    let base = format!("{:08}0001", 10_000_000 + rand_u64() % 89_999_999);
    format!("{base}{}", medpay_models::Cnpj::check_digits(&base).unwrap())
}

fn rand_u64() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}

pub struct Provider {
    pub id: String,
    pub key: String,
    pub cnpj: String,
}

pub struct Patient {
    pub id: String,
    pub token: String,
}

impl TestApp {
    pub async fn spawn(engine: Engine) -> TestApp {
        TestApp::spawn_with(engine, |_| {}).await
    }

    pub async fn spawn_with(engine: Engine, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let database = TestDatabase::create(engine).await;
        let mut app = TestApp::on_database(&database.url, adjust).await;
        app.database = Some(database);
        app
    }

    /// Another node on an existing database.
    pub async fn on_database(url: &str, adjust: impl FnOnce(&mut Config)) -> TestApp {
        init_logs();
        let mut config = config(url);
        adjust(&mut config);
        let analyst = config.analyst_token.clone().unwrap_or_default();
        let server = medpay_api::start(config).await.unwrap();
        TestApp {
            base: format!("http://{}", server.addr),
            receita: server.receita_url.clone(),
            celcoin: server.celcoin_url.clone(),
            clicksign: server.clicksign_url.clone(),
            admin: server.admin_token.clone(),
            analyst,
            client: client(),
            server: Some(server),
            database: None,
        }
    }

    /// The database this app's node uses (to start another node on it).
    pub fn database_url(&self) -> &str {
        self.database.as_ref().map_or("", |database| database.url.as_str())
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        if let Some(database) = self.database.take() {
            database.drop_database().await;
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let (status, _, text) = self.raw(method, path, token, body.map(|b| b.to_string()), key).await;
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    }

    /// Status, headers and the body exactly as sent.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
        key: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    pub async fn provider(&self, extra: Value) -> Provider {
        let mut body = json!({"name": "Clínica Sorriso", "cnpj": unique_cnpj(), "fee_bps": 500, "escrow": false, "score_fail_mode": "open"});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let (status, created) = self.request(Method::POST, "/v1/providers", Some(&self.admin), Some(&body), None).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        Provider {
            id: created["id"].as_str().unwrap().to_owned(),
            key: created["api_key"].as_str().unwrap().to_owned(),
            cnpj: created["cnpj"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn patient(&self, provider: &Provider) -> Patient {
        let body = json!({"name": "Maria Silva", "cpf": unique_cpf(), "email": "maria@example.com", "phone": "+55 11 99999-0000"});
        let (status, created) =
            self.request(Method::POST, "/v1/patients", Some(&provider.key), Some(&body), None).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        Patient { id: created["id"].as_str().unwrap().to_owned(), token: created["token"].as_str().unwrap().to_owned() }
    }
}

/// A session of the patient app, opened with a sign-in link made with `by`'s credential (a
/// provider's key: a session scoped to it; the admin's or support's: the patient's own).
pub async fn app_session(app: &TestApp, by: &str, patient: &str) -> String {
    let path = format!("/v1/patients/{patient}/sign-in-links");
    let (status, link) = app.request(Method::POST, &path, Some(by), None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let code = link["path"].as_str().unwrap().split("codigo=").nth(1).unwrap().to_owned();
    let (status, opened) =
        app.request(Method::POST, "/v1/patient-sessions", None, Some(&json!({"code": code})), None).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    opened["token"].as_str().unwrap().to_owned()
}

/// Creates a payment with the provider's key and a fresh Idempotency-Key; it must be a 201.
pub async fn pay(app: &TestApp, provider: &Provider, body: &Value) -> Value {
    let (status, created) =
        app.request(Method::POST, "/v1/payments", Some(&provider.key), Some(body), Some(&new_key())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

/// An analysts' rule that sends every payment above `centavos` to review.
pub async fn review_above(app: &TestApp, centavos: i64) {
    let rule = json!({"name": "big_consultation", "source": format!("review if amount_centavos > {centavos}")});
    let (status, created) = app.request(Method::POST, "/v1/rules", Some(&app.analyst), Some(&rule), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

/// The payment as its provider reads it, once it reached `status` (what follows a commit, such as
/// the charge after an approval, happens just after the answer); the last read when it did not.
pub async fn payment_once(app: &TestApp, key: &str, payment: &Value, status: &str) -> Value {
    let path = format!("/v1/payments/{}", payment["id"].as_str().unwrap());
    let mut read = Value::Null;
    for _ in 0..100 {
        read = app.request(Method::GET, &path, Some(key), None, None).await.1;
        if read["status"] == status {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    read
}

pub fn payment_body(provider: &Provider, patient: &Patient, amount_centavos: i64) -> Value {
    json!({
        "patient_id": patient.id,
        "provider_id": provider.id,
        "procedure": {"tuss_code": "10101012", "description": "Consulta em consultório"},
        "amount_centavos": amount_centavos,
        "method": "pix",
        "installments": 1,
        "monthly_interest_bps": 0,
        "device": {"id": format!("phone-of-{}", patient.id), "ip": "200.100.50.25"}
    })
}

pub fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Runs one async test body against SQLite and against PostgreSQL.
#[macro_export]
macro_rules! on_both_engines {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Engine::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Engine::Postgres).await;
            }
        }
    };
}

/// The `bin` folder of a Python virtual environment with `requirement` installed (from PyPI),
/// made once in the tests' scratch folder and shared by the tests after.
pub fn python_venv(requirement: &str) -> std::path::PathBuf {
    let name: String =
        requirement.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("venv-{name}"));
    if dir.join("bin/python").exists() {
        return dir.join("bin");
    }
    // Made beside, then renamed: another test process may be making it too. A venv's scripts
    // name the folder they were made in, so a venv that lost the race is used where it is.
    let scratch = dir.with_extension(uuid::Uuid::new_v4().simple().to_string());
    let made = std::process::Command::new("python3").args(["-m", "venv"]).arg(&scratch).status();
    assert!(made.expect("python3 is required").success(), "python3 -m venv failed");
    let installed = std::process::Command::new(scratch.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", requirement])
        .status()
        .unwrap();
    assert!(installed.success(), "pip install {requirement} failed");
    match std::fs::rename(&scratch, &dir) {
        Ok(()) => dir.join("bin"),
        Err(_) => scratch.join("bin"),
    }
}

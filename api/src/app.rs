//! The router, its layers, and the server's life: start, serve, shut down gracefully.

use crate::config::Config;
use crate::dto::PaymentView;
use crate::state::AppState;
use crate::{
    chat, checkout, events, models, money, notify, ops, parties, payments, people, portal, privacy, risk, training,
};
use anyhow::Context as _;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use medpay_actors::{Runtime, RuntimeConfig};
use medpay_ml::{FEATURE_NAMES, FEATURE_SCHEMA, Lists, ModelArtefact, ModelScorer, RiskScorer, RuleBook};
use medpay_store::{RateLimiter, Store};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How often rules and lists are read again from the store, so that a change made through another
/// node is in force here too.
const RISK_RELOAD_INTERVAL_MS: u64 = 5_000;
/// How often expired idempotency keys are purged.
const IDEMPOTENCY_PURGE_INTERVAL_MS: u64 = 60 * 60 * 1_000;
const LATENCY_BUCKETS_SECONDS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(OpenApi)]
#[openapi(
    info(title = "MedPay", description = "Real-time payment and fraud core for Brazilian health payments. Amounts are integer centavos."),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The process-wide metrics recorder: installed once, shared by every app in the process.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS_SECONDS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (a host application): ours still renders
            // what it recorded, which is then nothing; say so in the log.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was installed already; /metrics shows only its own");
            }
            handle
        })
        .clone()
}

async fn record_http_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("medpay_http_request_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("medpay_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

/// The largest model artefact a registration takes: boosted trees are hundreds of kilobytes
/// (`ml/models/boosted.json` is 480 KB), where every other body is a few.
pub const MODEL_BODY_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Bounds every request body: `max` bytes, or `MODEL_BODY_BYTES_MAX` for a model registration.
/// A declared length over the bound is refused before anything is read (413
/// `payload_too_large`); a body that grows past it while streaming fails its extractor.
async fn limit_body(max: usize, request: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let post = request.method() == axum::http::Method::POST;
    let limit = if post && request.uri().path() == "/v1/models" {
        MODEL_BODY_BYTES_MAX.max(max)
    } else if post && request.uri().path().starts_with("/v1/payments/") && request.uri().path().ends_with("/evidence") {
        crate::portal::EVIDENCE_BYTES_MAX.max(max)
    } else {
        max
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        let mut response = crate::error::ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {limit} bytes"),
        )
        .into_response();
        // The unread body stays on the connection: close it rather than read it.
        response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        return response;
    }
    let (parts, body) = request.into_parts();
    let limited = axum::body::Body::new(http_body_util::Limited::new(body, limit));
    next.run(Request::from_parts(parts, limited)).await
}

/// The API and its OpenAPI description, from the same route list.
pub fn router(state: AppState) -> Router {
    let limits = state.config.limits.clone();
    let share = Arc::new(crate::share::TenantShare::new(limits.tenant_concurrency_max));
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(parties::create_provider))
        .routes(routes!(parties::create_patient))
        .routes(routes!(parties::get_patient))
        .routes(routes!(privacy::export))
        .routes(routes!(privacy::erase))
        .routes(routes!(checkout::create_link))
        .routes(routes!(checkout::open_link))
        .routes(routes!(portal::create_sign_in_link))
        .routes(routes!(portal::open_session))
        .routes(routes!(portal::close_session))
        .routes(routes!(portal::my_payments))
        .routes(routes!(portal::my_stream))
        .routes(routes!(portal::pix_qr))
        .routes(routes!(portal::simulate))
        .routes(routes!(portal::contract_pdf))
        .routes(routes!(portal::signed_contract_pdf))
        .routes(routes!(portal::resend_signing_link))
        .routes(routes!(portal::add_evidence, portal::list_evidence))
        .routes(routes!(portal::get_evidence))
        .routes(routes!(crate::catalogue::put_prices, crate::catalogue::get_prices))
        .routes(routes!(notify::my_notifications))
        .routes(routes!(crate::analytics::payments))
        .routes(routes!(crate::analytics::models))
        .routes(routes!(crate::analytics::chart))
        .routes(routes!(ops::patient_app))
        .routes(routes!(ops::patient_manifest))
        .routes(routes!(ops::patient_service_worker))
        .routes(routes!(ops::patient_icon))
        .routes(routes!(payments::create_payment, payments::list_payments))
        .routes(routes!(payments::get_payment))
        .routes(routes!(payments::list_events))
        .routes(routes!(risk::list_rules, risk::create_rule))
        .routes(routes!(risk::delete_rule))
        .routes(routes!(risk::backtest))
        .routes(routes!(risk::list_lists, risk::add_list_entry))
        .routes(routes!(risk::remove_list_entry))
        .routes(routes!(risk::label_payment))
        .routes(routes!(risk::list_labels))
        .routes(routes!(models::list_models, models::register_model))
        .routes(routes!(models::set_alias))
        .routes(routes!(models::rollback))
        .routes(routes!(models::alias_history))
        .routes(routes!(models::shadow))
        .routes(routes!(models::set_canary))
        .routes(routes!(models::drift))
        .routes(routes!(models::plot))
        .routes(routes!(training::start_training))
        .routes(routes!(training::training_run))
        .routes(routes!(events::feed))
        .routes(routes!(events::stream))
        .routes(routes!(events::websocket))
        .routes(routes!(events::create_endpoint, events::list_endpoints))
        .routes(routes!(events::remove_endpoint))
        .routes(routes!(parties::create_key, parties::list_keys))
        .routes(routes!(parties::revoke_key))
        .routes(routes!(events::list_deliveries))
        .routes(routes!(events::resend))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::dashboard))
        .routes(routes!(ops::console))
        .routes(routes!(parties::balance))
        .routes(routes!(parties::update_provider_risk))
        .routes(routes!(money::create_refund, money::list_refunds))
        .routes(routes!(money::procedure))
        .routes(routes!(money::celcoin_webhook))
        .routes(routes!(money::clicksign_webhook))
        .routes(routes!(money::ledger_check))
        .routes(routes!(money::reconciliation))
        .routes(routes!(chat::create_conversation))
        .routes(routes!(chat::say))
        .routes(routes!(chat::get_conversation))
        .routes(routes!(chat::agent_say))
        .routes(routes!(chat::handoffs))
        .routes(routes!(chat::reviews))
        .routes(routes!(chat::close_review))
        .routes(routes!(people::claim))
        .routes(routes!(people::create_person, people::list_people))
        .routes(routes!(people::add_token))
        .routes(routes!(people::revoke_token))
        .routes(routes!(people::audit_log))
        .routes(routes!(chat::websocket))
        .split_for_parts();
    let openapi_json = Arc::new(openapi.to_pretty_json().unwrap_or_default());
    api.route(
        "/openapi.json",
        axum::routing::get(move || {
            let body = openapi_json.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], (*body).clone()) }
        }),
    )
    .fallback(|| async { crate::error::ApiError::not_found("route_not_found", "no such route") })
    .layer(middleware::from_fn(record_http_metrics))
    .layer(middleware::from_fn(move |request: Request, next: Next| limit_body(limits.body_bytes_max, request, next)))
    .layer(GlobalConcurrencyLimitLayer::new(limits.concurrency_max))
    .layer(middleware::from_fn(move |request: Request, next: Next| {
        crate::share::share_concurrency(share.clone(), request, next)
    }))
    .layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        Duration::from_millis(limits.request_timeout_ms),
    ))
    .layer(TraceLayer::new_for_http())
    .with_state(state)
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub admin_token: String,
    /// Where Receita Federal is asked (the in-process sandbox on the embedded defaults).
    pub receita_url: String,
    /// Where Celcoin and ClickSign are (the in-process sandboxes on the embedded defaults).
    pub celcoin_url: String,
    pub clicksign_url: String,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stops accepting, lets in-flight requests finish (up to the grace period), stops the actors.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops (after `shutdown` or a signal handled by the caller).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// What a scorer is built from: the store, and the analysts' rules and lists it must read.
pub struct ScorerParts {
    pub store: Store,
    pub rules: Arc<RuleBook>,
    pub lists: Arc<Lists>,
    pub model_path: Option<std::path::PathBuf>,
}

/// The bundled model, or the one at `path`, checked against the feature schema.
pub fn load_model(path: Option<&std::path::Path>) -> anyhow::Result<ModelArtefact> {
    let text = match path {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read model {}", path.display()))?,
        None => medpay_ml::DEFAULT_MODEL_JSON.to_owned(),
    };
    let model = ModelArtefact::from_json(&text)?;
    model.require_schema(FEATURE_SCHEMA, &FEATURE_NAMES)?;
    Ok(model)
}

/// Connects the store, starts the actors and serves on `config.bind` (port 0 picks a free port).
pub async fn start(config: Config) -> anyhow::Result<Server> {
    start_with(config, |parts| async move {
        let loaded = load_model(parts.model_path.as_deref())?;
        let source = if parts.model_path.is_some() { "file" } else { "bundled" };
        let model = crate::models::champion_at_start(&parts.store, loaded, source).await?;
        tracing::info!(model = %model.version, kind = model.kind().as_str(), "model loaded");
        let challenger = crate::models::challenger_at_start(&parts.store).await?;
        let scorer = ModelScorer::new(model, parts.rules, parts.lists);
        scorer.set_challenger(challenger);
        scorer.set_canary(parts.store.model_canary().await?);
        let scorer: Arc<dyn RiskScorer> = Arc::new(scorer);
        Ok(scorer)
    })
    .await
}

/// `start` with the scorer built by `scorer` (tests put a scorer they control behind the seam).
/// The key of list hashes: `MEDPAY_LIST_KEY`, or the one kept in the database (made by the first
/// node that starts). A key set differently in the same process (a second app in a test) keeps
/// the first: hashes already made must go on matching.
async fn set_list_key(config: &Config, store: &Store) -> anyhow::Result<()> {
    let text = match &config.list_key {
        Some(key) => key.trim().to_owned(),
        None => {
            let candidate: [u8; 32] = rand::random();
            store.stored_list_key(&hex::encode(candidate)).await?
        }
    };
    let key: [u8; 32] = hex::decode(&text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .context("MEDPAY_LIST_KEY must be 64 hex digits (32 bytes)")?;
    if !medpay_ml::set_list_key(key) {
        tracing::warn!("a list key was set already in this process; keeping it");
    }
    Ok(())
}

pub async fn start_with<F, Fut>(config: Config, scorer: F) -> anyhow::Result<Server>
where
    F: FnOnce(ScorerParts) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Arc<dyn RiskScorer>>>,
{
    let store = Store::connect(&config.database_url).await?;
    let now = medpay_store::now_ms();
    let interrupted = store.fail_interrupted_training_runs(now, now - crate::training::TRAINING_RUN_STALE_MS).await?;
    if interrupted > 0 {
        tracing::warn!(interrupted, "training runs left running by a stopped process marked failed");
    }
    let limiter = match &config.redis_url {
        Some(url) => RateLimiter::redis(url).await?,
        None => RateLimiter::in_process(),
    };
    let in_flight = limiter.connection().map_or_else(medpay_store::InFlight::in_process, medpay_store::InFlight::redis);
    let rules = Arc::new(RuleBook::default());
    set_list_key(&config, &store).await?;
    let entries = store.list_entries().await?;
    Lists::set_legacy_entries(entries.iter().any(|entry| !entry.keyed));
    let lists = Arc::new(Lists::new(entries.into_iter().map(|entry| (entry.list, entry.kind, entry.value_hash))));
    let parts = ScorerParts {
        store: store.clone(),
        rules: rules.clone(),
        lists: lists.clone(),
        model_path: config.model_path.clone(),
    };
    let scorer = scorer(parts).await?;
    let runtime_config: RuntimeConfig = config.runtime.clone();
    // Bound first: the in-process gateway sandboxes send their webhooks here.
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    let addr = listener.local_addr()?;
    let (gateways, celcoin_url, clicksign_url) = start_gateways(&config, addr).await?;
    let documents = gateways.documents.clone();
    let signer = gateways.contracts.clone();
    let catalogue = Arc::new(crate::catalogue::Catalogue::default());
    catalogue.reload(&store).await?;
    let render_catalogue = catalogue.clone();
    // A payment as the API shows it, with its procedure's official term when a catalogue is loaded.
    let render: medpay_actors::Renderer = Arc::new(move |payment, decision, charge| {
        let mut view = PaymentView::new(payment, decision, charge);
        view.procedure_term = render_catalogue.term(payment.tuss_code.as_str());
        serde_json::to_value(view).unwrap_or_default()
    });
    let runtime = Arc::new(Runtime::start(store.clone(), scorer, runtime_config, render, Some(gateways)).await?);
    let admin_token =
        config.admin_token.clone().unwrap_or_else(|| crate::auth::new_secret(crate::auth::ADMIN_TOKEN_PREFIX));
    let receita_url = match &config.receita_url {
        Some(url) => url.clone(),
        None => {
            let address = medpay_gateways::receita::start_sandbox("127.0.0.1:0".parse()?).await?;
            tracing::info!(%address, "Receita Federal sandbox started in process (set RECEITA_URL for the real one)");
            format!("http://{address}")
        }
    };
    let receita = Arc::new(medpay_gateways::receita::ReceitaClient::new(
        &receita_url,
        &config.receita_client_id,
        &config.receita_client_secret,
        medpay_gateways::resilience::Policy::default(),
    )?);
    let grace = Duration::from_millis(config.limits.shutdown_grace_ms);
    let (shutdown, mut stopped) = watch::channel(false);
    let drift_interval_ms = config.limits.drift_interval_ms.max(1_000);
    let log = match &config.mongodb_url {
        Some(url) => Some(
            medpay_store::mongo::LogStore::connect(url)
                .await
                .with_context(|| format!("MONGODB_URL {}", crate::config::redact_url(url)))?,
        ),
        None => None,
    };
    let state = AppState {
        log: log.clone(),
        store: store.clone(),
        runtime: runtime.clone(),
        limiter: Arc::new(limiter),
        auth_failures: Arc::new(crate::auth::AuthFailures::new(config.limits.auth_failures_per_address_per_minute)),
        in_flight: Arc::new(in_flight),
        lookups: Arc::new(crate::lookups::Lookups::new(store.clone())),
        config: Arc::new(config),
        admin_token: Arc::from(admin_token.as_str()),
        metrics: metrics_handle(),
        rules,
        lists,
        stopping: stopped.clone(),
        receita,
        documents,
        signer: signer.clone(),
        catalogue,
    };
    risk::reload_rules(&state).await.map_err(|error| anyhow::anyhow!("loading rules: {}", error.message))?;
    let mailer = crate::notify::Mailer::from_settings(&state.config.patients)?;
    match &mailer {
        crate::notify::Mailer::Folder(_, dir) => {
            tracing::info!(folder = %dir.display(), "patient e-mails are written to a folder (set MEDPAY_SMTP_URL to send them)")
        }
        crate::notify::Mailer::Smtp(_) => tracing::info!("patient e-mails are sent over SMTP"),
    }
    crate::notify::spawn(state.clone(), mailer);
    match log {
        Some(_) => {
            let url = state.config.mongodb_url.as_deref().unwrap_or_default();
            crate::export::start(&state, url).await?
        }
        None => crate::export::stop(&state.store).await?,
    }
    if let Some(signer) = signer {
        spawn_signed_copies(state.clone(), signer);
    }
    let state_for_reload = state.clone();
    let app = router(state);
    let purge_store = store.clone();
    let mut purge_stopped = stopped.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(IDEMPOTENCY_PURGE_INTERVAL_MS));
        loop {
            tokio::select! {
                _ = interval.tick() => match purge_store.purge_idempotency_keys(medpay_store::now_ms()).await {
                    Ok(purged) if purged > 0 => tracing::info!(purged, "expired idempotency keys purged"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "idempotency purge failed"),
                },
                _ = purge_stopped.changed() => break,
            }
        }
    });
    let reload_state = state_for_reload;
    let mut reload_stopped = stopped.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(RISK_RELOAD_INTERVAL_MS));
        interval.tick().await;
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    if let Err(error) = risk::reload_rules(&reload_state).await {
                        tracing::warn!(error = %error.message, "rule reload failed; keeping the current rules");
                    }
                    if let Err(error) = reload_state.catalogue.reload(&reload_state.store).await {
                        tracing::warn!(%error, "TUSS catalogue reload failed; keeping the current one");
                    }
                    match reload_state.store.list_entries().await {
                        Ok(entries) => {
                            Lists::set_legacy_entries(entries.iter().any(|entry| !entry.keyed));
                            reload_state.lists.replace(entries.into_iter().map(|entry| (entry.list, entry.kind, entry.value_hash)));
                        }
                        Err(error) => tracing::warn!(%error, "list reload failed; keeping the current lists"),
                    }
                }
                _ = reload_stopped.changed() => break,
            }
        }
    });
    // Drift on a timer, so that /metrics and its alarms follow the traffic whether or not
    // anyone reads /v1/models/drift.
    let drift_store = store.clone();
    let mut drift_stopped = stopped.clone();
    let drift_every = Duration::from_millis(drift_interval_ms);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(drift_every);
        interval.tick().await;
        loop {
            tokio::select! {
                _ = interval.tick() => match crate::models::measure_drift(&drift_store, None).await {
                    Ok(report) => {
                        let worst = report.score.iter().chain(report.features.iter()).max_by(|a, b| a.psi.total_cmp(&b.psi));
                        if let Some(worst) = worst.filter(|worst| worst.psi >= medpay_ml::drift::PSI_ALARM) {
                            tracing::warn!(model = %report.model_version, value = %worst.name, psi = worst.psi, live = report.live_rows,
                                "drift: the live payments have moved away from the champion's training data");
                        }
                    }
                    Err(error) if error.code == "no_reference" => {}
                    Err(error) => tracing::warn!(error = %error.message, "drift could not be measured"),
                },
                _ = drift_stopped.changed() => break,
            }
        }
    });
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = stopped.changed().await;
            });
        if let Err(error) = serve.await {
            tracing::error!(%error, "server failed");
        }
        runtime.shutdown(grace).await;
        store.close().await;
        tracing::info!("stopped");
    });
    Ok(Server { addr, admin_token, receita_url, celcoin_url, clicksign_url, shutdown, task })
}

/// The Celcoin and ClickSign clients; their sandboxes are started in process when no URL is set.
/// Signed contracts a sweep fetches at a time.
const SIGNED_COPIES_PER_SWEEP: i64 = 20;

/// Fetches the signed copy of each signed contract from ClickSign into the document store, on
/// the money sweep's beat: the copy is ready some seconds after signing, and until it is stored
/// the contract stays owed (any node may fetch it; writing it twice writes the same file).
fn spawn_signed_copies(state: AppState, signer: Arc<medpay_gateways::clicksign::ClickSignClient>) {
    let every = Duration::from_millis(state.config.money.runtime.sweep_ms.max(100));
    let mut stopping = state.stopping.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stopping.changed() => return,
            }
            let owed = match state.store.contracts_owing_signed_copy(SIGNED_COPIES_PER_SWEEP).await {
                Ok(owed) => owed,
                Err(error) => {
                    tracing::warn!(%error, "could not read the contracts owing a signed copy");
                    continue;
                }
            };
            for (payment, envelope) in owed {
                match signer.signed_copy(&envelope).await {
                    Ok(Some(bytes)) => {
                        let key = medpay_actors::documents::signed_contract_key(payment);
                        if let Err(error) = state.documents.put(&key, bytes).await {
                            tracing::warn!(payment_id = %payment, %error, "the signed contract could not be stored; retrying");
                            continue;
                        }
                        match state.store.signed_copy_stored(payment, medpay_store::now_ms()).await {
                            Ok(()) => {
                                tracing::info!(payment_id = %payment, envelope_id = %envelope, "signed contract stored")
                            }
                            Err(error) => {
                                tracing::warn!(payment_id = %payment, %error, "could not record the signed copy")
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(payment_id = %payment, %error, "ClickSign's signed copy not fetched yet")
                    }
                }
            }
        }
    });
}

async fn start_gateways(
    config: &Config,
    addr: SocketAddr,
) -> anyhow::Result<(medpay_actors::money::Gateways, String, String)> {
    use medpay_gateways::{celcoin, celcoin_sandbox, clicksign};
    let money = &config.money;
    let celcoin_url = match &money.celcoin_url {
        Some(url) => url.clone(),
        None => {
            let target = celcoin_sandbox::WebhookTarget {
                url: format!("http://{addr}/v1/gateways/celcoin/webhooks"),
                username: money.celcoin_webhook_user.clone(),
                password: money.celcoin_webhook_password.clone(),
            };
            let address = celcoin_sandbox::start_sandbox("127.0.0.1:0".parse()?, Some(target)).await?;
            tracing::info!(%address, "Celcoin sandbox started in process (set CELCOIN_URL for the real one)");
            format!("http://{address}")
        }
    };
    let clicksign_url = match &money.clicksign_url {
        Some(url) => url.clone(),
        None => {
            let address = clicksign::start_sandbox(
                "127.0.0.1:0".parse()?,
                &money.clicksign_token,
                &money.clicksign_webhook_secret,
                Some(format!("http://{addr}/v1/gateways/clicksign/webhooks")),
            )
            .await?;
            tracing::info!(%address, "ClickSign sandbox started in process (set CLICKSIGN_URL for the real one)");
            format!("http://{address}")
        }
    };
    let policy = money.policy();
    let celcoin = celcoin::CelcoinClient::new(
        &celcoin_url,
        &money.celcoin_client_id,
        &money.celcoin_client_secret,
        &money.celcoin_pix_key,
        policy.clone(),
    )?;
    let contracts = clicksign::ClickSignClient::new(&clicksign_url, &money.clicksign_token, policy)?;
    let patients = &config.patients;
    let documents = match &patients.documents_url {
        Some(url) => medpay_actors::documents::Documents::at_url(url, &patients.documents_options),
        None => medpay_actors::documents::Documents::local(&patients.documents_dir),
    }
    .map_err(|error| anyhow::anyhow!("documents: {error}"))?;
    tracing::info!(location = %documents.location, "documents (contracts) are kept here");
    let gateways = medpay_actors::money::Gateways {
        celcoin: Arc::new(celcoin),
        contracts: Some(Arc::new(contracts)),
        documents: Arc::new(documents),
        config: money.runtime.clone(),
    };
    Ok((gateways, celcoin_url, clicksign_url))
}

//! Liveness, readiness, metrics.

use crate::dto::Health;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health, description = "the process is up")))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".to_owned() })
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health, description = "database reachable and actors healthy"), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let database = state.store.ping().await;
    let actors = state.runtime.is_healthy();
    if database && actors {
        (StatusCode::OK, Json(Health { status: "ready".to_owned() }))
    } else {
        tracing::warn!(database, actors, "not ready");
        (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "not ready".to_owned() }))
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain", description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    // The export's backlog as it is now (two lookups of the outbox's key): a scrape never reads a
    // count older than the rows it describes.
    if state.config.mongodb_url.is_some()
        && let Ok(backlog) = state.store.log_export_backlog().await
    {
        metrics::gauge!("medpay_log_export_backlog").set(backlog as f64);
    }
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}

const DASHBOARD_HTML: &str = include_str!("../static/dashboard.html");

/// A page of ours: HTML that talks only to this origin, nothing inline runs but its own script.
/// Images may be data URLs: the console shows the plots it fetched with its token that way (an
/// SVG shown as an image runs no script).
fn page(html: &'static str) -> Response {
    let mut response = html.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
        ),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[utoipa::path(get, path = "/dashboard", tag = "operations",
    responses((status = 200, content_type = "text/html", description = "the providers' dashboard (Portuguese), signed in with the provider's API key")))]
pub async fn dashboard() -> Response {
    page(DASHBOARD_HTML)
}

const CONSOLE_HTML: &str = include_str!("../static/console.html");

#[utoipa::path(get, path = "/console", tag = "operations",
    responses((status = 200, content_type = "text/html", description = "the risk analysts' console (Portuguese): the review queue, the models, shadow comparison and promotion history, signed in with an analyst's token")))]
pub async fn console() -> Response {
    page(CONSOLE_HTML)
}

const PATIENT_APP_HTML: &str = include_str!("../static/paciente.html");
const PATIENT_MANIFEST: &str = include_str!("../static/paciente.webmanifest");
const PATIENT_SERVICE_WORKER: &str = include_str!("../static/paciente-sw.js");
const PATIENT_ICON: &str = include_str!("../static/paciente-icon.svg");

#[utoipa::path(get, path = "/paciente", tag = "operations",
    responses((status = 200, content_type = "text/html", description = "the patient app (Portuguese, mobile first, installable), signed in from a provider's link")))]
pub async fn patient_app() -> Response {
    let mut response = page(PATIENT_APP_HTML);
    // Its service worker and manifest come from this origin; the QR code is a data URL.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; worker-src 'self'; manifest-src 'self'",
        ),
    );
    response
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[utoipa::path(get, path = "/paciente/manifest.webmanifest", tag = "operations",
    responses((status = 200, content_type = "application/manifest+json", description = "the patient app's web app manifest")))]
pub async fn patient_manifest() -> Response {
    asset(PATIENT_MANIFEST, "application/manifest+json")
}

#[utoipa::path(get, path = "/paciente/sw.js", tag = "operations",
    responses((status = 200, content_type = "text/javascript", description = "the patient app's service worker: keeps the shell for offline use, never the patient's data")))]
pub async fn patient_service_worker() -> Response {
    let mut response = asset(PATIENT_SERVICE_WORKER, "text/javascript; charset=utf-8");
    // Served under /paciente/, it controls /paciente itself.
    response.headers_mut().insert("service-worker-allowed", HeaderValue::from_static("/paciente"));
    response
}

#[utoipa::path(get, path = "/paciente/icon.svg", tag = "operations",
    responses((status = 200, content_type = "image/svg+xml", description = "the patient app's icon")))]
pub async fn patient_icon() -> Response {
    asset(PATIENT_ICON, "image/svg+xml")
}

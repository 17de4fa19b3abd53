//! ClickSign v3 (JSON:API): an envelope with the contract document, the patient as signer, the
//! requirements (agree as contractor; evidence by e-mail token), activation and notification;
//! webhooks verified by their `Content-Hmac: sha256=<hex>` header (HMAC-SHA256 of the body with
//! the account's secret). The sandbox below speaks the same shapes and signs on request
//! (`POST /sandbox/envelopes/{id}/sign` or `/refuse`).

use crate::resilience::{Breaker, Policy};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest contract document sent.
pub const DOCUMENT_BYTES_MAX: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClickSignError {
    #[error("ClickSign is not answering (circuit open); retry later")]
    CircuitOpen,
    #[error("ClickSign failed after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("ClickSign refused the request: {0}")]
    Rejected(String),
}

/// The contract to sign and who signs it.
#[derive(Debug, Clone)]
pub struct ContractRequest {
    pub name: String,
    pub filename: String,
    /// The PDF to sign.
    pub document: Vec<u8>,
    pub signer_name: String,
    pub signer_email: String,
    /// CPF formatted 000.000.000-00.
    pub signer_cpf: String,
}

/// What a ClickSign webhook says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeNotice {
    pub envelope_id: String,
    /// `sign`, `auto_close`, `close`, `refusal`, …
    pub event: String,
    pub occurred_at: String,
}

/// The `Content-Hmac` value of `body` under `secret`.
pub fn content_hmac(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable_key());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn unreachable_key() -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this is never reached.
    Hmac::<Sha256>::new_from_slice(b"k").expect("HMAC takes any key length")
}

/// How old (by its signed `event.occurred_at`) a ClickSign webhook may be, and how far ahead of
/// our clock: a signed body captured once cannot be played back after this.
pub const WEBHOOK_WINDOW_MS: i64 = 60 * 60 * 1_000;
pub const WEBHOOK_CLOCK_SKEW_MS: i64 = 5 * 60 * 1_000;

/// Whether a verified notice happened within the window around `now_ms`.
pub fn check_fresh(notice: &EnvelopeNotice, now_ms: i64) -> Result<(), String> {
    let at = chrono::DateTime::parse_from_rfc3339(&notice.occurred_at)
        .map_err(|_| "event.occurred_at is missing or not an RFC 3339 time".to_owned())?
        .timestamp_millis();
    if at < now_ms - WEBHOOK_WINDOW_MS {
        return Err(format!("the event occurred more than {} minutes ago", WEBHOOK_WINDOW_MS / 60_000));
    }
    if at > now_ms + WEBHOOK_CLOCK_SKEW_MS {
        return Err("the event occurred in the future".to_owned());
    }
    Ok(())
}

/// Verifies a webhook's `Content-Hmac` header in constant time and parses the body.
pub fn verify_webhook(secret: &str, header: Option<&str>, body: &[u8]) -> Result<EnvelopeNotice, String> {
    let header = header.ok_or("no Content-Hmac header")?;
    let hex_part = header.strip_prefix("sha256=").ok_or("Content-Hmac is not sha256=<hex>")?;
    let given = hex::decode(hex_part).map_err(|_| "Content-Hmac is not hex")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| "Content-Hmac does not match the body")?;
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let text = |pointer: &str| value.pointer(pointer).and_then(|v| v.as_str()).map(str::to_owned);
    Ok(EnvelopeNotice {
        envelope_id: text("/envelope/id").ok_or("no envelope.id")?,
        event: text("/event/name").ok_or("no event.name")?,
        occurred_at: text("/event/occurred_at").unwrap_or_default(),
    })
}

pub struct ClickSignClient {
    base: String,
    token: String,
    http: reqwest::Client,
    policy: Policy,
    breaker: Breaker,
}

impl ClickSignClient {
    pub fn new(base: &str, token: &str, policy: Policy) -> Result<ClickSignClient, ClickSignError> {
        let http = crate::resilience::http_client(&policy).map_err(ClickSignError::Rejected)?;
        Ok(ClickSignClient {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
            policy,
            breaker: Breaker::default(),
        })
    }

    /// One JSON:API call with the policy. Retries only what cannot have been done twice: a
    /// refused connection or a 5xx before any effect (ClickSign's writes are not idempotent, so a
    /// time-out is not retried; the caller starts the envelope again and the stale one expires).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ClickSignError> {
        let mut last = String::new();
        for attempt in 1..=self.policy.attempts_max {
            if !self.breaker.allow() {
                return Err(ClickSignError::CircuitOpen);
            }
            let sent = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .header("Authorization", &self.token)
                .header("Content-Type", "application/vnd.api+json")
                .header("Accept", "application/vnd.api+json");
            let sent = if body.is_null() { sent } else { sent.body(body.to_string()) }.send().await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    self.breaker.succeeded();
                    return Ok(response.json().await.unwrap_or(serde_json::Value::Null));
                }
                Ok(response) if response.status().is_client_error() => {
                    self.breaker.succeeded();
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    let detail = body.pointer("/errors/0/detail").and_then(|v| v.as_str()).unwrap_or("refused");
                    return Err(ClickSignError::Rejected(detail.to_owned()));
                }
                Ok(response) => last = format!("HTTP {}", response.status()),
                Err(error) if error.is_connect() => last = error.to_string(),
                Err(error) => {
                    self.breaker.failed(&self.policy);
                    return Err(ClickSignError::Exhausted { attempts: attempt, last: error.to_string() });
                }
            }
            self.breaker.failed(&self.policy);
            if attempt < self.policy.attempts_max {
                tokio::time::sleep(self.policy.backoff(attempt)).await;
            }
        }
        Err(ClickSignError::Exhausted { attempts: self.policy.attempts_max, last })
    }

    fn id_of(value: &serde_json::Value) -> Result<String, ClickSignError> {
        value
            .pointer("/data/id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| ClickSignError::Rejected("answer without data.id".to_owned()))
    }

    /// The envelope already sent for signature (running or closed) under `name`, if there is
    /// one: ClickSign's creates are not idempotent, so our own name for the envelope is how a
    /// retry after a lost answer or a crash finds the one sent before.
    pub async fn sent_envelope(&self, name: &str) -> Result<Option<String>, ClickSignError> {
        let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("filter[name]", name).finish();
        let found =
            self.call(reqwest::Method::GET, &format!("/api/v3/envelopes?{query}"), serde_json::Value::Null).await?;
        let envelopes = found.get("data").and_then(|data| data.as_array()).cloned().unwrap_or_default();
        Ok(envelopes
            .iter()
            .filter(|envelope| envelope.pointer("/attributes/name").and_then(|v| v.as_str()) == Some(name))
            .find(|envelope| {
                matches!(envelope.pointer("/attributes/status").and_then(|v| v.as_str()), Some("running" | "closed"))
            })
            .and_then(|envelope| envelope.get("id").and_then(|v| v.as_str()).map(str::to_owned)))
    }

    /// The signed copy of an envelope's (first) document, once ClickSign has closed it: none
    /// while it is not signed yet. Its download link is short-lived and carries no token.
    pub async fn signed_copy(&self, envelope_id: &str) -> Result<Option<Vec<u8>>, ClickSignError> {
        let documents = self
            .call(reqwest::Method::GET, &format!("/api/v3/envelopes/{envelope_id}/documents"), serde_json::Value::Null)
            .await?;
        let Some(url) = documents.pointer("/data/0/links/files/signed").and_then(|v| v.as_str()).map(str::to_owned)
        else {
            return Ok(None);
        };
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|error| ClickSignError::Exhausted { attempts: 1, last: error.to_string() })?;
        if !response.status().is_success() {
            return Err(ClickSignError::Exhausted {
                attempts: 1,
                last: format!("signed copy: HTTP {}", response.status()),
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|error| ClickSignError::Exhausted { attempts: 1, last: error.to_string() })?;
        if bytes.len() > DOCUMENT_BYTES_MAX * 2 || !bytes.starts_with(b"%PDF-") {
            return Err(ClickSignError::Rejected("the signed copy is not a PDF of a sane size".to_owned()));
        }
        Ok(Some(bytes.to_vec()))
    }

    /// Envelope, document, signer, requirements, activation, notification. Returns the envelope id.
    /// An envelope sent before under the request's name is returned instead of sending another
    /// (a draft left by an interrupted attempt was never sent to anyone and is left to expire).
    pub async fn send_contract(&self, request: &ContractRequest) -> Result<String, ClickSignError> {
        if request.document.len() > DOCUMENT_BYTES_MAX {
            return Err(ClickSignError::Rejected("contract document too large".to_owned()));
        }
        if let Some(sent) = self.sent_envelope(&request.name).await? {
            return Ok(sent);
        }
        let post = reqwest::Method::POST;
        let envelope = self
            .call(
                post.clone(),
                "/api/v3/envelopes",
                json!({"data": {"type": "envelopes", "attributes": {
                    "name": request.name, "locale": "pt-BR", "auto_close": true, "remind_interval": 3,
                    "block_after_refusal": true}}}),
            )
            .await?;
        let envelope_id = Self::id_of(&envelope)?;
        let content = base64::engine::general_purpose::STANDARD.encode(&request.document);
        let document = self
            .call(
                post.clone(),
                &format!("/api/v3/envelopes/{envelope_id}/documents"),
                json!({"data": {"type": "documents", "attributes": {
                    "filename": request.filename, "content_base64": format!("data:application/pdf;base64,{content}")}}}),
            )
            .await?;
        let document_id = Self::id_of(&document)?;
        let signer = self
            .call(
                post.clone(),
                &format!("/api/v3/envelopes/{envelope_id}/signers"),
                json!({"data": {"type": "signers", "attributes": {
                    "name": request.signer_name, "email": request.signer_email,
                    "documentation": request.signer_cpf, "has_documentation": true,
                    "communicate_events": {"signature_request": "email", "signature_reminder": "email", "document_signed": "email"}}}}),
            )
            .await?;
        let signer_id = Self::id_of(&signer)?;
        let relationships = json!({
            "document": {"data": {"type": "documents", "id": document_id}},
            "signer": {"data": {"type": "signers", "id": signer_id}}});
        for attributes in
            [json!({"action": "agree", "role": "contractor"}), json!({"action": "provide_evidence", "auth": "email"})]
        {
            self.call(
                post.clone(),
                &format!("/api/v3/envelopes/{envelope_id}/requirements"),
                json!({"data": {"type": "requirements", "attributes": attributes, "relationships": relationships}}),
            )
            .await?;
        }
        self.call(
            reqwest::Method::PATCH,
            &format!("/api/v3/envelopes/{envelope_id}"),
            json!({"data": {"id": envelope_id, "type": "envelopes", "attributes": {"status": "running"}}}),
        )
        .await?;
        self.notify_signers(&envelope_id).await?;
        Ok(envelope_id)
    }

    /// Asks ClickSign to send the signing link to the envelope's signers again (by the channel
    /// each was registered with: e-mail here). ClickSign takes one a minute per envelope.
    pub async fn notify_signers(&self, envelope_id: &str) -> Result<(), ClickSignError> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v3/envelopes/{envelope_id}/notifications"),
            json!({"data": {"type": "notifications", "attributes": {"message": "Seu contrato de parcelamento está pronto para assinatura."}}}),
        )
        .await
        .map(drop)
    }
}

// ---------------------------------------------------------------- sandbox

#[derive(Debug, Clone, Default)]
struct Envelope {
    name: String,
    status: String,
    /// Each document's id, file name and PDF.
    documents: Vec<(String, String, Vec<u8>)>,
    signers: Vec<String>,
    requirements: usize,
    notified: bool,
}

/// Faults the ClickSign sandbox injects when told to (`PUT /sandbox/faults`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    #[serde(default)]
    pub seed: u64,
    /// Share of API calls refused with a 503 before doing anything.
    #[serde(default)]
    pub error_rate: f64,
    /// Share of webhooks sent twice.
    #[serde(default)]
    pub duplicate_rate: f64,
    /// Each webhook waits a random time up to this before it leaves.
    #[serde(default)]
    pub delay_ms_max: u64,
}

struct Sandbox {
    faults: Mutex<(Faults, rand::rngs::StdRng)>,
    envelopes: Mutex<HashMap<String, Envelope>>,
    token: String,
    secret: String,
    target: Mutex<Option<String>>,
    http: reqwest::Client,
}

type Shared = Arc<Sandbox>;

fn fail(status: StatusCode, detail: &str) -> Response {
    (status, Json(json!({"errors": [{"status": status.as_u16().to_string(), "detail": detail}]}))).into_response()
}

/// Checks the token and rolls the 5xx fault: `Some` is the answer to give instead.
fn refused(sandbox: &Sandbox, headers: &HeaderMap) -> Option<Response> {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(sandbox.token.as_str()) {
        return Some(fail(StatusCode::UNAUTHORIZED, "token inválido"));
    }
    let mut guard = sandbox.faults.lock().unwrap_or_else(|p| p.into_inner());
    let (faults, rng) = &mut *guard;
    if rand::Rng::random::<f64>(rng) < faults.error_rate {
        return Some(fail(StatusCode::SERVICE_UNAVAILABLE, "falha simulada"));
    }
    None
}

fn parse_body(body: &str, kind: &str) -> Result<serde_json::Value, (StatusCode, String)> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|_| (StatusCode::BAD_REQUEST, "corpo não é JSON".to_owned()))?;
    if value.pointer("/data/type").and_then(|v| v.as_str()) != Some(kind) {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, format!("data.type deve ser {kind}")));
    }
    Ok(value)
}

fn created(kind: &str, id: &str, attributes: serde_json::Value) -> Response {
    (StatusCode::CREATED, Json(json!({"data": {"id": id, "type": kind, "attributes": attributes}}))).into_response()
}

async fn create_envelope(State(sandbox): State<Shared>, headers: HeaderMap, body: String) -> Response {
    if let Some(response) = refused(&sandbox, &headers) {
        return response;
    }
    let value = match parse_body(&body, "envelopes") {
        Ok(value) => value,
        Err((status, detail)) => return fail(status, &detail),
    };
    let id = uuid_like();
    let name = value.pointer("/data/attributes/name").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    sandbox
        .envelopes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), Envelope { name: name.clone(), status: "draft".to_owned(), ..Envelope::default() });
    let mut attributes = value.pointer("/data/attributes").cloned().unwrap_or_default();
    attributes["status"] = json!("draft");
    created("envelopes", &id, attributes)
}

#[derive(serde::Deserialize)]
struct EnvelopeFilter {
    #[serde(rename = "filter[name]")]
    name: Option<String>,
}

/// `GET /api/v3/envelopes?filter[name]=…`: the envelopes of that name (JSON:API, one page).
async fn list_envelopes(
    State(sandbox): State<Shared>,
    headers: HeaderMap,
    axum::extract::Query(filter): axum::extract::Query<EnvelopeFilter>,
) -> Response {
    if let Some(response) = refused(&sandbox, &headers) {
        return response;
    }
    let envelopes = sandbox.envelopes.lock().unwrap_or_else(|p| p.into_inner());
    let data: Vec<serde_json::Value> = envelopes
        .iter()
        .filter(|(_, envelope)| filter.name.as_ref().is_none_or(|name| &envelope.name == name))
        .take(ENVELOPES_PAGE_MAX)
        .map(|(id, envelope)| {
            json!({"id": id, "type": "envelopes", "attributes": {"name": envelope.name, "status": envelope.status}})
        })
        .collect();
    (StatusCode::OK, Json(json!({"data": data, "meta": {"record_count": data.len()}}))).into_response()
}

/// What the sandbox's signature adds to a signed PDF: a comment after its end, which every PDF
/// reader skips (the real service stamps a signature page; the sandbox only marks the file).
pub const SANDBOX_SIGNATURE_MARK: &str = "% ClickSign sandbox: assinado eletronicamente";

fn document_json(host: &str, envelope: &Envelope, id: &str, filename: &str) -> serde_json::Value {
    let status = match envelope.status.as_str() {
        "closed" => "closed",
        "canceled" => "canceled",
        "running" => "running",
        _ => "draft",
    };
    let mut files = json!({"original": format!("http://{host}/sandbox/files/{id}/original")});
    if status == "closed" {
        files["signed"] = json!(format!("http://{host}/sandbox/files/{id}/signed"));
    }
    json!({"id": id, "type": "documents", "attributes": {"filename": filename, "status": status}, "links": {"files": files}})
}

async fn list_documents(State(sandbox): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(response) = refused(&sandbox, &headers) {
        return response;
    }
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1").to_owned();
    let envelopes = sandbox.envelopes.lock().unwrap_or_else(|p| p.into_inner());
    let Some(envelope) = envelopes.get(&id) else { return fail(StatusCode::NOT_FOUND, "envelope não encontrado") };
    let data: Vec<serde_json::Value> =
        envelope.documents.iter().map(|(doc, filename, _)| document_json(&host, envelope, doc, filename)).collect();
    (StatusCode::OK, Json(json!({"data": data}))).into_response()
}

async fn show_document(
    State(sandbox): State<Shared>,
    headers: HeaderMap,
    Path((id, document)): Path<(String, String)>,
) -> Response {
    if let Some(response) = refused(&sandbox, &headers) {
        return response;
    }
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1").to_owned();
    let envelopes = sandbox.envelopes.lock().unwrap_or_else(|p| p.into_inner());
    let Some(envelope) = envelopes.get(&id) else { return fail(StatusCode::NOT_FOUND, "envelope não encontrado") };
    match envelope.documents.iter().find(|(doc, _, _)| *doc == document) {
        Some((doc, filename, _)) => {
            (StatusCode::OK, Json(json!({"data": document_json(&host, envelope, doc, filename)}))).into_response()
        }
        None => fail(StatusCode::NOT_FOUND, "documento não encontrado"),
    }
}

/// A document's file, as ClickSign's download links give it (they carry no token).
async fn download(State(sandbox): State<Shared>, Path((document, version)): Path<(String, String)>) -> Response {
    let envelopes = sandbox.envelopes.lock().unwrap_or_else(|p| p.into_inner());
    for envelope in envelopes.values() {
        if let Some((_, _, bytes)) = envelope.documents.iter().find(|(doc, _, _)| *doc == document) {
            let mut bytes = bytes.clone();
            match version.as_str() {
                "original" => {}
                "signed" if envelope.status == "closed" => {
                    bytes.extend_from_slice(format!("\n{SANDBOX_SIGNATURE_MARK}\n").as_bytes());
                }
                _ => return fail(StatusCode::NOT_FOUND, "arquivo não disponível"),
            }
            return ([(axum::http::header::CONTENT_TYPE, "application/pdf")], bytes).into_response();
        }
    }
    fail(StatusCode::NOT_FOUND, "documento não encontrado")
}

/// Envelopes one list answer of the sandbox holds.
const ENVELOPES_PAGE_MAX: usize = 20;

fn uuid_like() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

async fn add(sandbox: Shared, headers: HeaderMap, id: String, body: String, kind: &'static str) -> Response {
    if let Some(response) = refused(&sandbox, &headers) {
        return response;
    }
    let value = match parse_body(&body, kind) {
        Ok(value) => value,
        Err((status, detail)) => return fail(status, &detail),
    };
    let attributes = value.pointer("/data/attributes").cloned().unwrap_or_default();
    let mut envelopes = sandbox.envelopes.lock().unwrap_or_else(|p| p.into_inner());
    let Some(envelope) = envelopes.get_mut(&id) else { return fail(StatusCode::NOT_FOUND, "envelope não encontrado") };
    if envelope.status != "draft" && kind != "notifications" {
        return fail(StatusCode::UNPROCESSABLE_ENTITY, "envelope já ativado");
    }
    let new_id = uuid_like();
    match kind {
        "documents" => {
            let content = attributes.get("content_base64").and_then(|v| v.as_str()).unwrap_or_default();
            let Some((_, data)) = content.split_once(";base64,") else {
                return fail(StatusCode::UNPROCESSABLE_ENTITY, "content_base64 inválido");
            };
            // ClickSign signs PDFs: anything else is refused, as the real service does.
            let bytes = match base64::engine::general_purpose::STANDARD.decode(data) {
                Err(_) => return fail(StatusCode::UNPROCESSABLE_ENTITY, "content_base64 inválido"),
                Ok(bytes) if !bytes.starts_with(b"%PDF-") => {
                    return fail(StatusCode::UNPROCESSABLE_ENTITY, "o documento precisa ser um PDF");
                }
                Ok(bytes) => bytes,
            };
            let filename = attributes.get("filename").and_then(|v| v.as_str()).unwrap_or("documento.pdf").to_owned();
            envelope.documents.push((new_id.clone(), filename, bytes));
        }
        "signers" => {
            if attributes.get("name").and_then(|v| v.as_str()).is_none_or(str::is_empty) {
                return fail(StatusCode::UNPROCESSABLE_ENTITY, "name é obrigatório");
            }
            envelope.signers.push(new_id.clone());
        }
        "requirements" => {
            let document = value.pointer("/data/relationships/document/data/id").and_then(|v| v.as_str());
            let signer = value.pointer("/data/relationships/signer/data/id").and_then(|v| v.as_str());
            if !document.is_some_and(|d| envelope.documents.iter().any(|(x, _, _)| x == d))
                || !signer.is_some_and(|s| envelope.signers.iter().any(|x| x == s))
            {
                return fail(StatusCode::UNPROCESSABLE_ENTITY, "documento ou signatário desconhecido");
            }
            envelope.requirements += 1;
        }
        _ => {
            if envelope.status != "running" {
                return fail(StatusCode::UNPROCESSABLE_ENTITY, "envelope não está ativo");
            }
            envelope.notified = true;
        }
    }
    created(kind, &new_id, attributes)
}

async fn add_document(State(s): State<Shared>, h: HeaderMap, Path(id): Path<String>, body: String) -> Response {
    add(s, h, id, body, "documents").await
}
async fn add_signer(State(s): State<Shared>, h: HeaderMap, Path(id): Path<String>, body: String) -> Response {
    add(s, h, id, body, "signers").await
}
async fn add_requirement(State(s): State<Shared>, h: HeaderMap, Path(id): Path<String>, body: String) -> Response {
    add(s, h, id, body, "requirements").await
}
async fn notify(State(s): State<Shared>, h: HeaderMap, Path(id): Path<String>, body: String) -> Response {
    add(s, h, id, body, "notifications").await
}

async fn update_envelope(
    State(sandbox): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    if let Some(response) = refused(&sandbox, &headers) {
        return response;
    }
    let value = match parse_body(&body, "envelopes") {
        Ok(value) => value,
        Err((status, detail)) => return fail(status, &detail),
    };
    let mut envelopes = sandbox.envelopes.lock().unwrap_or_else(|p| p.into_inner());
    let Some(envelope) = envelopes.get_mut(&id) else { return fail(StatusCode::NOT_FOUND, "envelope não encontrado") };
    if value.pointer("/data/attributes/status").and_then(|v| v.as_str()) == Some("running") {
        if envelope.documents.is_empty() || envelope.signers.is_empty() || envelope.requirements == 0 {
            return fail(StatusCode::UNPROCESSABLE_ENTITY, "envelope sem documento, signatário ou requisito");
        }
        envelope.status = "running".to_owned();
    }
    (StatusCode::OK, Json(json!({"data": {"id": id, "type": "envelopes", "attributes": {"status": envelope.status}}})))
        .into_response()
}

/// Sends `event` for an envelope to the configured webhook URL, signed, until it is taken.
fn send_event(sandbox: &Shared, envelope: &str, event: &str) {
    let body = json!({"event": {"name": event, "occurred_at": chrono::Utc::now().to_rfc3339()},
                      "envelope": {"id": envelope}})
    .to_string();
    let signature = content_hmac(&sandbox.secret, body.as_bytes());
    let delays: Vec<u64> = {
        let mut guard = sandbox.faults.lock().unwrap_or_else(|p| p.into_inner());
        let (faults, rng) = &mut *guard;
        let copies = if rand::Rng::random::<f64>(rng) < faults.duplicate_rate { 2 } else { 1 };
        (0..copies).map(|_| rand::Rng::random_range(rng, 0..=faults.delay_ms_max)).collect()
    };
    for delay in delays {
        deliver(sandbox.clone(), body.clone(), signature.clone(), delay);
    }
}

fn deliver(sandbox: Shared, body: String, signature: String, delay_ms: u64) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        for attempt in 0..20u32 {
            let target = sandbox.target.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(url) = target {
                let sent = sandbox
                    .http
                    .post(url)
                    .header("Content-Hmac", &signature)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                if sent.is_ok_and(|response| response.status().is_success()) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis((50u64 << attempt.min(5)).min(2_000))).await;
        }
    });
}

async fn decide(sandbox: Shared, id: String, signed: bool) -> Response {
    {
        let mut envelopes = sandbox.envelopes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(envelope) = envelopes.get_mut(&id) else {
            return fail(StatusCode::NOT_FOUND, "envelope não encontrado");
        };
        if envelope.status != "running" {
            return fail(StatusCode::CONFLICT, "envelope não está aguardando assinatura");
        }
        envelope.status = if signed { "closed" } else { "canceled" }.to_owned();
    }
    if signed {
        send_event(&sandbox, &id, "sign");
        send_event(&sandbox, &id, "auto_close");
    } else {
        send_event(&sandbox, &id, "refusal");
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn sign(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    decide(s, id, true).await
}
async fn refuse(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    decide(s, id, false).await
}

async fn set_faults(State(sandbox): State<Shared>, Json(faults): Json<Faults>) -> StatusCode {
    let seed = faults.seed;
    *sandbox.faults.lock().unwrap_or_else(|p| p.into_inner()) = (faults, rand::SeedableRng::seed_from_u64(seed));
    StatusCode::NO_CONTENT
}

async fn set_webhook(State(sandbox): State<Shared>, Json(body): Json<serde_json::Value>) -> StatusCode {
    let url = body.get("url").and_then(|v| v.as_str()).map(str::to_owned);
    *sandbox.target.lock().unwrap_or_else(|p| p.into_inner()) = url;
    StatusCode::NO_CONTENT
}

/// The sandbox's routes, answering to `token` and signing webhooks with `secret`.
pub fn sandbox_router(token: &str, secret: &str, webhook_url: Option<String>) -> axum::Router {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sandbox = Arc::new(Sandbox {
        faults: Mutex::new((Faults::default(), rand::SeedableRng::seed_from_u64(0))),
        envelopes: Mutex::default(),
        token: token.to_owned(),
        secret: secret.to_owned(),
        target: Mutex::new(webhook_url),
        http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default(),
    });
    axum::Router::new()
        .route("/api/v3/envelopes", post(create_envelope).get(list_envelopes))
        .route("/api/v3/envelopes/{id}", patch(update_envelope))
        .route("/api/v3/envelopes/{id}/documents", post(add_document).get(list_documents))
        .route("/api/v3/envelopes/{id}/signers", post(add_signer))
        .route("/api/v3/envelopes/{id}/requirements", post(add_requirement))
        .route("/api/v3/envelopes/{id}/notifications", post(notify))
        .route("/api/v3/envelopes/{id}/documents/{document}", get(show_document))
        .route("/sandbox/files/{document}/{version}", get(download))
        .route("/sandbox/envelopes/{id}/sign", post(sign))
        .route("/sandbox/envelopes/{id}/refuse", post(refuse))
        .route("/sandbox/webhook", put(set_webhook))
        .route("/sandbox/faults", put(set_faults))
        .with_state(sandbox)
}

pub async fn start_sandbox(
    bind: SocketAddr,
    token: &str,
    secret: &str,
    webhook_url: Option<String>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let address = listener.local_addr()?;
    let router = sandbox_router(token, secret, webhook_url);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "ClickSign sandbox stopped");
        }
    });
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_verify_and_forgeries_do_not() {
        let body = br#"{"event":{"name":"auto_close","occurred_at":"2026-11-30T10:00:00Z"},"envelope":{"id":"e1"}}"#;
        let header = content_hmac("segredo", body);
        let notice = verify_webhook("segredo", Some(&header), body).unwrap();
        assert_eq!((notice.envelope_id.as_str(), notice.event.as_str()), ("e1", "auto_close"));
        assert!(verify_webhook("outro", Some(&header), body).is_err(), "another secret");
        let mut tampered = body.to_vec();
        tampered[20] ^= 1;
        assert!(verify_webhook("segredo", Some(&header), &tampered).is_err(), "another body");
        assert!(verify_webhook("segredo", None, body).is_err());
    }

    #[test]
    fn a_webhook_is_taken_only_within_its_window() {
        let notice =
            |at: &str| EnvelopeNotice { envelope_id: "e1".into(), event: "sign".into(), occurred_at: at.into() };
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z").unwrap().timestamp_millis();
        assert!(check_fresh(&notice("2026-11-30T10:00:00Z"), now).is_ok());
        assert!(check_fresh(&notice("2026-11-30T09:01:00Z"), now).is_ok(), "59 minutes old");
        assert!(check_fresh(&notice("2026-11-30T07:00:00-02:00"), now).is_ok(), "the same instant, another zone");
        assert!(check_fresh(&notice("2026-11-30T10:04:00Z"), now).is_ok(), "within the clock skew");
        assert!(check_fresh(&notice("2026-11-30T08:59:59Z"), now).unwrap_err().contains("more than 60 minutes"));
        assert!(check_fresh(&notice("2026-11-30T10:06:00Z"), now).unwrap_err().contains("future"));
        assert!(check_fresh(&notice(""), now).is_err(), "no time: refused");
        assert!(check_fresh(&notice("ontem"), now).is_err());
    }

    #[tokio::test]
    async fn a_contract_goes_through_every_step() {
        let address = start_sandbox("127.0.0.1:0".parse().unwrap(), "tok", "sec", None).await.unwrap();
        let request = ContractRequest {
            name: "Contrato".into(),
            filename: "contrato.pdf".into(),
            document: b"%PDF-1.7\n12 parcelas".to_vec(),
            signer_name: "Maria".into(),
            signer_email: "maria@example.com".into(),
            signer_cpf: "529.982.247-25".into(),
        };
        let control = reqwest::Client::new();
        // A third of the calls fail with a 503 before doing anything: they are retried.
        control
            .put(format!("http://{address}/sandbox/faults"))
            .json(&json!({"seed": 5, "error_rate": 0.3}))
            .send()
            .await
            .unwrap();
        let patient = Policy {
            attempts_max: 10,
            backoff_base_ms: 1,
            backoff_max_ms: 5,
            breaker_failures: 1_000,
            ..Policy::default()
        };
        let retrying = ClickSignClient::new(&format!("http://{address}"), "tok", patient).unwrap();
        let envelope = retrying.send_contract(&request).await.unwrap();
        control.put(format!("http://{address}/sandbox/faults")).json(&json!({})).send().await.unwrap();
        // Sent again under the same name (a retry after a crash): the same envelope, not a second.
        assert_eq!(retrying.send_contract(&request).await.unwrap(), envelope);
        let other = ContractRequest { name: "Outro contrato".into(), ..request.clone() };
        assert_ne!(retrying.send_contract(&other).await.unwrap(), envelope);
        // ClickSign signs PDFs, not text.
        let text = ContractRequest { name: "Texto".into(), document: b"12 parcelas".to_vec(), ..request.clone() };
        assert!(matches!(retrying.send_contract(&text).await, Err(ClickSignError::Rejected(_))));
        let signed = control.post(format!("http://{address}/sandbox/envelopes/{envelope}/sign")).send().await.unwrap();
        assert_eq!(signed.status(), 204);
        let again = control.post(format!("http://{address}/sandbox/envelopes/{envelope}/sign")).send().await.unwrap();
        assert_eq!(again.status(), 409, "a closed envelope cannot be signed again");
        let wrong = ClickSignClient::new(&format!("http://{address}"), "bad", Policy::default()).unwrap();
        assert!(matches!(wrong.send_contract(&request).await, Err(ClickSignError::Rejected(_))));
    }
}

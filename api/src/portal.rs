//! The patient app's API (issue 13): sign-in by a short-lived link, the patient's own payments in
//! their words, the PIX QR code, the live stream of their payments, and the installment simulator.
//!
//! Sign-in: a provider that registered the patient (or support) asks for a link; it carries a
//! single-use code in the URL's fragment (`/paciente#codigo=…`), which browsers never send to a
//! server, so it lands in no access log. The app exchanges the code for a session token that
//! expires (`POST /v1/patient-sessions`); the patient's long-lived token never leaves the API.
//! A provider's link is a code it has seen: the session it opens is scoped to that provider (its
//! payments, its view of the patient, its conversations), never the patient's whole record.

use crate::auth::{PatientCredential, Principal, Role, new_secret};
use crate::dto::{PaymentView, timestamp};
use crate::error::{ApiError, ErrorBody, rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use medpay_models::{BasisPoints, InstallmentPlan, Money, PatientId, PaymentId, PlanRequest};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// A patient's session token (`POST /v1/patient-sessions`).
pub const SESSION_TOKEN_PREFIX: &str = "mps_";
const SIGN_IN_CODE_PREFIX: &str = "mpl_";
/// How long a sign-in link works: long enough to open an e-mail, short enough that a forwarded
/// or leaked one is soon worthless. It works once.
pub const SIGN_IN_CODE_TTL_MS: i64 = 30 * 60 * 1_000;
/// How long a session lasts: a day, then the patient asks for a new link.
pub const SESSION_TTL_MS: i64 = 24 * 60 * 60 * 1_000;
/// The payments the app lists (newest first).
const APP_PAYMENTS_MAX: i64 = 20;
/// Providers whose live events a patient's stream follows (the most recently linked).
const STREAM_PROVIDERS_MAX: i64 = 8;
/// Payment ids a stream remembers as the patient's, or not.
const STREAM_KNOWN_MAX: usize = 4_096;
const SSE_KEEP_ALIVE_SECONDS: u64 = 15;
/// The simulator's bounds: what a payment may ask for.
const SIMULATION_INSTALLMENTS_MAX: u32 = 24;
const SIMULATION_AMOUNT_MAX: i64 = 100_000_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct SignInLinkView {
    /// The link to give the patient: the app, with the code in its fragment.
    pub url: String,
    /// The same, relative to the service's address.
    pub path: String,
    pub expires_at: String,
}

#[utoipa::path(post, path = "/v1/patients/{id}/sign-in-links", tag = "patients", security(("bearer" = [])),
    params(("id" = String, Path, description = "patient id")),
    responses((status = 201, body = SignInLinkView, description = "a link that signs the patient into the app once, within 30 minutes"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_sign_in_link(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<SignInLinkView>), ApiError> {
    let not_found = || ApiError::not_found("patient_not_found", "no such patient");
    match principal {
        Principal::Admin | Principal::Person(_, Role::Admin | Role::Support) | Principal::Provider(_) => {}
        _ => return Err(ApiError::forbidden("sign-in links are given by the patient's provider or by support")),
    }
    let Path(id) = id.map_err(rejection)?;
    let patient: PatientId = id.parse().map_err(|_| not_found())?;
    // A provider is answered from its own view: unlinked is "not found", and a patient erased
    // before this provider registered them is, to it, a patient like any other. Its link opens a
    // session scoped to it.
    let scope = principal.seen_through();
    let record = state.store.patient_seen_by(scope, patient).await?.ok_or_else(not_found)?;
    if record.erased_at_ms.is_some() {
        return Err(not_found());
    }
    let credential = PatientCredential { patient, provider: scope };
    let (path, expires_at_ms) = new_sign_in_link(&state, credential, &principal.actor(), SIGN_IN_CODE_TTL_MS).await?;
    tracing::info!(patient_id = %patient, by = %principal.actor(), "patient sign-in link made");
    let url = format!("{}{path}", state.config.public_base());
    Ok((StatusCode::CREATED, Json(SignInLinkView { url, path, expires_at: timestamp(expires_at_ms) })))
}

/// A new sign-in code (its hash is what is stored).
pub(crate) fn new_sign_in_code() -> String {
    new_secret(SIGN_IN_CODE_PREFIX)
}

/// A new sign-in code for `patient` (the session it opens has its scope), stored as its hash: the
/// app's path with the code, and when it stops working.
pub(crate) async fn new_sign_in_link(
    state: &AppState,
    patient: PatientCredential,
    by: &str,
    ttl_ms: i64,
) -> Result<(String, i64), ApiError> {
    let code = new_sign_in_code();
    let now = medpay_store::now_ms();
    let expires_at_ms = now + ttl_ms;
    state
        .store
        .insert_sign_in_code(&medpay_store::sha256_hex(code.as_bytes()), patient, by, now, expires_at_ms)
        .await?;
    Ok((format!("/paciente#codigo={code}"), expires_at_ms))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenSession {
    /// The code of the sign-in link (after `#codigo=`).
    #[schema(min_length = 1, max_length = 128)]
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The session's bearer token, shown once; it expires at `expires_at`.
    pub token: String,
    pub expires_at: String,
    pub patient_id: String,
    /// The patient's first name, to greet them.
    pub first_name: String,
}

#[utoipa::path(post, path = "/v1/patient-sessions", tag = "patients", request_body = OpenSession,
    responses((status = 201, body = SessionView, description = "signed in: a session token for the app"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody, description = "`invalid_sign_in_code`: unknown, used or expired"),
        (status = 429, body = ErrorBody, description = "too many wrong codes from this address")))]
pub async fn open_session(
    State(state): State<AppState>,
    crate::auth::ClientAddress(client): crate::auth::ClientAddress,
    body: Result<Json<OpenSession>, JsonRejection>,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    // Wrong codes count like wrong tokens: an address that guesses is refused before any lookup.
    if let Some(client) = client
        && state.auth_failures.exhausted(client)
    {
        return Err(ApiError::too_many_auth_failures(crate::auth::AUTH_FAILURE_WINDOW_MS));
    }
    let Json(body) = body.map_err(rejection)?;
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_sign_in_code",
            "this sign-in link is unknown, was used already or expired: ask for a new one",
        )
    };
    let code = body.code.trim();
    let well_formed = code.starts_with(SIGN_IN_CODE_PREFIX) && code.len() <= 128;
    let now = medpay_store::now_ms();
    let token = new_secret(SESSION_TOKEN_PREFIX);
    let expires_at_ms = now + SESSION_TTL_MS;
    let patient = if well_formed {
        state
            .store
            .exchange_sign_in_code(
                &medpay_store::sha256_hex(code.as_bytes()),
                &medpay_store::sha256_hex(token.as_bytes()),
                now,
                expires_at_ms,
            )
            .await?
    } else {
        None
    };
    let Some(patient) = patient else {
        if let Some(client) = client {
            state.auth_failures.record(client);
        }
        metrics::counter!("medpay_auth_failures_total").increment(1);
        return Err(invalid());
    };
    let record = state.store.patient_seen_by(patient.provider, patient.patient).await?.ok_or_else(invalid)?;
    tracing::info!(patient_id = %patient.patient, scope = ?patient.provider, "patient signed in to the app");
    let first_name = record.name.split_whitespace().next().unwrap_or_default().to_owned();
    Ok((
        StatusCode::CREATED,
        Json(SessionView {
            token,
            expires_at: timestamp(expires_at_ms),
            patient_id: patient.patient.to_string(),
            first_name,
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/patient-sessions/current", tag = "patients", security(("bearer" = [])),
    responses((status = 204, description = "signed out: the session's token works no more"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "only an app session is signed out this way")))]
pub async fn close_session(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = crate::auth::bearer(&headers).filter(|token| token.starts_with(SESSION_TOKEN_PREFIX));
    let (Principal::Patient(patient), Some(token)) = (principal, token) else {
        return Err(ApiError::forbidden("only a patient's app session is signed out here"));
    };
    state.store.revoke_session(&medpay_store::sha256_hex(token.as_bytes()), medpay_store::now_ms()).await?;
    tracing::info!(patient_id = %patient.patient, "patient signed out of the app");
    Ok(StatusCode::NO_CONTENT)
}

fn patient_only(principal: Principal) -> Result<PatientCredential, ApiError> {
    match principal {
        Principal::Patient(id) => Ok(id),
        _ => Err(ApiError::forbidden("this is the patient's own view, read with the patient's session")),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContractState {
    /// `sent` (waiting for the patient's signature), `signed` or `refused`.
    pub status: String,
    /// In Portuguese.
    pub label: String,
    /// ClickSign e-mails the patient the signing link; this says so while it waits.
    pub how_to_sign: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppPayment {
    pub provider_name: String,
    /// The status in the patient's words ("Pago", "Aguardando o seu pagamento").
    pub status_label: String,
    pub contract: Option<ContractState>,
    /// The installments paid so far (their charges are paid).
    pub paid_installments: Vec<u32>,
    pub payment: PaymentView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppPayments {
    pub data: Vec<AppPayment>,
}

/// "pago" → "Pago".
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[utoipa::path(get, path = "/v1/me/payments", tag = "patients", security(("bearer" = [])),
    responses((status = 200, body = AppPayments, description = "the signed-in patient's latest payments, with their provider, status in Portuguese and contract"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn my_payments(State(state): State<AppState>, principal: Principal) -> Result<Json<AppPayments>, ApiError> {
    let patient = patient_only(principal)?;
    let filter = medpay_store::PaymentFilter {
        patient_id: Some(patient.patient),
        provider_id: patient.provider,
        before: None,
        limit: APP_PAYMENTS_MAX,
    };
    let payments = state.store.list_payments(&filter).await?;
    let mut data = Vec::with_capacity(payments.len());
    for summary in payments {
        let Some((payment, decision, charge)) = state.store.payment_view(summary.id).await? else { continue };
        // Providers are read through the in-memory lookups: a page of payments costs no extra reads.
        let provider_name =
            state.lookups.provider(payment.provider_id).await?.map(|p| p.name.clone()).unwrap_or_default();
        let contract = state.store.contract(payment.id).await?.map(|contract| {
            let status = contract.status.as_str().to_owned();
            let (label, how_to_sign) = match status.as_str() {
                "sent" => (
                    "Aguardando a sua assinatura",
                    Some("A ClickSign enviou o link de assinatura para o seu e-mail.".to_owned()),
                ),
                "signed" => ("Assinado", None),
                _ => ("Recusado", None),
            };
            ContractState { status, label: label.to_owned(), how_to_sign }
        });
        let paid_installments = state
            .store
            .charges(payment.id)
            .await?
            .iter()
            .filter(|charge| charge.status.as_str() == "paid")
            .map(|charge| charge.installment)
            .collect();
        let mut view = PaymentView::new(&payment, decision.as_ref(), charge.as_ref());
        view.procedure_term = state.catalogue.term(payment.tuss_code.as_str());
        // How the payment was scored is the platform's, not the patient's.
        view.decision = None;
        data.push(AppPayment {
            provider_name,
            status_label: sentence(medpay_chatbot::dialogue::status_pt(payment.status.as_str())),
            contract,
            paid_installments,
            payment: view,
        });
    }
    Ok(Json(AppPayments { data }))
}

#[utoipa::path(get, path = "/v1/payments/{id}/pix-qr", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "payment id")),
    responses((status = 200, content_type = "image/svg+xml", description = "the QR code of the PIX charge to pay now, drawn from its BR Code"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`no_pix_charge`: nothing to pay by PIX now")))]
pub async fn pix_qr(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let payment = crate::payments::visible_payment(&state, principal, id).await?;
    let no_charge = || ApiError::not_found("no_pix_charge", "this payment has no PIX charge to pay now");
    let (_, _, charge) = state.store.payment_view(payment.id).await?.ok_or_else(no_charge)?;
    let br_code = charge
        .filter(|charge| charge.status.as_str() == "active")
        .and_then(|charge| charge.br_code)
        .ok_or_else(no_charge)?;
    Ok(private_file(qr_svg(&br_code)?.into_bytes(), "image/svg+xml", None))
}

/// A document from the store; a store that does not answer is a 503.
async fn stored_document(state: &AppState, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
    state.documents.get(key).await.map_err(|error| ApiError::unavailable(format!("the document store: {error}")))
}

/// A file of one person's: never kept by a cache on the way, opened in place under `name`.
fn private_file(body: Vec<u8>, content_type: &'static str, name: Option<&str>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    if let Some(value) = name.and_then(|name| HeaderValue::from_str(&format!("inline; filename=\"{name}\"")).ok()) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The QR code of a BR Code, as SVG: error correction M (what PIX apps read well), a quiet zone of
/// four modules, black on white.
pub fn qr_svg(br_code: &str) -> Result<String, ApiError> {
    let code = qrcode::QrCode::with_error_correction_level(br_code.as_bytes(), qrcode::EcLevel::M)
        .map_err(|error| ApiError::internal(format!("a BR Code does not fit a QR code: {error}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}

#[utoipa::path(get, path = "/v1/me/stream", tag = "patients", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", description = "Server-Sent Events of the signed-in patient's payments (`payment` events: id, type, status), and nobody else's"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn my_stream(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let patient = patient_only(principal)?;
    let providers = match patient.provider {
        None => state.store.patient_providers(patient.patient, STREAM_PROVIDERS_MAX).await?,
        Some(scope) => vec![scope],
    };
    let mut receivers = Vec::with_capacity(providers.len());
    for provider in providers {
        if let Some(receiver) = state.runtime.subscribe(provider).await? {
            receivers.push(tokio_stream_of(receiver));
        }
    }
    // Without a provider yet, the stream stays open (keep-alives) rather than ending at once.
    let merged: BatchStream =
        Box::pin(futures::StreamExt::chain(futures::stream::select_all(receivers), futures::stream::pending()));
    let store = state.store.clone();
    let mut stopping = state.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
    let known = Known { mine: HashSet::new(), others: HashSet::new() };
    let events = futures::stream::unfold((merged, store, known), move |(mut merged, store, mut known)| async move {
        loop {
            let batch = futures::StreamExt::next(&mut merged).await?;
            let Some(batch) = batch else {
                // This subscriber fell behind: the app reads its payments again and reconnects.
                let event = Event::default().event("resync").data("{}");
                let ended: BatchStream = Box::pin(futures::stream::empty());
                return Some((vec![event], (ended, store, known)));
            };
            let mut out = Vec::new();
            for event in batch.iter() {
                if !known.is_mine(&store, event.payment_id, patient.patient).await {
                    continue;
                }
                let data = serde_json::json!({
                    "payment_id": event.payment_id.to_string(),
                    "type": event.kind,
                    "status": event.data.get("status"),
                });
                out.push(Event::default().event("payment").data(data.to_string()));
            }
            if !out.is_empty() {
                return Some((out, (merged, store, known)));
            }
        }
    });
    let events = futures::StreamExt::flat_map(events, |batch| futures::stream::iter(batch.into_iter().map(Ok)));
    let events = futures::StreamExt::take_until(events, Box::pin(stopped));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(SSE_KEEP_ALIVE_SECONDS))))
}

type BatchStream = std::pin::Pin<Box<dyn Stream<Item = Option<medpay_actors::EventBatch>> + Send>>;

/// A provider's live batches as a stream; `None` once when the subscription was dropped.
fn tokio_stream_of(receiver: tokio::sync::mpsc::Receiver<medpay_actors::EventBatch>) -> BatchStream {
    Box::pin(futures::stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver = receiver?;
        match receiver.recv().await {
            Some(batch) => Some((Some(batch), Some(receiver))),
            None => Some((None, None)),
        }
    }))
}

/// Which payments of the followed providers are this patient's, as learnt.
struct Known {
    mine: HashSet<PaymentId>,
    others: HashSet<PaymentId>,
}

impl Known {
    async fn is_mine(&mut self, store: &medpay_store::Store, payment: PaymentId, patient: PatientId) -> bool {
        if self.mine.contains(&payment) {
            return true;
        }
        if self.others.contains(&payment) {
            return false;
        }
        let mine = match store.payment(payment).await {
            Ok(Some(record)) => record.patient_id == patient,
            Ok(None) => false,
            Err(error) => {
                tracing::warn!(%error, "a patient's stream could not read a payment");
                return false;
            }
        };
        let set = if mine { &mut self.mine } else { &mut self.others };
        if set.len() >= STREAM_KNOWN_MAX {
            set.clear();
        }
        set.insert(payment);
        mine
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SimulationQuery {
    /// What the procedure costs, in centavos (1 to 100000000).
    #[param(minimum = 1, maximum = 100_000_000)]
    pub amount_centavos: i64,
    /// 1 to 24.
    #[param(minimum = 1, maximum = 24)]
    pub installments: u32,
    /// Interest a month in basis points (0 to 1000); the bot's 1,99 % when absent.
    #[param(minimum = 0, maximum = 1000)]
    pub monthly_interest_bps: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SimulationView {
    pub amount_centavos: i64,
    pub monthly_interest_bps: u32,
    pub installments: Vec<crate::dto::InstallmentView>,
    pub total_centavos: i64,
    /// Custo Efetivo Total a year, in basis points.
    pub cet_annual_bps: i64,
}

/// The largest monthly interest simulated: 10 % a month.
const SIMULATION_INTEREST_MAX_BPS: u32 = 1_000;

#[utoipa::path(get, path = "/v1/simulations", tag = "patients", security(("bearer" = [])), params(SimulationQuery),
    responses((status = 200, body = SimulationView, description = "the Tabela Price schedule, total and CET, as a payment would have them"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn simulate(
    _principal: Principal,
    query: Result<Query<SimulationQuery>, QueryRejection>,
) -> Result<Json<SimulationView>, ApiError> {
    let Query(query) = query.map_err(rejection)?;
    if !(1..=SIMULATION_AMOUNT_MAX).contains(&query.amount_centavos) {
        return Err(ApiError::bad_request("invalid_amount", "amount_centavos is 1 to 100000000"));
    }
    if !(1..=SIMULATION_INSTALLMENTS_MAX).contains(&query.installments) {
        return Err(ApiError::bad_request("invalid_installments", "installments is 1 to 24"));
    }
    let interest = query.monthly_interest_bps.unwrap_or(medpay_chatbot::dialogue::DEFAULT_MONTHLY_INTEREST_BPS);
    if interest > SIMULATION_INTEREST_MAX_BPS {
        return Err(ApiError::bad_request("invalid_interest", "monthly_interest_bps is 0 to 1000"));
    }
    let plan = InstallmentPlan::price(PlanRequest {
        principal: Money::from_centavos(query.amount_centavos),
        count: query.installments,
        monthly_interest: BasisPoints(interest),
        released_on: chrono::Utc::now().date_naive(),
    })
    .map_err(|error| ApiError::bad_request("invalid_simulation", error.to_string()))?;
    Ok(Json(SimulationView {
        amount_centavos: query.amount_centavos,
        monthly_interest_bps: interest,
        installments: plan
            .installments
            .iter()
            .map(|installment| crate::dto::InstallmentView {
                number: installment.number,
                due_date: installment.due_date.to_string(),
                amount_centavos: installment.amount_centavos,
            })
            .collect(),
        total_centavos: plan.total_centavos,
        cet_annual_bps: plan.cet_annual_bps(),
    }))
}

#[utoipa::path(get, path = "/v1/payments/{id}/contract.pdf", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "payment id")),
    responses((status = 200, content_type = "application/pdf", description = "the installment contract sent to the patient for signature"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`contract_not_found`: this payment has no contract")))]
pub async fn contract_pdf(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let payment = crate::payments::visible_payment(&state, principal, id).await?;
    let key = medpay_actors::documents::contract_key(payment.id);
    let not_found = || ApiError::not_found("contract_not_found", "this payment has no contract");
    let document = stored_document(&state, &key).await?.ok_or_else(not_found)?;
    Ok(private_file(document, "application/pdf", Some(&format!("contrato-{}.pdf", payment.id))))
}

#[utoipa::path(get, path = "/v1/payments/{id}/signed-contract.pdf", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "payment id")),
    responses((status = 200, content_type = "application/pdf", description = "the contract as ClickSign returned it, signed"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`signed_contract_not_found`: not signed, or its copy not fetched from ClickSign yet")))]
pub async fn signed_contract_pdf(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let payment = crate::payments::visible_payment(&state, principal, id).await?;
    let key = medpay_actors::documents::signed_contract_key(payment.id);
    let not_found = || ApiError::not_found("signed_contract_not_found", "this payment has no signed contract (yet)");
    let document = stored_document(&state, &key).await?.ok_or_else(not_found)?;
    Ok(private_file(document, "application/pdf", Some(&format!("contrato-{}-assinado.pdf", payment.id))))
}

/// Signing links sent again per payment and minute (ClickSign takes one a minute per envelope).
const SIGNING_LINKS_PER_MINUTE: u64 = 1;

#[utoipa::path(post, path = "/v1/payments/{id}/contract/notifications", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "payment id")),
    responses((status = 204, description = "ClickSign sends the signing link to the patient again (by e-mail)"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`contract_not_waiting`: no contract waits for a signature"),
        (status = 429, body = ErrorBody, description = "once a minute per payment"),
        (status = 503, body = ErrorBody, description = "ClickSign did not take it; try again")))]
pub async fn resend_signing_link(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let payment = crate::payments::visible_payment(&state, principal, id).await?;
    let contract = state.store.contract(payment.id).await?;
    let Some(contract) = contract.filter(|contract| contract.status.as_str() == "sent") else {
        return Err(ApiError::conflict("contract_not_waiting", "no contract of this payment waits for a signature"));
    };
    let signer = state.signer.clone().ok_or_else(|| ApiError::unavailable("ClickSign is not configured"))?;
    state.rate_limit(&format!("payment:{}:signing-link", payment.id), SIGNING_LINKS_PER_MINUTE).await?;
    signer
        .notify_signers(&contract.envelope_id)
        .await
        .map_err(|error| ApiError::unavailable(format!("ClickSign: {error}")))?;
    tracing::info!(payment_id = %payment.id, envelope_id = %contract.envelope_id, by = %principal.actor(), "signing link sent again");
    Ok(StatusCode::NO_CONTENT)
}

/// The largest file of evidence taken.
pub const EVIDENCE_BYTES_MAX: usize = 5 * 1024 * 1024;
/// Files of evidence one payment holds.
const EVIDENCE_FILES_MAX: usize = 20;

#[derive(Debug, Serialize, ToSchema)]
pub struct EvidenceView {
    pub id: String,
    pub content_type: String,
    pub bytes: i64,
    /// SHA-256 of the file, in hex.
    pub sha256: String,
    pub uploaded_by: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvidenceList {
    pub data: Vec<EvidenceView>,
}

fn evidence_view(record: medpay_store::EvidenceRecord) -> EvidenceView {
    EvidenceView {
        id: record.id,
        content_type: record.content_type,
        bytes: record.bytes,
        sha256: record.sha256,
        uploaded_by: record.uploaded_by,
        created_at: timestamp(record.created_at_ms),
    }
}

/// The files evidence may be: first bytes, Content-Type, extension.
const EVIDENCE_KINDS: [(&[u8], &str, &str); 3] = [
    (b"%PDF-", "application/pdf", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (&[0xff, 0xd8, 0xff], "image/jpeg", "jpg"),
];

/// What a file of evidence is, told by its first bytes: its Content-Type and extension. A
/// Content-Type sent other than `application/octet-stream` must agree with them.
fn evidence_kind(content_type: &str, body: &[u8]) -> Option<(&'static str, &'static str)> {
    let (_, found, extension) = EVIDENCE_KINDS.into_iter().find(|(magic, _, _)| body.starts_with(magic))?;
    (content_type == "application/octet-stream" || content_type == found).then_some((found, extension))
}

/// Where a file of evidence is kept.
fn evidence_key(record: &medpay_store::EvidenceRecord) -> String {
    let extension =
        EVIDENCE_KINDS.iter().find(|(_, kind, _)| *kind == record.content_type).map_or("bin", |(_, _, e)| e);
    format!("evidence/{}/{}.{extension}", record.payment_id, record.id)
}

fn evidence_writer(principal: Principal) -> Result<(), ApiError> {
    match principal {
        Principal::Provider(_) | Principal::Admin | Principal::Analyst | Principal::Person(..) => Ok(()),
        Principal::Patient(_) => Err(ApiError::forbidden("evidence is given by the provider or the platform's staff")),
    }
}

#[utoipa::path(post, path = "/v1/payments/{id}/evidence", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "payment id")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "a PDF, PNG or JPEG of at most 5 MiB, told by its first bytes (`application/pdf`, `image/png` or `image/jpeg` are taken too when they agree)"),
    responses((status = 201, body = EvidenceView, description = "kept in the document store beside the payment's contract"),
        (status = 400, body = ErrorBody, description = "`invalid_evidence`: not a PDF, PNG or JPEG, empty, or too large"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`no_dispute`: the payment has no chargeback or MED claim; `too_much_evidence`: 20 files already")))]
pub async fn add_evidence(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<EvidenceView>), ApiError> {
    evidence_writer(principal)?;
    let payment = crate::payments::visible_payment(&state, principal, id).await?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let content_type = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if body.is_empty() || body.len() > EVIDENCE_BYTES_MAX {
        return Err(ApiError::bad_request("invalid_evidence", "a file of evidence has 1 byte to 5 MiB"));
    }
    let Some((content_type, _)) = evidence_kind(&content_type, &body) else {
        return Err(ApiError::bad_request(
            "invalid_evidence",
            "evidence is a PDF, PNG or JPEG, sent as application/octet-stream or with its own Content-Type",
        ));
    };
    let disputed = state
        .store
        .refunds(payment.id)
        .await?
        .iter()
        .any(|refund| matches!(refund.kind, medpay_store::RefundKind::Chargeback | medpay_store::RefundKind::Med));
    if !disputed {
        return Err(ApiError::conflict(
            "no_dispute",
            "this payment has no chargeback or MED claim to give evidence for",
        ));
    }
    if state.store.evidence(payment.id).await?.len() >= EVIDENCE_FILES_MAX {
        return Err(ApiError::conflict("too_much_evidence", "this payment holds 20 files of evidence already"));
    }
    let record = medpay_store::EvidenceRecord {
        id: uuid::Uuid::now_v7().to_string(),
        payment_id: payment.id,
        content_type: content_type.to_owned(),
        bytes: i64::try_from(body.len()).unwrap_or(i64::MAX),
        sha256: medpay_store::sha256_hex(&body),
        uploaded_by: principal.actor(),
        created_at_ms: medpay_store::now_ms(),
    };
    // The file first: a row never names a file that is not there.
    let key = evidence_key(&record);
    state
        .documents
        .put(&key, body.to_vec())
        .await
        .map_err(|error| ApiError::unavailable(format!("the document store: {error}")))?;
    state.store.insert_evidence(&record).await?;
    tracing::info!(payment_id = %payment.id, evidence_id = %record.id, bytes = record.bytes, by = %record.uploaded_by, "dispute evidence kept");
    Ok((StatusCode::CREATED, Json(evidence_view(record))))
}

#[utoipa::path(get, path = "/v1/payments/{id}/evidence", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "payment id")),
    responses((status = 200, body = EvidenceList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list_evidence(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<EvidenceList>, ApiError> {
    evidence_writer(principal)?;
    let payment = crate::payments::visible_payment(&state, principal, id).await?;
    let data = state.store.evidence(payment.id).await?.into_iter().map(evidence_view).collect();
    Ok(Json(EvidenceList { data }))
}

#[utoipa::path(get, path = "/v1/payments/{id}/evidence/{evidence_id}", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "payment id"), ("evidence_id" = String, Path, description = "evidence id")),
    responses((status = 200, content_type = "application/octet-stream", description = "the file, with its Content-Type"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_evidence(
    State(state): State<AppState>,
    principal: Principal,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    evidence_writer(principal)?;
    let Path((id, evidence_id)) = ids.map_err(rejection)?;
    let payment = crate::payments::visible_payment(&state, principal, Ok(Path(id))).await?;
    let not_found = || ApiError::not_found("evidence_not_found", "no such evidence");
    let record =
        state.store.evidence(payment.id).await?.into_iter().find(|e| e.id == evidence_id).ok_or_else(not_found)?;
    let key = evidence_key(&record);
    let file = stored_document(&state, &key).await?.ok_or_else(not_found)?;
    let (_, content_type, extension) =
        EVIDENCE_KINDS.into_iter().find(|(_, kind, _)| *kind == record.content_type).ok_or_else(not_found)?;
    Ok(private_file(file, content_type, Some(&format!("{}.{extension}", record.id))))
}

//! Payments: create (decided in the same response), read, list, events.

use crate::auth::Principal;
use crate::dto::{
    CreatePayment, EventList, EventQuery, EventView, PaymentList, PaymentQuery, PaymentSummary, PaymentView,
};
use crate::error::{ApiError, ErrorBody, rejection};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{FixedOffset, NaiveDate, Utc};
use medpay_actors::{IdempotencyTarget, NewPayment};
use medpay_models::{
    BasisPoints, Cpf, InstallmentError, InstallmentPlan, Money, PatientId, PaymentId, PaymentMethod, PlanRequest,
    ProviderId, TussCode,
};
use medpay_store::{IDEMPOTENCY_KEY_LENGTH_MAX, PaymentFilter, StoredKey};

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
pub(crate) const DESCRIPTION_LENGTH_MAX: usize = 200;
pub(crate) const DEVICE_ID_LENGTH_MAX: usize = 128;
const PAYMENTS_PAGE_DEFAULT: i64 = 50;
const EVENTS_PAGE_DEFAULT: i64 = 100;
/// Brazil has kept UTC−3 all year since daylight saving time ended in 2019.
const SAO_PAULO_OFFSET_SECONDS: i32 = -3 * 3_600;

/// Today in America/Sao_Paulo: the day an installment plan is released.
pub(crate) fn today_in_sao_paulo() -> NaiveDate {
    let now = Utc::now();
    match FixedOffset::east_opt(SAO_PAULO_OFFSET_SECONDS) {
        Some(offset) => now.with_timezone(&offset).date_naive(),
        None => now.date_naive(),
    }
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let raw = headers
        .get(IDEMPOTENCY_HEADER)
        .ok_or_else(|| ApiError::bad_request("missing_idempotency_key", "the Idempotency-Key header is required"))?;
    let key = raw.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LENGTH_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} visible ASCII characters"),
        ));
    }
    Ok(key.to_owned())
}

/// The request, parsed into domain types; each bad field has its own code.
struct ParsedPayment {
    patient_id: PatientId,
    provider_id: ProviderId,
    tuss_code: TussCode,
    description: String,
    amount: Money,
    method: PaymentMethod,
    installments: u32,
    monthly_interest: BasisPoints,
    device_id: String,
    ip: String,
    card_fingerprint: Option<String>,
}

/// Longest card fingerprint accepted.
pub(crate) const CARD_FINGERPRINT_LENGTH_MAX: usize = 128;

fn parse_payment(body: CreatePayment) -> Result<ParsedPayment, ApiError> {
    let description = body.procedure.description.trim().to_owned();
    if description.is_empty()
        || description.chars().count() > DESCRIPTION_LENGTH_MAX
        || description.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "invalid_description",
            format!("procedure.description must have 1 to {DESCRIPTION_LENGTH_MAX} printable characters"),
        ));
    }
    let device_id = body.device.id.trim().to_owned();
    if device_id.is_empty()
        || device_id.len() > DEVICE_ID_LENGTH_MAX
        || !device_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(
            "invalid_device",
            format!("device.id must be 1 to {DEVICE_ID_LENGTH_MAX} visible ASCII characters"),
        ));
    }
    let card_fingerprint = body.device.card_fingerprint.map(|value| value.trim().to_owned());
    if card_fingerprint.as_ref().is_some_and(|value| {
        value.is_empty() || value.len() > CARD_FINGERPRINT_LENGTH_MAX || !value.bytes().all(|b| b.is_ascii_graphic())
    }) {
        return Err(ApiError::bad_request(
            "invalid_card_fingerprint",
            format!("device.card_fingerprint must be 1 to {CARD_FINGERPRINT_LENGTH_MAX} visible ASCII characters"),
        ));
    }
    let ip: std::net::IpAddr = body
        .device
        .ip
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_ip", "device.ip must be an IPv4 or IPv6 address"))?;
    Ok(ParsedPayment {
        patient_id: body
            .patient_id
            .parse()
            .map_err(|_| ApiError::bad_request("invalid_patient_id", "patient_id must be a patient id"))?,
        provider_id: body
            .provider_id
            .parse()
            .map_err(|_| ApiError::bad_request("invalid_provider_id", "provider_id must be a provider id"))?,
        tuss_code: body.procedure.tuss_code.parse().map_err(|_| {
            ApiError::bad_request("invalid_tuss_code", "procedure.tuss_code must be an 8-digit TUSS code")
        })?,
        description,
        amount: Money::from_centavos(body.amount_centavos),
        method: body
            .method
            .parse()
            .map_err(|_| ApiError::bad_request("invalid_method", "method must be pix, boleto or card"))?,
        installments: body.installments,
        monthly_interest: BasisPoints(body.monthly_interest_bps),
        device_id,
        ip: ip.to_string(),
        card_fingerprint,
    })
}

fn plan(parsed: &ParsedPayment, released_on: NaiveDate) -> Result<InstallmentPlan, ApiError> {
    InstallmentPlan::price(PlanRequest {
        principal: parsed.amount,
        count: parsed.installments,
        monthly_interest: parsed.monthly_interest,
        released_on,
    })
    .map_err(|error| {
        let code = match error {
            InstallmentError::Amount => "invalid_amount",
            InstallmentError::Interest => "invalid_interest",
            InstallmentError::Count | InstallmentError::InstallmentTooSmall | InstallmentError::Date => {
                "invalid_installments"
            }
        };
        ApiError::bad_request(code, error.to_string())
    })
}

/// Refuses a payment from a CPF that is not regular, or to a provider whose CNPJ is not active,
/// at Receita Federal. When Receita cannot answer (after retries, or with its circuit open) the
/// payment goes on to scoring: a status check must not take payments down; the log says so.
async fn check_registrations(state: &AppState, cpf: &Cpf, cnpj: &medpay_models::Cnpj) -> Result<(), ApiError> {
    use medpay_gateways::receita::{CnpjStatus, CpfStatus};
    let (cpf_status, cnpj_status) = tokio::join!(state.receita.cpf_status(cpf), state.receita.cnpj_status(cnpj));
    match cpf_status {
        Ok(CpfStatus::Regular) => {}
        Ok(status) => {
            tracing::info!(cpf = %cpf.masked(), situation = status.code().1, "payment refused: CPF not regular");
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "cpf_irregular",
                format!(
                    "the patient's CPF is not regular at Receita Federal (situação cadastral: {})",
                    status.code().1
                ),
            ));
        }
        Err(error) => tracing::warn!(cpf = %cpf.masked(), %error, "CPF status unknown; going on"),
    }
    match cnpj_status {
        Ok(CnpjStatus::Active) => Ok(()),
        Ok(status) => {
            tracing::info!(cnpj = %cnpj.masked(), situation = status.code().1, "payment refused: CNPJ not active");
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "cnpj_inactive",
                format!(
                    "the provider's CNPJ is not active at Receita Federal (situação cadastral: {})",
                    status.code().1
                ),
            ))
        }
        Err(error) => {
            tracing::warn!(cnpj = %cnpj.masked(), %error, "CNPJ status unknown; going on");
            Ok(())
        }
    }
}

/// A payment request parsed from its body: everything that needs no database.
pub struct PreparedPayment {
    /// SHA-256 of the canonical request, for its idempotency key.
    pub request_hash: String,
    parsed: ParsedPayment,
    plan: InstallmentPlan,
}

/// Parses and validates a payment request body and computes its installment plan (released on
/// `released_on`). Pure: the first half of the decision path.
pub fn prepare(body: &[u8], released_on: NaiveDate) -> Result<PreparedPayment, ApiError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| rejection(format!("body is not valid JSON: {error}")))?;
    integral_numbers_as_integers(&mut value);
    // Keys sorted: the same request with its fields in another order hashes alike.
    let request_hash = medpay_store::sha256_hex(medpay_store::canonical_json(&value).as_bytes());
    let request: CreatePayment =
        serde_json::from_value(value).map_err(|error| rejection(format!("invalid payment request: {error}")))?;
    let parsed = parse_payment(request)?;
    let plan = plan(&parsed, released_on)?;
    Ok(PreparedPayment { request_hash, parsed, plan })
}

/// JSON Schema counts `1.0` as an integer, and so do generated clients: a number with no fraction
/// that fits an i64 is read as that integer (and hashed as it), anywhere in the body.
fn integral_numbers_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(number) if !number.is_i64() && !number.is_u64() => {
            if let Some(float) = number.as_f64()
                && float.fract() == 0.0
                && (i64::MIN as f64..i64::MAX as f64).contains(&float)
            {
                *value = serde_json::Value::from(float as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

impl PreparedPayment {
    pub fn patient_id(&self) -> PatientId {
        self.parsed.patient_id
    }

    /// The command for the payment's actor, with a new payment id.
    pub fn into_new_payment(
        self,
        cpf: Cpf,
        provider: &medpay_store::ProviderRecord,
        idempotency: Option<IdempotencyTarget>,
    ) -> NewPayment {
        let parsed = self.parsed;
        NewPayment {
            id: PaymentId::new(),
            provider_id: parsed.provider_id,
            patient_id: parsed.patient_id,
            cpf,
            tuss_code: parsed.tuss_code,
            description: parsed.description,
            amount_centavos: parsed.amount.centavos(),
            method: parsed.method,
            monthly_interest_bps: parsed.monthly_interest.value(),
            plan: self.plan,
            device_id: parsed.device_id,
            ip: parsed.ip,
            card_fingerprint: parsed.card_fingerprint,
            created_at_ms: medpay_store::now_ms(),
            idempotency,
            claim: None,
            fee_bps: provider.fee_bps.value(),
            escrow: provider.escrow,
            patient_name: None,
        }
    }
}

/// Who may create this payment: its provider (for a patient it has registered or charged) or the
/// patient themself. Anyone else learns nothing: the ids are "not found".
async fn authorize_creation(state: &AppState, principal: Principal, parsed: &ParsedPayment) -> Result<(), ApiError> {
    let patient_not_found = || ApiError::not_found("patient_not_found", "no such patient");
    match principal {
        Principal::Admin | Principal::Analyst | Principal::Person(..) => {
            Err(ApiError::forbidden("payments are requested with a provider's API key or a patient's token"))
        }
        Principal::Provider(own) if own != parsed.provider_id => {
            Err(ApiError::not_found("provider_not_found", "no such provider"))
        }
        Principal::Provider(own) => {
            if state.lookups.is_linked(own, parsed.patient_id).await? {
                Ok(())
            } else {
                Err(patient_not_found())
            }
        }
        Principal::Patient(own) if own.patient != parsed.patient_id => Err(patient_not_found()),
        // A patient pays only a provider that registered them (or that they chose through its
        // checkout link), and a credential a provider was handed pays only that provider: any
        // other provider is "not found", as it would be to a patient of nobody.
        Principal::Patient(own) if own.provider.is_some_and(|scope| scope != parsed.provider_id) => {
            Err(ApiError::not_found("provider_not_found", "no such provider"))
        }
        Principal::Patient(own) => {
            if state.lookups.is_linked(parsed.provider_id, own.patient).await? {
                Ok(())
            } else {
                Err(ApiError::not_found("provider_not_found", "no such provider"))
            }
        }
    }
}

fn json_response(status: StatusCode, body: String, replayed: bool) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if replayed {
        headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

#[utoipa::path(post, path = "/v1/payments", tag = "payments", request_body = CreatePayment,
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, format = Uuid, pattern = "^[!-~]{1,255}$", description = "a UUID is the recommended key (any 1 to 255 visible ASCII characters are accepted), unique per payment request; a retry with the same key and body replays the first response")),
    responses(
        (status = 201, body = PaymentView, description = "decided and recorded; `decision.outcome` is approve, review or decline"),
        (status = 400, body = ErrorBody, description = "bad input; nothing was recorded"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "a request with this Idempotency-Key is in progress"),
        (status = 422, body = ErrorBody, description = "this Idempotency-Key was used with another request; or, with a TUSS catalogue loaded, the code is not in it (`unknown_procedure`) or not valid today (`procedure_not_valid`)"),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_payment(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let prepared = prepare(&body, today_in_sao_paulo())?;
    let parsed = &prepared.parsed;
    authorize_creation(&state, principal, parsed).await?;
    state.catalogue.check(parsed.tuss_code.as_str(), today_in_sao_paulo())?;
    let patient = state
        .lookups
        .patient(parsed.patient_id)
        .await?
        .ok_or_else(|| ApiError::not_found("patient_not_found", "no such patient"))?;
    let provider = state
        .lookups
        .provider(parsed.provider_id)
        .await?
        .ok_or_else(|| ApiError::not_found("provider_not_found", "no such provider"))?;
    check_registrations(&state, &patient.cpf, &provider.cnpj).await?;
    state
        .rate_limit(
            &format!("patient:{}:payments", parsed.patient_id),
            state.config.limits.payments_per_patient_per_minute,
        )
        .await?;

    let scope = principal.scope();
    let claim = match state.in_flight.claim(&scope, &key).await {
        Ok(Some(claim)) => claim,
        Ok(None) => {
            return Err(ApiError::conflict(
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is in progress; retry later",
            ));
        }
        Err(error) => {
            tracing::warn!(%error, "idempotency claim unavailable");
            return Err(ApiError::unavailable("the idempotency store is unavailable; retry later"));
        }
    };
    if let Some(replay) = stored_answer(&state, principal, &scope, &key, &prepared.request_hash).await? {
        return Ok(replay);
    }
    let target = IdempotencyTarget { scope, key, request_hash: prepared.request_hash.clone() };
    let mut payment = prepared.into_new_payment(patient.cpf.clone(), &provider, Some(target));
    payment.patient_name = Some(patient.name.clone());
    // The claim goes with the command: the payment's actor releases it when it is done.
    payment.claim = Some(claim);
    let created = state.runtime.submit(payment).await?;
    Ok(json_response(StatusCode::CREATED, shown_to(principal, created.body), false))
}

/// What a patient is shown of a payment: everything but the scoring decision (its score,
/// reasons, rules and model would teach someone paying with stolen data what the model looks
/// at; the outcome is in `status`). `decision` is null for them, in the payment's view and in
/// each event's copy of it; the rest is unchanged, key order too, so a replay is byte for byte
/// the first answer.
pub(crate) fn hide_decision(value: &mut serde_json::Value) {
    if let Some(object) = value.as_object_mut() {
        if let Some(decision) = object.get_mut("decision") {
            *decision = serde_json::Value::Null;
        }
        if let Some(payment) = object.get_mut("payment") {
            hide_decision(payment);
        }
    }
}

/// A stored payment answer as `principal` is shown it (see `hide_decision`).
fn shown_to(principal: Principal, body: String) -> String {
    if !matches!(principal, Principal::Patient(_)) {
        return body;
    }
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(mut value) => {
            hide_decision(&mut value);
            value.to_string()
        }
        // Not a payment's view (an error's body): nothing to hide.
        Err(_) => body,
    }
}

/// What the key's row says, under the key's claim: the stored answer to replay, a refusal, or
/// nothing (run the request). A payment whose answer a crash cut short is finished first.
async fn stored_answer(
    state: &AppState,
    principal: Principal,
    scope: &str,
    key: &str,
    request_hash: &str,
) -> Result<Option<Response>, ApiError> {
    let mismatch = || {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        )
    };
    let replay = |status: u16, body: String| -> Result<Option<Response>, ApiError> {
        let status = StatusCode::from_u16(status).map_err(ApiError::internal)?;
        Ok(Some(json_response(status, shown_to(principal, body), true)))
    };
    match state.store.idempotency_lookup(scope, key, request_hash, medpay_store::now_ms()).await? {
        StoredKey::Free => Ok(None),
        StoredKey::Replay { status, body } => replay(status, body),
        StoredKey::Mismatch => Err(mismatch()),
        StoredKey::Unfinished { payment_id } => {
            tracing::info!(%payment_id, "retry of a payment whose answer was cut short; resuming it");
            state.runtime.resume(payment_id).await?;
            match state.store.idempotency_lookup(scope, key, request_hash, medpay_store::now_ms()).await? {
                StoredKey::Replay { status, body } => replay(status, body),
                StoredKey::Mismatch => Err(mismatch()),
                StoredKey::Free | StoredKey::Unfinished { .. } => {
                    Err(ApiError::unavailable("the payment's answer is not complete yet; retry later"))
                }
            }
        }
    }
}

/// A page cursor: `<created_at_ms>_<payment id>` of the last payment seen.
fn parse_cursor(cursor: &str) -> Result<(i64, PaymentId), ApiError> {
    let invalid = || ApiError::bad_request("invalid_cursor", "before must be a next_before value from a previous page");
    let (ms, id) = cursor.split_once('_').ok_or_else(invalid)?;
    Ok((ms.parse().map_err(|_| invalid())?, id.parse().map_err(|_| invalid())?))
}

pub(crate) async fn visible_payment(
    state: &AppState,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<medpay_store::PaymentRecord, ApiError> {
    let not_found = || ApiError::not_found("payment_not_found", "no such payment");
    let Path(id) = id.map_err(rejection)?;
    let id: PaymentId = id.parse().map_err(|_| not_found())?;
    let payment = state.store.payment(id).await?.ok_or_else(not_found)?;
    let visible = match principal {
        Principal::Admin | Principal::Analyst | Principal::Person(..) => true,
        Principal::Provider(own) => payment.provider_id == own,
        Principal::Patient(own) => own.opens(payment.patient_id, payment.provider_id),
    };
    if visible { Ok(payment) } else { Err(not_found()) }
}

#[utoipa::path(get, path = "/v1/payments/{id}", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "payment id")),
    responses((status = 200, body = PaymentView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_payment(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<PaymentView>, ApiError> {
    let visible = visible_payment(&state, principal, id).await?;
    // Risk analysts see what the challenger would have scored; providers and patients do not.
    let Json(mut view) = payment_view_json(&state, visible.id, principal.require_analyst().is_ok()).await?;
    if let Principal::Patient(_) = principal {
        view.decision = None;
    }
    Ok(Json(view))
}

/// A payment as the API shows it, read from one snapshot.
pub(crate) async fn payment_json(state: &AppState, id: PaymentId) -> Result<Json<PaymentView>, ApiError> {
    payment_view_json(state, id, false).await
}

/// The same, with the challenger's shadow score on its decision when `shadow`.
async fn payment_view_json(state: &AppState, id: PaymentId, shadow: bool) -> Result<Json<PaymentView>, ApiError> {
    let (payment, decision, charge) = state
        .store
        .payment_view(id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment_not_found", "no such payment"))?;
    let mut view = PaymentView::new(&payment, decision.as_ref(), charge.as_ref());
    view.procedure_term = state.catalogue.term(payment.tuss_code.as_str());
    if shadow {
        view.decision = view.decision.zip(decision.as_ref()).map(|(shown, record)| shown.with_shadow(record));
    }
    Ok(Json(view))
}

#[utoipa::path(get, path = "/v1/payments/{id}/events", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "payment id"), EventQuery),
    responses((status = 200, body = EventList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_events(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Json<EventList>, ApiError> {
    let Query(query) = query.map_err(rejection)?;
    let payment = visible_payment(&state, principal, id).await?;
    let events =
        state.store.events(payment.id, query.after.unwrap_or(0), query.limit.unwrap_or(EVENTS_PAGE_DEFAULT)).await?;
    let mut data: Vec<EventView> = events.iter().map(EventView::new).collect();
    if let Principal::Patient(_) = principal {
        for event in &mut data {
            hide_decision(&mut event.data);
        }
    }
    Ok(Json(EventList { data }))
}

#[utoipa::path(get, path = "/v1/payments", tag = "payments", security(("bearer" = [])), params(PaymentQuery),
    responses((status = 200, body = PaymentList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_payments(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<PaymentQuery>, QueryRejection>,
) -> Result<Json<PaymentList>, ApiError> {
    let Query(query) = query.map_err(rejection)?;
    let patient_id: Option<PatientId> = query
        .patient_id
        .filter(|id| !id.is_empty())
        .map(|id| {
            id.parse().map_err(|_| ApiError::bad_request("invalid_patient_id", "patient_id must be a patient id"))
        })
        .transpose()?;
    let provider_id: Option<ProviderId> = query
        .provider_id
        .filter(|id| !id.is_empty())
        .map(|id| {
            id.parse().map_err(|_| ApiError::bad_request("invalid_provider_id", "provider_id must be a provider id"))
        })
        .transpose()?;
    // Each caller's filter is narrowed to what it may see; asking for someone else's is an empty page.
    let (patient_id, provider_id) = match principal {
        Principal::Admin | Principal::Analyst | Principal::Person(..) => (patient_id, provider_id),
        Principal::Provider(own) if provider_id.is_some_and(|asked| asked != own) => {
            return Ok(Json(PaymentList { data: Vec::new(), next_before: None }));
        }
        Principal::Provider(own) => (patient_id, Some(own)),
        Principal::Patient(own)
            if patient_id.is_some_and(|asked| asked != own.patient)
                || own.provider.is_some_and(|scope| provider_id.is_some_and(|asked| asked != scope)) =>
        {
            return Ok(Json(PaymentList { data: Vec::new(), next_before: None }));
        }
        Principal::Patient(own) => (Some(own.patient), own.provider.or(provider_id)),
    };
    let limit = query.limit.unwrap_or(PAYMENTS_PAGE_DEFAULT).clamp(1, medpay_store::PAYMENTS_PAGE_MAX);
    let before = query.before.as_deref().map(parse_cursor).transpose()?;
    let filter = PaymentFilter { patient_id, provider_id, before, limit };
    let payments = state.store.list_payments(&filter).await?;
    let full_page = i64::try_from(payments.len()).unwrap_or(i64::MAX) == limit;
    let next_before = if full_page {
        payments.last().map(|payment| format!("{}_{}", payment.created_at_ms, payment.id))
    } else {
        None
    };
    Ok(Json(PaymentList { data: payments.iter().map(PaymentSummary::new).collect(), next_before }))
}

#[cfg(test)]
mod tests {
    use super::prepare;

    fn body(amount: &str, installments: &str) -> String {
        format!(
            r#"{{"patient_id": "01a23448-d7bd-7341-903c-98618e9296d5", "provider_id": "01a23448-d7a2-73c2-b007-ef706885da71",
                "procedure": {{"tuss_code": "10101012", "description": "Consulta"}}, "amount_centavos": {amount},
                "method": "pix", "installments": {installments}, "device": {{"id": "phone", "ip": "200.100.50.25"}}}}"#
        )
    }

    #[test]
    fn integral_numbers_written_with_a_fraction_are_the_same_request() {
        let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        let plain = prepare(body("15000", "3").as_bytes(), day).unwrap();
        let written = prepare(body("15000.0", "3.0").as_bytes(), day).unwrap();
        assert_eq!(plain.request_hash, written.request_hash);
        let error = prepare(body("15000.5", "3").as_bytes(), day).err().expect("half a centavo is refused");
        assert_eq!((error.status.as_u16(), error.code), (400, "invalid_request"));
    }
}

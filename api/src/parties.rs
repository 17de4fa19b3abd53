//! Providers and patients.

use crate::auth::{PATIENT_TOKEN_PREFIX, PROVIDER_KEY_PREFIX, Principal, new_secret};
use crate::dto::{CreatePatient, CreateProvider, PatientView, ProviderView};
use crate::error::{ApiError, ErrorBody, rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use medpay_models::{BasisPoints, Cnpj, Cpf, FailMode, PatientId, ProviderId};
use medpay_store::{PatientRecord, ProviderRecord, StoreError};

const NAME_LENGTH_MAX: usize = 120;
const EMAIL_LENGTH_MAX: usize = 254;
const PHONE_DIGITS_MIN: usize = 10;
const PHONE_LENGTH_MAX: usize = 20;
/// Largest per-payment limit a provider may set: R$ 1.000.000,00.
const PROVIDER_MAX_AMOUNT_CENTAVOS: i64 = 100_000_000;

fn name(raw: &str) -> Result<String, ApiError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.chars().count() > NAME_LENGTH_MAX || trimmed.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("name must have 1 to {NAME_LENGTH_MAX} printable characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

fn email(raw: &str) -> Result<String, ApiError> {
    let trimmed = raw.trim();
    let well_formed = trimmed.len() <= EMAIL_LENGTH_MAX
        && trimmed.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !trimmed.chars().any(|c| c.is_whitespace() || c.is_control());
    if !well_formed {
        return Err(ApiError::bad_request("invalid_email", "email must look like name@domain.tld"));
    }
    Ok(trimmed.to_owned())
}

fn phone(raw: &str) -> Result<String, ApiError> {
    let trimmed = raw.trim();
    let digits = trimmed.chars().filter(char::is_ascii_digit).count();
    let allowed = trimmed.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '(' | ')' | '-'));
    if !allowed || digits < PHONE_DIGITS_MIN || trimmed.len() > PHONE_LENGTH_MAX {
        return Err(ApiError::bad_request("invalid_phone", "phone must have 10 to 15 digits, e.g. +55 11 99999-0000"));
    }
    Ok(trimmed.to_owned())
}

#[utoipa::path(post, path = "/v1/providers", tag = "providers", request_body = CreateProvider,
    security(("bearer" = [])),
    responses((status = 201, body = ProviderView, description = "created; the API key is shown once"),
               (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
               (status = 409, body = ErrorBody, description = "a provider with this CNPJ exists")))]
pub async fn create_provider(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<CreateProvider>, JsonRejection>,
) -> Result<(StatusCode, Json<ProviderView>), ApiError> {
    principal.require_admin()?;
    let Json(body) = body.map_err(rejection)?;
    let cnpj: Cnpj = body
        .cnpj
        .parse()
        .map_err(|error: medpay_models::DocumentError| ApiError::bad_request("invalid_cnpj", error.to_string()))?;
    let fee_bps = BasisPoints::new(body.fee_bps)
        .ok_or_else(|| ApiError::bad_request("invalid_fee", "fee_bps must be between 0 and 10000"))?;
    let score_fail_mode: FailMode = body
        .score_fail_mode
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_fail_mode", "score_fail_mode must be open or closed"))?;
    if !(1..=PROVIDER_MAX_AMOUNT_CENTAVOS).contains(&body.max_amount_centavos) {
        return Err(ApiError::bad_request(
            "invalid_amount",
            format!("max_amount_centavos must be between 1 and {PROVIDER_MAX_AMOUNT_CENTAVOS}"),
        ));
    }
    if !(body.review_score_min <= body.decline_score_min && body.decline_score_min <= 1_000) {
        return Err(ApiError::bad_request(
            "invalid_thresholds",
            "review_score_min ≤ decline_score_min ≤ 1000 is required",
        ));
    }
    let record = ProviderRecord {
        id: ProviderId::new(),
        name: name(&body.name)?,
        cnpj,
        fee_bps,
        escrow: body.escrow,
        score_fail_mode,
        max_amount_centavos: body.max_amount_centavos,
        review_score_min: body.review_score_min,
        decline_score_min: body.decline_score_min,
        review_time_limit_hours: review_time_limit(body.review_time_limit_hours)?,
        created_at_ms: medpay_store::now_ms(),
    };
    let api_key = new_secret(PROVIDER_KEY_PREFIX);
    match state.store.insert_provider(&record, &medpay_store::sha256_hex(api_key.as_bytes())).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict("provider_exists", "a provider with this CNPJ exists"));
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(provider_id = %record.id, cnpj = %record.cnpj.masked(), "provider created");
    Ok((StatusCode::CREATED, Json(ProviderView::new(&record, Some(api_key)))))
}

#[utoipa::path(post, path = "/v1/patients", tag = "patients", request_body = CreatePatient,
    security(("bearer" = [])),
    responses((status = 201, body = PatientView, description = "created; the patient's token is shown once"),
               (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
               (status = 409, body = ErrorBody, description = "a patient with this CPF exists")))]
pub async fn create_patient(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<CreatePatient>, JsonRejection>,
) -> Result<(StatusCode, Json<PatientView>), ApiError> {
    let provider = match principal {
        Principal::Admin | Principal::Person(_, crate::auth::Role::Admin) => None,
        Principal::Provider(id) => Some(id),
        Principal::Patient(_) | Principal::Analyst | Principal::Person(..) => {
            return Err(ApiError::forbidden("patients are registered by the admin or a provider"));
        }
    };
    let Json(body) = body.map_err(rejection)?;
    let cpf: Cpf = body
        .cpf
        .parse()
        .map_err(|error: medpay_models::DocumentError| ApiError::bad_request("invalid_cpf", error.to_string()))?;
    let record = PatientRecord {
        id: PatientId::new(),
        name: name(&body.name)?,
        cpf,
        email: email(&body.email)?,
        phone: phone(&body.phone)?,
        created_at_ms: medpay_store::now_ms(),
    };
    let token = new_secret(PATIENT_TOKEN_PREFIX);
    match state.store.insert_patient(&record, &medpay_store::sha256_hex(token.as_bytes()), provider).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict("patient_exists", "a patient with this CPF exists"));
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(patient_id = %record.id, cpf = %record.cpf.masked(), "patient created");
    Ok((StatusCode::CREATED, Json(PatientView::new(&record, Some(token)))))
}

#[utoipa::path(get, path = "/v1/patients/{id}", tag = "patients", security(("bearer" = [])),
    params(("id" = String, Path, description = "patient id")),
    responses((status = 200, body = PatientView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_patient(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<PatientView>, ApiError> {
    let not_found = || ApiError::not_found("patient_not_found", "no such patient");
    let Path(id) = id.map_err(rejection)?;
    let id: PatientId = id.parse().map_err(|_| not_found())?;
    let visible = match principal {
        Principal::Admin | Principal::Analyst | Principal::Person(..) => true,
        Principal::Patient(own) => own == id,
        Principal::Provider(provider) => state.store.is_linked(provider, id).await?,
    };
    if !visible {
        return Err(not_found());
    }
    let record = state.store.patient(id).await?.ok_or_else(not_found)?;
    Ok(Json(PatientView::new(&record, None)))
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Balance {
    /// What the provider can be paid out (ledger account `provider_available`).
    pub available_centavos: i64,
    /// Held in escrow until procedures are confirmed (ledger account `provider_escrow`).
    pub held_centavos: i64,
    /// The provider's share (after the platform fee) of charges issued and not paid yet, and of
    /// approved payments not charged yet.
    pub pending_centavos: i64,
}

#[utoipa::path(get, path = "/v1/providers/{id}/balance", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "provider id, or `me` with a provider's key")),
    responses((status = 200, body = Balance, description = "derived from the ledger and the payments, never stored"),
               (status = 404, body = ErrorBody)))]
pub async fn balance(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Balance>, ApiError> {
    let not_found = || ApiError::not_found("provider_not_found", "no such provider");
    let Path(id) = id.map_err(rejection)?;
    let provider: ProviderId = match (principal, id.as_str()) {
        (Principal::Provider(own), "me") => own,
        (_, raw) => raw.parse().map_err(|_| not_found())?,
    };
    let visible = match principal {
        Principal::Admin | Principal::Analyst | Principal::Person(..) => true,
        Principal::Provider(own) => own == provider,
        Principal::Patient(_) => false,
    };
    if !visible {
        return Err(not_found());
    }
    state.store.provider(provider).await?.ok_or_else(not_found)?;
    // Credit balances are negative in the ledger (debit positive): the provider is owed -sum.
    let available =
        state.store.account_balance(&medpay_models::Account::ProviderAvailable(provider).to_string()).await?;
    let held = state.store.account_balance(&medpay_models::Account::ProviderEscrow(provider).to_string()).await?;
    let mut pending = medpay_models::Money::ZERO;
    for (amount, fee_bps) in state.store.provider_pending(provider).await? {
        let amount = medpay_models::Money::from_centavos(amount);
        let fee = medpay_models::BasisPoints(u32::try_from(fee_bps).map_err(ApiError::internal)?);
        let share = amount.checked_sub(amount.share(fee).map_err(ApiError::internal)?).map_err(ApiError::internal)?;
        pending = pending.checked_add(share).map_err(ApiError::internal)?;
    }
    Ok(Json(Balance { available_centavos: -available, held_centavos: -held, pending_centavos: pending.centavos() }))
}

fn review_time_limit(hours: u32) -> Result<u32, ApiError> {
    (hours <= medpay_store::REVIEW_TIME_LIMIT_HOURS_MAX).then_some(hours).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_review_time_limit",
            format!("review_time_limit_hours must be between 0 and {}", medpay_store::REVIEW_TIME_LIMIT_HOURS_MAX),
        )
    })
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProviderRisk {
    /// Hours (0 to 720) a payment sent to review waits for an analyst before the fail mode decides.
    pub review_time_limit_hours: Option<u32>,
    pub review_score_min: Option<u16>,
    pub decline_score_min: Option<u16>,
    /// `open` or `closed`.
    pub score_fail_mode: Option<String>,
    pub max_amount_centavos: Option<i64>,
}

#[utoipa::path(patch, path = "/v1/providers/{id}", tag = "providers", security(("bearer" = [])), request_body = UpdateProviderRisk,
    params(("id" = String, Path, description = "provider id")),
    responses((status = 200, body = ProviderView, description = "in force from the provider's next decision"),
               (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_provider_risk(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<UpdateProviderRisk>, JsonRejection>,
) -> Result<Json<ProviderView>, ApiError> {
    principal.require_analyst()?;
    let not_found = || ApiError::not_found("provider_not_found", "no such provider");
    let Path(id) = id.map_err(rejection)?;
    let id: ProviderId = id.parse().map_err(|_| not_found())?;
    let Json(body) = body.map_err(rejection)?;
    let mut record = state.store.provider(id).await?.ok_or_else(not_found)?;
    if let Some(mode) = body.score_fail_mode {
        record.score_fail_mode = mode
            .parse()
            .map_err(|_| ApiError::bad_request("invalid_fail_mode", "score_fail_mode must be open or closed"))?;
    }
    if let Some(max) = body.max_amount_centavos {
        if !(1..=PROVIDER_MAX_AMOUNT_CENTAVOS).contains(&max) {
            return Err(ApiError::bad_request(
                "invalid_amount",
                format!("max_amount_centavos must be between 1 and {PROVIDER_MAX_AMOUNT_CENTAVOS}"),
            ));
        }
        record.max_amount_centavos = max;
    }
    if let Some(hours) = body.review_time_limit_hours {
        record.review_time_limit_hours = review_time_limit(hours)?;
    }
    record.review_score_min = body.review_score_min.unwrap_or(record.review_score_min);
    record.decline_score_min = body.decline_score_min.unwrap_or(record.decline_score_min);
    if !(record.review_score_min <= record.decline_score_min && record.decline_score_min <= 1_000) {
        return Err(ApiError::bad_request(
            "invalid_thresholds",
            "review_score_min ≤ decline_score_min ≤ 1000 is required",
        ));
    }
    if !state.store.update_provider_risk(&record).await? {
        return Err(not_found());
    }
    state.runtime.reload_provider(id).await?;
    tracing::info!(provider_id = %id, review = record.review_score_min, decline = record.decline_score_min,
        fail_mode = record.score_fail_mode.as_str(), max = record.max_amount_centavos, "provider risk settings changed");
    Ok(Json(ProviderView::new(&record, None)))
}

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

pub(crate) const NAME_LENGTH_MAX: usize = 120;
pub(crate) const EMAIL_LENGTH_MAX: usize = 254;
const PHONE_DIGITS_MIN: usize = 10;
pub(crate) const PHONE_LENGTH_MAX: usize = 20;
/// Largest per-payment limit a provider may set: R$ 1.000.000,00.
pub(crate) const PROVIDER_MAX_AMOUNT_CENTAVOS: i64 = 100_000_000;

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

/// An e-mail address as the API takes it (patients and people): trimmed, one `@`, a dotted domain.
pub(crate) fn email(raw: &str) -> Result<String, ApiError> {
    let trimmed = raw.trim();
    let well_formed = trimmed.len() <= EMAIL_LENGTH_MAX
        && trimmed.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
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
               (status = 409, body = ErrorBody, description = "`patient_exists`: the provider (or, to the admin, anyone) has registered this CPF already; a CPF registered only elsewhere is a 201 that tells nothing of it")))]
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
        erased_at_ms: None,
    };
    let token = new_secret(PATIENT_TOKEN_PREFIX);
    let token_hash = medpay_store::sha256_hex(token.as_bytes());
    let exists = || ApiError::conflict("patient_exists", "a patient with this CPF exists");
    match state.store.insert_patient(&record, &token_hash, provider).await {
        Ok(()) => {}
        // The CPF is registered: the admin is told so; a provider is told only whether it has the
        // patient already. Otherwise it gets what a new registration gets (its own view of the
        // patient, from its link's time, and a token scoped to it), and learns nothing of the
        // registration elsewhere.
        Err(StoreError::Conflict(_)) => {
            let Some(provider) = provider else { return Err(exists()) };
            let known = match state.store.register_known_patient(provider, &record, &token_hash).await {
                Ok(Some(known)) => known,
                // No patient has the CPF: the first conflict was another unique column, told as
                // the conflict it was.
                Ok(None) | Err(StoreError::Conflict(_)) => return Err(exists()),
                Err(error) => return Err(error.into()),
            };
            let view = state.store.provider_patient(provider, known).await?.ok_or_else(exists)?;
            tracing::info!(patient_id = %known, provider_id = %provider, cpf = %record.cpf.masked(), "patient registered by another provider: linked with its own view");
            return Ok((StatusCode::CREATED, Json(PatientView::new(&view, Some(token)))));
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
    if let Principal::Patient(own) = principal
        && own.patient != id
    {
        return Err(not_found());
    }
    // A provider sees its own view of the patient; so does a credential scoped to it.
    let record = state.store.patient_seen_by(principal.seen_through(), id).await?.ok_or_else(not_found)?;
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
    if let Principal::Patient(_) = principal {
        return Err(ApiError::forbidden("a provider's balance is its own and the staff's to read"));
    }
    let Path(id) = id.map_err(rejection)?;
    let provider = provider_in_path(principal, &id)?;
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
    #[schema(schema_with = crate::schema::review_hours_or_null)]
    pub review_time_limit_hours: Option<u32>,
    #[schema(schema_with = crate::schema::score_or_null)]
    pub review_score_min: Option<u16>,
    #[schema(schema_with = crate::schema::score_or_null)]
    pub decline_score_min: Option<u16>,
    #[schema(schema_with = crate::schema::fail_mode_or_null)]
    pub score_fail_mode: Option<String>,
    #[schema(schema_with = crate::schema::provider_max_amount_or_null)]
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
    let risk = |record: &ProviderRecord| {
        serde_json::json!({
            "score_fail_mode": record.score_fail_mode.as_str(), "max_amount_centavos": record.max_amount_centavos,
            "review_score_min": record.review_score_min, "decline_score_min": record.decline_score_min,
            "review_time_limit_hours": record.review_time_limit_hours,
        })
    };
    let before = risk(&record);
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
    let target = format!("provider:{id}");
    let audit =
        crate::people::audit_entry(principal, "provider.risk.update", &target, Some(before), Some(risk(&record)));
    if !state.store.update_provider_risk(&record, &audit).await? {
        return Err(not_found());
    }
    state.runtime.reload_provider(id).await?;
    tracing::info!(provider_id = %id, review = record.review_score_min, decline = record.decline_score_min,
        fail_mode = record.score_fail_mode.as_str(), max = record.max_amount_centavos, "provider risk settings changed");
    Ok(Json(ProviderView::new(&record, None)))
}

/// The provider a `/v1/providers/{id}/…` path names: `me` is the calling provider's own.
fn provider_in_path(principal: Principal, id: &str) -> Result<ProviderId, ApiError> {
    match (principal, id) {
        (Principal::Provider(own), "me") => Ok(own),
        (_, raw) => raw.parse().map_err(|_| ApiError::not_found("provider_not_found", "no such provider")),
    }
}

/// Keys that work at once per provider.
pub const PROVIDER_KEYS_ACTIVE_MAX: i64 = 5;
pub(crate) const KEY_LABEL_LENGTH_MAX: usize = 80;

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProviderKey {
    #[schema(schema_with = crate::schema::key_label)]
    pub label: String,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ProviderKeyView {
    pub id: String,
    pub label: String,
    pub created_by: String,
    pub created_at: String,
    /// When it stopped working; none while it works.
    pub revoked_at: Option<String>,
    /// The key itself: shown once, in the answer that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl ProviderKeyView {
    fn new(key: &medpay_store::ProviderKey, api_key: Option<String>) -> ProviderKeyView {
        ProviderKeyView {
            id: key.id.clone(),
            label: key.label.clone(),
            created_by: key.created_by.clone(),
            created_at: crate::dto::timestamp(key.created_at_ms),
            revoked_at: key.revoked_at_ms.map(crate::dto::timestamp),
            api_key,
        }
    }
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ProviderKeyList {
    pub data: Vec<ProviderKeyView>,
}

/// The provider a key route is about: its own (`me` or its id) for a provider's key, any for the
/// admin; nobody else's.
pub(crate) fn key_owner(principal: Principal, id: &str) -> Result<ProviderId, ApiError> {
    let provider = provider_in_path(principal, id)?;
    match principal {
        Principal::Provider(own) if own == provider => Ok(provider),
        Principal::Provider(_) => Err(ApiError::not_found("provider_not_found", "no such provider")),
        other => {
            other.require_admin()?;
            Ok(provider)
        }
    }
}

#[utoipa::path(post, path = "/v1/providers/{id}/keys", tag = "providers", request_body = CreateProviderKey, security(("bearer" = [])),
    params(("id" = String, Path, description = "provider id, or `me` with a provider's key")),
    responses((status = 201, body = ProviderKeyView, description = "a new key that works at once beside the others; shown once"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`too_many_keys`: five keys work already; revoke one first")))]
pub async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<CreateProviderKey>, JsonRejection>,
) -> Result<(StatusCode, Json<ProviderKeyView>), ApiError> {
    let Path(id) = id.map_err(rejection)?;
    let provider = key_owner(principal, &id)?;
    let Json(body) = body.map_err(rejection)?;
    let label = body.label.trim();
    if label.is_empty() || label.chars().count() > KEY_LABEL_LENGTH_MAX {
        return Err(ApiError::bad_request(
            "invalid_label",
            format!("label has 1 to {KEY_LABEL_LENGTH_MAX} characters"),
        ));
    }
    state
        .store
        .provider(provider)
        .await?
        .ok_or_else(|| ApiError::not_found("provider_not_found", "no such provider"))?;
    let api_key = new_secret(PROVIDER_KEY_PREFIX);
    let key = medpay_store::ProviderKey {
        id: uuid::Uuid::now_v7().to_string(),
        provider_id: provider,
        label: label.to_owned(),
        created_by: principal.actor(),
        created_at_ms: medpay_store::now_ms(),
        revoked_at_ms: None,
    };
    let hash = medpay_store::sha256_hex(api_key.as_bytes());
    let after = serde_json::json!({"key_id": key.id, "label": key.label});
    let entry = crate::people::audit_entry(
        principal,
        "provider.key.create",
        &format!("provider:{provider}"),
        None,
        Some(after),
    );
    match state.store.insert_provider_key(&key, &hash, PROVIDER_KEYS_ACTIVE_MAX, &entry).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(
                "too_many_keys",
                format!("a provider has at most {PROVIDER_KEYS_ACTIVE_MAX} keys that work; revoke one first"),
            ));
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(provider_id = %provider, key_id = %key.id, by = %key.created_by, "provider key created");
    Ok((StatusCode::CREATED, Json(ProviderKeyView::new(&key, Some(api_key)))))
}

#[utoipa::path(get, path = "/v1/providers/{id}/keys", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "provider id, or `me` with a provider's key")),
    responses((status = 200, body = ProviderKeyList, description = "every key, newest first, never the key itself"),
        (status = 404, body = ErrorBody)))]
pub async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ProviderKeyList>, ApiError> {
    let Path(id) = id.map_err(rejection)?;
    let provider = key_owner(principal, &id)?;
    let keys = state.store.provider_keys(provider).await?;
    Ok(Json(ProviderKeyList { data: keys.iter().map(|key| ProviderKeyView::new(key, None)).collect() }))
}

#[utoipa::path(delete, path = "/v1/providers/{id}/keys/{key_id}", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "provider id, or `me` with a provider's key"),
        ("key_id" = String, Path, description = "the key's id (not the key)")),
    responses((status = 204, description = "revoked: it authenticates nothing from now on"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`last_key`: the only key that works is not revoked")))]
pub async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path((id, key_id)) = ids.map_err(rejection)?;
    let provider = key_owner(principal, &id)?;
    let before = serde_json::json!({"key_id": key_id});
    let entry = crate::people::audit_entry(
        principal,
        "provider.key.revoke",
        &format!("provider:{provider}"),
        Some(before),
        None,
    );
    let hash = match state.store.revoke_provider_key(provider, &key_id, &entry).await {
        Ok(Some(hash)) => hash,
        Ok(None) => return Err(ApiError::not_found("key_not_found", "no such key that works")),
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(
                "last_key",
                "this is the provider's only key that works; create another first",
            ));
        }
        Err(error) => return Err(error.into()),
    };
    // Forgotten here at once; other nodes' caches let it go within CREDENTIAL_CACHE_TTL_MS.
    state.lookups.forget_provider_key(&hash);
    tracing::warn!(provider_id = %provider, %key_id, by = %principal.actor(), "provider key revoked");
    Ok(StatusCode::NO_CONTENT)
}

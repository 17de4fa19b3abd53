//! Checkout links: how a patient chooses a provider that has not registered them. The provider
//! makes a link (a secret shown once; only its SHA-256 is kept) and gives it to the patient (on its
//! site, in a message); the patient, signed in with their own token, opens it and is linked: they
//! may then pay the provider, and the provider may see them. Without a registration or a link a
//! patient's payment to a provider is 404 `provider_not_found`.

use crate::auth::{Principal, new_secret};
use crate::dto::timestamp;
use crate::error::{ApiError, ErrorBody, rejection};
use crate::people::DAY_MS;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

const CHECKOUT_PREFIX: &str = "mpc_";
const LINK_DAYS_DEFAULT: i64 = 30;
pub(crate) const LINK_DAYS_MAX: i64 = 365;
const LINK_LABEL_LENGTH_MAX: usize = 80;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCheckoutLink {
    #[schema(schema_with = crate::schema::key_label)]
    pub label: String,
    #[serde(default)]
    #[schema(schema_with = crate::schema::link_days)]
    pub expires_in_days: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutLinkView {
    pub id: String,
    pub label: String,
    pub expires_at: String,
    /// The link's secret, shown once: the patient opens `POST /v1/checkout/{token}` with it.
    pub token: String,
}

#[utoipa::path(post, path = "/v1/providers/{id}/checkout-links", tag = "providers", request_body = CreateCheckoutLink,
    security(("bearer" = [])), params(("id" = String, Path, description = "provider id, or `me` with a provider's key")),
    responses((status = 201, body = CheckoutLinkView, description = "a link to give patients; its token is shown once"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn create_link(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<CreateCheckoutLink>, JsonRejection>,
) -> Result<(StatusCode, Json<CheckoutLinkView>), ApiError> {
    let Path(id) = id.map_err(rejection)?;
    let provider = crate::parties::key_owner(principal, &id)?;
    let Json(body) = body.map_err(rejection)?;
    let label = body.label.trim();
    if label.is_empty() || label.chars().count() > LINK_LABEL_LENGTH_MAX || label.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_label",
            format!("label has 1 to {LINK_LABEL_LENGTH_MAX} printable characters"),
        ));
    }
    let days = body.expires_in_days.unwrap_or(LINK_DAYS_DEFAULT);
    if !(1..=LINK_DAYS_MAX).contains(&days) {
        return Err(ApiError::bad_request("invalid_expiry", format!("expires_in_days is 1 to {LINK_DAYS_MAX}")));
    }
    state
        .lookups
        .provider(provider)
        .await?
        .ok_or_else(|| ApiError::not_found("provider_not_found", "no such provider"))?;
    let now = medpay_store::now_ms();
    let token = new_secret(CHECKOUT_PREFIX);
    let link = medpay_store::CheckoutLink {
        id: uuid::Uuid::now_v7().to_string(),
        provider_id: provider,
        label: label.to_owned(),
        created_by: principal.actor(),
        created_at_ms: now,
        expires_at_ms: now + days * DAY_MS,
    };
    state.store.insert_checkout_link(&link, &medpay_store::sha256_hex(token.as_bytes())).await?;
    tracing::info!(provider_id = %provider, link_id = %link.id, days, "checkout link created");
    Ok((
        StatusCode::CREATED,
        Json(CheckoutLinkView { id: link.id, label: link.label, expires_at: timestamp(link.expires_at_ms), token }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutOpened {
    pub provider_id: String,
    pub provider_name: String,
}

#[utoipa::path(post, path = "/v1/checkout/{token}", tag = "patients", security(("bearer" = [])),
    params(("token" = String, Path, description = "the checkout link's token, as the provider gave it")),
    responses((status = 200, body = CheckoutOpened, description = "the patient chose this provider: they may pay it from now on"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "`credential_scoped`: a credential a provider was handed opens no other provider's link"),
        (status = 404, body = ErrorBody, description = "`checkout_link_not_found`: unknown or expired")))]
pub async fn open_link(
    State(state): State<AppState>,
    principal: Principal,
    token: Result<Path<String>, PathRejection>,
) -> Result<Json<CheckoutOpened>, ApiError> {
    let Principal::Patient(patient) = principal else {
        return Err(ApiError::forbidden("a checkout link is opened by a patient, with their own token"));
    };
    let Path(token) = token.map_err(rejection)?;
    let not_found = || ApiError::not_found("checkout_link_not_found", "no such checkout link, or it expired");
    if !token.starts_with(CHECKOUT_PREFIX) || token.len() > 128 {
        return Err(not_found());
    }
    let hash = medpay_store::sha256_hex(token.as_bytes());
    // A credential a provider was handed chooses no other provider: whoever holds it (the
    // provider too) would otherwise open the patient's data to a provider of its choosing.
    let opened = state.store.open_checkout_link(&hash, patient, medpay_store::now_ms()).await?.ok_or_else(not_found)?;
    let medpay_store::LinkOpening::Linked(provider) = opened else {
        return Err(crate::auth::scoped_refusal(
            "choosing another provider takes the patient's own sign-in (a link from MedPay support), not one a provider gave",
        ));
    };
    let record = state.lookups.provider(provider).await?.ok_or_else(not_found)?;
    tracing::info!(provider_id = %provider, patient_id = %patient.patient, "checkout link opened: patient linked");
    Ok(Json(CheckoutOpened { provider_id: provider.to_string(), provider_name: record.name.clone() }))
}

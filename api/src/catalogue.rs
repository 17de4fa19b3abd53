//! The TUSS catalogue in memory (issue 14): with one loaded (`medpay catalogue import`), a payment
//! names a code the catalogue holds and that is valid today, and payments show the code's
//! official term. Without one, any well-formed code is taken, as before. Each node reads the
//! catalogue again when its version in the store changes (with the rules, every few seconds).

use crate::error::ApiError;
use axum::http::StatusCode;
use medpay_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

struct Entry {
    term: String,
    valid_from: String,
    valid_until: String,
}

#[derive(Default)]
struct Loaded {
    version: Option<String>,
    entries: HashMap<String, Entry>,
}

#[derive(Default)]
pub struct Catalogue {
    loaded: RwLock<Arc<Loaded>>,
}

impl Catalogue {
    fn current(&self) -> Arc<Loaded> {
        self.loaded.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Reads the store's catalogue when its version differs from the one held.
    pub async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let version = store.catalogue_version().await?;
        if version == self.current().version {
            return Ok(());
        }
        let entries: HashMap<String, Entry> = store
            .catalogue()
            .await?
            .into_iter()
            .map(|entry| {
                (entry.code, Entry { term: entry.term, valid_from: entry.valid_from, valid_until: entry.valid_until })
            })
            .collect();
        tracing::info!(codes = entries.len(), version = version.as_deref().unwrap_or(""), "TUSS catalogue loaded");
        *self.loaded.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(Loaded { version, entries });
        Ok(())
    }

    /// The code's official term, when a catalogue is loaded and holds it.
    pub fn term(&self, code: &str) -> Option<String> {
        self.current().entries.get(code).map(|entry| entry.term.clone())
    }

    /// Whether a payment may name `code` on `today`: 422 `unknown_procedure` for a code
    /// the loaded catalogue does not hold, `procedure_not_valid` outside its validity.
    pub fn check(&self, code: &str, today: chrono::NaiveDate) -> Result<(), ApiError> {
        let loaded = self.current();
        if loaded.entries.is_empty() {
            return Ok(());
        }
        let today = today.to_string();
        let today = today.as_str();
        let Some(entry) = loaded.entries.get(code) else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_procedure",
                format!("the TUSS code {code} is not in the catalogue"),
            ));
        };
        if !entry.valid_from.is_empty() && today < entry.valid_from.as_str() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "procedure_not_valid",
                format!("the TUSS code {code} ({}) is valid only from {}", entry.term, entry.valid_from),
            ));
        }
        if !entry.valid_until.is_empty() && today > entry.valid_until.as_str() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "procedure_not_valid",
                format!("the TUSS code {code} ({}) was valid until {}", entry.term, entry.valid_until),
            ));
        }
        Ok(())
    }
}

/// The most codes a price list holds.
pub const PRICES_MAX: usize = 5_000;

#[derive(Debug, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// 8-digit TUSS code.
    #[schema(pattern = "^[0-9]{8}$")]
    pub tuss_code: String,
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub price_centavos: i64,
}

#[derive(Debug, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceList {
    /// The whole list (it replaces the one kept), at most 5,000 codes, each once.
    #[schema(max_items = 5000)]
    pub prices: Vec<PriceEntry>,
}

#[utoipa::path(put, path = "/v1/providers/{id}/prices", tag = "providers", request_body = PriceList,
    security(("bearer" = [])), params(("id" = String, Path, description = "provider id, or `me` with a provider's key")),
    responses((status = 200, body = PriceList, description = "the provider's price list, now in force for its next payments' scoring"),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody, description = "`unknown_procedure`: a code the loaded TUSS catalogue does not hold")))]
pub async fn put_prices(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    principal: crate::auth::Principal,
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    body: Result<axum::Json<PriceList>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::Json<PriceList>, ApiError> {
    let axum::extract::Path(id) = id.map_err(crate::error::rejection)?;
    let provider = crate::parties::key_owner(principal, &id)?;
    let axum::Json(body) = body.map_err(crate::error::rejection)?;
    if body.prices.len() > PRICES_MAX {
        return Err(ApiError::bad_request("too_many_prices", format!("a price list has at most {PRICES_MAX} codes")));
    }
    let mut seen = std::collections::HashSet::new();
    let mut prices = Vec::with_capacity(body.prices.len());
    for entry in &body.prices {
        if entry.tuss_code.parse::<medpay_models::TussCode>().is_err() {
            return Err(ApiError::bad_request(
                "invalid_tuss_code",
                format!("{:?} is not an 8-digit TUSS code", entry.tuss_code),
            ));
        }
        if !(1..=medpay_models::installments::AMOUNT_MAX_CENTAVOS).contains(&entry.price_centavos) {
            return Err(ApiError::bad_request(
                "invalid_price",
                format!("the price of {} is 1 to 100000000 centavos", entry.tuss_code),
            ));
        }
        if !seen.insert(entry.tuss_code.clone()) {
            return Err(ApiError::bad_request("duplicate_code", format!("{} is listed twice", entry.tuss_code)));
        }
        // With a catalogue loaded, only its codes (their validity aside: an old price may stay).
        if !state.catalogue.current().entries.is_empty() && state.catalogue.term(&entry.tuss_code).is_none() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_procedure",
                format!("the TUSS code {} is not in the catalogue", entry.tuss_code),
            ));
        }
        prices.push((entry.tuss_code.clone(), entry.price_centavos));
    }
    state
        .lookups
        .provider(provider)
        .await?
        .ok_or_else(|| ApiError::not_found("provider_not_found", "no such provider"))?;
    let before = state.store.provider_prices(provider).await?.len();
    let audit = crate::people::audit_entry(
        principal,
        "provider.prices.replace",
        &format!("provider:{provider}"),
        Some(serde_json::json!({"codes": before})),
        Some(serde_json::json!({"codes": prices.len()})),
    );
    state.store.replace_provider_prices(provider, &prices, medpay_store::now_ms(), &audit).await?;
    state.runtime.reload_provider(provider).await?;
    tracing::info!(provider_id = %provider, codes = prices.len(), "provider price list replaced");
    Ok(axum::Json(body))
}

#[utoipa::path(get, path = "/v1/providers/{id}/prices", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "provider id, or `me` with a provider's key")),
    responses((status = 200, body = PriceList), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_prices(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    principal: crate::auth::Principal,
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<axum::Json<PriceList>, ApiError> {
    let axum::extract::Path(id) = id.map_err(crate::error::rejection)?;
    let provider = crate::parties::key_owner(principal, &id)?;
    let prices = state.store.provider_prices(provider).await?;
    Ok(axum::Json(PriceList {
        prices: prices
            .into_iter()
            .map(|(tuss_code, price_centavos)| PriceEntry { tuss_code, price_centavos })
            .collect(),
    }))
}

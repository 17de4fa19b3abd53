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

//! What the payment path reads about its parties, kept in memory: the store is asked once per
//! party, not once per request. Only facts that never change are kept forever (a patient's CPF and
//! name, a provider's CNPJ, fee and escrow choice, a provider–patient link, which are never
//! deleted); who a key belongs to is kept for a short time, so that revoking one (when keys can be
//! revoked) takes effect within `CREDENTIAL_CACHE_TTL_MS` on every node.

use medpay_models::{PatientId, ProviderId};
use medpay_store::{PatientCredential, PatientRecord, ProviderRecord, Store, StoreError};
use moka::sync::Cache;
use std::sync::Arc;
use std::time::Duration;

/// Parties of each kind kept in memory.
pub const PARTIES_CACHED_MAX: u64 = 200_000;
/// Provider–patient links kept in memory.
pub const LINKS_CACHED_MAX: u64 = 500_000;
/// Credentials (hashes of API keys and patient tokens) kept in memory, and for how long.
pub const CREDENTIALS_CACHED_MAX: u64 = 100_000;
pub const CREDENTIAL_CACHE_TTL_MS: u64 = 60_000;

pub struct Lookups {
    store: Store,
    providers: Cache<ProviderId, Arc<ProviderRecord>>,
    patients: Cache<PatientId, Arc<PatientRecord>>,
    links: Cache<(ProviderId, PatientId), ()>,
    provider_keys: Cache<String, ProviderId>,
    patient_tokens: Cache<String, PatientCredential>,
}

impl Lookups {
    pub fn new(store: Store) -> Lookups {
        fn credentials<V: Clone + Send + Sync + 'static>() -> Cache<String, V> {
            Cache::builder()
                .max_capacity(CREDENTIALS_CACHED_MAX)
                .time_to_live(Duration::from_millis(CREDENTIAL_CACHE_TTL_MS))
                .build()
        }
        Lookups {
            store,
            providers: Cache::new(PARTIES_CACHED_MAX),
            patients: Cache::new(PARTIES_CACHED_MAX),
            links: Cache::new(LINKS_CACHED_MAX),
            provider_keys: credentials(),
            patient_tokens: credentials(),
        }
    }

    /// A provider as it was registered. Its risk settings (thresholds, fail mode, limit) change:
    /// read those from the provider's session, never from here.
    pub async fn provider(&self, id: ProviderId) -> Result<Option<Arc<ProviderRecord>>, StoreError> {
        through(&self.providers, id, async { Ok(self.store.provider(id).await?.map(Arc::new)) }).await
    }

    pub async fn patient(&self, id: PatientId) -> Result<Option<Arc<PatientRecord>>, StoreError> {
        through(&self.patients, id, async { Ok(self.store.patient(id).await?.map(Arc::new)) }).await
    }

    /// Whether the provider registered or charged the patient (links are never removed, so a
    /// link seen once is kept; an absent one is asked again).
    pub async fn is_linked(&self, provider: ProviderId, patient: PatientId) -> Result<bool, StoreError> {
        let linked = self.store.is_linked(provider, patient);
        let found = through(&self.links, (provider, patient), async { Ok(linked.await?.then_some(())) }).await?;
        Ok(found.is_some())
    }

    pub async fn provider_by_key_hash(&self, hash: &str) -> Result<Option<ProviderId>, StoreError> {
        through(&self.provider_keys, hash.to_owned(), self.store.provider_id_by_key_hash(hash)).await
    }

    /// A revoked key's hash, dropped from memory at once (on this node).
    pub fn forget_provider_key(&self, hash: &str) {
        self.provider_keys.invalidate(hash);
    }

    /// A patient erased: their record read again next time, their old token refused at once (on
    /// this node; the others drop the token within `CREDENTIAL_CACHE_TTL_MS`, and hold of the
    /// record only what a payment needs, the CPF, which an erasure keeps).
    pub fn forget_patient(&self, id: PatientId, token_hashes: &[String]) {
        self.patients.invalidate(&id);
        for hash in token_hashes {
            self.patient_tokens.invalidate(hash);
        }
    }

    pub async fn patient_by_token_hash(&self, hash: &str) -> Result<Option<PatientCredential>, StoreError> {
        through(&self.patient_tokens, hash.to_owned(), self.store.patient_by_token_hash(hash)).await
    }
}

/// The cached value of `key`, or what `read` finds (kept when found; an absence is never kept).
async fn through<K, V>(
    cache: &Cache<K, V>,
    key: K,
    read: impl Future<Output = Result<Option<V>, StoreError>>,
) -> Result<Option<V>, StoreError>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    if let Some(found) = cache.get(&key) {
        return Ok(Some(found));
    }
    let found = read.await?;
    if let Some(value) = &found {
        cache.insert(key, value.clone());
    }
    Ok(found)
}

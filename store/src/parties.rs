//! Providers, patients, the links between them, and the block list.

use crate::database::{Store, StoreError};
use medpay_models::{BasisPoints, Cnpj, Cpf, FailMode, PatientId, ProviderId};
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    pub id: ProviderId,
    pub name: String,
    pub cnpj: Cnpj,
    pub fee_bps: BasisPoints,
    pub escrow: bool,
    pub score_fail_mode: FailMode,
    pub max_amount_centavos: i64,
    /// Model scores at or above this go to review.
    pub review_score_min: u16,
    /// Model scores at or above this are declined.
    pub decline_score_min: u16,
    /// Hours a payment sent to review waits for an analyst before its fail mode resolves it.
    pub review_time_limit_hours: u32,
    pub created_at_ms: i64,
}

/// Hours a payment in review waits for an analyst unless its provider says otherwise.
pub const REVIEW_TIME_LIMIT_HOURS_DEFAULT: u32 = 24;
/// The longest a provider may let a payment wait in review (30 days).
pub const REVIEW_TIME_LIMIT_HOURS_MAX: u32 = 720;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientRecord {
    pub id: PatientId,
    pub name: String,
    pub cpf: Cpf,
    pub email: String,
    pub phone: String,
    pub created_at_ms: i64,
    /// When the patient's personal data was erased (LGPD); none while it is held.
    pub erased_at_ms: Option<i64>,
}

pub(crate) fn parse_column<T: std::str::FromStr>(row: &AnyRow, column: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    let raw: String = row.try_get(column)?;
    raw.parse::<T>().map_err(|error| StoreError::corrupt(format!("{column}: {error}")))
}

/// A nullable column parsed when it holds a value.
pub(crate) fn parse_optional_column<T: std::str::FromStr>(row: &AnyRow, column: &str) -> Result<Option<T>, StoreError>
where
    T::Err: std::fmt::Display,
{
    let raw: Option<String> = row.try_get(column)?;
    raw.map(|raw| raw.parse::<T>().map_err(|error| StoreError::corrupt(format!("{column}: {error}")))).transpose()
}

const PROVIDER_COLUMNS: &str = "id, name, cnpj, fee_bps, escrow, score_fail_mode, max_amount_centavos, review_score_min, decline_score_min, review_time_limit_hours, created_at_ms";

fn provider_from_row(row: &AnyRow) -> Result<ProviderRecord, StoreError> {
    let fee_bps: i64 = row.try_get("fee_bps")?;
    let escrow: i64 = row.try_get("escrow")?;
    Ok(ProviderRecord {
        id: parse_column(row, "id")?,
        name: row.try_get("name")?,
        cnpj: parse_column(row, "cnpj")?,
        fee_bps: u32::try_from(fee_bps)
            .ok()
            .and_then(BasisPoints::new)
            .ok_or_else(|| StoreError::corrupt("fee_bps"))?,
        escrow: escrow == 1,
        score_fail_mode: parse_column(row, "score_fail_mode")?,
        max_amount_centavos: row.try_get("max_amount_centavos")?,
        review_score_min: score_column(row, "review_score_min")?,
        decline_score_min: score_column(row, "decline_score_min")?,
        review_time_limit_hours: {
            let hours: i64 = row.try_get("review_time_limit_hours")?;
            u32::try_from(hours)
                .ok()
                .filter(|hours| *hours <= REVIEW_TIME_LIMIT_HOURS_MAX)
                .ok_or_else(|| StoreError::corrupt("review_time_limit_hours"))?
        },
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn score_column(row: &AnyRow, column: &str) -> Result<u16, StoreError> {
    let value: i64 = row.try_get(column)?;
    u16::try_from(value).ok().filter(|score| *score <= 1000).ok_or_else(|| StoreError::corrupt(column))
}

fn patient_from_row(row: &AnyRow) -> Result<PatientRecord, StoreError> {
    Ok(PatientRecord {
        id: parse_column(row, "id")?,
        name: row.try_get("name")?,
        cpf: parse_column(row, "cpf")?,
        email: row.try_get("email")?,
        phone: row.try_get("phone")?,
        created_at_ms: row.try_get("created_at_ms")?,
        erased_at_ms: row.try_get("erased_at_ms")?,
    })
}

/// How many of the provider's keys work, read in `connection`'s transaction.
async fn working_keys(connection: &mut sqlx::AnyConnection, provider: ProviderId) -> Result<i64, StoreError> {
    Ok(sqlx::query("SELECT COUNT(*) AS active FROM provider_keys WHERE provider_id = $1 AND revoked_at_ms IS NULL")
        .bind(provider.to_string())
        .fetch_one(&mut *connection)
        .await?
        .try_get("active")?)
}

/// One of a provider's API keys (its hash stays in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderKey {
    pub id: String,
    pub provider_id: ProviderId,
    pub label: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl Store {
    /// Inserts a provider; a CNPJ already registered is a `Conflict("provider")`.
    pub async fn insert_provider(&self, provider: &ProviderRecord, api_key_hash: &str) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO providers (id, name, cnpj, fee_bps, escrow, score_fail_mode, max_amount_centavos, api_key_hash,
                 created_at_ms, review_score_min, decline_score_min, review_time_limit_hours)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(provider.id.to_string())
        .bind(provider.name.clone())
        .bind(provider.cnpj.as_str().to_owned())
        .bind(i64::from(provider.fee_bps.value()))
        .bind(i64::from(provider.escrow))
        .bind(provider.score_fail_mode.as_str())
        .bind(provider.max_amount_centavos)
        .bind(api_key_hash.to_owned())
        .bind(provider.created_at_ms)
        .bind(i64::from(provider.review_score_min))
        .bind(i64::from(provider.decline_score_min))
        .bind(i64::from(provider.review_time_limit_hours))
        .execute(&mut *transaction)
        .await
        .map_err(|error| StoreError::on_unique(error, "provider"))?;
        sqlx::query(
            "INSERT INTO provider_keys (id, provider_id, key_hash, label, created_by, created_at_ms)
             VALUES ($1, $2, $3, 'first key', 'admin', $4)",
        )
        .bind(format!("first-{}", provider.id))
        .bind(provider.id.to_string())
        .bind(api_key_hash.to_owned())
        .bind(provider.created_at_ms)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Adds an API key to a provider, refused (`Conflict("provider keys")`) when it holds
    /// `active_max` keys that work already.
    pub async fn insert_provider_key(
        &self,
        key: &ProviderKey,
        key_hash: &str,
        active_max: i64,
        audit: &crate::AuditEntry,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        if working_keys(&mut transaction, key.provider_id).await? >= active_max {
            return Err(StoreError::Conflict("provider keys"));
        }
        sqlx::query(
            "INSERT INTO provider_keys (id, provider_id, key_hash, label, created_by, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(key.id.clone())
        .bind(key.provider_id.to_string())
        .bind(key_hash.to_owned())
        .bind(key.label.clone())
        .bind(key.created_by.clone())
        .bind(key.created_at_ms)
        .execute(&mut *transaction)
        .await?;
        crate::people::insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// A provider's keys, newest first (without their hashes).
    pub async fn provider_keys(&self, provider: ProviderId) -> Result<Vec<ProviderKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, provider_id, label, created_by, created_at_ms, revoked_at_ms FROM provider_keys
             WHERE provider_id = $1 ORDER BY created_at_ms DESC, id",
        )
        .bind(provider.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ProviderKey {
                    id: row.try_get("id")?,
                    provider_id: parse_column(row, "provider_id")?,
                    label: row.try_get("label")?,
                    created_by: row.try_get("created_by")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    revoked_at_ms: row.try_get("revoked_at_ms")?,
                })
            })
            .collect()
    }

    /// Revokes one of the provider's keys and answers its hash (to forget it wherever it is kept
    /// in memory); `None` when there is no such working key. The last working key is not revoked
    /// (`Conflict("last key")`): a provider never locks itself out.
    pub async fn revoke_provider_key(
        &self,
        provider: ProviderId,
        key_id: &str,
        audit: &crate::AuditEntry,
    ) -> Result<Option<String>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let hash: Option<String> = sqlx::query(
            "SELECT key_hash FROM provider_keys WHERE id = $1 AND provider_id = $2 AND revoked_at_ms IS NULL",
        )
        .bind(key_id.to_owned())
        .bind(provider.to_string())
        .fetch_optional(&mut *transaction)
        .await?
        .map(|row| row.try_get("key_hash"))
        .transpose()?;
        let Some(hash) = hash else { return Ok(None) };
        if working_keys(&mut transaction, provider).await? <= 1 {
            return Err(StoreError::Conflict("last key"));
        }
        sqlx::query("UPDATE provider_keys SET revoked_at_ms = $2 WHERE id = $1")
            .bind(key_id.to_owned())
            .bind(audit.at_ms)
            .execute(&mut *transaction)
            .await?;
        crate::people::insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(Some(hash))
    }

    pub async fn provider(&self, id: ProviderId) -> Result<Option<ProviderRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {PROVIDER_COLUMNS} FROM providers WHERE id = $1"));
        let row = sqlx::query(sql).bind(id.to_string()).fetch_optional(&self.pool).await?;
        row.as_ref().map(provider_from_row).transpose()
    }

    /// Changes a provider's risk settings, with its audit entry in the same commit; false (and
    /// no entry) when there is no such provider.
    pub async fn update_provider_risk(
        &self,
        provider: &ProviderRecord,
        audit: &crate::people::AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE providers SET score_fail_mode = $2, max_amount_centavos = $3, review_score_min = $4, decline_score_min = $5,
                 review_time_limit_hours = $6
             WHERE id = $1",
        )
        .bind(provider.id.to_string())
        .bind(provider.score_fail_mode.as_str())
        .bind(provider.max_amount_centavos)
        .bind(i64::from(provider.review_score_min))
        .bind(i64::from(provider.decline_score_min))
        .bind(i64::from(provider.review_time_limit_hours))
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if updated != 1 {
            transaction.rollback().await?;
            return Ok(false);
        }
        crate::people::insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(true)
    }

    pub async fn provider_id_by_key_hash(&self, api_key_hash: &str) -> Result<Option<ProviderId>, StoreError> {
        let row = sqlx::query("SELECT provider_id FROM provider_keys WHERE key_hash = $1 AND revoked_at_ms IS NULL")
            .bind(api_key_hash.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|row| parse_column(row, "provider_id")).transpose()
    }

    /// Inserts a patient, linked to `provider` when a provider registers them, in one transaction;
    /// their token is then scoped to that provider. A CPF already registered is a
    /// `Conflict("patient")` (see `register_known_patient`).
    pub async fn insert_patient(
        &self,
        patient: &PatientRecord,
        token_hash: &str,
        provider: Option<ProviderId>,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO patients (id, name, cpf, email, phone, token_hash, token_provider_id, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(patient.id.to_string())
        .bind(patient.name.clone())
        .bind(patient.cpf.as_str().to_owned())
        .bind(patient.email.clone())
        .bind(patient.phone.clone())
        .bind(token_hash.to_owned())
        .bind(provider.map(|provider| provider.to_string()))
        .bind(patient.created_at_ms)
        .execute(&mut *transaction)
        .await
        .map_err(|error| StoreError::on_unique(error, "patient"))?;
        if let Some(provider) = provider {
            link(&mut transaction, provider, patient.id, patient.created_at_ms).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    pub async fn patient(&self, id: PatientId) -> Result<Option<PatientRecord>, StoreError> {
        let row =
            sqlx::query("SELECT id, name, cpf, email, phone, created_at_ms, erased_at_ms FROM patients WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(patient_from_row).transpose()
    }

    /// A provider registers a CPF registered already (by another provider, the admin, or before an
    /// erasure): the patient is linked to it with its own view (`view`'s name, e-mail and phone,
    /// and the link's time as its creation), and gets a token scoped to it, in one transaction.
    /// None when no patient has this CPF; `Conflict("patient")` when this provider has them already.
    pub async fn register_known_patient(
        &self,
        provider: ProviderId,
        view: &PatientRecord,
        token_hash: &str,
    ) -> Result<Option<PatientId>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let row = sqlx::query("SELECT id FROM patients WHERE cpf = $1")
            .bind(view.cpf.as_str().to_owned())
            .fetch_optional(&mut *transaction)
            .await?;
        let Some(row) = row else {
            transaction.rollback().await?;
            return Ok(None);
        };
        let patient: PatientId = parse_column(&row, "id")?;
        let linked = sqlx::query(
            "INSERT INTO provider_patients (provider_id, patient_id, created_at_ms, name, email, phone)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (provider_id, patient_id) DO NOTHING",
        )
        .bind(provider.to_string())
        .bind(patient.to_string())
        .bind(view.created_at_ms)
        .bind(view.name.clone())
        .bind(view.email.clone())
        .bind(view.phone.clone())
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if linked == 0 {
            transaction.rollback().await?;
            return Err(StoreError::Conflict("patient"));
        }
        sqlx::query(
            "INSERT INTO patient_tokens (token_hash, patient_id, provider_id, created_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash.to_owned())
        .bind(patient.to_string())
        .bind(provider.to_string())
        .bind(view.created_at_ms)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Some(patient))
    }

    /// The patient as `provider` sees them: the name, e-mail and phone it gave when it registered
    /// them (the patient's own where it gave none: links made before migration 0029, by the admin's
    /// registration or a checkout link), and when it linked them. An erasure shows only where the
    /// provider's view is the patient's own (an erasure clears the provider's copies). None when
    /// the provider is not linked to the patient.
    pub async fn provider_patient(
        &self,
        provider: ProviderId,
        patient: PatientId,
    ) -> Result<Option<PatientRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT p.id, COALESCE(l.name, p.name) AS name, p.cpf, COALESCE(l.email, p.email) AS email,
                    COALESCE(l.phone, p.phone) AS phone, l.created_at_ms,
                    CASE WHEN l.name IS NULL THEN p.erased_at_ms END AS erased_at_ms
             FROM provider_patients l JOIN patients p ON p.id = l.patient_id
             WHERE l.provider_id = $1 AND l.patient_id = $2",
        )
        .bind(provider.to_string())
        .bind(patient.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(patient_from_row).transpose()
    }

    /// The patient as seen through `scope`: their own record (None), or that provider's view.
    pub async fn patient_seen_by(
        &self,
        scope: Option<ProviderId>,
        patient: PatientId,
    ) -> Result<Option<PatientRecord>, StoreError> {
        match scope {
            None => self.patient(patient).await,
            Some(provider) => self.provider_patient(provider, patient).await,
        }
    }

    /// The patient a long-lived token belongs to, and the provider it is scoped to.
    pub async fn patient_by_token_hash(&self, token_hash: &str) -> Result<Option<PatientCredential>, StoreError> {
        let row = sqlx::query(
            "SELECT id AS patient_id, token_provider_id AS provider_id FROM patients WHERE token_hash = $1
             UNION ALL SELECT patient_id, provider_id FROM patient_tokens WHERE token_hash = $1",
        )
        .bind(token_hash.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(PatientCredential::from_row).transpose()
    }

    /// The providers a patient is linked to, the most recently linked first.
    pub async fn patient_providers(&self, patient: PatientId, limit: i64) -> Result<Vec<ProviderId>, StoreError> {
        let rows = sqlx::query(
            "SELECT provider_id FROM provider_patients WHERE patient_id = $1 ORDER BY created_at_ms DESC LIMIT $2",
        )
        .bind(patient.to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| parse_column(row, "provider_id")).collect()
    }

    pub async fn is_linked(&self, provider: ProviderId, patient: PatientId) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 AS one FROM provider_patients WHERE provider_id = $1 AND patient_id = $2")
            .bind(provider.to_string())
            .bind(patient.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}

/// Who a patient's credential (a token, an app session) signs in, and what it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PatientCredential {
    pub patient: PatientId,
    /// The provider the credential was issued through (the token shown to it at registration, a
    /// session from its sign-in link): it opens only what concerns that provider. None: issued
    /// by the platform (the admin's registration, support's sign-in link), it opens all of the
    /// patient's own data.
    pub provider: Option<ProviderId>,
}

impl PatientCredential {
    /// Whether this credential opens what concerns `patient` at `provider`.
    pub fn opens(&self, patient: PatientId, provider: ProviderId) -> bool {
        self.patient == patient && self.provider.is_none_or(|scope| scope == provider)
    }

    pub(crate) fn from_row(row: &AnyRow) -> Result<PatientCredential, StoreError> {
        Ok(PatientCredential {
            patient: parse_column(row, "patient_id")?,
            provider: parse_optional_column(row, "provider_id")?,
        })
    }
}

/// Links a patient to a provider; linking twice is not an error.
pub(crate) const LINK_INSERT: &str = "INSERT INTO provider_patients (provider_id, patient_id, created_at_ms)
     VALUES ($1, $2, $3) ON CONFLICT (provider_id, patient_id) DO NOTHING";

pub(crate) async fn link(
    connection: &mut sqlx::AnyConnection,
    provider: ProviderId,
    patient: PatientId,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(LINK_INSERT)
        .bind(provider.to_string())
        .bind(patient.to_string())
        .bind(now_ms)
        .execute(connection)
        .await?;
    Ok(())
}

/// What opening a checkout link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOpening {
    /// The patient chose this provider.
    Linked(ProviderId),
    /// The credential is scoped to another provider: it chooses nobody.
    OutOfScope,
}

/// A provider's checkout link: a patient who opens it chooses the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutLink {
    pub id: String,
    pub provider_id: ProviderId,
    pub label: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

impl Store {
    pub async fn insert_checkout_link(&self, link: &CheckoutLink, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkout_links (id, provider_id, token_hash, label, created_by, created_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(link.id.clone())
        .bind(link.provider_id.to_string())
        .bind(token_hash.to_owned())
        .bind(link.label.clone())
        .bind(link.created_by.clone())
        .bind(link.created_at_ms)
        .bind(link.expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The patient of `by` opens a checkout link: linked to its provider when the link exists,
    /// has not expired, and is of the credential's own provider when it is scoped to one. None for
    /// an unknown or expired link; `OutOfScope` for another provider's (nothing changes).
    pub async fn open_checkout_link(
        &self,
        token_hash: &str,
        by: PatientCredential,
        now_ms: i64,
    ) -> Result<Option<LinkOpening>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let row = sqlx::query("SELECT provider_id FROM checkout_links WHERE token_hash = $1 AND expires_at_ms > $2")
            .bind(token_hash.to_owned())
            .bind(now_ms)
            .fetch_optional(&mut *transaction)
            .await?;
        let Some(row) = row else {
            transaction.rollback().await?;
            return Ok(None);
        };
        let provider: ProviderId = parse_column(&row, "provider_id")?;
        if by.provider.is_some_and(|scope| scope != provider) {
            transaction.rollback().await?;
            return Ok(Some(LinkOpening::OutOfScope));
        }
        link(&mut transaction, provider, by.patient, now_ms).await?;
        transaction.commit().await?;
        Ok(Some(LinkOpening::Linked(provider)))
    }
}

//! People with their own identities (admins, analysts, support agents), their bearer tokens, the
//! audit log of what they write, and review cases claimed by one of them at a time.

use crate::database::{Store, StoreError};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonRecord {
    pub id: String,
    pub name: String,
    pub email: String,
    /// `admin`, `analyst` or `support`.
    pub role: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub disabled_at_ms: Option<i64>,
}

/// A token of a person; the clear value exists only in the answer that created it.
#[derive(Clone, PartialEq, Eq)]
pub struct PersonToken {
    pub id: String,
    pub person_id: String,
    pub token_hash: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl std::fmt::Debug for PersonToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonToken")
            .field("id", &self.id)
            .field("person_id", &self.person_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("revoked_at_ms", &self.revoked_at_ms)
            .finish_non_exhaustive()
    }
}

/// One write a person made: who, what, on what, when, and the state before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: String,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// What claiming a case did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseClaim {
    /// Claimed now (or already held) by the caller.
    Held { claimed_at_ms: i64 },
    /// Held by someone else since `since_ms`.
    Taken { by: String, since_ms: i64 },
    /// No open case of that id.
    NoCase,
}

const PERSON_COLUMNS: &str = "id, name, email, role, created_by, created_at_ms, disabled_at_ms";

fn person_from_row(row: &sqlx::any::AnyRow) -> Result<PersonRecord, StoreError> {
    Ok(PersonRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        role: row.try_get("role")?,
        created_by: row.try_get("created_by")?,
        created_at_ms: row.try_get("created_at_ms")?,
        disabled_at_ms: row.try_get("disabled_at_ms")?,
    })
}

fn json_text(value: &Option<serde_json::Value>) -> Option<String> {
    value.as_ref().map(serde_json::Value::to_string)
}

impl Store {
    /// A person and their first token, in one transaction. An e-mail already registered is a
    /// `Conflict("person")`.
    pub async fn insert_person(
        &self,
        person: &PersonRecord,
        token: &PersonToken,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO people (id, name, email, role, created_by, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(person.id.clone())
        .bind(person.name.clone())
        .bind(person.email.clone())
        .bind(person.role.clone())
        .bind(person.created_by.clone())
        .bind(person.created_at_ms)
        .execute(&mut *transaction)
        .await
        .map_err(|error| StoreError::on_unique(error, "person"))?;
        insert_token(&mut transaction, token).await?;
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    pub async fn people(&self) -> Result<Vec<PersonRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PERSON_COLUMNS} FROM people ORDER BY created_at_ms, id LIMIT 1000"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(person_from_row).collect()
    }

    pub async fn person(&self, id: &str) -> Result<Option<PersonRecord>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {PERSON_COLUMNS} FROM people WHERE id = $1")))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(person_from_row).transpose()
    }

    /// A new token for a person; with `revoke_others`, every other live token of theirs ends now
    /// (a rotation), in the same transaction.
    pub async fn add_person_token(
        &self,
        token: &PersonToken,
        revoke_others: bool,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        if revoke_others {
            sqlx::query("UPDATE person_tokens SET revoked_at_ms = $2 WHERE person_id = $1 AND revoked_at_ms IS NULL")
                .bind(token.person_id.clone())
                .bind(token.created_at_ms)
                .execute(&mut *transaction)
                .await?;
        }
        insert_token(&mut transaction, token).await?;
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Ends one token of a person now, with its audit entry; false (and nothing written) when
    /// there is no such live token.
    pub async fn revoke_person_token(&self, person: &str, token: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE person_tokens SET revoked_at_ms = $3 WHERE id = $2 AND person_id = $1 AND revoked_at_ms IS NULL",
        )
        .bind(person.to_owned())
        .bind(token.to_owned())
        .bind(audit.at_ms)
        .execute(&mut *transaction)
        .await?;
        if done.rows_affected() != 1 {
            transaction.rollback().await?;
            return Ok(false);
        }
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(true)
    }

    pub async fn person_tokens(&self, person: &str) -> Result<Vec<PersonToken>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, person_id, token_hash, created_at_ms, expires_at_ms, revoked_at_ms FROM person_tokens
             WHERE person_id = $1 ORDER BY created_at_ms, id",
        )
        .bind(person.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PersonToken {
                    id: row.try_get("id")?,
                    person_id: row.try_get("person_id")?,
                    token_hash: row.try_get("token_hash")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    expires_at_ms: row.try_get("expires_at_ms")?,
                    revoked_at_ms: row.try_get("revoked_at_ms")?,
                })
            })
            .collect()
    }

    /// The person a token hash belongs to, if the token is live (not revoked, not expired) and the
    /// person not disabled.
    pub async fn person_by_token_hash(&self, hash: &str, now_ms: i64) -> Result<Option<PersonRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT p.id AS id, p.name AS name, p.email AS email, p.role AS role, p.created_by AS created_by,
                    p.created_at_ms AS created_at_ms, p.disabled_at_ms AS disabled_at_ms
             FROM person_tokens t JOIN people p ON p.id = t.person_id
             WHERE t.token_hash = $1 AND t.revoked_at_ms IS NULL AND t.expires_at_ms > $2 AND p.disabled_at_ms IS NULL",
        )
        .bind(hash.to_owned())
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(person_from_row).transpose()
    }

    /// The newest `limit` entries, newest first; only `actor`'s when given.
    pub async fn audit(&self, actor: Option<&str>, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, target, before_json, after_json FROM audit_log
             WHERE ($1 IS NULL OR actor = $1) ORDER BY at_ms DESC, id DESC LIMIT $2",
        )
        .bind(actor.map(str::to_owned))
        .bind(limit.clamp(1, 1_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let parse = |column: &str| -> Result<Option<serde_json::Value>, StoreError> {
                    let text: Option<String> = row.try_get(column)?;
                    text.map(|text| serde_json::from_str(&text).map_err(StoreError::corrupt)).transpose()
                };
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    at_ms: row.try_get("at_ms")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    before: parse("before_json")?,
                    after: parse("after_json")?,
                })
            })
            .collect()
    }

    /// Claims an open case for `by`: taken when unclaimed, already `by`'s, or claimed longer ago
    /// than `stale_before_ms` (an abandoned claim). One statement, so two analysts claiming at
    /// once cannot both win.
    pub async fn claim_case(
        &self,
        case: &str,
        by: &str,
        now_ms: i64,
        stale_before_ms: i64,
        audit: &AuditEntry,
    ) -> Result<CaseClaim, StoreError> {
        let mut transaction = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE review_cases SET claimed_by = $2, claimed_at_ms = $3
             WHERE id = $1 AND status = 'open' AND (claimed_by IS NULL OR claimed_by = $2 OR claimed_at_ms < $4)",
        )
        .bind(case.to_owned())
        .bind(by.to_owned())
        .bind(now_ms)
        .bind(stale_before_ms)
        .execute(&mut *transaction)
        .await?;
        if done.rows_affected() == 1 {
            // The claim and its audit entry: both or neither.
            insert_audit(&mut transaction, audit).await?;
            transaction.commit().await?;
            return Ok(CaseClaim::Held { claimed_at_ms: now_ms });
        }
        transaction.rollback().await?;
        self.case_claim(case).await.map(|claim| match claim {
            Some((Some(by), Some(since_ms))) => CaseClaim::Taken { by, since_ms },
            _ => CaseClaim::NoCase,
        })
    }

    /// Who holds an open case, and since when (`None`: no open case of that id).
    pub async fn case_claim(&self, case: &str) -> Result<Option<(Option<String>, Option<i64>)>, StoreError> {
        let row = sqlx::query("SELECT claimed_by, claimed_at_ms FROM review_cases WHERE id = $1 AND status = 'open'")
            .bind(case.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((row.try_get("claimed_by")?, row.try_get("claimed_at_ms")?))).transpose()
    }
}

async fn insert_token(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    token: &PersonToken,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO person_tokens (id, person_id, token_hash, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token.id.clone())
    .bind(token.person_id.clone())
    .bind(token.token_hash.clone())
    .bind(token.created_at_ms)
    .bind(token.expires_at_ms)
    .execute(&mut **transaction)
    .await
    .map_err(|error| StoreError::on_unique(error, "token"))?;
    Ok(())
}

/// Appends `entry` through `connection`: inside a transaction, the entry commits with the write it
/// records, or neither does.
/// The same insert as `insert_audit`, for a writer plan.
pub(crate) fn audit_statement(entry: &AuditEntry) -> crate::writer::Statement {
    crate::writer::Statement::new(
        "INSERT INTO audit_log (id, at_ms, actor, action, target, before_json, after_json)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            entry.id.as_str().into(),
            entry.at_ms.into(),
            entry.actor.as_str().into(),
            entry.action.as_str().into(),
            entry.target.as_str().into(),
            json_text(&entry.before).into(),
            json_text(&entry.after).into(),
        ],
    )
}

pub(crate) async fn insert_audit(connection: &mut sqlx::AnyConnection, entry: &AuditEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (id, at_ms, actor, action, target, before_json, after_json)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(entry.id.clone())
    .bind(entry.at_ms)
    .bind(entry.actor.clone())
    .bind(entry.action.clone())
    .bind(entry.target.clone())
    .bind(json_text(&entry.before))
    .bind(json_text(&entry.after))
    .execute(&mut *connection)
    .await?;
    Ok(())
}

//! The patients' notification outbox (migration 0022): derived from the money tables by time
//! window, each fact once (its id names it), then claimed, sent and retried.

use crate::database::{Store, StoreError};
use crate::parties::{PatientCredential, parse_column};
use medpay_models::{PatientId, PaymentId};
use sqlx::Row;
use sqlx::any::AnyRow;

pub const NOTIFICATION_KINDS: [&str; 5] =
    ["charge_issued", "payment_confirmed", "installment_due", "refund_completed", "contract_to_sign"];

/// Where the notifier's time window starts (in the `settings` table).
const SINCE_SETTING: &str = "notifications_since_ms";

/// The facts that become notifications, each an `INSERT … SELECT` of the rows that changed since
/// `$1` (`$2` is now). Card charges have nothing to pay by hand: no "charge issued" for them.
const DERIVE_BY_TIME: [&str; 4] = [
    "INSERT INTO patient_notifications (id, patient_id, payment_id, kind, ref_id, state, next_attempt_at_ms, created_at_ms)
     SELECT 'charge_issued:' || c.id, p.patient_id, p.id, 'charge_issued', c.id, 'pending', $2, $2
     FROM charges c JOIN payments p ON p.id = c.payment_id
     WHERE c.created_at_ms >= $1 AND c.method IN ('pix', 'boleto')
     ON CONFLICT (id) DO NOTHING",
    "INSERT INTO patient_notifications (id, patient_id, payment_id, kind, ref_id, state, next_attempt_at_ms, created_at_ms)
     SELECT 'payment_confirmed:' || c.id, p.patient_id, p.id, 'payment_confirmed', c.id, 'pending', $2, $2
     FROM charges c JOIN payments p ON p.id = c.payment_id
     WHERE c.paid_at_ms >= $1
     ON CONFLICT (id) DO NOTHING",
    "INSERT INTO patient_notifications (id, patient_id, payment_id, kind, ref_id, state, next_attempt_at_ms, created_at_ms)
     SELECT 'refund_completed:' || r.id, p.patient_id, p.id, 'refund_completed', r.id, 'pending', $2, $2
     FROM refunds r JOIN payments p ON p.id = r.payment_id
     WHERE r.completed_at_ms >= $1 AND r.kind IN ('refund', 'cancellation')
     ON CONFLICT (id) DO NOTHING",
    "INSERT INTO patient_notifications (id, patient_id, payment_id, kind, ref_id, state, next_attempt_at_ms, created_at_ms)
     SELECT 'contract_to_sign:' || k.payment_id, p.patient_id, p.id, 'contract_to_sign', k.envelope_id, 'pending', $2, $2
     FROM contracts k JOIN payments p ON p.id = k.payment_id
     WHERE k.created_at_ms >= $1 AND k.status = 'sent'
     ON CONFLICT (id) DO NOTHING",
];

/// Installments due from `$1` to `$2` (ISO dates) not paid yet, of payments that are still owed.
const DERIVE_DUE: &str =
    "INSERT INTO patient_notifications (id, patient_id, payment_id, kind, ref_id, state, next_attempt_at_ms, created_at_ms)
     SELECT 'installment_due:' || i.payment_id || ':' || CAST(i.number AS TEXT), p.patient_id, p.id, 'installment_due',
            CAST(i.number AS TEXT), 'pending', $3, $3
     FROM installments i JOIN payments p ON p.id = i.payment_id
     LEFT JOIN charges c ON c.payment_id = i.payment_id AND c.installment = i.number
     WHERE i.due_date >= $1 AND i.due_date <= $2
       AND (c.id IS NULL OR c.status = 'active')
       AND p.status IN ('approved', 'awaiting_payment', 'paid', 'held_in_escrow', 'released', 'partially_refunded')
     ON CONFLICT (id) DO NOTHING";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    pub id: String,
    pub patient_id: PatientId,
    pub payment_id: PaymentId,
    pub kind: String,
    /// The charge, refund, envelope or installment number it is about.
    pub ref_id: String,
    pub state: String,
    pub attempts: i64,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub created_at_ms: i64,
    pub sent_at_ms: Option<i64>,
}

/// What a notification says and the sign-in code (hash, expiry) its e-mail carries.
#[derive(Debug, Clone)]
pub struct PreparedNotification {
    pub id: String,
    pub patient_id: PatientId,
    pub subject: String,
    pub body: String,
    pub sign_in: Option<(String, i64)>,
    pub now_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NotificationOutcome {
    pub id: String,
    /// `sent`, `skipped` or `pending` (failed, retried at `retry_at_ms`).
    pub state: &'static str,
    pub retry_at_ms: Option<i64>,
    pub error: Option<String>,
    pub now_ms: i64,
}

const COLUMNS: &str =
    "id, patient_id, payment_id, kind, ref_id, state, attempts, subject, body, created_at_ms, sent_at_ms";

fn from_row(row: &AnyRow) -> Result<NotificationRecord, StoreError> {
    Ok(NotificationRecord {
        id: row.try_get("id")?,
        patient_id: parse_column(row, "patient_id")?,
        payment_id: parse_column(row, "payment_id")?,
        kind: row.try_get("kind")?,
        ref_id: row.try_get("ref_id")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        created_at_ms: row.try_get("created_at_ms")?,
        sent_at_ms: row.try_get("sent_at_ms")?,
    })
}

impl Store {
    /// Derives the notifications of what changed since the window's start, and moves the start to
    /// `now_ms - overlap_ms` (never back): a row committed up to `overlap_ms` after the time it
    /// carries is still seen, and seeing it twice changes nothing. With `due` (today and the last
    /// day to remind of), installments due in that range are derived too. Returns how many are new.
    pub async fn derive_notifications(
        &self,
        now_ms: i64,
        overlap_ms: i64,
        due: Option<(&str, &str)>,
    ) -> Result<u64, StoreError> {
        let mut transaction = self.begin_write().await?;
        let stored = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(SINCE_SETTING)
            .fetch_optional(&mut *transaction)
            .await?
            .map(|row| row.try_get::<String, _>("value"))
            .transpose()?
            .and_then(|value| value.parse::<i64>().ok());
        // The first start does not notify what happened before notifications existed.
        let since = stored.unwrap_or(now_ms - overlap_ms);
        let mut created = 0;
        for sql in DERIVE_BY_TIME {
            created += sqlx::query(sql).bind(since).bind(now_ms).execute(&mut *transaction).await?.rows_affected();
        }
        if let Some((from, until)) = due {
            created += sqlx::query(DERIVE_DUE)
                .bind(from.to_owned())
                .bind(until.to_owned())
                .bind(now_ms)
                .execute(&mut *transaction)
                .await?
                .rows_affected();
        }
        let next = since.max(now_ms - overlap_ms).to_string();
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = $2")
            .bind(SINCE_SETTING)
            .bind(next)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(created)
    }

    /// Claims up to `limit` notifications due now for `lease_ms`: another node does not take them
    /// meanwhile; if this one stops, they are due again when the lease ends.
    pub async fn claim_notifications(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE patient_notifications SET claimed_until_ms = $2
             WHERE id IN (SELECT id FROM patient_notifications
                          WHERE state = 'pending' AND next_attempt_at_ms <= $1
                            AND (claimed_until_ms IS NULL OR claimed_until_ms < $1)
                          ORDER BY next_attempt_at_ms LIMIT $3)
               AND state = 'pending' AND (claimed_until_ms IS NULL OR claimed_until_ms < $1)
             RETURNING {COLUMNS}"
        ));
        let rows = sqlx::query(sql).bind(now_ms).bind(now_ms + lease_ms).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// Before a batch is sent, in one commit: what each notification says (kept once, as the app
    /// lists it) and the sign-in code its e-mail carries, so that no link in a sent e-mail is dead.
    pub async fn prepare_notifications(&self, batch: &[PreparedNotification]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut transaction = self.begin_write().await?;
        for item in batch {
            sqlx::query("UPDATE patient_notifications SET subject = $1, body = $2 WHERE id = $3 AND subject IS NULL")
                .bind(item.subject.clone())
                .bind(item.body.clone())
                .bind(item.id.clone())
                .execute(&mut *transaction)
                .await?;
            if let Some((code_hash, expires_at_ms)) = &item.sign_in {
                sqlx::query(
                    "INSERT INTO patient_sign_in_codes (code_hash, patient_id, created_by, created_at_ms, expires_at_ms)
                     VALUES ($1, $2, 'notification', $3, $4)",
                )
                .bind(code_hash.clone())
                .bind(item.patient_id.to_string())
                .bind(item.now_ms)
                .bind(*expires_at_ms)
                .execute(&mut *transaction)
                .await?;
            }
        }
        transaction.commit().await?;
        Ok(())
    }

    /// The outcomes of a batch's attempts, in one commit: `sent`, `skipped` (nobody to send it
    /// to), or, with `retry_at_ms`, pending again then (else `failed` for good).
    pub async fn record_notification_outcomes(&self, outcomes: &[NotificationOutcome]) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut transaction = self.begin_write().await?;
        for outcome in outcomes {
            let (state, next) = match (outcome.state, outcome.retry_at_ms) {
                ("pending", Some(at)) => ("pending", at),
                ("pending", None) => ("failed", outcome.now_ms),
                (other, _) => (other, outcome.now_ms),
            };
            sqlx::query(
                "UPDATE patient_notifications SET state = $1, attempts = attempts + 1, next_attempt_at_ms = $2,
                        claimed_until_ms = NULL, last_error = $3, sent_at_ms = CASE WHEN $1 = 'sent' THEN $4 ELSE sent_at_ms END
                 WHERE id = $5",
            )
            .bind(state.to_owned())
            .bind(next)
            .bind(outcome.error.clone())
            .bind(outcome.now_ms)
            .bind(outcome.id.clone())
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// The patient's notifications, newest first.
    /// The notifications of the patient of `by`, newest first: of its provider's payments only
    /// when the credential is scoped to one.
    pub async fn patient_notifications(
        &self,
        by: PatientCredential,
        limit: i64,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let rows = match by.provider {
            None => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM patient_notifications WHERE patient_id = $1
                     ORDER BY created_at_ms DESC, id DESC LIMIT $2"
                ));
                sqlx::query(sql).bind(by.patient.to_string()).bind(limit).fetch_all(&self.pool).await?
            }
            Some(provider) => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM patient_notifications
                     WHERE patient_id = $1 AND payment_id IN (SELECT id FROM payments WHERE patient_id = $1 AND provider_id = $2)
                     ORDER BY created_at_ms DESC, id DESC LIMIT $3"
                ));
                let query = sqlx::query(sql).bind(by.patient.to_string()).bind(provider.to_string());
                query.bind(limit).fetch_all(&self.pool).await?
            }
        };
        rows.iter().map(from_row).collect()
    }

    /// Notifications waiting to be sent (for `/metrics`).
    pub async fn pending_notifications(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM patient_notifications WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}

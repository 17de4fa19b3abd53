//! Payments, their installments, decisions and events.

use crate::database::{Store, StoreError};
use crate::idempotency::{self, IdempotencyRecord};
use crate::parties::{LINK_INSERT, parse_column};
use crate::writer::{Plan, PlannedEvents, Statement};
use medpay_models::{
    DecisionOutcome, Installment, PatientId, PaymentId, PaymentMethod, PaymentStatus, ProviderId, Reason, TussCode,
};
use sqlx::Row;
use sqlx::any::AnyRow;

/// The reason of the review case a payment sent to review by its decision opens.
pub const REVIEW_REASON_DECISION: &str = "decision_review";

/// Most payments one list call returns.
pub const PAYMENTS_PAGE_MAX: i64 = 200;
/// Most events one call returns.
pub const EVENTS_PAGE_MAX: i64 = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    pub id: PaymentId,
    pub provider_id: ProviderId,
    pub patient_id: PatientId,
    pub tuss_code: TussCode,
    pub description: String,
    pub amount_centavos: i64,
    pub method: PaymentMethod,
    pub monthly_interest_bps: i64,
    pub total_centavos: i64,
    pub cet_annual_bps: i64,
    pub status: PaymentStatus,
    pub device_id: String,
    pub ip: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub installments: Vec<Installment>,
    /// The platform's fee and the escrow choice in force when the payment was made.
    pub fee_bps: i64,
    pub escrow: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRecord {
    pub id: String,
    pub payment_id: PaymentId,
    pub outcome: DecisionOutcome,
    pub score: u16,
    pub reasons: Vec<Reason>,
    pub rules_hit: Vec<String>,
    pub model_version: String,
    pub latency_us: i64,
    pub created_at_ms: i64,
    /// The features scored (JSON object), or `{}` when scoring could not run.
    pub features: serde_json::Value,
    /// The challenger's version and score of the same payment (it decided nothing).
    pub shadow: Option<(String, u16)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub seq: i64,
    pub kind: String,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub payment_id: PaymentId,
    pub provider_id: ProviderId,
    pub seq: i64,
    /// The event's number among its provider's events: the feed's cursor.
    pub provider_seq: i64,
    pub kind: String,
    pub data: serde_json::Value,
    pub created_at_ms: i64,
}

/// Everything the creation of a payment writes, committed at once: the payment, its installments,
/// its first decision, its first events, the patient–provider link, the effects it asks for
/// (intents, performed only once this is durable) and its idempotency key.
#[derive(Debug, Clone)]
pub struct NewPaymentWrite {
    pub payment: PaymentRecord,
    pub decision: DecisionRecord,
    pub events: Vec<NewEvent>,
    pub idempotency: Option<IdempotencyRecord>,
    pub intents: Vec<crate::money::IntentRecord>,
}

#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    pub patient_id: Option<PatientId>,
    pub provider_id: Option<ProviderId>,
    /// Only payments after this one in the order (created_at_ms, id) descending: the last
    /// payment of the previous page (for paging, newest first).
    pub before: Option<(i64, PaymentId)>,
    pub limit: i64,
}

const PAYMENT_COLUMNS: &str = "id, provider_id, patient_id, tuss_code, description, amount_centavos, method, \
     monthly_interest_bps, total_centavos, cet_annual_bps, status, device_id, ip, created_at_ms, updated_at_ms, fee_bps, escrow";

fn payment_from_row(row: &AnyRow) -> Result<PaymentRecord, StoreError> {
    Ok(PaymentRecord {
        id: parse_column(row, "id")?,
        provider_id: parse_column(row, "provider_id")?,
        patient_id: parse_column(row, "patient_id")?,
        tuss_code: parse_column(row, "tuss_code")?,
        description: row.try_get("description")?,
        amount_centavos: row.try_get("amount_centavos")?,
        method: parse_column(row, "method")?,
        monthly_interest_bps: row.try_get("monthly_interest_bps")?,
        total_centavos: row.try_get("total_centavos")?,
        cet_annual_bps: row.try_get("cet_annual_bps")?,
        status: parse_column(row, "status")?,
        device_id: row.try_get("device_id")?,
        ip: row.try_get("ip")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        installments: Vec::new(),
        fee_bps: row.try_get("fee_bps")?,
        escrow: row.try_get::<i64, _>("escrow")? == 1,
    })
}

fn decision_from_row(row: &AnyRow) -> Result<DecisionRecord, StoreError> {
    let reasons: String = row.try_get("reasons")?;
    let rules_hit: String = row.try_get("rules_hit")?;
    let score: i64 = row.try_get("score")?;
    let features: String = row.try_get("features")?;
    Ok(DecisionRecord {
        features: serde_json::from_str(&features).map_err(StoreError::corrupt)?,
        id: row.try_get("id")?,
        payment_id: parse_column(row, "payment_id")?,
        outcome: parse_column(row, "outcome")?,
        score: u16::try_from(score).map_err(StoreError::corrupt)?,
        reasons: serde_json::from_str(&reasons).map_err(StoreError::corrupt)?,
        rules_hit: serde_json::from_str(&rules_hit).map_err(StoreError::corrupt)?,
        model_version: row.try_get("model_version")?,
        latency_us: row.try_get("latency_us")?,
        created_at_ms: row.try_get("created_at_ms")?,
        shadow: {
            let version: Option<String> = row.try_get("shadow_model_version")?;
            let score: Option<i64> = row.try_get("shadow_score")?;
            match (version, score) {
                (Some(version), Some(score)) => Some((version, u16::try_from(score).map_err(StoreError::corrupt)?)),
                _ => None,
            }
        },
    })
}

fn installment_from_row(row: &AnyRow) -> Result<Installment, StoreError> {
    let number: i64 = row.try_get("number")?;
    Ok(Installment {
        number: u32::try_from(number).map_err(StoreError::corrupt)?,
        due_date: parse_column(row, "due_date")?,
        amount_centavos: row.try_get("amount_centavos")?,
    })
}

impl EventRecord {
    /// A stable, unique id: the payment and its event number.
    pub fn id(&self) -> String {
        format!("{}.{}", self.payment_id, self.seq)
    }
}

const EVENT_COLUMNS: &str = "payment_id, provider_id, seq, provider_seq, kind, data, created_at_ms";

fn event_from_row(row: &AnyRow) -> Result<EventRecord, StoreError> {
    let data: String = row.try_get("data")?;
    Ok(EventRecord {
        payment_id: parse_column(row, "payment_id")?,
        provider_id: parse_column(row, "provider_id")?,
        seq: row.try_get("seq")?,
        provider_seq: row.try_get("provider_seq")?,
        kind: row.try_get("kind")?,
        data: serde_json::from_str(&data).map_err(StoreError::corrupt)?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

impl Store {
    /// Writes a new payment and everything that comes with it in one commit (batched with other
    /// actors' by the writer): either all of it is durable or none of it is.
    /// Returns the events as written, with their provider numbers.
    /// Writes a new payment with its decision, events, installments, idempotency key and intents
    /// (and, sent to review, its case for the analysts) in one commit.
    pub async fn record_new_payment(&self, write: &NewPaymentWrite) -> Result<Vec<EventRecord>, StoreError> {
        Ok(self.writer.write(new_payment_plan(write)?).await?.events)
    }

    pub async fn payment(&self, id: PaymentId) -> Result<Option<PaymentRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1"));
        let Some(row) = sqlx::query(sql).bind(id.to_string()).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let mut payment = payment_from_row(&row)?;
        payment.installments = self.installments(id).await?;
        Ok(Some(payment))
    }

    /// A payment, its latest decision and its current charge, read from one snapshot (a GET right
    /// after a webhook never shows the new charge beside the old status).
    pub async fn payment_view(
        &self,
        id: PaymentId,
    ) -> Result<Option<(PaymentRecord, Option<DecisionRecord>, Option<crate::money::ChargeRecord>)>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        if self.engine() == crate::Engine::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *transaction)
                .await?;
        }
        let sql = sqlx::AssertSqlSafe(format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1"));
        let Some(row) = sqlx::query(sql).bind(id.to_string()).fetch_optional(&mut *transaction).await? else {
            return Ok(None);
        };
        let mut payment = payment_from_row(&row)?;
        let rows = sqlx::query(
            "SELECT number, due_date, amount_centavos FROM installments WHERE payment_id = $1 ORDER BY number",
        )
        .bind(id.to_string())
        .fetch_all(&mut *transaction)
        .await?;
        payment.installments = rows.iter().map(installment_from_row).collect::<Result<_, _>>()?;
        let decision = sqlx::query(
            "SELECT id, payment_id, outcome, score, reasons, rules_hit, model_version, latency_us, created_at_ms, features,
                    shadow_model_version, shadow_score
             FROM decisions WHERE payment_id = $1 ORDER BY created_at_ms DESC, id DESC LIMIT 1",
        )
        .bind(id.to_string())
        .fetch_optional(&mut *transaction)
        .await?
        .as_ref()
        .map(decision_from_row)
        .transpose()?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM charges WHERE payment_id = $1 ORDER BY installment DESC LIMIT 1",
            crate::money::CHARGE_COLUMNS
        ));
        let charge = sqlx::query(sql)
            .bind(id.to_string())
            .fetch_optional(&mut *transaction)
            .await?
            .as_ref()
            .map(crate::money::charge_from_row)
            .transpose()?;
        transaction.commit().await?;
        Ok(Some((payment, decision, charge)))
    }

    async fn installments(&self, id: PaymentId) -> Result<Vec<Installment>, StoreError> {
        let rows = sqlx::query(
            "SELECT number, due_date, amount_centavos FROM installments WHERE payment_id = $1 ORDER BY number",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(installment_from_row).collect()
    }

    /// The most recent decision of a payment.
    pub async fn latest_decision(&self, id: PaymentId) -> Result<Option<DecisionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, payment_id, outcome, score, reasons, rules_hit, model_version, latency_us, created_at_ms, features,
                    shadow_model_version, shadow_score
             FROM decisions WHERE payment_id = $1 ORDER BY created_at_ms DESC, id DESC LIMIT 1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decision_from_row).transpose()
    }

    pub async fn decision_count(&self, id: PaymentId) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM decisions WHERE payment_id = $1")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Payments newest first, without their installments.
    pub async fn list_payments(&self, filter: &PaymentFilter) -> Result<Vec<PaymentRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments
             WHERE ($1 = '' OR patient_id = $1) AND ($2 = '' OR provider_id = $2)
               AND (created_at_ms < $3 OR (created_at_ms = $3 AND id < $5))
             ORDER BY created_at_ms DESC, id DESC LIMIT $4"
        ));
        let (before_ms, before_id) = filter.before.map_or((i64::MAX, String::new()), |(ms, id)| (ms, id.to_string()));
        let rows = sqlx::query(sql)
            .bind(filter.patient_id.map(|id| id.to_string()).unwrap_or_default())
            .bind(filter.provider_id.map(|id| id.to_string()).unwrap_or_default())
            .bind(before_ms)
            .bind(filter.limit.clamp(1, PAYMENTS_PAGE_MAX))
            .bind(before_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(payment_from_row).collect()
    }

    /// Events of a payment with a sequence number above `after_seq`, in order.
    pub async fn events(&self, payment: PaymentId, after_seq: i64, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE payment_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ));
        let rows = sqlx::query(sql)
            .bind(payment.to_string())
            .bind(after_seq)
            .bind(limit.clamp(1, EVENTS_PAGE_MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// A provider's events with a provider number above `after`, in order.
    pub async fn provider_events(
        &self,
        provider: ProviderId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE provider_id = $1 AND provider_seq > $2 ORDER BY provider_seq LIMIT $3"
        ));
        let rows = sqlx::query(sql)
            .bind(provider.to_string())
            .bind(after)
            .bind(limit.clamp(1, EVENTS_PAGE_MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The number of the provider's latest event (0 when it has none).
    pub async fn provider_last_event_seq(&self, provider: ProviderId) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT last_event_seq FROM provider_event_counters WHERE provider_id = $1")
            .bind(provider.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("last_event_seq")).transpose()?.unwrap_or(0))
    }

    /// The highest event number of a payment (0 when it has none).
    pub async fn last_event_seq(&self, payment: PaymentId) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS last FROM events WHERE payment_id = $1")
            .bind(payment.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("last")?)
    }
}

fn new_payment_plan(write: &NewPaymentWrite) -> Result<Plan, StoreError> {
    let payment = &write.payment;
    let mut statements = Vec::with_capacity(6 + payment.installments.len() + write.intents.len());
    statements.push(
        Statement::new(
            "INSERT INTO payments (id, provider_id, patient_id, tuss_code, description, amount_centavos, method,
                 installments_count, monthly_interest_bps, total_centavos, cet_annual_bps, status, device_id, ip,
                 created_at_ms, updated_at_ms, fee_bps, escrow)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
            vec![
                payment.id.to_string().into(),
                payment.provider_id.to_string().into(),
                payment.patient_id.to_string().into(),
                payment.tuss_code.as_str().into(),
                payment.description.as_str().into(),
                payment.amount_centavos.into(),
                payment.method.as_str().into(),
                i64::try_from(payment.installments.len()).map_err(StoreError::corrupt)?.into(),
                payment.monthly_interest_bps.into(),
                payment.total_centavos.into(),
                payment.cet_annual_bps.into(),
                payment.status.as_str().into(),
                payment.device_id.as_str().into(),
                payment.ip.as_str().into(),
                payment.created_at_ms.into(),
                payment.updated_at_ms.into(),
                payment.fee_bps.into(),
                i64::from(payment.escrow).into(),
            ],
        )
        .unique("payment"),
    );
    for installment in &payment.installments {
        statements.push(Statement::new(
            "INSERT INTO installments (payment_id, number, due_date, amount_centavos) VALUES ($1, $2, $3, $4)",
            vec![
                payment.id.to_string().into(),
                i64::from(installment.number).into(),
                installment.due_date.to_string().into(),
                installment.amount_centavos.into(),
            ],
        ));
    }
    statements.push(decision_statement(&write.decision)?);
    statements.push(link_statement(payment.provider_id, payment.patient_id, payment.created_at_ms));
    statements.extend(write.intents.iter().map(crate::money::intent_statement));
    // Sent to review by its decision: a case in the analysts' queue, in the same commit.
    if payment.status == PaymentStatus::InReview {
        statements.push(Statement::new(
            "INSERT INTO review_cases (id, payment_id, reason, status, created_at_ms) VALUES ($1, $2, $3, 'open', $4)",
            vec![
                uuid::Uuid::now_v7().to_string().into(),
                payment.id.to_string().into(),
                REVIEW_REASON_DECISION.into(),
                payment.created_at_ms.into(),
            ],
        ));
    }
    if let Some(record) = &write.idempotency {
        statements.push(idempotency::record_statement(record));
    }
    Ok(Plan {
        statements,
        events: Some(PlannedEvents {
            payment: payment.id,
            provider: payment.provider_id,
            events: write.events.clone(),
            now_ms: payment.created_at_ms,
        }),
    })
}

fn decision_statement(decision: &DecisionRecord) -> Result<Statement, StoreError> {
    Ok(Statement::new(
        "INSERT INTO decisions (id, payment_id, outcome, score, reasons, rules_hit, model_version, latency_us, created_at_ms,
             features, shadow_model_version, shadow_score)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        vec![
            decision.id.as_str().into(),
            decision.payment_id.to_string().into(),
            decision.outcome.as_str().into(),
            i64::from(decision.score).into(),
            serde_json::to_string(&decision.reasons).map_err(StoreError::corrupt)?.into(),
            serde_json::to_string(&decision.rules_hit).map_err(StoreError::corrupt)?.into(),
            decision.model_version.as_str().into(),
            decision.latency_us.into(),
            decision.created_at_ms.into(),
            decision.features.to_string().into(),
            decision.shadow.as_ref().map(|(version, _)| version.clone()).into(),
            decision.shadow.as_ref().map(|(_, score)| i64::from(*score)).into(),
        ],
    ))
}

fn link_statement(provider: ProviderId, patient: PatientId, now_ms: i64) -> Statement {
    Statement::new(LINK_INSERT, vec![provider.to_string().into(), patient.to_string().into(), now_ms.into()])
}

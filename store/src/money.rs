//! Money movements: gateway charges, refunds, the gateways' webhooks, contracts, and the ledger
//! postings that account for them. Every movement of a payment is written in one transaction with
//! its status change and its events, guarded by the status it expects (the payment's actor is its
//! only writer; the guard catches a bug, not a race).

use crate::database::{Store, StoreError};
use crate::idempotency::{IdempotencyCompletion, completion_statement};
use crate::parties::parse_column;
use crate::payments::{EventRecord, NewEvent};
use crate::writer::{Plan, PlannedEvents, Statement, Value};
use medpay_models::{Account, PaymentId, PaymentMethod, PaymentStatus, Posting, ProviderId};
use sqlx::Row;
use sqlx::any::AnyRow;

/// An enum stored as one of a fixed set of words (a column with a CHECK of those words).
macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<$name, String> {
                match text {
                    $($word => Ok($name::$variant),)+
                    other => Err(format!(concat!("unknown ", stringify!($name), " {:?}"), other)),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}

word_enum!(
    /// Where a gateway charge stands.
    ChargeStatus { Active => "active", Paid => "paid", Cancelled => "cancelled" }
);
word_enum!(
    /// Where a refund stands: owed to the patient, or returned by the gateway.
    RefundStatus { Requested => "requested", Completed => "completed" }
);
word_enum!(
    /// Why money went back: asked for, a cancelled procedure, or taken by the payer's side.
    RefundKind { Refund => "refund", Cancellation => "cancellation", Chargeback => "chargeback", Med => "med" }
);
word_enum!(
    /// Where an installment contract stands at the signing service.
    ContractStatus { Sent => "sent", Signed => "signed", Refused => "refused" }
);
word_enum!(
    /// What an intent asks a gateway for.
    IntentKind {
        /// The charge of an installment (Celcoin), under the intent's id as our client request id.
        Charge => "charge",
        /// The installment contract sent for signature (ClickSign).
        Contract => "contract",
        /// The escrow of the payment's paid charges released to the provider (Celcoin).
        Release => "release",
    }
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRecord {
    /// Our client request id at the gateway: `<payment id>-<installment>`.
    pub id: String,
    pub payment_id: PaymentId,
    pub installment: u32,
    pub method: PaymentMethod,
    /// The gateway's transaction id.
    pub gateway_id: String,
    pub amount_centavos: i64,
    pub status: ChargeStatus,
    pub br_code: Option<String>,
    pub linha_digitavel: Option<String>,
    pub barcode: Option<String>,
    pub due_date: Option<String>,
    pub expires_at_ms: Option<i64>,
    pub paid_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

impl ChargeRecord {
    /// The client request id of a payment's installment.
    pub fn id_for(payment: PaymentId, installment: u32) -> String {
        format!("{payment}-{installment}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRecord {
    pub id: String,
    pub payment_id: PaymentId,
    pub charge_id: String,
    pub kind: RefundKind,
    pub amount_centavos: i64,
    pub reason: String,
    pub status: RefundStatus,
    pub gateway_id: Option<String>,
    pub created_at_ms: i64,
    pub completed_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayWebhook {
    pub gateway: String,
    pub webhook_id: String,
    pub payment_id: Option<PaymentId>,
    pub kind: String,
    pub body: String,
    pub state: String,
    pub received_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractRecord {
    pub payment_id: PaymentId,
    pub envelope_id: String,
    pub status: ContractStatus,
    pub created_at_ms: i64,
    pub signed_at_ms: Option<i64>,
}

/// An external effect written down before it is performed (see migration 0007).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentRecord {
    /// Our id at the gateway: a charge's is its client request id, `<payment>-<installment>`.
    pub id: String,
    pub payment_id: PaymentId,
    pub kind: IntentKind,
    pub installment: Option<u32>,
    pub created_at_ms: i64,
}

impl IntentRecord {
    pub fn charge(payment: PaymentId, installment: u32, now_ms: i64) -> IntentRecord {
        IntentRecord {
            id: ChargeRecord::id_for(payment, installment),
            payment_id: payment,
            kind: IntentKind::Charge,
            installment: Some(installment),
            created_at_ms: now_ms,
        }
    }

    /// The escrow release of a payment (every paid charge's, at Celcoin).
    pub fn release(payment: PaymentId, now_ms: i64) -> IntentRecord {
        IntentRecord {
            id: format!("{payment}-release"),
            payment_id: payment,
            kind: IntentKind::Release,
            installment: None,
            created_at_ms: now_ms,
        }
    }

    pub fn contract(payment: PaymentId, now_ms: i64) -> IntentRecord {
        IntentRecord {
            id: format!("{payment}-contract"),
            payment_id: payment,
            kind: IntentKind::Contract,
            installment: None,
            created_at_ms: now_ms,
        }
    }
}

pub(crate) fn intent_statement(intent: &IntentRecord) -> Statement {
    Statement::new(
        "INSERT INTO intents (id, payment_id, kind, installment, status, created_at_ms) VALUES ($1, $2, $3, $4, 'pending', $5)",
        vec![
            intent.id.as_str().into(),
            intent.payment_id.to_string().into(),
            intent.kind.as_str().into(),
            intent.installment.map(i64::from).into(),
            intent.created_at_ms.into(),
        ],
    )
    .unique("intent")
}

/// One step of a payment's money, written at once.
#[derive(Debug, Clone, Default)]
pub struct Movement {
    pub payment_id: Option<PaymentId>,
    pub provider_id: Option<ProviderId>,
    /// The status the payment must be in, and the one it moves to (if it moves).
    pub expect_status: Option<PaymentStatus>,
    pub new_status: Option<PaymentStatus>,
    pub postings: Vec<Posting>,
    pub events: Vec<NewEvent>,
    pub new_charge: Option<ChargeRecord>,
    /// (charge id, paid at).
    pub charge_paid: Option<(String, i64)>,
    /// (charge id, at): money arrived for a charge that was not ours to collect as it came (a
    /// wrong amount, a charge cancelled or paid already); it is in suspense, and the charge
    /// remembers that it received money (so that a take-back of it is known to leave suspense).
    pub charge_received: Option<(String, i64)>,
    pub new_refunds: Vec<RefundRecord>,
    /// (refund id, gateway id, completed at).
    pub refund_completed: Option<(String, Option<String>, i64)>,
    /// (gateway, webhook id, state, note): the webhook this movement applies.
    pub webhook: Option<(String, String, &'static str, String)>,
    /// (is fraud, source, note): a label for model training (chargebacks, MED claims).
    pub label: Option<(bool, &'static str, String)>,
    /// Who made the label (`person:{id}`, `analyst`, `admin`, `celcoin`).
    pub label_by: Option<String>,
    pub contract: Option<ContractRecord>,
    /// (reason, conversation id): open a review case for the payment (at most one open per reason).
    pub review_case: Option<(String, Option<String>)>,
    /// A case for a person about the payment (at most one open per reason; one open already is
    /// enough): money that moved unexpectedly.
    pub case: Option<&'static str>,
    /// (case id, outcome, note): close an open review case of the payment.
    pub review_closed: Option<(String, &'static str, String)>,
    /// Charges no longer payable (the payment was cancelled).
    pub charges_cancelled: bool,
    /// Effects this step asks for, performed once it is durable.
    pub new_intents: Vec<IntentRecord>,
    /// Intents whose effect this step records (their ids), or that it gives up (the payment
    /// was cancelled before their effect).
    pub intents_done: Vec<String>,
    /// The audit log's entry of the person whose write this step is (a review decided), in its
    /// commit: both or neither.
    pub audit: Option<crate::people::AuditEntry>,
    /// The answer of the payment's started idempotency key, complete with this step.
    pub idempotency: Option<IdempotencyCompletion>,
    pub now_ms: i64,
}

/// What `/v1/ledger/check` found wrong (nothing, when all is well).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LedgerProblem {
    pub payment_id: Option<String>,
    pub posting_id: Option<String>,
    pub problem: String,
}

/// One payment's ledger, summed by account family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentLedger {
    pub clearing: i64,
    pub fees: i64,
    pub available: i64,
    pub escrow: i64,
    pub patient_refunds: i64,
    pub suspense: i64,
}

pub(crate) const CHARGE_COLUMNS: &str = "id, payment_id, installment, method, gateway_id, amount_centavos, status, br_code, \
     linha_digitavel, barcode, due_date, expires_at_ms, paid_at_ms, created_at_ms";
const REFUND_COLUMNS: &str =
    "id, payment_id, charge_id, kind, amount_centavos, reason, status, gateway_id, created_at_ms, completed_at_ms";

pub(crate) fn charge_from_row(row: &AnyRow) -> Result<ChargeRecord, StoreError> {
    let installment: i64 = row.try_get("installment")?;
    Ok(ChargeRecord {
        id: row.try_get("id")?,
        payment_id: parse_column(row, "payment_id")?,
        installment: u32::try_from(installment).map_err(StoreError::corrupt)?,
        method: parse_column(row, "method")?,
        gateway_id: row.try_get("gateway_id")?,
        amount_centavos: row.try_get("amount_centavos")?,
        status: parse_column(row, "status")?,
        br_code: row.try_get("br_code")?,
        linha_digitavel: row.try_get("linha_digitavel")?,
        barcode: row.try_get("barcode")?,
        due_date: row.try_get("due_date")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        paid_at_ms: row.try_get("paid_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn refund_from_row(row: &AnyRow) -> Result<RefundRecord, StoreError> {
    Ok(RefundRecord {
        id: row.try_get("id")?,
        payment_id: parse_column(row, "payment_id")?,
        charge_id: row.try_get("charge_id")?,
        kind: parse_column(row, "kind")?,
        amount_centavos: row.try_get("amount_centavos")?,
        reason: row.try_get("reason")?,
        status: parse_column(row, "status")?,
        gateway_id: row.try_get("gateway_id")?,
        created_at_ms: row.try_get("created_at_ms")?,
        completed_at_ms: row.try_get("completed_at_ms")?,
    })
}

fn webhook_from_row(row: &AnyRow) -> Result<GatewayWebhook, StoreError> {
    let payment: Option<String> = row.try_get("payment_id")?;
    Ok(GatewayWebhook {
        gateway: row.try_get("gateway")?,
        webhook_id: row.try_get("webhook_id")?,
        payment_id: payment.map(|id| id.parse()).transpose().map_err(StoreError::corrupt)?,
        kind: row.try_get("kind")?,
        body: row.try_get("body")?,
        state: row.try_get("state")?,
        received_at_ms: row.try_get("received_at_ms")?,
    })
}

fn posting_statements(posting: &Posting, now_ms: i64) -> impl Iterator<Item = Statement> + '_ {
    let posting_id = uuid::Uuid::now_v7().to_string();
    posting.entries().iter().map(move |entry| {
        Statement::new(
            "INSERT INTO ledger_entries (posting_id, payment_id, kind, account, amount_centavos, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                posting_id.as_str().into(),
                posting.payment().map(|id| id.to_string()).into(),
                posting.kind().into(),
                entry.account.to_string().into(),
                entry.amount.centavos().into(),
                now_ms.into(),
            ],
        )
    })
}

fn charge_statement(charge: &ChargeRecord) -> Statement {
    Statement::new(
        "INSERT INTO charges (id, payment_id, installment, method, gateway_id, amount_centavos, status, br_code,
             linha_digitavel, barcode, due_date, expires_at_ms, paid_at_ms, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        vec![
            charge.id.as_str().into(),
            charge.payment_id.to_string().into(),
            i64::from(charge.installment).into(),
            charge.method.as_str().into(),
            charge.gateway_id.as_str().into(),
            charge.amount_centavos.into(),
            charge.status.as_str().into(),
            charge.br_code.clone().into(),
            charge.linha_digitavel.clone().into(),
            charge.barcode.clone().into(),
            charge.due_date.clone().into(),
            charge.expires_at_ms.into(),
            charge.paid_at_ms.into(),
            charge.created_at_ms.into(),
        ],
    )
    .unique("charge")
}

fn refund_statement(refund: &RefundRecord) -> Statement {
    Statement::new(
        "INSERT INTO refunds (id, payment_id, charge_id, kind, amount_centavos, reason, status, gateway_id,
             created_at_ms, completed_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        vec![
            refund.id.as_str().into(),
            refund.payment_id.to_string().into(),
            refund.charge_id.as_str().into(),
            refund.kind.as_str().into(),
            refund.amount_centavos.into(),
            refund.reason.as_str().into(),
            refund.status.as_str().into(),
            refund.gateway_id.clone().into(),
            refund.created_at_ms.into(),
            refund.completed_at_ms.into(),
        ],
    )
    .unique("refund")
}

/// The statements of one movement, in the order they are checked.
fn movement_plan(movement: &Movement) -> Plan {
    let now: Value = movement.now_ms.into();
    let payment_text = movement.payment_id.map(|id| id.to_string());
    let mut statements = Vec::new();
    if let (Some(payment), Some(expect)) = (&payment_text, movement.expect_status) {
        let to = movement.new_status.unwrap_or(expect);
        // Guarded by the expected status; the time moves only when the status does.
        statements.push(
            Statement::new(
                "UPDATE payments SET status = $1, updated_at_ms = CASE WHEN status = $1 THEN updated_at_ms ELSE $2 END
                 WHERE id = $3 AND status = $4",
                vec![to.as_str().into(), now.clone(), payment.as_str().into(), expect.as_str().into()],
            )
            .one("payment status changed meanwhile"),
        );
    }
    statements.extend(movement.new_charge.iter().map(charge_statement));
    if let Some((charge, at)) = &movement.charge_paid {
        statements.push(
            Statement::new(
                "UPDATE charges SET status = 'paid', paid_at_ms = $1 WHERE id = $2 AND status = 'active'",
                vec![(*at).into(), charge.as_str().into()],
            )
            .one("charge is not active"),
        );
    }
    if let Some((charge, at)) = &movement.charge_received {
        statements.push(Statement::new(
            "UPDATE charges SET paid_at_ms = COALESCE(paid_at_ms, $1) WHERE id = $2",
            vec![(*at).into(), charge.as_str().into()],
        ));
    }
    statements.extend(movement.new_refunds.iter().map(refund_statement));
    if let Some((refund, gateway_id, at)) = &movement.refund_completed {
        statements.push(
            Statement::new(
                "UPDATE refunds SET status = 'completed', completed_at_ms = $1, gateway_id = COALESCE($2, gateway_id)
                 WHERE id = $3 AND status = 'requested'",
                vec![(*at).into(), gateway_id.clone().into(), refund.as_str().into()],
            )
            .one("refund is not awaiting completion"),
        );
    }
    for posting in &movement.postings {
        statements.extend(posting_statements(posting, movement.now_ms));
    }
    if let Some((gateway, id, state, note)) = &movement.webhook {
        statements.push(Statement::new(
            "UPDATE gateway_webhooks SET state = $1, note = $2, applied_at_ms = $3 WHERE gateway = $4 AND webhook_id = $5",
            vec![(*state).into(), note.as_str().into(), now.clone(), gateway.as_str().into(), id.as_str().into()],
        ));
    }
    if let (Some(payment), Some((is_fraud, source, note))) = (&payment_text, &movement.label) {
        statements
            .push(Statement::new("DELETE FROM payment_labels WHERE payment_id = $1", vec![payment.as_str().into()]));
        statements.push(Statement::new(
            "INSERT INTO payment_labels (payment_id, is_fraud, source, note, created_at_ms, labelled_by)
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                payment.as_str().into(),
                i64::from(*is_fraud).into(),
                (*source).into(),
                note.as_str().into(),
                now.clone(),
                movement.label_by.clone().into(),
            ],
        ));
    }
    if let Some(entry) = &movement.audit {
        statements.push(crate::people::audit_statement(entry));
    }
    if let Some(contract) = &movement.contract {
        statements.push(Statement::new(
            "INSERT INTO contracts (payment_id, envelope_id, status, created_at_ms, signed_at_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (payment_id) DO UPDATE SET status = $3, signed_at_ms = $5",
            vec![
                contract.payment_id.to_string().into(),
                contract.envelope_id.as_str().into(),
                contract.status.as_str().into(),
                contract.created_at_ms.into(),
                contract.signed_at_ms.into(),
            ],
        ));
    }
    if let (Some(payment), Some((reason, conversation))) = (&payment_text, &movement.review_case) {
        statements.push(
            Statement::new(
                "INSERT INTO review_cases (id, payment_id, reason, conversation_id, status, created_at_ms)
                 VALUES ($1, $2, $3, $4, 'open', $5) ON CONFLICT DO NOTHING",
                vec![
                    uuid::Uuid::now_v7().to_string().into(),
                    payment.as_str().into(),
                    reason.as_str().into(),
                    conversation.clone().into(),
                    now.clone(),
                ],
            )
            .one("review case already open"),
        );
    }
    if let (Some(payment), Some(reason)) = (&payment_text, movement.case) {
        statements.push(Statement::new(
            "INSERT INTO review_cases (id, payment_id, reason, status, created_at_ms)
             VALUES ($1, $2, $3, 'open', $4) ON CONFLICT DO NOTHING",
            vec![uuid::Uuid::now_v7().to_string().into(), payment.as_str().into(), reason.into(), now.clone()],
        ));
    }
    if let (Some(payment), Some((case, outcome, note))) = (&payment_text, &movement.review_closed) {
        statements.push(
            Statement::new(
                "UPDATE review_cases SET status = 'closed', outcome = $1, note = $2, closed_at_ms = $3
                 WHERE id = $4 AND payment_id = $5 AND status = 'open'",
                vec![
                    (*outcome).into(),
                    note.as_str().into(),
                    now.clone(),
                    case.as_str().into(),
                    payment.as_str().into(),
                ],
            )
            .one("review case is not open"),
        );
    }
    if let (Some(payment), true) = (&payment_text, movement.charges_cancelled) {
        statements.push(Statement::new(
            "UPDATE charges SET status = 'cancelled' WHERE payment_id = $1 AND status = 'active'",
            vec![payment.as_str().into()],
        ));
    }
    statements.extend(movement.new_intents.iter().map(intent_statement));
    for intent in &movement.intents_done {
        statements.push(
            Statement::new(
                "UPDATE intents SET status = 'done', done_at_ms = $1 WHERE id = $2 AND status = 'pending'",
                vec![now.clone(), intent.as_str().into()],
            )
            .one("intent is not pending"),
        );
    }
    statements.extend(movement.idempotency.iter().map(completion_statement));
    let events = match (movement.payment_id, movement.provider_id) {
        (Some(payment), Some(provider)) if !movement.events.is_empty() => {
            Some(PlannedEvents { payment, provider, events: movement.events.clone(), now_ms: movement.now_ms })
        }
        _ => None,
    };
    Plan { statements, events }
}

const WEBHOOK_INSERT: &str =
    "INSERT INTO gateway_webhooks (gateway, webhook_id, payment_id, kind, body, state, received_at_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (gateway, webhook_id) DO NOTHING";

impl Store {
    /// Writes one movement of a payment: status, postings, charge, refund, webhook state, label,
    /// contract, intents and events, all or nothing (in the writer's next batch). Returns the
    /// events as written.
    pub async fn apply_movement(&self, movement: &Movement) -> Result<Vec<EventRecord>, StoreError> {
        Ok(self.writer.write(movement_plan(movement)).await?.events)
    }

    /// A payment's intents still waiting for their effect, oldest first.
    pub async fn pending_intents(&self, payment: PaymentId) -> Result<Vec<IntentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, payment_id, kind, installment, created_at_ms FROM intents
             WHERE payment_id = $1 AND status = 'pending' ORDER BY created_at_ms, id",
        )
        .bind(payment.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let installment: Option<i64> = row.try_get("installment")?;
                Ok(IntentRecord {
                    id: row.try_get("id")?,
                    payment_id: parse_column(row, "payment_id")?,
                    kind: parse_column(row, "kind")?,
                    installment: installment.map(u32::try_from).transpose().map_err(StoreError::corrupt)?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect()
    }

    pub async fn charges(&self, payment: PaymentId) -> Result<Vec<ChargeRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {CHARGE_COLUMNS} FROM charges WHERE payment_id = $1 ORDER BY installment"
        ));
        let rows = sqlx::query(sql).bind(payment.to_string()).fetch_all(&self.pool).await?;
        rows.iter().map(charge_from_row).collect()
    }

    pub async fn charge_by_gateway_id(&self, gateway_id: &str) -> Result<Option<ChargeRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {CHARGE_COLUMNS} FROM charges WHERE gateway_id = $1"));
        let row = sqlx::query(sql).bind(gateway_id.to_owned()).fetch_optional(&self.pool).await?;
        row.as_ref().map(charge_from_row).transpose()
    }

    /// Every charge, oldest first, `limit` at a time after `after_id` (for reconciliation).
    pub async fn all_charges(&self, after_id: &str, limit: i64) -> Result<Vec<ChargeRecord>, StoreError> {
        let sql =
            sqlx::AssertSqlSafe(format!("SELECT {CHARGE_COLUMNS} FROM charges WHERE id > $1 ORDER BY id LIMIT $2"));
        let rows = sqlx::query(sql).bind(after_id.to_owned()).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(charge_from_row).collect()
    }

    pub async fn refunds(&self, payment: PaymentId) -> Result<Vec<RefundRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 ORDER BY created_at_ms, id"
        ));
        let rows = sqlx::query(sql).bind(payment.to_string()).fetch_all(&self.pool).await?;
        rows.iter().map(refund_from_row).collect()
    }

    pub async fn contract(&self, payment: PaymentId) -> Result<Option<ContractRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT payment_id, envelope_id, status, created_at_ms, signed_at_ms FROM contracts WHERE payment_id = $1",
        )
        .bind(payment.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(ContractRecord {
                payment_id: parse_column(&row, "payment_id")?,
                envelope_id: row.try_get("envelope_id")?,
                status: parse_column(&row, "status")?,
                created_at_ms: row.try_get("created_at_ms")?,
                signed_at_ms: row.try_get("signed_at_ms")?,
            })
        })
        .transpose()
    }

    /// Signed contracts whose signed copy is not in the document store yet (oldest first).
    pub async fn contracts_owing_signed_copy(&self, limit: i64) -> Result<Vec<(PaymentId, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT payment_id, envelope_id FROM contracts WHERE status = 'signed' AND signed_copy_at_ms IS NULL
             ORDER BY signed_at_ms LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok((parse_column(row, "payment_id")?, row.try_get("envelope_id")?))).collect()
    }

    /// The signed copy of the payment's contract is in the document store.
    pub async fn signed_copy_stored(&self, payment: PaymentId, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE contracts SET signed_copy_at_ms = $1 WHERE payment_id = $2 AND signed_copy_at_ms IS NULL")
            .bind(now_ms)
            .bind(payment.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn contract_by_envelope(&self, envelope_id: &str) -> Result<Option<PaymentId>, StoreError> {
        let row = sqlx::query("SELECT payment_id FROM contracts WHERE envelope_id = $1")
            .bind(envelope_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| parse_column(&row, "payment_id")).transpose()
    }

    /// Records a webhook as received. False when it was received before (a duplicate).
    pub async fn record_webhook(&self, webhook: &GatewayWebhook) -> Result<bool, StoreError> {
        let statement = Statement::new(
            WEBHOOK_INSERT,
            vec![
                webhook.gateway.as_str().into(),
                webhook.webhook_id.as_str().into(),
                webhook.payment_id.map(|id| id.to_string()).into(),
                webhook.kind.as_str().into(),
                webhook.body.as_str().into(),
                webhook.state.as_str().into(),
                webhook.received_at_ms.into(),
            ],
        );
        let written = self.writer.write(Plan { statements: vec![statement], events: None }).await?;
        Ok(written.rows.first() == Some(&1))
    }

    /// A payment's webhooks still waiting to be applied, in the order they arrived.
    pub async fn pending_webhooks(&self, payment: PaymentId) -> Result<Vec<GatewayWebhook>, StoreError> {
        let rows = sqlx::query(
            "SELECT gateway, webhook_id, payment_id, kind, body, state, received_at_ms FROM gateway_webhooks
             WHERE state = 'pending' AND payment_id = $1 ORDER BY received_at_ms, webhook_id",
        )
        .bind(payment.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    /// Payments with work left to do, each part read by an index: an intent not performed, a
    /// charge past its expiry, a refund owed, a webhook pending.
    pub async fn payments_needing_work(&self, older_than_ms: i64, limit: i64) -> Result<Vec<PaymentId>, StoreError> {
        let rows = sqlx::query(
            "SELECT payment_id AS id FROM intents WHERE status = 'pending' AND created_at_ms < $1
             UNION SELECT payment_id AS id FROM charges WHERE status = 'active' AND expires_at_ms < $3
             UNION SELECT payment_id AS id FROM refunds WHERE status = 'requested' AND created_at_ms < $1
             UNION SELECT payment_id AS id FROM gateway_webhooks WHERE state = 'pending' AND payment_id IS NOT NULL
                 AND received_at_ms < $1
             LIMIT $2",
        )
        .bind(older_than_ms)
        .bind(limit)
        .bind(crate::now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| parse_column(row, "id")).collect()
    }

    /// Whether the payment's escrow was released (once is all there is).
    pub async fn escrow_released(&self, payment: PaymentId) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM ledger_entries WHERE payment_id = $1 AND kind = 'escrow_release' LIMIT 1",
        )
        .bind(payment.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// A payment's ledger, summed by account family.
    pub async fn payment_ledger(&self, payment: PaymentId) -> Result<PaymentLedger, StoreError> {
        let rows = sqlx::query(
            "SELECT account, CAST(SUM(amount_centavos) AS BIGINT) AS total FROM ledger_entries WHERE payment_id = $1
             GROUP BY account",
        )
        .bind(payment.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut ledger = PaymentLedger::default();
        for row in rows {
            let account: String = row.try_get("account")?;
            let total: i64 = row.try_get("total")?;
            match account.parse::<Account>().map_err(StoreError::corrupt)? {
                Account::GatewayClearing => ledger.clearing += total,
                Account::PlatformFees => ledger.fees += total,
                Account::ProviderAvailable(_) => ledger.available += total,
                Account::ProviderEscrow(_) => ledger.escrow += total,
                Account::PatientRefunds => ledger.patient_refunds += total,
                Account::Suspense => ledger.suspense += total,
            }
        }
        Ok(ledger)
    }

    /// Postings whose entries do not sum to zero (there should be none).
    pub async fn unbalanced_postings(&self) -> Result<Vec<LedgerProblem>, StoreError> {
        let rows = sqlx::query(
            "SELECT posting_id, CAST(SUM(amount_centavos) AS BIGINT) AS total FROM ledger_entries
             GROUP BY posting_id HAVING SUM(amount_centavos) <> 0 LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let total: i64 = row.try_get("total")?;
                Ok(LedgerProblem {
                    payment_id: None,
                    posting_id: Some(row.try_get("posting_id")?),
                    problem: format!("entries sum to {total} centavos"),
                })
            })
            .collect()
    }

    /// Payment ids, `limit` at a time after `after_id`, with their status and money settings.
    pub async fn payments_for_check(
        &self,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<(PaymentId, PaymentStatus, bool)>, StoreError> {
        let rows = sqlx::query("SELECT id, status, escrow FROM payments WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after_id.to_owned())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let escrow: i64 = row.try_get("escrow")?;
                Ok((parse_column(row, "id")?, parse_column(row, "status")?, escrow == 1))
            })
            .collect()
    }

    /// What a provider is waiting for: (amount, fee in basis points) of each charge issued and not
    /// paid yet, and of each approved payment whose first charge is not issued yet.
    pub async fn provider_pending(&self, provider: ProviderId) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.amount_centavos AS amount, p.fee_bps AS fee FROM charges c JOIN payments p ON p.id = c.payment_id
             WHERE p.provider_id = $1 AND c.status = 'active'
             UNION ALL
             SELECT p.amount_centavos AS amount, p.fee_bps AS fee FROM payments p
             WHERE p.provider_id = $1 AND p.status = 'approved'
               AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.payment_id = p.id)
             LIMIT 100000",
        )
        .bind(provider.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok((row.try_get("amount")?, row.try_get("fee")?))).collect()
    }
}

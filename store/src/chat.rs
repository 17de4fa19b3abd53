//! Chat conversations, their transcripts, and review cases opened from them.

use crate::database::{Store, StoreError};
use crate::parties::{PatientCredential, parse_column, parse_optional_column};
use medpay_models::{PatientId, PaymentId, ProviderId};
use sqlx::Row;

/// Most messages a transcript returns.
pub const TRANSCRIPT_MAX: i64 = 500;

#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRecord {
    pub id: String,
    pub patient_id: PatientId,
    /// The provider the credential that started it was scoped to: the conversation (and what the
    /// bot tells in it) is that provider's part of the patient's data. None: all of it.
    pub scope: Option<ProviderId>,
    /// `bot` or `handed_off`.
    pub status: String,
    pub handoff_reason: Option<String>,
    pub slots: serde_json::Value,
    pub last_seq: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub seq: i64,
    /// `patient`, `bot` or `agent`.
    pub role: String,
    pub text: String,
    pub intent: Option<String>,
    /// The classifier's probability in basis points (10 000 = certain).
    pub confidence_bps: Option<i64>,
    pub created_at_ms: i64,
}

/// One turn of a conversation, written at once.
#[derive(Debug, Clone)]
pub struct ChatTurn {
    pub conversation_id: String,
    /// The messages to append (numbered from the conversation's `last_seq`).
    pub messages: Vec<ChatMessage>,
    /// What the bot remembers after this turn; None leaves it as it is (a person's answer).
    pub slots: Option<serde_json::Value>,
    /// Set when a person takes over.
    pub handoff_reason: Option<String>,
    pub now_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReviewCase {
    pub id: String,
    pub payment_id: PaymentId,
    pub reason: String,
    pub conversation_id: Option<String>,
    pub status: String,
    pub created_at_ms: i64,
    /// Who claimed it last (`person:…`, `analyst`, `admin`), when, and the person's name.
    pub claimed_by: Option<String>,
    pub claimed_at_ms: Option<i64>,
    pub claimed_by_name: Option<String>,
}

/// A review case's columns, with its claimant's name (`c`: review_cases, `pe`: people).
const CASE_COLUMNS: &str = "c.id AS id, c.payment_id AS payment_id, c.reason AS reason, \
     c.conversation_id AS conversation_id, c.status AS status, c.created_at_ms AS created_at_ms, \
     c.claimed_by AS claimed_by, c.claimed_at_ms AS claimed_at_ms, pe.name AS claimed_by_name";

fn case_from_row(row: &sqlx::any::AnyRow) -> Result<ReviewCase, StoreError> {
    Ok(ReviewCase {
        id: row.try_get("id")?,
        payment_id: parse_column(row, "payment_id")?,
        reason: row.try_get("reason")?,
        conversation_id: row.try_get("conversation_id")?,
        status: row.try_get("status")?,
        created_at_ms: row.try_get("created_at_ms")?,
        claimed_by: row.try_get("claimed_by")?,
        claimed_at_ms: row.try_get("claimed_at_ms")?,
        claimed_by_name: row.try_get("claimed_by_name")?,
    })
}

fn conversation_from_row(row: &sqlx::any::AnyRow) -> Result<ConversationRecord, StoreError> {
    let slots: String = row.try_get("slots")?;
    Ok(ConversationRecord {
        id: row.try_get("id")?,
        patient_id: parse_column(row, "patient_id")?,
        scope: parse_optional_column(row, "provider_id")?,
        status: row.try_get("status")?,
        handoff_reason: row.try_get("handoff_reason")?,
        slots: serde_json::from_str(&slots).map_err(StoreError::corrupt)?,
        last_seq: row.try_get("last_seq")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

const CONVERSATION_COLUMNS: &str =
    "id, patient_id, provider_id, status, handoff_reason, slots, last_seq, created_at_ms, updated_at_ms";

fn message_from_row(row: &sqlx::any::AnyRow) -> Result<ChatMessage, StoreError> {
    Ok(ChatMessage {
        seq: row.try_get("seq")?,
        role: row.try_get("role")?,
        text: row.try_get("text")?,
        intent: row.try_get("intent")?,
        confidence_bps: row.try_get("confidence_bps")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

impl Store {
    /// A new conversation of the patient of `by`, in its scope.
    pub async fn create_conversation(&self, id: &str, by: PatientCredential, now_ms: i64) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO chat_conversations (id, patient_id, provider_id, status, slots, last_seq, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, 'bot', '{}', 0, $4, $4)",
        )
        .bind(id.to_owned())
        .bind(by.patient.to_string())
        .bind(by.provider.map(|provider| provider.to_string()))
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    pub async fn conversation(&self, id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {CONVERSATION_COLUMNS} FROM chat_conversations WHERE id = $1"));
        let row = sqlx::query(sql).bind(id.to_owned()).fetch_optional(&self.pool).await?;
        row.as_ref().map(conversation_from_row).transpose()
    }

    /// Conversations handed to a person, most recent first.
    pub async fn handed_off_conversations(&self, limit: i64) -> Result<Vec<ConversationRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {CONVERSATION_COLUMNS} FROM chat_conversations WHERE status = 'handed_off'
             ORDER BY updated_at_ms DESC LIMIT $1"
        ));
        let rows = sqlx::query(sql).bind(limit.clamp(1, 200)).fetch_all(&self.pool).await?;
        rows.iter().map(conversation_from_row).collect()
    }

    /// The conversation's messages in order (the last `TRANSCRIPT_MAX`).
    pub async fn transcript(&self, id: &str) -> Result<Vec<ChatMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, role, text, intent, confidence_bps, created_at_ms FROM chat_messages
             WHERE conversation_id = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(id.to_owned())
        .bind(TRANSCRIPT_MAX)
        .fetch_all(&self.pool)
        .await?;
        let mut messages = rows.iter().map(message_from_row).collect::<Result<Vec<_>, StoreError>>()?;
        messages.reverse();
        Ok(messages)
    }

    /// What people (support agents) said in the conversation after message `after_seq`, in order:
    /// the patient's open chat shows them as they arrive.
    pub async fn agent_messages_after(&self, id: &str, after_seq: i64) -> Result<Vec<ChatMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, role, text, intent, confidence_bps, created_at_ms FROM chat_messages
             WHERE conversation_id = $1 AND seq > $2 AND role = 'agent' ORDER BY seq LIMIT $3",
        )
        .bind(id.to_owned())
        .bind(after_seq)
        .bind(TRANSCRIPT_MAX)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// Appends a turn: its messages, the slots and a hand-off, all or nothing. Returns the number of
    /// the last message.
    pub async fn record_chat_turn(&self, turn: &ChatTurn) -> Result<i64, StoreError> {
        let mut transaction = self.begin_write().await?;
        let connection = &mut *transaction;
        // Numbers are taken by raising last_seq first: the row stays locked until commit, so a
        // person's answer and the patient's message never take the same number (PostgreSQL).
        let count = i64::try_from(turn.messages.len()).map_err(StoreError::corrupt)?;
        let row =
            sqlx::query("UPDATE chat_conversations SET last_seq = last_seq + $1 WHERE id = $2 RETURNING last_seq")
                .bind(count)
                .bind(turn.conversation_id.clone())
                .fetch_optional(&mut *connection)
                .await?
                .ok_or(StoreError::Conflict("no such conversation"))?;
        let mut seq: i64 = row.try_get::<i64, _>("last_seq")? - count;
        for message in &turn.messages {
            seq += 1;
            sqlx::query(
                "INSERT INTO chat_messages (conversation_id, seq, role, text, intent, confidence_bps, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(turn.conversation_id.clone())
            .bind(seq)
            .bind(message.role.clone())
            .bind(message.text.clone())
            .bind(message.intent.clone())
            .bind(message.confidence_bps)
            .bind(turn.now_ms)
            .execute(&mut *connection)
            .await?;
        }
        sqlx::query(
            "UPDATE chat_conversations SET last_seq = $1, slots = COALESCE($2, slots), updated_at_ms = $3,
                 status = CASE WHEN $4 = '' THEN status ELSE 'handed_off' END,
                 handoff_reason = CASE WHEN $4 = '' THEN handoff_reason ELSE $4 END
             WHERE id = $5",
        )
        .bind(seq)
        .bind(turn.slots.as_ref().map(|slots| slots.to_string()))
        .bind(turn.now_ms)
        .bind(turn.handoff_reason.clone().unwrap_or_default())
        .bind(turn.conversation_id.clone())
        .execute(&mut *connection)
        .await?;
        transaction.commit().await?;
        Ok(seq)
    }

    /// A review case by id.
    pub async fn review_case(&self, id: &str) -> Result<Option<ReviewCase>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {CASE_COLUMNS} FROM review_cases c LEFT JOIN people pe ON 'person:' || pe.id = c.claimed_by WHERE c.id = $1"
        ));
        let row = sqlx::query(sql).bind(id.to_owned()).fetch_optional(&self.pool).await?;
        row.as_ref().map(case_from_row).transpose()
    }

    /// Open review cases, oldest first, optionally of one provider, of one reason, and opened
    /// at or before `opened_before_ms`.
    pub async fn open_review_cases(
        &self,
        provider: Option<medpay_models::ProviderId>,
        reason: Option<&str>,
        opened_before_ms: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ReviewCase>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {CASE_COLUMNS} FROM review_cases c JOIN payments p ON p.id = c.payment_id
             LEFT JOIN people pe ON 'person:' || pe.id = c.claimed_by
             WHERE c.status = 'open' AND ($1 = '' OR p.provider_id = $1) AND ($2 = '' OR c.reason = $2)
               AND c.created_at_ms <= $3
             ORDER BY c.created_at_ms, c.id LIMIT $4"
        ));
        let rows = sqlx::query(sql)
            .bind(provider.map(|id| id.to_string()).unwrap_or_default())
            .bind(reason.unwrap_or_default().to_owned())
            .bind(opened_before_ms.unwrap_or(i64::MAX))
            .bind(limit.clamp(1, 200))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(case_from_row).collect()
    }

    /// Open cases of payments their decision sent to review that waited longer than their
    /// provider's review time limit, oldest first: (case, payment, the provider's fail mode, its
    /// limit in hours).
    pub async fn overdue_review_cases(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, medpay_models::PaymentId, medpay_models::FailMode, u32)>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.id AS id, c.payment_id AS payment_id, v.score_fail_mode AS fail_mode,
                    v.review_time_limit_hours AS hours
             FROM review_cases c JOIN payments p ON p.id = c.payment_id JOIN providers v ON v.id = p.provider_id
             WHERE c.status = 'open' AND c.reason = $1 AND c.created_at_ms <= $2 - v.review_time_limit_hours * 3600000
             ORDER BY c.created_at_ms LIMIT $3",
        )
        .bind(crate::payments::REVIEW_REASON_DECISION)
        .bind(now_ms)
        .bind(limit.clamp(1, 500))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let hours: i64 = row.try_get("hours")?;
                Ok((
                    row.try_get("id")?,
                    parse_column(row, "payment_id")?,
                    parse_column(row, "fail_mode")?,
                    u32::try_from(hours).map_err(StoreError::corrupt)?,
                ))
            })
            .collect()
    }
}

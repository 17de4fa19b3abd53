//! LGPD for patients: everything held about a patient, as JSON, and erasure. Erasure keeps what the
//! law makes us keep (payments, ledger entries and the CPF on them, for `retention_years`) and
//! overwrites or deletes every other personal field; the request, its outcome and its date go to
//! the audit log in the same transaction.

use crate::auth::{PatientCredential, Principal, Role, new_secret};
use crate::chat::{ConversationView, conversation_view};
use crate::dto::{EventView, PatientView, PaymentView, timestamp};
use crate::error::{ApiError, ErrorBody, rejection};
use crate::money::RefundView;
use crate::people::DAY_MS;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use medpay_models::PatientId;
use medpay_store::{AuditEntry, PatientRecord, PaymentFilter};
use serde::Serialize;
use utoipa::ToSchema;

/// Most payments an export holds (a patient with more gets the newest, and `truncated`).
const EXPORT_PAYMENTS_MAX: usize = 10_000;
/// E-mails in an export (the newest).
const EXPORT_EMAILS_MAX: i64 = 10_000;
/// Events read per payment for its notifications.
const EXPORT_EVENTS_PER_PAYMENT: i64 = 500;

/// The patient in the path, the part of their data the caller opens (all of it, or one provider's
/// part for a credential scoped to it) and their record as that part shows it, for the patient
/// themself or the admin; anyone else learns nothing about the id.
async fn data_subject(
    state: &AppState,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<(PatientCredential, PatientRecord), ApiError> {
    let not_found = || ApiError::not_found("patient_not_found", "no such patient");
    let Path(raw) = id.map_err(rejection)?;
    let id: PatientId = raw.parse().map_err(|_| not_found())?;
    let part = match principal {
        Principal::Patient(own) if own.patient == id => own,
        Principal::Patient(_) => return Err(not_found()),
        Principal::Admin | Principal::Person(_, Role::Admin) => PatientCredential { patient: id, provider: None },
        _ => return Err(ApiError::forbidden("a patient's data is theirs (and the admin's) to export or erase")),
    };
    let record = state.store.patient_seen_by(part.provider, id).await?.ok_or_else(not_found)?;
    Ok((part, record))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PatientExport {
    pub exported_at: String,
    /// The patient as registered, in full (their own data, unmasked).
    pub patient: ExportedPatient,
    pub payments: Vec<PaymentView>,
    /// True when there were more than 10 000 payments (the newest are here).
    pub truncated: bool,
    pub refunds: Vec<RefundView>,
    pub conversations: Vec<ConversationView>,
    /// What the patient was told of their payments: each status change, as sent.
    pub notifications: Vec<ExportedNotification>,
    /// The e-mails sent to the patient (or waiting to be), as the app lists them.
    pub emails: Vec<crate::notify::NotificationView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedPatient {
    #[serde(flatten)]
    pub view: PatientView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedNotification {
    pub payment_id: String,
    #[serde(flatten)]
    pub event: EventView,
}

#[utoipa::path(get, path = "/v1/patients/{id}/export", tag = "patients", security(("bearer" = [])),
    params(("id" = String, Path, description = "patient id")),
    responses((status = 200, body = PatientExport, description = "everything held about the patient: their record, payments, refunds, chats and notifications (with a credential a provider was handed, what concerns that provider)"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<PatientExport>, ApiError> {
    let (part, record) = data_subject(&state, principal, id).await?;
    let patient = part.patient;
    let mut payments = Vec::new();
    let mut before = None;
    let page = medpay_store::PAYMENTS_PAGE_MAX;
    // Pages, newest first, until one is short (nothing more) or there are more than the export
    // holds.
    let truncated = loop {
        let filter = PaymentFilter { patient_id: Some(patient), provider_id: part.provider, before, limit: page };
        let found = state.store.list_payments(&filter).await?;
        let full = i64::try_from(found.len()).unwrap_or(i64::MAX) == page;
        before = found.last().map(|last| (last.created_at_ms, last.id));
        payments.extend(found);
        if !full {
            break false;
        }
        if payments.len() > EXPORT_PAYMENTS_MAX {
            break true;
        }
    };
    payments.truncate(EXPORT_PAYMENTS_MAX);
    let mut views = Vec::with_capacity(payments.len());
    let mut refunds = Vec::new();
    let mut notifications = Vec::new();
    for payment in &payments {
        views.push(crate::payments::payment_json(&state, payment.id).await?.0);
        refunds.extend(state.store.refunds(payment.id).await?.iter().map(RefundView::new));
        for event in state.store.events(payment.id, 0, EXPORT_EVENTS_PER_PAYMENT).await? {
            notifications
                .push(ExportedNotification { payment_id: payment.id.to_string(), event: EventView::new(&event) });
        }
    }
    let mut conversations = Vec::new();
    for conversation in state.store.patient_conversations(patient).await? {
        if let Some(record) = state.store.conversation(&conversation).await?
            && (part.provider.is_none() || record.scope == part.provider)
        {
            conversations.push(conversation_view(&state, record).await?);
        }
    }
    let emails = state
        .store
        .patient_notifications(part, EXPORT_EMAILS_MAX)
        .await?
        .into_iter()
        .map(crate::notify::NotificationView::new)
        .collect();
    tracing::info!(patient_id = %patient, scope = ?part.provider, payments = views.len(), conversations = conversations.len(), "patient data exported");
    Ok(Json(PatientExport {
        exported_at: timestamp(medpay_store::now_ms()),
        patient: ExportedPatient { view: PatientView::new(&record, None) },
        payments: views,
        truncated,
        refunds,
        conversations,
        notifications,
        emails,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Erasure {
    pub patient_id: String,
    pub erased_at: String,
    /// Until when the financial records (and the CPF on them) are kept, as the law requires.
    pub financial_records_kept_until: String,
    /// Overwritten or deleted now.
    pub erased: Vec<String>,
    /// Kept, and why.
    pub kept: Vec<String>,
}

#[utoipa::path(post, path = "/v1/patients/{id}/erasure", tag = "patients", security(("bearer" = [])),
    params(("id" = String, Path, description = "patient id")),
    responses((status = 200, body = Erasure, description = "erased; the patient's token stops working at once"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "`credential_scoped`: erasure is asked with the patient's own sign-in, not a credential a provider was handed"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`already_erased`")))]
pub async fn erase(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Erasure>, ApiError> {
    let (part, record) = data_subject(&state, principal, id).await?;
    // Whoever holds a credential a provider was handed (the provider too) erases nobody's record
    // at every other provider.
    if part.provider.is_some() {
        return Err(crate::auth::scoped_refusal(
            "erasure is asked with the patient's own sign-in (a link from MedPay support) or by the admin",
        ));
    }
    let patient = part.patient;
    let already = || ApiError::conflict("already_erased", "this patient's personal data was erased already");
    if record.erased_at_ms.is_some() {
        return Err(already());
    }
    let now = medpay_store::now_ms();
    let kept_until = now + i64::from(state.config.limits.retention_years) * 365 * DAY_MS;
    let erased = [
        "name",
        "email",
        "phone",
        "tokens (the patient's and those shown to providers)",
        "the providers' copies of name, email and phone",
        "payments' devices and addresses",
        "chat messages",
        "what the bot remembered",
    ]
    .map(str::to_owned)
    .to_vec();
    let kept = vec![
        "payments, installments, charges, refunds and ledger entries (financial records)".to_owned(),
        "the CPF on them, never shown again (tax records: Receita Federal's DMED)".to_owned(),
    ];
    // The audit entry names what was done, never the data itself.
    let after = serde_json::json!({"erased": erased, "kept": kept, "kept_until": timestamp(kept_until)});
    let audit = AuditEntry {
        at_ms: now,
        ..crate::people::audit_entry(principal, "patient.erase", &format!("patient:{patient}"), None, Some(after))
    };
    // The token becomes the hash of a secret nobody holds.
    let dead_token = medpay_store::sha256_hex(new_secret("erased").as_bytes());
    let Some(old_tokens) = state.store.erase_patient(patient, &dead_token, &audit).await? else {
        return Err(already());
    };
    // Refused at once on this node, within the credential TTL on the others.
    state.lookups.forget_patient(patient, &old_tokens);
    tracing::warn!(patient_id = %patient, by = %audit.actor, "patient's personal data erased (LGPD)");
    Ok(Json(Erasure {
        patient_id: patient.to_string(),
        erased_at: timestamp(now),
        financial_records_kept_until: timestamp(kept_until),
        erased,
        kept,
    }))
}

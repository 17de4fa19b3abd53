//! E-mails to patients (issue 13), through the durable outbox of migration 0022: a charge issued
//! (with the PIX code or the boleto's linha digitável), a payment confirmed, an installment due in
//! three days, a refund completed, a contract to sign. Each is derived once from the money tables,
//! claimed by one node, sent over SMTP (lettre) or, on the embedded defaults, written as `.eml`
//! files to a folder, and retried with backoff while the server is down. The text of each kind
//! comes from one template (`render`), kept as sent for the patient's app.

use crate::auth::Principal;
use crate::dto::timestamp;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use chrono::{Days, NaiveDate};
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use medpay_models::Money;
use medpay_store::{ChargeRecord, NotificationRecord};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// A row committed this long after the time it carries is still seen by the next derivation.
const DERIVE_OVERLAP_MS: i64 = 10 * 60 * 1_000;
/// An installment is reminded of this many days before it is due.
pub const DUE_REMINDER_DAYS: u64 = 3;
/// Notifications claimed per pass, and how long a claim keeps other nodes off them.
const CLAIM_BATCH: i64 = 100;
/// Batches one pass may send, back to back (the rest wait for the next pass).
const BATCHES_PER_PASS_MAX: usize = 10;
/// E-mails of a batch in flight at once (SMTP connections are pooled by lettre).
const SEND_CONCURRENCY: usize = 8;
const CLAIM_LEASE_MS: i64 = 60_000;
/// Attempts before a notification is given up (with the default base, about a day of retries).
const ATTEMPTS_MAX: i64 = 14;
const RETRY_MAX_MS: i64 = 60 * 60 * 1_000;
/// One SMTP exchange.
const SMTP_TIMEOUT_MS: u64 = 10_000;
/// The sign-in link in an e-mail works this long (once): e-mails are read later than a link a
/// provider hands over at the desk.
pub const EMAIL_SIGN_IN_TTL_MS: i64 = 24 * 60 * 60 * 1_000;
/// The notifications the app lists.
const APP_NOTIFICATIONS_MAX: i64 = 50;

/// Where e-mails go.
#[derive(Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// One `.eml` file per message, named by a UUID.
    Folder(AsyncFileTransport<Tokio1Executor>, std::path::PathBuf),
}

impl Mailer {
    pub fn from_settings(settings: &crate::config::PatientSettings) -> anyhow::Result<Mailer> {
        match &settings.smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|error| anyhow::anyhow!("MEDPAY_SMTP_URL: {error}"))?
                    .timeout(Some(Duration::from_millis(SMTP_TIMEOUT_MS)))
                    .build();
                Ok(Mailer::Smtp(transport))
            }
            None => {
                std::fs::create_dir_all(&settings.mail_dir).map_err(|error| {
                    anyhow::anyhow!("cannot create the mail folder {}: {error}", settings.mail_dir.display())
                })?;
                Ok(Mailer::Folder(AsyncFileTransport::new(&settings.mail_dir), settings.mail_dir.clone()))
            }
        }
    }

    async fn send(&self, message: Message) -> Result<(), String> {
        match self {
            Mailer::Smtp(transport) => transport.send(message).await.map(drop).map_err(|error| error.to_string()),
            Mailer::Folder(transport, _) => transport.send(message).await.map(drop).map_err(|error| error.to_string()),
        }
    }
}

/// What a notification is about, read when it is sent.
#[derive(Debug, Clone)]
pub struct Facts {
    pub first_name: String,
    pub provider_name: String,
    pub procedure: String,
    pub installments: usize,
    pub total_centavos: i64,
    pub cet_annual_bps: i64,
    /// The installment it is about: number, due date, amount.
    pub installment: Option<(u32, NaiveDate, i64)>,
    /// The charge to pay (charge issued, installment due) or paid (payment confirmed).
    pub charge: Option<ChargeRecord>,
    pub refund_centavos: Option<i64>,
    pub app_url: String,
}

fn brl(centavos: i64) -> String {
    Money::from_centavos(centavos).brl()
}

fn percent(bps: i64) -> String {
    medpay_models::money::percent_pt(bps)
}

fn day(date: NaiveDate) -> String {
    date.format("%d/%m/%Y").to_string()
}

/// How to pay a charge, in words.
fn how_to_pay(charge: &ChargeRecord) -> String {
    if let Some(code) = &charge.br_code {
        format!("PIX copia e cola (cole no app do seu banco, em PIX > Copia e cola):\n{code}\n")
    } else if let Some(line) = &charge.linha_digitavel {
        let due = charge.due_date.as_deref().and_then(|d| d.parse::<NaiveDate>().ok()).map(day).unwrap_or_default();
        format!("Linha digitável do boleto:\n{line}\nVencimento: {due}\n")
    } else {
        String::new()
    }
}

/// The subject and text of a notification: one template per kind, in Portuguese.
pub fn render(kind: &str, facts: &Facts) -> (String, String) {
    let of = |n: u32| format!("parcela {n} de {}", facts.installments);
    let (number, due, amount) = facts.installment.unwrap_or((1, NaiveDate::MIN, facts.total_centavos));
    let (subject, middle) = match kind {
        "charge_issued" => {
            let charge = facts.charge.as_ref();
            let amount = charge.map_or(amount, |c| c.amount_centavos);
            let method = if charge.is_some_and(|c| c.br_code.is_some()) { "PIX" } else { "boleto" };
            (
                format!("Sua cobrança {method} de {} — {}", brl(amount), facts.provider_name),
                format!(
                    "A {} emitiu a cobrança da {} de {}: {}.\n\n{}",
                    facts.provider_name,
                    of(number),
                    facts.procedure,
                    brl(amount),
                    charge.map(how_to_pay).unwrap_or_default()
                ),
            )
        }
        "payment_confirmed" => {
            let amount = facts.charge.as_ref().map_or(amount, |c| c.amount_centavos);
            (
                format!("Pagamento confirmado: {} — {}", brl(amount), facts.provider_name),
                format!(
                    "Recebemos o pagamento da {} de {} na {}: {}. Obrigado!\n",
                    of(number),
                    facts.procedure,
                    facts.provider_name,
                    brl(amount)
                ),
            )
        }
        "installment_due" => (
            format!("Sua {} vence em {}", of(number), day(due)),
            format!(
                "A {} de {} na {}, de {}, vence em {}.\n\n{}",
                of(number),
                facts.procedure,
                facts.provider_name,
                brl(amount),
                day(due),
                facts.charge.as_ref().map(how_to_pay).unwrap_or_default()
            ),
        ),
        "refund_completed" => {
            let refunded = facts.refund_centavos.unwrap_or_default();
            (
                format!("Reembolso concluído: {} — {}", brl(refunded), facts.provider_name),
                format!(
                    "O reembolso de {} referente a {} na {} foi concluído. O valor volta pelo mesmo meio de pagamento.\n",
                    brl(refunded),
                    facts.procedure,
                    facts.provider_name
                ),
            )
        }
        _ => (
            format!("Assine o contrato do seu parcelamento — {}", facts.provider_name),
            format!(
                "O contrato do parcelamento de {} na {} ({}x, total de {}, CET de {} ao ano) espera a sua assinatura. \
                 A ClickSign enviou o link de assinatura para este e-mail.\n",
                facts.procedure,
                facts.provider_name,
                facts.installments,
                brl(facts.total_centavos),
                percent(facts.cet_annual_bps)
            ),
        ),
    };
    let body = format!(
        "Olá, {}!\n\n{middle}\nVeja seus pagamentos no app: {}\n\nEquipe MedPay\n",
        facts.first_name, facts.app_url
    );
    (subject, body)
}

/// Runs the notifier until the server stops.
pub fn spawn(state: AppState, mailer: Mailer) {
    let poll = Duration::from_millis(state.config.patients.notify_poll_ms.max(50));
    let mut stopping = state.stopping.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(poll);
        let mut due_checked_at_ms = i64::MIN;
        let due_check_ms = i64::try_from(state.config.patients.notify_due_check_ms).unwrap_or(i64::MAX);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stopping.changed() => return,
            }
            let now = medpay_store::now_ms();
            let check_due = now.saturating_sub(due_checked_at_ms) >= due_check_ms;
            let today = crate::payments::today_in_sao_paulo();
            let last = today.checked_add_days(Days::new(DUE_REMINDER_DAYS)).unwrap_or(today);
            let (from, until) = (today.to_string(), last.to_string());
            let due = check_due.then_some((from.as_str(), until.as_str()));
            match state.store.derive_notifications(now, DERIVE_OVERLAP_MS, due).await {
                Ok(created) => {
                    if check_due {
                        due_checked_at_ms = now;
                    }
                    if created > 0 {
                        tracing::debug!(created, "patient notifications derived");
                    }
                }
                Err(error) => tracing::warn!(%error, "deriving patient notifications failed; the next pass retries"),
            }
            // Full batches are followed at once by the next, up to a bound per pass.
            for _ in 0..BATCHES_PER_PASS_MAX {
                let claimed = match state.store.claim_notifications(now, CLAIM_LEASE_MS, CLAIM_BATCH).await {
                    Ok(claimed) => claimed,
                    Err(error) => {
                        tracing::warn!(%error, "claiming patient notifications failed");
                        break;
                    }
                };
                let full = i64::try_from(claimed.len()).unwrap_or(i64::MAX) == CLAIM_BATCH;
                if let Err(error) = send_batch(&state, &mailer, claimed).await {
                    // Their claims lapse and they are sent again: at least once.
                    tracing::warn!(error = %error.message, "a notification batch could not be recorded");
                    break;
                }
                if !full {
                    break;
                }
            }
            if let Ok(pending) = state.store.pending_notifications().await {
                metrics::gauge!("medpay_notifications_pending").set(pending as f64);
            }
        }
    });
}

async fn facts(state: &AppState, notification: &NotificationRecord) -> Result<Option<(Facts, String)>, ApiError> {
    let Some(patient) = state.store.patient(notification.patient_id).await? else { return Ok(None) };
    if patient.erased_at_ms.is_some() || patient.email.is_empty() {
        return Ok(None);
    }
    let Some(payment) = state.store.payment(notification.payment_id).await? else { return Ok(None) };
    let provider_name =
        state.lookups.provider(payment.provider_id).await?.map(|provider| provider.name.clone()).unwrap_or_default();
    let charges = state.store.charges(payment.id).await?;
    let (charge, number) = match notification.kind.as_str() {
        "charge_issued" | "payment_confirmed" => {
            let charge = charges.into_iter().find(|charge| charge.id == notification.ref_id);
            let number = charge.as_ref().map_or(1, |charge| charge.installment);
            (charge, number)
        }
        "installment_due" => {
            let number = notification.ref_id.parse::<u32>().unwrap_or(1);
            let charge =
                charges.into_iter().find(|charge| charge.installment == number && charge.status.as_str() == "active");
            (charge, number)
        }
        _ => (None, 1),
    };
    let refund_centavos = if notification.kind == "refund_completed" {
        let refunds = state.store.refunds(payment.id).await?;
        refunds.iter().find(|refund| refund.id == notification.ref_id).map(|refund| refund.amount_centavos)
    } else {
        None
    };
    let installment = payment
        .installments
        .iter()
        .find(|installment| installment.number == number)
        .map(|installment| (installment.number, installment.due_date, installment.amount_centavos));
    let facts = Facts {
        first_name: patient.name.split_whitespace().next().unwrap_or_default().to_owned(),
        provider_name,
        procedure: payment.description.clone(),
        installments: payment.installments.len(),
        total_centavos: payment.total_centavos,
        cet_annual_bps: payment.cet_annual_bps,
        installment,
        charge,
        refund_centavos,
        app_url: format!("{}/paciente", state.config.public_base()),
    };
    let to = format!("{} <{}>", patient.name.replace(['<', '>', '"'], ""), patient.email);
    Ok(Some((facts, to)))
}

/// Sends a claimed batch: reads what each is about, commits their texts and sign-in codes in one
/// write, sends them a few at a time, and commits their outcomes in one write. Two commits per
/// batch, whatever its size: the notifier shares the database's writer with the payments.
async fn send_batch(state: &AppState, mailer: &Mailer, claimed: Vec<NotificationRecord>) -> Result<(), ApiError> {
    let now = medpay_store::now_ms();
    let mut outcomes = Vec::with_capacity(claimed.len());
    let mut prepared = Vec::with_capacity(claimed.len());
    let mut ready = Vec::with_capacity(claimed.len());
    for notification in claimed {
        let Some((facts, to)) = facts(state, &notification).await? else {
            // Erased, or no address: nobody to write to.
            outcomes.push(outcome(&notification.id, "skipped", None, None, now));
            continue;
        };
        let (subject, body) = match (&notification.subject, &notification.body) {
            (Some(subject), Some(body)) => (subject.clone(), body.clone()),
            _ => render(&notification.kind, &facts),
        };
        // The e-mail, unlike the copy kept for the app, carries a sign-in link of its own.
        let code = crate::portal::new_sign_in_code();
        let link = format!("{}/paciente#codigo={code}", state.config.public_base());
        prepared.push(medpay_store::PreparedNotification {
            id: notification.id.clone(),
            patient_id: notification.patient_id,
            subject: subject.clone(),
            body: body.clone(),
            sign_in: Some((medpay_store::sha256_hex(code.as_bytes()), now + EMAIL_SIGN_IN_TTL_MS)),
            now_ms: now,
        });
        let text =
            format!("{body}\nPara entrar no app sem senha, use este link (vale uma vez, por 24 horas):\n{link}\n");
        ready.push((notification, to, subject, text));
    }
    state.store.prepare_notifications(&prepared).await?;
    let from = state.config.patients.mail_from.clone();
    let retry_base = i64::try_from(state.config.patients.notify_retry_base_ms).unwrap_or(i64::MAX);
    let sent: Vec<medpay_store::NotificationOutcome> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
        futures::stream::iter(ready.into_iter().map(|(notification, to, subject, text)| {
            let from = from.clone();
            async move {
                let result = match build(&from, &to, &notification.id, &subject, text) {
                    Ok(message) => mailer.send(message).await,
                    Err(error) => Err(error),
                };
                let now = medpay_store::now_ms();
                match result {
                    Ok(()) => {
                        metrics::counter!("medpay_notifications_sent_total", "kind" => notification.kind.clone()).increment(1);
                        tracing::info!(notification_id = %notification.id, patient_id = %notification.patient_id, kind = %notification.kind, "patient notified");
                        outcome(&notification.id, "sent", None, None, now)
                    }
                    Err(error) => {
                        let attempts = notification.attempts + 1;
                        let retry_at = (attempts < ATTEMPTS_MAX).then(|| {
                            let wait = retry_base.saturating_mul(1_i64 << (attempts - 1).clamp(0, 20)).min(RETRY_MAX_MS);
                            now + wait
                        });
                        // The error names the server, never the address written to.
                        let reason: String = error.chars().take(200).collect();
                        tracing::warn!(notification_id = %notification.id, attempts, error = %reason, retry = retry_at.is_some(), "sending a notification failed");
                        outcome(&notification.id, "pending", retry_at, Some(reason), now)
                    }
                }
            }
        })),
        SEND_CONCURRENCY,
    ))
    .await;
    outcomes.extend(sent);
    state.store.record_notification_outcomes(&outcomes).await?;
    Ok(())
}

fn outcome(
    id: &str,
    state: &'static str,
    retry_at_ms: Option<i64>,
    error: Option<String>,
    now_ms: i64,
) -> medpay_store::NotificationOutcome {
    medpay_store::NotificationOutcome { id: id.to_owned(), state, retry_at_ms, error, now_ms }
}

fn build(from: &str, to: &str, id: &str, subject: &str, text: String) -> Result<Message, String> {
    let from: Mailbox = from.parse().map_err(|error| format!("the sender address: {error}"))?;
    let to: Mailbox = to.parse().map_err(|error| format!("the patient's address: {error}"))?;
    let domain = from.email.domain().to_owned();
    Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        // One Message-ID per notification: a resend after a crash is recognisably the same e-mail.
        .message_id(Some(format!("<{}@{domain}>", id.replace(':', "."))))
        .header(ContentType::TEXT_PLAIN)
        .body(text)
        .map_err(|error| error.to_string())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    /// `charge_issued`, `payment_confirmed`, `installment_due`, `refund_completed` or `contract_to_sign`.
    pub kind: String,
    pub payment_id: String,
    /// `pending`, `sent`, `failed` or `skipped`.
    pub state: String,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
}

impl NotificationView {
    pub fn new(record: NotificationRecord) -> NotificationView {
        NotificationView {
            kind: record.kind,
            payment_id: record.payment_id.to_string(),
            state: record.state,
            subject: record.subject,
            body: record.body,
            created_at: timestamp(record.created_at_ms),
            sent_at: record.sent_at_ms.map(timestamp),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationList {
    pub data: Vec<NotificationView>,
}

#[utoipa::path(get, path = "/v1/me/notifications", tag = "patients", security(("bearer" = [])),
    responses((status = 200, body = NotificationList, description = "what was sent to the signed-in patient, newest first"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn my_notifications(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<NotificationList>, ApiError> {
    let Principal::Patient(patient) = principal else {
        return Err(ApiError::forbidden("this is the patient's own view, read with the patient's session"));
    };
    let records = state.store.patient_notifications(patient, APP_NOTIFICATIONS_MAX).await?;
    let data = records.into_iter().map(NotificationView::new).collect();
    Ok(Json(NotificationList { data }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            first_name: "Maria".to_owned(),
            provider_name: "Clínica Boa Vista".to_owned(),
            procedure: "Consulta em consultório".to_owned(),
            installments: 3,
            total_centavos: 128_402,
            cet_annual_bps: 2_659,
            installment: Some((2, NaiveDate::from_ymd_opt(2027, 2, 2).unwrap(), 42_801)),
            charge: None,
            refund_centavos: Some(10_000),
            app_url: "https://pagamentos.example.com.br/paciente".to_owned(),
        }
    }

    #[test]
    fn each_kind_has_its_own_stable_words() {
        let facts = facts();
        let mut subjects = std::collections::BTreeSet::new();
        for kind in medpay_store::NOTIFICATION_KINDS {
            let (subject, body) = render(kind, &facts);
            assert!(body.starts_with("Olá, Maria!"), "{kind}: {body}");
            assert!(body.contains("https://pagamentos.example.com.br/paciente"), "{kind}: {body}");
            subjects.insert(subject);
        }
        assert_eq!(subjects.len(), 5, "one subject per kind: {subjects:?}");
        assert_eq!(render("installment_due", &facts).0, "Sua parcela 2 de 3 vence em 02/02/2027");
        assert_eq!(render("refund_completed", &facts).0, "Reembolso concluído: R$ 100,00 — Clínica Boa Vista");
        assert!(render("contract_to_sign", &facts).1.contains("3x, total de R$ 1.284,02, CET de 26,59% ao ano"));
    }
}

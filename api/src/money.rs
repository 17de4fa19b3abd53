//! Moving the money at the edge: refunds, the procedure's confirmation, the gateways' webhooks,
//! the ledger check and the reconciliation with Celcoin.

use crate::auth::{Principal, Role};
use crate::dto::timestamp;
use crate::error::{ApiError, ErrorBody, rejection};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use medpay_actors::money::{CELCOIN, MoneyError};
use medpay_gateways::celcoin::{CelcoinClient, Charge, NoticeKind, Return, StatementItem, parse_notice};
use medpay_models::{PaymentId, PaymentStatus};
use medpay_store::{ChargeRecord, ChargeStatus, GatewayWebhook, LedgerProblem, RefundStatus, Store};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::ToSchema;

/// Longest refund reason kept.
pub const REFUND_REASON_MAX: usize = 500;

impl From<MoneyError> for ApiError {
    fn from(error: MoneyError) -> Self {
        match error {
            MoneyError::Refused { code: "idempotency_key_reused", message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", message)
            }
            MoneyError::Refused { code: "invalid_amount", message } => ApiError::bad_request("invalid_amount", message),
            MoneyError::Refused { code, message } => ApiError::new(StatusCode::CONFLICT, code, message),
            MoneyError::Core(error) => error.into(),
        }
    }
}

/// A payment the caller may move money of: its provider, or the admin. The role is checked before
/// the payment is looked up: a role that never may is refused whatever the id.
async fn own_payment(
    state: &AppState,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<PaymentId, ApiError> {
    match principal {
        Principal::Patient(_) => return Err(ApiError::forbidden("refunds and procedures are the provider's to ask")),
        // Analysts and support agents read payments; they never move their money.
        Principal::Analyst | Principal::Person(_, Role::Analyst | Role::Support) => {
            return Err(ApiError::forbidden("refunds and procedures are the provider's or the admin's to ask"));
        }
        Principal::Admin | Principal::Person(_, Role::Admin) | Principal::Provider(_) => {}
    }
    let not_found = || ApiError::not_found("payment_not_found", "no such payment");
    let Path(id) = id.map_err(rejection)?;
    let id: PaymentId = id.parse().map_err(|_| not_found())?;
    let payment = state.store.payment(id).await?.ok_or_else(not_found)?;
    match principal {
        Principal::Provider(own) if own != payment.provider_id => Err(not_found()),
        _ => Ok(id),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    #[schema(schema_with = crate::schema::refund_amount)]
    pub amount_centavos: i64,
    #[schema(schema_with = crate::schema::reason)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    pub id: String,
    pub charge_id: String,
    /// `refund`, `cancellation`, `chargeback` or `med`.
    pub kind: String,
    pub amount_centavos: i64,
    pub reason: String,
    /// `requested` (owed to the patient, sent to the gateway) or `completed` (returned).
    pub status: String,
    pub created_at: String,
}

impl RefundView {
    pub fn new(record: &medpay_store::RefundRecord) -> RefundView {
        RefundView {
            id: record.id.clone(),
            charge_id: record.charge_id.clone(),
            kind: record.kind.as_str().to_owned(),
            amount_centavos: record.amount_centavos,
            reason: record.reason.clone(),
            status: record.status.as_str().to_owned(),
            created_at: timestamp(record.created_at_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundList {
    pub data: Vec<RefundView>,
}

#[utoipa::path(post, path = "/v1/payments/{id}/refunds", tag = "money", request_body = CreateRefund,
    security(("bearer" = [])), params(("id" = String, Path, description = "payment id"),
        ("Idempotency-Key" = String, Header, format = Uuid, pattern = "^[!-~]{1,255}$", description = "a UUID is the recommended key (any 1 to 255 visible ASCII characters are accepted), unique per refund; a retry with the same key returns the refund made, never a second one")),
    responses((status = 201, body = RefundList, description = "the refund, split across the charges it comes from"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`payment_not_refundable` or `refund_exceeds_paid`"),
        (status = 422, body = ErrorBody, description = "`idempotency_key_reused`: this key named another refund")))]
pub async fn create_refund(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<CreateRefund>, JsonRejection>,
) -> Result<(StatusCode, Json<RefundList>), ApiError> {
    let key = crate::payments::idempotency_key(&headers)?;
    let payment = own_payment(&state, principal, id).await?;
    let Json(body) = body.map_err(rejection)?;
    if body.amount_centavos <= 0 {
        return Err(ApiError::bad_request("invalid_amount", "amount_centavos must be a positive number of centavos"));
    }
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > REFUND_REASON_MAX {
        return Err(ApiError::bad_request(
            "invalid_reason",
            format!("reason needs 1 to {REFUND_REASON_MAX} characters"),
        ));
    }
    // The refund's rows are named after the key (hashed with the caller's scope).
    let key = medpay_store::sha256_hex(format!("{}\n{key}", principal.scope()).as_bytes())[..32].to_owned();
    let refunds = state.runtime.refund(payment, body.amount_centavos, reason.to_owned(), key).await?;
    Ok((StatusCode::CREATED, Json(RefundList { data: refunds.iter().map(RefundView::new).collect() })))
}

#[utoipa::path(get, path = "/v1/payments/{id}/refunds", tag = "money", security(("bearer" = [])),
    params(("id" = String, Path, description = "payment id")),
    responses((status = 200, body = RefundList), (status = 404, body = ErrorBody)))]
pub async fn list_refunds(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<RefundList>, ApiError> {
    // Whoever may read the payment reads its refunds: its provider, its patient, the staff.
    let payment = crate::payments::visible_payment(&state, principal, id).await?.id;
    let refunds = state.store.refunds(payment).await?;
    Ok(Json(RefundList { data: refunds.iter().map(RefundView::new).collect() }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcedureOutcome {
    #[schema(schema_with = crate::schema::procedure_outcome)]
    pub outcome: String,
}

#[utoipa::path(post, path = "/v1/payments/{id}/procedure", tag = "money", request_body = ProcedureOutcome,
    security(("bearer" = [])), params(("id" = String, Path, description = "payment id")),
    responses((status = 200, body = crate::dto::PaymentView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "`payment_not_held`"),
        (status = 503, body = ErrorBody, description = "the gateway did not release the escrow; nothing changed")))]
pub async fn procedure(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<ProcedureOutcome>, JsonRejection>,
) -> Result<Json<crate::dto::PaymentView>, ApiError> {
    let payment = own_payment(&state, principal, id).await?;
    let Json(body) = body.map_err(rejection)?;
    let performed = match body.outcome.as_str() {
        "performed" => true,
        "cancelled" => false,
        _ => return Err(ApiError::bad_request("invalid_outcome", "outcome is `performed` or `cancelled`")),
    };
    state.runtime.procedure(payment, performed).await?;
    crate::payments::payment_json(&state, payment).await
}

/// Checks HTTP Basic credentials against the configured pair.
fn basic_auth_ok(headers: &HeaderMap, user: &str, password: &str) -> bool {
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .is_some_and(|given| crate::auth::constant_time_eq(given.as_bytes(), expected.as_bytes()))
}

#[utoipa::path(post, path = "/v1/gateways/celcoin/webhooks", tag = "gateways",
    request_body(content = Object, description = "Celcoin's notification: `Id`, `TransactionType`, `RequestBody`"),
    responses((status = 200, description = "recorded (applied now, or as soon as what it depends on arrives)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn celcoin_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let money = &state.config.money;
    if !basic_auth_ok(&headers, &money.celcoin_webhook_user, &money.celcoin_webhook_password) {
        tracing::warn!("Celcoin webhook refused: bad credentials");
        return Err(ApiError::unauthorized());
    }
    let notice = parse_notice(&body).map_err(|message| ApiError::bad_request("invalid_webhook", message))?;
    // Parsed once more as a whole (parse_notice took it as JSON already): its client request id,
    // and the body recorded with Celcoin's amount once confirmed.
    let mut value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|error| ApiError::bad_request("invalid_webhook", error.to_string()))?;
    let theirs = value.pointer("/RequestBody/ClientRequestId").and_then(|v| v.as_str()).map(str::to_owned);
    // The payment: from our client request id (`<payment>-<installment>`), else from the charge.
    let from_request =
        theirs.as_deref().and_then(|id| id.rsplit_once('-').and_then(|(payment, _)| payment.parse::<PaymentId>().ok()));
    let charge = state.store.charge_by_gateway_id(&notice.charge_transaction_id).await?;
    let payment = from_request.or(charge.as_ref().map(|charge| charge.payment_id));
    // A notice that moves money moves it only as Celcoin itself tells it when asked: the body is a hint.
    let mut state_name = if payment.is_some() { "pending" } else { "ignored" };
    let mut body = String::from_utf8_lossy(&body).into_owned();
    if payment.is_some() && notice.kind != NoticeKind::RefundDone {
        // Paid, charged back, returned by MED: the money moves as Celcoin tells it. (A refund
        // done is one of ours: it moves what we asked for, whatever the notice says.)
        let ours = charge.as_ref().map(|c| c.id.clone());
        let confirmed = match notice.kind {
            NoticeKind::Paid => confirm_paid(&state, &notice, ours.or(theirs)).await?,
            _ => confirm_taken_back(&state, &notice, ours.or(theirs)).await?,
        };
        match confirmed {
            Confirmed::As(amount_centavos) => {
                value["RequestBody"]["Amount"] = medpay_gateways::celcoin::reais_of(amount_centavos);
                body = value.to_string();
            }
            Confirmed::Not(why) => {
                tracing::warn!(webhook_id = %notice.id, charge = %notice.charge_transaction_id, %why,
                    "Celcoin webhook not applied: Celcoin does not confirm it");
                // Kept (its id stays taken, a resend changes nothing) and set aside.
                state_name = "ignored";
            }
        }
    }
    let webhook = GatewayWebhook {
        gateway: CELCOIN.to_owned(),
        webhook_id: notice.id.clone(),
        payment_id: payment,
        kind: notice.kind.transaction_type().to_owned(),
        body,
        state: state_name.to_owned(),
        received_at_ms: medpay_store::now_ms(),
    };
    let fresh = state.store.record_webhook(&webhook).await?;
    tracing::info!(webhook_id = %notice.id, kind = %webhook.kind, payment_id = ?payment, duplicate = !fresh, "Celcoin webhook received");
    if let (true, Some(payment), "pending") = (fresh, payment, state_name) {
        // Recorded durably: the sweep applies it if this poke is lost.
        let _ = state.runtime.webhook_recorded(payment, webhook).await;
    }
    Ok(StatusCode::OK)
}

enum Confirmed {
    /// Paid (or taken back), by this amount (Celcoin's, whatever the notice said).
    As(i64),
    /// Celcoin does not know the charge as paid (or the return, or as this one).
    Not(String),
}

/// The charge a notice names as Celcoin holds it, with the money that has left it, asked by our
/// client request id (from our charge, else the notice's); `Err(Confirmed::Not)` when there is
/// nothing to confirm the notice by. Celcoin not answering is a 503: Celcoin sends the notice
/// again, and nothing was recorded meanwhile.
async fn charge_at_celcoin(
    state: &AppState,
    notice: &medpay_gateways::celcoin::Notice,
    client_request_id: Option<String>,
) -> Result<Result<(Charge, Vec<Return>), Confirmed>, ApiError> {
    let Some(client_request_id) = client_request_id else {
        return Ok(Err(Confirmed::Not("no client request id to ask about".to_owned())));
    };
    let gateways = state.runtime.gateways().ok_or_else(|| ApiError::unavailable("no gateway configured"))?;
    let found = gateways.celcoin.charge_with_returns(&client_request_id).await.map_err(|error| {
        tracing::warn!(webhook_id = %notice.id, %error, "Celcoin webhook held back: Celcoin could not be asked");
        ApiError::unavailable("Celcoin could not confirm the notice; send it again")
    })?;
    let Some((charge, returns)) = found else {
        return Ok(Err(Confirmed::Not("Celcoin has no such charge".to_owned())));
    };
    if charge.transaction_id != notice.charge_transaction_id {
        return Ok(Err(Confirmed::Not(format!("the charge is {}, not the notice's", charge.transaction_id))));
    }
    Ok(Ok((charge, returns)))
}

/// A chargeback or MED notice moves money only if Celcoin lists a return of that kind, under the
/// notice's transaction id, on the charge it names, and by Celcoin's amount.
async fn confirm_taken_back(
    state: &AppState,
    notice: &medpay_gateways::celcoin::Notice,
    client_request_id: Option<String>,
) -> Result<Confirmed, ApiError> {
    let Some(reversal) = notice.reversal_id.as_deref() else {
        return Ok(Confirmed::Not("no transaction id of the return".to_owned()));
    };
    let returns = match charge_at_celcoin(state, notice, client_request_id).await? {
        Ok((_, returns)) => returns,
        Err(not) => return Ok(not),
    };
    let Some(taken) = returns.iter().find(|r| r.transaction_id == reversal && r.kind == notice.kind) else {
        return Ok(Confirmed::Not(format!(
            "Celcoin lists no {} {reversal} on the charge",
            notice.kind.transaction_type()
        )));
    };
    if taken.amount_centavos != notice.amount_centavos {
        tracing::warn!(webhook_id = %notice.id, notice = notice.amount_centavos, celcoin = taken.amount_centavos,
            "Celcoin webhook's amount is not the return's; applying Celcoin's");
    }
    Ok(Confirmed::As(taken.amount_centavos))
}

/// A payment notice moves money only if Celcoin says the charge it names is `PAID`, and by
/// Celcoin's amount.
async fn confirm_paid(
    state: &AppState,
    notice: &medpay_gateways::celcoin::Notice,
    client_request_id: Option<String>,
) -> Result<Confirmed, ApiError> {
    let charge = match charge_at_celcoin(state, notice, client_request_id).await? {
        Ok((charge, _)) => charge,
        Err(not) => return Ok(not),
    };
    if charge.status != "PAID" {
        return Ok(Confirmed::Not(format!("Celcoin says the charge is {}", charge.status)));
    }
    if charge.amount_centavos != notice.amount_centavos {
        tracing::warn!(webhook_id = %notice.id, notice = notice.amount_centavos, celcoin = charge.amount_centavos,
            "Celcoin webhook's amount is not the charge's; applying Celcoin's");
    }
    Ok(Confirmed::As(charge.amount_centavos))
}

#[utoipa::path(post, path = "/v1/gateways/clicksign/webhooks", tag = "gateways",
    request_body(content = Object, description = "ClickSign's event, signed in `Content-Hmac`"),
    responses((status = 200, description = "recorded"),
        (status = 400, body = ErrorBody, description = "`stale_webhook`: signed, but its `event.occurred_at` is over an hour old (or in the future)"),
        (status = 401, body = ErrorBody)))]
pub async fn clicksign_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let header = headers.get("content-hmac").and_then(|value| value.to_str().ok());
    let notice =
        medpay_gateways::clicksign::verify_webhook(&state.config.money.clicksign_webhook_secret, header, &body)
            .map_err(|message| {
                tracing::warn!(%message, "ClickSign webhook refused");
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", message)
            })?;
    // Signed, but a body captured once is not played back later.
    medpay_gateways::clicksign::check_fresh(&notice, medpay_store::now_ms()).map_err(|message| {
        tracing::warn!(envelope_id = %notice.envelope_id, event = %notice.event, %message, "ClickSign webhook refused: outside its window");
        ApiError::bad_request("stale_webhook", message)
    })?;
    let payment = state.store.contract_by_envelope(&notice.envelope_id).await?;
    let webhook = GatewayWebhook {
        gateway: "clicksign".to_owned(),
        webhook_id: format!("{}:{}", notice.envelope_id, notice.event),
        payment_id: payment,
        kind: notice.event.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
        state: if payment.is_some() { "pending" } else { "ignored" }.to_owned(),
        received_at_ms: medpay_store::now_ms(),
    };
    let fresh = state.store.record_webhook(&webhook).await?;
    tracing::info!(envelope_id = %notice.envelope_id, event = %notice.event, payment_id = ?payment, duplicate = !fresh, "ClickSign webhook received");
    if let (true, Some(payment)) = (fresh, payment) {
        let _ = state.runtime.webhook_recorded(payment, webhook).await;
    }
    Ok(StatusCode::OK)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerCheck {
    /// True when every posting balances and every payment's ledger agrees with its status.
    pub ok: bool,
    pub payments_checked: u64,
    /// Money in suspense (received and not expected, less paid out and not expected), each with a
    /// review case open for a person.
    pub suspense_centavos: i64,
    #[schema(value_type = Vec<Object>)]
    pub problems: Vec<LedgerProblem>,
}

fn problem(payment: PaymentId, text: String) -> LedgerProblem {
    LedgerProblem { payment_id: Some(payment.to_string()), posting_id: None, problem: text }
}

/// Every posting balances; for every payment, the ledger says what its charges, refunds and
/// status say.
pub async fn check_ledger(store: &Store) -> Result<LedgerCheck, medpay_store::StoreError> {
    let mut problems = store.unbalanced_postings().await?;
    let mut checked = 0u64;
    let mut suspense = 0i64;
    let mut after = String::new();
    loop {
        let batch = store.payments_for_check(&after, 500).await?;
        let Some(last) = batch.last() else { break };
        after = last.0.to_string();
        for (payment, status, escrow) in batch {
            checked += 1;
            let ledger = store.payment_ledger(payment).await?;
            let charges = store.charges(payment).await?;
            let refunds = store.refunds(payment).await?;
            let received: i64 =
                charges.iter().filter(|c| c.status == ChargeStatus::Paid).map(|c| c.amount_centavos).sum();
            let returned: i64 =
                refunds.iter().filter(|r| r.status == RefundStatus::Completed).map(|r| r.amount_centavos).sum();
            let owed: i64 =
                refunds.iter().filter(|r| r.status == RefundStatus::Requested).map(|r| r.amount_centavos).sum();
            let refunded: i64 = returned + owed;
            // Money that moved unexpectedly sits in suspense beside the clearing account.
            suspense += ledger.suspense;
            if ledger.clearing + ledger.suspense != received - returned {
                problems.push(problem(
                    payment,
                    format!(
                        "gateway clearing is {} (suspense {}) but {received} was received and {returned} returned",
                        ledger.clearing, ledger.suspense
                    ),
                ));
            }
            if ledger.patient_refunds != -owed {
                problems.push(problem(
                    payment,
                    format!("owed to the patient {} but {owed} refunds are open", -ledger.patient_refunds),
                ));
            }
            // What the provider and the platform hold of this payment is what was kept of it.
            let kept = -(ledger.fees + ledger.available + ledger.escrow);
            if kept != received - refunded {
                problems.push(problem(
                    payment,
                    format!("provider and platform hold {kept}, but {} was kept", received - refunded),
                ));
            }
            let unpaid = matches!(
                status,
                PaymentStatus::Requested
                    | PaymentStatus::Approved
                    | PaymentStatus::InReview
                    | PaymentStatus::Declined
                    | PaymentStatus::AwaitingPayment
                    | PaymentStatus::Cancelled
                    | PaymentStatus::Expired
            );
            // Suspense beside clearing: a late PIX of a cancelled payment moved money, not the payment.
            let expected = medpay_store::PaymentLedger {
                clearing: ledger.clearing + ledger.suspense,
                suspense: 0,
                ..ledger.clone()
            };
            if unpaid && (received != 0 || expected != medpay_store::PaymentLedger::default()) {
                problems.push(problem(payment, format!("{status} but the ledger moved money for it")));
            }
            if !unpaid && received == 0 {
                problems.push(problem(payment, format!("{status} but nothing was received")));
            }
            match status {
                PaymentStatus::HeldInEscrow if ledger.escrow >= 0 && received > refunded => {
                    problems.push(problem(payment, "held in escrow but nothing is held".to_owned()));
                }
                PaymentStatus::Paid | PaymentStatus::Released if ledger.escrow != 0 => {
                    problems.push(problem(payment, format!("{status} but {} is still held", -ledger.escrow)));
                }
                PaymentStatus::Paid if escrow => {
                    problems.push(problem(payment, "an escrow payment is paid but not held".to_owned()));
                }
                PaymentStatus::Refunded | PaymentStatus::ChargedBack if refunded != received => {
                    problems.push(problem(payment, format!("{status} but {refunded} of {received} was given back")));
                }
                PaymentStatus::PartiallyRefunded if refunded == 0 || refunded >= received => {
                    problems.push(problem(
                        payment,
                        format!("partially refunded but {refunded} of {received} was given back"),
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(LedgerCheck { ok: problems.is_empty(), payments_checked: checked, suspense_centavos: -suspense, problems })
}

#[utoipa::path(get, path = "/v1/ledger/check", tag = "money", security(("bearer" = [])),
    responses((status = 200, body = LedgerCheck), (status = 403, body = ErrorBody)))]
pub async fn ledger_check(State(state): State<AppState>, principal: Principal) -> Result<Json<LedgerCheck>, ApiError> {
    principal.require_admin()?;
    Ok(Json(check_ledger(&state.store).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Difference {
    /// Our charge id (client request id at Celcoin), when there is one.
    pub charge_id: Option<String>,
    pub gateway_id: Option<String>,
    pub difference: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Reconciliation {
    /// True when Celcoin and the ledger agree on every charge.
    pub ok: bool,
    pub charges_compared: u64,
    pub differences: Vec<Difference>,
}

/// Compares Celcoin's statement with our charges, refunds and ledger, charge by charge.
pub async fn reconcile(store: &Store, celcoin: &CelcoinClient) -> anyhow::Result<Reconciliation> {
    let statement: HashMap<String, StatementItem> =
        celcoin.statement().await?.into_iter().map(|item| (item.transaction_id.clone(), item)).collect();
    let mut differences = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut after = String::new();
    let mut compared = 0u64;
    let mut refunds_by_payment: HashMap<PaymentId, Vec<medpay_store::RefundRecord>> = HashMap::new();
    loop {
        let batch: Vec<ChargeRecord> = store.all_charges(&after, 500).await?;
        let Some(last) = batch.last() else { break };
        after = last.id.clone();
        for charge in batch {
            compared += 1;
            seen.insert(charge.gateway_id.clone());
            let differ = |text: String| Difference {
                charge_id: Some(charge.id.clone()),
                gateway_id: Some(charge.gateway_id.clone()),
                difference: text,
            };
            let Some(item) = statement.get(&charge.gateway_id) else {
                differences.push(differ("in our ledger, unknown to Celcoin".to_owned()));
                continue;
            };
            if item.client_request_id != charge.id {
                differences.push(differ(format!("Celcoin holds it as {}", item.client_request_id)));
            }
            let paid_there = item.paid_amount.0;
            let paid_here = if charge.status == ChargeStatus::Paid { charge.amount_centavos } else { 0 };
            if paid_there != paid_here {
                differences.push(differ(format!("paid {paid_there} at Celcoin, {paid_here} here")));
            }
            let refunds = match refunds_by_payment.entry(charge.payment_id) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(store.refunds(charge.payment_id).await?)
                }
            };
            let returned_here: i64 = refunds
                .iter()
                .filter(|r| r.charge_id == charge.id && r.status == RefundStatus::Completed)
                .map(|r| r.amount_centavos)
                .sum();
            let returned_there = item.refunded_amount.0;
            if returned_there != returned_here {
                differences.push(differ(format!("{returned_there} returned at Celcoin, {returned_here} here")));
            }
        }
    }
    for (gateway_id, item) in &statement {
        if !seen.contains(gateway_id) {
            differences.push(Difference {
                charge_id: None,
                gateway_id: Some(gateway_id.clone()),
                difference: format!(
                    "charge {} at Celcoin ({} centavos paid), unknown to our ledger",
                    item.client_request_id, item.paid_amount.0
                ),
            });
        }
    }
    Ok(Reconciliation { ok: differences.is_empty(), charges_compared: compared, differences })
}

#[utoipa::path(get, path = "/v1/ledger/reconciliation", tag = "money", security(("bearer" = [])),
    responses((status = 200, body = Reconciliation), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn reconciliation(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Reconciliation>, ApiError> {
    principal.require_admin()?;
    let gateways = state.runtime.gateways().ok_or_else(|| ApiError::unavailable("no gateway configured"))?;
    Ok(Json(reconcile(&state.store, &gateways.celcoin).await.map_err(ApiError::unavailable)?))
}

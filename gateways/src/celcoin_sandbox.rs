//! A local Celcoin of the same request and response shapes as `celcoin`, for tests, demos and load
//! runs: it keeps charges in memory, settles one when told to (`POST /sandbox/charges/{id}/pay`,
//! as the patient's bank would), sends Celcoin's webhooks, and injects faults when asked
//! (`PUT /sandbox/faults`): time-outs (the request is carried out and the answer withheld), 5xx
//! (nothing is done), duplicate, delayed and so out-of-order webhooks.

use crate::celcoin::{NoticeKind, Reais, StatementItem, centavos_of, reais_of};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::NaiveDate;
use medpay_models::Money;
use medpay_models::boleto::{Boleto, due_factor};
use medpay_models::pix::{BrCode, BrCodeKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SANDBOX_TOKEN: &str = "sandbox-celcoin-token";
/// Most charges the sandbox keeps (it is a sandbox: past this it refuses new ones).
pub const SANDBOX_CHARGES_MAX: usize = 1_000_000;
/// Attempts to deliver one webhook before the sandbox gives up on it.
const WEBHOOK_ATTEMPTS_MAX: u32 = 40;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    #[serde(default)]
    pub seed: u64,
    /// Share of API calls answered only after `stall_ms` (the client times out; the call was done).
    #[serde(default)]
    pub timeout_rate: f64,
    /// Share of API calls refused with a 503 (nothing done).
    #[serde(default)]
    pub error_rate: f64,
    /// Share of webhooks sent twice.
    #[serde(default)]
    pub duplicate_rate: f64,
    /// Each webhook waits a random time up to this before it leaves: they arrive out of order.
    #[serde(default)]
    pub delay_ms_max: u64,
    /// How long a time-out fault withholds the answer.
    #[serde(default = "default_stall")]
    pub stall_ms: u64,
}

fn default_stall() -> u64 {
    3_000
}

#[derive(Debug, Clone)]
struct SandboxCharge {
    transaction_id: String,
    client_request_id: String,
    method: String,
    amount: i64,
    status: &'static str,
    emv: Option<String>,
    linha: Option<String>,
    barcode: Option<String>,
    escrow: bool,
    escrow_released: bool,
    /// An immediate PIX charge is not payable after this.
    expires_at: Option<std::time::Instant>,
    paid: i64,
    /// Returned to the payer: refunds, chargebacks and MED claims.
    returned: i64,
    /// Each return, as the charge's query lists it: (transaction id, TransactionType, centavos).
    returns: Vec<(String, &'static str, i64)>,
    body: serde_json::Value,
}

#[derive(Debug, Clone)]
struct Reversal {
    transaction_id: String,
    client_code: String,
    original: String,
    amount: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct WebhookTarget {
    pub url: String,
    pub username: String,
    pub password: String,
}

struct Sandbox {
    charges: Mutex<BTreeMap<String, SandboxCharge>>,
    by_external: Mutex<HashMap<String, String>>,
    reversals: Mutex<HashMap<String, Reversal>>,
    faults: Mutex<(Faults, StdRng)>,
    target: Mutex<Option<WebhookTarget>>,
    instance: u32,
    counter: AtomicU64,
    webhooks_sent: AtomicU64,
    webhooks_pending: AtomicI64,
    calls: AtomicU64,
    http: reqwest::Client,
}

type Shared = Arc<Sandbox>;

enum Fault {
    None,
    Error,
    Stall(u64),
}

impl Sandbox {
    /// Unique across sandboxes too (two nodes' sandboxes share one database in tests).
    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}{:08x}{:010}", self.instance, self.counter.fetch_add(1, Ordering::SeqCst) + 1)
    }

    fn roll(&self) -> Fault {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let (faults, rng) = &mut *guard;
        let draw: f64 = rng.random();
        if draw < faults.error_rate {
            Fault::Error
        } else if draw < faults.error_rate + faults.timeout_rate {
            Fault::Stall(faults.stall_ms)
        } else {
            Fault::None
        }
    }

    /// Sends a webhook (maybe twice, maybe late) and retries it until the receiver takes it.
    fn notify(self: &Arc<Self>, kind: &str, request_body: serde_json::Value) {
        let body = json!({"Id": self.next_id("wh"), "TransactionType": kind, "RequestBody": request_body});
        let (copies, delays) = {
            let mut guard = self.faults.lock().unwrap_or_else(|p| p.into_inner());
            let (faults, rng) = &mut *guard;
            let copies = if rng.random::<f64>() < faults.duplicate_rate { 2 } else { 1 };
            let delays: Vec<u64> = (0..copies)
                .map(|_| if faults.delay_ms_max == 0 { 0 } else { rng.random_range(0..=faults.delay_ms_max) })
                .collect();
            (copies, delays)
        };
        for delay in delays.into_iter().take(copies) {
            let sandbox = self.clone();
            let body = body.clone();
            sandbox.webhooks_pending.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                for attempt in 0..WEBHOOK_ATTEMPTS_MAX {
                    let target = sandbox.target.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Some(target) = target {
                        let sent = sandbox
                            .http
                            .post(&target.url)
                            .basic_auth(&target.username, Some(&target.password))
                            .json(&body)
                            .send()
                            .await;
                        if sent.is_ok_and(|response| response.status().is_success()) {
                            sandbox.webhooks_sent.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis((50u64 << attempt.min(5)).min(2_000))).await;
                }
                sandbox.webhooks_pending.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

fn authorised(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|value| value.to_str().ok()) == Some(&format!("Bearer {SANDBOX_TOKEN}"))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"message": message, "errorCode": status.as_u16().to_string()}))).into_response()
}

/// Checks the token and rolls the faults: `Err` is the answer to give at once; `Ok(stall)` says
/// how long to withhold the answer after doing the work.
fn gate(sandbox: &Sandbox, headers: &HeaderMap) -> Result<u64, StatusCode> {
    if !authorised(headers) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    match sandbox.roll() {
        Fault::None => Ok(0),
        Fault::Error => Err(StatusCode::SERVICE_UNAVAILABLE),
        Fault::Stall(ms) => Ok(ms),
    }
}

fn refused(status: StatusCode) -> Response {
    error(status, if status == StatusCode::UNAUTHORIZED { "token inválido" } else { "falha simulada" })
}

async fn answer(stall_ms: u64, response: Response) -> Response {
    if stall_ms > 0 {
        tokio::time::sleep(Duration::from_millis(stall_ms)).await;
    }
    response
}

async fn token() -> Json<serde_json::Value> {
    Json(json!({"access_token": SANDBOX_TOKEN, "token_type": "bearer", "expires_in": 2400}))
}

fn amount_of(body: &serde_json::Value) -> Option<i64> {
    body.get("amount").and_then(centavos_of).filter(|c| *c > 0)
}

fn boleto_for(number: u64, amount: i64, due: &str) -> Result<(String, String), String> {
    let date: NaiveDate = due.parse().map_err(|_| "dueDate inválida".to_owned())?;
    let boleto = Boleto {
        bank: "509".to_owned(),
        currency: 9,
        due_factor: due_factor(date).map_err(|e| e.to_string())?,
        amount: Money::from_centavos(amount),
        free_field: format!("{:025}", number % 10u64.pow(18)),
    };
    Ok((boleto.linha_digitavel().map_err(|e| e.to_string())?, boleto.barcode().map_err(|e| e.to_string())?))
}

fn charge_json(charge: &SandboxCharge) -> serde_json::Value {
    let mut body = charge.body.clone();
    body["transactionId"] = json!(charge.transaction_id);
    body["status"] = json!(charge.status);
    if let Some(emv) = &charge.emv {
        body["location"] = json!({"emv": emv, "url": format!("pix.sandbox.celcoin.dev/v2/{}", charge.transaction_id)});
    }
    if let (Some(linha), Some(barcode)) = (&charge.linha, &charge.barcode) {
        body["boleto"] = json!({"linhaDigitavel": linha, "barCode": barcode});
    }
    if !charge.returns.is_empty() {
        let returns: Vec<serde_json::Value> = charge
            .returns
            .iter()
            .map(
                |(id, kind, amount)| json!({"transactionId": id, "transactionType": kind, "amount": reais_of(*amount)}),
            )
            .collect();
        body["returns"] = json!(returns);
    }
    body
}

async fn create(sandbox: Shared, headers: HeaderMap, body: serde_json::Value, method: &str) -> Response {
    let stall = match gate(&sandbox, &headers) {
        Ok(stall) => stall,
        Err(status) => return refused(status),
    };
    let Some(external) = body.get("clientRequestId").or_else(|| body.get("externalId")).and_then(|v| v.as_str()) else {
        return error(StatusCode::BAD_REQUEST, "clientRequestId é obrigatório");
    };
    let Some(amount) = amount_of(&body) else { return error(StatusCode::BAD_REQUEST, "amount inválido") };
    let method = body.get("paymentMethod").and_then(|v| v.as_str()).unwrap_or(method).to_owned();
    let due = body.pointer("/calendar/dueDate").or_else(|| body.get("dueDate")).and_then(|v| v.as_str());
    let transaction_id = {
        let mut by_external = sandbox.by_external.lock().unwrap_or_else(|p| p.into_inner());
        if by_external.contains_key(external) {
            return error(StatusCode::CONFLICT, "clientRequestId já utilizado");
        }
        if by_external.len() >= SANDBOX_CHARGES_MAX {
            return error(StatusCode::TOO_MANY_REQUESTS, "limite do sandbox");
        }
        let id = sandbox.next_id("cc");
        by_external.insert(external.to_owned(), id.clone());
        id
    };
    let number = sandbox.counter.load(Ordering::SeqCst);
    let (emv, linha, barcode) = match method.as_str() {
        "boleto" => match due.map(|due| boleto_for(number, amount, due)) {
            Some(Ok((linha, barcode))) => (None, Some(linha), Some(barcode)),
            Some(Err(message)) => return error(StatusCode::BAD_REQUEST, &message),
            None => return error(StatusCode::BAD_REQUEST, "dueDate é obrigatória para boleto"),
        },
        "card" => (None, None, None),
        _ => {
            let code = BrCode {
                kind: BrCodeKind::Dynamic { location: format!("pix.sandbox.celcoin.dev/v2/{transaction_id}") },
                amount: Some(Money::from_centavos(amount)),
                merchant_name: "MEDPAY PAGAMENTOS".to_owned(),
                merchant_city: "SAO PAULO".to_owned(),
            };
            match code.encode() {
                Ok(emv) => (Some(emv), None, None),
                Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
    };
    let charge = SandboxCharge {
        transaction_id: transaction_id.clone(),
        client_request_id: external.to_owned(),
        method: method.clone(),
        amount,
        status: "ACTIVE",
        emv,
        linha,
        barcode,
        escrow: body.get("escrow").and_then(|v| v.as_bool()).unwrap_or(false),
        escrow_released: false,
        expires_at: body
            .pointer("/calendar/expiration")
            .and_then(|v| v.as_u64())
            .map(|seconds| std::time::Instant::now() + Duration::from_secs(seconds)),
        paid: 0,
        returned: 0,
        returns: Vec::new(),
        body,
    };
    let json = charge_json(&charge);
    sandbox.charges.lock().unwrap_or_else(|p| p.into_inner()).insert(transaction_id.clone(), charge);
    if method == "card" {
        // A card is authorised and captured at once; the capture is announced like a payment.
        settle(&sandbox, &transaction_id);
    }
    answer(stall, (StatusCode::OK, Json(json)).into_response()).await
}

async fn create_immediate(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    create(s, headers, body, "pix").await
}

async fn create_charge(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<serde_json::Value>) -> Response {
    create(s, headers, body, "boleto").await
}

async fn find_external(State(sandbox): State<Shared>, headers: HeaderMap, Path(external): Path<String>) -> Response {
    let stall = match gate(&sandbox, &headers) {
        Ok(stall) => stall,
        Err(status) => return refused(status),
    };
    let id = sandbox.by_external.lock().unwrap_or_else(|p| p.into_inner()).get(&external).cloned();
    let found = id.and_then(|id| sandbox.charges.lock().unwrap_or_else(|p| p.into_inner()).get(&id).map(charge_json));
    let response = match found {
        Some(json) => (StatusCode::OK, Json(json)).into_response(),
        None => error(StatusCode::NOT_FOUND, "cobrança não encontrada"),
    };
    answer(stall, response).await
}

/// Marks a charge paid and announces it.
fn settle(sandbox: &Arc<Sandbox>, transaction_id: &str) -> Option<Response> {
    let (kind, amount, external) = {
        let mut charges = sandbox.charges.lock().unwrap_or_else(|p| p.into_inner());
        let charge = charges.get_mut(transaction_id)?;
        if charge.status != "ACTIVE" {
            return Some(error(StatusCode::CONFLICT, "cobrança não está ativa"));
        }
        if charge.expires_at.is_some_and(|at| at <= std::time::Instant::now()) {
            charge.status = "EXPIRED";
            return Some(error(StatusCode::CONFLICT, "cobrança expirada"));
        }
        charge.status = "PAID";
        charge.paid = charge.amount;
        let kind = match charge.method.as_str() {
            "boleto" => "BOLETO_PAID",
            "card" => "CARD_CAPTURED",
            _ => "RECEIVEPIX",
        };
        (kind, charge.amount, charge.client_request_id.clone())
    };
    let end_to_end = sandbox.next_id("E50911");
    sandbox.notify(
        kind,
        json!({"TransactionId": transaction_id, "ClientRequestId": external, "Amount": reais_of(amount), "EndToEndId": end_to_end}),
    );
    None
}

fn resolve(sandbox: &Sandbox, id: &str) -> Option<String> {
    if sandbox.charges.lock().unwrap_or_else(|p| p.into_inner()).contains_key(id) {
        return Some(id.to_owned());
    }
    sandbox.by_external.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
}

/// `POST /sandbox/charges/{id}/pay`: the payer pays (by transaction id or client request id).
async fn pay(State(sandbox): State<Shared>, Path(id): Path<String>) -> Response {
    let Some(transaction_id) = resolve(&sandbox, &id) else {
        return error(StatusCode::NOT_FOUND, "cobrança não encontrada");
    };
    settle(&sandbox, &transaction_id).unwrap_or_else(|| StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct Dispute {
    amount_centavos: Option<i64>,
}

/// Money taken back from a paid charge by the payer's side: a card chargeback or a PIX MED claim.
async fn dispute(sandbox: Shared, id: String, body: Dispute, kind: NoticeKind) -> Response {
    let Some(transaction_id) = resolve(&sandbox, &id) else {
        return error(StatusCode::NOT_FOUND, "cobrança não encontrada");
    };
    let id = sandbox.next_id(if kind == NoticeKind::Med { "med" } else { "cb" });
    let amount = {
        let mut charges = sandbox.charges.lock().unwrap_or_else(|p| p.into_inner());
        let Some(charge) = charges.get_mut(&transaction_id) else {
            return error(StatusCode::NOT_FOUND, "cobrança não encontrada");
        };
        // The payer's side disputes what was paid: a refund made meanwhile does not lower what its
        // bank may take back (the two can overlap, and then more comes back than is left).
        let left = charge.paid - charge.returned;
        let amount = body.amount_centavos.unwrap_or(left);
        if charge.status != "PAID" || amount <= 0 || amount > charge.paid {
            return error(StatusCode::CONFLICT, "nada a devolver desta cobrança");
        }
        charge.returned += amount;
        charge.returns.push((id.clone(), kind.transaction_type(), amount));
        amount
    };
    sandbox.notify(
        kind.transaction_type(),
        json!({"TransactionId": id, "OriginalTransactionId": transaction_id, "Amount": reais_of(amount)}),
    );
    (StatusCode::OK, Json(json!({"transactionId": id, "amount": reais_of(amount)}))).into_response()
}

async fn chargeback(State(s): State<Shared>, Path(id): Path<String>, Json(body): Json<Dispute>) -> Response {
    dispute(s, id, body, NoticeKind::Chargeback).await
}

async fn med(State(s): State<Shared>, Path(id): Path<String>, Json(body): Json<Dispute>) -> Response {
    dispute(s, id, body, NoticeKind::Med).await
}

fn reversal_json(reversal: &Reversal) -> serde_json::Value {
    json!({"transactionId": reversal.transaction_id, "clientCode": reversal.client_code,
           "originalTransactionId": reversal.original, "amount": reais_of(reversal.amount), "status": "PROCESSING"})
}

async fn reverse(
    State(sandbox): State<Shared>,
    headers: HeaderMap,
    Path(transaction_id): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let stall = match gate(&sandbox, &headers) {
        Ok(stall) => stall,
        Err(status) => return refused(status),
    };
    let Some(code) = body.get("clientCode").and_then(|v| v.as_str()).map(str::to_owned) else {
        return error(StatusCode::BAD_REQUEST, "clientCode é obrigatório");
    };
    let Some(amount) = amount_of(&body) else { return error(StatusCode::BAD_REQUEST, "amount inválido") };
    if sandbox.reversals.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&code) {
        return error(StatusCode::CONFLICT, "clientCode já utilizado");
    }
    let reversal_id = sandbox.next_id("rv");
    {
        let mut charges = sandbox.charges.lock().unwrap_or_else(|p| p.into_inner());
        let Some(charge) = charges.get_mut(&transaction_id) else {
            return error(StatusCode::NOT_FOUND, "transação não encontrada");
        };
        if charge.status != "PAID" || amount > charge.paid - charge.returned {
            return error(StatusCode::BAD_REQUEST, "valor maior que o disponível para devolução");
        }
        charge.returned += amount;
        charge.returns.push((reversal_id.clone(), "PIX_REVERSAL", amount));
    }
    let reversal =
        Reversal { transaction_id: reversal_id, client_code: code.clone(), original: transaction_id, amount };
    sandbox.reversals.lock().unwrap_or_else(|p| p.into_inner()).insert(code, reversal.clone());
    sandbox.notify(
        "PIX_REVERSAL",
        json!({"TransactionId": reversal.transaction_id, "OriginalTransactionId": reversal.original,
               "ClientCode": reversal.client_code, "Amount": reais_of(amount)}),
    );
    answer(stall, (StatusCode::OK, Json(reversal_json(&reversal))).into_response()).await
}

async fn find_reversal(State(sandbox): State<Shared>, headers: HeaderMap, Path(code): Path<String>) -> Response {
    let stall = match gate(&sandbox, &headers) {
        Ok(stall) => stall,
        Err(status) => return refused(status),
    };
    let found = sandbox.reversals.lock().unwrap_or_else(|p| p.into_inner()).get(&code).map(reversal_json);
    let response = match found {
        Some(json) => (StatusCode::OK, Json(json)).into_response(),
        None => error(StatusCode::NOT_FOUND, "devolução não encontrada"),
    };
    answer(stall, response).await
}

async fn release(State(sandbox): State<Shared>, headers: HeaderMap, Path(transaction_id): Path<String>) -> Response {
    let stall = match gate(&sandbox, &headers) {
        Ok(stall) => stall,
        Err(status) => return refused(status),
    };
    let response = {
        let mut charges = sandbox.charges.lock().unwrap_or_else(|p| p.into_inner());
        match charges.get_mut(&transaction_id) {
            Some(charge) if charge.escrow && charge.status == "PAID" => {
                charge.escrow_released = true;
                (StatusCode::OK, Json(json!({"transactionId": transaction_id, "status": "RELEASED"}))).into_response()
            }
            Some(_) => error(StatusCode::BAD_REQUEST, "cobrança sem custódia paga"),
            None => error(StatusCode::NOT_FOUND, "transação não encontrada"),
        }
    };
    answer(stall, response).await
}

async fn escrow_status(
    State(sandbox): State<Shared>,
    headers: HeaderMap,
    Path(transaction_id): Path<String>,
) -> Response {
    let stall = match gate(&sandbox, &headers) {
        Ok(stall) => stall,
        Err(status) => return refused(status),
    };
    let found = sandbox.charges.lock().unwrap_or_else(|p| p.into_inner()).get(&transaction_id).map(|charge| {
        json!({"transactionId": transaction_id, "status": if charge.escrow_released { "RELEASED" } else { "HELD" }})
    });
    let response = match found {
        Some(json) => (StatusCode::OK, Json(json)).into_response(),
        None => error(StatusCode::NOT_FOUND, "transação não encontrada"),
    };
    answer(stall, response).await
}

#[derive(Deserialize)]
struct Page {
    page: Option<usize>,
    limit: Option<usize>,
}

async fn statement(State(sandbox): State<Shared>, headers: HeaderMap, Query(page): Query<Page>) -> Response {
    let stall = match gate(&sandbox, &headers) {
        Ok(stall) => stall,
        Err(status) => return refused(status),
    };
    let limit = page.limit.unwrap_or(500).clamp(1, 500);
    let number = page.page.unwrap_or(1).max(1);
    let (items, next) = {
        let charges = sandbox.charges.lock().unwrap_or_else(|p| p.into_inner());
        let items: Vec<StatementItem> = charges
            .values()
            .skip((number - 1) * limit)
            .take(limit)
            .map(|charge| StatementItem {
                transaction_id: charge.transaction_id.clone(),
                client_request_id: charge.client_request_id.clone(),
                amount: Reais(charge.amount),
                paid_amount: Reais(charge.paid),
                refunded_amount: Reais(charge.returned),
                status: charge.status.to_owned(),
                escrow: charge.escrow,
                escrow_released: charge.escrow_released,
            })
            .collect();
        let next = if number * limit < charges.len() { Some(number + 1) } else { None };
        (items, next)
    };
    answer(stall, (StatusCode::OK, Json(json!({"items": items, "nextPage": next}))).into_response()).await
}

async fn set_faults(State(sandbox): State<Shared>, Json(faults): Json<Faults>) -> StatusCode {
    let seed = faults.seed;
    *sandbox.faults.lock().unwrap_or_else(|p| p.into_inner()) = (faults, StdRng::seed_from_u64(seed));
    StatusCode::NO_CONTENT
}

async fn set_webhook(State(sandbox): State<Shared>, Json(target): Json<WebhookTarget>) -> StatusCode {
    *sandbox.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(target);
    StatusCode::NO_CONTENT
}

async fn stats(State(sandbox): State<Shared>) -> Json<serde_json::Value> {
    let charges = sandbox.charges.lock().unwrap_or_else(|p| p.into_inner()).len();
    Json(json!({
        "charges": charges,
        "calls": sandbox.calls.load(Ordering::SeqCst),
        "webhooks_sent": sandbox.webhooks_sent.load(Ordering::SeqCst),
        "webhooks_pending": sandbox.webhooks_pending.load(Ordering::SeqCst),
    }))
}

/// The sandbox's routes: Celcoin's, and `/sandbox/…` to drive it.
pub fn sandbox_router(webhook: Option<WebhookTarget>) -> axum::Router {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sandbox = Arc::new(Sandbox {
        charges: Mutex::default(),
        by_external: Mutex::default(),
        reversals: Mutex::default(),
        faults: Mutex::new((Faults { stall_ms: default_stall(), ..Faults::default() }, StdRng::seed_from_u64(0))),
        target: Mutex::new(webhook),
        instance: rand::random(),
        counter: AtomicU64::new(0),
        webhooks_sent: AtomicU64::new(0),
        webhooks_pending: AtomicI64::new(0),
        calls: AtomicU64::new(0),
        http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default(),
    });
    axum::Router::new()
        .route("/v5/token", post(token))
        .route("/pix/v1/collection/immediate", post(create_immediate))
        .route("/pix/v1/collection/duedate", post(create_immediate))
        .route("/v5/charge", post(create_charge))
        .route("/v5/charge/external/{id}", get(find_external))
        .route("/pix/v1/reverse/pi/{transaction_id}", post(reverse))
        .route("/pix/v1/reverse/client-code/{code}", get(find_reversal))
        .route("/v5/escrow/{transaction_id}/release", post(release))
        .route("/v5/escrow/{transaction_id}", get(escrow_status))
        .route("/v5/statement", get(statement))
        .route("/sandbox/charges/{id}/pay", post(pay))
        .route("/sandbox/charges/{id}/chargeback", post(chargeback))
        .route("/sandbox/charges/{id}/med", post(med))
        .route("/sandbox/faults", put(set_faults))
        .route("/sandbox/webhook", put(set_webhook))
        .route("/sandbox/stats", get(stats))
        .with_state(sandbox)
}

/// Serves the sandbox on `bind` (port 0: any free port) in the background; returns its address.
pub async fn start_sandbox(bind: SocketAddr, webhook: Option<WebhookTarget>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, sandbox_router(webhook)).await {
            tracing::error!(%error, "Celcoin sandbox stopped");
        }
    });
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::celcoin::{CelcoinClient, ChargeMethod, ChargeRequest};
    use crate::resilience::Policy;

    fn request(id: &str, method: ChargeMethod) -> ChargeRequest {
        ChargeRequest {
            client_request_id: id.to_owned(),
            method,
            amount_centavos: 150_000,
            due_date: (method == ChargeMethod::Boleto).then(|| "2026-12-20".to_owned()),
            debtor_name: "Maria da Silva".to_owned(),
            debtor_cpf: "52998224725".to_owned(),
            description: "Consulta".to_owned(),
            split: Vec::new(),
            escrow: false,
            card_token: None,
            expiration_seconds: None,
        }
    }

    #[tokio::test]
    async fn a_charge_whose_answer_is_lost_is_found_not_made_twice() {
        let address = start_sandbox("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let base = format!("http://{address}");
        let policy = Policy {
            timeout_ms: 200,
            attempts_max: 4,
            backoff_base_ms: 1,
            backoff_max_ms: 5,
            breaker_failures: 1_000,
            ..Policy::default()
        };
        let client = CelcoinClient::new(&base, "id", "secret", "pix@medpay.com.br", policy).unwrap();
        // Every call is carried out and its answer withheld past the client's time-out.
        let control = reqwest::Client::new();
        control
            .put(format!("{base}/sandbox/faults"))
            .json(&json!({"timeout_rate": 1.0, "stall_ms": 400}))
            .send()
            .await
            .unwrap();
        let outcome = client.create_charge(&request("p-1", ChargeMethod::Pix)).await;
        assert!(outcome.is_err(), "every answer was lost, lookups included");
        control.put(format!("{base}/sandbox/faults")).json(&json!({})).send().await.unwrap();
        let charge = client.create_charge(&request("p-1", ChargeMethod::Pix)).await.unwrap();
        assert_eq!(charge.amount_centavos, 150_000);
        let parsed = BrCode::parse(charge.emv.as_deref().unwrap()).unwrap();
        assert_eq!(parsed.amount, Some(Money::from_centavos(150_000)));
        let stats: serde_json::Value =
            control.get(format!("{base}/sandbox/stats")).send().await.unwrap().json().await.unwrap();
        assert_eq!(stats["charges"], 1, "one charge, however many attempts");
        let boleto = client.create_charge(&request("p-2", ChargeMethod::Boleto)).await.unwrap();
        let line = boleto.linha_digitavel.unwrap();
        assert_eq!(Boleto::from_line(&line).unwrap().amount, Money::from_centavos(150_000));
    }

    #[tokio::test]
    async fn server_errors_are_retried_and_refunds_happen_once() {
        let address = start_sandbox("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let base = format!("http://{address}");
        let policy = Policy {
            timeout_ms: 500,
            attempts_max: 6,
            backoff_base_ms: 1,
            backoff_max_ms: 5,
            breaker_failures: 1_000,
            ..Policy::default()
        };
        let client = CelcoinClient::new(&base, "id", "secret", "pix@medpay.com.br", policy).unwrap();
        let control = reqwest::Client::new();
        let charge = client.create_charge(&request("p-3", ChargeMethod::Pix)).await.unwrap();
        control.post(format!("{base}/sandbox/charges/p-3/pay")).send().await.unwrap();
        control
            .put(format!("{base}/sandbox/faults"))
            .json(&json!({"seed": 3, "error_rate": 0.3, "timeout_rate": 0.2, "stall_ms": 700}))
            .send()
            .await
            .unwrap();
        for _ in 0..3 {
            // The same refund asked three times (a retrying caller) returns money once.
            let _ = client.refund(&charge.transaction_id, "r-1", 50_000, "cancelled").await;
        }
        control.put(format!("{base}/sandbox/faults")).json(&json!({})).send().await.unwrap();
        let statement = client.statement().await.unwrap();
        assert_eq!(statement.len(), 1);
        assert_eq!(statement[0].refunded_amount, Reais(50_000));
        assert!(client.refund(&charge.transaction_id, "r-2", 100_001, "too much").await.is_err());
    }
}

//! A seeded, deterministic simulation of payments' money: the pure lifecycle (`lifecycle/`)
//! driven through every path — approval, review, decline; PIX, boleto, card; installments;
//! escrow and its release; partial and full refunds; chargebacks and MED claims, also after
//! partial refunds; late and wrong payments; contracts — by clients that retry with their
//! Idempotency-Key, against a gateway that fails before or after doing what it was asked, with
//! the process crashing at step boundaries (everything in memory dropped, the store kept).
//!
//! The shell here is the transaction actor's protocol in miniature: commit, then perform the
//! effects the book owes under our own ids, then commit their answers; after a crash the sweep
//! performs whatever is owed again. After every step the world is checked: the ledger balances
//! and agrees with the books, every charge at the gateway has exactly one payment here, no key
//! makes two payments, nothing is refunded twice, every acknowledged answer replays byte for byte,
//! and escrow still held can be released. At the end the faults stop, everything is settled, and
//! the ledger must equal the gateway's money, centavo for centavo.
//!
//! `cargo test` runs a short one (`simulation_short`); `cargo bench --bench simulation` a long
//! one (`MEDPAY_SIM_SEED`, `MEDPAY_SIM_PAYMENTS`). A failure names its seed and step.

use crate::lifecycle::{self, Applied, Book, Effect, Fault, RefundPlan};
use medpay_gateways::celcoin::{Charge, ChargeMethod, ChargeRequest};
use medpay_models::{Account, DecisionOutcome, Installment, PaymentId, PaymentMethod, PaymentStatus, Posting};
use medpay_store::{
    ChargeStatus, ContractStatus, DecisionRecord, GatewayWebhook, IntentRecord, Movement, PaymentRecord, RefundKind,
    RefundStatus,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Payment requests to make (each with its own key).
    pub payments: usize,
    /// Chance, per thousand, of a crash at each step boundary.
    pub crash_per_mille: u32,
    /// Chance, per thousand, that a gateway call fails before doing anything, and the same that
    /// it does the work and its answer is lost.
    pub fault_per_mille: u32,
}

impl SimConfig {
    pub fn new(seed: u64, payments: usize) -> SimConfig {
        SimConfig { seed, payments, crash_per_mille: 40, fault_per_mille: 80 }
    }
}

/// What a run went through.
#[derive(Debug, Default, Clone)]
pub struct SimReport {
    pub seed: u64,
    pub steps: u64,
    pub crashes: u64,
    pub gateway_faults: u64,
    /// How many times the process crashed at each boundary.
    pub crashed_at: BTreeMap<&'static str, u64>,
    /// How many payments ended in each status.
    pub statuses: BTreeMap<&'static str, u64>,
    /// How many times each path was taken (refunds, chargebacks, releases, …).
    pub paths: BTreeMap<&'static str, u64>,
    pub gateway_charges: usize,
    pub suspense_centavos: i64,
}

/// A run that found the world wrong.
#[derive(Debug, Clone)]
pub struct SimFailure {
    pub seed: u64,
    pub step: u64,
    pub message: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "simulation seed {} failed at step {}: {}", self.seed, self.step, self.message)
    }
}

/// Why an operation stopped early.
enum Stop {
    /// The process died here: memory is gone, the store is kept.
    Crash,
    /// The world is wrong.
    Broken(String),
}

impl From<Fault> for Stop {
    fn from(fault: Fault) -> Stop {
        match fault {
            Fault::Broken(message) => Stop::Broken(message),
            Fault::Refused { code, message } => Stop::Broken(format!("unexpected refusal {code}: {message}")),
        }
    }
}

/// A request a client keeps sending until it has an answer.
struct Client {
    key: String,
    method: PaymentMethod,
    amount_centavos: i64,
    installments: u32,
    escrow: bool,
    outcome: DecisionOutcome,
    /// The answer it got (the first time): every retry after must be these bytes.
    acked: Option<String>,
}

/// A charge as the gateway holds it.
struct GatewayCharge {
    transaction_id: String,
    amount_centavos: i64,
    method: ChargeMethod,
    paid: i64,
    /// Money gone back: reversals we asked for (by our refund id) and take-backs by the payer's bank.
    reversals: BTreeMap<String, i64>,
    taken: i64,
    escrow_released: bool,
    cancelled: bool,
}

/// What the store holds: books (as the actor rebuilds them), the ledger journal, idempotency
/// keys, recorded webhooks, open review cases.
#[derive(Default)]
struct Stored {
    books: BTreeMap<PaymentId, Book>,
    journal: Vec<Posting>,
    /// key → (payment, completed answer).
    keys: BTreeMap<String, (PaymentId, Option<String>)>,
    /// Recorded webhooks by (gateway, id): (payment, webhook, applied).
    webhooks: BTreeMap<(String, String), (PaymentId, GatewayWebhook, bool)>,
    /// Recorded webhooks not applied yet, by payment.
    unapplied: BTreeMap<PaymentId, BTreeSet<(String, String)>>,
    open_cases: BTreeMap<PaymentId, String>,
    refund_ids: BTreeSet<String>,
    /// The escrow account's entries summed by payment, straight from the postings written.
    escrow_journal: BTreeMap<PaymentId, i64>,
}

struct World {
    config: SimConfig,
    rng: StdRng,
    now_ms: i64,
    step: u64,
    /// Faults and crashes stop for the final settlement.
    calm: bool,
    clients: Vec<Client>,
    stored: Stored,
    gateway: BTreeMap<String, GatewayCharge>,
    /// Webhooks the gateways are still trying to deliver (they retry until we take them).
    notices: Vec<GatewayWebhook>,
    /// Contract envelopes by name (ClickSign finds one sent under the same name).
    envelopes: BTreeMap<String, String>,
    next_id: u64,
    /// Payments a step changed (in the store or at the gateway): checked after it.
    touched: BTreeSet<PaymentId>,
    report: SimReport,
}

fn view(
    payment: &PaymentRecord,
    decision: Option<&DecisionRecord>,
    charge: Option<&medpay_store::ChargeRecord>,
) -> serde_json::Value {
    json!({
        "id": payment.id, "status": payment.status.as_str(), "amount_centavos": payment.amount_centavos,
        "decision": decision.map(|d| d.outcome.as_str()), "charge": charge.map(|c| c.gateway_id.clone()),
        "updated_at_ms": payment.updated_at_ms,
    })
}

/// One provider and one patient pay for everything (ids fixed, so a seed replays exactly).
const PROVIDER: &str = "00000000-0000-7000-8000-00000000aaaa";
const PATIENT: &str = "00000000-0000-7000-8000-00000000bbbb";

/// The payment a charge's client request id (`<payment>-<installment>`) names.
fn payment_named(client_request_id: &str) -> Option<PaymentId> {
    client_request_id.rsplit_once('-')?.0.parse().ok()
}

fn gateway_kind(method: ChargeMethod) -> &'static str {
    match method {
        ChargeMethod::Pix => "RECEIVEPIX",
        ChargeMethod::Boleto => "BOLETO_PAID",
        ChargeMethod::Card => "CARD_CAPTURED",
    }
}

fn reais(centavos: i64) -> serde_json::Value {
    json!(format!("{}.{:02}", centavos / 100, centavos % 100).parse::<f64>().unwrap_or(0.0))
}

impl World {
    fn new(config: SimConfig) -> World {
        let rng = StdRng::seed_from_u64(config.seed);
        let report = SimReport { seed: config.seed, ..SimReport::default() };
        World {
            config,
            rng,
            now_ms: 1_767_225_600_000, // 2026-01-01
            step: 0,
            calm: false,
            clients: Vec::new(),
            stored: Stored::default(),
            gateway: BTreeMap::new(),
            notices: Vec::new(),
            envelopes: BTreeMap::new(),
            next_id: 0,
            touched: BTreeSet::new(),
            report,
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:06}", self.next_id)
    }

    fn chance(&mut self, per_mille: u32) -> bool {
        self.rng.random_range(0..1_000) < per_mille
    }

    fn path(&mut self, name: &'static str) {
        *self.report.paths.entry(name).or_default() += 1;
    }

    /// A step boundary: the process may die here.
    fn boundary(&mut self, name: &'static str) -> Result<(), Stop> {
        if !self.calm && self.chance(self.config.crash_per_mille) {
            self.report.crashes += 1;
            *self.report.crashed_at.entry(name).or_default() += 1;
            return Err(Stop::Crash);
        }
        Ok(())
    }

    /// A gateway call: fails before doing anything (Err(false)), or does it and loses the answer
    /// (the work is done by `work` before; Err(true)), or answers.
    fn gateway_fault(&mut self) -> Option<bool> {
        if self.calm {
            return None;
        }
        let draw = self.rng.random_range(0..1_000);
        let fault = self.config.fault_per_mille;
        if draw < fault {
            self.report.gateway_faults += 1;
            Some(false)
        } else if draw < 2 * fault {
            self.report.gateway_faults += 1;
            Some(true)
        } else {
            None
        }
    }

    fn book(&self, id: PaymentId) -> Result<&Book, Stop> {
        self.stored.books.get(&id).ok_or_else(|| Stop::Broken(format!("payment {id} is not stored")))
    }

    // ---- the store ------------------------------------------------------------------------

    /// One commit, with the store's guards; Ok(false): refused by a guard, nothing written.
    fn commit(&mut self, id: PaymentId, movement: Movement) -> Result<bool, Stop> {
        let book = self.book(id)?;
        lifecycle::check(book, &movement)?;
        if let Some((case_id, _, _)) = &movement.review_closed
            && self.stored.open_cases.get(&id) != Some(case_id)
        {
            return Ok(false);
        }
        if movement.review_case.is_some() && self.stored.open_cases.contains_key(&id) {
            return Ok(false);
        }
        if movement.new_refunds.iter().any(|refund| self.stored.refund_ids.contains(&refund.id)) {
            return Ok(false);
        }
        if let Some((gateway, webhook_id, _, _)) = &movement.webhook
            && self.stored.webhooks.get(&(gateway.clone(), webhook_id.clone())).is_none_or(|(_, _, applied)| *applied)
        {
            return Ok(false);
        }
        for posting in &movement.postings {
            let sum: i64 = posting.entries().iter().map(|entry| entry.amount.centavos()).sum();
            if sum != 0 {
                return Err(Stop::Broken(format!("posting {} of {id} does not balance: {sum}", posting.kind())));
            }
        }
        // Written.
        self.touched.insert(id);
        for posting in &movement.postings {
            for entry in posting.entries() {
                if matches!(entry.account, Account::ProviderEscrow(_)) {
                    *self.stored.escrow_journal.entry(id).or_default() += entry.amount.centavos();
                }
            }
        }
        self.stored.journal.extend(movement.postings.iter().cloned());
        self.stored.refund_ids.extend(movement.new_refunds.iter().map(|refund| refund.id.clone()));
        if let Some((reason, _)) = &movement.review_case {
            self.stored.open_cases.insert(id, format!("case-{reason}-{id}"));
        }
        if movement.review_closed.is_some() {
            self.stored.open_cases.remove(&id);
        }
        if let Some((gateway, webhook_id, _, _)) = &movement.webhook
            && let Some(entry) = self.stored.webhooks.get_mut(&(gateway.clone(), webhook_id.clone()))
        {
            entry.2 = true;
            if let Some(pending) = self.stored.unapplied.get_mut(&id) {
                pending.remove(&(gateway.clone(), webhook_id.clone()));
            }
        }
        if let Some(completion) = &movement.idempotency {
            for (payment, answer) in self.stored.keys.values_mut() {
                if *payment == completion.payment_id && answer.is_none() {
                    *answer = Some(completion.body.clone());
                }
            }
        }
        let book = self.stored.books.get_mut(&id).ok_or_else(|| Stop::Broken("book vanished".into()))?;
        lifecycle::apply(book, &movement);
        Ok(true)
    }

    // ---- clients --------------------------------------------------------------------------

    fn new_client(&mut self) {
        let method = [PaymentMethod::Pix, PaymentMethod::Boleto, PaymentMethod::Card][self.rng.random_range(0..3)];
        let installments = if self.chance(300) { self.rng.random_range(2..=3) } else { 1 };
        let draw = self.rng.random_range(0..100);
        let outcome = match draw {
            0..70 => DecisionOutcome::Approve,
            70..88 => DecisionOutcome::Review,
            _ => DecisionOutcome::Decline,
        };
        let client = Client {
            key: self.id("key-"),
            method,
            amount_centavos: self.rng.random_range(1_000..600_000),
            installments,
            escrow: self.chance(400),
            outcome,
            acked: None,
        };
        self.clients.push(client);
    }

    /// A client sends (or sends again) its request, as the edge handles it.
    fn request(&mut self, index: usize) -> Result<(), Stop> {
        let key = self.clients[index].key.clone();
        let answer = match self.stored.keys.get(&key).cloned() {
            Some((_, Some(body))) => {
                self.path("replayed");
                body
            }
            Some((payment, None)) => {
                self.path("resumed");
                self.first_charge(payment)?
            }
            None => self.open(index)?,
        };
        self.boundary("before_answer")?;
        let client = &mut self.clients[index];
        match &client.acked {
            Some(acked) if *acked != answer => {
                return Err(Stop::Broken(format!("key {key} answered {answer} after {acked}")));
            }
            Some(_) => {}
            None => client.acked = Some(answer),
        }
        Ok(())
    }

    /// A new payment: decided, recorded with its key and its first intent, then its first charge.
    fn open(&mut self, index: usize) -> Result<String, Stop> {
        self.boundary("before_open")?;
        let client = &self.clients[index];
        let id: PaymentId = uuid::Uuid::from_u128(self.rng.random::<u128>())
            .to_string()
            .parse()
            .map_err(|_| Stop::Broken("payment id".into()))?;
        let per = client.amount_centavos / i64::from(client.installments);
        let first_extra = client.amount_centavos - per * i64::from(client.installments);
        let today = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default();
        let installments = (1..=client.installments)
            .map(|number| Installment {
                number,
                due_date: today + chrono::Days::new(u64::from(number) * 30),
                amount_centavos: per + if number == 1 { first_extra } else { 0 },
            })
            .collect();
        let status = match client.outcome {
            DecisionOutcome::Approve => PaymentStatus::Approved,
            DecisionOutcome::Review => PaymentStatus::InReview,
            DecisionOutcome::Decline => PaymentStatus::Declined,
        };
        let payment = PaymentRecord {
            id,
            provider_id: PROVIDER.parse().map_err(|_| Stop::Broken("provider id".into()))?,
            patient_id: PATIENT.parse().map_err(|_| Stop::Broken("patient id".into()))?,
            tuss_code: "30101012".parse().map_err(|_| Stop::Broken("tuss".into()))?,
            description: "Consulta".to_owned(),
            amount_centavos: client.amount_centavos,
            method: client.method,
            monthly_interest_bps: 0,
            total_centavos: client.amount_centavos,
            cet_annual_bps: 0,
            status,
            device_id: "device".to_owned(),
            ip: "127.0.0.1".to_owned(),
            created_at_ms: self.now_ms,
            updated_at_ms: self.now_ms,
            installments,
            fee_bps: 500,
            escrow: client.escrow,
        };
        let decision = DecisionRecord {
            id: format!("decision-{id}"),
            payment_id: id,
            outcome: client.outcome,
            score: 100,
            reasons: Vec::new(),
            rules_hit: Vec::new(),
            model_version: "sim".to_owned(),
            latency_us: 0,
            created_at_ms: self.now_ms,
            features: serde_json::Value::Null,
            shadow: None,
        };
        let contract = payment.installments.len() > 1 && payment.amount_centavos >= 300_000;
        let intent = lifecycle::opening_intent(&payment, true, contract);
        let charge_first = intent.as_ref().is_some_and(|intent| intent.installment == Some(1));
        let (_events, body) = lifecycle::opening_events(&view, &payment, &decision);
        let key = client.key.clone();
        let in_review = status == PaymentStatus::InReview;
        // One commit: the payment, its decision, its key, its intent.
        self.stored.keys.insert(key, (id, (!charge_first).then(|| body.clone())));
        self.stored.books.insert(id, Book::opened(payment, Some(decision), intent.into_iter().collect()));
        if in_review {
            self.stored.open_cases.insert(id, format!("case-score-{id}"));
        }
        self.path(status.as_str());
        self.boundary("after_open_commit")?;
        if charge_first { self.first_charge(id) } else { Ok(body) }
    }

    /// The first charge within the request (when its intent is pending), then the answer.
    fn first_charge(&mut self, id: PaymentId) -> Result<String, Stop> {
        let intent = self.book(id)?.intents.iter().find(|intent| intent.installment == Some(1)).cloned();
        if let Some(intent) = intent
            && let Some(body) = self.charge(id, &intent, 1)?
        {
            return Ok(body);
        }
        let (movement, body) = lifecycle::answer_without_charge(self.book(id)?, &view);
        self.commit(id, movement)?;
        self.boundary("after_answer_commit")?;
        Ok(body)
    }

    // ---- effects --------------------------------------------------------------------------

    fn charge(&mut self, id: PaymentId, intent: &IntentRecord, number: u32) -> Result<Option<String>, Stop> {
        let request =
            lifecycle::charge_request(self.book(id)?, number, ("Paciente".into(), "12345678909".into()), None, 86_400)?;
        if !lifecycle::chargeable(self.book(id)?, number) {
            // Made before, its answer lost? The gateway is asked (the ask itself may fail).
            if self.gateway_fault().is_some() {
                return Ok(None);
            }
            let found = match self.gateway.get_mut(&intent.id) {
                Some(held) => {
                    held.cancelled = true;
                    Some(self.create_charge(&request))
                }
                None => None,
            };
            let book = self.book(id)?;
            let found = found
                .map(|answer| lifecycle::charge_record(book, &request, answer, number, self.now_ms))
                .transpose()?;
            if found.is_some() {
                self.path("lost_charge_recorded");
            }
            self.commit(id, lifecycle::charge_given_up(self.book(id)?, intent, found, self.now_ms))?;
            return Ok(None);
        }
        let fault = self.gateway_fault();
        if fault == Some(false) {
            return Ok(None);
        }
        let answer = self.create_charge(&request);
        if fault == Some(true) {
            return Ok(None);
        }
        self.boundary("after_charge_call")?;
        let charge = lifecycle::charge_record(self.book(id)?, &request, answer, number, self.now_ms)?;
        let (movement, body) = lifecycle::charge_made(self.book(id)?, intent, charge, self.now_ms, &view);
        self.commit(id, movement)?;
        self.path("charged");
        self.boundary("after_charge_commit")?;
        Ok(body)
    }

    /// The gateway's side of a charge: created once per client request id.
    fn create_charge(&mut self, request: &ChargeRequest) -> Charge {
        if let Some(payment) = payment_named(&request.client_request_id) {
            self.touched.insert(payment);
        }
        if !self.gateway.contains_key(&request.client_request_id) {
            let transaction_id = self.id("tx");
            self.gateway.insert(
                request.client_request_id.clone(),
                GatewayCharge {
                    transaction_id,
                    amount_centavos: request.amount_centavos,
                    method: request.method,
                    paid: 0,
                    reversals: BTreeMap::new(),
                    taken: 0,
                    escrow_released: false,
                    cancelled: false,
                },
            );
        }
        let held = &self.gateway[&request.client_request_id];
        Charge {
            transaction_id: held.transaction_id.clone(),
            client_request_id: request.client_request_id.clone(),
            method: request.method,
            amount_centavos: held.amount_centavos,
            status: "ACTIVE".to_owned(),
            emv: Some(format!("00020126-{}", held.transaction_id)),
            linha_digitavel: None,
            barcode: None,
            expiration_seconds: (request.method == ChargeMethod::Pix && request.due_date.is_none()).then_some(86_400),
            due_date: request.due_date.clone(),
        }
    }

    /// Performs what a payment's book owes (the sweep's and the actor's follow-up).
    fn perform_owed(&mut self, id: PaymentId) -> Result<(), Stop> {
        for effect in lifecycle::owed(self.book(id)?) {
            match effect {
                Effect::Charge { intent, installment } => {
                    self.charge(id, &intent, installment)?;
                }
                Effect::Contract { intent } => {
                    if !lifecycle::contract_wanted(self.book(id)?) {
                        self.commit(id, lifecycle::done(&intent, self.now_ms))?;
                        continue;
                    }
                    let fault = self.gateway_fault();
                    if fault == Some(false) {
                        continue;
                    }
                    let name = format!("Parcelamento {id}");
                    let envelope = match self.envelopes.get(&name) {
                        Some(envelope) => envelope.clone(),
                        None => {
                            let envelope = self.id("env");
                            self.envelopes.insert(name, envelope.clone());
                            envelope
                        }
                    };
                    if fault == Some(true) {
                        continue;
                    }
                    self.boundary("after_contract_call")?;
                    let movement = lifecycle::contract_sent(self.book(id)?, &intent, &envelope, self.now_ms, &view);
                    self.commit(id, movement)?;
                    self.path("contract_sent");
                    self.boundary("after_contract_commit")?;
                }
                Effect::Release { intent, gateway_ids } => {
                    for gateway_id in gateway_ids {
                        let fault = self.gateway_fault();
                        if fault == Some(false) {
                            return Ok(());
                        }
                        if let Some(charge) = self.gateway.values_mut().find(|c| c.transaction_id == gateway_id) {
                            charge.escrow_released = true;
                        }
                        if fault == Some(true) {
                            return Ok(());
                        }
                    }
                    self.boundary("after_release_call")?;
                    self.commit(id, lifecycle::done(&intent, self.now_ms))?;
                    self.path("escrow_released_at_gateway");
                }
                Effect::Refund { refund_id, gateway_id, amount_centavos, .. } => {
                    let fault = self.gateway_fault();
                    if fault == Some(false) {
                        continue;
                    }
                    self.reverse(&gateway_id, &refund_id, amount_centavos);
                    if fault == Some(true) {
                        continue;
                    }
                    self.boundary("after_refund_call")?;
                }
            }
        }
        Ok(())
    }

    /// The gateway's side of a refund: once per refund id, never more than what is left.
    fn reverse(&mut self, gateway_id: &str, refund_id: &str, amount: i64) {
        let Some((client_request_id, charge)) = self.gateway.iter_mut().find(|(_, c)| c.transaction_id == gateway_id)
        else {
            return;
        };
        self.touched.extend(payment_named(client_request_id));
        if charge.reversals.contains_key(refund_id) {
            return;
        }
        let gone: i64 = charge.reversals.values().sum::<i64>() + charge.taken;
        if gone + amount > charge.paid {
            return;
        }
        charge.reversals.insert(refund_id.to_owned(), amount);
        let original = charge.transaction_id.clone();
        let reversal = self.id("rev");
        let webhook = self.id("wh");
        self.notices.push(self.celcoin_notice(
            webhook,
            "PIX_REVERSAL",
            json!({"TransactionId": reversal, "OriginalTransactionId": original, "ClientCode": refund_id, "Amount": reais(amount)}),
        ));
    }

    fn celcoin_notice(&self, id: String, kind: &str, body: serde_json::Value) -> GatewayWebhook {
        GatewayWebhook {
            gateway: lifecycle::CELCOIN.to_owned(),
            webhook_id: id.clone(),
            payment_id: None,
            kind: kind.to_owned(),
            body: json!({"Id": id, "TransactionType": kind, "RequestBody": body}).to_string(),
            state: "pending".to_owned(),
            received_at_ms: self.now_ms,
        }
    }

    // ---- webhooks -------------------------------------------------------------------------

    /// The payment a webhook is about, as the edge finds it (by the charge or the envelope).
    fn payment_of(&self, webhook: &GatewayWebhook) -> Option<PaymentId> {
        if webhook.gateway == lifecycle::CLICKSIGN {
            let envelope = serde_json::from_str::<serde_json::Value>(&webhook.body).ok()?;
            let envelope = envelope.pointer("/document/key")?.as_str()?.to_owned();
            return self
                .stored
                .books
                .iter()
                .find(|(_, book)| book.contract.as_ref().is_some_and(|c| c.envelope_id == envelope))
                .map(|(id, _)| *id);
        }
        let notice = medpay_gateways::celcoin::parse_notice(webhook.body.as_bytes()).ok()?;
        let client_request_id = self
            .gateway
            .iter()
            .find(|(_, charge)| charge.transaction_id == notice.charge_transaction_id)
            .map(|(id, _)| id.clone())?;
        let payment = payment_named(&client_request_id)?;
        self.stored.books.contains_key(&payment).then_some(payment)
    }

    /// Delivers one of the gateways' waiting webhooks: recorded once (a duplicate is taken and
    /// dropped), then applied with whatever waited for it, then the effects owed.
    fn deliver(&mut self, index: usize) -> Result<(), Stop> {
        let webhook = self.notices[index].clone();
        let Some(payment) = self.payment_of(&webhook) else {
            // Not ours yet (a charge whose commit did not happen): the gateway retries later.
            return Ok(());
        };
        let duplicate = !self.calm && self.chance(100);
        if !duplicate {
            self.notices.swap_remove(index);
        }
        let key = (webhook.gateway.clone(), webhook.webhook_id.clone());
        if self.stored.webhooks.contains_key(&key) {
            self.path("duplicate_webhook");
            return Ok(());
        }
        self.stored.unapplied.entry(payment).or_default().insert(key.clone());
        self.stored.webhooks.insert(key, (payment, webhook, false));
        self.boundary("after_webhook_record")?;
        self.apply_pending(payment)?;
        self.perform_owed(payment)
    }

    fn apply_pending(&mut self, id: PaymentId) -> Result<(), Stop> {
        loop {
            let pending: Vec<GatewayWebhook> = self
                .stored
                .unapplied
                .get(&id)
                .into_iter()
                .flatten()
                .filter_map(|key| self.stored.webhooks.get(key).map(|(_, webhook, _)| webhook.clone()))
                .collect();
            let mut progressed = false;
            for webhook in pending {
                match lifecycle::webhook(self.book(id)?, &webhook, self.now_ms, &view)? {
                    Applied::Wait => {}
                    Applied::Step(movement) => {
                        if movement.case.is_some() {
                            self.path("suspense");
                        }
                        if movement.label.is_some() {
                            self.path("taken_back");
                        }
                        if self.commit(id, *movement)? {
                            progressed = true;
                            self.boundary("after_webhook_commit")?;
                        }
                    }
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    // ---- the world's moves ----------------------------------------------------------------

    /// A payer pays an active charge at the gateway (sometimes late, sometimes the wrong amount).
    fn pay(&mut self) {
        let open: Vec<String> = self
            .gateway
            .iter()
            .filter(|(_, c)| c.paid == 0 && (!c.cancelled || self.rng.random_range(0..20) == 0))
            .map(|(id, _)| id.clone())
            .collect();
        if open.is_empty() {
            return;
        }
        let id = open[self.rng.random_range(0..open.len())].clone();
        self.touched.extend(payment_named(&id));
        let wrong = self.chance(30);
        let charge = self.gateway.get_mut(&id).expect("chosen from the map");
        charge.paid = if wrong { charge.amount_centavos + 1 } else { charge.amount_centavos };
        let (transaction, paid, kind) = (charge.transaction_id.clone(), charge.paid, gateway_kind(charge.method));
        let webhook = self.id("wh");
        self.notices.push(self.celcoin_notice(
            webhook,
            kind,
            json!({"TransactionId": transaction, "ClientRequestId": id, "Amount": reais(paid)}),
        ));
        self.path(if wrong { "paid_wrong_amount" } else { "paid" });
    }

    /// The payer's bank takes money back from a paid charge (a chargeback or a MED claim).
    fn take_back(&mut self) {
        let paid: Vec<String> =
            self.gateway.iter().filter(|(_, c)| c.paid > 0 && c.taken == 0).map(|(id, _)| id.clone()).collect();
        if paid.is_empty() {
            return;
        }
        let id = paid[self.rng.random_range(0..paid.len())].clone();
        self.touched.extend(payment_named(&id));
        let med = self.chance(400);
        let whole = self.chance(600);
        let charge = self.gateway.get_mut(&id).expect("chosen from the map");
        // The payer's side disputes what was paid, whatever was refunded meanwhile.
        let amount = if whole { charge.paid } else { (charge.paid / 2).max(1) };
        charge.taken = amount;
        let original = charge.transaction_id.clone();
        let reversal = self.id(if med { "med" } else { "cb" });
        let webhook = self.id("wh");
        let kind = if med { "MED_RETURN" } else { "CHARGEBACK" };
        self.notices.push(self.celcoin_notice(
            webhook,
            kind,
            json!({"TransactionId": reversal, "OriginalTransactionId": original, "Amount": reais(amount)}),
        ));
        self.path(if med { "med" } else { "chargeback" });
    }

    fn payments_where(&self, wanted: impl Fn(&Book) -> bool) -> Vec<PaymentId> {
        self.stored.books.iter().filter(|(_, book)| wanted(book)).map(|(id, _)| *id).collect()
    }

    fn pick(&mut self, ids: &[PaymentId]) -> Option<PaymentId> {
        (!ids.is_empty()).then(|| ids[self.rng.random_range(0..ids.len())])
    }

    /// A refund asked for: some within what is left, some beyond it, some under a key already used.
    fn refund(&mut self) -> Result<(), Stop> {
        let refundable = self.payments_where(|book| {
            matches!(
                book.payment.status,
                PaymentStatus::Paid
                    | PaymentStatus::HeldInEscrow
                    | PaymentStatus::Released
                    | PaymentStatus::PartiallyRefunded
            )
        });
        let Some(id) = self.pick(&refundable) else { return Ok(()) };
        let book = self.book(id)?;
        let left: i64 = book
            .charges
            .iter()
            .filter(|c| c.status == ChargeStatus::Paid)
            .map(|c| {
                c.amount_centavos
                    - book.refunds.iter().filter(|r| r.charge_id == c.id).map(|r| r.amount_centavos).sum::<i64>()
            })
            .sum();
        let reused = book.refunds.iter().find(|r| r.kind == RefundKind::Refund).map(|r| r.id.clone());
        let (amount, key) = match self.rng.random_range(0..10) {
            0 => (left + 1, self.id("rk")),
            1 if reused.is_some() => {
                let id = reused.unwrap_or_default();
                (left + 7, id.rsplit_once('-').map(|(key, _)| key.to_owned()).unwrap_or(id))
            }
            2..=4 => (left, self.id("rk")),
            _ => ((left / 3).max(1), self.id("rk")),
        };
        match lifecycle::refund(self.book(id)?, amount, RefundKind::Refund, "sim", &key, self.now_ms, &view) {
            Err(Fault::Refused { code, .. }) => {
                if amount <= left && code == "refund_exceeds_paid" {
                    return Err(Stop::Broken(format!("a refund of {amount} within {left} refused")));
                }
                self.path("refund_refused");
                Ok(())
            }
            Err(fault) => Err(fault.into()),
            Ok(RefundPlan::Made(_)) => Ok(()),
            Ok(RefundPlan::New(movement)) => {
                if amount > left {
                    return Err(Stop::Broken(format!("a refund of {amount} beyond {left} accepted")));
                }
                if self.commit(id, *movement)? {
                    self.path("refund");
                    self.boundary("after_refund_commit")?;
                    self.perform_owed(id)?;
                }
                Ok(())
            }
        }
    }

    fn procedure(&mut self) -> Result<(), Stop> {
        let held = self.payments_where(|book| {
            book.payment.status == PaymentStatus::HeldInEscrow
                || (book.payment.status == PaymentStatus::PartiallyRefunded && book.escrow_held_centavos() > 0)
        });
        let Some(id) = self.pick(&held) else { return Ok(()) };
        let performed = self.chance(800);
        let movement = lifecycle::procedure(self.book(id)?, performed, self.now_ms, &view)?;
        if self.commit(id, movement)? {
            self.path(if performed { "procedure_performed" } else { "procedure_cancelled" });
            self.boundary("after_procedure_commit")?;
            self.perform_owed(id)?;
        }
        Ok(())
    }

    fn close_review(&mut self) -> Result<(), Stop> {
        let open: Vec<PaymentId> = self.stored.open_cases.keys().copied().collect();
        let Some(id) = self.pick(&open) else { return Ok(()) };
        let case_id = self.stored.open_cases[&id].clone();
        let upheld = self.chance(500);
        let book = self.book(id)?;
        let contract = book.payment.installments.len() > 1 && book.payment.amount_centavos >= 300_000;
        let approval = lifecycle::Approval { charging: true, contract };
        let movement = lifecycle::close_review(book, &case_id, upheld, "sim", approval, self.now_ms, &view)?;
        if self.commit(id, movement)? {
            self.path(if upheld { "review_upheld" } else { "review_rejected" });
            self.boundary("after_review_commit")?;
            self.perform_owed(id)?;
        }
        Ok(())
    }

    fn dispute(&mut self) -> Result<(), Stop> {
        let paid = self.payments_where(|book| book.payment.status == PaymentStatus::Paid);
        let Some(id) = self.pick(&paid) else { return Ok(()) };
        let movement = lifecycle::dispute(self.book(id)?, "conversation", self.now_ms, &view);
        if self.commit(id, movement)? {
            self.path("disputed");
        }
        Ok(())
    }

    /// The patient signs (or refuses) a contract sent for signature: ClickSign tells us.
    fn sign(&mut self) {
        let sent: Vec<(PaymentId, String)> = self
            .stored
            .books
            .iter()
            .filter_map(|(id, book)| {
                book.contract
                    .as_ref()
                    .filter(|c| c.status == ContractStatus::Sent)
                    .map(|c| (*id, c.envelope_id.clone()))
            })
            .collect();
        if sent.is_empty() {
            return;
        }
        let (_, envelope) = sent[self.rng.random_range(0..sent.len())].clone();
        let name = if self.chance(850) { "auto_close" } else { "refusal" };
        let id = self.id("cs");
        self.notices.push(GatewayWebhook {
            gateway: lifecycle::CLICKSIGN.to_owned(),
            webhook_id: id,
            payment_id: None,
            kind: name.to_owned(),
            body: json!({"event": {"name": name}, "document": {"key": envelope}}).to_string(),
            state: "pending".to_owned(),
            received_at_ms: self.now_ms,
        });
    }

    /// The sweep: every payment with webhooks waiting, an expiry due or effects owed.
    fn sweep(&mut self) -> Result<(), Stop> {
        let now = self.now_ms;
        let ids: Vec<PaymentId> = self
            .stored
            .books
            .iter()
            .filter(|(id, book)| {
                !book.intents.is_empty()
                    || book.refunds.iter().any(|r| r.status == RefundStatus::Requested)
                    || self.stored.unapplied.get(id).is_some_and(|pending| !pending.is_empty())
                    || book
                        .charges
                        .iter()
                        .any(|c| c.status == ChargeStatus::Active && c.expires_at_ms.is_some_and(|at| at <= now))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.apply_pending(id)?;
            if let Some(movement) = lifecycle::expire(self.book(id)?, self.now_ms, &view)
                && self.commit(id, movement)?
            {
                self.path("expired");
                for charge in self.book(id)?.charges.clone() {
                    if charge.status == ChargeStatus::Cancelled
                        && let Some(held) = self.gateway.get_mut(&charge.id)
                    {
                        held.cancelled = true;
                    }
                }
            }
            self.perform_owed(id)?;
        }
        Ok(())
    }

    fn act(&mut self) -> Result<(), Stop> {
        let draw = self.rng.random_range(0..100);
        match draw {
            0..22 if self.clients.len() < self.config.payments => {
                self.new_client();
                self.request(self.clients.len() - 1)
            }
            0..30 => {
                let waiting: Vec<usize> = (0..self.clients.len())
                    .filter(|i| self.clients[*i].acked.is_none() || self.rng.random_range(0..8) == 0)
                    .collect();
                match waiting.is_empty() {
                    true => Ok(()),
                    false => {
                        let index = waiting[self.rng.random_range(0..waiting.len())];
                        self.request(index)
                    }
                }
            }
            30..45 => {
                self.pay();
                Ok(())
            }
            45..65 if !self.notices.is_empty() => {
                let index = self.rng.random_range(0..self.notices.len());
                self.deliver(index)
            }
            65..72 => self.refund(),
            72..76 => {
                self.take_back();
                Ok(())
            }
            76..81 => self.procedure(),
            81..85 => self.close_review(),
            85..87 => self.dispute(),
            87..90 => {
                self.sign();
                Ok(())
            }
            90..95 => self.sweep(),
            _ => {
                // Time passes: PIX charges expire after a day.
                self.now_ms += self.rng.random_range(1_000..4 * 3_600_000);
                Ok(())
            }
        }
    }

    // ---- what must hold -------------------------------------------------------------------

    /// Checks the payments `only` names (every one when `None`) and the keys.
    fn check(&self, only: Option<&BTreeSet<PaymentId>>) -> Result<(), String> {
        let wanted = |id: &PaymentId| only.is_none_or(|only| only.contains(id));
        // Every charge at the gateway has exactly one payment here, which knows it (or still
        // has its intent pending, the answer not committed yet).
        for (client_request_id, charge) in &self.gateway {
            let payment = payment_named(client_request_id)
                .ok_or_else(|| format!("gateway charge {client_request_id} is named by no payment"))?;
            if !wanted(&payment) {
                continue;
            }
            let book = self
                .stored
                .books
                .get(&payment)
                .ok_or_else(|| format!("gateway charge {client_request_id} has no payment"))?;
            let known =
                book.charges.iter().any(|c| &c.id == client_request_id && c.gateway_id == charge.transaction_id);
            let pending = book.intents.iter().any(|i| &i.id == client_request_id);
            if !known && !pending {
                return Err(format!(
                    "gateway charge {client_request_id} is neither recorded nor intended by {payment}"
                ));
            }
            let refunds: i64 = charge.reversals.values().sum();
            if refunds > charge.paid {
                return Err(format!("{client_request_id}: {refunds} refunded of {} paid", charge.paid));
            }
            for (refund_id, amount) in &charge.reversals {
                let ours = book.refunds.iter().find(|r| &r.id == refund_id);
                if ours.is_none_or(|r| r.amount_centavos != *amount) {
                    return Err(format!("gateway reversal {refund_id} of {amount} is not a refund of {payment}"));
                }
            }
        }
        // One payment per key, each answer acknowledged replayed byte for byte.
        let mut owners = BTreeMap::new();
        for (key, (payment, _)) in &self.stored.keys {
            if let Some(other) = owners.insert(*payment, key) {
                return Err(format!("payment {payment} belongs to keys {other} and {key}"));
            }
        }
        if owners.len() != self.stored.books.len() {
            return Err(format!("{} payments, {} keys", self.stored.books.len(), owners.len()));
        }
        for client in &self.clients {
            if let Some(acked) = &client.acked {
                let stored = self.stored.keys.get(&client.key).and_then(|(_, answer)| answer.as_ref());
                if stored != Some(acked) {
                    return Err(format!("key {} acknowledged {acked} but stores {stored:?}", client.key));
                }
            }
        }
        // The ledger: each book's escrow is what the journal says; nothing held below zero;
        // no charge refunded beyond itself; escrow still held can be released.
        for (id, book) in self.stored.books.iter().filter(|(id, _)| wanted(id)) {
            if book.payment.id != *id {
                return Err(format!("book of {id} holds payment {}", book.payment.id));
            }
            let journal = self.stored.escrow_journal.get(id).copied().unwrap_or(0);
            if journal != book.escrow_balance_centavos {
                return Err(format!(
                    "{id}: escrow {} in the book, {journal} in the journal",
                    book.escrow_balance_centavos
                ));
            }
            if book.escrow_held_centavos() < 0 {
                return Err(format!("{id}: escrow holds {} centavos", book.escrow_held_centavos()));
            }
            for charge in &book.charges {
                let refunded: i64 =
                    book.refunds.iter().filter(|r| r.charge_id == charge.id).map(|r| r.amount_centavos).sum();
                if refunded > charge.amount_centavos {
                    return Err(format!(
                        "{id}: charge {} refunded {refunded} of {}",
                        charge.id, charge.amount_centavos
                    ));
                }
            }
            let held_status = book.payment.status == PaymentStatus::HeldInEscrow
                || (book.payment.status == PaymentStatus::PartiallyRefunded && book.escrow_held_centavos() > 0);
            if held_status {
                let mut released = book.clone();
                let movement = lifecycle::procedure(book, true, self.now_ms, &view)
                    .map_err(|fault| format!("{id}: escrow not releasable: {fault:?}"))?;
                lifecycle::check(book, &movement).map_err(|fault| format!("{id}: release refused: {fault:?}"))?;
                lifecycle::apply(&mut released, &movement);
                if released.escrow_held_centavos() != 0 {
                    return Err(format!("{id}: {} centavos still held after release", released.escrow_held_centavos()));
                }
            } else if book.escrow_held_centavos() > 0 {
                return Err(format!(
                    "{id}: {} centavos held by a payment that is {}: {book:#?}",
                    book.escrow_held_centavos(),
                    book.payment.status
                ));
            }
        }
        Ok(())
    }

    /// With faults and crashes stopped, everything owed is done: no intent pending, no webhook
    /// waiting, every refund paid back; then the ledger's clearing account of each payment is
    /// the money the gateway holds of it.
    fn settle(&mut self) -> Result<(), String> {
        self.calm = true;
        for _ in 0..20 {
            while !self.notices.is_empty() {
                let before = self.notices.len();
                self.deliver(0).map_err(|stop| self.stop_text(stop))?;
                if self.notices.len() == before {
                    // Not ours: a charge the payment never recorded.
                    let notice = self.notices.remove(0);
                    return Err(format!("webhook {} belongs to no payment", notice.body));
                }
            }
            for index in 0..self.clients.len() {
                if self.clients[index].acked.is_none() {
                    self.request(index).map_err(|stop| self.stop_text(stop))?;
                }
            }
            self.sweep().map_err(|stop| self.stop_text(stop))?;
            if self.notices.is_empty() {
                break;
            }
        }
        for (id, book) in &self.stored.books {
            if let Some(intent) = book.intents.first() {
                return Err(format!("{id}: intent {} still pending after settling", intent.id));
            }
            if let Some(refund) = book.refunds.iter().find(|r| r.status == RefundStatus::Requested) {
                // Owed and refused by the gateway: the bank took the money back meanwhile.
                let charge = book.charges.iter().find(|c| c.id == refund.charge_id);
                let taken = charge.and_then(|c| self.gateway.get(&c.id)).map_or(0, |g| g.taken);
                if taken == 0 {
                    return Err(format!("{id}: refund {} still owed after settling", refund.id));
                }
            }
        }
        if let Some((_, (payment, webhook, _))) = self.stored.webhooks.iter().find(|(_, (_, _, applied))| !applied) {
            let book = self.stored.books.get(payment).map(|book| {
                (
                    book.payment.status,
                    book.charges
                        .iter()
                        .map(|c| (c.installment, c.gateway_id.clone(), c.status, c.amount_centavos))
                        .collect::<Vec<_>>(),
                    book.refunds
                        .iter()
                        .map(|r| (r.charge_id.clone(), r.kind, r.status, r.amount_centavos))
                        .collect::<Vec<_>>(),
                )
            });
            return Err(format!("{payment}: webhook {} never applied; book {book:?}", webhook.body));
        }
        let mut clearing: BTreeMap<PaymentId, i64> = BTreeMap::new();
        let mut suspense = 0;
        for posting in &self.stored.journal {
            for entry in posting.entries() {
                match (posting.payment(), entry.account) {
                    (Some(payment), Account::GatewayClearing) => {
                        *clearing.entry(payment).or_default() += entry.amount.centavos()
                    }
                    (_, Account::Suspense) => suspense -= entry.amount.centavos(),
                    _ => {}
                }
            }
        }
        self.report.suspense_centavos = suspense;
        for (client_request_id, charge) in &self.gateway {
            let Some(payment) = payment_named(client_request_id) else { continue };
            let net = charge.paid - charge.reversals.values().sum::<i64>() - charge.taken;
            *clearing.entry(payment).or_default() -= net;
        }
        if let Some((payment, difference)) = clearing.iter().find(|(_, difference)| **difference != 0) {
            return Err(format!(
                "{payment}: the ledger's clearing differs from the gateway's money by {difference} centavos"
            ));
        }
        Ok(())
    }

    fn stop_text(&self, stop: Stop) -> String {
        match stop {
            Stop::Crash => "crashed while calm".to_owned(),
            Stop::Broken(message) => message,
        }
    }
}

/// Runs a simulation; Err names the seed and the step where the world went wrong.
pub fn run(config: SimConfig) -> Result<SimReport, SimFailure> {
    let mut world = World::new(config);
    let fail = |world: &World, message: String| SimFailure { seed: world.config.seed, step: world.step, message };
    let steps_max = world.config.payments as u64 * 40;
    while world.step < steps_max {
        world.step += 1;
        match world.act() {
            Ok(()) => {}
            Err(Stop::Crash) => {} // memory gone; the store and the gateways' retries remain
            Err(Stop::Broken(message)) => return Err(fail(&world, message)),
        }
        // The payments this step changed, after every step; all of them now and then.
        let touched = std::mem::take(&mut world.touched);
        let full = world.step.is_multiple_of(200);
        if let Err(message) = world.check((!full).then_some(&touched)) {
            return Err(fail(&world, message));
        }
    }
    world.settle().map_err(|message| fail(&world, message))?;
    world.check(None).map_err(|message| fail(&world, message))?;
    world.report.steps = world.step;
    world.report.gateway_charges = world.gateway.len();
    for book in world.stored.books.values() {
        *world.report.statuses.entry(book.payment.status.as_str()).or_default() += 1;
    }
    Ok(world.report)
}

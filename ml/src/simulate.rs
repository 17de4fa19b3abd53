//! A seeded generator of labelled synthetic health payments.
//!
//! Patients pay providers for TUSS procedures over a span of days. Most payments are legitimate:
//! a patient returns to the providers they know, from their own devices, at daytime hours, for
//! about the provider's price. Five fraud patterns are mixed in:
//!
//! - `stolen_identity`: a CPF never seen before, a new device, an expensive procedure, often at
//!   night, by card in many installments;
//! - `card_testing`: a burst of small card payments from one device and IP across many CPFs
//!   within minutes;
//! - `account_takeover`: a known patient suddenly on a new device and connection, paying several
//!   times their usual amount, often to a provider they never used;
//! - `phantom_procedure`: a colluding provider bills its patients for expensive procedures that
//!   never happened, repeatedly;
//! - `overpriced`: an amount far above the provider's usual price for the procedure.
//!
//! Every payment is replayed in time order through the same feature state the service uses
//! (`PatientHistory`, `ProviderHistory`, `DeviceIndex`), so the features match what the service
//! would have computed. The same seed gives the same rows: the random numbers come from SplitMix64.

use crate::features::{DeviceIndex, Features, PatientEvent, PatientHistory, ProviderHistory, RequestFacts, assemble};
use medpay_models::{DecisionOutcome, PatientId, PaymentId, PaymentMethod, ProviderId};
use std::collections::HashMap;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// 2026-01-01T03:00:00Z, midnight in São Paulo.
pub const SIMULATION_START_MS: i64 = 1_767_236_400_000;

/// Illustrative TUSS procedures and reference prices in centavos.
pub const PROCEDURES: [(&str, &str, i64); 10] = [
    ("10101012", "Consulta em consultório", 25_000),
    ("10101039", "Consulta em pronto-socorro", 35_000),
    ("40304361", "Hemograma completo", 4_000),
    ("40901122", "Ultrassonografia de abdome", 30_000),
    ("41001010", "Tomografia computadorizada", 90_000),
    ("41101014", "Ressonância magnética", 150_000),
    ("30715016", "Cirurgia de catarata", 600_000),
    ("31009107", "Gastroplastia (cirurgia bariátrica)", 2_500_000),
    ("81000065", "Consulta odontológica", 20_000),
    ("85100196", "Implante dentário", 400_000),
];

#[derive(Debug, Clone)]
pub struct SimulationOptions {
    pub seed: u64,
    pub payments: usize,
    pub days: i64,
    pub providers: usize,
}

impl Default for SimulationOptions {
    fn default() -> Self {
        SimulationOptions { seed: 7, payments: 60_000, days: 90, providers: 40 }
    }
}

/// One generated payment.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedPayment {
    pub at_ms: i64,
    pub features: Features,
    pub is_fraud: bool,
    pub pattern: &'static str,
    pub tuss_code: &'static str,
    pub amount_centavos: i64,
}

/// SplitMix64: tiny, fast, and the same sequence everywhere for the same seed.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, bound: usize) -> usize {
        (self.unit() * bound as f64) as usize % bound.max(1)
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    /// Standard normal, by Box–Muller.
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

struct Provider {
    id: ProviderId,
    price_factor: f64,
    procedures: Vec<usize>,
    colluding: bool,
}

struct Patient {
    id: PatientId,
    devices: Vec<String>,
    ip: String,
    providers: Vec<usize>,
}

/// A payment before its features are computed.
struct Planned {
    at_ms: i64,
    patient: usize,
    provider: usize,
    procedure: usize,
    amount_centavos: i64,
    method: PaymentMethod,
    installments: u32,
    device: String,
    ip: String,
    pattern: &'static str,
}

/// A daytime instant on `day`: mostly 8–20 h in São Paulo.
fn daytime(random: &mut SplitMix64, day: i64) -> i64 {
    let hour = if random.chance(0.9) { 8.0 + random.unit() * 12.0 } else { random.unit() * 24.0 };
    SIMULATION_START_MS + day * DAY_MS + (hour * HOUR_MS as f64) as i64
}

fn night(random: &mut SplitMix64, day: i64) -> i64 {
    SIMULATION_START_MS + day * DAY_MS + (random.unit() * 5.0 * HOUR_MS as f64) as i64
}

fn method(random: &mut SplitMix64) -> PaymentMethod {
    match random.unit() {
        x if x < 0.45 => PaymentMethod::Pix,
        x if x < 0.80 => PaymentMethod::Card,
        _ => PaymentMethod::Boleto,
    }
}

fn price(provider: &Provider, procedure: usize, random: &mut SplitMix64, factor: f64) -> i64 {
    let noise = (0.15 * random.normal()).exp();
    ((PROCEDURES[procedure].2 as f64) * provider.price_factor * noise * factor).round().max(100.0) as i64
}

fn installments(random: &mut SplitMix64, amount: i64, method: PaymentMethod) -> u32 {
    if amount > 100_000 && method != PaymentMethod::Pix { 1 + random.below(12) as u32 } else { 1 }
}

struct World {
    random: SplitMix64,
    providers: Vec<Provider>,
    patients: Vec<Patient>,
    days: i64,
    devices_made: usize,
}

impl World {
    fn new_device(&mut self) -> String {
        self.devices_made += 1;
        format!("device-{}", self.devices_made)
    }

    fn new_ip(&mut self) -> String {
        format!("ip-{}", self.random.next_u64() % 5_000_000)
    }

    fn new_patient(&mut self) -> usize {
        let device = self.new_device();
        let ip = self.new_ip();
        let first = self.random.below(self.providers.len());
        let second = self.random.below(self.providers.len());
        self.patients.push(Patient { id: PatientId::new(), devices: vec![device], ip, providers: vec![first, second] });
        self.patients.len() - 1
    }

    fn legitimate(&mut self) -> Planned {
        let patient = self.random.below(self.patients.len());
        let provider = self.patients[patient].providers[self.random.below(2)];
        let procedure =
            self.providers[provider].procedures[self.random.below(self.providers[provider].procedures.len())];
        let day = self.random.below(self.days as usize) as i64;
        let at_ms = daytime(&mut self.random, day);
        let method = method(&mut self.random);
        let amount = price(&self.providers[provider], procedure, &mut self.random, 1.0);
        // Legitimate patients also change phones and travel.
        let device =
            if self.random.chance(0.04) { self.new_device() } else { self.patients[patient].devices[0].clone() };
        let ip = if self.random.chance(0.2) { self.new_ip() } else { self.patients[patient].ip.clone() };
        Planned {
            at_ms,
            patient,
            provider,
            procedure,
            amount_centavos: amount,
            method,
            installments: installments(&mut self.random, amount, method),
            device,
            ip,
            pattern: "legitimate",
        }
    }

    fn expensive_procedure(&mut self) -> usize {
        [4, 5, 6, 7, 9][self.random.below(5)]
    }

    fn stolen_identity(&mut self) -> Planned {
        let patient = self.new_patient();
        let provider = self.random.below(self.providers.len());
        let procedure = self.expensive_procedure();
        let day = self.random.below(self.days as usize) as i64;
        let at_ms = if self.random.chance(0.5) { night(&mut self.random, day) } else { daytime(&mut self.random, day) };
        let factor = 1.0 + self.random.unit() * 0.5;
        let amount = price(&self.providers[provider], procedure, &mut self.random, factor);
        let method = if self.random.chance(0.7) { PaymentMethod::Card } else { PaymentMethod::Pix };
        let device = self.new_device();
        let ip = self.new_ip();
        let installments = if method == PaymentMethod::Card { 6 + self.random.below(7) as u32 } else { 1 };
        Planned {
            at_ms,
            patient,
            provider,
            procedure,
            amount_centavos: amount,
            method,
            installments,
            device,
            ip,
            pattern: "stolen_identity",
        }
    }

    fn card_testing_burst(&mut self) -> Vec<Planned> {
        let device = self.new_device();
        let ip = self.new_ip();
        let provider = self.random.below(self.providers.len());
        let day = self.random.below(self.days as usize) as i64;
        let start = if self.random.chance(0.5) { night(&mut self.random, day) } else { daytime(&mut self.random, day) };
        let size = 4 + self.random.below(7);
        (0..size)
            .map(|step| {
                let patient =
                    if self.random.chance(0.6) { self.new_patient() } else { self.random.below(self.patients.len()) };
                let procedure = [0, 2, 8][self.random.below(3)];
                let factor = 0.4 + self.random.unit() * 0.4;
                let amount = price(&self.providers[provider], procedure, &mut self.random, factor);
                Planned {
                    at_ms: start + step as i64 * (MINUTE_MS + self.random.below(3) as i64 * MINUTE_MS),
                    patient,
                    provider,
                    procedure,
                    amount_centavos: amount,
                    method: PaymentMethod::Card,
                    installments: 1,
                    device: device.clone(),
                    ip: ip.clone(),
                    pattern: "card_testing",
                }
            })
            .collect()
    }

    fn account_takeover(&mut self) -> Planned {
        let patient = self.random.below(self.patients.len());
        let provider = self.random.below(self.providers.len());
        let procedure = self.expensive_procedure();
        let day = self.days / 3 + self.random.below((self.days - self.days / 3) as usize) as i64;
        let at_ms = if self.random.chance(0.4) { night(&mut self.random, day) } else { daytime(&mut self.random, day) };
        let factor = 1.5 + self.random.unit() * 2.0;
        let amount = price(&self.providers[provider], procedure, &mut self.random, factor);
        let method = if self.random.chance(0.6) { PaymentMethod::Card } else { PaymentMethod::Pix };
        let device = self.new_device();
        let ip = self.new_ip();
        let installments = installments(&mut self.random, amount, method);
        Planned {
            at_ms,
            patient,
            provider,
            procedure,
            amount_centavos: amount,
            method,
            installments,
            device,
            ip,
            pattern: "account_takeover",
        }
    }

    fn phantom_procedure(&mut self) -> Planned {
        let colluding: Vec<usize> =
            (0..self.providers.len()).filter(|index| self.providers[*index].colluding).collect();
        let provider = colluding[self.random.below(colluding.len())];
        let patient = self.random.below(self.patients.len());
        let procedure = self.expensive_procedure();
        let day = self.random.below(self.days as usize) as i64;
        // Billed in office hours from the clinic's own terminal.
        let at_ms = daytime(&mut self.random, day);
        let factor = 1.3 + self.random.unit() * 1.2;
        let amount = price(&self.providers[provider], procedure, &mut self.random, factor);
        let device = format!("clinic-terminal-{provider}");
        let ip = format!("clinic-ip-{provider}");
        Planned {
            at_ms,
            patient,
            provider,
            procedure,
            amount_centavos: amount,
            method: PaymentMethod::Boleto,
            installments: 1 + self.random.below(6) as u32,
            device,
            ip,
            pattern: "phantom_procedure",
        }
    }

    fn overpriced(&mut self) -> Planned {
        let mut planned = self.legitimate();
        let factor = 3.0 + self.random.unit() * 7.0;
        planned.amount_centavos = (planned.amount_centavos as f64 * factor).round() as i64;
        planned.pattern = "overpriced";
        planned
    }
}

/// Generates `options.payments` payments (about) and hands each to `sink` in time order.
pub fn simulate(options: &SimulationOptions, mut sink: impl FnMut(&SimulatedPayment)) {
    let mut random = SplitMix64::new(options.seed);
    let providers: Vec<Provider> = (0..options.providers.max(3))
        .map(|index| {
            let mut procedures: Vec<usize> = (0..PROCEDURES.len()).collect();
            // Each provider offers 4 to 6 procedures.
            for slot in (1..procedures.len()).rev() {
                procedures.swap(slot, random.below(slot + 1));
            }
            procedures.truncate(4 + random.below(3));
            Provider {
                id: ProviderId::new(),
                price_factor: 0.8 + random.unit() * 0.5,
                procedures,
                colluding: index < 2,
            }
        })
        .collect();
    let mut world = World { random, providers, patients: Vec::new(), days: options.days.max(7), devices_made: 0 };
    for _ in 0..(options.payments / 4).max(10) {
        world.new_patient();
    }
    let mut planned = Vec::with_capacity(options.payments + options.payments / 10);
    while planned.len() < options.payments {
        let draw = world.random.unit();
        match draw {
            x if x < 0.008 => planned.push(world.stolen_identity()),
            x if x < 0.010 => planned.extend(world.card_testing_burst()),
            x if x < 0.016 => planned.push(world.account_takeover()),
            x if x < 0.022 => planned.push(world.phantom_procedure()),
            x if x < 0.028 => planned.push(world.overpriced()),
            _ => planned.push(world.legitimate()),
        }
    }
    planned.sort_by_key(|payment| payment.at_ms);
    replay(&mut world, planned, &mut sink);
}

fn replay(world: &mut World, planned: Vec<Planned>, sink: &mut impl FnMut(&SimulatedPayment)) {
    let mut patients: HashMap<usize, PatientHistory> = HashMap::new();
    let mut providers: HashMap<usize, ProviderHistory> = HashMap::new();
    let mut devices = DeviceIndex::default();
    for payment in planned {
        let is_fraud = payment.pattern != "legitimate";
        let request = RequestFacts {
            payment_id: PaymentId::new(),
            patient_id: world.patients[payment.patient].id,
            provider_id: world.providers[payment.provider].id,
            at_ms: payment.at_ms,
            amount_centavos: payment.amount_centavos,
            installments: payment.installments,
            method: payment.method,
            tuss_code: PROCEDURES[payment.procedure].0.to_owned(),
            device_hash: payment.device.clone(),
            ip_hash: payment.ip.clone(),
        };
        let patient_history = patients.entry(payment.patient).or_default();
        let provider_history = providers.entry(payment.provider).or_default();
        let features = assemble(
            &request,
            &patient_history.snapshot(&request),
            &provider_history.snapshot(&request),
            devices.patients_24h(&request),
        );
        sink(&SimulatedPayment {
            at_ms: payment.at_ms,
            features,
            is_fraud,
            pattern: payment.pattern,
            tuss_code: PROCEDURES[payment.procedure].0,
            amount_centavos: payment.amount_centavos,
        });
        // What the decision was, as the histories remember it: the earlier system caught some.
        let outcome = match (is_fraud, world.random.unit()) {
            (true, x) if x < 0.4 => DecisionOutcome::Decline,
            (true, x) if x < 0.7 => DecisionOutcome::Review,
            (false, x) if x < 0.005 => DecisionOutcome::Decline,
            (false, x) if x < 0.03 => DecisionOutcome::Review,
            _ => DecisionOutcome::Approve,
        };
        patient_history.observe(PatientEvent {
            payment_id: request.payment_id,
            provider_id: request.provider_id,
            at_ms: request.at_ms,
            amount_centavos: request.amount_centavos,
            declined: outcome == DecisionOutcome::Decline,
            device_hash: request.device_hash.clone(),
            ip_hash: request.ip_hash.clone(),
        });
        provider_history.observe(&request.tuss_code, request.amount_centavos, request.at_ms, outcome);
        devices.observe(&request.device_hash, &request.ip_hash, request.at_ms, request.patient_id);
    }
}

/// The CSV header: the features, then the label, the time and the pattern.
pub fn csv_header() -> String {
    let mut columns: Vec<&str> = crate::FEATURE_NAMES.to_vec();
    columns.extend(["is_fraud", "timestamp_ms", "pattern"]);
    columns.join(",")
}

pub fn csv_row(payment: &SimulatedPayment) -> String {
    let mut row: Vec<String> = payment.features.0.iter().map(|value| format!("{value}")).collect();
    row.push(if payment.is_fraud { "1".into() } else { "0".into() });
    row.push(payment.at_ms.to_string());
    row.push(payment.pattern.to_owned());
    row.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64) -> Vec<SimulatedPayment> {
        let mut rows = Vec::new();
        simulate(&SimulationOptions { seed, payments: 3_000, days: 30, providers: 10 }, |payment| {
            rows.push(payment.clone())
        });
        rows
    }

    #[test]
    fn same_seed_same_rows_and_every_pattern_appears() {
        let first = run(11);
        let second = run(11);
        assert_eq!(first.len(), second.len());
        assert!(first.iter().zip(&second).all(|(a, b)| a.features == b.features && a.pattern == b.pattern));
        assert_ne!(
            run(12).iter().map(|p| p.amount_centavos).sum::<i64>(),
            first.iter().map(|p| p.amount_centavos).sum::<i64>()
        );
        for pattern in
            ["legitimate", "stolen_identity", "card_testing", "account_takeover", "phantom_procedure", "overpriced"]
        {
            assert!(first.iter().any(|p| p.pattern == pattern), "{pattern} appears");
        }
        let fraud = first.iter().filter(|p| p.is_fraud).count() as f64 / first.len() as f64;
        assert!((0.01..0.10).contains(&fraud), "fraud share {fraud}");
        assert!(first.windows(2).all(|pair| pair[0].at_ms <= pair[1].at_ms), "time order");
    }

    #[test]
    fn patterns_leave_their_marks_in_the_features() {
        let rows = run(5);
        let mean = |pattern: &str, feature: &str| {
            let values: Vec<f64> =
                rows.iter().filter(|p| p.pattern == pattern).map(|p| p.features.get(feature).unwrap()).collect();
            values.iter().sum::<f64>() / values.len() as f64
        };
        assert!(mean("card_testing", "device_patients_24h") > 2.0 * mean("legitimate", "device_patients_24h"));
        assert!(
            mean("overpriced", "amount_to_procedure_median") > 2.0 * mean("legitimate", "amount_to_procedure_median")
        );
        assert!(mean("account_takeover", "patient_new_device") > mean("legitimate", "patient_new_device"));
        assert!(mean("stolen_identity", "patient_age_days") < mean("legitimate", "patient_age_days"));
        let header_columns = csv_header().split(',').count();
        assert_eq!(csv_row(&rows[0]).split(',').count(), header_columns);
    }
}

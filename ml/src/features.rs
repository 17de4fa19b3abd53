//! The feature schema and the in-memory state that produces it. The same code computes features
//! for a live payment (from the actors' state) and for a simulated one (from the generator's
//! replay), so a model never sees features computed two ways.

use medpay_models::{DecisionOutcome, PatientId, PaymentId, PaymentMethod, ProviderId};
use std::collections::{HashMap, VecDeque};

/// The schema a model artefact records; a model trained on another is refused.
pub const FEATURE_SCHEMA: &str = "medpay-features-v1";
pub const FEATURE_COUNT: usize = 25;
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "amount_centavos",
    "log_amount",
    "installments",
    "method_pix",
    "method_boleto",
    "method_card",
    "hour_of_day",
    "night",
    "patient_payments_1h",
    "patient_payments_24h",
    "patient_payments_7d",
    "patient_amount_1h_centavos",
    "patient_amount_24h_centavos",
    "patient_amount_7d_centavos",
    "patient_declines_24h",
    "patient_devices_24h",
    "patient_ips_24h",
    "patient_age_days",
    "patient_new_device",
    "first_pair",
    "amount_to_procedure_median",
    "provider_review_rate_24h",
    "provider_decline_rate_24h",
    "device_patients_24h",
    "ip_patients_24h",
];

const HOUR_MS: i64 = 60 * 60 * 1_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const WEEK_MS: i64 = 7 * DAY_MS;
/// Most payments a patient's history keeps (older ones go first).
pub const PATIENT_EVENTS_MAX: usize = 1_000;
/// Amounts kept per procedure code per provider, and procedure codes per provider.
pub const PROCEDURE_AMOUNTS_MAX: usize = 200;
pub const PROCEDURES_MAX: usize = 2_000;
/// Outcomes a provider's history keeps for its 24-hour rates.
pub const PROVIDER_OUTCOMES_MAX: usize = 100_000;
/// Sightings kept per device or IP, and devices or IPs kept in all.
pub const SIGHTINGS_PER_KEY_MAX: usize = 256;
pub const SIGHTING_KEYS_MAX: usize = 1_000_000;
/// Brazil has kept UTC−3 all year since daylight saving time ended in 2019.
const SAO_PAULO_OFFSET_MS: i64 = -3 * HOUR_MS;

/// One feature vector, in `FEATURE_NAMES` order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Features(pub [f64; FEATURE_COUNT]);

impl Features {
    /// The same features as if the request had come at `hour` (São Paulo time): the hour and the
    /// night flag are the only features read off the clock. For tests and demos whose outcome must
    /// not depend on when they run.
    pub fn at_hour(mut self, hour: u32) -> Features {
        let hour = hour.min(23);
        for (index, name) in FEATURE_NAMES.iter().enumerate() {
            match *name {
                "hour_of_day" => self.0[index] = f64::from(hour),
                "night" => self.0[index] = if hour < 6 { 1.0 } else { 0.0 },
                _ => {}
            }
        }
        self
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        FEATURE_NAMES.iter().position(|known| *known == name).map(|index| self.0[index])
    }

    pub fn as_slice(&self) -> &[f64] {
        &self.0
    }

    /// As a JSON object of name → value, for storage beside the decision.
    pub fn to_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = FEATURE_NAMES
            .iter()
            .zip(self.0)
            .map(|(name, value)| ((*name).to_owned(), serde_json::json!(value)))
            .collect();
        serde_json::Value::Object(map)
    }

    pub fn from_json(value: &serde_json::Value) -> Option<Features> {
        let mut values = [0.0; FEATURE_COUNT];
        for (slot, name) in values.iter_mut().zip(FEATURE_NAMES) {
            *slot = value.get(name)?.as_f64()?;
        }
        Some(Features(values))
    }
}

/// What the request itself says.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFacts {
    pub payment_id: PaymentId,
    pub patient_id: PatientId,
    pub provider_id: ProviderId,
    pub at_ms: i64,
    pub amount_centavos: i64,
    pub installments: u32,
    pub method: PaymentMethod,
    pub tuss_code: String,
    pub device_hash: String,
    pub ip_hash: String,
}

/// A payment as a patient's history remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientEvent {
    pub payment_id: PaymentId,
    pub provider_id: ProviderId,
    pub at_ms: i64,
    pub amount_centavos: i64,
    pub declined: bool,
    pub device_hash: String,
    pub ip_hash: String,
}

/// The patient's side of the features, as of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatientSnapshot {
    pub payments_1h: f64,
    pub payments_24h: f64,
    pub payments_7d: f64,
    pub amount_1h_centavos: f64,
    pub amount_24h_centavos: f64,
    pub amount_7d_centavos: f64,
    pub declines_24h: f64,
    pub devices_24h: f64,
    pub ips_24h: f64,
    pub age_days: f64,
    pub new_device: f64,
    pub first_pair: f64,
}

#[derive(Debug, Clone, Default)]
pub struct PatientHistory {
    events: VecDeque<PatientEvent>,
    first_payment_at_ms: Option<i64>,
    /// Providers this patient has paid before (within what the history has seen).
    providers: Vec<ProviderId>,
}

impl PatientHistory {
    /// `first_payment_at_ms` is the patient's first payment ever (the store knows it even when the
    /// event itself is older than the window).
    pub fn new(first_payment_at_ms: Option<i64>, providers: Vec<ProviderId>) -> PatientHistory {
        PatientHistory { events: VecDeque::new(), first_payment_at_ms, providers }
    }

    /// Counts a payment (once: seen again, only its outcome is updated).
    pub fn observe(&mut self, event: PatientEvent) {
        if let Some(known) = self.events.iter_mut().rev().find(|known| known.payment_id == event.payment_id) {
            known.declined = event.declined;
            return;
        }
        if self.events.len() >= PATIENT_EVENTS_MAX {
            self.events.pop_front();
        }
        self.first_payment_at_ms = Some(self.first_payment_at_ms.map_or(event.at_ms, |first| first.min(event.at_ms)));
        if !self.providers.contains(&event.provider_id) {
            self.providers.push(event.provider_id);
        }
        // Kept in time order even when events arrive slightly out of order.
        let position = self.events.iter().rposition(|known| known.at_ms <= event.at_ms).map_or(0, |index| index + 1);
        self.events.insert(position, event);
    }

    pub fn snapshot(&mut self, request: &RequestFacts) -> PatientSnapshot {
        let now = request.at_ms;
        while self.events.front().is_some_and(|event| event.at_ms < now - WEEK_MS) {
            self.events.pop_front();
        }
        let mut snapshot = PatientSnapshot::default();
        let mut devices: Vec<&str> = vec![request.device_hash.as_str()];
        let mut ips: Vec<&str> = vec![request.ip_hash.as_str()];
        let mut device_seen = false;
        for event in &self.events {
            // An event stamped after this request is another payment in flight beside it (stamped
            // earlier, counted later): it counts as now, never as the future.
            let age = (now - event.at_ms).max(0);
            device_seen |= event.device_hash == request.device_hash;
            snapshot.payments_7d += 1.0;
            snapshot.amount_7d_centavos += event.amount_centavos as f64;
            if age <= DAY_MS {
                snapshot.payments_24h += 1.0;
                snapshot.amount_24h_centavos += event.amount_centavos as f64;
                if event.declined {
                    snapshot.declines_24h += 1.0;
                }
                if !devices.contains(&event.device_hash.as_str()) {
                    devices.push(&event.device_hash);
                }
                if !ips.contains(&event.ip_hash.as_str()) {
                    ips.push(&event.ip_hash);
                }
            }
            if age <= HOUR_MS {
                snapshot.payments_1h += 1.0;
                snapshot.amount_1h_centavos += event.amount_centavos as f64;
            }
        }
        snapshot.devices_24h = devices.len() as f64;
        snapshot.ips_24h = ips.len() as f64;
        snapshot.age_days = self.first_payment_at_ms.map_or(0.0, |first| ((now - first).max(0) as f64) / DAY_MS as f64);
        snapshot.new_device = if !self.events.is_empty() && !device_seen { 1.0 } else { 0.0 };
        snapshot.first_pair = if self.providers.contains(&request.provider_id) { 0.0 } else { 1.0 };
        snapshot
    }
}

/// The provider's side of the features.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderSnapshot {
    pub amount_to_procedure_median: f64,
    pub review_rate_24h: f64,
    pub decline_rate_24h: f64,
}

#[derive(Debug, Clone, Default)]
pub struct ProviderHistory {
    amounts: HashMap<String, VecDeque<i64>>,
    /// The provider's own price list (centavos by TUSS code), when it keeps one.
    prices: HashMap<String, i64>,
    outcomes: VecDeque<(i64, DecisionOutcome)>,
    /// How many of `outcomes` are reviews and declines, kept as they come and go (a busy
    /// provider's day is tens of thousands of decisions: never counted again per payment).
    reviews: usize,
    declines: usize,
}

impl ProviderHistory {
    fn count(&mut self, outcome: DecisionOutcome, up: bool) {
        let counter = match outcome {
            DecisionOutcome::Review => &mut self.reviews,
            DecisionOutcome::Decline => &mut self.declines,
            DecisionOutcome::Approve => return,
        };
        *counter = if up { *counter + 1 } else { counter.saturating_sub(1) };
    }

    fn forget_oldest(&mut self) {
        if let Some((_, outcome)) = self.outcomes.pop_front() {
            self.count(outcome, false);
        }
    }

    pub fn observe(&mut self, tuss_code: &str, amount_centavos: i64, at_ms: i64, outcome: DecisionOutcome) {
        if self.amounts.len() < PROCEDURES_MAX || self.amounts.contains_key(tuss_code) {
            let amounts = self.amounts.entry(tuss_code.to_owned()).or_default();
            if amounts.len() >= PROCEDURE_AMOUNTS_MAX {
                amounts.pop_front();
            }
            amounts.push_back(amount_centavos);
        }
        if self.outcomes.len() >= PROVIDER_OUTCOMES_MAX {
            self.forget_oldest();
        }
        self.outcomes.push_back((at_ms, outcome));
        self.count(outcome, true);
    }

    /// The provider's price list replaces the one held.
    pub fn set_prices(&mut self, prices: impl IntoIterator<Item = (String, i64)>) {
        self.prices = prices.into_iter().filter(|(_, price)| *price > 0).collect();
    }

    /// The provider's usual amount for a procedure: its listed price when it has one, else the
    /// median of its recent amounts.
    pub fn usual_amount(&self, tuss_code: &str) -> Option<f64> {
        match self.prices.get(tuss_code) {
            Some(price) => Some(*price as f64),
            None => self.procedure_median(tuss_code),
        }
    }

    /// The median of the provider's recent amounts for a procedure.
    pub fn procedure_median(&self, tuss_code: &str) -> Option<f64> {
        let amounts = self.amounts.get(tuss_code).filter(|amounts| !amounts.is_empty())?;
        let mut sorted: Vec<i64> = amounts.iter().copied().collect();
        sorted.sort_unstable();
        let middle = sorted.len() / 2;
        Some(if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) as f64 / 2.0
        } else {
            sorted[middle] as f64
        })
    }

    pub fn snapshot(&mut self, request: &RequestFacts) -> ProviderSnapshot {
        let now = request.at_ms;
        while self.outcomes.front().is_some_and(|(at, _)| *at < now - DAY_MS) {
            self.forget_oldest();
        }
        let total = self.outcomes.len() as f64;
        let rate = |count: usize| if total > 0.0 { count as f64 / total } else { 0.0 };
        ProviderSnapshot {
            amount_to_procedure_median: self
                .usual_amount(&request.tuss_code)
                .filter(|median| *median > 0.0)
                .map_or(1.0, |median| request.amount_centavos as f64 / median),
            review_rate_24h: rate(self.reviews),
            decline_rate_24h: rate(self.declines),
        }
    }
}

/// Which patients each device and each IP was seen with: a device or IP behind several CPFs in a
/// day is a classic sign of card testing or identity fraud. Shared by every payment.
#[derive(Debug, Default)]
pub struct DeviceIndex {
    devices: HashMap<String, VecDeque<(i64, PatientId)>>,
    ips: HashMap<String, VecDeque<(i64, PatientId)>>,
}

fn sight(map: &mut HashMap<String, VecDeque<(i64, PatientId)>>, key: &str, at_ms: i64, patient: PatientId) {
    if map.len() >= SIGHTING_KEYS_MAX && !map.contains_key(key) {
        map.retain(|_, sightings| sightings.back().is_some_and(|(at, _)| *at >= at_ms - DAY_MS));
        if map.len() >= SIGHTING_KEYS_MAX {
            return;
        }
    }
    let sightings = map.entry(key.to_owned()).or_default();
    if sightings.len() >= SIGHTINGS_PER_KEY_MAX {
        sightings.pop_front();
    }
    sightings.push_back((at_ms, patient));
}

fn distinct_patients(
    map: &HashMap<String, VecDeque<(i64, PatientId)>>,
    key: &str,
    now: i64,
    current: PatientId,
) -> f64 {
    let mut patients = vec![current];
    if let Some(sightings) = map.get(key) {
        for (at, patient) in sightings {
            if *at >= now - DAY_MS && *at <= now && !patients.contains(patient) {
                patients.push(*patient);
            }
        }
    }
    patients.len() as f64
}

impl DeviceIndex {
    pub fn observe(&mut self, device_hash: &str, ip_hash: &str, at_ms: i64, patient: PatientId) {
        sight(&mut self.devices, device_hash, at_ms, patient);
        sight(&mut self.ips, ip_hash, at_ms, patient);
    }

    /// Distinct patients seen with the request's device and with its IP in the last 24 hours,
    /// the request's own patient included.
    pub fn patients_24h(&self, request: &RequestFacts) -> (f64, f64) {
        (
            distinct_patients(&self.devices, &request.device_hash, request.at_ms, request.patient_id),
            distinct_patients(&self.ips, &request.ip_hash, request.at_ms, request.patient_id),
        )
    }
}

/// Hour of day (0–23) in America/Sao_Paulo.
pub fn hour_in_sao_paulo(at_ms: i64) -> u32 {
    u32::try_from((at_ms + SAO_PAULO_OFFSET_MS).rem_euclid(DAY_MS) / HOUR_MS).unwrap_or(0)
}

/// Puts the parts together in schema order.
pub fn assemble(
    request: &RequestFacts,
    patient: &PatientSnapshot,
    provider: &ProviderSnapshot,
    device_patients: (f64, f64),
) -> Features {
    let hour = hour_in_sao_paulo(request.at_ms);
    let amount = request.amount_centavos as f64;
    let one_if = |condition: bool| if condition { 1.0 } else { 0.0 };
    Features([
        amount,
        (1.0 + amount / 100.0).ln(),
        f64::from(request.installments),
        one_if(request.method == PaymentMethod::Pix),
        one_if(request.method == PaymentMethod::Boleto),
        one_if(request.method == PaymentMethod::Card),
        f64::from(hour),
        one_if(hour < 6),
        patient.payments_1h,
        patient.payments_24h,
        patient.payments_7d,
        patient.amount_1h_centavos,
        patient.amount_24h_centavos,
        patient.amount_7d_centavos,
        patient.declines_24h,
        patient.devices_24h,
        patient.ips_24h,
        patient.age_days,
        patient.new_device,
        patient.first_pair,
        provider.amount_to_procedure_median,
        provider.review_rate_24h,
        provider.decline_rate_24h,
        device_patients.0,
        device_patients.1,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(patient: PatientId, provider: ProviderId, at_ms: i64, amount: i64, device: &str) -> RequestFacts {
        RequestFacts {
            payment_id: PaymentId::new(),
            patient_id: patient,
            provider_id: provider,
            at_ms,
            amount_centavos: amount,
            installments: 1,
            method: PaymentMethod::Card,
            tuss_code: "10101012".to_owned(),
            device_hash: device.to_owned(),
            ip_hash: "ip".to_owned(),
        }
    }

    fn event(request: &RequestFacts, declined: bool) -> PatientEvent {
        PatientEvent {
            payment_id: request.payment_id,
            provider_id: request.provider_id,
            at_ms: request.at_ms,
            amount_centavos: request.amount_centavos,
            declined,
            device_hash: request.device_hash.clone(),
            ip_hash: request.ip_hash.clone(),
        }
    }

    #[test]
    fn patient_windows_count_what_they_should() {
        let (patient, provider) = (PatientId::new(), ProviderId::new());
        let mut history = PatientHistory::default();
        let start = 10 * DAY_MS;
        let first = request(patient, provider, start, 10_000, "phone");
        assert_eq!(history.snapshot(&first).first_pair, 1.0);
        assert_eq!(history.snapshot(&first).new_device, 0.0, "no history: not a new device, a new patient");
        history.observe(event(&first, false));
        let second = request(patient, provider, start + 2 * DAY_MS, 20_000, "phone");
        history.observe(event(&second, true));
        let third = request(patient, provider, start + 2 * DAY_MS + 30 * 60 * 1_000, 30_000, "phone");
        history.observe(event(&third, false));
        history.observe(event(&third, false));
        let now = request(patient, provider, start + 2 * DAY_MS + 45 * 60 * 1_000, 5_000, "laptop");
        let snapshot = history.snapshot(&now);
        assert_eq!(snapshot.payments_1h, 2.0, "the second (45 min) and third (15 min ago); duplicates ignored");
        assert_eq!(snapshot.payments_24h, 2.0);
        assert_eq!(snapshot.payments_7d, 3.0);
        assert_eq!(snapshot.amount_7d_centavos, 60_000.0);
        assert_eq!(snapshot.declines_24h, 1.0);
        assert_eq!(snapshot.devices_24h, 2.0, "phone and laptop");
        assert_eq!(snapshot.new_device, 1.0);
        assert_eq!(snapshot.first_pair, 0.0);
        assert!((snapshot.age_days - (2.0 + 45.0 / 1_440.0)).abs() < 1e-9);
        let week_later = request(patient, provider, start + 7 * DAY_MS + 1, 5_000, "phone");
        assert_eq!(history.snapshot(&week_later).payments_7d, 2.0, "the first fell out of the week");
    }

    #[test]
    fn a_listed_price_is_the_usual_amount_before_the_median() {
        let mut history = ProviderHistory::default();
        history.observe("10101012", 20_000, 0, DecisionOutcome::Approve);
        assert_eq!(history.usual_amount("10101012"), Some(20_000.0), "the median without a price list");
        history.set_prices([("10101012".to_owned(), 10_000), ("40301630".to_owned(), 0)]);
        assert_eq!(history.usual_amount("10101012"), Some(10_000.0));
        assert_eq!(history.usual_amount("40301630"), None, "a price of zero is no price");
    }

    #[test]
    fn provider_median_and_rates() {
        let provider = ProviderId::new();
        let mut history = ProviderHistory::default();
        for (amount, outcome) in [
            (10_000, DecisionOutcome::Approve),
            (12_000, DecisionOutcome::Review),
            (11_000, DecisionOutcome::Approve),
            (50_000, DecisionOutcome::Decline),
        ] {
            history.observe("10101012", amount, DAY_MS, outcome);
        }
        assert_eq!(history.procedure_median("10101012"), Some(11_500.0));
        let snapshot = history.snapshot(&request(PatientId::new(), provider, DAY_MS + 1, 115_000, "d"));
        assert!((snapshot.amount_to_procedure_median - 10.0).abs() < 1e-9);
        assert_eq!((snapshot.review_rate_24h, snapshot.decline_rate_24h), (0.25, 0.25));
        let mut other_code = request(PatientId::new(), provider, DAY_MS + 1, 115_000, "d");
        other_code.tuss_code = "40301010".to_owned();
        assert_eq!(history.snapshot(&other_code).amount_to_procedure_median, 1.0, "no history: neutral");
        // A day later the review and the decline have left the window with the others, and the
        // rates are those of what came since.
        history.observe("10101012", 10_000, 2 * DAY_MS + 10, DecisionOutcome::Review);
        let later = history.snapshot(&request(PatientId::new(), provider, 2 * DAY_MS + 20, 10_000, "d"));
        assert_eq!((later.review_rate_24h, later.decline_rate_24h), (1.0, 0.0));
    }

    #[test]
    fn a_device_behind_several_patients() {
        let mut index = DeviceIndex::default();
        let provider = ProviderId::new();
        let (first, second) = (PatientId::new(), PatientId::new());
        index.observe("tablet", "ip", 1_000, first);
        index.observe("tablet", "ip", 2_000, second);
        index.observe("tablet", "ip", 3_000, second);
        let third = request(PatientId::new(), provider, 4_000, 100, "tablet");
        assert_eq!(index.patients_24h(&third), (3.0, 3.0));
        let later = request(first, provider, 2 * DAY_MS, 100, "tablet");
        assert_eq!(index.patients_24h(&later).0, 1.0, "yesterday's sightings expired");
    }

    #[test]
    fn a_pinned_hour_changes_only_the_clock_features() {
        let features = Features([1.0; FEATURE_COUNT]).at_hour(3);
        assert_eq!((features.get("hour_of_day"), features.get("night")), (Some(3.0), Some(1.0)));
        let day = features.at_hour(14);
        assert_eq!((day.get("hour_of_day"), day.get("night")), (Some(14.0), Some(0.0)));
        let others = |f: &Features| {
            FEATURE_NAMES
                .iter()
                .filter(|n| !matches!(**n, "hour_of_day" | "night"))
                .map(|n| f.get(n))
                .collect::<Vec<_>>()
        };
        assert_eq!(others(&features), others(&day));
    }

    #[test]
    fn hour_is_sao_paulo_time() {
        // 2026-01-15 02:30 UTC is 23:30 of the 14th in São Paulo.
        let at = chrono_free_utc(2026, 1, 15, 2, 30);
        assert_eq!(hour_in_sao_paulo(at), 23);
    }

    /// Milliseconds since the epoch of a UTC time, by the civil-from-days formula.
    fn chrono_free_utc(year: i64, month: i64, day: i64, hour: i64, minute: i64) -> i64 {
        let (y, m) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
        let era = y.div_euclid(400);
        let year_of_era = y - era * 400;
        let day_of_year = (153 * m + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        let days = era * 146_097 + day_of_era - 719_468;
        (days * 24 + hour) * HOUR_MS + minute * 60_000
    }

    #[test]
    fn json_round_trip() {
        let mut values = [0.0; FEATURE_COUNT];
        values[3] = 1.0;
        values[20] = 2.5;
        let features = Features(values);
        assert_eq!(Features::from_json(&features.to_json()), Some(features));
        assert_eq!(features.get("amount_to_procedure_median"), Some(2.5));
    }
}

//! The scoring step for one payment, in memory: patient and provider feature snapshots from their
//! histories, device sightings, feature assembly, the model, the analysts' rules and the lists,
//! and the explanation. For each model kind (and with a challenger scoring in shadow), with
//! criterion and as a latency distribution.
//!
//! `cargo bench --bench scoring`

use criterion::Criterion;
use medpay_ml::features::{DeviceIndex, PatientEvent, PatientHistory, ProviderHistory, RequestFacts, assemble};
use medpay_ml::{
    ListKeys, Lists, ModelArtefact, ModelScorer, NamedRule, ProviderPolicy, RuleBook, ScoringInput, list_hash,
};
use medpay_models::{DecisionOutcome, ListKind, ListType, PatientId, PaymentId, PaymentMethod, ProviderId};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DISTRIBUTION_SAMPLES: usize = 200_000;
const HOUR_MS: i64 = 3_600_000;

struct State {
    patient: PatientHistory,
    provider: ProviderHistory,
    devices: DeviceIndex,
    request: RequestFacts,
}

/// A patient with 40 payments in the week and a provider with 2 000, as a busy clinic has.
fn state() -> State {
    let (patient_id, provider_id) = (PatientId::new(), ProviderId::new());
    let now = 1_767_236_400_000 + 30 * 24 * HOUR_MS;
    let mut patient = PatientHistory::new(Some(now - 200 * 24 * HOUR_MS), vec![provider_id]);
    let mut provider = ProviderHistory::default();
    let mut devices = DeviceIndex::default();
    for index in 0..40i64 {
        let at = now - index * 4 * HOUR_MS;
        patient.observe(PatientEvent {
            payment_id: PaymentId::new(),
            provider_id,
            at_ms: at,
            amount_centavos: 20_000 + index * 100,
            declined: index % 17 == 0,
            device_hash: list_hash(&format!("device-{}", index % 3)),
            ip_hash: list_hash(&format!("ip-{}", index % 5)),
        });
        devices.observe(
            &list_hash(&format!("device-{}", index % 3)),
            &list_hash(&format!("ip-{}", index % 5)),
            at,
            patient_id,
        );
    }
    for index in 0..2_000i64 {
        let code = ["10101012", "40304361", "41001010", "81000065"][usize::try_from(index % 4).unwrap_or(0)];
        let outcome = if index % 50 == 0 { DecisionOutcome::Review } else { DecisionOutcome::Approve };
        provider.observe(code, 25_000 + (index % 40) * 250, now - index * 60_000, outcome);
    }
    let request = RequestFacts {
        payment_id: PaymentId::new(),
        patient_id,
        provider_id,
        at_ms: now,
        amount_centavos: 27_500,
        installments: 3,
        method: PaymentMethod::Card,
        tuss_code: "10101012".to_owned(),
        device_hash: list_hash("device-1"),
        ip_hash: list_hash("ip-2"),
    };
    State { patient, provider, devices, request }
}

fn scorer(model_json: &str) -> ModelScorer {
    let model = ModelArtefact::from_json(model_json).unwrap();
    let rules = [
        ("declines_24h", "decline if patient_declines_24h >= 3"),
        ("velocity_payments_1h", "review if patient_payments_1h >= 5"),
        ("velocity_amount_24h", "review if patient_amount_24h_centavos + amount_centavos > 5000000"),
        ("device_many_patients", "decline if device_patients_24h >= 4"),
        ("night_new_patient", "review if night == 1 and patient_age_days < 1 and amount_centavos > 100000"),
    ]
    .into_iter()
    .map(|(name, source)| NamedRule::compile(name, source).unwrap())
    .collect();
    let lists =
        Lists::new((0..1_000).map(|index| (ListType::Block, ListKind::Device, list_hash(&format!("bad-{index}")))));
    ModelScorer::new(model, Arc::new(RuleBook::new(rules)), Arc::new(lists))
}

/// One whole scoring step, as the payment's actors run it.
fn score(state: &mut State, scorer: &ModelScorer) -> u16 {
    let patient = state.patient.snapshot(&state.request);
    let provider = state.provider.snapshot(&state.request);
    let sightings = state.devices.patients_24h(&state.request);
    let input = ScoringInput {
        payment_id: state.request.payment_id,
        amount_centavos: state.request.amount_centavos,
        features: assemble(&state.request, &patient, &provider, sightings),
        keys: ListKeys {
            cpf_hash: list_hash("52998224725"),
            device_hash: state.request.device_hash.clone(),
            ip_hash: state.request.ip_hash.clone(),
            card_hash: None,
            legacy: None,
        },
        policy: ProviderPolicy { max_amount_centavos: 10_000_000, review_score_min: 200, decline_score_min: 460 },
    };
    let assessment = scorer.assess(&input);
    assessment.score + assessment.shadow.map_or(0, |shadow| shadow.score / 1_000)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let tree = include_str!("../ml/models/tree.json");
    let boosted = include_str!("../ml/models/boosted.json");
    let kinds = [
        ("logistic (default.json)", medpay_ml::DEFAULT_MODEL_JSON, None),
        ("tree (tree.json)", tree, None),
        ("boosted (boosted.json)", boosted, None),
        ("tree champion, logistic challenger in shadow", tree, Some(medpay_ml::DEFAULT_MODEL_JSON)),
        ("boosted champion, logistic challenger in shadow", boosted, Some(medpay_ml::DEFAULT_MODEL_JSON)),
    ];
    let mut summaries = Vec::new();
    for (name, json, challenger) in kinds {
        let scorer = scorer(json);
        scorer.set_challenger(challenger.map(|json| ModelArtefact::from_json(json).unwrap()));
        let mut state = state();
        criterion.bench_function(&format!("scoring step, {name}"), |bencher| {
            bencher.iter(|| black_box(score(&mut state, &scorer)))
        });
        let mut latencies = Vec::with_capacity(DISTRIBUTION_SAMPLES);
        for _ in 0..DISTRIBUTION_SAMPLES {
            let started = Instant::now();
            black_box(score(&mut state, &scorer));
            latencies.push(started.elapsed());
        }
        latencies.sort();
        summaries.push(format!(
            "scoring step, {name}, {DISTRIBUTION_SAMPLES} samples: median {:?}, p99 {:?}, p999 {:?}, max {:?}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 0.999),
            latencies[latencies.len() - 1]
        ));
    }
    for summary in summaries {
        println!("{summary}");
    }
    criterion.final_summary();
}

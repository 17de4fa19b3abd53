//! The decision path without HTTP: request body → parse, validate, installment plan → the
//! payment's actor (features from the patient's and provider's actors, rules scoring) → durable
//! record on SQLite → decision. Also its parts, and a latency distribution (median, p99) of the
//! whole path.
//!
//! `cargo bench --bench decision_path`

use criterion::Criterion;
use medpay_actors::{Runtime, RuntimeConfig};
use medpay_ml::{Lists, ModelArtefact, ModelScorer, RiskScorer, RuleBook};
use medpay_models::{BasisPoints, Cnpj, Cpf, FailMode, PatientId, ProviderId};
use medpay_store::{PatientRecord, ProviderRecord, Store};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Patients the payments rotate over, so that velocity rules see a realistic few per patient.
const PATIENTS: usize = 2_000;
/// Decisions timed one by one for the latency distribution.
const DISTRIBUTION_SAMPLES: usize = 3_000;

struct Fixture {
    runtime: Runtime,
    provider: ProviderId,
    record: medpay_store::ProviderRecord,
    patients: Vec<(PatientId, Cpf)>,
}

async fn fixture() -> Fixture {
    let path = std::env::temp_dir().join(format!("medpay-bench-{}.db", uuid::Uuid::new_v4().simple()));
    let store = Store::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let provider = ProviderId::new();
    let record = ProviderRecord {
        id: provider,
        name: "Clínica Bench".to_owned(),
        cnpj: "11.222.333/0001-81".parse::<Cnpj>().unwrap(),
        fee_bps: BasisPoints(500),
        escrow: false,
        score_fail_mode: FailMode::Open,
        max_amount_centavos: 10_000_000,
        review_score_min: 200,
        decline_score_min: 460,
        review_time_limit_hours: medpay_store::REVIEW_TIME_LIMIT_HOURS_DEFAULT,
        created_at_ms: medpay_store::now_ms(),
    };
    store.insert_provider(&record, "bench-key-hash").await.unwrap();
    let record = store.provider(provider).await.unwrap().unwrap();
    let mut patients = Vec::with_capacity(PATIENTS);
    for index in 0..PATIENTS {
        let base = format!("{:09}", 100_000_000 + index * 7_919);
        let cpf: Cpf = format!("{base}{}", Cpf::check_digits(&base).unwrap()).parse().unwrap();
        let id = PatientId::new();
        let patient = PatientRecord {
            id,
            name: "Paciente".to_owned(),
            cpf: cpf.clone(),
            email: "p@example.com".to_owned(),
            phone: "11999990000".to_owned(),
            created_at_ms: medpay_store::now_ms(),
            erased_at_ms: None,
        };
        store.insert_patient(&patient, &format!("token-{index}"), Some(provider)).await.unwrap();
        patients.push((id, cpf));
    }
    let model = ModelArtefact::from_json(medpay_ml::DEFAULT_MODEL_JSON).unwrap();
    let scorer: Arc<dyn RiskScorer> =
        Arc::new(ModelScorer::new(model, Arc::new(RuleBook::default()), Arc::new(Lists::default())));
    let runtime =
        Runtime::start(store, scorer, RuntimeConfig::default(), Arc::new(medpay_api::dto::PaymentView::render), None)
            .await
            .unwrap();
    Fixture { runtime, provider, record, patients }
}

fn body(provider: ProviderId, patient: PatientId, amount_centavos: i64) -> Vec<u8> {
    serde_json::json!({
        "patient_id": patient.to_string(), "provider_id": provider.to_string(),
        "procedure": {"tuss_code": "10101012", "description": "Consulta em consultório"},
        "amount_centavos": amount_centavos, "method": "pix", "installments": 6, "monthly_interest_bps": 199,
        "device": {"id": "tablet-1", "ip": "200.100.50.25"}
    })
    .to_string()
    .into_bytes()
}

async fn decide(fixture: &Fixture, index: usize) -> medpay_models::DecisionOutcome {
    let (patient, cpf) = &fixture.patients[index % PATIENTS];
    let today = chrono::Utc::now().date_naive();
    let prepared = medpay_api::prepare(&body(fixture.provider, *patient, 150_000), today).unwrap();
    let created = fixture.runtime.submit(prepared.into_new_payment(cpf.clone(), &fixture.record, None)).await.unwrap();
    created.decision.outcome
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let rank = (fraction * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let fixture = tokio.block_on(fixture());
    let mut criterion = Criterion::default().configure_from_args();
    let today = chrono::Utc::now().date_naive();
    let sample = body(fixture.provider, fixture.patients[0].0, 150_000);

    criterion.bench_function("prepare (parse, validate, Price plan, CET)", |bencher| {
        bencher.iter(|| medpay_api::prepare(black_box(&sample), today).unwrap())
    });
    let mut counter = 0usize;
    criterion.bench_function("decision path, durable on SQLite", |bencher| {
        bencher.iter(|| {
            counter += 1;
            tokio.block_on(decide(&fixture, counter))
        })
    });

    // The distribution of single decisions, for the median and the tail.
    let mut latencies = Vec::with_capacity(DISTRIBUTION_SAMPLES);
    for index in 0..DISTRIBUTION_SAMPLES {
        let started = Instant::now();
        black_box(tokio.block_on(decide(&fixture, counter + index)));
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "decision path, durable on SQLite, {DISTRIBUTION_SAMPLES} sequential decisions: median {:?}, p90 {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    criterion.final_summary();
    tokio.block_on(fixture.runtime.shutdown(Duration::from_secs(5)));
}

//! Actor tests against a real SQLite file: supervision (a panicking transaction is restarted and
//! the others complete), fail modes under a scoring budget, passivation and rebuild, velocity.

use crate::{CoreError, NewPayment, Runtime, RuntimeConfig};
use async_trait::async_trait;
use medpay_ml::{
    Assessment, Lists, ModelArtefact, ModelScorer, NamedRule, RiskScorer, RuleBook, ScoringError, ScoringInput,
};
use medpay_models::{
    BasisPoints, DecisionOutcome, FailMode, InstallmentPlan, Money, PatientId, PaymentId, PaymentMethod, PaymentStatus,
    PlanRequest, ProviderId,
};
use medpay_store::{PatientRecord, ProviderRecord, Store};
use std::sync::Arc;
use std::time::Duration;

/// Amount that makes `PanickingScorer` panic.
const PANIC_AMOUNT_CENTAVOS: i64 = 66_666;

struct PanickingScorer(ModelScorer);

#[async_trait]
impl RiskScorer for PanickingScorer {
    async fn score(&self, input: &ScoringInput) -> Result<Assessment, ScoringError> {
        assert_ne!(input.amount_centavos, PANIC_AMOUNT_CENTAVOS, "injected scorer panic");
        self.0.score(input).await
    }
}

struct StuckScorer;

#[async_trait]
impl RiskScorer for StuckScorer {
    async fn score(&self, _input: &ScoringInput) -> Result<Assessment, ScoringError> {
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        Err(ScoringError::Unavailable("unreachable".to_owned()))
    }
}

/// The bundled model with the payment core's velocity rule.
fn rules() -> ModelScorer {
    let model = ModelArtefact::from_json(medpay_ml::DEFAULT_MODEL_JSON).unwrap();
    let velocity = NamedRule::compile("velocity_payments_1h", "review if patient_payments_1h >= 5").unwrap();
    ModelScorer::new(model, Arc::new(RuleBook::new(vec![velocity])), Arc::new(Lists::default()))
}

async fn store() -> Store {
    let path = std::env::temp_dir().join(format!("medpay-actors-{}.db", uuid::Uuid::new_v4()));
    Store::connect(&format!("sqlite://{}", path.display())).await.unwrap()
}

async fn runtime(store: Store, scorer: Arc<dyn RiskScorer>, config: RuntimeConfig) -> Runtime {
    // Night payments score higher: pin the hour so that outcomes do not depend on when tests run.
    let config = RuntimeConfig { scoring_hour: Some(14), ..config };
    Runtime::start(
        store,
        scorer,
        config,
        Arc::new(|payment, decision, _charge| {
            serde_json::json!(format!(
                "{}:{}",
                payment.id,
                decision.map_or("none", |decision| decision.outcome.as_str())
            ))
        }),
        None,
    )
    .await
    .unwrap()
}

async fn provider(store: &Store, fail_mode: FailMode) -> ProviderId {
    let id = ProviderId::new();
    let base = format!("{:012}", id.as_uuid().as_u128() % 1_000_000_000_000);
    let cnpj = format!("{base}{}", medpay_models::Cnpj::check_digits(&base).unwrap());
    let record = ProviderRecord {
        id,
        name: "Clínica Teste".to_owned(),
        cnpj: cnpj.parse().unwrap(),
        fee_bps: BasisPoints(500),
        escrow: false,
        score_fail_mode: fail_mode,
        max_amount_centavos: 10_000_000,
        review_score_min: 200,
        decline_score_min: 460,
        review_time_limit_hours: medpay_store::REVIEW_TIME_LIMIT_HOURS_DEFAULT,
        created_at_ms: medpay_store::now_ms(),
    };
    store.insert_provider(&record, &uuid::Uuid::new_v4().to_string()).await.unwrap();
    id
}

async fn patient(store: &Store) -> PatientId {
    let id = PatientId::new();
    let record = PatientRecord {
        id,
        name: "Maria".to_owned(),
        cpf: test_cpf(id.as_uuid().as_u128()),
        email: "maria@example.com".to_owned(),
        phone: "+5511999990000".to_owned(),
        created_at_ms: medpay_store::now_ms(),
        erased_at_ms: None,
    };
    store.insert_patient(&record, &uuid::Uuid::new_v4().to_string(), None).await.unwrap();
    id
}

/// A valid CPF derived from `seed`.
fn test_cpf(seed: u128) -> medpay_models::Cpf {
    let base = format!("{:09}", seed % 1_000_000_000);
    format!("{base}{}", medpay_models::Cpf::check_digits(&base).unwrap()).parse().unwrap()
}

fn payment(provider_id: ProviderId, patient_id: PatientId, amount_centavos: i64) -> NewPayment {
    let plan = InstallmentPlan::price(PlanRequest {
        principal: Money::from_centavos(amount_centavos),
        count: 1,
        monthly_interest: BasisPoints(0),
        released_on: chrono::Utc::now().date_naive(),
    })
    .unwrap();
    NewPayment {
        id: PaymentId::new(),
        provider_id,
        patient_id,
        cpf: test_cpf(patient_id.as_uuid().as_u128()),
        tuss_code: "10101012".parse().unwrap(),
        description: "Consulta".to_owned(),
        amount_centavos,
        method: PaymentMethod::Pix,
        monthly_interest_bps: 0,
        plan,
        device_id: format!("phone-of-{patient_id}"),
        ip: "127.0.0.1".to_owned(),
        card_fingerprint: None,
        created_at_ms: medpay_store::now_ms(),
        idempotency: None,
        claim: None,
        fee_bps: 500,
        escrow: false,
        patient_name: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_transaction_is_restarted_and_other_payments_complete() {
    let store = store().await;
    let runtime = Arc::new(runtime(store.clone(), Arc::new(PanickingScorer(rules())), RuntimeConfig::default()).await);
    let provider_id = provider(&store, FailMode::Open).await;
    let mut requests = Vec::new();
    for index in 0..8 {
        let amount = if index == 3 { PANIC_AMOUNT_CENTAVOS } else { 10_000 + index };
        requests.push(payment(provider_id, patient(&store).await, amount));
    }
    let panicking_id = requests[3].id;
    let handles: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let runtime = runtime.clone();
            tokio::spawn(async move { (request.id, runtime.submit(request).await) })
        })
        .collect();
    let mut completed = 0;
    for handle in handles {
        let (id, result) = handle.await.unwrap();
        if id == panicking_id {
            assert!(matches!(result, Err(CoreError::Crashed("transaction"))), "{result:?}");
        } else {
            let created = result.unwrap();
            assert_eq!(created.decision.outcome, DecisionOutcome::Approve);
            assert_eq!(store.payment(id).await.unwrap().unwrap().status, PaymentStatus::Approved);
            completed += 1;
        }
    }
    assert_eq!(completed, 7);
    // The supervisor has restarted the crashed actor from the store: it is running again, and it
    // holds no payment because nothing was committed before the panic.
    let stats = runtime.payments().stats().await.unwrap();
    assert_eq!(stats.restarted, 1);
    assert!(runtime.payments().is_live(panicking_id));
    assert_eq!(runtime.payment(panicking_id).await.unwrap(), None);
    assert_eq!(store.decision_count(panicking_id).await.unwrap(), 0);
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_over_budget_follows_the_providers_fail_mode() {
    let store = store().await;
    let config = RuntimeConfig { score_budget_ms: 20, ..RuntimeConfig::default() };
    let runtime = runtime(store.clone(), Arc::new(StuckScorer), config).await;
    let open = provider(&store, FailMode::Open).await;
    let closed = provider(&store, FailMode::Closed).await;
    let reviewed = runtime.submit(payment(open, patient(&store).await, 10_000)).await.unwrap();
    assert_eq!(reviewed.decision.outcome, DecisionOutcome::Review);
    assert_eq!(reviewed.payment.status, PaymentStatus::InReview);
    assert_eq!(reviewed.decision.reasons[0].code, "score_timeout");
    let declined = runtime.submit(payment(closed, patient(&store).await, 10_000)).await.unwrap();
    assert_eq!(declined.decision.outcome, DecisionOutcome::Decline);
    assert_eq!(declined.decision.model_version, crate::FALLBACK_MODEL_VERSION);
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_stop_and_are_rebuilt_from_the_store() {
    let store = store().await;
    let config = RuntimeConfig { idle_ms: 50, ..RuntimeConfig::default() };
    let runtime = runtime(store.clone(), Arc::new(rules()), config).await;
    let provider_id = provider(&store, FailMode::Open).await;
    let patient_id = patient(&store).await;
    let created = runtime.submit(payment(provider_id, patient_id, 12_345)).await.unwrap();
    let id = created.payment.id;
    for _ in 0..500 {
        if !runtime.payments().is_live(id) && !runtime.patients().is_live(patient_id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!runtime.payments().is_live(id), "the idle transaction actor stopped");
    assert!(!runtime.patients().is_live(patient_id), "the idle patient session stopped");
    assert!(runtime.payments().stats().await.unwrap().passivated >= 1);
    let rebuilt = runtime.payment(id).await.unwrap().unwrap();
    assert_eq!(rebuilt, created.payment);
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_velocity_is_kept_by_the_session_and_survives_a_restart() {
    let store = store().await;
    let provider_id = provider(&store, FailMode::Open).await;
    let patient_id = patient(&store).await;
    let first = runtime(store.clone(), Arc::new(rules()), RuntimeConfig::default()).await;
    for _ in 0..3 {
        let created = first.submit(payment(provider_id, patient_id, 10_000)).await.unwrap();
        assert_eq!(created.decision.outcome, DecisionOutcome::Approve);
    }
    first.shutdown(Duration::from_secs(5)).await;
    // A new runtime (a restarted node) rebuilds the patient's history from the store.
    let second = runtime(store.clone(), Arc::new(rules()), RuntimeConfig::default()).await;
    for _ in 0..2 {
        assert_eq!(
            second.submit(payment(provider_id, patient_id, 10_000)).await.unwrap().decision.outcome,
            DecisionOutcome::Approve
        );
    }
    let sixth = second.submit(payment(provider_id, patient_id, 10_000)).await.unwrap();
    assert_eq!(sixth.decision.outcome, DecisionOutcome::Review);
    assert_eq!(sixth.decision.rules_hit, vec!["velocity_payments_1h"]);
    second.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_dropped_and_the_others_get_everything() {
    let store = store().await;
    let runtime = runtime(store.clone(), Arc::new(rules()), RuntimeConfig::default()).await;
    let provider_id = provider(&store, FailMode::Open).await;
    let mut slow = runtime.subscribe(provider_id).await.unwrap().unwrap();
    let mut fast = runtime.subscribe(provider_id).await.unwrap().unwrap();
    let waves = 4;
    let wave = 100;
    let counted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = tokio::spawn({
        let counted = counted.clone();
        async move {
            while fast.recv().await.is_some() {
                if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == waves * wave {
                    break;
                }
            }
        }
    });
    let actor = runtime.providers().get(provider_id).await.unwrap();
    for round in 1..=waves {
        for _ in 0..wave {
            actor.send_message(crate::ProviderMsg::EventsCommitted(Arc::new(Vec::new()))).unwrap();
        }
        // The fast reader keeps up between waves, as a live connection does; the slow one never reads.
        for _ in 0..1_000 {
            if counted.load(std::sync::atomic::Ordering::SeqCst) >= round * wave {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
    assert_eq!(counted.load(std::sync::atomic::Ordering::SeqCst), waves * wave, "the fast subscriber got every batch");
    // The slow one got what its buffer held, then its feed closed: it resumes from its cursor.
    let mut held = 0;
    while slow.recv().await.is_some() {
        held += 1;
    }
    assert_eq!(held, crate::SUBSCRIBER_BUFFER);
    runtime.shutdown(Duration::from_secs(5)).await;
}

/// A burst of payments from one patient, all in flight at once, is counted by each of them: the
/// patient's session counts a payment when its features are asked for, not when it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_payments_in_flight_counts_towards_velocity() {
    let store = store().await;
    let provider_id = provider(&store, FailMode::Open).await;
    let patient_id = patient(&store).await;
    let runtime = Arc::new(runtime(store.clone(), Arc::new(rules()), RuntimeConfig::default()).await);
    let burst = 8;
    let submitted: Vec<_> = (0..burst)
        .map(|_| {
            let runtime = runtime.clone();
            tokio::spawn(async move { runtime.submit(payment(provider_id, patient_id, 10_000)).await })
        })
        .collect();
    let mut counted = Vec::new();
    let mut reviewed = 0;
    for handle in submitted {
        let created = handle.await.unwrap().unwrap();
        counted.push(created.decision.features["patient_payments_1h"].as_f64().unwrap());
        reviewed += usize::from(created.decision.outcome == DecisionOutcome::Review);
    }
    // One session for the patient, however many asked for it at once.
    assert_eq!(runtime.patients().stats().await.unwrap().started, 1);
    counted.sort_by(f64::total_cmp);
    // Each saw the ones before it: 0, 1, …, 7 earlier payments in the hour.
    assert_eq!(counted, (0..burst).map(f64::from).collect::<Vec<_>>());
    // The rules send the sixth payment in an hour to review: so three of the eight.
    assert_eq!(reviewed, 3);
}

/// The seeded simulation of payments' money (see `simulation.rs`), short: a few hundred payments
/// through every path with gateway faults and crashes at step boundaries. Its seed is printed;
/// `MEDPAY_SIM_SEED` replays one.
#[test]
fn simulation_short() {
    const SEED: u64 = 20_261_201;
    let seed = std::env::var("MEDPAY_SIM_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or(SEED);
    println!("simulation seed {seed}");
    let report = crate::simulation::run(crate::simulation::SimConfig::new(seed, 400))
        .unwrap_or_else(|failure| panic!("{failure}"));
    println!("{report:#?}");
    // It went where it was meant to: crashes at every kind of boundary, every money path (checked
    // for the default seed; a seed replayed by hand may leave a rare path out).
    if seed != SEED {
        return;
    }
    for boundary in [
        "before_open",
        "after_open_commit",
        "after_charge_call",
        "after_charge_commit",
        "before_answer",
        "after_webhook_record",
        "after_webhook_commit",
        "after_refund_commit",
        "after_refund_call",
        "after_procedure_commit",
    ] {
        assert!(report.crashed_at.get(boundary).copied().unwrap_or(0) > 0, "no crash at {boundary}: {report:#?}");
    }
    for path in [
        "approved",
        "in_review",
        "declined",
        "charged",
        "paid",
        "refund",
        "chargeback",
        "med",
        "suspense",
        "procedure_performed",
        "escrow_released_at_gateway",
        "review_upheld",
        "contract_sent",
        "resumed",
        "replayed",
        "duplicate_webhook",
    ] {
        assert!(report.paths.get(path).copied().unwrap_or(0) > 0, "path {path} never taken: {report:#?}");
    }
}

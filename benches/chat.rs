//! The support bot's reply latency without the network: (1) understanding alone — tokenizer,
//! TF-IDF, intent model, dialogue policy — over the test set written apart; (2) a whole turn through
//! the conversation's actor — the patient's payments asked of their session (read from SQLite),
//! the reply, the transcript written durably. Prints p50 / p99.
//!
//! `cargo bench --bench chat`

use medpay_actors::{Runtime, RuntimeConfig};
use medpay_chatbot::dialogue::{Slots, respond};
use medpay_chatbot::intents::read_csv;
use medpay_ml::{Lists, ModelArtefact, ModelScorer, RiskScorer, RuleBook};
use medpay_models::{BasisPoints, Cnpj, Cpf, FailMode, PatientId, ProviderId};
use medpay_store::{PatientRecord, ProviderRecord, Store};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whole turns timed, one after another.
const TURNS: usize = 2_000;
/// Payments the patient has (the chat reads them every turn).
const PAYMENTS: usize = 5;

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let rank = (fraction * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn report(what: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{what}, {} replies: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
}

fn main() {
    let test = read_csv(std::path::Path::new("chatbot/corpus/test.csv"), "text", "intent").unwrap();
    let brain = medpay_actors::chat::ChatBrain::committed().unwrap();
    let today = chrono::Utc::now().date_naive();

    // (1) Understanding and answering, in memory.
    let mut latencies = Vec::new();
    for _ in 0..10 {
        let mut slots = Slots::default();
        for (text, _) in &test {
            let started = Instant::now();
            let prediction = brain.model.predict(&brain.tokenizer, text).unwrap();
            let confident = prediction.is_confident(&brain.model);
            black_box(respond(&prediction, confident, text, &mut slots, &[], today));
            latencies.push(started.elapsed());
        }
    }
    report("understanding + dialogue (in memory)", latencies);

    // (2) Whole turns through the actors, durable on SQLite.
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    tokio.block_on(async {
        let path = std::env::temp_dir().join(format!("medpay-chat-bench-{}.db", uuid::Uuid::new_v4().simple()));
        let store = Store::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        let provider = ProviderId::new();
        let base = "112223330001";
        let record = ProviderRecord {
            id: provider,
            name: "Clínica".to_owned(),
            cnpj: format!("{base}{}", Cnpj::check_digits(base).unwrap()).parse::<Cnpj>().unwrap(),
            fee_bps: BasisPoints(500),
            escrow: true,
            score_fail_mode: FailMode::Open,
            max_amount_centavos: 10_000_000,
            review_score_min: 200,
            decline_score_min: 460,
            review_time_limit_hours: medpay_store::REVIEW_TIME_LIMIT_HOURS_DEFAULT,
            created_at_ms: medpay_store::now_ms(),
        };
        store.insert_provider(&record, "bench-chat-key").await.unwrap();
        let record = store.provider(provider).await.unwrap().unwrap();
        let cpf: Cpf = format!("529982247{}", Cpf::check_digits("529982247").unwrap()).parse().unwrap();
        let patient = PatientId::new();
        let person = PatientRecord {
            id: patient,
            name: "Maria".to_owned(),
            cpf: cpf.clone(),
            email: "maria@example.com".to_owned(),
            phone: "11999990000".to_owned(),
            created_at_ms: medpay_store::now_ms(),
            erased_at_ms: None,
        };
        store.insert_patient(&person, "bench-chat-token", Some(provider)).await.unwrap();
        let model = ModelArtefact::from_json(medpay_ml::DEFAULT_MODEL_JSON).unwrap();
        let scorer: Arc<dyn RiskScorer> =
            Arc::new(ModelScorer::new(model, Arc::new(RuleBook::default()), Arc::new(Lists::default())));
        let render = Arc::new(medpay_api::dto::PaymentView::render);
        let runtime = Runtime::start(store, scorer, RuntimeConfig::default(), render, None).await.unwrap();
        for index in 0..PAYMENTS {
            let body = serde_json::json!({
                "patient_id": patient.to_string(), "provider_id": provider.to_string(),
                "procedure": {"tuss_code": "10101012", "description": "Consulta"},
                "amount_centavos": 15_000 + index as i64 * 1_000, "method": "pix", "installments": 1,
                "device": {"id": "phone", "ip": "200.100.50.25"}
            });
            let prepared = medpay_api::prepare(body.to_string().as_bytes(), today).unwrap();
            runtime.submit(prepared.into_new_payment(cpf.clone(), &record, None)).await.unwrap();
        }
        let credential = medpay_store::PatientCredential { patient, provider: None };
        let conversation = runtime.start_conversation(credential).await.unwrap();
        let messages = [
            "já caiu meu pix?",
            "quanto fica 1500 em 6x?",
            "e em 10x?",
            "quando a clínica recebe?",
            "preciso da segunda via",
            "quais as formas de pagamento?",
        ];
        let mut latencies = Vec::with_capacity(TURNS);
        for index in 0..TURNS {
            let text = messages[index % messages.len()].to_owned();
            let started = Instant::now();
            black_box(runtime.chat(conversation, credential, text).await.unwrap());
            latencies.push(started.elapsed());
        }
        report("whole turn through the chat and patient actors, durable on SQLite", latencies);
        runtime.shutdown(Duration::from_secs(5)).await;
        let _ = std::fs::remove_file(path);
    });
}

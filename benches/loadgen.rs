//! HTTP load generator for a running MedPay: registers one provider and many patients, then sends
//! payment requests (each with its own Idempotency-Key) from a fixed number of concurrent workers,
//! and prints throughput and latency percentiles. Bounded in count and in time; loopback only.
//!
//! `cargo run --release --example loadgen -- http://127.0.0.1:8080 ADMIN_TOKEN [REQUESTS] [CONCURRENCY]`

use reqwest::Client;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const REQUESTS_DEFAULT: usize = 20_000;
const CONCURRENCY_DEFAULT: usize = 32;
/// Each patient makes at most this many payments, below the velocity and rate limits.
const PAYMENTS_PER_PATIENT: usize = 4;
/// The run stops after this long whatever is left.
const RUN_SECONDS_MAX: u64 = 300;

fn cpf(index: usize) -> String {
    let base = format!("{:09}", 100_000_000 + (index * 7_919 + std::process::id() as usize * 13) % 800_000_000);
    format!("{base}{}", medpay_models::Cpf::check_digits(&base).unwrap())
}

fn cnpj() -> String {
    let base = format!("{:08}0001", 10_000_000 + std::process::id() % 89_999_999);
    format!("{base}{}", medpay_models::Cnpj::check_digits(&base).unwrap())
}

async fn post(client: &Client, url: String, token: &str, body: &Value, key: Option<String>) -> (u16, Value) {
    let mut request = client.post(url).bearer_auth(token).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Procedures and their usual prices in centavos (the generator's catalogue, in part).
const PROCEDURES: [(&str, &str, i64); 5] = [
    ("10101012", "Consulta em consultório", 25_000),
    ("40304361", "Hemograma completo", 4_000),
    ("40901122", "Ultrassonografia de abdome", 30_000),
    ("41001010", "Tomografia computadorizada", 90_000),
    ("81000065", "Consulta odontológica", 20_000),
];

/// Mostly regular payments (each patient on their own phone, about the usual price, by PIX, card
/// or boleto); one in 50 from a burner phone shared by many CPFs (card testing); one in 40 at
/// several times the usual price.
fn synthetic_payment(index: usize, patients: &[String], provider_id: &str) -> Value {
    let patient = index % patients.len();
    let (code, description, price) = PROCEDURES[(index / 7) % PROCEDURES.len()];
    let mut amount = price + ((index * 7_919) % 2_000) as i64;
    let mut device = format!("phone-{patient}");
    let mut method = ["pix", "card", "boleto"][index % 3];
    if index.is_multiple_of(50) {
        device = format!("burner-{}", index / 500);
        method = "card";
    } else if index.is_multiple_of(40) {
        amount *= 8;
    }
    let installments = if amount > 50_000 && method != "pix" { 1 + index % 6 } else { 1 };
    json!({
        "patient_id": patients[patient], "provider_id": provider_id,
        "procedure": {"tuss_code": code, "description": description},
        "amount_centavos": amount, "method": method, "installments": installments, "monthly_interest_bps": 199,
        "device": {"id": device, "ip": format!("200.100.{}.{}", patient % 250, index % 250)}
    })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args.get(1).cloned().unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let admin = args.get(2).cloned().expect("usage: loadgen URL ADMIN_TOKEN [REQUESTS] [CONCURRENCY]");
    let requests: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(REQUESTS_DEFAULT);
    let concurrency: usize = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(CONCURRENCY_DEFAULT);
    assert!(base.starts_with("http://127.") || base.starts_with("http://localhost"), "loopback targets only");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();

    let provider = json!({"name": "Clínica Carga", "cnpj": cnpj(), "fee_bps": 500, "max_amount_centavos": 100_000_000});
    let (status, provider) = post(&client, format!("{base}/v1/providers"), &admin, &provider, None).await;
    assert_eq!(status, 201, "{provider}");
    let provider_id = provider["id"].as_str().unwrap().to_owned();
    let key = provider["api_key"].as_str().unwrap().to_owned();
    let patient_count = requests.div_ceil(PAYMENTS_PER_PATIENT);
    let mut patients = Vec::with_capacity(patient_count);
    for index in 0..patient_count {
        let body = json!({"name": "Paciente", "cpf": cpf(index), "email": "p@example.com", "phone": "11999990000"});
        let (status, patient) = post(&client, format!("{base}/v1/patients"), &key, &body, None).await;
        assert_eq!(status, 201, "{patient}");
        patients.push(patient["id"].as_str().unwrap().to_owned());
    }
    println!(
        "registered 1 provider and {patient_count} patients; sending {requests} payment requests with {concurrency} workers"
    );

    // A live subscriber on the provider's event stream: when each decision's event arrives.
    let answered: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let arrivals: Arc<std::sync::Mutex<Vec<(String, Instant, i64)>>> = Arc::default();
    let subscriber = {
        let (client, base, key, arrivals) = (client.clone(), base.clone(), key.clone(), arrivals.clone());
        tokio::spawn(async move {
            // A real subscriber: when dropped (too slow), it resumes from its last event.
            let mut last_id: Option<String> = None;
            loop {
                let mut request = client.get(format!("{base}/v1/events/stream")).bearer_auth(&key);
                if let Some(id) = &last_id {
                    request = request.header("Last-Event-ID", id);
                }
                let Ok(mut response) = request.send().await else { return };
                let mut buffer = String::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    let now = Instant::now();
                    let wall_ms = chrono::Utc::now().timestamp_millis();
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buffer.find("\n\n") {
                        let block: String = buffer.drain(..end + 2).collect();
                        if let Some(id) = block.lines().find_map(|line| line.strip_prefix("id:")) {
                            last_id = Some(id.trim().to_owned());
                        }
                        let Some(data) = block.lines().find_map(|line| line.strip_prefix("data:")) else { continue };
                        let Ok(event) = serde_json::from_str::<Value>(data.trim()) else { continue };
                        // The decision's own event; the charge and payment events that follow are not it.
                        if !matches!(
                            event["type"].as_str(),
                            Some("payment.approved" | "payment.review" | "payment.declined")
                        ) {
                            continue;
                        }
                        let created_ms =
                            chrono::DateTime::parse_from_rfc3339(event["created_at"].as_str().unwrap_or_default())
                                .map(|at| at.timestamp_millis())
                                .unwrap_or(wall_ms);
                        let id = event["payment_id"].as_str().unwrap_or_default().to_owned();
                        arrivals.lock().unwrap().push((id, now, wall_ms - created_ms));
                    }
                }
            }
        })
    };

    let next = Arc::new(AtomicUsize::new(0));
    let patients = Arc::new(patients);
    let deadline = Instant::now() + Duration::from_secs(RUN_SECONDS_MAX);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, next, patients, base, key, provider_id, answered) = (
            client.clone(),
            next.clone(),
            patients.clone(),
            base.clone(),
            key.clone(),
            provider_id.clone(),
            answered.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                if index >= requests || Instant::now() > deadline {
                    break;
                }
                let body = synthetic_payment(index, &patients, &provider_id);
                let sent = Instant::now();
                let (status, created) = post(
                    &client,
                    format!("{base}/v1/payments"),
                    &key,
                    &body,
                    Some(format!("load-{index}-{}", std::process::id())),
                )
                .await;
                latencies.push(sent.elapsed());
                if let Some(id) = created["id"].as_str() {
                    answered.lock().unwrap().insert(id.to_owned(), Instant::now());
                }
                *statuses.entry(status).or_default() += 1;
                if let Some(outcome) = created["decision"]["outcome"].as_str() {
                    *outcomes.entry(outcome.to_owned()).or_default() += 1;
                }
            }
            (latencies, statuses, outcomes)
        }));
    }
    let mut latencies = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for worker in workers {
        let (worker_latencies, worker_statuses, worker_outcomes) = worker.await.unwrap();
        latencies.extend(worker_latencies);
        for (status, count) in worker_statuses {
            *statuses.entry(status).or_default() += count;
        }
        for (outcome, count) in worker_outcomes {
            *outcomes.entry(outcome).or_default() += count;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |fraction: f64| latencies[((latencies.len() - 1) as f64 * fraction).round() as usize];
    println!(
        "{} requests in {:.2?}: {:.0} requests/s; latency p50 {:?}, p90 {:?}, p99 {:?}, p999 {:?}, max {:?}; statuses {:?}; outcomes {:?}",
        latencies.len(),
        elapsed,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        latencies[latencies.len() - 1],
        statuses,
        outcomes
    );
    // Let the last events arrive, then compare.
    tokio::time::sleep(Duration::from_secs(2)).await;
    subscriber.abort();
    let answered = answered.lock().unwrap();
    let arrivals = arrivals.lock().unwrap();
    let mut after_response: Vec<f64> = Vec::new();
    let mut from_request: Vec<i64> = Vec::new();
    for (id, arrived, since_request_ms) in arrivals.iter() {
        from_request.push(*since_request_ms);
        if let Some(responded) = answered.get(id) {
            let delta = if arrived >= responded {
                arrived.duration_since(*responded).as_secs_f64()
            } else {
                -responded.duration_since(*arrived).as_secs_f64()
            };
            after_response.push(delta * 1_000.0);
        }
    }
    after_response.sort_by(f64::total_cmp);
    from_request.sort_unstable();
    if !after_response.is_empty() && !from_request.is_empty() {
        let pick = |len: usize, fraction: f64| ((len - 1) as f64 * fraction).round() as usize;
        println!(
            "decision events at a live SSE subscriber: {} of {}; from the request's arrival at the server: p50 {} ms, p99 {} ms; \
             relative to the client's 201 (negative: the event came first): p50 {:.2} ms, p99 {:.2} ms",
            arrivals.len(),
            answered.len(),
            from_request[pick(from_request.len(), 0.5)],
            from_request[pick(from_request.len(), 0.99)],
            after_response[pick(after_response.len(), 0.5)],
            after_response[pick(after_response.len(), 0.99)],
        );
    }
}

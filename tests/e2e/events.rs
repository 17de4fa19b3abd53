//! Providers receive their events: over SSE and WebSocket, each once and in order, never another
//! provider's; and as signed webhooks, at least once, through failures and a SIGKILL.

use crate::on_both_engines;
use crate::support::{Engine, Provider, TestApp, pay, payment_body};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Reads Server-Sent Events from a streaming response: (id, event type, data).
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    async fn open(app: &TestApp, token: &str, query: &str) -> SseReader {
        let response =
            app.client.get(format!("{}/v1/events/stream{query}", app.base)).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        SseReader { response, buffer: String::new() }
    }

    /// The next event (keep-alive comments skipped), or `None` after `wait` without one.
    async fn next(&mut self, wait: Duration) -> Option<(String, String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("event:") {
                        kind = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((id, kind, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout(wait, self.response.chunk()).await.ok()?.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

const WAIT: Duration = Duration::from_secs(10);

/// A payment for a new patient of `provider`.
async fn pay_new_patient(app: &TestApp, provider: &Provider) -> Value {
    let patient = app.patient(provider).await;
    pay(app, provider, &payment_body(provider, &patient, 15_000)).await
}

async fn live_subscribers_get_every_event_of_their_provider_once_in_order(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let clinic = app.provider(json!({})).await;
    let other = app.provider(json!({})).await;
    let first_payment = pay_new_patient(&app, &clinic).await;
    // Two SSE subscribers (one resuming from the start), a WebSocket, and the other clinic's stream.
    let mut live = SseReader::open(&app, &clinic.key, "").await;
    let mut resumed = SseReader::open(&app, &clinic.key, "?after=0").await;
    let ws_url = format!("{}/v1/events/ws", app.base.replace("http://", "ws://"));
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url).unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {}", clinic.key).parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut others = SseReader::open(&app, &other.key, "").await;

    let mut created = Vec::new();
    for index in 0..4 {
        created.push(pay_new_patient(&app, &clinic).await["id"].as_str().unwrap().to_owned());
        if index == 1 {
            pay_new_patient(&app, &other).await;
        }
    }
    // Every new event of the clinic: 4 payments × (requested, approved, awaiting payment with its
    // charge), numbered 4..=15.
    let expected: Vec<i64> = (4..=15).collect();
    let mut seen = Vec::new();
    for _ in 0..12 {
        let (id, kind, event) = live.next(WAIT).await.expect("a live event");
        assert_eq!(id, event["provider_seq"].to_string());
        assert_eq!(kind, event["type"].as_str().unwrap());
        assert!(created.contains(&event["payment_id"].as_str().unwrap().to_owned()), "only the clinic's payments");
        seen.push(event["provider_seq"].as_i64().unwrap());
    }
    assert_eq!(seen, expected);
    let mut resumed_seen = Vec::new();
    for _ in 0..15 {
        let (_, _, event) = resumed.next(WAIT).await.expect("an event from the start");
        resumed_seen.push(event["provider_seq"].as_i64().unwrap());
    }
    assert_eq!(resumed_seen, (1..=15).collect::<Vec<i64>>());
    let (_, _, first) = SseReader::open(&app, &clinic.key, "?after=0").await.next(WAIT).await.unwrap();
    assert_eq!(first["payment_id"], first_payment["id"]);
    assert_eq!(first["type"], "payment.requested");
    assert_eq!(first["data"]["payment"]["status"], "requested");

    let mut ws_seen = Vec::new();
    for _ in 0..12 {
        let message = tokio::time::timeout(WAIT, socket.next()).await.unwrap().unwrap().unwrap();
        let event: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
        ws_seen.push(event["provider_seq"].as_i64().unwrap());
    }
    assert_eq!(ws_seen, expected);
    // The other clinic saw its own three events and nothing of the first clinic's.
    let mut other_kinds = Vec::new();
    for _ in 0..3 {
        let (_, kind, event) = others.next(WAIT).await.expect("the other clinic's event");
        assert!(!created.contains(&event["payment_id"].as_str().unwrap().to_owned()));
        other_kinds.push(kind);
    }
    assert_eq!(other_kinds, vec!["payment.requested", "payment.approved", "payment.awaiting_payment"]);
    assert!(live.next(Duration::from_millis(300)).await.is_none(), "no duplicates");
    // Resume after a cursor with Last-Event-ID: the events after it, no more.
    let response = app
        .client
        .get(format!("{}/v1/events/stream", app.base))
        .bearer_auth(&clinic.key)
        .header("Last-Event-ID", "8")
        .send()
        .await
        .unwrap();
    let mut after_eight = SseReader { response, buffer: String::new() };
    assert_eq!(after_eight.next(WAIT).await.unwrap().0, "9");
    assert_eq!(after_eight.next(WAIT).await.unwrap().0, "10");
    // The same feed by cursor.
    let (status, page) = app.request(Method::GET, "/v1/events?after=6&limit=2", Some(&clinic.key), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page["data"].as_array().unwrap().iter().map(|e| e["provider_seq"].as_i64().unwrap()).collect::<Vec<_>>(),
        vec![7, 8]
    );
    assert_eq!(page["next_after"], 8);
    let (status, _) = app.request(Method::GET, "/v1/events", Some(&app.admin), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}
on_both_engines!(live_subscribers_get_every_event_of_their_provider_once_in_order);

/// A webhook receiver that refuses its first `failures` requests, then records what it accepts.
#[derive(Clone, Default)]
pub struct Receiver {
    pub failures_left: Arc<Mutex<usize>>,
    pub accepted: Arc<Mutex<Vec<(String, String, String)>>>,
    pub refused: Arc<Mutex<usize>>,
}

async fn receive(
    axum::extract::State(receiver): axum::extract::State<Receiver>,
    headers: axum::http::HeaderMap,
    body: String,
) -> StatusCode {
    {
        let mut left = receiver.failures_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            *receiver.refused.lock().unwrap() += 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned();
    receiver.accepted.lock().unwrap().push((header("medpay-event-id"), header("medpay-signature"), body));
    StatusCode::OK
}

pub async fn start_receiver(listener: tokio::net::TcpListener, receiver: Receiver) {
    let app = axum::Router::new().route("/hooks", axum::routing::post(receive)).with_state(receiver);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

pub fn verify_all(accepted: &[(String, String, String)], secret: &str) -> Vec<String> {
    let now = chrono::Utc::now().timestamp();
    accepted
        .iter()
        .map(|(event_id, signature, body)| {
            assert!(medpay_actors::outbox::verify(secret, signature, body, now, 300), "signature of {event_id}");
            assert!(!medpay_actors::outbox::verify("whsec_forged", signature, body, now, 300));
            let event: Value = serde_json::from_str(body).unwrap();
            assert_eq!(event["id"].as_str().unwrap(), event_id, "the header names the body's event");
            event_id.clone()
        })
        .collect()
}

async fn webhooks_arrive_signed_through_failures(engine: Engine) {
    let app = TestApp::spawn_with(engine, |config| {
        config.runtime.webhooks.backoff_base_ms = 30;
        config.runtime.webhooks.poll_ms = 50;
    })
    .await;
    let clinic = app.provider(json!({})).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let receiver = Receiver { failures_left: Arc::new(Mutex::new(3)), ..Receiver::default() };
    start_receiver(listener, receiver.clone()).await;
    let (status, endpoint) =
        app.request(Method::POST, "/v1/webhook-endpoints", Some(&clinic.key), Some(&json!({"url": url})), None).await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    let mut expected = Vec::new();
    for _ in 0..3 {
        let id = pay_new_patient(&app, &clinic).await["id"].as_str().unwrap().to_owned();
        expected.push(format!("{id}.1"));
        expected.push(format!("{id}.2"));
        expected.push(format!("{id}.3"));
    }
    let mut received = Vec::new();
    for _ in 0..400 {
        received = verify_all(&receiver.accepted.lock().unwrap().clone(), &secret);
        if expected.iter().all(|id| received.contains(id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(expected.iter().all(|id| received.contains(id)), "every event arrived: {received:?}");
    assert!(received.iter().all(|id| expected.contains(id)), "only the clinic's events: {received:?}");
    assert_eq!(*receiver.refused.lock().unwrap(), 3);
    let path = format!("/v1/webhook-endpoints/{}/deliveries", endpoint["id"].as_str().unwrap());
    // The receiver answers before the outbox records the attempt: wait for the records.
    let mut deliveries = Vec::new();
    for _ in 0..400 {
        let (_, listed) = app.request(Method::GET, &path, Some(&clinic.key), None, None).await;
        deliveries = listed["data"].as_array().unwrap().clone();
        if deliveries.len() == 9 && deliveries.iter().all(|delivery| delivery["status"] == "delivered") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(deliveries.len(), 9);
    assert!(deliveries.iter().all(|delivery| delivery["status"] == "delivered"), "{deliveries:?}");
    let retried: i64 = deliveries.iter().map(|delivery| delivery["attempts"].as_i64().unwrap() - 1).sum();
    assert_eq!(retried, 3, "three refused attempts were retried");
    // A resend delivers the same event again: a duplicate carries the same event id.
    let resend = format!("{path}/{}/resend", deliveries[0]["id"].as_str().unwrap());
    assert_eq!(app.request(Method::POST, &resend, Some(&clinic.key), None, None).await.0, StatusCode::ACCEPTED);
    for _ in 0..400 {
        if receiver.accepted.lock().unwrap().len() > received.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let after = verify_all(&receiver.accepted.lock().unwrap().clone(), &secret);
    assert_eq!(after.len(), received.len() + 1);
    assert_eq!(after.last().unwrap(), deliveries[0]["event_id"].as_str().unwrap());
    let other = app.provider(json!({})).await;
    assert_eq!(app.request(Method::GET, &path, Some(&other.key), None, None).await.0, StatusCode::NOT_FOUND);
    app.stop().await;
}
on_both_engines!(webhooks_arrive_signed_through_failures);

/// A listener that counts the connections made to it.
async fn counting_listener(address: &str) -> (u16, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(Mutex::new(0usize));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            *seen.lock().unwrap() += 1;
            drop(stream);
        }
    });
    (port, count)
}

/// Without the development setting no webhook reaches loopback, however it is spelled: each
/// registration is refused, and an endpoint already stored with such a URL (registered under
/// another setting) is never called, its attempts failing with a fixed reason. Listeners of the
/// test's own sit behind every address, counting connections.
async fn webhooks_never_reach_loopback_in_any_spelling(engine: Engine) {
    let app = TestApp::spawn_with(engine, |config| {
        config.runtime.webhooks.allow_loopback = false;
        config.runtime.webhooks.backoff_base_ms = 30;
        config.runtime.webhooks.poll_ms = 50;
    })
    .await;
    let clinic = app.provider(json!({})).await;
    let (port, on_v4) = counting_listener("127.0.0.1:0").await;
    let (_, on_other) = counting_listener(&format!("127.1.2.3:{port}")).await;
    let on_v6 = match tokio::net::TcpListener::bind(format!("[::1]:{port}")).await {
        Ok(listener) => {
            drop(listener);
            Some(counting_listener(&format!("[::1]:{port}")).await.1)
        }
        Err(_) => None, // no IPv6 loopback on this machine
    };
    let spellings = [
        format!("127.0.0.1:{port}"),
        format!("127.1.2.3:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("2130706433:{port}"),
        format!("0x7f000001:{port}"),
        format!("127.1:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
    ];
    for host in &spellings {
        for scheme in ["http", "https"] {
            let url = format!("{scheme}://{host}/hooks");
            let (status, refused) = app
                .request(Method::POST, "/v1/webhook-endpoints", Some(&clinic.key), Some(&json!({"url": url})), None)
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {refused}");
            assert_eq!(refused["error"]["code"], "url_not_allowed", "{url}: {refused}");
        }
    }
    let (status, refused) = app
        .request(
            Method::POST,
            "/v1/webhook-endpoints",
            Some(&clinic.key),
            Some(&json!({"url": "http://hooks.example.com/x"})),
            None,
        )
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("url_not_allowed")),
        "https only"
    );
    // Stored anyway, as if registered under the development setting: never called either.
    let store = medpay_store::Store::connect(app.database_url()).await.unwrap();
    let mut stored = Vec::new();
    for host in &spellings {
        let endpoint = medpay_store::WebhookEndpoint {
            id: uuid::Uuid::now_v7().to_string(),
            provider_id: clinic.id.parse().unwrap(),
            url: format!("http://{host}/hooks"),
            event_types: Vec::new(),
            secret: "whsec_test".to_owned(),
            enabled: true,
            disabled_reason: None,
            consecutive_failures: 0,
            cursor: 0,
            created_at_ms: medpay_store::now_ms(),
        };
        stored.push(store.insert_webhook_endpoint(&endpoint).await.unwrap().id);
    }
    pay_new_patient(&app, &clinic).await;
    for id in &stored {
        let path = format!("/v1/webhook-endpoints/{id}/deliveries");
        let mut deliveries = Vec::new();
        for _ in 0..400 {
            let (_, listed) = app.request(Method::GET, &path, Some(&clinic.key), None, None).await;
            deliveries = listed["data"].as_array().cloned().unwrap_or_default();
            if !deliveries.is_empty() && deliveries.iter().all(|delivery| delivery["attempts"].as_i64() >= Some(2)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(!deliveries.is_empty(), "{id}: deliveries were attempted");
        for delivery in &deliveries {
            assert_eq!(delivery["status"], "pending", "{delivery}");
            assert!(delivery["attempts"].as_i64().unwrap() >= 2, "retried, and refused again: {delivery}");
            assert_eq!(delivery["last_error"], "address not allowed", "a fixed reason: {delivery}");
        }
    }
    assert_eq!(*on_v4.lock().unwrap(), 0, "nothing connected to 127.0.0.1");
    assert_eq!(*on_other.lock().unwrap(), 0, "nothing connected to 127.1.2.3");
    if let Some(on_v6) = on_v6 {
        assert_eq!(*on_v6.lock().unwrap(), 0, "nothing connected to [::1]");
    }
    app.stop().await;
}
on_both_engines!(webhooks_never_reach_loopback_in_any_spelling);

/// A ClickSign webhook is taken only within an hour of its signed `occurred_at`: a body captured
/// once and played back later is refused (400 `stale_webhook`) and recorded nowhere; a fresh one
/// is taken; a forged one is 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clicksign_webhook_played_back_after_its_window_is_refused() {
    let app = TestApp::spawn_with(Engine::Sqlite, |config| {
        config.money.clicksign_webhook_secret = "segredo-de-teste".to_owned();
    })
    .await;
    let post = |body: String, signature: String| {
        let request = app
            .client
            .post(format!("{}/v1/gateways/clicksign/webhooks", app.base))
            .header("content-type", "application/json")
            .header("content-hmac", signature)
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let body = |at: chrono::DateTime<chrono::Utc>, envelope: &str| {
        json!({"event": {"name": "sign", "occurred_at": at.to_rfc3339()}, "envelope": {"id": envelope}}).to_string()
    };
    let signed = |body: &str| medpay_gateways::clicksign::content_hmac("segredo-de-teste", body.as_bytes());
    let old = body(chrono::Utc::now() - chrono::Duration::hours(2), "env-old");
    let (status, error) = post(old.clone(), signed(&old)).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("stale_webhook")), "{error}");
    let ahead = body(chrono::Utc::now() + chrono::Duration::hours(1), "env-ahead");
    let (status, error) = post(ahead.clone(), signed(&ahead)).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("stale_webhook")), "{error}");
    let fresh = body(chrono::Utc::now(), "env-fresh");
    let (status, _) = post(fresh.clone(), signed(&fresh)).await;
    assert_eq!(status, StatusCode::OK, "a fresh one is taken");
    let (status, error) =
        post(fresh.clone(), medpay_gateways::clicksign::content_hmac("outro", fresh.as_bytes())).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_signature")));
    // Only the fresh one was recorded.
    sqlx::any::install_default_drivers();
    let mut database = <sqlx::AnyConnection as sqlx::Connection>::connect(app.database_url()).await.unwrap();
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT webhook_id FROM gateway_webhooks WHERE gateway = 'clicksign' ORDER BY webhook_id")
            .fetch_all(&mut database)
            .await
            .unwrap();
    assert_eq!(recorded, vec!["env-fresh:sign".to_owned()], "{recorded:?}");
    app.stop().await;
}

/// One receiver that never answers holds up only its own deliveries: while the first request to
/// it hangs, another provider's endpoint gets every one of its events, and the hanging endpoint's
/// other deliveries wait their turn behind it (sent in order, one at a time).
async fn a_receiver_that_hangs_holds_up_only_its_own_deliveries(engine: Engine) {
    let app = TestApp::spawn_with(engine, |config| {
        config.runtime.webhooks.poll_ms = 50;
        config.runtime.webhooks.request_timeout_ms = 60_000;
    })
    .await;
    // The hanging receiver: counts the requests it got and answers none until released.
    let release = Arc::new(tokio::sync::Notify::new());
    let hung = Arc::new(Mutex::new(0usize));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_url = format!("http://{}/hooks", listener.local_addr().unwrap());
    {
        let (release, hung) = (release.clone(), hung.clone());
        let hang = move || {
            let (release, hung) = (release.clone(), hung.clone());
            async move {
                *hung.lock().unwrap() += 1;
                release.notified().await;
                StatusCode::OK
            }
        };
        let app = axum::Router::new().route("/hooks", axum::routing::post(hang));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    let (slow, fast) = (app.provider(json!({})).await, app.provider(json!({})).await);
    let (status, _) = app
        .request(Method::POST, "/v1/webhook-endpoints", Some(&slow.key), Some(&json!({"url": slow_url})), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    pay_new_patient(&app, &slow).await;
    for _ in 0..400 {
        if *hung.lock().unwrap() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(*hung.lock().unwrap(), 1, "the first delivery hangs");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fast_url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let receiver = Receiver::default();
    start_receiver(listener, receiver.clone()).await;
    let (status, endpoint) = app
        .request(Method::POST, "/v1/webhook-endpoints", Some(&fast.key), Some(&json!({"url": fast_url})), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let mut expected = Vec::new();
    for _ in 0..3 {
        let id = pay_new_patient(&app, &fast).await["id"].as_str().unwrap().to_owned();
        expected.extend((1..=3).map(|seq| format!("{id}.{seq}")));
    }
    let mut received = Vec::new();
    for _ in 0..400 {
        received = verify_all(&receiver.accepted.lock().unwrap().clone(), endpoint["secret"].as_str().unwrap());
        if expected.iter().all(|id| received.contains(id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(expected.iter().all(|id| received.contains(id)), "every event of the other provider: {received:?}");
    assert_eq!(*hung.lock().unwrap(), 1, "the hanging endpoint got no second request meanwhile: one at a time");
    // Released, the hanging endpoint's other deliveries follow.
    release.notify_waiters();
    for _ in 0..400 {
        release.notify_waiters();
        if *hung.lock().unwrap() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(*hung.lock().unwrap() >= 3, "then the rest, in turn");
    release.notify_waiters();
    app.stop().await;
}
on_both_engines!(a_receiver_that_hangs_holds_up_only_its_own_deliveries);

/// A provider has at most ten enabled webhook endpoints; removing one makes room, nothing more is
/// sent to it, and its deliveries stay listed. Nobody removes another provider's endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_endpoints_are_bounded_per_provider_and_removable() {
    let app = TestApp::spawn(Engine::Sqlite).await;
    let (clinic, other) = (app.provider(json!({})).await, app.provider(json!({})).await);
    let mut ids = Vec::new();
    for index in 0..10 {
        let url = json!({"url": format!("https://hooks{index}.clinica.example/medpay")});
        let (status, endpoint) =
            app.request(Method::POST, "/v1/webhook-endpoints", Some(&clinic.key), Some(&url), None).await;
        assert_eq!(status, StatusCode::CREATED, "{endpoint}");
        ids.push(endpoint["id"].as_str().unwrap().to_owned());
    }
    let eleventh = json!({"url": "https://hooks10.clinica.example/medpay"});
    let (status, error) =
        app.request(Method::POST, "/v1/webhook-endpoints", Some(&clinic.key), Some(&eleventh), None).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("too_many_endpoints")),
        "{error}"
    );
    let (_, listed) = app.request(Method::GET, "/v1/webhook-endpoints", Some(&clinic.key), None, None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 10, "nothing half-made: {listed}");
    // Another provider's count is its own; it cannot remove the clinic's.
    let path = format!("/v1/webhook-endpoints/{}", ids[0]);
    assert_eq!(app.request(Method::DELETE, &path, Some(&other.key), None, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.request(Method::DELETE, &path, Some(&clinic.key), None, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        app.request(Method::DELETE, &path, Some(&clinic.key), None, None).await.0,
        StatusCode::NOT_FOUND,
        "once"
    );
    let (status, _) =
        app.request(Method::POST, "/v1/webhook-endpoints", Some(&clinic.key), Some(&eleventh), None).await;
    assert_eq!(status, StatusCode::CREATED, "room again");
    let (_, listed) = app.request(Method::GET, "/v1/webhook-endpoints", Some(&clinic.key), None, None).await;
    let removed = listed["data"].as_array().unwrap().iter().find(|e| e["id"] == json!(ids[0])).unwrap().clone();
    assert_eq!(
        (removed["status"].as_str(), removed["disabled_reason"].as_str()),
        (Some("disabled"), Some("removed by the provider")),
        "{removed}"
    );
    let deliveries = format!("{path}/deliveries");
    assert_eq!(app.request(Method::GET, &deliveries, Some(&clinic.key), None, None).await.0, StatusCode::OK);
    app.stop().await;
}

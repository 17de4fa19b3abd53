//! Providers' events: the feed by cursor, the live streams (SSE and WebSocket), and webhook
//! endpoints with their deliveries.

use crate::auth::Principal;
use crate::dto::timestamp;
use crate::error::{ApiError, ErrorBody, rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use medpay_actors::EventBatch;
use medpay_actors::outbox::event_json;
use medpay_models::ProviderId;
use medpay_store::{EventRecord, Store, WebhookDelivery, WebhookEndpoint};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc::Receiver;
use utoipa::{IntoParams, ToSchema};

const FEED_PAGE_DEFAULT: i64 = 100;
/// Events read from the store at a time while a stream catches up.
const CATCH_UP_PAGE: i64 = 500;
const SSE_KEEP_ALIVE_SECONDS: u64 = 15;
/// The event stream is the server's to speak: what a subscriber may send (a close, a pong) is small.
pub const EVENTS_WEBSOCKET_MESSAGE_BYTES_MAX: usize = 1024;
/// A ping this often, so that a subscriber gone without a word is noticed.
const EVENTS_WEBSOCKET_PING_SECONDS: u64 = 30;
pub(crate) const URL_LENGTH_MAX: usize = 2_048;
const DELIVERIES_PAGE: i64 = 100;
pub const EVENT_TYPES: [&str; 13] = [
    "payment.requested",
    "payment.approved",
    "payment.review",
    "payment.declined",
    "payment.awaiting_payment",
    "payment.paid",
    "payment.held",
    "payment.released",
    "payment.refunded",
    "payment.partially_refunded",
    "payment.charged_back",
    "payment.cancelled",
    "payment.expired",
];

fn provider_only(principal: Principal) -> Result<ProviderId, ApiError> {
    match principal {
        Principal::Provider(id) => Ok(id),
        _ => Err(ApiError::forbidden("events are read with a provider's API key")),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Events after this cursor (`provider_seq`); 0 for all.
    pub after: Option<i64>,
    /// Page size, 1–500 (default 100).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventFeed {
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<serde_json::Value>,
    /// Pass as `after` for the next page.
    pub next_after: i64,
}

#[utoipa::path(get, path = "/v1/events", tag = "events", security(("bearer" = [])), params(FeedQuery),
    responses((status = 200, body = EventFeed, description = "the provider's events in order, from the cursor"),
               (status = 403, body = ErrorBody)))]
pub async fn feed(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Json<EventFeed>, ApiError> {
    let provider = provider_only(principal)?;
    let Query(query) = query.map_err(rejection)?;
    let after = query.after.unwrap_or(0).max(0);
    let events = state.store.provider_events(provider, after, query.limit.unwrap_or(FEED_PAGE_DEFAULT)).await?;
    let next_after = events.last().map_or(after, |event| event.provider_seq);
    Ok(Json(EventFeed { data: events.iter().map(event_json).collect(), next_after }))
}

/// What a live feed yields.
enum FeedItem {
    Event(EventRecord),
    /// The subscriber fell behind (or the provider's session restarted): resume from the cursor.
    Dropped {
        resume_after: i64,
    },
    Failed,
}

/// How long a gap in the live batches may wait for the missing batch before the store is read.
const GAP_WAIT_MS: u64 = 250;
/// Out-of-order events held while a gap waits.
const REORDER_MAX: usize = 1_024;

struct Feed {
    store: Store,
    provider: ProviderId,
    cursor: i64,
    pending: VecDeque<EventRecord>,
    /// Live events ahead of the cursor, waiting for the ones before them.
    ahead: std::collections::BTreeMap<i64, EventRecord>,
    caught_up: bool,
    receiver: Receiver<EventBatch>,
    stopping: tokio::sync::watch::Receiver<bool>,
    finished: bool,
}

/// Events after `cursor` in order, each once: the store's backlog first, then live batches; a gap
/// in the live batches (they can arrive out of order) is filled from the store.
fn live_feed(
    store: Store,
    provider: ProviderId,
    cursor: i64,
    receiver: Receiver<EventBatch>,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> impl Stream<Item = FeedItem> {
    let feed = Feed {
        store,
        provider,
        cursor,
        pending: VecDeque::new(),
        ahead: std::collections::BTreeMap::new(),
        caught_up: false,
        receiver,
        stopping,
        finished: false,
    };
    futures::stream::unfold(feed, |mut feed| async move {
        loop {
            if feed.finished {
                return None;
            }
            if let Some(event) = feed.pending.pop_front() {
                if event.provider_seq <= feed.cursor {
                    continue;
                }
                feed.cursor = event.provider_seq;
                return Some((FeedItem::Event(event), feed));
            }
            if !feed.caught_up {
                match feed.store.provider_events(feed.provider, feed.cursor, CATCH_UP_PAGE).await {
                    Ok(events) if events.is_empty() => feed.caught_up = true,
                    Ok(events) => feed.pending.extend(events),
                    Err(error) => {
                        tracing::warn!(%error, "live feed could not read the store");
                        feed.finished = true;
                        return Some((FeedItem::Failed, feed));
                    }
                }
                continue;
            }
            if *feed.stopping.borrow() {
                return None;
            }
            // Batches commit in order but can arrive out of order: hold what is ahead of the
            // cursor until the gap fills, or read the store when it does not fill soon.
            let gap = !feed.ahead.is_empty();
            let next = tokio::select! {
                batch = feed.receiver.recv() => Some(batch),
                _ = feed.stopping.changed() => return None,
                _ = tokio::time::sleep(Duration::from_millis(GAP_WAIT_MS)), if gap => None,
            };
            match next {
                Some(Some(batch)) => {
                    for event in batch.iter().filter(|event| event.provider_seq > feed.cursor) {
                        feed.ahead.insert(event.provider_seq, event.clone());
                    }
                    let mut expected = feed.pending.back().map_or(feed.cursor, |event| event.provider_seq) + 1;
                    while let Some(event) = feed.ahead.remove(&expected) {
                        feed.pending.push_back(event);
                        expected += 1;
                    }
                    if feed.ahead.len() > REORDER_MAX {
                        feed.ahead.clear();
                        feed.caught_up = false;
                    }
                }
                Some(None) => {
                    feed.finished = true;
                    let resume_after = feed.cursor;
                    return Some((FeedItem::Dropped { resume_after }, feed));
                }
                None => {
                    feed.ahead.clear();
                    feed.caught_up = false;
                }
            }
        }
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this cursor (`provider_seq`); without it (and without `Last-Event-ID`) only
    /// new events are sent.
    pub after: Option<i64>,
}

async fn open_feed(
    state: &AppState,
    provider: ProviderId,
    after: Option<i64>,
) -> Result<impl Stream<Item = FeedItem> + use<>, ApiError> {
    // Subscribe before reading the cursor, so that nothing committed in between is missed.
    let receiver = state.runtime.subscribe(provider).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            "too many live subscribers for this provider",
        )
    })?;
    let cursor = match after {
        Some(after) => after.max(0),
        None => state.store.provider_last_event_seq(provider).await?,
    };
    Ok(live_feed(state.store.clone(), provider, cursor, receiver, state.stopping.clone()))
}

#[utoipa::path(get, path = "/v1/events/stream", tag = "events", security(("bearer" = [])), params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event (its `id:` line)")),
    responses((status = 200, content_type = "text/event-stream", description = "Server-Sent Events: `id` is the cursor, `event` the type; a final `dropped` event tells a slow subscriber where to resume"),
               (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let provider = provider_only(principal)?;
    let Query(query) = query.map_err(rejection)?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<i64>().ok());
    let feed = open_feed(&state, provider, last_event_id.or(query.after)).await?;
    let events = futures::StreamExt::map(feed, |item| {
        Ok(match item {
            FeedItem::Event(event) => Event::default()
                .id(event.provider_seq.to_string())
                .event(event.kind.clone())
                .data(event_json(&event).to_string()),
            FeedItem::Dropped { resume_after } => Event::default()
                .event("dropped")
                .data(serde_json::json!({"reason": "slow_subscriber", "resume_after": resume_after}).to_string()),
            FeedItem::Failed => Event::default().event("error").data("{\"reason\":\"internal\"}"),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(SSE_KEEP_ALIVE_SECONDS))))
}

#[utoipa::path(get, path = "/v1/events/ws", tag = "events", security(("bearer" = [])), params(StreamQuery),
    responses((status = 101, description = "WebSocket: one text message per event (JSON); closed with a reason when the subscriber falls behind"),
               (status = 403, body = ErrorBody)))]
pub async fn websocket(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<StreamQuery>, QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let provider = provider_only(principal)?;
    let Query(query) = query.map_err(rejection)?;
    let feed = open_feed(&state, provider, query.after).await?;
    Ok(upgrade
        .max_message_size(EVENTS_WEBSOCKET_MESSAGE_BYTES_MAX)
        .max_frame_size(EVENTS_WEBSOCKET_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| forward(socket, feed))
        .into_response())
}

/// Closes a WebSocket whose peer sent a frame over the limit or a broken one (1009), as far as
/// the socket still takes it.
pub(crate) async fn close_on_bad_frame(socket: &mut WebSocket) {
    let close = CloseFrame { code: 1009, reason: "message too big or malformed".into() };
    let _ = socket.send(Message::Close(Some(close))).await;
}

async fn forward(mut socket: WebSocket, feed: impl Stream<Item = FeedItem>) {
    let mut feed = std::pin::pin!(feed);
    let mut ping = tokio::time::interval(Duration::from_secs(EVENTS_WEBSOCKET_PING_SECONDS));
    ping.reset();
    loop {
        let item = tokio::select! {
            item = futures::StreamExt::next(&mut feed) => item,
            // What the subscriber says: a close ends the stream; an oversized or broken frame too.
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None => return,
                Some(Err(_)) => return close_on_bad_frame(&mut socket).await,
                Some(Ok(_)) => continue,
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Some(item) = item else { return };
        match item {
            FeedItem::Event(event) => {
                if socket.send(Message::Text(event_json(&event).to_string().into())).await.is_err() {
                    return;
                }
            }
            FeedItem::Dropped { resume_after } => {
                let reason = format!("slow subscriber; resume after {resume_after}");
                let _ = socket.send(Message::Close(Some(CloseFrame { code: 4000, reason: reason.into() }))).await;
                return;
            }
            FeedItem::Failed => {
                let _ =
                    socket.send(Message::Close(Some(CloseFrame { code: 1011, reason: "internal error".into() }))).await;
                return;
            }
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    #[schema(schema_with = crate::schema::webhook_url)]
    pub url: String,
    /// Event types to send; empty or absent for all.
    #[serde(default)]
    pub event_types: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i64,
    pub created_at: String,
    /// Shown once, at creation: verify `MedPay-Signature` with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl EndpointView {
    fn new(endpoint: &WebhookEndpoint, secret: Option<String>) -> EndpointView {
        EndpointView {
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            event_types: endpoint.event_types.clone(),
            status: if endpoint.enabled { "enabled" } else { "disabled" }.to_owned(),
            disabled_reason: endpoint.disabled_reason.clone(),
            consecutive_failures: endpoint.consecutive_failures,
            created_at: timestamp(endpoint.created_at_ms),
            secret,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    pub data: Vec<EndpointView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub provider_seq: i64,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

impl DeliveryView {
    fn new(delivery: &WebhookDelivery) -> DeliveryView {
        DeliveryView {
            id: delivery.id.clone(),
            event_id: format!("{}.{}", delivery.payment_id, delivery.event_seq),
            event_type: delivery.event_type.clone(),
            provider_seq: delivery.provider_seq,
            status: delivery.status.clone(),
            attempts: delivery.attempts,
            next_attempt_at: (delivery.status == "pending").then(|| timestamp(delivery.next_attempt_at_ms)),
            last_status_code: delivery.last_status_code,
            last_error: delivery.last_error.clone(),
            created_at: timestamp(delivery.created_at_ms),
            delivered_at: delivery.delivered_at_ms.map(timestamp),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<DeliveryView>,
}

#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "events", security(("bearer" = [])), request_body = CreateEndpoint,
    responses((status = 201, body = EndpointView, description = "events from now on are delivered here; the secret is shown once"),
               (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
               (status = 409, body = ErrorBody, description = "`too_many_endpoints`: ten enabled endpoints already")))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<CreateEndpoint>, JsonRejection>,
) -> Result<(StatusCode, Json<EndpointView>), ApiError> {
    let provider = provider_only(principal)?;
    let Json(body) = body.map_err(rejection)?;
    let url = body.url.trim();
    let well_formed = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= URL_LENGTH_MAX
        && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if !well_formed {
        return Err(ApiError::bad_request(
            "invalid_url",
            format!("url must be an https URL of at most {URL_LENGTH_MAX} characters"),
        ));
    }
    // https to a public address (the address is checked again at every delivery, after DNS).
    let allow_loopback = state.config.runtime.webhooks.allow_loopback;
    if let Err(why) = medpay_actors::netguard::check_url(url, allow_loopback) {
        return Err(ApiError::bad_request("url_not_allowed", format!("url is not allowed: {why}")));
    }
    if let Some(unknown) = body.event_types.iter().find(|kind| !EVENT_TYPES.contains(&kind.as_str())) {
        return Err(ApiError::bad_request(
            "invalid_event_type",
            format!("unknown event type {unknown:?}; known: {}", EVENT_TYPES.join(", ")),
        ));
    }
    let secret = crate::auth::new_secret("whsec_");
    let endpoint = WebhookEndpoint {
        id: uuid::Uuid::now_v7().to_string(),
        provider_id: provider,
        url: url.to_owned(),
        event_types: body.event_types,
        secret: secret.clone(),
        enabled: true,
        disabled_reason: None,
        consecutive_failures: 0,
        cursor: 0,
        created_at_ms: medpay_store::now_ms(),
    };
    let endpoint = match state.store.insert_webhook_endpoint(&endpoint).await {
        Ok(endpoint) => endpoint,
        Err(medpay_store::StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(
                "too_many_endpoints",
                format!(
                    "a provider has at most {} enabled webhook endpoints; remove one first",
                    medpay_store::WEBHOOK_ENDPOINTS_PER_PROVIDER_MAX
                ),
            ));
        }
        Err(error) => return Err(error.into()),
    };
    tracing::info!(provider_id = %provider, endpoint_id = %endpoint.id, "webhook endpoint added");
    Ok((StatusCode::CREATED, Json(EndpointView::new(&endpoint, Some(secret)))))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "events", security(("bearer" = [])),
    responses((status = 200, body = EndpointList), (status = 403, body = ErrorBody)))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<EndpointList>, ApiError> {
    let provider = provider_only(principal)?;
    let endpoints = state.store.webhook_endpoints(Some(provider)).await?;
    Ok(Json(EndpointList { data: endpoints.iter().map(|endpoint| EndpointView::new(endpoint, None)).collect() }))
}

#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "endpoint id")),
    responses((status = 204, description = "removed: nothing more is sent to it; its deliveries stay listed"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let provider = provider_only(principal)?;
    let Path(id) = id.map_err(rejection)?;
    let endpoint = own_endpoint(&state, provider, &id).await?;
    if !state.store.remove_webhook_endpoint(&endpoint.id).await? {
        return Err(ApiError::not_found("endpoint_not_found", "no such webhook endpoint"));
    }
    tracing::info!(provider_id = %provider, endpoint_id = %endpoint.id, "webhook endpoint removed");
    Ok(StatusCode::NO_CONTENT)
}

async fn own_endpoint(state: &AppState, provider: ProviderId, id: &str) -> Result<WebhookEndpoint, ApiError> {
    state
        .store
        .webhook_endpoint(id)
        .await?
        .filter(|endpoint| endpoint.provider_id == provider)
        .ok_or_else(|| ApiError::not_found("endpoint_not_found", "no such webhook endpoint"))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/deliveries", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "endpoint id")),
    responses((status = 200, body = DeliveryList), (status = 404, body = ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    let provider = provider_only(principal)?;
    let Path(id) = id.map_err(rejection)?;
    let endpoint = own_endpoint(&state, provider, &id).await?;
    let deliveries = state.store.webhook_deliveries(&endpoint.id, DELIVERIES_PAGE).await?;
    Ok(Json(DeliveryList { data: deliveries.iter().map(DeliveryView::new).collect() }))
}

#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/resend", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "endpoint id"), ("delivery_id" = String, Path)),
    responses((status = 202, description = "queued to be sent again now"), (status = 404, body = ErrorBody)))]
pub async fn resend(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let provider = provider_only(principal)?;
    let Path((id, delivery)) = path.map_err(rejection)?;
    let endpoint = own_endpoint(&state, provider, &id).await?;
    if !state.store.resend_delivery(&endpoint.id, &delivery, medpay_store::now_ms()).await? {
        return Err(ApiError::not_found("delivery_not_found", "no such delivery"));
    }
    state.runtime.wake_outbox();
    Ok(StatusCode::ACCEPTED)
}

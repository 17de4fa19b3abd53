//! The patients' support chat at the edge: conversations, messages, a WebSocket, and what the
//! people behind the bot see (conversations handed to them, review cases opened by disputes).

use crate::auth::{PatientCredential, Principal};
use crate::dto::{PaymentSummary, timestamp};
use crate::error::{ApiError, ErrorBody, rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use medpay_actors::chat::{ChatError, ChatReply};
use medpay_chatbot::dialogue::GREETING;
use medpay_models::ConversationId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Chat messages per patient per minute.
pub const CHAT_MESSAGES_PER_MINUTE: u64 = 60;
/// Conversations per patient per minute.
pub const CONVERSATIONS_PER_MINUTE: u64 = 10;
/// The close code of a WebSocket closed for idleness (4000–4999 are the application's).
pub const WEBSOCKET_IDLE_CLOSE: u16 = 4008;
/// Largest chat WebSocket message (and frame): a message's 1,000 characters in UTF-8 and then
/// some; more closes the socket (1009).
pub const CHAT_WEBSOCKET_MESSAGE_BYTES_MAX: usize = 4 * 1024;

impl From<ChatError> for ApiError {
    fn from(error: ChatError) -> Self {
        match error {
            ChatError::NotFound => ApiError::not_found("conversation_not_found", "no such conversation"),
            ChatError::InvalidMessage => ApiError::bad_request("invalid_message", error.to_string()),
            ChatError::Core(core) => core.into(),
        }
    }
}

fn patient_only(principal: Principal) -> Result<PatientCredential, ApiError> {
    match principal {
        Principal::Patient(patient) => Ok(patient),
        _ => Err(ApiError::forbidden("the chat is for patients, with their own token")),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationCreated {
    pub id: String,
    /// `bot`, or `handed_off` once a person has taken over.
    pub status: String,
    /// The bot's greeting.
    pub greeting: String,
}

#[utoipa::path(post, path = "/v1/chat/conversations", tag = "chat", security(("bearer" = [])),
    responses((status = 201, body = ConversationCreated), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn create_conversation(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<(StatusCode, Json<ConversationCreated>), ApiError> {
    let patient = patient_only(principal)?;
    state.rate_limit(&format!("patient:{}:conversations", patient.patient), CONVERSATIONS_PER_MINUTE).await?;
    let id = state.runtime.start_conversation(patient).await?;
    Ok((
        StatusCode::CREATED,
        Json(ConversationCreated { id: id.to_string(), status: "bot".to_owned(), greeting: GREETING.to_owned() }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SayInput {
    #[schema(schema_with = crate::schema::chat_text)]
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplyView {
    /// The bot's answer in Portuguese; null once a person has taken over (the bot is silent).
    pub reply: Option<String>,
    /// What the bot understood (`unsure` when it asked to rephrase).
    pub intent: Option<String>,
    pub confidence: Option<f32>,
    pub handed_off: bool,
}

impl From<ChatReply> for ReplyView {
    fn from(reply: ChatReply) -> Self {
        ReplyView {
            reply: reply.reply,
            intent: reply.intent,
            confidence: reply.confidence,
            handed_off: reply.handed_off,
        }
    }
}

fn conversation_id(id: Result<Path<String>, PathRejection>) -> Result<ConversationId, ApiError> {
    let Path(id) = id.map_err(rejection)?;
    id.parse().map_err(|_| ApiError::not_found("conversation_not_found", "no such conversation"))
}

#[utoipa::path(post, path = "/v1/chat/conversations/{id}/messages", tag = "chat", request_body = SayInput,
    security(("bearer" = [])), params(("id" = String, Path, description = "conversation id")),
    responses((status = 200, body = ReplyView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn say(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<SayInput>, JsonRejection>,
) -> Result<Json<ReplyView>, ApiError> {
    let patient = patient_only(principal)?;
    let conversation = conversation_id(id)?;
    let Json(body) = body.map_err(rejection)?;
    state.rate_limit(&format!("patient:{}:chat", patient.patient), CHAT_MESSAGES_PER_MINUTE).await?;
    Ok(Json(state.runtime.chat(conversation, patient, body.text).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub seq: i64,
    /// `patient`, `bot` or `agent`.
    pub role: String,
    pub text: String,
    pub intent: Option<String>,
    pub at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationView {
    pub id: String,
    pub patient_id: String,
    pub status: String,
    pub handoff_reason: Option<String>,
    pub messages: Vec<MessageView>,
    pub created_at: String,
}

pub(crate) async fn conversation_view(
    state: &AppState,
    record: medpay_store::ConversationRecord,
) -> Result<ConversationView, ApiError> {
    let messages = state.store.transcript(&record.id).await?;
    Ok(ConversationView {
        messages: messages
            .into_iter()
            .map(|m| MessageView {
                seq: m.seq,
                role: m.role,
                text: m.text,
                intent: m.intent,
                at: timestamp(m.created_at_ms),
            })
            .collect(),
        id: record.id,
        patient_id: record.patient_id.to_string(),
        status: record.status,
        handoff_reason: record.handoff_reason,
        created_at: timestamp(record.created_at_ms),
    })
}

#[utoipa::path(get, path = "/v1/chat/conversations/{id}", tag = "chat", security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id")),
    responses((status = 200, body = ConversationView, description = "the transcript: to its patient, and to analysts and the admin"),
        (status = 404, body = ErrorBody)))]
pub async fn get_conversation(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ConversationView>, ApiError> {
    let not_found = || ApiError::not_found("conversation_not_found", "no such conversation");
    let id = conversation_id(id)?;
    let record = state.store.conversation(&id.to_string()).await?.ok_or_else(not_found)?;
    let visible = match principal {
        Principal::Admin | Principal::Analyst | Principal::Person(..) => true,
        // A credential a provider was handed reads only the conversations started with one of its
        // scope (what the bot told in the others concerns other providers' payments).
        Principal::Patient(own) => {
            own.patient == record.patient_id && own.provider.is_none_or(|scope| record.scope == Some(scope))
        }
        Principal::Provider(_) => false,
    };
    if !visible {
        return Err(not_found());
    }
    Ok(Json(conversation_view(&state, record).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Handoff {
    pub conversation: ConversationView,
    /// The patient's latest payments.
    pub payments: Vec<PaymentSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HandoffList {
    pub data: Vec<Handoff>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/chat/handoffs", tag = "chat", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = HandoffList, description = "conversations handed to a person, with the transcript and the patient's payments"),
        (status = 403, body = ErrorBody)))]
pub async fn handoffs(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<HandoffList>, ApiError> {
    principal.require_analyst()?;
    let Query(query) = query.map_err(rejection)?;
    let mut data = Vec::new();
    for record in state.store.handed_off_conversations(query.limit.unwrap_or(50)).await? {
        let filter =
            medpay_store::PaymentFilter { patient_id: Some(record.patient_id), limit: 20, ..Default::default() };
        let payments = state.store.list_payments(&filter).await?;
        data.push(Handoff {
            conversation: conversation_view(&state, record).await?,
            payments: payments.iter().map(PaymentSummary::new).collect(),
        });
    }
    Ok(Json(HandoffList { data }))
}

#[utoipa::path(post, path = "/v1/chat/conversations/{id}/agent-messages", tag = "chat", request_body = SayInput,
    security(("bearer" = [])), params(("id" = String, Path, description = "conversation id")),
    responses((status = 201, body = MessageView, description = "the person's answer, in the patient's transcript"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`not_handed_off`: the bot still has this conversation")))]
pub async fn agent_say(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<SayInput>, JsonRejection>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    principal.require_analyst()?;
    let id = conversation_id(id)?;
    let Json(body) = body.map_err(rejection)?;
    let text = body.text.trim();
    if text.is_empty() || text.chars().count() > medpay_actors::chat::MESSAGE_CHARS_MAX {
        return Err(ApiError::bad_request("invalid_message", "a message has 1 to 1000 characters"));
    }
    let record = state
        .store
        .conversation(&id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("conversation_not_found", "no such conversation"))?;
    if record.status != "handed_off" {
        return Err(ApiError::conflict("not_handed_off", "the bot still answers this conversation"));
    }
    let now = medpay_store::now_ms();
    let turn = medpay_store::ChatTurn {
        conversation_id: record.id.clone(),
        messages: vec![medpay_store::ChatMessage {
            seq: 0,
            role: "agent".to_owned(),
            text: text.to_owned(),
            intent: None,
            confidence_bps: None,
            created_at_ms: now,
        }],
        slots: None,
        handoff_reason: None,
        now_ms: now,
    };
    let seq = state.store.record_chat_turn(&turn).await?;
    Ok((
        StatusCode::CREATED,
        Json(MessageView { seq, role: "agent".to_owned(), text: text.to_owned(), intent: None, at: timestamp(now) }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewCaseView {
    pub id: String,
    pub reason: String,
    pub payment: PaymentSummary,
    /// The chat in which the patient disputed the payment.
    pub conversation: Option<ConversationView>,
    /// What decided the payment: its score, model, reasons and the features scored.
    pub decision: Option<CaseDecision>,
    pub created_at: String,
    /// Who holds the case now (a claim lasts 30 minutes from the last claim); none when free.
    pub claim: Option<CaseClaimView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CaseClaimView {
    /// `person:…`, or `analyst` / `admin` for the shared tokens.
    pub by: String,
    /// The person's name, when a person holds it.
    pub name: Option<String>,
    pub since: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CaseDecision {
    pub outcome: String,
    pub score: u16,
    pub model_version: String,
    /// The reasons, in the analyst's words.
    pub reasons: Vec<String>,
    pub rules_hit: Vec<String>,
    /// The features the model scored (name → value).
    #[schema(value_type = Object)]
    pub features: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewCaseList {
    pub data: Vec<ReviewCaseView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    /// Only cases of this provider's payments.
    pub provider_id: Option<String>,
    /// Only cases of this reason: `decision_review`, `patient_disputed`, `unexpected_money`.
    pub reason: Option<String>,
    /// Only cases open for at least this many minutes.
    pub older_than_minutes: Option<i64>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/reviews", tag = "risk", security(("bearer" = [])), params(ReviewQuery),
    responses((status = 200, body = ReviewCaseList, description = "open review cases, oldest first, with the transcript that opened them"),
        (status = 403, body = ErrorBody)))]
pub async fn reviews(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ReviewQuery>, QueryRejection>,
) -> Result<Json<ReviewCaseList>, ApiError> {
    principal.require_analyst()?;
    let Query(query) = query.map_err(rejection)?;
    let provider = match query.provider_id.as_deref() {
        Some(raw) => Some(
            raw.parse::<medpay_models::ProviderId>()
                .map_err(|_| ApiError::bad_request("invalid_provider_id", "provider_id is a provider's id (a UUID)"))?,
        ),
        None => None,
    };
    if let Some(reason) = query.reason.as_deref()
        && !["decision_review", "patient_disputed", "unexpected_money"].contains(&reason)
    {
        return Err(ApiError::bad_request(
            "invalid_reason",
            "reason is decision_review, patient_disputed or unexpected_money",
        ));
    }
    let before = match query.older_than_minutes {
        Some(minutes) if !(0..=525_600).contains(&minutes) => {
            return Err(ApiError::bad_request("invalid_age", "older_than_minutes is 0 to 525600 (a year)"));
        }
        Some(minutes) => Some(medpay_store::now_ms() - minutes * 60_000),
        None => None,
    };
    let mut data = Vec::new();
    let now = medpay_store::now_ms();
    let cases =
        state.store.open_review_cases(provider, query.reason.as_deref(), before, query.limit.unwrap_or(50)).await?;
    for case in cases {
        let Some((payment, decision, _)) = state.store.payment_view(case.payment_id).await? else { continue };
        let decision = decision.map(|decision| CaseDecision {
            outcome: decision.outcome.as_str().to_owned(),
            score: decision.score,
            model_version: decision.model_version,
            reasons: decision.reasons.into_iter().map(|reason| reason.message).collect(),
            rules_hit: decision.rules_hit,
            features: decision.features,
        });
        let conversation = match &case.conversation_id {
            Some(id) => match state.store.conversation(id).await? {
                Some(record) => Some(conversation_view(&state, record).await?),
                None => None,
            },
            None => None,
        };
        data.push(ReviewCaseView {
            id: case.id,
            reason: case.reason,
            payment: PaymentSummary::new(&payment),
            conversation,
            decision,
            created_at: timestamp(case.created_at_ms),
            claim: match (case.claimed_by, case.claimed_at_ms) {
                (Some(by), Some(at)) if crate::people::claim_holds(at, now) => {
                    Some(CaseClaimView { by, name: case.claimed_by_name, since: timestamp(at) })
                }
                _ => None,
            },
        });
    }
    Ok(Json(ReviewCaseList { data }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseReview {
    #[schema(schema_with = crate::schema::review_outcome)]
    pub outcome: String,
    #[schema(schema_with = crate::schema::note)]
    pub note: String,
}

#[utoipa::path(post, path = "/v1/reviews/{id}", tag = "risk", request_body = CloseReview, security(("bearer" = [])),
    params(("id" = String, Path, description = "review case id")),
    responses((status = 200, body = crate::dto::PaymentView, description = "the payment after the case was closed"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`review_case_closed`")))]
pub async fn close_review(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<CloseReview>, JsonRejection>,
) -> Result<Json<crate::dto::PaymentView>, ApiError> {
    principal.require_analyst()?;
    let Path(id) = id.map_err(rejection)?;
    let Json(body) = body.map_err(rejection)?;
    let upheld = match body.outcome.as_str() {
        "upheld" | "decline" => true,
        "rejected" | "approve" => false,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_outcome",
                "outcome is `upheld` or `rejected` (`decline` or `approve` for a payment in review)",
            ));
        }
    };
    let note = body.note.trim();
    if note.is_empty() || note.chars().count() > 500 {
        return Err(ApiError::bad_request("invalid_note", "note needs 1 to 500 characters"));
    }
    let case = state
        .store
        .review_case(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("review_case_not_found", "no such review case"))?;
    if case.status != "open" {
        return Err(ApiError::conflict("review_case_closed", "this review case is closed already"));
    }
    crate::people::require_claim_or_free(&state, principal, &case.id).await?;
    let after = serde_json::json!({"outcome": body.outcome, "note": note, "payment_id": case.payment_id.to_string()});
    let audit =
        crate::people::audit_entry(principal, "review.decide", &format!("review_case:{}", case.id), None, Some(after));
    state.runtime.close_review(case.payment_id, case.id.clone(), upheld, note.to_owned(), audit).await?;
    crate::payments::payment_json(&state, case.payment_id).await
}

#[utoipa::path(get, path = "/v1/chat/ws", tag = "chat", security(("bearer" = [])),
    responses((status = 101, description = "WebSocket: the first message names the new conversation and greets; then each text message from the patient gets one JSON reply (`ReplyView`)"),
        (status = 403, body = ErrorBody)))]
pub async fn websocket(
    State(state): State<AppState>,
    principal: Principal,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let patient = patient_only(principal)?;
    state.rate_limit(&format!("patient:{}:conversations", patient.patient), CONVERSATIONS_PER_MINUTE).await?;
    let conversation = state.runtime.start_conversation(patient).await?;
    Ok(upgrade
        .protocols([crate::auth::WEBSOCKET_BEARER_PROTOCOL])
        .max_message_size(CHAT_WEBSOCKET_MESSAGE_BYTES_MAX)
        .max_frame_size(CHAT_WEBSOCKET_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| converse(socket, state, patient, conversation))
        .into_response())
}

/// How often an open chat that a person has taken over looks for their answers.
const AGENT_POLL_MS: u64 = 1_000;

async fn converse(mut socket: WebSocket, state: AppState, patient: PatientCredential, conversation: ConversationId) {
    let hello =
        serde_json::json!({"conversation_id": conversation.to_string(), "reply": GREETING, "handed_off": false});
    if socket.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    let mut stopping = state.stopping.clone();
    let idle = std::time::Duration::from_millis(state.config.limits.websocket_idle_ms);
    // Once a person has taken over, what they write reaches the open chat as it is stored (read
    // from the store, so it arrives whichever node the person wrote through).
    let mut handed_off = false;
    let mut agent_seen = 0_i64;
    let mut agent_poll = tokio::time::interval(std::time::Duration::from_millis(AGENT_POLL_MS));
    let mut idle_since = tokio::time::Instant::now();
    loop {
        let incoming = tokio::select! {
            incoming = socket.recv() => incoming,
            _ = stopping.changed() => return,
            _ = agent_poll.tick(), if handed_off => {
                match state.store.agent_messages_after(&conversation.to_string(), agent_seen).await {
                    Ok(messages) => {
                        for message in messages {
                            agent_seen = agent_seen.max(message.seq);
                            let said = serde_json::json!({
                                "agent": {"seq": message.seq, "text": message.text, "at": timestamp(message.created_at_ms)},
                                "handed_off": true,
                            });
                            if socket.send(Message::Text(said.to_string().into())).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%conversation, %error, "could not read the agent's messages"),
                }
                continue;
            }
            _ = tokio::time::sleep_until(idle_since + idle) => {
                tracing::debug!(%conversation, "chat WebSocket idle; closing it");
                let close = CloseFrame { code: WEBSOCKET_IDLE_CLOSE, reason: "idle".into() };
                let _ = socket.send(Message::Close(Some(close))).await;
                return;
            }
        };
        let text = match incoming {
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Err(error)) => {
                // Most often a message over the limit.
                tracing::debug!(%conversation, %error, "chat WebSocket closed on an error");
                return crate::events::close_on_bad_frame(&mut socket).await;
            }
            Some(Ok(Message::Close(_))) | None => return,
            Some(Ok(_)) => continue,
        };
        idle_since = tokio::time::Instant::now();
        let answer =
            match state.rate_limit(&format!("patient:{}:chat", patient.patient), CHAT_MESSAGES_PER_MINUTE).await {
                Err(error) => serde_json::json!({"error": {"code": error.code, "message": error.message}}),
                Ok(()) => match state.runtime.chat(conversation, patient, text).await {
                    Ok(reply) => {
                        handed_off |= reply.handed_off;
                        serde_json::to_value(ReplyView::from(reply)).unwrap_or_default()
                    }
                    Err(error) => {
                        let error = ApiError::from(error);
                        serde_json::json!({"error": {"code": error.code, "message": error.message}})
                    }
                },
            };
        if socket.send(Message::Text(answer.to_string().into())).await.is_err() {
            return;
        }
    }
}

//! One `ChatActor` per conversation: it understands each message (the intent model), asks the
//! patient's own session for the patient's payments (never anyone else's), answers through the
//! dialogue policy, sends a disputed payment to review through the payment's own actor, hands the
//! conversation to a person when asked or unsure, and stays silent after that.

use crate::patient::PatientMsg;
use crate::registry::{Entity, ask};
use crate::{Context, CoreError, TransactionMsg};
use medpay_chatbot::dialogue::{self, Action, PaymentFacts, Slots};
use medpay_chatbot::{IntentModel, tokenizer};
use medpay_models::{ConversationId, PaymentId};
use medpay_store::{ChatMessage, ChatTurn, ConversationRecord, PatientCredential};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Longest message accepted, in characters.
pub const MESSAGE_CHARS_MAX: usize = 1_000;

/// The tokenizer and the intent model, loaded once and shared by every conversation.
pub struct ChatBrain {
    pub tokenizer: medpay_chatbot::Tokenizer,
    pub model: IntentModel,
}

impl ChatBrain {
    /// The committed tokenizer and model.
    pub fn committed() -> Result<ChatBrain, CoreError> {
        let tokenizer = tokenizer::committed().map_err(|e| CoreError::Unavailable(e.to_string()))?;
        let model = IntentModel::committed().map_err(|e| CoreError::Unavailable(e.to_string()))?;
        Ok(ChatBrain { tokenizer, model })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("no such conversation")]
    NotFound,
    #[error("a message has 1 to {MESSAGE_CHARS_MAX} characters")]
    InvalidMessage,
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// The bot's answer to one message.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatReply {
    /// None once a person has taken over: the bot does not answer.
    pub reply: Option<String>,
    pub intent: Option<String>,
    pub confidence: Option<f32>,
    pub handed_off: bool,
}

pub enum ChatMsg {
    /// `by`: the credential the patient speaks with; its scope must be the conversation's.
    Say {
        by: PatientCredential,
        text: String,
        reply: RpcReplyPort<Result<ChatReply, ChatError>>,
    },
    IdleCheck,
}

#[derive(Default)]
pub struct ChatActor;

pub struct ChatArgs {
    id: ConversationId,
    context: Arc<Context>,
}

pub struct ChatState {
    id: ConversationId,
    context: Arc<Context>,
    conversation: Option<ConversationRecord>,
    slots: Slots,
    idle: Duration,
    last_activity: Instant,
}

impl Entity for ChatActor {
    type Id = ConversationId;
    type Context = Context;
    const KIND: &'static str = "chat";
    /// Conversations open at once.
    const LIVE_MAX: usize = 20_000;
    fn arguments(id: ConversationId, context: Arc<Context>, _fresh: bool) -> ChatArgs {
        ChatArgs { id, context }
    }
}

impl Actor for ChatActor {
    type Msg = ChatMsg;
    type State = ChatState;
    type Arguments = ChatArgs;

    async fn pre_start(&self, myself: ActorRef<ChatMsg>, args: ChatArgs) -> Result<ChatState, ActorProcessingErr> {
        let conversation = args.context.store.conversation(&args.id.to_string()).await?;
        let slots = conversation
            .as_ref()
            .and_then(|c| serde_json::from_value::<Slots>(c.slots.clone()).ok())
            .unwrap_or_default();
        let idle = Duration::from_millis(args.context.config.idle_ms);
        myself.send_after(idle, || ChatMsg::IdleCheck);
        Ok(ChatState { id: args.id, context: args.context, conversation, slots, idle, last_activity: Instant::now() })
    }

    async fn handle(
        &self,
        myself: ActorRef<ChatMsg>,
        message: ChatMsg,
        state: &mut ChatState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ChatMsg::Say { by, text, reply } => {
                state.last_activity = Instant::now();
                let _ = reply.send(say(state, by, text).await);
            }
            ChatMsg::IdleCheck => {
                crate::passivate_or_wait(&myself, state.last_activity, state.idle, || ChatMsg::IdleCheck)
            }
        }
        Ok(())
    }
}

fn message(role: &str, text: &str, intent: Option<String>, confidence: Option<f32>) -> ChatMessage {
    ChatMessage {
        seq: 0,
        role: role.to_owned(),
        text: text.to_owned(),
        intent,
        confidence_bps: confidence.map(|p| (f64::from(p) * 10_000.0).round() as i64),
        created_at_ms: 0,
    }
}

async fn say(state: &mut ChatState, by: PatientCredential, text: String) -> Result<ChatReply, ChatError> {
    let patient = by.patient;
    let context = state.context.clone();
    let text = text.trim().to_owned();
    if text.is_empty() || text.chars().count() > MESSAGE_CHARS_MAX {
        return Err(ChatError::InvalidMessage);
    }
    // Only the conversation's own patient may speak in it; a credential a provider was handed, only
    // in a conversation of its scope. The bot tells of the conversation's scope's payments.
    let Some(conversation) = state
        .conversation
        .clone()
        .filter(|c| c.patient_id == patient && by.provider.is_none_or(|scope| c.scope == Some(scope)))
    else {
        return Err(ChatError::NotFound);
    };
    let now = medpay_store::now_ms();
    if conversation.status == "handed_off" {
        let turn = ChatTurn {
            conversation_id: conversation.id.clone(),
            messages: vec![message("patient", &text, None, None)],
            slots: serde_json::to_value(&state.slots).ok(),
            handoff_reason: None,
            now_ms: now,
        };
        context.store.record_chat_turn(&turn).await.map_err(CoreError::from)?;
        return Ok(ChatReply { reply: None, intent: None, confidence: None, handed_off: true });
    }
    let brain = context.chat.clone().ok_or_else(|| CoreError::Unavailable("the chat model is not loaded".into()))?;
    let prediction = brain.model.predict(&brain.tokenizer, &text).map_err(|e| CoreError::Unavailable(e.to_string()))?;
    let confident = prediction.is_confident(&brain.model);
    let call_ms = context.config.feature_call_timeout_ms * 5;
    let payments: Vec<PaymentFacts> =
        ask(&context.patients, patient, call_ms, |reply| PatientMsg::OwnPayments { scope: conversation.scope, reply })
            .await??;
    let today = chrono::Utc::now().date_naive();
    let turn = dialogue::respond(&prediction, confident, &text, &mut state.slots, &payments, today);
    let mut handoff_reason = None;
    match &turn.action {
        Action::Dispute { payment_id } => {
            let payment: PaymentId = payment_id.parse().map_err(|_| CoreError::Invariant("payment id".into()))?;
            let conversation_id = conversation.id.clone();
            let outcome = ask(&context.payments, payment, call_ms, |reply| TransactionMsg::Dispute {
                conversation_id: conversation_id.clone(),
                reply,
            })
            .await?;
            outcome?;
        }
        Action::Handoff { reason } => handoff_reason = Some(reason.clone()),
        Action::None => {}
    }
    let record = ChatTurn {
        conversation_id: conversation.id.clone(),
        messages: vec![
            message("patient", &text, Some(prediction.intent.clone()), Some(prediction.confidence)),
            message("bot", &turn.reply, Some(turn.intent.clone()), None),
        ],
        slots: serde_json::to_value(&state.slots).ok(),
        handoff_reason: handoff_reason.clone(),
        now_ms: now,
    };
    context.store.record_chat_turn(&record).await.map_err(CoreError::from)?;
    if let (Some(conversation), Some(reason)) = (state.conversation.as_mut(), &handoff_reason) {
        conversation.status = "handed_off".to_owned();
        conversation.handoff_reason = Some(reason.clone());
        tracing::info!(conversation_id = %state.id, %reason, "conversation handed to a person");
    }
    metrics::counter!("medpay_chat_turns_total", "intent" => turn.intent.clone()).increment(1);
    Ok(ChatReply {
        reply: Some(turn.reply),
        intent: Some(turn.intent),
        confidence: Some(prediction.confidence),
        handed_off: handoff_reason.is_some(),
    })
}

impl From<crate::money::MoneyError> for ChatError {
    fn from(error: crate::money::MoneyError) -> Self {
        match error {
            crate::money::MoneyError::Core(core) => ChatError::Core(core),
            crate::money::MoneyError::Refused { message, .. } => ChatError::Core(CoreError::Unavailable(message)),
        }
    }
}

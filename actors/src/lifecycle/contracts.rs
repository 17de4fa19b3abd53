//! Installment contracts: sent for signature, signed (the first charge follows) or refused.

use super::*;

/// Whether the contract intent is still worth performing (else it is [`done`] as it is).
pub fn contract_wanted(book: &Book) -> bool {
    book.contract.is_none() && book.payment.status == PaymentStatus::Approved
}

/// The contract an intent asked for was sent (envelope `envelope_id`).
pub fn contract_sent(book: &Book, intent: &IntentRecord, envelope_id: &str, now_ms: i64, view: &View) -> Movement {
    let data =
        book.event_data(view, &book.payment, None, json!({"contract": {"envelope_id": envelope_id, "status": "sent"}}));
    Movement {
        contract: Some(ContractRecord {
            payment_id: book.payment.id,
            envelope_id: envelope_id.to_owned(),
            status: ContractStatus::Sent,
            created_at_ms: now_ms,
            signed_at_ms: None,
        }),
        events: vec![event("payment.contract_sent", data)],
        intents_done: vec![intent.id.clone()],
        now_ms,
        ..Movement::default()
    }
}

pub(super) fn contract_webhook(book: &Book, webhook: &GatewayWebhook, now_ms: i64, view: &View) -> Applied {
    let Some(contract) = book.contract.clone() else { return Applied::Wait };
    let name: String = serde_json::from_str::<serde_json::Value>(&webhook.body)
        .ok()
        .and_then(|value| value.pointer("/event/name").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let hook = |note: &str, outcome: &'static str| {
        Some((webhook.gateway.clone(), webhook.webhook_id.clone(), outcome, note.to_owned()))
    };
    let sent = contract.status == ContractStatus::Sent;
    let movement = match name.as_str() {
        "auto_close" | "close" if sent => Movement {
            contract: Some(ContractRecord {
                status: ContractStatus::Signed,
                signed_at_ms: Some(now_ms),
                ..contract.clone()
            }),
            // Signed: the first charge is asked for in the same commit.
            new_intents: vec![IntentRecord::charge(book.payment.id, 1, now_ms)],
            webhook: hook("", "applied"),
            events: vec![event(
                "payment.contract_signed",
                book.event_data(
                    view,
                    &book.payment,
                    None,
                    json!({"contract": {"envelope_id": contract.envelope_id, "status": "signed"}}),
                ),
            )],
            now_ms,
            ..Movement::default()
        },
        "refusal" if sent && book.payment.status == PaymentStatus::Approved => {
            let shown = book.with_status(PaymentStatus::Cancelled);
            Movement {
                new_status: Some(PaymentStatus::Cancelled),
                contract: Some(ContractRecord { status: ContractStatus::Refused, ..contract.clone() }),
                webhook: hook("", "applied"),
                events: vec![event(
                    event_type(PaymentStatus::Cancelled),
                    book.event_data(view, &shown, None, json!({"reason": "contract_refused"})),
                )],
                now_ms,
                ..Movement::default()
            }
        }
        other => Movement {
            webhook: hook(&format!("event {other} changes nothing"), "ignored"),
            now_ms,
            ..Movement::default()
        },
    };
    Applied::Step(Box::new(movement))
}

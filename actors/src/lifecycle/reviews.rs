//! The procedure (release or cancel), disputes, and analysts closing review cases.

use super::*;

/// The provider says the procedure happened (the escrow is released: status, posting and the
/// release intent in one commit, Celcoin told after it) or was cancelled (everything refunded).
pub fn procedure(book: &Book, performed: bool, now_ms: i64, view: &View) -> Result<Movement, Fault> {
    let payment = &book.payment;
    // Held in escrow, or partly refunded with the rest still held.
    let held_now = payment.status == PaymentStatus::HeldInEscrow
        || (payment.status == PaymentStatus::PartiallyRefunded && book.escrow_held_centavos() > 0);
    if !held_now {
        return Err(refused(
            "payment_not_held",
            format!("only a payment held in escrow awaits its procedure; this one is {}", payment.status),
        ));
    }
    if !performed {
        let key = format!("cancel{}", payment.id.as_uuid().simple());
        let left = book.paid_centavos() - book.returned_centavos();
        return match refund(book, left, RefundKind::Cancellation, "procedure cancelled", &key, now_ms, view)? {
            RefundPlan::New(movement) => Ok(*movement),
            RefundPlan::Made(_) => Ok(Movement { now_ms, ..Movement::default() }),
        };
    }
    let held = book.escrow_held_centavos();
    let mut postings = Vec::new();
    if held > 0 {
        postings.push(release_posting(payment.id, payment.provider_id, Money::from_centavos(held)).map_err(ledger)?);
    }
    let shown = book.with_status(PaymentStatus::Released);
    let data = book.event_data(view, &shown, None, json!({"released_centavos": held}));
    Ok(Movement {
        new_status: Some(PaymentStatus::Released),
        postings,
        events: vec![event(event_type(PaymentStatus::Released), data)],
        new_intents: vec![IntentRecord::release(payment.id, now_ms)],
        now_ms,
        ..Movement::default()
    })
}

/// The patient disputes the payment in a chat: a review case (reason `patient_disputed`) with the
/// conversation, and an event that tells the provider.
pub fn dispute(book: &Book, conversation_id: &str, now_ms: i64, view: &View) -> Movement {
    let reason = json!({"code": "patient_disputed", "message": "the patient does not recognise this payment",
                        "message_pt": "O paciente não reconhece esta cobrança."});
    let data = book.event_data(
        view,
        &book.payment,
        None,
        json!({"review": {"reason": reason, "conversation_id": conversation_id}}),
    );
    Movement {
        review_case: Some(("patient_disputed".to_owned(), Some(conversation_id.to_owned()))),
        events: vec![event("payment.disputed", data)],
        now_ms,
        ..Movement::default()
    }
}

/// What approving a payment in review sets going: the charge (when a gateway moves money) or
/// the contract to sign first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approval {
    pub charging: bool,
    pub contract: bool,
}

/// An analyst closes a review case of this payment, in one commit. Upheld: the suspicion stands —
/// a payment in review is declined, an unpaid one cancelled (its charges with it), a paid one
/// refunded in full; labelled fraud. Rejected: the charge is the patient's — a payment in review is
/// approved and goes on as an approved payment does (its first charge or contract is asked for in
/// the same commit); labelled legitimate.
pub fn close_review(
    book: &Book,
    case_id: &str,
    upheld: bool,
    note: &str,
    approval: Approval,
    now_ms: i64,
    view: &View,
) -> Result<Movement, Fault> {
    let outcome = if upheld { "upheld" } else { "rejected" };
    let payment = &book.payment;
    let paid_status = matches!(
        payment.status,
        PaymentStatus::Paid | PaymentStatus::HeldInEscrow | PaymentStatus::Released | PaymentStatus::PartiallyRefunded
    );
    let left = book.paid_centavos() - book.returned_centavos();
    let mut movement = Movement { now_ms, ..Movement::default() };
    let mut shown = payment.clone();
    if upheld && paid_status && left > 0 {
        let key = format!("review{}", case_id.replace('-', ""));
        if let RefundPlan::New(refunding) =
            refund(book, left, RefundKind::Refund, "disputed charge upheld", &key, now_ms, view)?
        {
            shown.status = refunding.new_status.unwrap_or(shown.status);
            movement = *refunding;
        }
    }
    let ended = match (upheld, payment.status) {
        (true, PaymentStatus::Approved | PaymentStatus::AwaitingPayment) => Some(PaymentStatus::Cancelled),
        (true, PaymentStatus::InReview) => Some(PaymentStatus::Declined),
        (false, PaymentStatus::InReview) => Some(PaymentStatus::Approved),
        _ => None,
    };
    if let Some(to) = ended {
        shown.status = to;
        movement.new_status = Some(to);
        movement.charges_cancelled = to == PaymentStatus::Cancelled;
        if to == PaymentStatus::Approved {
            movement.new_intents.extend(
                opening_intent(&shown, approval.charging, approval.contract)
                    .map(|intent| IntentRecord { created_at_ms: now_ms, ..intent }),
            );
        }
    }
    let data =
        book.event_data(view, &shown, None, json!({"review": {"case_id": case_id, "outcome": outcome, "note": note}}));
    movement.events.push(event("payment.review_closed", data.clone()));
    if let Some(to) = ended {
        movement.events.push(event(event_type(to), data));
    }
    movement.review_closed = Some((case_id.to_owned(), outcome, note.to_owned()));
    movement.label = Some((upheld, "analyst", format!("review case {outcome}: {note}")));
    Ok(movement)
}

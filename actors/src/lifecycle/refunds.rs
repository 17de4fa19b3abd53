//! Refunds: money given back from a charge (from escrow while it is held), one refund per key.

use super::*;

/// The movement that gives `amount` of `charge` back (after `refunds`): the provider's and the
/// platform's parts in proportion, from escrow while any is held. `settled`: the money already
/// left (a chargeback), so the refund is completed at once.
#[allow(clippy::too_many_arguments)]
pub(super) fn take_back(
    book: &Book,
    shown: &PaymentRecord,
    refunds: &[RefundRecord],
    charge: &ChargeRecord,
    amount: i64,
    kind: RefundKind,
    refund_id: &str,
    settled: bool,
    now_ms: i64,
    view: &View,
) -> Result<Option<Movement>, Fault> {
    let payment = &book.payment;
    let before: i64 = refunds.iter().filter(|r| r.charge_id == charge.id).map(|r| r.amount_centavos).sum();
    if amount <= 0 || before + amount > charge.amount_centavos {
        return Ok(None);
    }
    let split = split_of(payment, charge.amount_centavos)?;
    // From the escrow while any of it is held (whatever the status says: a partial refund leaves
    // the rest held), else from what the provider has available.
    let held = book.escrow_held_centavos() > 0;
    let mut postings = vec![
        refund_posting(
            payment.id,
            payment.provider_id,
            split,
            Money::from_centavos(before),
            Money::from_centavos(amount),
            held,
        )
        .map_err(ledger)?,
    ];
    if settled {
        postings.push(
            Posting::transfer(
                Some(payment.id),
                "refund_paid",
                Account::PatientRefunds,
                Account::GatewayClearing,
                Money::from_centavos(amount),
            )
            .map_err(ledger)?,
        );
    }
    let refund = RefundRecord {
        id: refund_id.to_owned(),
        payment_id: payment.id,
        charge_id: charge.id.clone(),
        kind,
        amount_centavos: amount,
        reason: kind.as_str().to_owned(),
        status: if settled { RefundStatus::Completed } else { RefundStatus::Requested },
        gateway_id: None,
        created_at_ms: now_ms,
        completed_at_ms: settled.then_some(now_ms),
    };
    // Everything paid so far given back: refunded (charged back for a dispute); else partly.
    let returned: i64 = refunds.iter().map(|r| r.amount_centavos).sum::<i64>() + amount;
    let to = match (returned >= book.paid_centavos(), kind) {
        (true, RefundKind::Chargeback | RefundKind::Med) => PaymentStatus::ChargedBack,
        (true, _) => PaymentStatus::Refunded,
        (false, _) => PaymentStatus::PartiallyRefunded,
    };
    shown.status.transition(to).map_err(broken)?;
    // Nothing left to pay for: the installments not yet paid are no longer charged.
    let ended = matches!(to, PaymentStatus::Refunded | PaymentStatus::ChargedBack);
    let data = book.event_data(
        view,
        &PaymentRecord { status: to, ..shown.clone() },
        None,
        json!({"refund": {"id": refund.id, "kind": kind, "amount_centavos": amount}}),
    );
    Ok(Some(Movement {
        new_status: Some(to),
        postings,
        new_refunds: vec![refund],
        events: vec![event(event_type(to), data)],
        charges_cancelled: ended,
        now_ms,
        ..Movement::default()
    }))
}

/// What a refund request comes to.
#[derive(Debug, Clone)]
pub enum RefundPlan {
    /// The key's refund exists already: its pieces, as they were made.
    Made(Vec<RefundRecord>),
    /// Commit this; its refunds are then owed (see [`owed`]).
    New(Box<Movement>),
}

/// Refunds `amount` of what the patient paid (newest charge first, one piece per charge, all in
/// one commit). `key` (the caller's idempotency key, hashed with its scope) names the refund's
/// rows: the same request again finds them; any other amount or reason under it is refused.
pub fn refund(
    book: &Book,
    amount: i64,
    kind: RefundKind,
    reason: &str,
    key: &str,
    now_ms: i64,
    view: &View,
) -> Result<RefundPlan, Fault> {
    let payment = &book.payment;
    if amount <= 0 {
        return Err(refused("invalid_amount", "amount_centavos must be a positive number of centavos"));
    }
    let prefix = format!("{key}-");
    let earlier: Vec<RefundRecord> = book.refunds.iter().filter(|r| r.id.starts_with(&prefix)).cloned().collect();
    if !earlier.is_empty() {
        let done: i64 = earlier.iter().map(|r| r.amount_centavos).sum();
        if done == amount && earlier.iter().all(|r| r.reason == reason) {
            return Ok(RefundPlan::Made(earlier));
        }
        return Err(key_reused());
    }
    if !matches!(
        payment.status,
        PaymentStatus::Paid | PaymentStatus::HeldInEscrow | PaymentStatus::Released | PaymentStatus::PartiallyRefunded
    ) {
        return Err(refused(
            "payment_not_refundable",
            format!("a payment that is {} has nothing to refund", payment.status),
        ));
    }
    let paid = || book.charges.iter().filter(|c| c.status == ChargeStatus::Paid);
    let refundable: i64 = paid().map(|charge| charge.amount_centavos - book.refunded_of(charge)).sum();
    if amount > refundable {
        return Err(refused(
            "refund_exceeds_paid",
            format!("{amount} centavos asked, {refundable} centavos paid and not yet refunded"),
        ));
    }
    let mut left = amount;
    let mut shown = payment.clone();
    let mut so_far = book.refunds.clone();
    let mut whole = Movement { now_ms, ..Movement::default() };
    for charge in paid().rev() {
        let piece = left.min(
            charge.amount_centavos
                - so_far.iter().filter(|r| r.charge_id == charge.id).map(|r| r.amount_centavos).sum::<i64>(),
        );
        if piece <= 0 {
            continue;
        }
        let refund_id = format!("{key}-{}", whole.new_refunds.len() + 1);
        let Some(mut movement) =
            take_back(book, &shown, &so_far, charge, piece, kind, &refund_id, false, now_ms, view)?
        else {
            break;
        };
        for refund in &mut movement.new_refunds {
            refund.reason = reason.to_owned();
        }
        so_far.extend(movement.new_refunds.iter().cloned());
        shown.status = movement.new_status.unwrap_or(shown.status);
        whole.new_status = movement.new_status;
        whole.charges_cancelled |= movement.charges_cancelled;
        whole.postings.extend(movement.postings);
        whole.new_refunds.extend(movement.new_refunds);
        whole.events.extend(movement.events);
        left -= piece;
        if left == 0 {
            break;
        }
    }
    if left != 0 {
        return Err(broken(format!("{left} centavos of a refund of {amount} found no charge")));
    }
    Ok(RefundPlan::New(Box::new(whole)))
}

pub fn key_reused() -> Fault {
    refused("idempotency_key_reused", "this Idempotency-Key was used for another refund")
}

//! What the gateways tell us: a charge paid (or money nobody expected), a refund paid back, money
//! taken back by the payer's bank; and the suspense account for money with no other place.

use super::*;
use medpay_gateways::celcoin::Notice;

/// What a recorded webhook does to the payment.
#[derive(Debug, Clone)]
pub enum Applied {
    /// Commit this (the webhook applied, or set aside for good with a note).
    Step(Box<Movement>),
    /// It has to wait for another step first (a chargeback before its payment was recorded).
    Wait,
}

fn set_aside(webhook: &GatewayWebhook, outcome: &'static str, note: impl Into<String>, now_ms: i64) -> Applied {
    Applied::Step(Box::new(Movement {
        webhook: Some((webhook.gateway.clone(), webhook.webhook_id.clone(), outcome, note.into())),
        now_ms,
        ..Movement::default()
    }))
}

/// Applies a gateway webhook recorded for this payment.
pub fn webhook(book: &Book, webhook: &GatewayWebhook, now_ms: i64, view: &View) -> Result<Applied, Fault> {
    if webhook.gateway == CLICKSIGN {
        return Ok(contract_webhook(book, webhook, now_ms, view));
    }
    let notice = match parse_notice(webhook.body.as_bytes()) {
        Ok(notice) => notice,
        Err(error) => return Ok(set_aside(webhook, "ignored", error, now_ms)),
    };
    // The book holds every charge of its payment: one it does not know is another payment's,
    // or its own charge's commit has not happened yet (a card captured as it was made).
    let Some(charge) = book.charges.iter().find(|c| c.gateway_id == notice.charge_transaction_id).cloned() else {
        return Ok(Applied::Wait);
    };
    if charge.payment_id != book.payment.id {
        return Ok(set_aside(webhook, "ignored", "charge of another payment", now_ms));
    }
    let hook = Some((webhook.gateway.clone(), webhook.webhook_id.clone(), "applied", String::new()));
    let heard = (webhook, charge, &notice, hook);
    match notice.kind {
        NoticeKind::Paid => paid(book, heard, now_ms, view),
        NoticeKind::RefundDone => refund_paid_back(book, heard, now_ms, view),
        NoticeKind::Chargeback | NoticeKind::Med => taken_back(book, heard, now_ms, view),
    }
}

/// What a Celcoin notice is heard with: the webhook, the charge it is about, the notice, and the
/// webhook state an applied step records.
type Heard<'a> = (&'a GatewayWebhook, ChargeRecord, &'a Notice, Option<(String, String, &'static str, String)>);

/// A charge paid: into escrow or the provider's account, the payment moved on and the next
/// installment asked for — or, for money nobody expected, into suspense with a case.
fn paid(book: &Book, heard: Heard<'_>, now_ms: i64, view: &View) -> Result<Applied, Fault> {
    let (_, charge, notice, hook) = heard;
    let payment = &book.payment;
    let first = charge.installment == 1;
    let payable = if first {
        payment.status == PaymentStatus::AwaitingPayment
    } else {
        matches!(
            payment.status,
            PaymentStatus::Paid
                | PaymentStatus::HeldInEscrow
                | PaymentStatus::Released
                | PaymentStatus::PartiallyRefunded
        )
    };
    let unexpected = match (charge.status, notice.amount_centavos == charge.amount_centavos) {
        (ChargeStatus::Active, _) if !payable => {
            Some(format!("paid {} centavos for a payment already {}", notice.amount_centavos, payment.status))
        }
        (ChargeStatus::Active, true) => None,
        (ChargeStatus::Active, false) => {
            Some(format!("paid {} centavos for a charge of {}", notice.amount_centavos, charge.amount_centavos))
        }
        (status, _) => Some(format!("paid {} centavos for a charge already {status}", notice.amount_centavos)),
    };
    if let Some(note) = unexpected {
        // The money arrived: kept in suspense with a case, never dropped.
        let mut movement = Movement {
            webhook: hook,
            charge_received: Some((charge.id.clone(), now_ms)),
            now_ms,
            ..Movement::default()
        };
        suspend(book, view, &mut movement, Account::GatewayClearing, Account::Suspense, notice.amount_centavos, &note)?;
        return Ok(Applied::Step(Box::new(movement)));
    }
    // Into escrow until the procedure releases it (a later installment too, while the
    // escrow was not released).
    let held = payment.escrow && !book.escrow_released;
    let split = split_of(payment, charge.amount_centavos)?;
    let posting = charge_posting(payment.id, payment.provider_id, split, held).map_err(ledger)?;
    let mut shown = payment.clone();
    let mut events = Vec::new();
    let installment = json!({"installment": charge.installment});
    let new_status = if first {
        shown.status = PaymentStatus::Paid;
        events.push(event(event_type(PaymentStatus::Paid), book.event_data(view, &shown, Some(&charge), installment)));
        if held {
            shown.status = PaymentStatus::HeldInEscrow;
            events.push(event(
                event_type(PaymentStatus::HeldInEscrow),
                book.event_data(view, &shown, Some(&charge), json!({"held_centavos": split.provider_share.centavos()})),
            ));
        }
        Some(shown.status)
    } else {
        events.push(event("payment.installment_paid", book.event_data(view, &shown, Some(&charge), installment)));
        None
    };
    // The next installment's charge is asked for in the same commit that records this one paid.
    let next = charge.installment + 1;
    let new_intents = payment
        .installments
        .iter()
        .any(|installment| installment.number == next)
        .then(|| IntentRecord::charge(payment.id, next, now_ms))
        .into_iter()
        .collect();
    Ok(Applied::Step(Box::new(Movement {
        new_status,
        postings: vec![posting],
        events,
        charge_paid: Some((charge.id.clone(), now_ms)),
        webhook: hook,
        new_intents,
        now_ms,
        ..Movement::default()
    })))
}

/// A refund we asked for was paid back to the patient.
fn refund_paid_back(book: &Book, heard: Heard<'_>, now_ms: i64, view: &View) -> Result<Applied, Fault> {
    let (webhook, _, notice, hook) = heard;
    let payment = &book.payment;
    let Some(refund) = book.refunds.iter().find(|r| Some(&r.id) == notice.client_code.as_ref()) else {
        return Ok(set_aside(webhook, "ignored", "a reversal we did not ask for", now_ms));
    };
    if refund.status != RefundStatus::Requested {
        return Ok(set_aside(webhook, "ignored", "refund already completed", now_ms));
    }
    let posting = Posting::transfer(
        Some(payment.id),
        "refund_paid",
        Account::PatientRefunds,
        Account::GatewayClearing,
        Money::from_centavos(refund.amount_centavos),
    )
    .map_err(ledger)?;
    Ok(Applied::Step(Box::new(Movement {
        postings: vec![posting],
        refund_completed: Some((refund.id.clone(), notice.reversal_id.clone(), now_ms)),
        webhook: hook,
        events: vec![event(
            "payment.refund_completed",
            book.event_data(
                view,
                payment,
                None,
                json!({"refund_id": refund.id, "amount_centavos": refund.amount_centavos}),
            ),
        )],
        now_ms,
        ..Movement::default()
    })))
}

/// The payer's bank took money back (a chargeback, a MED claim): from what is left of the charge
/// as a refund, anything beyond it from suspense, labelled fraud.
fn taken_back(book: &Book, heard: Heard<'_>, now_ms: i64, view: &View) -> Result<Applied, Fault> {
    let (webhook, charge, notice, hook) = heard;
    match (charge.status, charge.paid_at_ms) {
        (ChargeStatus::Paid, _) => {}
        // No money recorded for it yet: after its payment.
        (_, None) => return Ok(Applied::Wait),
        // Money that was not ours to collect came for it and is in suspense: what the
        // bank takes back leaves suspense, with a case.
        (ChargeStatus::Active | ChargeStatus::Cancelled, Some(_)) => {
            let mut movement = Movement { webhook: hook, now_ms, ..Movement::default() };
            let note = format!("taken back {} centavos of a cancelled charge", notice.amount_centavos);
            suspend(
                book,
                view,
                &mut movement,
                Account::Suspense,
                Account::GatewayClearing,
                notice.amount_centavos,
                &note,
            )?;
            return Ok(Applied::Step(Box::new(movement)));
        }
    }
    let (kind, source) =
        if notice.kind == NoticeKind::Med { (RefundKind::Med, "med") } else { (RefundKind::Chargeback, "chargeback") };
    let refund_id = format!("{kind}-{}", notice.reversal_id.clone().unwrap_or_else(|| webhook.webhook_id.clone()));
    // The bank took the money whatever our state says: what is left of the charge is given
    // back as usual, anything beyond it (after a partial refund, say) goes to suspense.
    let taken = notice.amount_centavos.min(charge.amount_centavos - book.refunded_of(&charge)).max(0);
    let mut movement = match taken {
        0 => Movement { now_ms, ..Movement::default() },
        _ => take_back(book, &book.payment, &book.refunds, &charge, taken, kind, &refund_id, true, now_ms, view)?
            .ok_or_else(|| broken(format!("{taken} centavos of charge {} not taken back", charge.id)))?,
    };
    let excess = notice.amount_centavos - taken;
    if excess > 0 {
        let note =
            format!("{kind} of {} centavos, {excess} beyond what was left of the charge", notice.amount_centavos);
        suspend(book, view, &mut movement, Account::Suspense, Account::GatewayClearing, excess, &note)?;
    }
    movement.webhook = hook;
    movement.label = Some((true, source, format!("{kind} of {} centavos", notice.amount_centavos)));
    movement.label_by = Some("celcoin".to_owned());
    Ok(Applied::Step(Box::new(movement)))
}

/// Adds to `movement` the posting of `amount` between suspense and the gateway's clearing account
/// (`debit` gets it), the event that tells the provider and a case for a person.
fn suspend(
    book: &Book,
    view: &View,
    movement: &mut Movement,
    debit: Account,
    credit: Account,
    amount: i64,
    note: &str,
) -> Result<(), Fault> {
    let payment = &book.payment;
    let kind = if credit == Account::Suspense { "unexpected_in" } else { "unexpected_out" };
    movement
        .postings
        .push(Posting::transfer(Some(payment.id), kind, debit, credit, Money::from_centavos(amount)).map_err(ledger)?);
    movement.case = Some("unexpected_money");
    let direction = if credit == Account::Suspense { "received" } else { "taken" };
    movement.events.push(event(
        "payment.unexpected_money",
        book.event_data(view, payment, None, json!({"unexpected": {direction: amount, "note": note}})),
    ));
    Ok(())
}

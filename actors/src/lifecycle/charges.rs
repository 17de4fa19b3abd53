//! Charges: the request for an installment, its answer as a row, the first charge's answer,
//! and a PIX left unpaid past its expiry.

use super::*;

fn gateway_method(method: PaymentMethod) -> ChargeMethod {
    match method {
        PaymentMethod::Pix => ChargeMethod::Pix,
        PaymentMethod::Boleto => ChargeMethod::Boleto,
        PaymentMethod::Card => ChargeMethod::Card,
    }
}

/// Whether the payment is where a charge of installment `number` may be made.
pub fn chargeable(book: &Book, number: u32) -> bool {
    match number {
        1 => book.payment.status == PaymentStatus::Approved,
        _ => matches!(book.payment.status, PaymentStatus::Paid | PaymentStatus::HeldInEscrow | PaymentStatus::Released),
    }
}

/// The request for installment `number`'s charge, made out to the debtor (name, CPF digits).
pub fn charge_request(
    book: &Book,
    number: u32,
    debtor: (String, String),
    card_token: Option<String>,
    pix_expiration_seconds: i64,
) -> Result<ChargeRequest, Fault> {
    let payment = &book.payment;
    let installment = payment
        .installments
        .iter()
        .find(|i| i.number == number)
        .ok_or_else(|| broken(format!("payment {} has no installment {number}", payment.id)))?;
    let split = split_of(payment, installment.amount_centavos)?;
    let method = gateway_method(payment.method);
    // A single PIX payment is an immediate charge; installments and boletos have due dates.
    let due_date = (method != ChargeMethod::Pix || payment.installments.len() > 1 || number > 1)
        .then(|| installment.due_date.to_string());
    Ok(ChargeRequest {
        client_request_id: ChargeRecord::id_for(payment.id, number),
        method,
        amount_centavos: installment.amount_centavos,
        due_date,
        debtor_name: debtor.0,
        debtor_cpf: debtor.1,
        description: format!("{} (parcela {number}/{})", payment.description, payment.installments.len()),
        split: [
            (Account::ProviderAvailable(payment.provider_id).to_string(), split.provider_share.centavos()),
            (Account::PlatformFees.to_string(), split.fee.centavos()),
        ]
        .into_iter()
        .filter(|(_, amount)| *amount > 0)
        .map(|(account, amount_centavos)| SplitPart { account, amount_centavos })
        .collect(),
        escrow: payment.escrow,
        card_token,
        expiration_seconds: Some(pix_expiration_seconds),
    })
}

/// The gateway's answer to `request` as the charge row we keep; refused when it is another charge.
pub fn charge_record(
    book: &Book,
    request: &ChargeRequest,
    charge: Charge,
    number: u32,
    now_ms: i64,
) -> Result<ChargeRecord, Fault> {
    if charge.amount_centavos != request.amount_centavos || charge.client_request_id != request.client_request_id {
        return Err(broken(format!("Celcoin returned charge {} of another amount or id", charge.transaction_id)));
    }
    Ok(ChargeRecord {
        id: request.client_request_id.clone(),
        payment_id: book.payment.id,
        installment: number,
        method: book.payment.method,
        gateway_id: charge.transaction_id,
        amount_centavos: charge.amount_centavos,
        status: ChargeStatus::Active,
        br_code: charge.emv,
        linha_digitavel: charge.linha_digitavel,
        barcode: charge.barcode,
        due_date: charge.due_date.or_else(|| request.due_date.clone()),
        expires_at_ms: charge.expiration_seconds.map(|seconds| now_ms + seconds * 1_000),
        paid_at_ms: None,
        created_at_ms: now_ms,
    })
}

/// The charge an intent asked for was made: recorded with the intent done. The first one moves
/// the payment to awaiting payment and completes the answer of the request that created it
/// (returned: the body, with the charge).
pub fn charge_made(
    book: &Book,
    intent: &IntentRecord,
    charge: ChargeRecord,
    now_ms: i64,
    view: &View,
) -> (Movement, Option<String>) {
    let first = charge.installment == 1;
    let mut shown = book.payment.clone();
    if first {
        shown.status = PaymentStatus::AwaitingPayment;
        shown.updated_at_ms = charge.created_at_ms;
    }
    let rendered = view(&shown, book.decision.as_ref(), Some(&charge));
    let body = first.then(|| rendered.to_string());
    let kind = if first { event_type(PaymentStatus::AwaitingPayment) } else { "payment.installment_due" };
    let movement = Movement {
        new_status: first.then_some(PaymentStatus::AwaitingPayment),
        events: vec![event(kind, json!({"payment": rendered, "installment": charge.installment}))],
        intents_done: vec![intent.id.clone()],
        idempotency: body.clone().map(|body| IdempotencyCompletion { payment_id: book.payment.id, status: 201, body }),
        now_ms: shown.updated_at_ms.max(now_ms),
        new_charge: Some(charge),
        ..Movement::default()
    };
    (movement, body)
}

/// The answer of the request that created the payment when its first charge is not made in
/// time (the sweep makes it later under the same id): the payment as it stands.
pub fn answer_without_charge(book: &Book, view: &View) -> (Movement, String) {
    let body = view(&book.payment, book.decision.as_ref(), None).to_string();
    let completion = IdempotencyCompletion { payment_id: book.payment.id, status: 201, body: body.clone() };
    (Movement { idempotency: Some(completion), ..Movement::default() }, body)
}

/// A first PIX charge left unpaid past its expiry expires the payment.
pub fn expire(book: &Book, now_ms: i64, view: &View) -> Option<Movement> {
    if book.payment.status != PaymentStatus::AwaitingPayment {
        return None;
    }
    let expired =
        book.charges.iter().any(|c| c.status == ChargeStatus::Active && c.expires_at_ms.is_some_and(|at| at <= now_ms));
    if !expired {
        return None;
    }
    let shown = book.with_status(PaymentStatus::Expired);
    let data = book.event_data(view, &shown, None, json!({"reason": "pix_expired"}));
    Some(Movement {
        new_status: Some(PaymentStatus::Expired),
        charges_cancelled: true,
        events: vec![event(event_type(PaymentStatus::Expired), data)],
        now_ms,
        ..Movement::default()
    })
}

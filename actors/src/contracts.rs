//! Installment contracts: a plan of at least `contract_min_centavos` in more than one installment
//! is charged only after the patient signs, through ClickSign, a contract that states the schedule
//! and the CET.

use crate::CoreError;
use crate::money::event_for;
use crate::transaction::{TransactionState, event_type};
use medpay_gateways::clicksign::ContractRequest;
use medpay_models::PaymentStatus;
use medpay_store::{ContractRecord, GatewayWebhook, IntentRecord, Movement, PaymentRecord};
use serde_json::json;

fn brl(centavos: i64) -> String {
    medpay_models::Money::from_centavos(centavos).brl()
}

pub const CLICKSIGN: &str = "clicksign";

/// The contract's text: who, what, the schedule, the interest and the CET.
pub fn contract_text(payment: &PaymentRecord, patient_name: &str, cpf_formatted: &str) -> String {
    let mut text = format!(
        "CONTRATO DE PARCELAMENTO\n\nPaciente: {patient_name} (CPF {cpf_formatted})\nProcedimento: {} (TUSS {})\n\
         Valor à vista: {}\nJuros: {},{:02}% ao mês\nTotal a prazo: {}\nCusto Efetivo Total (CET): {},{:02}% ao ano\n\n\
         Parcelas:\n",
        payment.description,
        payment.tuss_code.as_str(),
        brl(payment.amount_centavos),
        payment.monthly_interest_bps / 100,
        payment.monthly_interest_bps % 100,
        brl(payment.total_centavos),
        payment.cet_annual_bps / 100,
        payment.cet_annual_bps % 100,
    );
    for installment in &payment.installments {
        text.push_str(&format!(
            "  {:>2}ª  vencimento {}  {}\n",
            installment.number,
            installment.due_date.format("%d/%m/%Y"),
            brl(installment.amount_centavos)
        ));
    }
    text.push_str(&format!("\nReferência do pagamento: {}\n", payment.id));
    text
}

/// Sends the contract a pending intent asks for, and records it with the intent done.
pub(crate) async fn send_contract(state: &mut TransactionState, intent: &IntentRecord) -> Result<(), CoreError> {
    let context = state.context.clone();
    let Some(payment) = state.payment.clone() else { return Ok(()) };
    if context.store.contract(payment.id).await?.is_some() || payment.status != PaymentStatus::Approved {
        crate::money::commit(state, Movement { intents_done: vec![intent.id.clone()], ..Movement::default() }).await?;
        return Ok(());
    }
    let Some(signer) = context.gateways.as_ref().and_then(|g| g.contracts.clone()) else { return Ok(()) };
    let patient = context
        .store
        .patient(payment.patient_id)
        .await?
        .ok_or_else(|| CoreError::Invariant("the payment's patient is gone".into()))?;
    let request = ContractRequest {
        name: format!("Parcelamento {}", payment.id),
        filename: format!("contrato-{}.txt", payment.id),
        document: contract_text(&payment, &patient.name, &patient.cpf.formatted()),
        signer_name: patient.name.clone(),
        signer_email: patient.email.clone(),
        signer_cpf: patient.cpf.formatted(),
    };
    let envelope = signer.send_contract(&request).await.map_err(|error| CoreError::Unavailable(error.to_string()))?;
    let now = medpay_store::now_ms();
    let data = crate::money::payment_event(
        state,
        &payment,
        None,
        json!({"contract": {"envelope_id": envelope, "status": "sent"}}),
    );
    let movement = Movement {
        contract: Some(ContractRecord {
            payment_id: payment.id,
            envelope_id: envelope.clone(),
            status: "sent".to_owned(),
            created_at_ms: now,
            signed_at_ms: None,
        }),
        events: vec![event_for("payment.contract_sent", data)],
        intents_done: vec![intent.id.clone()],
        now_ms: now,
        ..Movement::default()
    };
    crate::money::commit(state, movement).await?;
    tracing::info!(payment_id = %payment.id, envelope_id = %envelope, "installment contract sent for signature");
    Ok(())
}

/// Applies a ClickSign event: a closed envelope is a signed contract (and the first charge
/// follows); a refusal cancels the payment.
pub(crate) async fn apply(state: &mut TransactionState, webhook: &GatewayWebhook) -> Result<bool, CoreError> {
    let context = state.context.clone();
    let Some(payment) = state.payment.clone() else { return Ok(false) };
    let Some(contract) = context.store.contract(payment.id).await? else { return Ok(false) };
    let event_name: String = serde_json::from_str::<serde_json::Value>(&webhook.body)
        .ok()
        .and_then(|value| value.pointer("/event/name").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let hook = |note: &str, state_: &'static str| {
        Some((webhook.gateway.clone(), webhook.webhook_id.clone(), state_, note.to_owned()))
    };
    let now = medpay_store::now_ms();
    let movement = match event_name.as_str() {
        "auto_close" | "close" if contract.status == "sent" => Movement {
            contract: Some(ContractRecord { status: "signed".to_owned(), signed_at_ms: Some(now), ..contract.clone() }),
            // Signed: the first charge is asked for in the same commit.
            new_intents: vec![IntentRecord::charge(payment.id, 1, now)],
            webhook: hook("", "applied"),
            events: vec![event_for(
                "payment.contract_signed",
                crate::money::payment_event(
                    state,
                    &payment,
                    None,
                    json!({"contract": {"envelope_id": contract.envelope_id, "status": "signed"}}),
                ),
            )],
            now_ms: now,
            ..Movement::default()
        },
        "refusal" if contract.status == "sent" && payment.status == PaymentStatus::Approved => {
            let mut shown = payment.clone();
            shown.status = PaymentStatus::Cancelled;
            Movement {
                new_status: Some(PaymentStatus::Cancelled),
                contract: Some(ContractRecord { status: "refused".to_owned(), ..contract.clone() }),
                webhook: hook("", "applied"),
                events: vec![event_for(
                    event_type(PaymentStatus::Cancelled),
                    crate::money::payment_event(state, &shown, None, json!({"reason": "contract_refused"})),
                )],
                now_ms: now,
                ..Movement::default()
            }
        }
        other => Movement {
            webhook: hook(&format!("event {other} changes nothing"), "ignored"),
            now_ms: now,
            ..Movement::default()
        },
    };
    crate::money::commit(state, movement).await?;
    if let Err(error) = crate::money::perform_intents(state).await {
        tracing::warn!(payment_id = %payment.id, %error, "first charge not made yet; the sweep will retry");
    }
    Ok(true)
}

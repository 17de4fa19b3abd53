//! Installment contracts: a plan of at least `contract_min_centavos` in more than one installment
//! is charged only after the patient signs, through ClickSign, a contract that states the schedule
//! and the CET. The contract's steps are in `lifecycle/contracts.rs`; this is its text.

use medpay_store::PaymentRecord;

fn brl(centavos: i64) -> String {
    medpay_models::Money::from_centavos(centavos).brl()
}

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

//! The dialogue policy: from what the classifier understood, the entities in the message, the
//! conversation's slots and the patient's own payments, the reply in Portuguese and what to do
//! (send a payment to review, hand the conversation to a person). Pure: the chat actor gathers the
//! payments (from the patient's own session) and carries out the action.

use crate::entities;
use crate::intents::Prediction;
use chrono::NaiveDate;
use medpay_models::{BasisPoints, InstallmentPlan, Money, PlanRequest};
use serde::{Deserialize, Serialize};

/// Interest of a simulation when the patient has no payment to take the rate from: 1,99 % a month.
pub const DEFAULT_MONTHLY_INTEREST_BPS: u32 = 199;
/// Unsure answers in a row before a person is called.
pub const UNSURE_MAX: u32 = 2;

/// What the chat may know of one of the patient's own payments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFacts {
    pub id: String,
    pub status: String,
    pub amount_centavos: i64,
    pub method: String,
    pub installments: u32,
    pub monthly_interest_bps: u32,
    pub created_on: NaiveDate,
    pub escrow: bool,
    /// The decision's reasons, in Portuguese.
    pub reasons_pt: Vec<String>,
    pub charge: Option<ChargeFacts>,
    pub refunded_centavos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeFacts {
    pub installment: u32,
    pub amount_centavos: i64,
    pub status: String,
    pub br_code: Option<String>,
    pub linha_digitavel: Option<String>,
    pub due_date: Option<String>,
}

impl PaymentFacts {
    pub fn short(&self) -> &str {
        &self.id[..self.id.len().min(8)]
    }
}

/// What a conversation remembers between turns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    pub amount_centavos: Option<i64>,
    pub installments: Option<u32>,
    /// The payment being talked about.
    pub payment_id: Option<String>,
    pub last_intent: Option<String>,
    /// Unsure answers in a row.
    pub unsure: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    /// The patient does not recognise this payment: send it to review (`patient_disputed`).
    Dispute {
        payment_id: String,
    },
    /// A person takes over; the bot stops answering.
    Handoff {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// The intent acted on (after follow-ups were resolved), or `unsure`.
    pub intent: String,
    pub reply: String,
    pub action: Action,
}

fn brl(centavos: i64) -> String {
    Money::from_centavos(centavos).brl()
}

fn percent(bps: i64) -> String {
    medpay_models::money::percent_pt(bps)
}

pub fn status_pt(status: &str) -> &'static str {
    match status {
        "requested" => "em processamento",
        "approved" => "aprovado (aguardando a emissão da cobrança)",
        "in_review" => "em análise pela nossa equipe",
        "declined" => "recusado",
        "awaiting_payment" => "aguardando o seu pagamento",
        "paid" => "pago",
        "held_in_escrow" => "pago, com o valor retido em custódia até o procedimento",
        "released" => "pago e repassado à clínica",
        "refunded" => "reembolsado",
        "partially_refunded" => "pago, com reembolso parcial",
        "charged_back" => "contestado (chargeback)",
        "cancelled" => "cancelado",
        "expired" => "expirado",
        _ => "em processamento",
    }
}

fn intent_pt(intent: &str) -> &'static str {
    match intent {
        "greeting" => "uma saudação",
        "goodbye" => "encerrar a conversa",
        "payment_status" => "a situação de um pagamento",
        "second_copy" => "a segunda via do PIX ou do boleto",
        "installment_simulation" => "uma simulação de parcelas",
        "payment_methods" => "as formas de pagamento",
        "refund_cancellation" => "reembolso ou cancelamento",
        "escrow_release" => "quando a clínica recebe",
        "not_recognized" => "uma cobrança que você não reconhece",
        "human" => "falar com uma pessoa",
        "lgpd" => "os seus dados pessoais",
        _ => "outro assunto",
    }
}

/// The payment the message is about: a reference in it, a date in it, the one being talked
/// about, or the latest. `payments` are the patient's own, newest first.
fn pick<'a>(text: &str, slots: &Slots, payments: &'a [PaymentFacts], today: NaiveDate) -> Option<&'a PaymentFacts> {
    if let Some(reference) = entities::payment_reference(text) {
        return payments.iter().find(|p| p.id.starts_with(&reference));
    }
    if let Some(day) = entities::date(text, today)
        && let Some(payment) = payments.iter().find(|p| p.created_on == day)
    {
        return Some(payment);
    }
    slots.payment_id.as_ref().and_then(|id| payments.iter().find(|p| &p.id == id)).or_else(|| payments.first())
}

fn no_payment(text: &str) -> String {
    if entities::payment_reference(text).is_some() {
        "Não encontrei esse pagamento entre os seus. Confira o código (os 8 primeiros caracteres bastam).".to_owned()
    } else {
        "Não encontrei pagamentos no seu nome.".to_owned()
    }
}

fn status_reply(payment: &PaymentFacts) -> String {
    let mut reply = format!(
        "Seu pagamento {} de {} ({}{}) está {}.",
        payment.short(),
        brl(payment.amount_centavos),
        payment.method.to_uppercase(),
        if payment.installments > 1 { format!(", em {}x", payment.installments) } else { String::new() },
        status_pt(&payment.status)
    );
    if matches!(payment.status.as_str(), "in_review" | "declined") && !payment.reasons_pt.is_empty() {
        reply.push_str(&format!(" Motivo: {}", payment.reasons_pt.join(" ")));
    }
    if let Some(charge) = payment.charge.as_ref().filter(|c| c.status == "active") {
        reply.push_str(&format!(
            " A parcela {} de {} está em aberto{}; se precisar, peça a segunda via.",
            charge.installment,
            brl(charge.amount_centavos),
            charge.due_date.as_ref().map(|d| format!(" (vencimento {d})")).unwrap_or_default()
        ));
    }
    if payment.refunded_centavos > 0 {
        reply.push_str(&format!(" Já foram reembolsados {}.", brl(payment.refunded_centavos)));
    }
    reply
}

fn second_copy_reply(payment: &PaymentFacts) -> String {
    let Some(charge) = payment.charge.as_ref().filter(|c| c.status == "active") else {
        return format!(
            "O pagamento {} não tem cobrança em aberto: ele está {}.",
            payment.short(),
            status_pt(&payment.status)
        );
    };
    match (&charge.br_code, &charge.linha_digitavel) {
        (Some(code), _) => format!(
            "Aqui está o PIX copia e cola da parcela {} ({}) do pagamento {}:\n{code}",
            charge.installment,
            brl(charge.amount_centavos),
            payment.short()
        ),
        (None, Some(line)) => format!(
            "Aqui está a linha digitável do boleto da parcela {} ({}{}) do pagamento {}:\n{line}",
            charge.installment,
            brl(charge.amount_centavos),
            charge.due_date.as_ref().map(|d| format!(", vencimento {d}")).unwrap_or_default(),
            payment.short()
        ),
        (None, None) => "Pagamentos no cartão não têm segunda via: a cobrança é feita direto no cartão.".to_owned(),
    }
}

fn simulation_reply(amount: i64, count: u32, interest_bps: u32, today: NaiveDate) -> String {
    let request = PlanRequest {
        principal: Money::from_centavos(amount),
        count,
        monthly_interest: BasisPoints(interest_bps),
        released_on: today,
    };
    match InstallmentPlan::price(request) {
        Ok(plan) => {
            let first = plan.installments.first().map_or(0, |i| i.amount_centavos);
            let last = plan.installments.last().map_or(0, |i| i.amount_centavos);
            if count == 1 {
                return format!("À vista, {} em uma parcela.", brl(amount));
            }
            let tail = if last == first { String::new() } else { format!(" (a última de {})", brl(last)) };
            format!(
                "{} em {count}x: parcelas de {}{tail}, total de {}, com juros de {} ao mês. CET: {} ao ano.",
                brl(amount),
                brl(first),
                brl(plan.total_centavos),
                percent(i64::from(interest_bps)),
                percent(plan.cet_annual_bps())
            )
        }
        Err(error) => format!("Não consigo simular esse parcelamento: {error}."),
    }
}

/// The bot's greeting, when a conversation starts and when the patient says hello.
pub const GREETING: &str = "Olá! Sou a assistente virtual da MedPay. Posso ver a situação dos seus pagamentos, \
mandar a segunda via do PIX ou do boleto, simular parcelas e explicar reembolsos. Como posso ajudar?";

const METHODS: &str = "Você pode pagar por PIX (confirmação em segundos, copia e cola ou QR Code), boleto \
(compensa em até 3 dias úteis) ou cartão de crédito. Parcelamentos são feitos pela Tabela Price, com o CET \
informado antes de você confirmar.";

const LGPD: &str = "Tratamos seus dados conforme a LGPD (Lei 13.709/2018): usamos CPF, contato e \
pagamentos só para processar cobranças e prevenir fraudes, e não vendemos seus dados. Você pode pedir \
acesso, correção, portabilidade ou exclusão pelo e-mail privacidade@medpay.com.br (nosso encarregado \
de dados responde em até 15 dias).";

const OUT_OF_SCOPE: &str = "Posso ajudar com seus pagamentos: situação, segunda via, parcelamento, \
reembolsos, repasse à clínica e seus dados. Para agendamentos, exames e dúvidas médicas, fale com a \
clínica.";

/// One turn: the reply to `text` and what to do.
pub fn respond(
    prediction: &Prediction,
    confident: bool,
    text: &str,
    slots: &mut Slots,
    payments: &[PaymentFacts],
    today: NaiveDate,
) -> Turn {
    let count = entities::installments(text);
    let amount = entities::loose_amount_centavos(text);
    // "e em 10x?" right after a simulation continues it, whatever the classifier thought.
    let follow_up = slots.last_intent.as_deref() == Some("installment_simulation")
        && (count.is_some() || amount.is_some())
        && text.split_whitespace().count() <= 6;
    let intent = if follow_up { "installment_simulation".to_owned() } else { prediction.intent.clone() };
    if !confident && !follow_up {
        slots.unsure += 1;
        if slots.unsure >= UNSURE_MAX {
            slots.unsure = 0;
            return Turn {
                intent: "unsure".to_owned(),
                reply: "Não consegui entender. Vou chamar uma pessoa da nossa equipe, que verá toda esta conversa."
                    .to_owned(),
                action: Action::Handoff { reason: "bot_unsure".to_owned() },
            };
        }
        return Turn {
            intent: "unsure".to_owned(),
            reply: format!(
                "Não tenho certeza se entendi. Você quer falar sobre {} ou sobre {}? Pode escrever de outro jeito?",
                intent_pt(&prediction.intent),
                intent_pt(&prediction.second)
            ),
            action: Action::None,
        };
    }
    slots.unsure = 0;
    slots.last_intent = Some(intent.clone());
    let mut action = Action::None;
    let reply = match intent.as_str() {
        "greeting" => GREETING.to_owned(),
        "goodbye" => "Por nada! Se precisar, é só chamar. Até logo!".to_owned(),
        "payment_status" => match pick(text, slots, payments, today) {
            Some(payment) => {
                slots.payment_id = Some(payment.id.clone());
                status_reply(payment)
            }
            None => no_payment(text),
        },
        "second_copy" => {
            let open = payments.iter().find(|p| p.charge.as_ref().is_some_and(|c| c.status == "active"));
            let chosen = if entities::payment_reference(text).is_some() {
                pick(text, slots, payments, today)
            } else {
                open.or_else(|| pick(text, slots, payments, today))
            };
            match chosen {
                Some(payment) => {
                    slots.payment_id = Some(payment.id.clone());
                    second_copy_reply(payment)
                }
                None => no_payment(text),
            }
        }
        "installment_simulation" => {
            let latest = payments.first();
            let amount = amount.or(slots.amount_centavos).or(latest.map(|p| p.amount_centavos));
            let count = count.or(slots.installments);
            slots.amount_centavos = amount;
            slots.installments = count;
            let interest = latest.map_or(DEFAULT_MONTHLY_INTEREST_BPS, |p| {
                if p.monthly_interest_bps > 0 { p.monthly_interest_bps } else { DEFAULT_MONTHLY_INTEREST_BPS }
            });
            match (amount, count) {
                (Some(amount), Some(count)) => simulation_reply(amount, count, interest, today),
                (Some(amount), None) => {
                    format!("Posso simular o parcelamento de {}. Em quantas vezes? (por exemplo: em 6x)", brl(amount))
                }
                (None, _) => "Qual valor você quer parcelar? (por exemplo: R$ 1.500,00 em 6x)".to_owned(),
            }
        }
        "payment_methods" => METHODS.to_owned(),
        "refund_cancellation" => {
            let mut reply = "O reembolso é pedido pela clínica (ou feito automaticamente se um procedimento pago \
                             em custódia for cancelado) e volta pelo mesmo meio de pagamento: o PIX é devolvido \
                             em instantes, o cartão em até duas faturas."
                .to_owned();
            if let Some(payment) = pick(text, slots, payments, today) {
                slots.payment_id = Some(payment.id.clone());
                if payment.refunded_centavos > 0 {
                    reply.push_str(&format!(
                        " Do pagamento {}, já foram reembolsados {}.",
                        payment.short(),
                        brl(payment.refunded_centavos)
                    ));
                } else {
                    reply.push_str(&format!(
                        " O pagamento {} não tem reembolso; se quiser cancelar, fale com a clínica ou peça um atendente.",
                        payment.short()
                    ));
                }
            }
            reply
        }
        "escrow_release" => match pick(text, slots, payments, today) {
            Some(payment) => {
                slots.payment_id = Some(payment.id.clone());
                match payment.status.as_str() {
                    "held_in_escrow" => format!(
                        "O valor do pagamento {} ({}) está retido em custódia: a clínica só recebe quando confirmar \
                         que o procedimento aconteceu. Se ele for cancelado, o dinheiro volta para você.",
                        payment.short(),
                        brl(payment.amount_centavos)
                    ),
                    "released" => format!("O pagamento {} já foi repassado à clínica.", payment.short()),
                    "paid" | "partially_refunded" => format!(
                        "O pagamento {} já foi recebido e a clínica recebe a parte dela logo após a confirmação.",
                        payment.short()
                    ),
                    _ => format!(
                        "O pagamento {} está {}; a clínica só recebe depois que ele for pago{}.",
                        payment.short(),
                        status_pt(&payment.status),
                        if payment.escrow { " e o procedimento for confirmado" } else { "" }
                    ),
                }
            }
            None => "Quando a clínica pede custódia, o valor fica retido até ela confirmar o procedimento; sem \
                     custódia, ela recebe logo após o pagamento."
                .to_owned(),
        },
        "not_recognized" => match pick(text, slots, payments, today) {
            Some(payment) => {
                slots.payment_id = Some(payment.id.clone());
                action = Action::Dispute { payment_id: payment.id.clone() };
                format!(
                    "Entendi: você não reconhece o pagamento {} de {}. Eu o enviei para análise da nossa equipe de \
                     segurança, com esta conversa. Não pague nada dele até a análise; respondemos em até 2 dias úteis \
                     e, se a cobrança for indevida, ela é cancelada e o que foi pago é devolvido.",
                    payment.short(),
                    brl(payment.amount_centavos)
                )
            }
            None => {
                action = Action::Handoff { reason: "dispute_without_payment".to_owned() };
                "Não encontrei esse pagamento entre os seus. Vou chamar uma pessoa da nossa equipe para verificar."
                    .to_owned()
            }
        },
        "human" => {
            action = Action::Handoff { reason: "patient_asked".to_owned() };
            "Certo! Vou transferir você para uma pessoa da nossa equipe, que verá toda esta conversa e os seus \
             pagamentos. A partir de agora quem responde é um atendente."
                .to_owned()
        }
        "lgpd" => LGPD.to_owned(),
        _ => OUT_OF_SCOPE.to_owned(),
    };
    Turn { intent, reply, action }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(intent: &str) -> Prediction {
        Prediction { intent: intent.to_owned(), confidence: 0.9, margin: 0.8, second: "greeting".to_owned() }
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
    }

    #[test]
    fn a_simulation_carries_its_amount_to_the_next_turn() {
        let mut slots = Slots::default();
        let first =
            respond(&prediction("installment_simulation"), true, "quanto fica 1500 em 6x?", &mut slots, &[], today());
        assert!(first.reply.starts_with("R$ 1.500,00 em 6x"), "{}", first.reply);
        // The classifier may read "e em 10x?" as anything; the slots keep the conversation going.
        let second = respond(&prediction("out_of_scope"), false, "e em 10x?", &mut slots, &[], today());
        assert_eq!(second.intent, "installment_simulation");
        assert!(second.reply.starts_with("R$ 1.500,00 em 10x"), "{}", second.reply);
        let plan = InstallmentPlan::price(PlanRequest {
            principal: Money::from_centavos(150_000),
            count: 10,
            monthly_interest: BasisPoints(DEFAULT_MONTHLY_INTEREST_BPS),
            released_on: today(),
        })
        .unwrap();
        assert!(second.reply.contains(&brl(plan.installments[0].amount_centavos)), "the core's own numbers");
        assert!(second.reply.contains(&percent(plan.cet_annual_bps())));
    }

    #[test]
    fn unsure_twice_hands_off() {
        let mut slots = Slots::default();
        let first = respond(&prediction("lgpd"), false, "hmm", &mut slots, &[], today());
        assert_eq!(first.action, Action::None);
        assert!(first.reply.contains("Pode escrever de outro jeito"));
        let second = respond(&prediction("lgpd"), false, "hmmm", &mut slots, &[], today());
        assert!(matches!(second.action, Action::Handoff { .. }));
    }
}

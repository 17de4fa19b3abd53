//! Words for a decision: a stable code per risk factor, plain words for the analyst and
//! Portuguese for the patient.

use crate::features::FEATURE_NAMES;
use medpay_models::Reason;

/// How many features a decision names at most.
pub const FACTORS_MAX: usize = 3;

/// Features whose risk lies in a low value: a low value is named, a high one is not.
const RISKY_WHEN_LOW: [&str; 1] = ["patient_age_days"];
/// Features whose low value is named differently (little history, not velocity).
const HISTORY: [&str; 6] = [
    "patient_payments_1h",
    "patient_payments_24h",
    "patient_payments_7d",
    "patient_amount_1h_centavos",
    "patient_amount_24h_centavos",
    "patient_amount_7d_centavos",
];
/// Features for which either side of the mean can be the risky one (categories, hours).
const EITHER_WAY: [&str; 5] = ["hour_of_day", "method_card", "method_pix", "method_boleto", "night"];

/// The factor a feature stands for, in the direction it pushed: (code, analyst's words, patient's
/// words), or `None` when that direction has no honest words (a feature below its usual value
/// that raised the score, where "high" would be a false explanation).
fn factor_in_direction(feature: &str, value: f64, above_usual: bool) -> Option<(&'static str, String, &'static str)> {
    if HISTORY.contains(&feature) && !above_usual {
        return Some((
            "little_history",
            "the patient has fewer earlier payments than usual".to_owned(),
            "Há poucos pagamentos anteriores deste paciente.",
        ));
    }
    let risky_direction = if RISKY_WHEN_LOW.contains(&feature) { !above_usual } else { above_usual };
    if !risky_direction && !EITHER_WAY.contains(&feature) {
        return None;
    }
    factor(feature, value)
}

/// The factor a feature stands for: (code, analyst's words, patient's words). The value is the
/// feature's value in this payment.
fn factor(feature: &str, value: f64) -> Option<(&'static str, String, &'static str)> {
    let entry = match feature {
        "amount_to_procedure_median" => (
            "amount_far_above_usual",
            format!("the amount is {value:.1}× this provider's usual amount for the procedure"),
            "O valor está muito acima do habitual para este procedimento.",
        ),
        "amount_centavos" | "log_amount" => {
            ("high_amount", "the amount is high".to_owned(), "O valor do pagamento é alto.")
        }
        "device_patients_24h" => (
            "device_shared",
            format!("this device was used by {value:.0} patients in the last 24 hours"),
            "Este aparelho foi usado por outras pessoas recentemente.",
        ),
        "ip_patients_24h" => (
            "ip_shared",
            format!("this IP address was used by {value:.0} patients in the last 24 hours"),
            "Esta conexão foi usada por outras pessoas recentemente.",
        ),
        "patient_new_device" => (
            "new_device",
            "first payment from this device for this patient".to_owned(),
            "O pagamento foi feito de um aparelho novo.",
        ),
        "patient_devices_24h" | "patient_ips_24h" => (
            "many_devices",
            format!("{value:.0} different devices or connections in 24 hours"),
            "Vários aparelhos foram usados em pouco tempo.",
        ),
        "patient_age_days" => (
            "new_patient",
            format!("the patient's first payment was {value:.1} days ago"),
            "É um dos primeiros pagamentos deste paciente.",
        ),
        "night" | "hour_of_day" => {
            ("unusual_hour", "requested at an unusual hour".to_owned(), "O pagamento foi feito em um horário incomum.")
        }
        "installments" => ("many_installments", format!("{value:.0} installments"), "O parcelamento é longo."),
        "patient_payments_1h" | "patient_payments_24h" | "patient_payments_7d" => (
            "patient_velocity",
            format!("{value:.0} payment requests by this patient in the window"),
            "Muitos pagamentos foram pedidos em pouco tempo.",
        ),
        "patient_amount_1h_centavos" | "patient_amount_24h_centavos" | "patient_amount_7d_centavos" => (
            "patient_amount_velocity",
            format!("{value:.0} centavos requested by this patient in the window"),
            "O total pedido em pouco tempo é alto.",
        ),
        "patient_declines_24h" => (
            "recent_declines",
            format!("{value:.0} declined payments in 24 hours"),
            "Pagamentos recentes deste paciente foram recusados.",
        ),
        "first_pair" => (
            "first_time_with_provider",
            "first payment of this patient to this provider".to_owned(),
            "É o primeiro pagamento a este prestador.",
        ),
        "method_card" | "method_pix" | "method_boleto" => (
            "payment_method",
            "the payment method carries more risk here".to_owned(),
            "A forma de pagamento exige verificação.",
        ),
        "provider_review_rate_24h" | "provider_decline_rate_24h" => (
            "provider_risk",
            format!("{:.0}% of this provider's recent payments were held or declined", value * 100.0),
            "Este prestador está em verificação.",
        ),
        _ => return None,
    };
    Some(entry)
}

/// Reasons for the features that pushed the score up most (positive contributions only), each in
/// the direction it pushed (`usual` holds each feature's training mean).
pub fn top_factors(features: &[f64], contributions: &[f64], usual: &[f64]) -> Vec<Reason> {
    let mut ranked: Vec<(usize, f64)> =
        contributions.iter().copied().enumerate().filter(|(_, part)| *part > 1e-9 && part.is_finite()).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut reasons: Vec<Reason> = Vec::new();
    for (index, _) in ranked {
        let Some(name) = FEATURE_NAMES.get(index) else { continue };
        let value = features.get(index).copied().unwrap_or(0.0);
        let above_usual = value >= usual.get(index).copied().unwrap_or(0.0);
        let Some((code, message, message_pt)) = factor_in_direction(name, value, above_usual) else {
            continue;
        };
        if reasons.iter().any(|reason| reason.code == code) {
            continue;
        }
        reasons.push(Reason { code: code.to_owned(), message, message_pt: message_pt.to_owned() });
        if reasons.len() == FACTORS_MAX {
            break;
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feature_below_its_usual_value_is_not_called_high() {
        let index = |name: &str| FEATURE_NAMES.iter().position(|n| *n == name).unwrap();
        let mut contributions = vec![0.0; FEATURE_NAMES.len()];
        contributions[index("patient_payments_7d")] = 1.0;
        contributions[index("device_patients_24h")] = 0.5;
        let mut usual = vec![0.0; FEATURE_NAMES.len()];
        usual[index("patient_payments_7d")] = 3.0;
        usual[index("device_patients_24h")] = 1.2;
        let mut features = vec![0.0; FEATURE_NAMES.len()];
        features[index("device_patients_24h")] = 1.0;
        // No earlier payments raised the score: that is little history, not velocity; one patient
        // on the device (below its usual 1.2) is not "shared".
        let codes: Vec<String> = top_factors(&features, &contributions, &usual).into_iter().map(|r| r.code).collect();
        assert_eq!(codes, vec!["little_history"]);
    }

    #[test]
    fn every_feature_has_words() {
        for name in FEATURE_NAMES {
            let (code, message, message_pt) = factor(name, 2.0).unwrap_or_else(|| panic!("{name} has no words"));
            assert!(!code.is_empty() && !message.is_empty() && !message_pt.is_empty());
        }
    }

    #[test]
    fn strongest_positive_factors_first_one_per_code() {
        let mut contributions = vec![0.0; FEATURE_NAMES.len()];
        let index = |name: &str| FEATURE_NAMES.iter().position(|n| *n == name).unwrap();
        contributions[index("amount_to_procedure_median")] = 2.0;
        contributions[index("device_patients_24h")] = 0.5;
        contributions[index("amount_centavos")] = 0.4;
        contributions[index("log_amount")] = 0.3;
        contributions[index("night")] = -3.0;
        let mut features = vec![0.0; FEATURE_NAMES.len()];
        features[index("amount_to_procedure_median")] = 7.25;
        features[index("device_patients_24h")] = 3.0;
        features[index("amount_centavos")] = 5.0;
        features[index("log_amount")] = 2.0;
        let reasons = top_factors(&features, &contributions, &vec![1.0; FEATURE_NAMES.len()]);
        let codes: Vec<&str> = reasons.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(codes, vec!["amount_far_above_usual", "device_shared", "high_amount"]);
        assert!(reasons[0].message.contains("7.2×") || reasons[0].message.contains("7.3×"));
    }
}

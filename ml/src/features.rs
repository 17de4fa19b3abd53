//! The features a scorer sees. They are computed from the actors' state, never by a query on the
//! hot path.

use medpay_models::{PaymentId, PaymentMethod, TussCode};

/// What the patient's session knows of the patient's recent activity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientFeatures {
    pub payments_1h: u32,
    pub payments_24h: u32,
    pub amount_24h_centavos: i64,
    pub declines_24h: u32,
    /// When the patient's first payment was requested; `None` for a first payment.
    pub first_payment_at_ms: Option<i64>,
}

/// What the provider's session knows of the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderFeatures {
    pub max_amount_centavos: i64,
    pub payments_24h: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoringInput {
    pub payment_id: PaymentId,
    pub amount_centavos: i64,
    pub installments: u32,
    pub method: PaymentMethod,
    pub tuss_code: TussCode,
    /// SHA-256 of the patient's CPF, device id and IP, to match lists without holding values.
    pub cpf_hash: String,
    pub device_hash: String,
    pub ip_hash: String,
    pub patient: PatientFeatures,
    pub provider: ProviderFeatures,
}

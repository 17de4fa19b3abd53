//! Wire shapes. Requests arrive with plain types and are parsed into domain types in the handlers,
//! so that each bad field gets its own error code; responses are built from domain records.

use crate::schema;
use chrono::{DateTime, SecondsFormat};
use medpay_store::{ChargeRecord, DecisionRecord, EventRecord, PatientRecord, PaymentRecord, ProviderRecord};
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

pub fn timestamp(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true)).unwrap_or_default()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProvider {
    #[schema(schema_with = crate::schema::party_name)]
    pub name: String,
    #[schema(schema_with = crate::schema::cnpj)]
    pub cnpj: String,
    #[schema(schema_with = crate::schema::basis_points)]
    pub fee_bps: u32,
    /// Hold the provider's share until the procedure is confirmed.
    #[serde(default)]
    pub escrow: bool,
    #[serde(default = "default_fail_mode")]
    #[schema(schema_with = crate::schema::fail_mode)]
    pub score_fail_mode: String,
    #[serde(default = "default_max_amount")]
    #[schema(schema_with = crate::schema::provider_max_amount)]
    pub max_amount_centavos: i64,
    #[serde(default = "default_review_score")]
    #[schema(schema_with = crate::schema::score)]
    pub review_score_min: u16,
    #[serde(default = "default_decline_score")]
    #[schema(schema_with = crate::schema::score)]
    pub decline_score_min: u16,
    #[serde(default = "default_review_time_limit")]
    #[schema(schema_with = crate::schema::review_hours)]
    pub review_time_limit_hours: u32,
}

fn default_review_time_limit() -> u32 {
    medpay_store::REVIEW_TIME_LIMIT_HOURS_DEFAULT
}

/// The default thresholds, read off the bundled model's evaluation (ml/models/default.report.txt).
fn default_review_score() -> u16 {
    crate::DEFAULT_REVIEW_SCORE_MIN
}

fn default_decline_score() -> u16 {
    crate::DEFAULT_DECLINE_SCORE_MIN
}

fn default_fail_mode() -> String {
    "open".to_owned()
}

fn default_max_amount() -> i64 {
    10_000_000
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    pub id: String,
    pub name: String,
    pub cnpj: String,
    pub fee_bps: u32,
    pub escrow: bool,
    pub score_fail_mode: String,
    pub max_amount_centavos: i64,
    pub review_score_min: u16,
    pub decline_score_min: u16,
    pub review_time_limit_hours: u32,
    pub created_at: String,
    /// Shown once, at creation. Send it as `Authorization: Bearer <api_key>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl ProviderView {
    pub fn new(record: &ProviderRecord, api_key: Option<String>) -> ProviderView {
        ProviderView {
            id: record.id.to_string(),
            name: record.name.clone(),
            cnpj: record.cnpj.formatted(),
            fee_bps: record.fee_bps.value(),
            escrow: record.escrow,
            score_fail_mode: record.score_fail_mode.as_str().to_owned(),
            max_amount_centavos: record.max_amount_centavos,
            review_score_min: record.review_score_min,
            decline_score_min: record.decline_score_min,
            review_time_limit_hours: record.review_time_limit_hours,
            created_at: timestamp(record.created_at_ms),
            api_key,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePatient {
    #[schema(schema_with = crate::schema::party_name)]
    pub name: String,
    #[schema(schema_with = crate::schema::cpf)]
    pub cpf: String,
    #[schema(schema_with = crate::schema::email)]
    pub email: String,
    #[schema(schema_with = crate::schema::phone)]
    pub phone: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PatientView {
    pub id: String,
    pub name: String,
    pub cpf: String,
    pub email: String,
    pub phone: String,
    pub created_at: String,
    /// Shown once, at creation: the patient's own bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// When the patient's personal data was erased (LGPD): name, CPF, e-mail and phone are then
    /// shown as removed, whoever asks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<String>,
}

impl PatientView {
    pub fn new(record: &PatientRecord, token: Option<String>) -> PatientView {
        // The CPF of an erased patient stays on their financial records for the retention
        // period; no route shows it again.
        let cpf = if record.erased_at_ms.is_some() { "removido".to_owned() } else { record.cpf.formatted() };
        PatientView {
            id: record.id.to_string(),
            name: record.name.clone(),
            cpf,
            email: record.email.clone(),
            phone: record.phone.clone(),
            created_at: timestamp(record.created_at_ms),
            token,
            erased_at: record.erased_at_ms.map(timestamp),
        }
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcedureInput {
    #[schema(schema_with = tuss_code_schema)]
    pub tuss_code: String,
    #[schema(schema_with = description_schema)]
    pub description: String,
}

fn tuss_code_schema() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9]{8}$")).description(Some("8-digit TUSS code."))
}

fn description_schema() -> ObjectBuilder {
    schema::printable(crate::payments::DESCRIPTION_LENGTH_MAX, "What is being paid for, as the patient will read it.")
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceInput {
    #[schema(schema_with = device_id_schema)]
    pub id: String,
    #[schema(schema_with = device_ip_schema)]
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = card_fingerprint_schema)]
    pub card_fingerprint: Option<String>,
}

fn device_id_schema() -> ObjectBuilder {
    schema::visible_ascii(crate::payments::DEVICE_ID_LENGTH_MAX, "The patient's device, as the app identifies it.")
}

fn device_ip_schema() -> RefOr<utoipa::openapi::Schema> {
    schema::ip("The address the patient's request came from.")
}

fn card_fingerprint_schema() -> RefOr<utoipa::openapi::Schema> {
    schema::or_null(schema::visible_ascii(
        crate::payments::CARD_FINGERPRINT_LENGTH_MAX,
        "The card gateway's fingerprint of the card (card payments), matched against the lists.",
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    #[schema(schema_with = patient_id_schema)]
    pub patient_id: String,
    #[schema(schema_with = provider_id_schema)]
    pub provider_id: String,
    pub procedure: ProcedureInput,
    #[schema(schema_with = amount_schema)]
    pub amount_centavos: i64,
    #[schema(schema_with = method_schema)]
    pub method: String,
    #[serde(default = "one")]
    #[schema(schema_with = installments_schema)]
    pub installments: u32,
    #[serde(default)]
    #[schema(schema_with = interest_schema)]
    pub monthly_interest_bps: u32,
    pub device: DeviceInput,
}

fn patient_id_schema() -> ObjectBuilder {
    schema::uuid("The patient's id: one the provider registered (with a provider's key) or the patient's own.")
}

fn provider_id_schema() -> ObjectBuilder {
    schema::uuid("The provider's id: the key's own (with a provider's key) or one that registered the patient.")
}

fn amount_schema() -> ObjectBuilder {
    use medpay_models::installments::{AMOUNT_MAX_CENTAVOS, AMOUNT_MIN_CENTAVOS};
    schema::integer(AMOUNT_MIN_CENTAVOS, AMOUNT_MAX_CENTAVOS, "Integer centavos: 150000 is R$ 1.500,00.")
}

fn method_schema() -> ObjectBuilder {
    schema::one_of(&["pix", "boleto", "card"], "How the patient pays.")
}

fn installments_schema() -> ObjectBuilder {
    let max = i64::from(medpay_models::installments::INSTALLMENTS_MAX);
    schema::integer(1, max, "Monthly installments (Tabela Price); 1 by default.").default(Some(1.into()))
}

fn interest_schema() -> ObjectBuilder {
    let max = i64::from(medpay_models::installments::MONTHLY_INTEREST_BPS_MAX);
    schema::integer(0, max, "Monthly interest in basis points (100 is 1 % a month); 0 by default.")
        .default(Some(0.into()))
}

fn one() -> u32 {
    1
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReasonView {
    pub code: String,
    /// Plain words, for the analyst.
    pub message: String,
    /// Portuguese, for the patient.
    pub message_pt: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    /// `approve`, `review` or `decline`.
    pub outcome: String,
    /// 0 (no risk seen) to 1000.
    pub score: u16,
    pub reasons: Vec<ReasonView>,
    pub rules_hit: Vec<String>,
    pub model_version: String,
    pub decided_at: String,
    /// The challenger's score of the same payment, scored in shadow (it decided nothing); shown
    /// to risk analysts and the admin only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowScoreView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShadowScoreView {
    pub model_version: String,
    /// 0 to 1000.
    pub score: u16,
}

impl DecisionView {
    pub fn new(record: &DecisionRecord) -> DecisionView {
        DecisionView {
            outcome: record.outcome.as_str().to_owned(),
            score: record.score,
            reasons: record
                .reasons
                .iter()
                .map(|r| ReasonView {
                    code: r.code.clone(),
                    message: r.message.clone(),
                    message_pt: r.message_pt.clone(),
                })
                .collect(),
            rules_hit: record.rules_hit.clone(),
            model_version: record.model_version.clone(),
            decided_at: timestamp(record.created_at_ms),
            shadow: None,
        }
    }

    /// The same, with the challenger's shadow score (for risk analysts).
    pub fn with_shadow(mut self, record: &DecisionRecord) -> DecisionView {
        self.shadow = record
            .shadow
            .as_ref()
            .map(|(model_version, score)| ShadowScoreView { model_version: model_version.clone(), score: *score });
        self
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InstallmentView {
    pub number: u32,
    /// ISO 8601 date.
    pub due_date: String,
    pub amount_centavos: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub id: String,
    pub status: String,
    pub provider_id: String,
    pub patient_id: String,
    pub procedure: ProcedureInput,
    /// The procedure's official term in the TUSS catalogue, when one is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub procedure_term: Option<String>,
    pub amount_centavos: i64,
    pub method: String,
    pub installments: Vec<InstallmentView>,
    pub monthly_interest_bps: i64,
    pub total_centavos: i64,
    /// Custo Efetivo Total a year, in basis points (Resolução CMN 3.517).
    pub cet_annual_bps: i64,
    pub decision: Option<DecisionView>,
    /// The platform's fee on this payment, in basis points, and whether the provider's share is
    /// held in escrow until the procedure is confirmed.
    pub fee_bps: i64,
    pub escrow: bool,
    /// The gateway charge of the current installment: the PIX BR Code or the boleto to pay.
    pub charge: Option<ChargeView>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeView {
    pub id: String,
    pub installment: u32,
    pub method: String,
    pub amount_centavos: i64,
    /// `active` (to be paid), `paid` or `cancelled`.
    pub status: String,
    /// PIX "copia e cola" (BR Code).
    pub pix_br_code: Option<String>,
    /// When the PIX code stops being payable.
    pub pix_expires_at: Option<String>,
    pub boleto_linha_digitavel: Option<String>,
    pub boleto_barcode: Option<String>,
    /// ISO 8601 date, for due-date charges and boletos.
    pub due_date: Option<String>,
}

impl ChargeView {
    pub fn new(charge: &ChargeRecord) -> ChargeView {
        ChargeView {
            id: charge.id.clone(),
            installment: charge.installment,
            method: charge.method.as_str().to_owned(),
            amount_centavos: charge.amount_centavos,
            status: charge.status.as_str().to_owned(),
            pix_br_code: charge.br_code.clone(),
            pix_expires_at: charge.expires_at_ms.map(timestamp),
            boleto_linha_digitavel: charge.linha_digitavel.clone(),
            boleto_barcode: charge.barcode.clone(),
            due_date: charge.due_date.clone(),
        }
    }
}

impl PaymentView {
    pub fn new(
        payment: &PaymentRecord,
        decision: Option<&DecisionRecord>,
        charge: Option<&ChargeRecord>,
    ) -> PaymentView {
        PaymentView {
            id: payment.id.to_string(),
            status: payment.status.as_str().to_owned(),
            provider_id: payment.provider_id.to_string(),
            patient_id: payment.patient_id.to_string(),
            procedure: ProcedureInput {
                tuss_code: payment.tuss_code.as_str().to_owned(),
                description: payment.description.clone(),
            },
            procedure_term: None,
            amount_centavos: payment.amount_centavos,
            method: payment.method.as_str().to_owned(),
            installments: payment
                .installments
                .iter()
                .map(|i| InstallmentView {
                    number: i.number,
                    due_date: i.due_date.to_string(),
                    amount_centavos: i.amount_centavos,
                })
                .collect(),
            monthly_interest_bps: payment.monthly_interest_bps,
            total_centavos: payment.total_centavos,
            cet_annual_bps: payment.cet_annual_bps,
            decision: decision.map(DecisionView::new),
            fee_bps: payment.fee_bps,
            escrow: payment.escrow,
            charge: charge.map(ChargeView::new),
            created_at: timestamp(payment.created_at_ms),
            updated_at: timestamp(payment.updated_at_ms),
        }
    }

    /// A payment as its events and its stored answer show it.
    pub fn render(
        payment: &PaymentRecord,
        decision: Option<&DecisionRecord>,
        charge: Option<&ChargeRecord>,
    ) -> serde_json::Value {
        // Serialising plain structs of strings and integers cannot fail.
        serde_json::to_value(PaymentView::new(payment, decision, charge)).unwrap_or_default()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentSummary {
    pub id: String,
    pub status: String,
    pub provider_id: String,
    pub patient_id: String,
    pub tuss_code: String,
    pub amount_centavos: i64,
    pub method: String,
    pub total_centavos: i64,
    pub created_at: String,
}

impl PaymentSummary {
    pub fn new(payment: &PaymentRecord) -> PaymentSummary {
        PaymentSummary {
            id: payment.id.to_string(),
            status: payment.status.as_str().to_owned(),
            provider_id: payment.provider_id.to_string(),
            patient_id: payment.patient_id.to_string(),
            tuss_code: payment.tuss_code.as_str().to_owned(),
            amount_centavos: payment.amount_centavos,
            method: payment.method.as_str().to_owned(),
            total_centavos: payment.total_centavos,
            created_at: timestamp(payment.created_at_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentList {
    pub data: Vec<PaymentSummary>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    pub next_before: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentQuery {
    pub patient_id: Option<String>,
    pub provider_id: Option<String>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
    /// The `next_before` of the previous page.
    pub before: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub created_at: String,
}

impl EventView {
    pub fn new(record: &EventRecord) -> EventView {
        EventView {
            seq: record.seq,
            kind: record.kind.clone(),
            data: record.data.clone(),
            created_at: timestamp(record.created_at_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub data: Vec<EventView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events with a sequence number above this (default 0: all).
    pub after: Option<i64>,
    /// Page size, 1–500 (default 100).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

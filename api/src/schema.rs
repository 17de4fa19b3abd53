//! The constraints the handlers enforce, stated in the OpenAPI description from the same constants
//! the handlers check (utoipa's field attributes take only literals; `schema_with` takes these), so
//! that generated clients and fuzzers send what the API accepts.

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};

/// Printable characters (no C0 or C1 control), at least one of them not blank.
const PRINTABLE: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// Text of 1 to `max` printable characters.
pub fn printable(max: usize, description: &str) -> ObjectBuilder {
    string().min_length(Some(1)).max_length(Some(max)).pattern(Some(PRINTABLE)).description(Some(description))
}

/// 1 to `max` visible ASCII characters (`!` to `~`).
pub fn visible_ascii(max: usize, description: &str) -> ObjectBuilder {
    string().pattern(Some(format!("^[!-~]{{1,{max}}}$"))).description(Some(description))
}

pub fn one_of(values: &[&str], description: &str) -> ObjectBuilder {
    string().enum_values(Some(values.iter().copied())).description(Some(description))
}

pub fn integer(min: i64, max: i64, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min as f64))
        .maximum(Some(max as f64))
        .description(Some(description))
}

pub fn number(min: f64, max: f64, description: &str) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Number).minimum(Some(min)).maximum(Some(max)).description(Some(description))
}

pub fn uuid(description: &str) -> ObjectBuilder {
    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))).description(Some(description))
}

/// Optional: the same schema, `null` allowed.
pub fn or_null(schema: ObjectBuilder) -> RefOr<Schema> {
    let schema = schema.build();
    let mut types = vec![Type::Null];
    if let utoipa::openapi::schema::SchemaType::Type(kind) = &schema.schema_type {
        types.insert(0, kind.clone());
    }
    let mut schema = schema;
    schema.schema_type = utoipa::openapi::schema::SchemaType::from_iter(types);
    RefOr::T(Schema::Object(schema))
}

/// An IPv4 or IPv6 address.
pub fn ip(description: &str) -> RefOr<Schema> {
    let schema = OneOfBuilder::new()
        .item(string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv4))))
        .item(string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv6))))
        .description(Some(description))
        .build();
    RefOr::T(Schema::OneOf(schema))
}

// Named field schemas, shared by the request bodies that take the same kind of value.

pub fn reason() -> ObjectBuilder {
    printable(500, "Why, 1 to 500 printable characters; kept with the change.")
}

pub fn note() -> ObjectBuilder {
    printable(500, "What the analyst found, 1 to 500 printable characters.")
}

pub fn party_name() -> ObjectBuilder {
    printable(crate::parties::NAME_LENGTH_MAX, "The name, 1 to 120 printable characters.")
}

pub fn person_name() -> ObjectBuilder {
    printable(crate::people::PERSON_NAME_LENGTH_MAX, "The person's name, 1 to 200 printable characters.")
}

pub fn email() -> ObjectBuilder {
    // One @, a dotted domain that neither starts nor ends with a dot, nothing blank or control.
    const LOCAL: &str = r"[^@\s\x00-\x1f\x7f-\x9f]";
    const DOMAIN: &str = r"[^@.\s\x00-\x1f\x7f-\x9f]";
    string()
        .max_length(Some(crate::parties::EMAIL_LENGTH_MAX))
        .pattern(Some(format!("^{LOCAL}+@{DOMAIN}{LOCAL}*\\.{LOCAL}*{DOMAIN}$")))
        .description(Some("name@domain.tld"))
}

pub fn phone() -> ObjectBuilder {
    string()
        // A Brazilian number as people write it; the API also takes other spellings of 10 to 15
        // digits with +, spaces, ( ) and -.
        .pattern(Some(r"^\+?[0-9]{2} ?[0-9]{2} ?[0-9]{4,5}-?[0-9]{4}$"))
        .description(Some("+55 11 99999-0000: 10 to 15 digits, with +, spaces, ( ) and - allowed."))
}

pub fn cpf() -> ObjectBuilder {
    string()
        .pattern(Some(r"^[0-9]{3}\.?[0-9]{3}\.?[0-9]{3}-?[0-9]{2}$"))
        .description(Some("CPF, mask optional; its two check digits must be right."))
}

pub fn cnpj() -> ObjectBuilder {
    string()
        .pattern(Some(r"^[0-9A-Z]{2}\.?[0-9A-Z]{3}\.?[0-9A-Z]{3}/?[0-9A-Z]{4}-?[0-9]{2}$"))
        .description(Some("CNPJ, numeric or alphanumeric, mask optional; its two check digits must be right."))
}

pub fn basis_points() -> ObjectBuilder {
    integer(0, 10_000, "Basis points, 0 to 10 000 (10 000 is 100 %).")
}

pub fn score() -> ObjectBuilder {
    integer(0, 1_000, "A model score, 0 to 1 000.")
}

pub fn token_days() -> RefOr<Schema> {
    or_null(integer(1, 365, "The token's life in days, 1 to 365 (90 by default)."))
}

pub fn fail_mode() -> ObjectBuilder {
    one_of(&["open", "closed"], "`open` (send to review) or `closed` (decline) when scoring cannot answer in time.")
}

pub fn score_or_null() -> RefOr<Schema> {
    or_null(score())
}

pub fn fail_mode_or_null() -> RefOr<Schema> {
    or_null(fail_mode())
}

pub fn provider_max_amount() -> ObjectBuilder {
    integer(
        1,
        crate::parties::PROVIDER_MAX_AMOUNT_CENTAVOS,
        "Largest single payment accepted, in centavos; larger ones are declined.",
    )
}

pub fn provider_max_amount_or_null() -> RefOr<Schema> {
    or_null(provider_max_amount())
}

pub fn review_hours() -> ObjectBuilder {
    let max = i64::from(medpay_store::REVIEW_TIME_LIMIT_HOURS_MAX);
    integer(
        0,
        max,
        "Hours a payment sent to review waits for an analyst; then the fail mode resolves it (open approves, closed declines).",
    )
}

pub fn review_hours_or_null() -> RefOr<Schema> {
    or_null(review_hours())
}

pub fn chat_text() -> ObjectBuilder {
    printable(medpay_actors::chat::MESSAGE_CHARS_MAX, "The message, 1 to 1 000 printable characters.")
}

pub fn review_outcome() -> ObjectBuilder {
    one_of(
        &["upheld", "rejected", "decline", "approve"],
        "`upheld` (the suspicion stands: a payment in review is declined, an unpaid one cancelled, a paid one \
         refunded in full; labelled fraud) or `rejected` (the charge is the patient's: a payment in review is \
         approved and charged; labelled legitimate). `decline` and `approve` say the same of a payment in review.",
    )
}

pub fn procedure_outcome() -> ObjectBuilder {
    one_of(
        &["performed", "cancelled"],
        "`performed` (release the escrow to the provider) or `cancelled` (refund the patient).",
    )
}

pub fn webhook_url() -> ObjectBuilder {
    string()
        .max_length(Some(crate::events::URL_LENGTH_MAX))
        .pattern(Some("^https?://[^\\s]+$"))
        .description(Some("`https://…` (`http://` only for loopback, with the development setting)."))
}

pub fn version_id() -> ObjectBuilder {
    uuid("The registered version (its id) the alias is to point at.")
}

pub fn refund_amount() -> ObjectBuilder {
    use medpay_models::installments::AMOUNT_MAX_CENTAVOS;
    integer(1, AMOUNT_MAX_CENTAVOS, "Integer centavos, at most what was paid and not refunded yet.")
}

pub fn key_label() -> ObjectBuilder {
    printable(crate::parties::KEY_LABEL_LENGTH_MAX, "What the key is for (`produção`, `integração da agenda`).")
}

pub fn role() -> ObjectBuilder {
    one_of(&["admin", "analyst", "support"], "What the person may do.")
}

pub fn rule_name() -> ObjectBuilder {
    string()
        .pattern(Some(format!("^[a-z0-9_]{{1,{}}}$", crate::risk::RULE_NAME_LENGTH_MAX)))
        .description(Some("Lower-case letters, digits and `_`; shown as the reason code when the rule decides."))
}

pub fn rule_source() -> ObjectBuilder {
    string()
        .min_length(Some(1))
        .max_length(Some(medpay_ml::dsl::RULE_SOURCE_LENGTH_MAX))
        .description(Some("E.g. `review if amount_centavos > 500000 and patient_age_days < 1`."))
}

pub fn backtest_limit() -> RefOr<Schema> {
    or_null(integer(
        1,
        crate::risk::BACKTEST_ROWS_MAX,
        "How many of the most recent scored payments to replay (10 000 by default).",
    ))
}

pub fn list_name() -> ObjectBuilder {
    one_of(&["allow", "block"], "Which list.")
}

pub fn list_kind() -> ObjectBuilder {
    one_of(&["cpf", "device", "ip", "card"], "What the value is.")
}

pub fn list_value() -> ObjectBuilder {
    visible_ascii(crate::risk::LIST_VALUE_LENGTH_MAX, "The value in clear; only its hash is stored.")
}

pub fn label_note() -> ObjectBuilder {
    string().max_length(Some(crate::risk::NOTE_LENGTH_MAX)).description(Some("Optional, at most 500 characters."))
}

pub fn model_kind() -> ObjectBuilder {
    one_of(&["logistic", "tree", "boosted"], "`logistic`, `tree` or `boosted` (gradient-boosted trees).")
}

pub fn holdout() -> RefOr<Schema> {
    use crate::training::{TRAINING_HOLDOUT_MAX, TRAINING_HOLDOUT_MIN};
    or_null(number(
        TRAINING_HOLDOUT_MIN,
        TRAINING_HOLDOUT_MAX,
        "The later share of the labelled decisions to evaluate on (0.2 by default).",
    ))
}

pub fn link_days() -> RefOr<Schema> {
    or_null(integer(1, crate::checkout::LINK_DAYS_MAX, "The link's life in days, 1 to 365 (30 by default)."))
}

//! The reports' raw numbers, computed where the data is: with SQL over the tables (the embedded
//! default) or with a MongoDB aggregation pipeline over the exported payment facts. Both are
//! generated from one table of measures (`PAYMENT_MEASURES`, `MODEL_MEASURES`), so the two cannot
//! drift apart in what a number means; both group by local day (America/Sao_Paulo, UTC−3 since
//! 2019) and a dimension, and the caller rolls days up into weeks and months.
//!
//! Every fact is an integer or a string that is always present: MongoDB and the stand-in the
//! tests use differ on sums over missing fields, so nothing here relies on one.

use crate::database::{Store, StoreError};
use chrono::NaiveDate;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

/// America/Sao_Paulo has kept UTC−3 all year since 2019 (no daylight saving).
pub const LOCAL_OFFSET_MS: i64 = 3 * 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// The local day number (days since 1970-01-01 in São Paulo) of an instant.
pub fn day_number(at_ms: i64) -> i64 {
    (at_ms - LOCAL_OFFSET_MS).div_euclid(DAY_MS)
}

/// The first instant of a local day.
pub fn day_start_ms(day: i64) -> i64 {
    day * DAY_MS + LOCAL_OFFSET_MS
}

pub fn day_date(day: i64) -> NaiveDate {
    NaiveDate::default() + chrono::Duration::days(day)
}

pub fn date_day(date: NaiveDate) -> i64 {
    (date - NaiveDate::default()).num_days()
}

/// One payment as the reports see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFact {
    pub id: String,
    pub provider_id: String,
    pub tuss_code: String,
    pub method: String,
    pub status: String,
    pub amount_centavos: i64,
    pub installments_count: i64,
    pub created_at_ms: i64,
    pub day_number: i64,
    /// The first decision's outcome (`approve`, `review`, `decline`; `none` if it has none).
    pub outcome: String,
    pub score: i64,
    /// `score / 100`, 0 to 9 (1000 is in 9).
    pub score_bucket: i64,
    /// 1 if the first decision did not approve.
    pub flagged: i64,
    pub model_version: String,
    pub labelled: i64,
    pub fraud: i64,
    /// 1 once any of its charges is paid.
    pub paid: i64,
    /// From the request to the first charge paid; 0 while unpaid.
    pub time_to_pay_ms: i64,
    pub chargeback: i64,
    pub med: i64,
    /// Completed refunds and cancellations (chargebacks and MED claims are counted apart).
    pub refunds: i64,
    pub refunded_centavos: i64,
    pub escrow_held_centavos: i64,
    pub escrow_released_centavos: i64,
}

/// The facts of the payments `filter` selects (`p` is `payments`). Scalar subqueries keep each
/// lookup on its table's payment index.
pub(crate) fn facts_sql(filter: &str) -> String {
    format!(
        "SELECT id, provider_id, tuss_code, method, status, amount_centavos, installments_count, created_at_ms,
                CAST((created_at_ms - {LOCAL_OFFSET_MS}) / {DAY_MS} AS BIGINT) AS day_number,
                COALESCE(outcome, 'none') AS outcome,
                COALESCE(score, 0) AS score,
                CAST(CASE WHEN COALESCE(score, 0) >= 1000 THEN 9 ELSE COALESCE(score, 0) / 100 END AS BIGINT) AS score_bucket,
                CAST(CASE WHEN outcome IS NULL OR outcome = 'approve' THEN 0 ELSE 1 END AS BIGINT) AS flagged,
                COALESCE(model_version, '') AS model_version,
                CAST(CASE WHEN label IS NULL THEN 0 ELSE 1 END AS BIGINT) AS labelled,
                CAST(COALESCE(label, 0) AS BIGINT) AS fraud,
                CAST(CASE WHEN first_paid_at_ms IS NULL THEN 0 ELSE 1 END AS BIGINT) AS paid,
                CAST(CASE WHEN first_paid_at_ms IS NULL THEN 0 ELSE first_paid_at_ms - created_at_ms END AS BIGINT) AS time_to_pay_ms,
                CAST(chargeback AS BIGINT) AS chargeback, CAST(med AS BIGINT) AS med, CAST(refunds AS BIGINT) AS refunds, refunded_centavos,
                CAST(0 - escrow_balance AS BIGINT) AS escrow_held_centavos, escrow_released_centavos
         FROM (
           SELECT p.id, p.provider_id, p.tuss_code, p.method, p.status, p.amount_centavos, p.installments_count,
                  p.created_at_ms,
                  (SELECT d.outcome FROM decisions d WHERE d.payment_id = p.id ORDER BY d.created_at_ms, d.id LIMIT 1) AS outcome,
                  (SELECT d.score FROM decisions d WHERE d.payment_id = p.id ORDER BY d.created_at_ms, d.id LIMIT 1) AS score,
                  (SELECT d.model_version FROM decisions d WHERE d.payment_id = p.id ORDER BY d.created_at_ms, d.id LIMIT 1) AS model_version,
                  (SELECT l.is_fraud FROM payment_labels l WHERE l.payment_id = p.id) AS label,
                  (SELECT MIN(c.paid_at_ms) FROM charges c WHERE c.payment_id = p.id) AS first_paid_at_ms,
                  CASE WHEN EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = p.id AND r.kind = 'chargeback') THEN 1 ELSE 0 END AS chargeback,
                  CASE WHEN EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = p.id AND r.kind = 'med') THEN 1 ELSE 0 END AS med,
                  (SELECT COUNT(*) FROM refunds r WHERE r.payment_id = p.id AND r.kind IN ('refund', 'cancellation') AND r.status = 'completed') AS refunds,
                  (SELECT CAST(COALESCE(SUM(r.amount_centavos), 0) AS BIGINT) FROM refunds r
                    WHERE r.payment_id = p.id AND r.kind IN ('refund', 'cancellation') AND r.status = 'completed') AS refunded_centavos,
                  (SELECT CAST(COALESCE(SUM(e.amount_centavos), 0) AS BIGINT) FROM ledger_entries e
                    WHERE e.payment_id = p.id AND e.account LIKE 'provider_escrow:%') AS escrow_balance,
                  (SELECT CAST(COALESCE(SUM(e.amount_centavos), 0) AS BIGINT) FROM ledger_entries e
                    WHERE e.payment_id = p.id AND e.kind = 'escrow_release' AND e.account LIKE 'provider_escrow:%') AS escrow_released_centavos
           FROM payments p WHERE {filter}
         ) raw"
    )
}

impl PaymentFact {
    pub(crate) fn from_row(row: &AnyRow) -> Result<PaymentFact, StoreError> {
        let int = |column: &str| -> Result<i64, StoreError> { Ok(row.try_get::<i64, _>(column)?) };
        let text = |column: &str| -> Result<String, StoreError> { Ok(row.try_get::<String, _>(column)?) };
        Ok(PaymentFact {
            id: text("id")?,
            provider_id: text("provider_id")?,
            tuss_code: text("tuss_code")?,
            method: text("method")?,
            status: text("status")?,
            amount_centavos: int("amount_centavos")?,
            installments_count: int("installments_count")?,
            created_at_ms: int("created_at_ms")?,
            day_number: int("day_number")?,
            outcome: text("outcome")?,
            score: int("score")?,
            score_bucket: int("score_bucket")?,
            flagged: int("flagged")?,
            model_version: text("model_version")?,
            labelled: int("labelled")?,
            fraud: int("fraud")?,
            paid: int("paid")?,
            time_to_pay_ms: int("time_to_pay_ms")?,
            chargeback: int("chargeback")?,
            med: int("med")?,
            refunds: int("refunds")?,
            refunded_centavos: int("refunded_centavos")?,
            escrow_held_centavos: int("escrow_held_centavos")?,
            escrow_released_centavos: int("escrow_released_centavos")?,
        })
    }

    /// The fact as its MongoDB document (`day` is the local date, for grouping by string).
    pub fn document(&self) -> mongodb::bson::RawDocumentBuf {
        mongodb::bson::rawdoc! {
            "_id": self.id.as_str(),
            "provider_id": self.provider_id.as_str(),
            "tuss_code": self.tuss_code.as_str(),
            "method": self.method.as_str(),
            "status": self.status.as_str(),
            "amount_centavos": self.amount_centavos,
            "installments_count": self.installments_count,
            "created_at_ms": self.created_at_ms,
            "day_number": self.day_number,
            "day": day_date(self.day_number).to_string(),
            "outcome": self.outcome.as_str(),
            "score": self.score,
            "score_bucket": self.score_bucket,
            "flagged": self.flagged,
            "model_version": self.model_version.as_str(),
            "labelled": self.labelled,
            "fraud": self.fraud,
            "paid": self.paid,
            "time_to_pay_ms": self.time_to_pay_ms,
            "chargeback": self.chargeback,
            "med": self.med,
            "refunds": self.refunds,
            "refunded_centavos": self.refunded_centavos,
            "escrow_held_centavos": self.escrow_held_centavos,
            "escrow_released_centavos": self.escrow_released_centavos,
        }
    }
}

/// A condition on a fact.
#[derive(Debug, Clone, Copy)]
pub enum Condition {
    TextIs(&'static str, &'static str),
    NumberIs(&'static str, i64),
    /// Inclusive range.
    Between(&'static str, i64, i64),
}

/// A number of a report: the sum of `field` (1 when none: a count) over the facts that meet
/// every condition.
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    pub name: &'static str,
    pub field: Option<&'static str>,
    pub when: &'static [Condition],
}

const fn count(name: &'static str, when: &'static [Condition]) -> Measure {
    Measure { name, field: None, when }
}

const fn sum(name: &'static str, field: &'static str, when: &'static [Condition]) -> Measure {
    Measure { name, field: Some(field), when }
}

use Condition::{Between, NumberIs, TextIs};

pub const PAYMENT_MEASURES: &[Measure] = &[
    count("payments", &[]),
    sum("amount_centavos", "amount_centavos", &[]),
    count("approved", &[TextIs("outcome", "approve")]),
    sum("approved_centavos", "amount_centavos", &[TextIs("outcome", "approve")]),
    count("review", &[TextIs("outcome", "review")]),
    sum("review_centavos", "amount_centavos", &[TextIs("outcome", "review")]),
    count("declined", &[TextIs("outcome", "decline")]),
    sum("declined_centavos", "amount_centavos", &[TextIs("outcome", "decline")]),
    sum("paid", "paid", &[]),
    sum("paid_centavos", "amount_centavos", &[NumberIs("paid", 1)]),
    sum("time_to_pay_ms", "time_to_pay_ms", &[]),
    sum("labelled", "labelled", &[]),
    sum("fraud", "fraud", &[]),
    sum("chargebacks", "chargeback", &[]),
    sum("med_claims", "med", &[]),
    sum("refunds", "refunds", &[]),
    sum("refunded_centavos", "refunded_centavos", &[]),
    sum("escrow_held_centavos", "escrow_held_centavos", &[]),
    sum("escrow_released_centavos", "escrow_released_centavos", &[]),
    count("installments_1", &[Between("installments_count", 1, 1)]),
    count("installments_2_3", &[Between("installments_count", 2, 3)]),
    count("installments_4_6", &[Between("installments_count", 4, 6)]),
    count("installments_7_12", &[Between("installments_count", 7, 12)]),
    count("installments_13_24", &[Between("installments_count", 13, 24)]),
];

pub const MODEL_MEASURES: &[Measure] = &[
    count("scored", &[]),
    count("score_0", &[NumberIs("score_bucket", 0)]),
    count("score_1", &[NumberIs("score_bucket", 1)]),
    count("score_2", &[NumberIs("score_bucket", 2)]),
    count("score_3", &[NumberIs("score_bucket", 3)]),
    count("score_4", &[NumberIs("score_bucket", 4)]),
    count("score_5", &[NumberIs("score_bucket", 5)]),
    count("score_6", &[NumberIs("score_bucket", 6)]),
    count("score_7", &[NumberIs("score_bucket", 7)]),
    count("score_8", &[NumberIs("score_bucket", 8)]),
    count("score_9", &[NumberIs("score_bucket", 9)]),
    count("true_positives", &[NumberIs("labelled", 1), NumberIs("fraud", 1), NumberIs("flagged", 1)]),
    count("false_positives", &[NumberIs("labelled", 1), NumberIs("fraud", 0), NumberIs("flagged", 1)]),
    count("false_negatives", &[NumberIs("labelled", 1), NumberIs("fraud", 1), NumberIs("flagged", 0)]),
    count("true_negatives", &[NumberIs("labelled", 1), NumberIs("fraud", 0), NumberIs("flagged", 0)]),
];

/// What the rows are split by besides the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    None,
    Procedure,
    Provider,
    ModelVersion,
}

impl Dimension {
    fn field(self) -> Option<&'static str> {
        match self {
            Dimension::None => None,
            Dimension::Procedure => Some("tuss_code"),
            Dimension::Provider => Some("provider_id"),
            Dimension::ModelVersion => Some("model_version"),
        }
    }
}

/// Which payments a report counts: made on local days `from_day..to_day` (end excluded), of one
/// provider or all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactFilter {
    pub provider: Option<String>,
    pub from_day: i64,
    pub to_day: i64,
}

/// One group's numbers, in the order of its measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub day: i64,
    /// The dimension's value ("" with none).
    pub key: String,
    pub values: Vec<i64>,
}

fn sql_condition(condition: &Condition) -> String {
    match condition {
        TextIs(field, value) => format!("f.{field} = '{value}'"),
        NumberIs(field, value) => format!("f.{field} = {value}"),
        Between(field, low, high) => format!("f.{field} BETWEEN {low} AND {high}"),
    }
}

fn sql_measure(measure: &Measure) -> String {
    let value = measure.field.map_or_else(|| "1".to_owned(), |field| format!("f.{field}"));
    let total = if measure.when.is_empty() {
        value
    } else {
        let conditions: Vec<String> = measure.when.iter().map(sql_condition).collect();
        format!("CASE WHEN {} THEN {value} ELSE 0 END", conditions.join(" AND "))
    };
    format!("CAST(SUM({total}) AS BIGINT) AS {}", measure.name)
}

fn mongo_condition(condition: &Condition) -> Value {
    match condition {
        TextIs(field, value) => json!({"$eq": [format!("${field}"), value]}),
        NumberIs(field, value) => json!({"$eq": [format!("${field}"), value]}),
        Between(field, low, high) => json!({"$and": [
            {"$gte": [format!("${field}"), low]},
            {"$lte": [format!("${field}"), high]},
        ]}),
    }
}

fn mongo_measure(measure: &Measure) -> Value {
    let value = measure.field.map_or_else(|| json!(1), |field| json!(format!("${field}")));
    if measure.when.is_empty() {
        return json!({"$sum": value});
    }
    let condition = match measure.when {
        [one] => mongo_condition(one),
        many => json!({"$and": many.iter().map(mongo_condition).collect::<Vec<_>>()}),
    };
    json!({"$sum": {"$cond": [condition, value, 0]}})
}

/// The aggregation over the `payments` collection that gives what `Store::report_groups` gives
/// with SQL. Groups are keyed `day|value`, a single string: composite `_id`s are where the
/// stand-in falls short, and a string key works on both.
pub fn mongo_pipeline(filter: &FactFilter, dimension: Dimension, measures: &[Measure]) -> Vec<Value> {
    let mut matched = json!({"day_number": {"$gte": filter.from_day, "$lt": filter.to_day}});
    if let Some(provider) = &filter.provider {
        matched["provider_id"] = json!(provider);
    }
    let key = match dimension.field() {
        None => json!("$day"),
        Some(field) => json!({"$concat": ["$day", "|", format!("${field}")]}),
    };
    let mut group = serde_json::Map::new();
    group.insert("_id".into(), key);
    for measure in measures {
        group.insert(measure.name.into(), mongo_measure(measure));
    }
    vec![json!({"$match": matched}), json!({"$group": group}), json!({"$sort": {"_id": 1}})]
}

/// A `mongo_pipeline` result back as a `GroupRow` (`None` if it is not one).
pub fn group_from_document(document: &Value, measures: &[Measure]) -> Option<GroupRow> {
    let key = document.get("_id")?.as_str()?;
    let (date, value) = key.split_once('|').unwrap_or((key, ""));
    let day = date_day(date.parse().ok()?);
    let values = measures
        .iter()
        .map(|measure| {
            let number = document.get(measure.name).unwrap_or(&Value::Null);
            // A real MongoDB sums integers to integers; the stand-in may give a float.
            number.as_i64().or_else(|| number.as_f64().map(|float| float.round() as i64)).unwrap_or(0)
        })
        .collect();
    Some(GroupRow { day, key: value.to_owned(), values })
}

impl Store {
    /// The numbers of `measures` per local day and `dimension`, with SQL.
    pub async fn report_groups(
        &self,
        filter: &FactFilter,
        dimension: Dimension,
        measures: &[Measure],
    ) -> Result<Vec<GroupRow>, StoreError> {
        let mut condition = format!(
            "p.created_at_ms >= {} AND p.created_at_ms < {}",
            day_start_ms(filter.from_day),
            day_start_ms(filter.to_day)
        );
        let mut binds = Vec::new();
        if let Some(provider) = &filter.provider {
            condition.push_str(" AND p.provider_id = $1");
            binds.push(provider.clone());
        }
        // PostgreSQL refuses a constant in ORDER BY: unsplit, the key is only selected.
        let (key, grouping) = match dimension.field() {
            Some(field) => (format!("f.{field}"), format!("f.day_number, f.{field}")),
            None => ("CAST('' AS TEXT)".to_owned(), "f.day_number".to_owned()),
        };
        let columns: Vec<String> = measures.iter().map(sql_measure).collect();
        let sql = format!(
            "SELECT f.day_number AS day_number, {key} AS group_key, {} FROM ({}) f
             GROUP BY {grouping} ORDER BY {grouping}",
            columns.join(", "),
            facts_sql(&condition)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = query.bind(bind);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(GroupRow {
                    day: row.try_get("day_number")?,
                    key: row.try_get("group_key")?,
                    values: measures
                        .iter()
                        .map(|measure| row.try_get::<i64, _>(measure.name))
                        .collect::<Result<Vec<_>, _>>()?,
                })
            })
            .collect()
    }

    /// One payment's facts (none if there is no such payment).
    pub async fn payment_fact(&self, payment: &str) -> Result<Option<PaymentFact>, StoreError> {
        Ok(self.payment_facts_where("p.id = $1", &[payment.to_owned()]).await?.pop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_days_start_at_three_in_the_morning_utc() {
        // 2026-12-01T02:59:59.999Z is still 30 November in São Paulo.
        let first = chrono::DateTime::parse_from_rfc3339("2026-12-01T03:00:00Z").unwrap().timestamp_millis();
        assert_eq!(day_date(day_number(first)).to_string(), "2026-12-01");
        assert_eq!(day_date(day_number(first - 1)).to_string(), "2026-11-30");
        assert_eq!(day_start_ms(day_number(first)), first);
        assert_eq!(date_day(day_date(20_000)), 20_000);
    }

    #[test]
    fn both_engines_read_the_same_measures() {
        let pipeline = mongo_pipeline(
            &FactFilter { provider: Some("prv_a".into()), from_day: 10, to_day: 20 },
            Dimension::Procedure,
            PAYMENT_MEASURES,
        );
        let group = &pipeline[1]["$group"];
        for measure in PAYMENT_MEASURES {
            assert!(group.get(measure.name).is_some(), "{} in the pipeline", measure.name);
            assert!(sql_measure(measure).ends_with(&format!(" AS {}", measure.name)));
        }
        assert_eq!(pipeline[0]["$match"]["provider_id"], "prv_a");
        assert_eq!(group["_id"], json!({"$concat": ["$day", "|", "$tuss_code"]}));
        assert_eq!(
            sql_measure(&PAYMENT_MEASURES[3]),
            "CAST(SUM(CASE WHEN f.outcome = 'approve' THEN f.amount_centavos ELSE 0 END) AS BIGINT) AS approved_centavos"
        );
        let row = group_from_document(
            &json!({"_id": "2026-12-01|40101010", "payments": 3, "amount_centavos": 7.0}),
            &PAYMENT_MEASURES[..3],
        )
        .unwrap();
        assert_eq!(row.key, "40101010");
        assert_eq!(row.values, vec![3, 7, 0]);
        assert_eq!(day_date(row.day).to_string(), "2026-12-01");
    }
}

//! Reports for providers and the platform (issue 14): payments by outcome and their money, rates,
//! installment mix, time to pay, escrow and refunds, per day, week or month and by procedure or
//! provider; and for the models, the score distribution and precision/recall as labels arrive.
//! The store computes per-day groups (SQL, or MongoDB's aggregation when `MONGODB_URL` is set);
//! here they are rolled up into periods, turned into rates, and served as JSON, CSV or charts.

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, NaiveDate};
use medpay_store::analytics::{
    Dimension, FactFilter, GroupRow, MODEL_MEASURES, Measure, PAYMENT_MEASURES, date_day, day_date, day_number,
    group_from_document, mongo_pipeline,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// Longest range one report covers.
pub const REPORT_RANGE_DAYS_MAX: i64 = 731;
/// The years a report's dates may name (no payment is older; none is centuries ahead).
pub const REPORT_YEAR_MIN: i32 = 2000;
pub const REPORT_YEAR_MAX: i32 = 2200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The first day of the period `day` is in (weeks start on Monday).
    fn start(self, day: NaiveDate) -> NaiveDate {
        match self {
            Period::Day => day,
            Period::Week => day - chrono::Duration::days(i64::from(day.weekday().num_days_from_monday())),
            Period::Month => day.with_day(1).unwrap_or(day),
        }
    }

    /// The last day of the period that starts on `start`.
    fn end(self, start: NaiveDate) -> NaiveDate {
        match self {
            Period::Day => start,
            Period::Week => start + chrono::Duration::days(6),
            Period::Month => {
                let next = if start.month() == 12 {
                    NaiveDate::from_ymd_opt(start.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(start.year(), start.month() + 1, 1)
                };
                next.map_or(start, |next| next - chrono::Duration::days(1))
            }
        }
    }

    /// The range shown when none is asked for: 30 days, 12 weeks or 12 months up to today.
    fn default_from(self, to: NaiveDate) -> NaiveDate {
        match self {
            Period::Day => to - chrono::Duration::days(29),
            Period::Week => to - chrono::Duration::weeks(11),
            Period::Month => to.checked_sub_months(chrono::Months::new(11)).unwrap_or(to),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SplitBy {
    /// One row per period.
    None,
    /// Per TUSS procedure code.
    Procedure,
    /// Per provider (the platform's staff only).
    Provider,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// SQL over the store's tables.
    Sql,
    /// Aggregation pipelines over the documents exported to MongoDB.
    Mongodb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Json,
    Csv,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `day` (default), `week` (from Monday) or `month`.
    pub period: Option<Period>,
    /// First day (YYYY-MM-DD, São Paulo calendar, years 2000–2200); default 30 days, 12 weeks or 12 months before `to`.
    /// Moved back to the start of its period.
    pub from: Option<NaiveDate>,
    /// Last day, included (default today). Moved on to the end of its period; at most 731 days after `from`.
    pub to: Option<NaiveDate>,
    /// Split each period by `procedure` or (staff only) `provider`; default `none`.
    pub by: Option<SplitBy>,
    /// Staff only: one provider's numbers. A provider always sees its own.
    pub provider_id: Option<String>,
    /// `mongodb` (the default when MONGODB_URL is set) or `sql` (the default otherwise).
    pub source: Option<Source>,
    /// `json` (default) or `csv`.
    pub format: Option<Format>,
}

/// One period (and split) of a report.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReportRow {
    /// The period's first day.
    pub period_start: NaiveDate,
    /// The split's value: the TUSS code, the provider id or the model version (absent unsplit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The procedure's official term, when split by procedure and a TUSS catalogue is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub procedure_term: Option<String>,
    /// The sums, by name (payments: `payments`, `amount_centavos`, `approved`,
    /// `approved_centavos`, `review`, `review_centavos`, `declined`, `declined_centavos`, `paid`,
    /// `paid_centavos`, `time_to_pay_ms`, `labelled`, `fraud`, `chargebacks`, `med_claims`,
    /// `refunds`, `refunded_centavos`, `escrow_held_centavos`, `escrow_released_centavos`,
    /// `installments_1`, `installments_2_3`, `installments_4_6`, `installments_7_12`,
    /// `installments_13_24`; models: `scored`, `score_0` … `score_9` (score ÷ 100),
    /// `true_positives`, `false_positives`, `false_negatives`, `true_negatives`).
    pub counts: BTreeMap<String, i64>,
    /// What follows from the counts, absent when its denominator is 0 (payments:
    /// `approval_rate_bps`, `review_rate_bps`, `decline_rate_bps` of payments; `fraud_rate_bps` of
    /// labelled; `chargeback_rate_bps`, `med_rate_bps` of paid; `average_ticket_centavos`;
    /// `average_time_to_pay_ms`; models: `precision_bps`, `recall_bps`, counting review and
    /// decline as flagged).
    pub rates: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Report {
    pub period: Period,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub by: SplitBy,
    /// Whose payments: a provider's id, or absent for the whole platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    pub source: Source,
    pub rows: Vec<ReportRow>,
}

/// A ratio in basis points, rounded half up; none over 0.
fn ratio_bps(numerator: i64, denominator: i64) -> Option<i64> {
    (denominator > 0).then(|| (numerator.saturating_mul(20_000) + denominator) / (2 * denominator))
}

fn ratio(numerator: i64, denominator: i64) -> Option<i64> {
    (denominator > 0).then(|| (numerator.saturating_mul(2) + denominator) / (2 * denominator))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Payments,
    Models,
}

impl Kind {
    fn measures(self) -> &'static [Measure] {
        match self {
            Kind::Payments => PAYMENT_MEASURES,
            Kind::Models => MODEL_MEASURES,
        }
    }

    /// Every rate of this kind, by name, none where its denominator is 0.
    fn rate_values(self, counts: &BTreeMap<String, i64>) -> Vec<(&'static str, Option<i64>)> {
        let get = |name: &str| counts.get(name).copied().unwrap_or(0);
        match self {
            Kind::Payments => vec![
                ("approval_rate_bps", ratio_bps(get("approved"), get("payments"))),
                ("review_rate_bps", ratio_bps(get("review"), get("payments"))),
                ("decline_rate_bps", ratio_bps(get("declined"), get("payments"))),
                ("fraud_rate_bps", ratio_bps(get("fraud"), get("labelled"))),
                ("chargeback_rate_bps", ratio_bps(get("chargebacks"), get("paid"))),
                ("med_rate_bps", ratio_bps(get("med_claims"), get("paid"))),
                ("average_ticket_centavos", ratio(get("amount_centavos"), get("payments"))),
                ("average_time_to_pay_ms", ratio(get("time_to_pay_ms"), get("paid"))),
            ],
            Kind::Models => {
                let (tp, fp, false_negatives) = (get("true_positives"), get("false_positives"), get("false_negatives"));
                vec![("precision_bps", ratio_bps(tp, tp + fp)), ("recall_bps", ratio_bps(tp, tp + false_negatives))]
            }
        }
    }

    fn rates(self, counts: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
        self.rate_values(counts).into_iter().filter_map(|(name, value)| Some((name.to_owned(), value?))).collect()
    }
}

/// What a caller asked, checked and resolved.
struct Asked {
    kind: Kind,
    period: Period,
    from: NaiveDate,
    to: NaiveDate,
    by: SplitBy,
    provider: Option<String>,
    source: Source,
}

fn resolve(state: &AppState, principal: Principal, kind: Kind, query: &ReportQuery) -> Result<Asked, ApiError> {
    let provider = match (principal, kind) {
        (Principal::Provider(own), Kind::Payments) => {
            if query.provider_id.as_deref().is_some_and(|asked| asked != own.to_string()) {
                return Err(ApiError::forbidden("a provider sees only its own numbers"));
            }
            if query.by == Some(SplitBy::Provider) {
                return Err(ApiError::forbidden("a provider sees only its own numbers"));
            }
            Some(own.to_string())
        }
        (other, Kind::Payments) => {
            other.require_analyst()?;
            query.provider_id.clone()
        }
        (other, Kind::Models) => {
            other.require_analyst()?;
            None
        }
    };
    let period = query.period.unwrap_or(Period::Day);
    let today = day_date(day_number(medpay_store::now_ms()));
    for date in [query.from, query.to].into_iter().flatten() {
        if !(REPORT_YEAR_MIN..=REPORT_YEAR_MAX).contains(&date.year()) {
            return Err(ApiError::bad_request(
                "bad_range",
                format!("report dates are from {REPORT_YEAR_MIN} to {REPORT_YEAR_MAX}"),
            ));
        }
    }
    let to = period.end(period.start(query.to.unwrap_or(today)));
    let from = period.start(query.from.unwrap_or_else(|| period.default_from(to)));
    if from > to {
        return Err(ApiError::bad_request("bad_range", "`from` is after `to`"));
    }
    if (to - from).num_days() >= REPORT_RANGE_DAYS_MAX {
        return Err(ApiError::bad_request(
            "range_too_long",
            format!("a report covers at most {REPORT_RANGE_DAYS_MAX} days; ask for a shorter range or a longer period"),
        ));
    }
    let source = match (query.source, state.log.is_some()) {
        (Some(Source::Mongodb), false) => {
            return Err(ApiError::conflict(
                "mongodb_not_configured",
                "this service has no MONGODB_URL: its reports run on SQL (source=sql)",
            ));
        }
        (Some(source), _) => source,
        (None, true) => Source::Mongodb,
        (None, false) => Source::Sql,
    };
    let by = match kind {
        Kind::Models => SplitBy::None,
        Kind::Payments => query.by.unwrap_or(SplitBy::None),
    };
    Ok(Asked { kind, period, from, to, by, provider, source })
}

async fn report(state: &AppState, asked: &Asked) -> Result<Report, ApiError> {
    let filter =
        FactFilter { provider: asked.provider.clone(), from_day: date_day(asked.from), to_day: date_day(asked.to) + 1 };
    let dimension = match (asked.kind, asked.by) {
        (Kind::Models, _) => Dimension::ModelVersion,
        (Kind::Payments, SplitBy::None) => Dimension::None,
        (Kind::Payments, SplitBy::Procedure) => Dimension::Procedure,
        (Kind::Payments, SplitBy::Provider) => Dimension::Provider,
    };
    let measures = asked.kind.measures();
    let groups: Vec<GroupRow> = match (asked.source, &state.log) {
        (Source::Mongodb, Some(log)) => {
            let pipeline = mongo_pipeline(&filter, dimension, measures);
            let documents =
                log.aggregate(medpay_store::log_export::COLLECTION_PAYMENTS, &pipeline).await.map_err(|error| {
                    tracing::warn!(%error, "analytics: MongoDB did not answer");
                    ApiError::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "analytics_unavailable",
                        "MongoDB did not answer; ask again, or ask for source=sql",
                    )
                })?;
            documents.iter().filter_map(|document| group_from_document(document, measures)).collect()
        }
        _ => state.store.report_groups(&filter, dimension, measures).await?,
    };
    let mut periods: BTreeMap<(NaiveDate, String), Vec<i64>> = BTreeMap::new();
    for group in groups {
        let start = asked.period.start(day_date(group.day));
        let sums = periods.entry((start, group.key)).or_insert_with(|| vec![0; measures.len()]);
        for (sum, value) in sums.iter_mut().zip(group.values) {
            *sum = sum.saturating_add(value);
        }
    }
    let split = asked.kind == Kind::Models || asked.by != SplitBy::None;
    let rows = periods
        .into_iter()
        .map(|((period_start, key), sums)| {
            let counts: BTreeMap<String, i64> =
                measures.iter().zip(sums).map(|(measure, sum)| (measure.name.to_owned(), sum)).collect();
            let procedure_term = (asked.by == SplitBy::Procedure).then(|| state.catalogue.term(&key)).flatten();
            ReportRow {
                period_start,
                rates: asked.kind.rates(&counts),
                counts,
                procedure_term,
                key: split.then_some(key),
            }
        })
        .collect();
    Ok(Report {
        period: asked.period,
        from: asked.from,
        to: asked.to,
        by: asked.by,
        provider_id: asked.provider.clone(),
        source: asked.source,
        rows,
    })
}

/// The report as CSV: one line per row, the counts then the rates, empty where a rate has none.
fn csv_body(kind: Kind, report: &Report) -> Result<String, ApiError> {
    let rate_names: Vec<&str> = kind.rate_values(&BTreeMap::new()).into_iter().map(|(name, _)| name).collect();
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["period_start".to_owned(), "key".to_owned(), "procedure_term".to_owned()];
    header.extend(kind.measures().iter().map(|measure| measure.name.to_owned()));
    header.extend(rate_names.iter().map(|name| (*name).to_owned()));
    writer.write_record(&header).map_err(ApiError::internal)?;
    for row in &report.rows {
        let mut record = vec![
            row.period_start.to_string(),
            row.key.clone().unwrap_or_default(),
            row.procedure_term.clone().unwrap_or_default(),
        ];
        record.extend(
            kind.measures().iter().map(|measure| row.counts.get(measure.name).copied().unwrap_or(0).to_string()),
        );
        record.extend(rate_names.iter().map(|name| row.rates.get(*name).map(i64::to_string).unwrap_or_default()));
        writer.write_record(&record).map_err(ApiError::internal)?;
    }
    let bytes = writer.into_inner().map_err(ApiError::internal)?;
    String::from_utf8(bytes).map_err(ApiError::internal)
}

fn answer(kind: Kind, asked: &Asked, report: Report, format: Option<Format>) -> Result<Response, ApiError> {
    if format != Some(Format::Csv) {
        return Ok(Json(report).into_response());
    }
    let name = match kind {
        Kind::Payments => "pagamentos",
        Kind::Models => "modelos",
    };
    let file = format!("medpay-{name}-{}-{}-{}.csv", asked.period.as_str(), asked.from, asked.to);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{file}\"")),
        ],
        csv_body(kind, &report)?,
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/analytics/payments", tag = "analytics", security(("bearer" = [])), params(ReportQuery),
    responses((status = 200, description = "payments by period: outcomes and their amounts, rates, installment mix, time to pay, escrow, refunds (CSV with format=csv)",
            content((Report = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody, description = "`bad_range` (`from` after `to`, or a year outside 2000–2200), `range_too_long` or `invalid_request`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "another provider's numbers, or a patient or support person"),
        (status = 409, body = ErrorBody, description = "`mongodb_not_configured`: source=mongodb without MONGODB_URL"),
        (status = 503, body = ErrorBody, description = "`analytics_unavailable`: MongoDB did not answer")))]
pub async fn payments(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(rejection)?;
    let asked = resolve(&state, principal, Kind::Payments, &query)?;
    let report = report(&state, &asked).await?;
    answer(Kind::Payments, &asked, report, query.format)
}

#[utoipa::path(get, path = "/v1/analytics/models", tag = "analytics", security(("bearer" = [])), params(ReportQuery),
    responses((status = 200, description = "per period and model version (of each payment's first decision): the score distribution by tenths and, over labelled payments, precision and recall (CSV with format=csv)",
            content((Report = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn models(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(rejection)?;
    let asked = resolve(&state, principal, Kind::Models, &query)?;
    let report = report(&state, &asked).await?;
    answer(Kind::Models, &asked, report, query.format)
}

#[utoipa::path(get, path = "/v1/analytics/charts/{chart}", tag = "analytics", security(("bearer" = [])),
    params(("chart" = String, Path, description = "`outcomes.svg`, `amounts.svg`, `rates.svg` (payments: a provider's own, staff any) or `scores.svg`, `precision-recall.svg` (models: analysts)"),
        ReportQuery),
    responses((status = 200, description = "the chart, SVG drawn by the service", content_type = "image/svg+xml"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`chart_not_found`"), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn chart(
    State(state): State<AppState>,
    principal: Principal,
    chart: Result<Path<String>, PathRejection>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(chart) = chart.map_err(rejection)?;
    let Query(query) = query.map_err(rejection)?;
    let Some(chart) = crate::charts::Chart::parse(&chart) else {
        return Err(ApiError::not_found(
            "chart_not_found",
            "the charts are outcomes.svg, amounts.svg, rates.svg, scores.svg and precision-recall.svg",
        ));
    };
    let kind = if chart.of_models() { Kind::Models } else { Kind::Payments };
    let mut asked = resolve(&state, principal, kind, &query)?;
    asked.by = SplitBy::None;
    let report = report(&state, &asked).await?;
    let svg = crate::charts::draw(chart, &report).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], svg).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn periods_start_on_monday_and_on_the_first() {
        assert_eq!(Period::Week.start(date("2026-12-03")), date("2026-11-30"));
        assert_eq!(Period::Week.end(date("2026-11-30")), date("2026-12-06"));
        assert_eq!(Period::Month.start(date("2026-12-31")), date("2026-12-01"));
        assert_eq!(Period::Month.end(date("2026-12-01")), date("2026-12-31"));
        assert_eq!(Period::Month.end(date("2028-02-01")), date("2028-02-29"));
        assert_eq!(Period::Day.end(date("2026-12-03")), date("2026-12-03"));
        assert_eq!(Period::Month.default_from(date("2026-12-31")), date("2026-01-31"));
    }

    #[test]
    fn rates_round_half_up_and_are_absent_over_nothing() {
        assert_eq!(ratio_bps(1, 3), Some(3_333));
        assert_eq!(ratio_bps(2, 3), Some(6_667));
        assert_eq!(ratio_bps(1, 0), None);
        assert_eq!(ratio(5, 2), Some(3));
        let counts: BTreeMap<String, i64> = [
            ("payments", 4),
            ("approved", 3),
            ("labelled", 0),
            ("paid", 2),
            ("chargebacks", 1),
            ("amount_centavos", 10),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        let rates = Kind::Payments.rates(&counts);
        assert_eq!(rates["approval_rate_bps"], 7_500);
        assert_eq!(rates["chargeback_rate_bps"], 5_000);
        assert_eq!(rates["average_ticket_centavos"], 3);
        assert!(!rates.contains_key("fraud_rate_bps"), "no labels, no fraud rate");
    }
}

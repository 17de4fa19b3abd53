//! The risk analysts' endpoints: rules (with backtests), allow and block lists, fraud labels.

use crate::auth::Principal;
use crate::dto::timestamp;
use crate::error::{ApiError, ErrorBody, rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use medpay_ml::dsl::RuleAction;
use medpay_ml::{Features, NamedRule, list_hash, scorer::apply_rules};
use medpay_models::{Cpf, ListKind, ListType, PaymentId};
use medpay_store::{ListEntry, RuleRecord, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub(crate) const RULE_NAME_LENGTH_MAX: usize = 64;
pub(crate) const LIST_VALUE_LENGTH_MAX: usize = 128;
pub(crate) const NOTE_LENGTH_MAX: usize = 500;
/// Most stored payments one backtest replays.
pub(crate) const BACKTEST_ROWS_MAX: i64 = 100_000;
const BACKTEST_ROWS_DEFAULT: i64 = 10_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRule {
    #[schema(schema_with = crate::schema::rule_name)]
    pub name: String,
    #[schema(schema_with = crate::schema::rule_source)]
    pub source: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    pub id: String,
    pub name: String,
    /// `allow`, `decline` or `review`.
    pub action: String,
    pub source: String,
    pub created_at: String,
}

impl RuleView {
    fn new(record: &RuleRecord) -> RuleView {
        RuleView {
            id: record.id.clone(),
            name: record.name.clone(),
            action: record.action.clone(),
            source: record.source.clone(),
            created_at: timestamp(record.created_at_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    pub data: Vec<RuleView>,
    /// The names a rule may use.
    pub variables: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backtest {
    #[schema(schema_with = crate::schema::rule_source)]
    pub source: String,
    #[schema(schema_with = crate::schema::backtest_limit)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BacktestResult {
    pub action: String,
    pub evaluated: usize,
    pub matched: usize,
    pub would_review: usize,
    pub would_decline: usize,
    pub would_allow: usize,
    /// Of the matched payments, how many are labelled fraud, and how many legitimate.
    pub matched_labelled_fraud: usize,
    pub matched_labelled_legitimate: usize,
    /// Labelled fraud among all evaluated payments (the rule's recall is matched_labelled_fraud / this).
    pub labelled_fraud: usize,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateListEntry {
    #[schema(schema_with = crate::schema::list_name)]
    pub list: String,
    #[schema(schema_with = crate::schema::list_kind)]
    pub kind: String,
    #[schema(schema_with = crate::schema::list_value)]
    pub value: String,
    #[schema(schema_with = crate::schema::reason)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListEntryView {
    pub list: String,
    pub kind: String,
    pub value_hash: String,
    /// `hmac-sha256` (keyed with the server's list key), or `sha256` for an entry made before the
    /// key: still matched, and worth entering again (it can be reversed by trying every CPF).
    pub hash: String,
    pub reason: String,
    pub created_at: String,
}

impl ListEntryView {
    fn new(entry: &ListEntry) -> ListEntryView {
        ListEntryView {
            list: entry.list.as_str().to_owned(),
            kind: entry.kind.as_str().to_owned(),
            value_hash: entry.value_hash.clone(),
            hash: if entry.keyed { "hmac-sha256" } else { "sha256" }.to_owned(),
            reason: entry.reason.clone(),
            created_at: timestamp(entry.created_at_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListEntries {
    pub data: Vec<ListEntryView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelPayment {
    pub is_fraud: bool,
    #[serde(default)]
    #[schema(schema_with = crate::schema::label_note)]
    pub note: String,
}

fn invalid_rule(error: &medpay_ml::dsl::RuleError) -> ApiError {
    ApiError::bad_request("invalid_rule", error.to_string())
}

/// Recompiles the stored rules into the shared rule book: what the next decision sees.
pub async fn reload_rules(state: &AppState) -> Result<(), ApiError> {
    let records = state.store.rules().await?;
    let mut compiled = Vec::with_capacity(records.len());
    for record in &records {
        match NamedRule::compile(&record.name, &record.source) {
            Ok(rule) => compiled.push(rule),
            Err(error) => tracing::error!(rule = %record.name, %error, "stored rule does not compile; skipped"),
        }
    }
    state.rules.replace(compiled);
    Ok(())
}

#[utoipa::path(get, path = "/v1/rules", tag = "risk", security(("bearer" = [])),
    responses((status = 200, body = RuleList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_rules(State(state): State<AppState>, principal: Principal) -> Result<Json<RuleList>, ApiError> {
    principal.require_analyst()?;
    let records = state.store.rules().await?;
    let variables = medpay_ml::scorer::rule_variables().into_iter().map(str::to_owned).collect();
    Ok(Json(RuleList { data: records.iter().map(RuleView::new).collect(), variables }))
}

#[utoipa::path(post, path = "/v1/rules", tag = "risk", security(("bearer" = [])), request_body = CreateRule,
    responses((status = 201, body = RuleView, description = "in force from the next decision"),
               (status = 400, body = ErrorBody, description = "the rule does not compile; the message gives the position"),
               (status = 409, body = ErrorBody)))]
pub async fn create_rule(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<CreateRule>, JsonRejection>,
) -> Result<(StatusCode, Json<RuleView>), ApiError> {
    principal.require_analyst()?;
    let Json(body) = body.map_err(rejection)?;
    let name = body.name.trim();
    if name.is_empty()
        || name.len() > RULE_NAME_LENGTH_MAX
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ApiError::bad_request(
            "invalid_rule_name",
            format!("name must be 1 to {RULE_NAME_LENGTH_MAX} of a-z, 0-9 and _"),
        ));
    }
    let compiled = NamedRule::compile(name, &body.source).map_err(|error| invalid_rule(&error))?;
    let record = RuleRecord {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_owned(),
        source: compiled.rule.source.clone(),
        action: compiled.rule.action.as_str().to_owned(),
        created_at_ms: medpay_store::now_ms(),
    };
    let after = serde_json::json!({"name": record.name, "source": record.source});
    let audit = crate::people::audit_entry(principal, "rule.create", &format!("rule:{}", record.id), None, Some(after));
    match state.store.insert_rule(&record, &audit).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(ApiError::conflict("rule_exists", "a rule with this name exists")),
        Err(error) => return Err(error.into()),
    }
    reload_rules(&state).await?;
    tracing::info!(rule = %record.name, source = %record.source, "rule added");
    Ok((StatusCode::CREATED, Json(RuleView::new(&record))))
}

#[utoipa::path(delete, path = "/v1/rules/{id}", tag = "risk", security(("bearer" = [])),
    params(("id" = String, Path, description = "rule id")),
    responses((status = 204, description = "out of force from the next decision"), (status = 404, body = ErrorBody)))]
pub async fn delete_rule(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    principal.require_analyst()?;
    let Path(id) = id.map_err(rejection)?;
    let audit = crate::people::audit_entry(principal, "rule.delete", &format!("rule:{id}"), None, None);
    if !state.store.delete_rule(&id, medpay_store::now_ms(), &audit).await? {
        return Err(ApiError::not_found("rule_not_found", "no such rule"));
    }
    reload_rules(&state).await?;
    tracing::info!(rule_id = %id, "rule removed");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/rules/backtest", tag = "risk", security(("bearer" = [])), request_body = Backtest,
    responses((status = 200, body = BacktestResult), (status = 400, body = ErrorBody)))]
pub async fn backtest(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<Backtest>, JsonRejection>,
) -> Result<Json<BacktestResult>, ApiError> {
    principal.require_analyst()?;
    let Json(body) = body.map_err(rejection)?;
    let candidate = NamedRule::compile("candidate", &body.source).map_err(|error| invalid_rule(&error))?;
    let limit = body.limit.unwrap_or(BACKTEST_ROWS_DEFAULT).clamp(1, BACKTEST_ROWS_MAX);
    let scored = state.store.scored_payments(limit).await?;
    let rules = [candidate];
    let mut result = BacktestResult {
        action: rules[0].rule.action.as_str().to_owned(),
        evaluated: 0,
        matched: 0,
        would_review: 0,
        would_decline: 0,
        would_allow: 0,
        matched_labelled_fraud: 0,
        matched_labelled_legitimate: 0,
        labelled_fraud: 0,
    };
    for payment in &scored {
        // Payments decided without features (scoring timed out) cannot be replayed.
        let Some(features) = Features::from_json(&payment.features) else { continue };
        let mut variables: Vec<f64> = features.as_slice().to_vec();
        variables.push(payment.score as f64);
        result.evaluated += 1;
        result.labelled_fraud += usize::from(payment.is_fraud == Some(true));
        if apply_rules(&rules, &variables).1.is_none() {
            continue;
        }
        result.matched += 1;
        match rules[0].rule.action {
            RuleAction::Review => result.would_review += 1,
            RuleAction::Decline => result.would_decline += 1,
            RuleAction::Allow => result.would_allow += 1,
        }
        match payment.is_fraud {
            Some(true) => result.matched_labelled_fraud += 1,
            Some(false) => result.matched_labelled_legitimate += 1,
            None => {}
        }
    }
    Ok(Json(result))
}

fn list_value(kind: ListKind, value: &str) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() || value.len() > LIST_VALUE_LENGTH_MAX {
        return Err(ApiError::bad_request(
            "invalid_list_value",
            format!("value must have 1 to {LIST_VALUE_LENGTH_MAX} characters"),
        ));
    }
    match kind {
        // Hash the CPF as scoring sees it: normalised digits.
        ListKind::Cpf => {
            let cpf: Cpf = value.parse().map_err(|error: medpay_models::DocumentError| {
                ApiError::bad_request("invalid_cpf", error.to_string())
            })?;
            Ok(list_hash(cpf.as_str()))
        }
        ListKind::Ip => {
            let ip: std::net::IpAddr = value
                .parse()
                .map_err(|_| ApiError::bad_request("invalid_ip", "an IPv4 or IPv6 address is expected"))?;
            Ok(list_hash(&ip.to_string()))
        }
        ListKind::Device | ListKind::Card => Ok(list_hash(value)),
    }
}

fn parse_list(list: &str, kind: &str) -> Result<(ListType, ListKind), ApiError> {
    let list: ListType = list.parse().map_err(|message: String| ApiError::bad_request("invalid_list", message))?;
    let kind: ListKind = kind.parse().map_err(|message: String| {
        ApiError::bad_request("invalid_list_kind", format!("{message}; cpf, device, ip or card"))
    })?;
    Ok((list, kind))
}

#[utoipa::path(get, path = "/v1/lists", tag = "risk", security(("bearer" = [])),
    responses((status = 200, body = ListEntries), (status = 403, body = ErrorBody)))]
pub async fn list_lists(State(state): State<AppState>, principal: Principal) -> Result<Json<ListEntries>, ApiError> {
    principal.require_analyst()?;
    let entries = state.store.list_entries().await?;
    Ok(Json(ListEntries { data: entries.iter().map(ListEntryView::new).collect() }))
}

#[utoipa::path(post, path = "/v1/lists", tag = "risk", security(("bearer" = [])), request_body = CreateListEntry,
    responses((status = 201, body = ListEntryView, description = "in force from the next decision"), (status = 400, body = ErrorBody)))]
pub async fn add_list_entry(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<CreateListEntry>, JsonRejection>,
) -> Result<(StatusCode, Json<ListEntryView>), ApiError> {
    principal.require_analyst()?;
    let Json(body) = body.map_err(rejection)?;
    let (list, kind) = parse_list(&body.list, &body.kind)?;
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > NOTE_LENGTH_MAX {
        return Err(ApiError::bad_request(
            "invalid_reason",
            format!("reason must have 1 to {NOTE_LENGTH_MAX} characters"),
        ));
    }
    let entry = ListEntry {
        list,
        kind,
        value_hash: list_value(kind, &body.value)?,
        reason: reason.to_owned(),
        created_at_ms: medpay_store::now_ms(),
        keyed: true,
    };
    // The hash, never the value: the audit log is read by admins, the value is personal data.
    let after = serde_json::json!({"reason": entry.reason});
    let target = format!("list:{}:{}:{}", list.as_str(), kind.as_str(), entry.value_hash);
    let audit = crate::people::audit_entry(principal, "list.add", &target, None, Some(after));
    state.store.add_list_entry(&entry, &audit).await?;
    state.lists.insert(list, kind, entry.value_hash.clone());
    tracing::info!(list = list.as_str(), kind = kind.as_str(), "list entry added");
    Ok((StatusCode::CREATED, Json(ListEntryView::new(&entry))))
}

#[utoipa::path(delete, path = "/v1/lists/{list}/{kind}/{value_hash}", tag = "risk", security(("bearer" = [])),
    params(("list" = String, Path), ("kind" = String, Path), ("value_hash" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_list_entry(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    principal.require_analyst()?;
    let Path((list, kind, value_hash)) = path.map_err(rejection)?;
    let (list, kind) = parse_list(&list, &kind)?;
    let target = format!("list:{}:{}:{value_hash}", list.as_str(), kind.as_str());
    let audit = crate::people::audit_entry(principal, "list.remove", &target, None, None);
    if !state.store.remove_list_entry(list, kind, &value_hash, &audit).await? {
        return Err(ApiError::not_found("list_entry_not_found", "no such list entry"));
    }
    state.lists.remove(list, kind, &value_hash);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/payments/{id}/label", tag = "risk", security(("bearer" = [])), request_body = LabelPayment,
    params(("id" = String, Path, description = "payment id")),
    responses((status = 204, description = "recorded for training and backtests"), (status = 404, body = ErrorBody)))]
pub async fn label_payment(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<LabelPayment>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    principal.require_analyst()?;
    let not_found = || ApiError::not_found("payment_not_found", "no such payment");
    let Path(id) = id.map_err(rejection)?;
    let id: PaymentId = id.parse().map_err(|_| not_found())?;
    let Json(body) = body.map_err(rejection)?;
    if body.note.chars().count() > NOTE_LENGTH_MAX {
        return Err(ApiError::bad_request("invalid_note", format!("note has at most {NOTE_LENGTH_MAX} characters")));
    }
    state.store.payment(id).await?.ok_or_else(not_found)?;
    let after = serde_json::json!({"is_fraud": body.is_fraud, "note": body.note});
    let audit = crate::people::audit_entry(principal, "payment.label", &format!("payment:{id}"), None, Some(after));
    state
        .store
        .label_payment(id, body.is_fraud, "analyst", &body.note, &principal.actor(), medpay_store::now_ms(), &audit)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct LabelQuery {
    /// Only labels of this source: `analyst`, `chargeback` or `med`.
    pub source: Option<String>,
    /// Page size, 1–500 (default 100).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LabelView {
    pub payment_id: String,
    pub is_fraud: bool,
    /// `analyst` (a review decision or a label set by hand), `chargeback` or `med`.
    pub source: String,
    pub note: String,
    pub labelled_at: String,
    /// Who made it: `person:{id}`, `analyst` or `admin` (the shared tokens), `celcoin` for
    /// chargebacks and MED claims; absent for labels made before authors were kept.
    pub labelled_by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LabelList {
    pub data: Vec<LabelView>,
}

#[utoipa::path(get, path = "/v1/labels", tag = "risk", security(("bearer" = [])), params(LabelQuery),
    responses((status = 200, body = LabelList, description = "what training learns from, newest first, with its source"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_labels(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<LabelQuery>, QueryRejection>,
) -> Result<Json<LabelList>, ApiError> {
    principal.require_analyst()?;
    let Query(query) = query.map_err(rejection)?;
    if let Some(source) = query.source.as_deref()
        && !["analyst", "chargeback", "med"].contains(&source)
    {
        return Err(ApiError::bad_request("invalid_source", "source is analyst, chargeback or med"));
    }
    let labels = state.store.labels(query.source.as_deref(), query.limit.unwrap_or(100)).await?;
    let data = labels
        .into_iter()
        .map(|(payment, is_fraud, source, note, at, by)| LabelView {
            payment_id: payment.to_string(),
            is_fraud,
            source,
            note,
            labelled_at: timestamp(at),
            labelled_by: by,
        })
        .collect();
    Ok(Json(LabelList { data }))
}

//! The model registry over HTTP, for risk analysts: register a trained artefact, list versions
//! with their lineage, move the `champion` (hot-swapped into the running scorer: the next
//! decision uses it, none fails) or the `challenger`, roll the champion back, read every move.

use crate::auth::Principal;
use crate::dto::timestamp;
use crate::error::{ApiError, ErrorBody, rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use medpay_ml::ModelArtefact;
use medpay_ml::features::{FEATURE_NAMES, FEATURE_SCHEMA};
use medpay_store::{AliasMove, ModelVersionRecord, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The longest reason or note kept with a move or a version.
const REASON_LENGTH_MAX: usize = 500;

/// A registry record of `model` (its id: the SHA-256 of its canonical JSON, so the same model
/// registered twice is one version).
pub fn model_record(
    model: &ModelArtefact,
    source: &str,
    report: Option<serde_json::Value>,
    created_by: &str,
    now_ms: i64,
) -> ModelVersionRecord {
    let artefact = model.to_json();
    ModelVersionRecord {
        id: medpay_store::sha256_hex(artefact.as_bytes()),
        version: model.version.clone(),
        kind: model.kind().as_str().to_owned(),
        lineage: serde_json::json!({
            "source": source,
            "feature_schema": model.feature_schema,
            "trained_at": model.trained_at,
            "training_rows": model.training_rows,
            "training_positives": model.training_positives,
            "code_version": env!("CARGO_PKG_VERSION"),
        }),
        artefact,
        report,
        created_by: created_by.to_owned(),
        created_at_ms: now_ms,
    }
}

/// The challenger the service starts with, if the registry names one.
pub async fn challenger_at_start(store: &medpay_store::Store) -> anyhow::Result<Option<ModelArtefact>> {
    let Some(id) = store.model_alias("challenger").await? else { return Ok(None) };
    let record =
        store.model_version(&id).await?.ok_or_else(|| anyhow::anyhow!("the challenger {id} is not in the registry"))?;
    let model = ModelArtefact::from_json(&record.artefact)?;
    model.require_schema(FEATURE_SCHEMA, &FEATURE_NAMES)?;
    tracing::info!(model = %model.version, id = %id, "challenger read from the model registry; it scores in shadow");
    Ok(Some(model))
}

/// The champion the service starts with: the registry's, when it has one (models are data); else
/// `loaded` (the bundled model or `MEDPAY_MODEL`), registered and made champion.
pub async fn champion_at_start(
    store: &medpay_store::Store,
    loaded: ModelArtefact,
    source: &str,
) -> anyhow::Result<ModelArtefact> {
    let now = medpay_store::now_ms();
    let record = model_record(&loaded, source, None, "system", now);
    store.register_model(&record).await?;
    match store.model_alias("champion").await? {
        Some(id) if id == record.id => Ok(loaded),
        Some(id) => {
            let champion = store
                .model_version(&id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the champion {id} is not in the registry"))?;
            let model = ModelArtefact::from_json(&champion.artefact)?;
            model.require_schema(FEATURE_SCHEMA, &FEATURE_NAMES)?;
            tracing::info!(model = %model.version, id = %id, "champion read from the model registry");
            Ok(model)
        }
        None => {
            store.move_model_alias("champion", &record.id, Some(None), "system", "first start", now, None).await?;
            Ok(loaded)
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelVersionView {
    /// SHA-256 of the artefact.
    pub id: String,
    /// The artefact's name, as each decision records it (`decision.model_version`).
    pub version: String,
    pub kind: String,
    /// What it was trained on and with what code.
    #[schema(value_type = Object)]
    pub lineage: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
    /// The aliases pointing at it.
    pub aliases: Vec<String>,
    pub created_by: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub data: Vec<ModelVersionView>,
    /// The champion's version, deciding payments in this process now (but the canary share).
    pub in_force: Option<String>,
    /// The share of payments, in basis points, the challenger decides.
    pub canary_bps: u32,
}

/// Where each alias points now: (alias, version id), read once for a whole listing.
async fn alias_targets(state: &AppState) -> Result<Vec<(&'static str, String)>, ApiError> {
    let mut targets = Vec::new();
    for alias in medpay_store::MODEL_ALIASES {
        if let Some(id) = state.store.model_alias(alias).await? {
            targets.push((alias, id));
        }
    }
    Ok(targets)
}

fn view(record: ModelVersionRecord, targets: &[(&'static str, String)]) -> ModelVersionView {
    let aliases = targets.iter().filter(|(_, id)| *id == record.id).map(|(alias, _)| (*alias).to_owned()).collect();
    ModelVersionView {
        id: record.id,
        version: record.version,
        kind: record.kind,
        lineage: record.lineage,
        report: record.report,
        aliases,
        created_by: record.created_by,
        created_at: timestamp(record.created_at_ms),
    }
}

fn who(principal: Principal) -> String {
    principal.actor()
}

#[utoipa::path(get, path = "/v1/models", tag = "models", security(("bearer" = [])),
    responses((status = 200, body = ModelList, description = "registered versions, newest first, with their aliases"),
        (status = 403, body = ErrorBody)))]
pub async fn list_models(State(state): State<AppState>, principal: Principal) -> Result<Json<ModelList>, ApiError> {
    principal.require_analyst()?;
    let targets = alias_targets(&state).await?;
    let data = state.store.model_versions(100).await?.into_iter().map(|record| view(record, &targets)).collect();
    Ok(Json(ModelList { data, in_force: state.runtime.model_version(), canary_bps: state.store.model_canary().await? }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterModel {
    /// The artefact as `medpay model train` writes it.
    #[schema(value_type = Object)]
    pub artefact: serde_json::Value,
    /// Its evaluation report (`*.report.json`), if there is one.
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
}

#[utoipa::path(post, path = "/v1/models", tag = "models", request_body = RegisterModel, security(("bearer" = [])),
    responses((status = 201, body = ModelVersionView, description = "registered"),
        (status = 200, body = ModelVersionView, description = "the same artefact was registered already"),
        (status = 400, body = ErrorBody, description = "`invalid_model`: not an artefact, or trained on another feature schema"),
        (status = 403, body = ErrorBody)))]
pub async fn register_model(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<RegisterModel>, JsonRejection>,
) -> Result<(StatusCode, Json<ModelVersionView>), ApiError> {
    principal.require_analyst()?;
    let Json(body) = body.map_err(rejection)?;
    let model = ModelArtefact::from_json(&body.artefact.to_string())
        .map_err(|error| ApiError::bad_request("invalid_model", error.to_string()))?;
    model
        .require_schema(FEATURE_SCHEMA, &FEATURE_NAMES)
        .map_err(|error| ApiError::bad_request("invalid_model", error.to_string()))?;
    let record = model_record(&model, "upload", body.report, &who(principal), medpay_store::now_ms());
    let created = state.store.register_model(&record).await?;
    let stored = state
        .store
        .model_version(&record.id)
        .await?
        .ok_or_else(|| ApiError::internal("a registered model vanished"))?;
    tracing::info!(id = %record.id, model = %record.version, created, "model version registered");
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view(stored, &alias_targets(&state).await?))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveAlias {
    #[schema(schema_with = crate::schema::version_id)]
    pub version_id: String,
    #[schema(schema_with = crate::schema::reason)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AliasMoveView {
    pub alias: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub moved_by: String,
    pub reason: String,
    pub moved_at: String,
}

impl From<AliasMove> for AliasMoveView {
    fn from(moved: AliasMove) -> Self {
        AliasMoveView {
            alias: moved.alias,
            from_version: moved.from_version,
            to_version: moved.to_version,
            moved_by: moved.moved_by,
            reason: moved.reason,
            moved_at: timestamp(moved.moved_at_ms),
        }
    }
}

fn reason(text: &str) -> Result<&str, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > REASON_LENGTH_MAX {
        return Err(ApiError::bad_request("invalid_reason", "reason needs 1 to 500 characters"));
    }
    Ok(text)
}

/// Moves `alias` to `to` (expecting it at `expect`), hot-swapping the champion's model.
async fn move_alias(
    state: &AppState,
    principal: Principal,
    alias: &str,
    to: &str,
    expect: Option<Option<&str>>,
    why: &str,
) -> Result<AliasMoveView, ApiError> {
    let record = state
        .store
        .model_version(to)
        .await?
        .ok_or_else(|| ApiError::not_found("model_not_found", "no such model version"))?;
    // Parsed and checked before the move: a champion that cannot score is never recorded as one.
    let model = ModelArtefact::from_json(&record.artefact).map_err(ApiError::internal)?;
    model.require_schema(FEATURE_SCHEMA, &FEATURE_NAMES).map_err(ApiError::internal)?;
    // Its `before` (the version moved from) is filled in by the move's own transaction.
    let after = serde_json::json!({"version_id": to, "reason": why});
    let audit =
        crate::people::audit_entry(principal, "model.alias.move", &format!("model_alias:{alias}"), None, Some(after));
    let moved = match state
        .store
        .move_model_alias(alias, to, expect, &who(principal), why, medpay_store::now_ms(), Some(audit))
        .await
    {
        Ok(moved) => moved,
        Err(StoreError::Conflict(what)) => return Err(ApiError::conflict("alias_moved", what)),
        Err(error) => return Err(error.into()),
    };
    if alias == "champion" {
        let version = model.version.clone();
        if !state.runtime.swap_model(model) {
            return Err(ApiError::internal("this scorer has no model to swap"));
        }
        tracing::warn!(alias, id = %to, model = %version, by = who(principal), reason = why, "champion moved; in force from the next decision");
    } else {
        let version = model.version.clone();
        if !state.runtime.set_challenger(Some(model)) {
            return Err(ApiError::internal("this scorer has no model to swap"));
        }
        tracing::info!(alias, id = %to, model = %version, by = who(principal), reason = why, "challenger moved; it scores every payment in shadow");
    }
    Ok(moved.into())
}

#[utoipa::path(post, path = "/v1/models/aliases/{alias}", tag = "models", request_body = MoveAlias, security(("bearer" = [])),
    params(("alias" = String, Path, description = "`champion` or `challenger`")),
    responses((status = 200, body = AliasMoveView, description = "moved; a new champion decides from the next payment"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`alias_moved`: moved by someone else meanwhile")))]
pub async fn set_alias(
    State(state): State<AppState>,
    principal: Principal,
    alias: Result<Path<String>, PathRejection>,
    body: Result<Json<MoveAlias>, JsonRejection>,
) -> Result<Json<AliasMoveView>, ApiError> {
    principal.require_analyst()?;
    let Path(alias) = alias.map_err(rejection)?;
    if !medpay_store::MODEL_ALIASES.contains(&alias.as_str()) {
        return Err(ApiError::not_found("alias_not_found", "the aliases are champion and challenger"));
    }
    let Json(body) = body.map_err(rejection)?;
    let why = reason(&body.reason)?;
    Ok(Json(move_alias(&state, principal, &alias, &body.version_id, None, why).await?))
}

#[utoipa::path(get, path = "/v1/models/{id}/plots/{plot}", tag = "models", security(("bearer" = [])),
    params(("id" = String, Path, description = "the version's id"),
        ("plot" = String, Path, description = "`roc.svg`, `precision-recall.svg`, `calibration.svg` or `scores.svg`")),
    responses((status = 200, content_type = "image/svg+xml", body = String,
            description = "the plot of the version's hold-out evaluation, with the champion on the same hold-out when its report has it"),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`model_not_found`, `plot_not_found`, or `no_curves`: its report keeps none (registered without one, or before they were kept)")))]
pub async fn plot(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    principal.require_analyst()?;
    let Path((id, file)) = path.map_err(rejection)?;
    let Some(plot) = crate::plots::Plot::parse(&file) else {
        return Err(ApiError::not_found(
            "plot_not_found",
            "the plots are roc.svg, precision-recall.svg, calibration.svg and scores.svg",
        ));
    };
    let record = state
        .store
        .model_version(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("model_not_found", "no model version has this id"))?;
    let report = record.report.unwrap_or(serde_json::Value::Null);
    if !crate::plots::drawable(plot, &record.version, &report) {
        return Err(ApiError::not_found("no_curves", "this version's report keeps no curves to draw"));
    }
    // Drawing takes about a millisecond: not worth a blocking thread.
    let svg = crate::plots::draw(plot, &record.version, &report).map_err(ApiError::internal)?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "image/svg+xml"),
            (axum::http::header::CACHE_CONTROL, "private, max-age=300"),
        ],
        svg,
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    #[schema(schema_with = crate::schema::reason)]
    pub reason: String,
}

#[utoipa::path(post, path = "/v1/models/aliases/champion/rollback", tag = "models", request_body = Rollback, security(("bearer" = [])),
    responses((status = 200, body = AliasMoveView, description = "the champion is the version it was before its last move"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`nothing_to_roll_back`, or `alias_moved` meanwhile")))]
pub async fn rollback(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<Rollback>, JsonRejection>,
) -> Result<Json<AliasMoveView>, ApiError> {
    principal.require_analyst()?;
    let Json(body) = body.map_err(rejection)?;
    let why = reason(&body.reason)?;
    let last = state.store.model_alias_history(500).await?.into_iter().find(|moved| moved.alias == "champion");
    let Some((current, previous)) = last.and_then(|moved| moved.from_version.map(|from| (moved.to_version, from)))
    else {
        return Err(ApiError::conflict("nothing_to_roll_back", "the champion has not moved since it was first set"));
    };
    Ok(Json(move_alias(&state, principal, "champion", &previous, Some(Some(&current)), why).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AliasHistory {
    pub data: Vec<AliasMoveView>,
}

#[utoipa::path(get, path = "/v1/models/aliases/history", tag = "models", security(("bearer" = [])),
    responses((status = 200, body = AliasHistory, description = "every move of every alias, newest first"),
        (status = 403, body = ErrorBody)))]
pub async fn alias_history(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<AliasHistory>, ApiError> {
    principal.require_analyst()?;
    let data = state.store.model_alias_history(500).await?.into_iter().map(AliasMoveView::from).collect();
    Ok(Json(AliasHistory { data }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShadowComparison {
    /// The challenger's version of the decisions compared (the latest first seen).
    pub challenger: Option<String>,
    /// Decisions of the last `limit` with a shadow score.
    pub decisions: u64,
    /// Of those, how many the two models would decide differently at their provider's thresholds
    /// (the score alone: approve, review or decline).
    pub disagreements: u64,
    /// The mean absolute difference of the two scores (0–1000).
    pub mean_score_difference: f64,
    /// Labelled decisions among them, and the frauds each model's score would have sent to
    /// review or decline.
    pub labelled: u64,
    pub frauds: u64,
    pub frauds_caught_by_champion: u64,
    pub frauds_caught_by_challenger: u64,
}

#[utoipa::path(get, path = "/v1/models/shadow", tag = "models", security(("bearer" = [])),
    responses((status = 200, body = ShadowComparison, description = "the champion and the challenger on the same recent payments"),
        (status = 403, body = ErrorBody)))]
pub async fn shadow(State(state): State<AppState>, principal: Principal) -> Result<Json<ShadowComparison>, ApiError> {
    principal.require_analyst()?;
    let rows = state.store.shadow_scores(10_000).await?;
    let band = |score: u16, review: u16, decline: u16| u8::from(score >= review) + u8::from(score >= decline);
    let mut comparison = ShadowComparison {
        challenger: rows.first().map(|row| row.challenger.clone()),
        decisions: 0,
        disagreements: 0,
        mean_score_difference: 0.0,
        labelled: 0,
        frauds: 0,
        frauds_caught_by_champion: 0,
        frauds_caught_by_challenger: 0,
    };
    let mut difference = 0.0;
    for row in &rows {
        comparison.decisions += 1;
        let (champion, challenger) =
            (band(row.score, row.review_min, row.decline_min), band(row.shadow_score, row.review_min, row.decline_min));
        comparison.disagreements += u64::from(champion != challenger);
        difference += (f64::from(row.score) - f64::from(row.shadow_score)).abs();
        if let Some(fraud) = row.is_fraud {
            comparison.labelled += 1;
            if fraud {
                comparison.frauds += 1;
                comparison.frauds_caught_by_champion += u64::from(champion > 0);
                comparison.frauds_caught_by_challenger += u64::from(challenger > 0);
            }
        }
    }
    if comparison.decisions > 0 {
        comparison.mean_score_difference = difference / comparison.decisions as f64;
    }
    Ok(Json(comparison))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCanary {
    #[schema(schema_with = crate::schema::basis_points)]
    pub share_bps: u32,
    #[schema(schema_with = crate::schema::reason)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CanaryView {
    pub share_bps: u32,
}

#[utoipa::path(put, path = "/v1/models/canary", tag = "models", request_body = SetCanary, security(("bearer" = [])),
    responses((status = 200, body = CanaryView, description = "in force from the next payment"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn set_canary(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<SetCanary>, JsonRejection>,
) -> Result<Json<CanaryView>, ApiError> {
    principal.require_analyst()?;
    let Json(body) = body.map_err(rejection)?;
    let why = reason(&body.reason)?;
    if body.share_bps > 10_000 {
        return Err(ApiError::bad_request("invalid_share", "share_bps is 0 to 10000"));
    }
    let after = serde_json::json!({"share_bps": body.share_bps, "reason": why});
    let audit = crate::people::audit_entry(principal, "model.canary.set", "model_alias:challenger", None, Some(after));
    state.store.set_model_canary(body.share_bps, &who(principal), why, medpay_store::now_ms(), &audit).await?;
    if !state.runtime.set_canary(body.share_bps) {
        return Err(ApiError::internal("this scorer has no canary"));
    }
    tracing::warn!(share_bps = body.share_bps, by = who(principal), reason = why, "canary share changed");
    Ok(Json(CanaryView { share_bps: body.share_bps }))
}

/// How far back "live" goes for drift.
pub const DRIFT_WINDOW_MS: i64 = 24 * 60 * 60 * 1_000;
/// The most live decisions drift reads.
const DRIFT_DECISIONS_MAX: i64 = 20_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DriftQuery {
    /// Only this provider's payments.
    pub provider_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DriftValue {
    pub name: String,
    pub psi: f64,
    /// `stable` (< 0.1), `watch` (0.1–0.25) or `shift` (≥ 0.25).
    pub level: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DriftReport {
    /// The champion's version, whose training reference this is.
    pub model_version: String,
    pub reference_rows: u64,
    /// Decisions of the last 24 hours compared.
    pub live_rows: u64,
    pub score: Option<DriftValue>,
    /// Every feature, the most drifted first.
    pub features: Vec<DriftValue>,
}

#[utoipa::path(get, path = "/v1/models/drift", tag = "models", security(("bearer" = [])), params(DriftQuery),
    responses((status = 200, body = DriftReport, description = "PSI of each feature and of the score, the last 24 h against the champion's training"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`no_reference`: the champion was not trained from the store")))]
pub async fn drift(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<axum::extract::Query<DriftQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DriftReport>, ApiError> {
    principal.require_analyst()?;
    let axum::extract::Query(query) = query.map_err(rejection)?;
    let provider = match query.provider_id.as_deref() {
        Some(raw) => Some(
            raw.parse::<medpay_models::ProviderId>()
                .map_err(|_| ApiError::bad_request("invalid_provider_id", "provider_id is a provider's id (a UUID)"))?,
        ),
        None => None,
    };
    Ok(Json(measure_drift(&state.store, provider).await?))
}

/// The champion's drift over the last 24 h (of one provider's payments, or all), against its
/// training reference; for all payments it also sets `medpay_drift_psi` (and so does the timer in
/// `app.rs`, every `MEDPAY_DRIFT_INTERVAL_MS`). `no_reference` (409) when the champion was not
/// trained from the store.
pub async fn measure_drift(
    store: &medpay_store::Store,
    provider: Option<medpay_models::ProviderId>,
) -> Result<DriftReport, ApiError> {
    use medpay_ml::drift::{Reference, level};
    let champion = store
        .model_alias("champion")
        .await?
        .ok_or_else(|| ApiError::conflict("no_reference", "there is no champion"))?;
    let record = store.model_version(&champion).await?.ok_or_else(|| ApiError::internal("champion vanished"))?;
    let reference = record.report.as_ref().and_then(|report| report.get("reference")).cloned().ok_or_else(|| {
        ApiError::conflict(
            "no_reference",
            "the champion has no training reference: drift is measured for models trained from the store",
        )
    })?;
    let live = store.recent_decisions(medpay_store::now_ms() - DRIFT_WINDOW_MS, provider, DRIFT_DECISIONS_MAX).await?;
    let rows: Vec<medpay_ml::Features> =
        live.iter().filter_map(|(features, _)| medpay_ml::Features::from_json(features)).collect();
    let value = |name: &str, cut: &serde_json::Value, values: &[f64]| -> Option<DriftValue> {
        let cut: Reference = serde_json::from_value(cut.clone()).ok()?;
        let psi = cut.psi(values)?;
        Some(DriftValue { name: name.to_owned(), psi, level: level(psi).to_owned() })
    };
    let mut features = Vec::new();
    for (column, name) in FEATURE_NAMES.iter().enumerate() {
        let Some(cut) = reference.pointer(&format!("/features/{name}")) else { continue };
        let values: Vec<f64> = rows.iter().map(|features| features.as_slice()[column]).collect();
        if let Some(drifted) = value(name, cut, &values) {
            features.push(drifted);
        }
    }
    features.sort_by(|a, b| b.psi.total_cmp(&a.psi));
    let scores: Vec<f64> = live.iter().map(|(_, score)| f64::from(*score)).collect();
    let score = reference.get("score").and_then(|cut| value("score", cut, &scores));
    if provider.is_none() {
        for drifted in features.iter().chain(score.iter()) {
            metrics::gauge!("medpay_drift_psi", "value" => drifted.name.clone()).set(drifted.psi);
        }
    }
    Ok(DriftReport {
        model_version: record.version,
        reference_rows: reference.get("rows").and_then(|rows| rows.as_u64()).unwrap_or(0),
        live_rows: live.len() as u64,
        score,
        features,
    })
}

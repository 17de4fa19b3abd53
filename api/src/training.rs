//! Training from the store: the features recorded with each decision (what serving scored, so
//! training cannot skew from it) joined with the labels, split in time order, fitted off the
//! async workers, evaluated on the later part, and registered as a model version with its lineage
//! and report. A run is started over HTTP (in the background: `POST /v1/models/training-runs`,
//! its progress at `GET /v1/models/training-runs/{id}`) or by `medpay model train --from-store`.

use crate::auth::Principal;
use crate::dto::timestamp;
use crate::error::{ApiError, ErrorBody, rejection};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use medpay_ml::drift::Reference;
use medpay_ml::features::{FEATURE_NAMES, Features};
use medpay_ml::model::ModelKind;
use medpay_ml::train::{Dataset, TrainOptions, fit, report};
use medpay_store::{Store, TrainingRun};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most labelled decisions a run reads (the newest, when there are more).
pub const TRAINING_EXAMPLES_MAX: i64 = 500_000;
/// The later share of the labelled decisions kept out of training to evaluate on, by default.
pub const TRAINING_HOLDOUT_DEFAULT: f64 = 0.2;
/// The smallest and largest holdout share a run accepts.
pub const TRAINING_HOLDOUT_MIN: f64 = 0.05;
pub const TRAINING_HOLDOUT_MAX: f64 = 0.5;
/// A run still `running` after this long was left by a process that stopped.
pub const TRAINING_RUN_STALE_MS: i64 = 60 * 60 * 1_000;
/// A run's stages: read, split, fit, evaluate, register.
const STAGES: i64 = 5;

/// A new run's record, before it starts.
pub fn new_run(kind: ModelKind, started_by: &str) -> TrainingRun {
    TrainingRun {
        id: uuid::Uuid::now_v7().to_string(),
        kind: kind.as_str().to_owned(),
        status: "running".to_owned(),
        stage: "queued".to_owned(),
        stages_done: 0,
        stages: STAGES,
        rows_used: None,
        positives: None,
        label_cutoff_ms: None,
        model_id: None,
        error: None,
        started_by: started_by.to_owned(),
        created_at_ms: medpay_store::now_ms(),
        finished_at_ms: None,
    }
}

/// Runs `run` to its end, writing its progress to the store after every stage (and telling
/// `progress`); a failure is written to the run and returned.
pub async fn run_training(
    store: &Store,
    run: &mut TrainingRun,
    kind: ModelKind,
    holdout: f64,
    progress: &(dyn Fn(&TrainingRun) + Send + Sync),
) -> anyhow::Result<String> {
    match train(store, run, kind, holdout, progress).await {
        Ok(model_id) => Ok(model_id),
        Err(error) => {
            run.status = "failed".to_owned();
            run.error = Some(error.to_string());
            run.finished_at_ms = Some(medpay_store::now_ms());
            store.update_training_run(run).await?;
            progress(run);
            tracing::warn!(run_id = %run.id, %error, "training run failed");
            Err(error)
        }
    }
}

async fn stage(
    store: &Store,
    run: &mut TrainingRun,
    name: &str,
    progress: &(dyn Fn(&TrainingRun) + Send + Sync),
) -> anyhow::Result<()> {
    run.stage = name.to_owned();
    store.update_training_run(run).await?;
    progress(run);
    Ok(())
}

async fn train(
    store: &Store,
    run: &mut TrainingRun,
    kind: ModelKind,
    holdout: f64,
    progress: &(dyn Fn(&TrainingRun) + Send + Sync),
) -> anyhow::Result<String> {
    stage(store, run, "reading the labelled decisions", progress).await?;
    let examples = store.training_examples(TRAINING_EXAMPLES_MAX).await?;
    let mut data = Dataset {
        names: FEATURE_NAMES.iter().map(|name| (*name).to_owned()).collect(),
        rows: Vec::with_capacity(examples.len()),
        labels: Vec::with_capacity(examples.len()),
        ignored: Vec::new(),
    };
    let mut cutoff = 0;
    // Each row's provider thresholds (review, decline): where the model would send it today.
    let mut thresholds: Vec<(u16, u16)> = Vec::with_capacity(examples.len());
    for example in &examples {
        // A decision made without scoring (a fail-mode fallback) has no features to learn from.
        let Some(features) = Features::from_json(&example.features) else { continue };
        data.rows.push(features.as_slice().to_vec());
        data.labels.push(example.is_fraud);
        thresholds.push((example.review_min, example.decline_min));
        cutoff = cutoff.max(example.labelled_at_ms);
    }
    if data.rows.is_empty() {
        anyhow::bail!(
            "no labelled decisions to learn from yet: review decisions, chargebacks, MED claims and \
             POST /v1/payments/{{id}}/label make labels"
        );
    }
    run.rows_used = Some(i64::try_from(data.rows.len())?);
    run.positives = Some(i64::try_from(data.positives())?);
    run.label_cutoff_ms = Some(cutoff);
    run.stages_done = 1;
    stage(store, run, "splitting in time order", progress).await?;
    let (training, test) = data.split(holdout)?;
    run.stages_done = 2;
    stage(store, run, &format!("fitting the {} model on {} rows", kind.as_str(), training.rows.len()), progress)
        .await?;
    // The champion, evaluated on the same hold-out beside the candidate.
    let champion = match store.model_alias("champion").await? {
        Some(id) => store
            .model_version(&id)
            .await?
            .and_then(|record| medpay_ml::ModelArtefact::from_json(&record.artefact).ok())
            .filter(|model| model.require_schema(medpay_ml::FEATURE_SCHEMA, &FEATURE_NAMES).is_ok()),
        None => None,
    };
    let now = chrono::Utc::now();
    let options = TrainOptions {
        version_tag: format!("{}-{}", now.format("%Y%m%dT%H%M%SZ"), &run.id[run.id.len() - 6..]),
        trained_at: now.to_rfc3339(),
        ..TrainOptions::default()
    };
    // The hold-out is the newest rows: the tail of the thresholds.
    let test_thresholds = thresholds.split_off(training.rows.len());
    let (model, evaluation, reference, beside) = tokio::task::spawn_blocking(move || {
        let model = fit(&training, kind, &options)?;
        let evaluation = report(&model, &training, &test);
        let beside = serde_json::json!({
            "thresholds": "each hold-out payment at its provider's review and decline thresholds",
            "candidate": side(&model, &test, &test_thresholds),
            "champion": champion.as_ref().map(|champion| side(champion, &test, &test_thresholds)),
        });
        // What drift is measured against: each feature's and the score's deciles in training.
        let mut features = serde_json::Map::new();
        for (column, name) in training.names.iter().enumerate() {
            let values: Vec<f64> = training.rows.iter().map(|row| row[column]).collect();
            if let Some(cut) = Reference::of(&values) {
                features.insert(name.clone(), serde_json::json!(cut));
            }
        }
        let scores: Vec<f64> =
            training.rows.iter().map(|row| f64::from(medpay_ml::model::to_score(model.predict(row)))).collect();
        let reference = serde_json::json!({
            "rows": training.rows.len(),
            "features": features,
            "score": Reference::of(&scores),
        });
        Ok::<_, medpay_ml::train::TrainError>((model, evaluation, reference, beside))
    })
    .await??;
    run.stages_done = 4;
    stage(store, run, "registering the model", progress).await?;
    let mut report_json = serde_json::to_value(&evaluation)?;
    if let Some(fields) = report_json.as_object_mut() {
        fields.insert("reference".to_owned(), reference);
        fields.insert("beside_champion".to_owned(), beside);
    }
    let mut record =
        crate::models::model_record(&model, "store", Some(report_json), &run.started_by, medpay_store::now_ms());
    if let Some(lineage) = record.lineage.as_object_mut() {
        lineage.insert("training_run".to_owned(), serde_json::json!(run.id));
        lineage.insert("label_cutoff".to_owned(), serde_json::json!(timestamp(cutoff)));
        lineage.insert("labelled_rows".to_owned(), serde_json::json!(data.rows.len()));
        lineage.insert("holdout".to_owned(), serde_json::json!(holdout));
    }
    store.register_model(&record).await?;
    run.stages_done = STAGES;
    run.status = "done".to_owned();
    run.stage = "done".to_owned();
    run.model_id = Some(record.id.clone());
    run.finished_at_ms = Some(medpay_store::now_ms());
    store.update_training_run(run).await?;
    progress(run);
    tracing::info!(run_id = %run.id, model_id = %record.id, model = %model.version, rows = data.rows.len(), "training run done");
    Ok(record.id)
}

/// A model's numbers on a hold-out: precision and recall when each payment is judged at its own
/// provider's thresholds (review and decline), the expected loss in reais at them (the amounts of
/// fraud let through, scored under review, plus the amounts of good payments declined), and the
/// curves, so that the champion can be drawn beside the candidate on the same payments.
fn side(model: &medpay_ml::ModelArtefact, test: &Dataset, thresholds: &[(u16, u16)]) -> serde_json::Value {
    let evaluation = medpay_ml::train::evaluate(model, test);
    let scores: Vec<u16> = test.rows.iter().map(|row| medpay_ml::model::to_score(model.predict(row))).collect();
    let (mut let_through, mut declined) = (0f64, 0f64);
    for ((row, fraud), (score, (review, decline))) in
        test.rows.iter().zip(&test.labels).zip(scores.iter().zip(thresholds))
    {
        // Column 0 is the amount in centavos (FEATURE_NAMES).
        let amount = row[0];
        if *fraud && score < review {
            let_through += amount;
        } else if !*fraud && score >= decline {
            declined += amount;
        }
    }
    let reviews: Vec<u16> = thresholds.iter().map(|(review, _)| *review).collect();
    let declines: Vec<u16> = thresholds.iter().map(|(_, decline)| *decline).collect();
    serde_json::json!({
        "model_version": model.version,
        "roc_auc": evaluation.roc_auc,
        "pr_auc": evaluation.pr_auc,
        "recall_at_fpr_0_1_percent": evaluation.recall_at_fpr_0_1_percent,
        "recall_at_fpr_1_percent": evaluation.recall_at_fpr_1_percent,
        "at_review_thresholds": medpay_ml::metrics::at_thresholds(&scores, &reviews, &test.labels),
        "at_decline_thresholds": medpay_ml::metrics::at_thresholds(&scores, &declines, &test.labels),
        "fraud_let_through_centavos": let_through.round() as i64,
        "good_declined_centavos": declined.round() as i64,
        "expected_loss_centavos": (let_through + declined).round() as i64,
        "brier_score": evaluation.brier_score,
        "calibration": evaluation.calibration,
        "curves": evaluation.curves,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartTraining {
    #[schema(schema_with = crate::schema::model_kind)]
    pub kind: String,
    #[schema(schema_with = crate::schema::holdout)]
    pub holdout: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrainingRunView {
    pub id: String,
    pub kind: String,
    /// `running`, `done` or `failed`.
    pub status: String,
    pub stage: String,
    pub stages_done: i64,
    pub stages: i64,
    pub rows_used: Option<i64>,
    pub positives: Option<i64>,
    /// The newest label it learned from.
    pub label_cutoff: Option<String>,
    /// The model version it registered.
    pub model_id: Option<String>,
    pub error: Option<String>,
    pub started_by: String,
    pub started_at: String,
    pub finished_at: Option<String>,
}

impl From<TrainingRun> for TrainingRunView {
    fn from(run: TrainingRun) -> Self {
        TrainingRunView {
            id: run.id,
            kind: run.kind,
            status: run.status,
            stage: run.stage,
            stages_done: run.stages_done,
            stages: run.stages,
            rows_used: run.rows_used,
            positives: run.positives,
            label_cutoff: run.label_cutoff_ms.filter(|at| *at > 0).map(timestamp),
            model_id: run.model_id,
            error: run.error,
            started_by: run.started_by,
            started_at: timestamp(run.created_at_ms),
            finished_at: run.finished_at_ms.map(timestamp),
        }
    }
}

fn kind_of(raw: &str) -> Result<ModelKind, ApiError> {
    ModelKind::parse(raw).ok_or_else(|| ApiError::bad_request("invalid_kind", "kind is logistic, tree or boosted"))
}

#[utoipa::path(post, path = "/v1/models/training-runs", tag = "models", request_body = StartTraining, security(("bearer" = [])),
    responses((status = 202, body = TrainingRunView, description = "started in the background; follow it at its URL"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`training_run_running`: one at a time")))]
pub async fn start_training(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<StartTraining>, JsonRejection>,
) -> Result<(StatusCode, Json<TrainingRunView>), ApiError> {
    principal.require_analyst()?;
    let Json(body) = body.map_err(rejection)?;
    let kind = kind_of(&body.kind)?;
    let holdout = body.holdout.unwrap_or(TRAINING_HOLDOUT_DEFAULT);
    if !(TRAINING_HOLDOUT_MIN..=TRAINING_HOLDOUT_MAX).contains(&holdout) {
        return Err(ApiError::bad_request(
            "invalid_holdout",
            format!("holdout is {TRAINING_HOLDOUT_MIN} to {TRAINING_HOLDOUT_MAX}"),
        ));
    }
    // One at a time: a run takes a core for as long as it fits.
    if state.store.running_training_runs(medpay_store::now_ms() - TRAINING_RUN_STALE_MS).await? > 0 {
        return Err(ApiError::conflict("training_run_running", "a training run is running; wait for it to finish"));
    }
    let by = principal.actor();
    let mut run = new_run(kind, &by);
    state.store.insert_training_run(&run).await?;
    let view = TrainingRunView::from(run.clone());
    let store = state.store.clone();
    tracing::info!(run_id = %run.id, kind = kind.as_str(), holdout, "training run started");
    tokio::spawn(async move {
        let _ = run_training(&store, &mut run, kind, holdout, &|_| {}).await;
    });
    Ok((StatusCode::ACCEPTED, Json(view)))
}

#[utoipa::path(get, path = "/v1/models/training-runs/{id}", tag = "models", security(("bearer" = [])),
    params(("id" = String, Path, description = "training run id")),
    responses((status = 200, body = TrainingRunView, description = "its progress, or its result"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn training_run(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TrainingRunView>, ApiError> {
    principal.require_analyst()?;
    let Path(id) = id.map_err(rejection)?;
    let run = state
        .store
        .training_run(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("training_run_not_found", "no such training run"))?;
    Ok(Json(run.into()))
}

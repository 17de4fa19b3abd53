//! The model registry (migration 0011): immutable model versions named by their content hash, and
//! the aliases that point at them, every move recorded.

use crate::database::{Store, StoreError};
use sqlx::Row;

/// A registered model version (its artefact kept as the JSON text it was registered with).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersionRecord {
    pub id: String,
    pub version: String,
    pub kind: String,
    pub artefact: String,
    pub lineage: serde_json::Value,
    pub report: Option<serde_json::Value>,
    pub created_by: String,
    pub created_at_ms: i64,
}

/// One move of an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasMove {
    pub alias: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub moved_by: String,
    pub reason: String,
    pub moved_at_ms: i64,
}

/// A decision scored in shadow too, with its provider's thresholds and its label if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowScore {
    pub challenger: String,
    pub score: u16,
    pub shadow_score: u16,
    pub review_min: u16,
    pub decline_min: u16,
    pub is_fraud: Option<bool>,
}

/// A labelled decision as training reads it: the features serving scored, and the label.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingExample {
    pub features: serde_json::Value,
    pub is_fraud: bool,
    pub created_at_ms: i64,
    pub labelled_at_ms: i64,
    /// The thresholds of the payment's provider now: where a model would send it today.
    pub review_min: u16,
    pub decline_min: u16,
}

/// A training run's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingRun {
    pub id: String,
    pub kind: String,
    /// `running`, `done` or `failed`.
    pub status: String,
    pub stage: String,
    pub stages_done: i64,
    pub stages: i64,
    pub rows_used: Option<i64>,
    pub positives: Option<i64>,
    pub label_cutoff_ms: Option<i64>,
    pub model_id: Option<String>,
    pub error: Option<String>,
    pub started_by: String,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// The aliases a registry has.
pub const MODEL_ALIASES: [&str; 2] = ["champion", "challenger"];

fn version_from_row(row: &sqlx::any::AnyRow, with_artefact: bool) -> Result<ModelVersionRecord, StoreError> {
    let lineage: String = row.try_get("lineage")?;
    let report: Option<String> = row.try_get("report")?;
    Ok(ModelVersionRecord {
        id: row.try_get("id")?,
        version: row.try_get("version")?,
        kind: row.try_get("kind")?,
        artefact: if with_artefact { row.try_get("artefact")? } else { String::new() },
        lineage: serde_json::from_str(&lineage).map_err(StoreError::corrupt)?,
        report: report.map(|text| serde_json::from_str(&text)).transpose().map_err(StoreError::corrupt)?,
        created_by: row.try_get("created_by")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

impl Store {
    /// Registers a version; false when one with the same content is registered already (it is
    /// kept as it was: versions never change).
    pub async fn register_model(&self, model: &ModelVersionRecord) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO model_versions (id, version, kind, artefact, lineage, report, created_by, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(model.id.clone())
        .bind(model.version.clone())
        .bind(model.kind.clone())
        .bind(model.artefact.clone())
        .bind(model.lineage.to_string())
        .bind(model.report.as_ref().map(|report| report.to_string()))
        .bind(model.created_by.clone())
        .bind(model.created_at_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// A version with its artefact.
    pub async fn model_version(&self, id: &str) -> Result<Option<ModelVersionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, version, kind, artefact, lineage, report, created_by, created_at_ms FROM model_versions WHERE id = $1",
        )
        .bind(id.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(|row| version_from_row(row, true)).transpose()
    }

    /// Versions, newest first, without their artefacts.
    pub async fn model_versions(&self, limit: i64) -> Result<Vec<ModelVersionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, version, kind, lineage, report, created_by, created_at_ms FROM model_versions
             ORDER BY created_at_ms DESC, id LIMIT $1",
        )
        .bind(limit.clamp(1, 500))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| version_from_row(row, false)).collect()
    }

    /// The version an alias points at.
    pub async fn model_alias(&self, alias: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT version_id FROM model_aliases WHERE alias = $1")
            .bind(alias.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("version_id")).transpose()?)
    }

    /// Points `alias` at `to`, recording the move, in one transaction. `expect`: the version the
    /// alias must point at now (`None`: any); else `Conflict("alias moved meanwhile")`. A version
    /// that is not registered is `Conflict("no such model version")`. A person's move carries its
    /// `audit` entry, written in the same transaction with its `before` (the version moved from)
    /// filled in there.
    #[allow(clippy::too_many_arguments)]
    pub async fn move_model_alias(
        &self,
        alias: &str,
        to: &str,
        expect: Option<Option<&str>>,
        moved_by: &str,
        reason: &str,
        now_ms: i64,
        audit: Option<crate::people::AuditEntry>,
    ) -> Result<AliasMove, StoreError> {
        let mut transaction = self.begin_write().await?;
        let known = sqlx::query("SELECT 1 AS one FROM model_versions WHERE id = $1")
            .bind(to.to_owned())
            .fetch_optional(&mut *transaction)
            .await?;
        if known.is_none() {
            return Err(StoreError::Conflict("no such model version"));
        }
        let current: Option<String> = sqlx::query("SELECT version_id FROM model_aliases WHERE alias = $1")
            .bind(alias.to_owned())
            .fetch_optional(&mut *transaction)
            .await?
            .map(|row| row.try_get("version_id"))
            .transpose()?;
        if let Some(expected) = expect
            && expected != current.as_deref()
        {
            return Err(StoreError::Conflict("alias moved meanwhile"));
        }
        sqlx::query(
            "INSERT INTO model_aliases (alias, version_id, moved_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (alias) DO UPDATE SET version_id = $2, moved_at_ms = $3",
        )
        .bind(alias.to_owned())
        .bind(to.to_owned())
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?;
        sqlx::query(
            "INSERT INTO model_alias_moves (id, alias, from_version, to_version, moved_by, reason, moved_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(alias.to_owned())
        .bind(current.clone())
        .bind(to.to_owned())
        .bind(moved_by.to_owned())
        .bind(reason.to_owned())
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?;
        if let Some(mut entry) = audit {
            // The version it moved from is known only here, in the move's own transaction.
            entry.before = current.as_ref().map(|from| serde_json::json!({"version_id": from}));
            crate::people::insert_audit(&mut transaction, &entry).await?;
        }
        transaction.commit().await?;
        Ok(AliasMove {
            alias: alias.to_owned(),
            from_version: current,
            to_version: to.to_owned(),
            moved_by: moved_by.to_owned(),
            reason: reason.to_owned(),
            moved_at_ms: now_ms,
        })
    }

    /// Moves of the aliases, newest first.
    pub async fn model_alias_history(&self, limit: i64) -> Result<Vec<AliasMove>, StoreError> {
        let rows = sqlx::query(
            "SELECT alias, from_version, to_version, moved_by, reason, moved_at_ms FROM model_alias_moves
             ORDER BY moved_at_ms DESC, id DESC LIMIT $1",
        )
        .bind(limit.clamp(1, 500))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AliasMove {
                    alias: row.try_get("alias")?,
                    from_version: row.try_get("from_version")?,
                    to_version: row.try_get("to_version")?,
                    moved_by: row.try_get("moved_by")?,
                    reason: row.try_get("reason")?,
                    moved_at_ms: row.try_get("moved_at_ms")?,
                })
            })
            .collect()
    }

    /// The latest `limit` decisions with a shadow score, newest first.
    pub async fn shadow_scores(&self, limit: i64) -> Result<Vec<ShadowScore>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.shadow_model_version AS challenger, d.score AS score, d.shadow_score AS shadow_score,
                    v.review_score_min AS review_min, v.decline_score_min AS decline_min, l.is_fraud AS is_fraud
             FROM decisions d JOIN payments p ON p.id = d.payment_id JOIN providers v ON v.id = p.provider_id
             LEFT JOIN payment_labels l ON l.payment_id = d.payment_id
             WHERE d.shadow_score IS NOT NULL ORDER BY d.created_at_ms DESC, d.id DESC LIMIT $1",
        )
        .bind(limit.clamp(1, 100_000))
        .fetch_all(&self.pool)
        .await?;
        let score = |row: &sqlx::any::AnyRow, column: &str| -> Result<u16, StoreError> {
            let value: i64 = row.try_get(column)?;
            u16::try_from(value).map_err(StoreError::corrupt)
        };
        rows.iter()
            .map(|row| {
                let fraud: Option<i64> = row.try_get("is_fraud")?;
                Ok(ShadowScore {
                    challenger: row.try_get("challenger")?,
                    score: score(row, "score")?,
                    shadow_score: score(row, "shadow_score")?,
                    review_min: score(row, "review_min")?,
                    decline_min: score(row, "decline_min")?,
                    is_fraud: fraud.map(|fraud| fraud == 1),
                })
            })
            .collect()
    }

    /// Records a new canary share (the latest change is the one in force), with its audit entry
    /// in the same commit.
    pub async fn set_model_canary(
        &self,
        share_bps: u32,
        set_by: &str,
        reason: &str,
        now_ms: i64,
        audit: &crate::people::AuditEntry,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO model_canary_changes (id, share_bps, set_by, reason, set_at_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(i64::from(share_bps))
        .bind(set_by.to_owned())
        .bind(reason.to_owned())
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?;
        crate::people::insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The canary share in force (0 when never set).
    pub async fn model_canary(&self) -> Result<u32, StoreError> {
        let row = sqlx::query("SELECT share_bps FROM model_canary_changes ORDER BY set_at_ms DESC, id DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        let share: Option<i64> = row.map(|row| row.try_get("share_bps")).transpose()?;
        u32::try_from(share.unwrap_or(0)).map_err(StoreError::corrupt)
    }

    /// Labelled decisions (each payment's latest decision with features), oldest first, at most
    /// `limit` (the newest ones when there are more).
    pub async fn training_examples(&self, limit: i64) -> Result<Vec<TrainingExample>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.features AS features, l.is_fraud AS is_fraud, d.created_at_ms AS created_at_ms,
                    l.created_at_ms AS labelled_at_ms, v.review_score_min AS review_min,
                    v.decline_score_min AS decline_min
             FROM decisions d JOIN payment_labels l ON l.payment_id = d.payment_id
             JOIN payments p ON p.id = d.payment_id JOIN providers v ON v.id = p.provider_id
             WHERE d.created_at_ms = (SELECT MAX(created_at_ms) FROM decisions x WHERE x.payment_id = d.payment_id)
             ORDER BY d.created_at_ms DESC, d.id DESC LIMIT $1",
        )
        .bind(limit.clamp(1, 1_000_000))
        .fetch_all(&self.pool)
        .await?;
        let mut examples = rows
            .iter()
            .map(|row| {
                let features: String = row.try_get("features")?;
                let fraud: i64 = row.try_get("is_fraud")?;
                let score = |column: &str| -> Result<u16, StoreError> {
                    let value: i64 = row.try_get(column)?;
                    u16::try_from(value).map_err(StoreError::corrupt)
                };
                Ok(TrainingExample {
                    features: serde_json::from_str(&features).map_err(StoreError::corrupt)?,
                    is_fraud: fraud == 1,
                    created_at_ms: row.try_get("created_at_ms")?,
                    labelled_at_ms: row.try_get("labelled_at_ms")?,
                    review_min: score("review_min")?,
                    decline_min: score("decline_min")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        examples.reverse();
        Ok(examples)
    }

    pub async fn insert_training_run(&self, run: &TrainingRun) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO training_runs (id, kind, status, stage, stages_done, stages, started_by, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(run.id.clone())
        .bind(run.kind.clone())
        .bind(run.status.clone())
        .bind(run.stage.clone())
        .bind(run.stages_done)
        .bind(run.stages)
        .bind(run.started_by.clone())
        .bind(run.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes a run's progress or result (every column but its id, kind, starter and start).
    pub async fn update_training_run(&self, run: &TrainingRun) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE training_runs SET status = $2, stage = $3, stages_done = $4, stages = $5, rows_used = $6,
                 positives = $7, label_cutoff_ms = $8, model_id = $9, error = $10, finished_at_ms = $11
             WHERE id = $1",
        )
        .bind(run.id.clone())
        .bind(run.status.clone())
        .bind(run.stage.clone())
        .bind(run.stages_done)
        .bind(run.stages)
        .bind(run.rows_used)
        .bind(run.positives)
        .bind(run.label_cutoff_ms)
        .bind(run.model_id.clone())
        .bind(run.error.clone())
        .bind(run.finished_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn training_run(&self, id: &str) -> Result<Option<TrainingRun>, StoreError> {
        let row = sqlx::query(
            "SELECT id, kind, status, stage, stages_done, stages, rows_used, positives, label_cutoff_ms, model_id, error,
                    started_by, created_at_ms, finished_at_ms
             FROM training_runs WHERE id = $1",
        )
        .bind(id.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(TrainingRun {
                id: row.try_get("id")?,
                kind: row.try_get("kind")?,
                status: row.try_get("status")?,
                stage: row.try_get("stage")?,
                stages_done: row.try_get("stages_done")?,
                stages: row.try_get("stages")?,
                rows_used: row.try_get("rows_used")?,
                positives: row.try_get("positives")?,
                label_cutoff_ms: row.try_get("label_cutoff_ms")?,
                model_id: row.try_get("model_id")?,
                error: row.try_get("error")?,
                started_by: row.try_get("started_by")?,
                created_at_ms: row.try_get("created_at_ms")?,
                finished_at_ms: row.try_get("finished_at_ms")?,
            })
        })
        .transpose()
    }

    /// Decisions made since `since_ms` (optionally of one provider's payments): their features
    /// and score, newest first, at most `limit`.
    pub async fn recent_decisions(
        &self,
        since_ms: i64,
        provider: Option<medpay_models::ProviderId>,
        limit: i64,
    ) -> Result<Vec<(serde_json::Value, u16)>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.features AS features, d.score AS score FROM decisions d JOIN payments p ON p.id = d.payment_id
             WHERE d.created_at_ms >= $1 AND ($2 = '' OR p.provider_id = $2)
             ORDER BY d.created_at_ms DESC, d.id DESC LIMIT $3",
        )
        .bind(since_ms)
        .bind(provider.map(|id| id.to_string()).unwrap_or_default())
        .bind(limit.clamp(1, 100_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let features: String = row.try_get("features")?;
                let score: i64 = row.try_get("score")?;
                Ok((
                    serde_json::from_str(&features).map_err(StoreError::corrupt)?,
                    u16::try_from(score).map_err(StoreError::corrupt)?,
                ))
            })
            .collect()
    }

    /// Runs still `running` that started before `stale_before_ms`: a process that stopped left them
    /// (no run lasts that long). Failed, saying so; returns how many. By age, not by "every running
    /// run", so that a node starting does not fail another node's run.
    pub async fn fail_interrupted_training_runs(&self, now_ms: i64, stale_before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE training_runs SET status = 'failed', error = 'interrupted: the service stopped during the run',
                 finished_at_ms = $1
             WHERE status = 'running' AND created_at_ms < $2",
        )
        .bind(now_ms)
        .bind(stale_before_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// How many training runs started since `since_ms` are running.
    pub async fn running_training_runs(&self, since_ms: i64) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM training_runs WHERE status = 'running' AND created_at_ms >= $1")
                .bind(since_ms)
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get("n")?)
    }
}

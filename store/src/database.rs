use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Transaction};
use std::time::Duration;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Most connections the pool opens. SQLite serialises writers anyway; PostgreSQL's default server
/// limit is 100 and several nodes share it.
pub const POOL_CONNECTIONS_MAX_SQLITE: u32 = 8;
pub const POOL_CONNECTIONS_MAX_POSTGRES: u32 = 20;
/// Connections of the pool the PostgreSQL writer holds, each committing its own batches.
pub const POSTGRES_WRITER_LANES: usize = 4;
/// How long a request waits for a pooled connection before failing.
pub const POOL_ACQUIRE_TIMEOUT_MS: u64 = 3_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL (sqlite:// or postgres:// expected)")]
    UnsupportedUrl,
    #[error("already exists: {0}")]
    Conflict(&'static str),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database writer has stopped")]
    WriterStopped,
    #[error("the database reader has stopped")]
    ReaderStopped,
    #[error("a statement run on another runtime did not finish: {0}")]
    ElsewhereFailed(String),
    /// The runtime a store's statements run on (`anchored`) has stopped: its node is stopping.
    #[error("the runtime this store's statements run on has stopped")]
    ElsewhereStopped,
}

impl StoreError {
    pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt(what.to_string())
    }

    /// Maps a unique-constraint violation to `Conflict(what)`; every other error stays as it is.
    pub(crate) fn on_unique(error: sqlx::Error, what: &'static str) -> StoreError {
        match &error {
            sqlx::Error::Database(database_error) if database_error.is_unique_violation() => StoreError::Conflict(what),
            _ => StoreError::Database(error),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    engine: Engine,
    /// The payment path's commits, batched (see `writer`).
    pub(crate) writer: crate::writer::Writer,
    /// The payment path's point reads on SQLite (see `reader`); none on PostgreSQL.
    pub(crate) reader: Option<crate::reader::Reader>,
    /// The SQLite URL (with its `mode`), for pools of other threads' own (`background_reads`).
    sqlite_url: Option<std::sync::Arc<str>>,
    /// Where `fetch_rows` and `execute_rows` run their statements (`anchored`): none, where they
    /// are called.
    runs_on: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Store").field("engine", &self.engine).finish()
    }
}

impl Store {
    /// Connects and applies the engine's migrations. A `sqlite://` file's folder is created.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Engine::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let url = match engine {
            Engine::Sqlite => prepare_sqlite_url(url)?,
            Engine::Postgres => url.to_owned(),
        };
        let connections_max = match engine {
            Engine::Sqlite => POOL_CONNECTIONS_MAX_SQLITE,
            Engine::Postgres => POOL_CONNECTIONS_MAX_POSTGRES,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections_max)
            .acquire_timeout(Duration::from_millis(POOL_ACQUIRE_TIMEOUT_MS))
            .connect(&url)
            .await?;
        migrate(&pool, engine).await?;
        let reader = match engine {
            Engine::Sqlite => Some(crate::reader::Reader::sqlite(sqlite_path(&url)?)?),
            Engine::Postgres => None,
        };
        let writer = match engine {
            Engine::Sqlite => crate::writer::Writer::sqlite(sqlite_path(&url)?)?,
            Engine::Postgres => {
                let mut lanes = Vec::with_capacity(POSTGRES_WRITER_LANES);
                for _ in 0..POSTGRES_WRITER_LANES {
                    lanes.push(pool.acquire().await?);
                }
                crate::writer::Writer::postgres(lanes)
            }
        };
        let sqlite_url = (engine == Engine::Sqlite).then(|| std::sync::Arc::from(url.as_str()));
        Ok(Store { pool, engine, writer, reader, sqlite_url, runs_on: None })
    }

    /// This store with, on SQLite, a read-only pool of one connection of its own, opened on the
    /// calling thread and kept for the pool's life (no idle timeout, no lifetime: its
    /// connection's thread is the calling thread's child and keeps that thread's priority, even
    /// when the pool is used from a low-priority one). Background work such as the log export
    /// reads there, not on the pool the payments use. Only reads go through it: every write
    /// still takes `self`'s pool. On PostgreSQL the same pool.
    ///
    /// It is `anchored` to the calling runtime.
    pub async fn background_reads(&self) -> Result<Store, StoreError> {
        let Some(url) = &self.sqlite_url else {
            return Ok(self.anchored());
        };
        let path = sqlite_path(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_millis(POOL_ACQUIRE_TIMEOUT_MS))
            .connect(&format!("sqlite://{path}?mode=ro"))
            .await?;
        Ok(Store { pool, ..self.clone() }.anchored())
    }

    /// This store, with the statements of the calls that support it (the log export's: its
    /// outbox's claim, completion and release, and its reads) run to their end as tasks of the
    /// calling (normal-priority) runtime, whichever thread makes the call; that thread only
    /// turns the rows into what it needs. sqlx hands a statement's rows over a channel of 50,
    /// and a statement whose rows wait for a thread without the CPU stops at the 50th and keeps
    /// what it holds meanwhile (a write lock, a WAL snapshot). `ElsewhereStopped` once that
    /// runtime has stopped.
    pub fn anchored(&self) -> Store {
        Store { runs_on: Some(tokio::runtime::Handle::current()), ..self.clone() }
    }

    /// Runs `work` on the pool where `runs_on` says.
    async fn on_pool<T, F>(&self, work: impl FnOnce(AnyPool) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let Some(handle) = &self.runs_on else {
            return Ok(work(self.pool.clone()).await?);
        };
        match handle.spawn(work(self.pool.clone())).await {
            Ok(done) => Ok(done?),
            Err(error) if error.is_cancelled() => Err(StoreError::ElsewhereStopped),
            Err(error) => Err(StoreError::ElsewhereFailed(error.to_string())),
        }
    }

    /// Every row of `query` (see `anchored`).
    pub(crate) async fn fetch_rows(
        &self,
        query: sqlx::query::Query<'static, Any, sqlx::any::AnyArguments>,
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        self.on_pool(|pool| async move { query.fetch_all(&pool).await }).await
    }

    /// The rows `query` changed (see `anchored`).
    pub(crate) async fn execute_rows(
        &self,
        query: sqlx::query::Query<'static, Any, sqlx::any::AnyArguments>,
    ) -> Result<u64, StoreError> {
        self.on_pool(|pool| async move { query.execute(&pool).await.map(|done| done.rows_affected()) }).await
    }

    /// Plans and batches this node's writer has committed so far (see `writer::WriteCounts`).
    pub fn write_counts(&self) -> crate::WriteReading {
        self.writer.counts()
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// A transaction that takes the write lock at once on SQLite, so that a transaction that reads
    /// before it writes never fails on a lock upgrade; waits up to the busy timeout instead.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let transaction = match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Engine::Postgres => self.pool.begin().await?,
        };
        Ok(transaction)
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

async fn migrate(pool: &AnyPool, engine: Engine) -> Result<(), StoreError> {
    match engine {
        Engine::Sqlite => {
            // WAL lets readers run beside the writer; the setting is kept in the file.
            sqlx::query("PRAGMA journal_mode = WAL").execute(pool).await?;
            SQLITE_MIGRATIONS.run(pool).await?;
        }
        Engine::Postgres => POSTGRES_MIGRATIONS.run(pool).await?,
    }
    Ok(())
}

/// The file of a `sqlite://` URL. The writer needs a file: an in-memory database would be
/// another database on its own connection.
fn sqlite_path(url: &str) -> Result<&str, StoreError> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.contains(":memory:") {
        return Err(StoreError::UnsupportedUrl);
    }
    Ok(path)
}

/// Adds `mode=rwc` so that a missing file is created, and creates its folder.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    let parent = std::path::Path::new(path).parent().filter(|parent| !parent.as_os_str().is_empty());
    if let Some(parent) = parent.filter(|_| path != ":memory:") {
        std::fs::create_dir_all(parent)?;
    }
    Ok(if url.contains('?') { url.to_owned() } else { format!("{url}?mode=rwc") })
}

#[cfg(test)]
mod tests {
    use super::SQLITE_MIGRATIONS;
    use sqlx::Row;

    /// Migration 0029 scopes the credentials issued before it as they were issued: the token of a
    /// patient a provider registered to that provider, the admin's registrations to nobody, a
    /// provider's unused sign-in link to it; and it ends the sessions it cannot tell apart.
    #[tokio::test]
    async fn scopes_are_backfilled_from_what_issued_each_credential() {
        sqlx::any::install_default_drivers();
        let path = std::env::temp_dir().join(format!("medpay-0029-{}.db", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
        let (before, scopes): (Vec<_>, Vec<_>) = SQLITE_MIGRATIONS.iter().partition(|migration| migration.version < 29);
        assert_eq!(scopes.first().map(|migration| migration.version), Some(29));
        for migration in before {
            sqlx::raw_sql(sqlx::AssertSqlSafe(migration.sql.as_str().to_owned())).execute(&pool).await.unwrap();
        }
        sqlx::raw_sql(
            "INSERT INTO providers (id, name, cnpj, fee_bps, escrow, score_fail_mode, max_amount_centavos, api_key_hash, created_at_ms)
                 VALUES ('pa', 'A', '11222333000181', 0, 0, 'open', 100, 'ka', 1), ('pb', 'B', '11444777000161', 0, 0, 'open', 100, 'kb', 1);
             INSERT INTO patients (id, name, cpf, email, phone, token_hash, created_at_ms)
                 VALUES ('by-a', 'M', '52998224725', '', '', 'ta', 10), ('by-admin', 'J', '11144477735', '', '', 'tn', 20);
             -- by-a: registered by A (the link shares the creation time), later chose B; by-admin: chose A.
             INSERT INTO provider_patients (provider_id, patient_id, created_at_ms)
                 VALUES ('pa', 'by-a', 10), ('pb', 'by-a', 50), ('pa', 'by-admin', 60);
             INSERT INTO patient_sign_in_codes (code_hash, patient_id, created_by, created_at_ms, expires_at_ms)
                 VALUES ('ca', 'by-a', 'provider:pa', 70, 99), ('cs', 'by-a', 'person:someone', 70, 99);
             INSERT INTO patient_sessions (token_hash, patient_id, created_at_ms, expires_at_ms)
                 VALUES ('sa', 'by-a', 80, 9999999999999);",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(scopes[0].sql.as_str().to_owned())).execute(&pool).await.unwrap();
        let scope = |sql: &'static str| {
            let pool = pool.clone();
            async move {
                let row = sqlx::query(sql).fetch_one(&pool).await.unwrap();
                row.try_get::<Option<String>, _>(0).unwrap()
            }
        };
        assert_eq!(scope("SELECT token_provider_id FROM patients WHERE id = 'by-a'").await.as_deref(), Some("pa"));
        assert_eq!(scope("SELECT token_provider_id FROM patients WHERE id = 'by-admin'").await, None);
        assert_eq!(
            scope("SELECT provider_id FROM patient_sign_in_codes WHERE code_hash = 'ca'").await.as_deref(),
            Some("pa")
        );
        assert_eq!(scope("SELECT provider_id FROM patient_sign_in_codes WHERE code_hash = 'cs'").await, None);
        let revoked = sqlx::query("SELECT revoked_at_ms FROM patient_sessions WHERE token_hash = 'sa'")
            .fetch_one(&pool)
            .await
            .unwrap()
            .try_get::<Option<i64>, _>(0)
            .unwrap();
        assert_eq!(revoked, Some(80), "a session of unknown scope ends");
        pool.close().await;
        let _ = std::fs::remove_file(&path);
    }
}

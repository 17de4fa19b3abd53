//! One writer per database: the commits of every actor, batched into one transaction and one
//! fsync. An actor hands the writer a `Plan` (statements and the events to number) and is answered
//! once the batch that holds it is durable. Provider event numbers are taken here, in commit order:
//! one upsert `… RETURNING` of the provider's counter (`provider_event_counters`, migration 0009)
//! per provider per batch, at its end, so the counter's row is locked (PostgreSQL) only from there
//! to the commit, and several nodes writing the same database still number gap-free.
//!
//! Statements of one text across a batch's plans are grouped (inserts become multi-row inserts)
//! in an order every plan's own order agrees with; see `Schedule`.
//!
//! A batch that fails as a whole (one plan's guard refused, say) is rolled back and its plans are
//! run again one transaction each, so one bad plan fails alone.
//!
//! SQLite runs on its own thread through rusqlite: a batch is plain function calls there, where
//! sqlx would hand every statement to its worker thread and back (that hand-off was most of the
//! CPU a payment cost). PostgreSQL keeps sqlx, on one dedicated connection.

use crate::database::StoreError;
use crate::payments::{EventRecord, NewEvent};
use medpay_models::{PaymentId, ProviderId};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

/// Most plans committed together.
pub const WRITE_BATCH_PLANS_MAX: usize = 512;
/// Plans waiting for the writer before callers wait to hand theirs in.
pub const WRITE_QUEUE_PLANS_MAX: usize = 8_192;
/// How long SQLite waits for a lock held by another connection (a migration, an admin write).
pub const SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;
/// Prepared statements the SQLite writer keeps.
const SQLITE_STATEMENT_CACHE: usize = 512;

/// A value bound to a statement. Nulls carry their type: PostgreSQL refuses an untyped one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Int(i64),
    Text(String),
    NullInt,
    NullText,
}

impl From<i64> for Value {
    fn from(value: i64) -> Value {
        Value::Int(value)
    }
}

impl From<String> for Value {
    fn from(value: String) -> Value {
        Value::Text(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Value {
        Value::Text(value.to_owned())
    }
}

impl From<Option<i64>> for Value {
    fn from(value: Option<i64>) -> Value {
        value.map_or(Value::NullInt, Value::Int)
    }
}

impl From<Option<String>> for Value {
    fn from(value: Option<String>) -> Value {
        value.map_or(Value::NullText, Value::Text)
    }
}

/// What a statement must have done for its plan to stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Any number of rows.
    Any,
    /// Exactly one row; else the plan fails with `Conflict(what)`.
    One(&'static str),
}

#[derive(Debug, Clone)]
pub(crate) struct Statement {
    pub sql: &'static str,
    pub params: Vec<Value>,
    pub check: Check,
    /// A unique-constraint violation fails the plan with `Conflict(what)`.
    pub unique: Option<&'static str>,
}

impl Statement {
    pub fn new(sql: &'static str, params: Vec<Value>) -> Statement {
        Statement { sql, params, check: Check::Any, unique: None }
    }

    pub fn one(mut self, what: &'static str) -> Statement {
        self.check = Check::One(what);
        self
    }

    pub fn unique(mut self, what: &'static str) -> Statement {
        self.unique = Some(what);
        self
    }
}

/// Events of one payment, numbered by the writer among their provider's.
#[derive(Debug, Clone)]
pub(crate) struct PlannedEvents {
    pub payment: PaymentId,
    pub provider: ProviderId,
    pub events: Vec<NewEvent>,
    pub now_ms: i64,
}

/// Everything one commit of one actor writes: all of it or none of it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub statements: Vec<Statement>,
    pub events: Option<PlannedEvents>,
}

/// What a plan wrote: rows touched by each statement, and its events with their numbers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Written {
    pub rows: Vec<u64>,
    pub events: Vec<EventRecord>,
}

const EVENT_INSERT: &str = "INSERT INTO events (payment_id, seq, provider_id, kind, data, created_at_ms, provider_seq)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
const PROVIDER_SEQ_TAKE: &str = "INSERT INTO provider_event_counters (provider_id, last_event_seq) VALUES ($1, $2)
     ON CONFLICT (provider_id) DO UPDATE SET last_event_seq = provider_event_counters.last_event_seq + EXCLUDED.last_event_seq
     RETURNING last_event_seq";

/// A connection the writer drives. Each call is one statement; the SQLite one blocks its own thread.
pub(crate) trait Connection: Send {
    fn begin(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn commit(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn rollback(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Rows affected; a unique violation is `Conflict(unique)` when `unique` names it.
    fn execute(
        &mut self,
        sql: &'static str,
        params: &[Value],
        unique: Option<&'static str>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// The first column of the first row, if there is a row.
    fn query_i64(
        &mut self,
        sql: &'static str,
        params: &[Value],
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;
}

struct Job {
    plan: Plan,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// The way in to the writer of one database.
#[derive(Clone)]
pub(crate) struct Writer {
    /// One queue per lane (a lane is one connection committing its own batches).
    lanes: std::sync::Arc<[mpsc::Sender<Job>]>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Asks the lanes to finish the plans they hold and let their connections go.
    stop: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    /// How many lanes have.
    stopped: tokio::sync::watch::Receiver<usize>,
    counts: std::sync::Arc<WriteCounts>,
}

/// Plans and batches committed by a writer's lanes since it started: background work compares two
/// readings to see whether commits queue behind each other (more than one plan per batch).
#[derive(Debug, Default)]
pub(crate) struct WriteCounts {
    plans: std::sync::atomic::AtomicU64,
    batches: std::sync::atomic::AtomicU64,
}

/// One reading of `WriteCounts`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReading {
    pub plans: u64,
    pub batches: u64,
}

impl WriteCounts {
    pub fn read(&self) -> WriteReading {
        use std::sync::atomic::Ordering::Relaxed;
        WriteReading { plans: self.plans.load(Relaxed), batches: self.batches.load(Relaxed) }
    }

    fn add(&self, plans: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.plans.fetch_add(plans as u64, Relaxed);
        self.batches.fetch_add(1, Relaxed);
    }
}

/// A lane's side of `Writer::close`.
#[derive(Clone)]
struct Lifecycle {
    stop: tokio::sync::watch::Receiver<bool>,
    stopped: std::sync::Arc<tokio::sync::watch::Sender<usize>>,
    counts: std::sync::Arc<WriteCounts>,
}

impl Writer {
    fn with_lanes(lanes: Vec<mpsc::Sender<Job>>) -> (Writer, Lifecycle) {
        let (stop, stop_seen) = tokio::sync::watch::channel(false);
        let (stopped_set, stopped) = tokio::sync::watch::channel(0);
        let counts = std::sync::Arc::new(WriteCounts::default());
        let lifecycle =
            Lifecycle { stop: stop_seen, stopped: std::sync::Arc::new(stopped_set), counts: counts.clone() };
        let writer = Writer {
            lanes: lanes.into(),
            next: std::sync::Arc::default(),
            stop: std::sync::Arc::new(stop),
            stopped,
            counts,
        };
        (writer, lifecycle)
    }

    /// What the lanes have committed so far.
    pub fn counts(&self) -> WriteReading {
        self.counts.read()
    }

    /// Hands `plan` to the writer; answers once it is durable (or refused).
    pub async fn write(&self, plan: Plan) -> Result<Written, StoreError> {
        let lane = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.lanes.len();
        let (reply, answer) = oneshot::channel();
        self.lanes[lane].send(Job { plan, reply }).await.map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// The SQLite writer on a thread of its own, on the database file at `path` (one lane:
    /// SQLite has one writer at a time anyway).
    pub fn sqlite(path: &str) -> Result<Writer, StoreError> {
        let connection = SqliteConnection::open(path)?;
        let (jobs, queue) = mpsc::channel(WRITE_QUEUE_PLANS_MAX);
        let (writer, lifecycle) = Writer::with_lanes(vec![jobs]);
        std::thread::Builder::new().name("medpay-sqlite-writer".to_owned()).spawn(move || {
            // A runtime of its own with no I/O: the thread does nothing but this database's commits.
            match tokio::runtime::Builder::new_current_thread().build() {
                Ok(runtime) => runtime.block_on(run(connection, queue, lifecycle)),
                Err(error) => tracing::error!(%error, "the SQLite writer could not start"),
            }
        })?;
        Ok(writer)
    }

    /// The PostgreSQL writer: one lane per connection, as tasks of the caller's runtime. Each lane
    /// batches its own commits; PostgreSQL groups the lanes' fsyncs, and the provider rows locked
    /// at the end of each batch keep event numbers in commit order across lanes.
    pub fn postgres(connections: Vec<sqlx::pool::PoolConnection<sqlx::Any>>) -> Writer {
        let mut lanes = Vec::with_capacity(connections.len());
        let mut queues = Vec::with_capacity(connections.len());
        for _ in &connections {
            let (jobs, queue) = mpsc::channel(WRITE_QUEUE_PLANS_MAX / connections.len().max(1));
            lanes.push(jobs);
            queues.push(queue);
        }
        let (writer, lifecycle) = Writer::with_lanes(lanes);
        for (connection, queue) in connections.into_iter().zip(queues) {
            tokio::spawn(run(SqlxConnection { connection }, queue, lifecycle.clone()));
        }
        writer
    }

    /// Commits what the lanes hold, then lets their connections go (a pool closes only once
    /// every connection is back). Plans handed in afterwards are refused.
    pub async fn close(&self) {
        let _ = self.stop.send(true);
        let lanes = self.lanes.len();
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|stopped| *stopped >= lanes).await;
    }
}

async fn run<C: Connection>(mut connection: C, mut queue: mpsc::Receiver<Job>, mut lifecycle: Lifecycle) {
    let mut jobs = Vec::with_capacity(WRITE_BATCH_PLANS_MAX);
    loop {
        let stopping = tokio::select! {
            received = queue.recv_many(&mut jobs, WRITE_BATCH_PLANS_MAX) => Some(received),
            _ = lifecycle.stop.wait_for(|stop| *stop) => None,
        };
        let received = match stopping {
            Some(received) => received,
            None => {
                // Refuse new plans; commit those already handed in.
                queue.close();
                queue.recv_many(&mut jobs, WRITE_BATCH_PLANS_MAX).await
            }
        };
        if received == 0 {
            break;
        }
        let batch: Vec<Job> = std::mem::take(&mut jobs);
        metrics::histogram!("medpay_write_batch_plans").record(batch.len() as f64);
        let plans = batch.len();
        commit_batch(&mut connection, batch).await;
        lifecycle.counts.add(plans);
    }
    drop(connection);
    lifecycle.stopped.send_modify(|stopped| *stopped += 1);
    tracing::debug!("database writer stopped");
}

async fn commit_batch<C: Connection>(connection: &mut C, batch: Vec<Job>) {
    let plans: Vec<&Plan> = batch.iter().map(|job| &job.plan).collect();
    match write_plans(connection, &plans).await {
        Ok(written) => {
            for (job, written) in batch.into_iter().zip(written) {
                let _ = job.reply.send(Ok(written));
            }
        }
        Err(error) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.reply.send(Err(error));
            }
        }
        Err(error) => {
            // One plan (or more) refused: each alone, so that only the bad ones fail.
            tracing::debug!(%error, plans = batch.len(), "batch refused; committing its plans one by one");
            for job in batch {
                let result = write_plans(connection, &[&job.plan]).await.map(|mut written| written.remove(0));
                let _ = job.reply.send(result);
            }
        }
    }
}

/// One transaction: every plan's statements, then the events numbered per provider, then commit.
async fn write_plans<C: Connection>(connection: &mut C, plans: &[&Plan]) -> Result<Vec<Written>, StoreError> {
    connection.begin().await?;
    match write_in_transaction(connection, plans).await {
        Ok(written) => match connection.commit().await {
            Ok(()) => Ok(written),
            Err(error) => {
                let _ = connection.rollback().await;
                Err(error)
            }
        },
        Err(error) => {
            if let Err(rollback) = connection.rollback().await {
                tracing::error!(%rollback, "rollback failed");
            }
            Err(error)
        }
    }
}

/// Every plan's statements one after the other (one plan alone, or a batch whose statements
/// cannot be grouped): a refused guard or unique key names its plan.
async fn write_in_order<C: Connection>(connection: &mut C, plans: &[&Plan]) -> Result<Vec<Written>, StoreError> {
    let mut written = Vec::with_capacity(plans.len());
    for plan in plans {
        let mut rows = Vec::with_capacity(plan.statements.len());
        for statement in &plan.statements {
            let affected = connection.execute(statement.sql, &statement.params, statement.unique).await?;
            if let Check::One(what) = statement.check
                && affected != 1
            {
                return Err(StoreError::Conflict(what));
            }
            rows.push(affected);
        }
        written.push(Written { rows, events: Vec::new() });
    }
    Ok(written)
}

/// A batch's statements grouped by their text, the groups in an order every plan's own order
/// agrees with (plans of different payments do not depend on each other; a plan's statements
/// do, in order). Inserts of one text become multi-row inserts: a batch of 200 payments is a
/// few dozen statements instead of a few thousand round trips (PostgreSQL's cost per payment
/// was mostly its statements' own: parse, bind, execute, each once per row).
struct Schedule {
    groups: Vec<Group>,
}

/// Statements of one text: the text, and where they are (plan, statement).
type Group = (&'static str, Vec<(usize, usize)>);

impl Schedule {
    /// The groups in an order that keeps every plan's own order (a topological order of "this
    /// text comes before that one in some plan", first seen first among equals); None when the
    /// plans disagree (a cycle: then the batch runs in order).
    fn of(plans: &[&Plan]) -> Option<Schedule> {
        let mut index: HashMap<&'static str, usize> = HashMap::new();
        let mut members: Vec<Group> = Vec::new();
        let mut after: Vec<Vec<usize>> = Vec::new();
        for (p, plan) in plans.iter().enumerate() {
            let mut previous: Option<usize> = None;
            for (s, statement) in plan.statements.iter().enumerate() {
                let node = *index.entry(statement.sql).or_insert_with(|| {
                    members.push((statement.sql, Vec::new()));
                    after.push(Vec::new());
                    members.len() - 1
                });
                members[node].1.push((p, s));
                if let Some(previous) = previous.filter(|previous| *previous != node)
                    && !after[previous].contains(&node)
                {
                    after[previous].push(node);
                }
                previous = Some(node);
            }
        }
        let mut waiting: Vec<usize> = vec![0; members.len()];
        for next in after.iter().flatten() {
            waiting[*next] += 1;
        }
        let mut ready: std::collections::BTreeSet<usize> = (0..members.len()).filter(|n| waiting[*n] == 0).collect();
        let mut order = Vec::with_capacity(members.len());
        while let Some(node) = ready.pop_first() {
            order.push(node);
            for next in &after[node] {
                waiting[*next] -= 1;
                if waiting[*next] == 0 {
                    ready.insert(*next);
                }
            }
        }
        if order.len() != members.len() {
            return None;
        }
        let mut members: Vec<Option<Group>> = members.into_iter().map(Some).collect();
        Some(Schedule { groups: order.into_iter().filter_map(|node| members[node].take()).collect() })
    }
}

/// Rows of one multi-row insert: powers of two up to this, so that each table has a handful of
/// texts, each prepared once.
const MERGED_ROWS_MAX: usize = 256;

/// An insert whose rows can be sent together: `INSERT INTO … VALUES (…)`, nothing after.
fn mergeable(sql: &str) -> bool {
    let sql = sql.trim();
    sql.starts_with("INSERT INTO")
        && sql.matches("VALUES").count() == 1
        && sql.ends_with(')')
        && !sql.contains("ON CONFLICT")
        && !sql.contains("RETURNING")
}

/// `template` (one row of `$1 … $n`) with `rows` rows, numbered on. Made once per (text, rows)
/// and kept for the process's life (a few texts per table).
fn merged_sql(template: &'static str, rows: usize) -> &'static str {
    static TEXTS: std::sync::OnceLock<std::sync::Mutex<HashMap<(&'static str, usize), &'static str>>> =
        std::sync::OnceLock::new();
    let texts = TEXTS.get_or_init(Default::default);
    let mut texts = texts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    texts.entry((template, rows)).or_insert_with(|| {
        let at = template.rfind("VALUES").unwrap_or(0) + "VALUES".len();
        let (head, tuple) = template.split_at(at);
        let tuple = tuple.trim();
        let width = tuple.matches('$').count();
        let mut text = String::with_capacity(head.len() + rows * (tuple.len() + 2));
        text.push_str(head);
        text.push(' ');
        for row in 0..rows {
            if row > 0 {
                text.push_str(", ");
            }
            // `$k` becomes `$(k + row * width)`; everything else (literals) stays.
            let mut chars = tuple.chars().peekable();
            while let Some(c) = chars.next() {
                if c != '$' {
                    text.push(c);
                    continue;
                }
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let k: usize = digits.parse().unwrap_or(0);
                text.push('$');
                text.push_str(&(k + row * width).to_string());
            }
        }
        Box::leak(text.into_boxed_str())
    })
}

/// Splits `n` rows into chunks of powers of two (largest first), at most `MERGED_ROWS_MAX`.
fn chunks(mut n: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    while n > 0 {
        let size = if n >= MERGED_ROWS_MAX { MERGED_ROWS_MAX } else { 1 << (usize::BITS - 1 - n.leading_zeros()) };
        sizes.push(size);
        n -= size;
    }
    sizes
}

/// Runs `rows` (each a full set of a template's parameters) as multi-row inserts.
async fn insert_rows<C: Connection>(
    connection: &mut C,
    template: &'static str,
    rows: &[&[Value]],
) -> Result<(), StoreError> {
    let mut at = 0;
    for size in chunks(rows.len()) {
        let params: Vec<Value> = rows[at..at + size].iter().flat_map(|row| row.iter().cloned()).collect();
        let sql = if size == 1 { template } else { merged_sql(template, size) };
        let affected = connection.execute(sql, &params, None).await?;
        if affected != size as u64 {
            return Err(StoreError::Conflict("a multi-row insert wrote another number of rows"));
        }
        at += size;
    }
    Ok(())
}

/// The batch as its schedule groups it. An error fails the batch (its plans are then run one by
/// one, where the error names its plan).
async fn write_grouped<C: Connection>(
    connection: &mut C,
    plans: &[&Plan],
    schedule: &Schedule,
) -> Result<Vec<Written>, StoreError> {
    let mut rows: Vec<Vec<u64>> = plans.iter().map(|plan| vec![0; plan.statements.len()]).collect();
    for (sql, members) in &schedule.groups {
        if members.len() > 1 && mergeable(sql) {
            let params: Vec<&[Value]> =
                members.iter().map(|(p, s)| plans[*p].statements[*s].params.as_slice()).collect();
            insert_rows(connection, sql, &params).await?;
            for (p, s) in members {
                rows[*p][*s] = 1;
            }
            continue;
        }
        for (p, s) in members {
            let statement = &plans[*p].statements[*s];
            let affected = connection.execute(statement.sql, &statement.params, statement.unique).await?;
            if let Check::One(what) = statement.check
                && affected != 1
            {
                return Err(StoreError::Conflict(what));
            }
            rows[*p][*s] = affected;
        }
    }
    Ok(rows.into_iter().map(|rows| Written { rows, events: Vec::new() }).collect())
}

async fn write_in_transaction<C: Connection>(connection: &mut C, plans: &[&Plan]) -> Result<Vec<Written>, StoreError> {
    let mut written = match (plans.len() > 1).then(|| Schedule::of(plans)).flatten() {
        Some(schedule) => write_grouped(connection, plans, &schedule).await?,
        None => write_in_order(connection, plans).await?,
    };
    // Provider numbers, taken last and in one statement per provider.
    let mut counts: HashMap<ProviderId, i64> = HashMap::new();
    for events in plans.iter().filter_map(|plan| plan.events.as_ref()) {
        *counts.entry(events.provider).or_default() += i64::try_from(events.events.len()).unwrap_or(i64::MAX);
    }
    // In one order everywhere: lanes locking two providers never wait on each other in a cycle.
    let mut counts: Vec<(ProviderId, i64)> = counts.into_iter().filter(|(_, count)| *count > 0).collect();
    counts.sort_unstable_by_key(|(provider, _)| provider.as_uuid());
    let mut next: HashMap<ProviderId, i64> = HashMap::with_capacity(counts.len());
    for (provider, count) in counts {
        let last = connection
            .query_i64(PROVIDER_SEQ_TAKE, &[provider.to_string().into(), count.into()])
            .await?
            .ok_or(StoreError::Conflict("no such provider"))?;
        next.insert(provider, last - count + 1);
    }
    let mut event_rows: Vec<[Value; 7]> = Vec::new();
    for (plan, written) in plans.iter().zip(written.iter_mut()) {
        let Some(planned) = &plan.events else { continue };
        for event in &planned.events {
            let seq = next.get_mut(&planned.provider).ok_or(StoreError::Conflict("no such provider"))?;
            let provider_seq = *seq;
            *seq += 1;
            event_rows.push([
                planned.payment.to_string().into(),
                event.seq.into(),
                planned.provider.to_string().into(),
                event.kind.as_str().into(),
                event.data.to_string().into(),
                planned.now_ms.into(),
                provider_seq.into(),
            ]);
            written.events.push(EventRecord {
                payment_id: planned.payment,
                provider_id: planned.provider,
                seq: event.seq,
                provider_seq,
                kind: event.kind.clone(),
                data: event.data.clone(),
                created_at_ms: planned.now_ms,
            });
        }
    }
    if plans.len() > 1 {
        let rows: Vec<&[Value]> = event_rows.iter().map(|row| row.as_slice()).collect();
        insert_rows(connection, EVENT_INSERT, &rows).await?;
    } else {
        for row in &event_rows {
            connection.execute(EVENT_INSERT, row, Some("event")).await?;
        }
    }
    Ok(written)
}

/// SQLite through rusqlite, on the writer's own thread.
struct SqliteConnection {
    connection: rusqlite::Connection,
    /// Our SQL (`$N`, as sqlx takes it) in SQLite's numbered form (`?N`), made once per text.
    numbered: HashMap<&'static str, String>,
}

impl SqliteConnection {
    fn open(path: &str) -> Result<SqliteConnection, StoreError> {
        let connection = rusqlite::Connection::open(path)?;
        connection.busy_timeout(std::time::Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS))?;
        // FULL: a commit is on disk when the writer answers (a 201 survives a power cut).
        connection.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        connection.set_prepared_statement_cache_capacity(SQLITE_STATEMENT_CACHE);
        Ok(SqliteConnection { connection, numbered: HashMap::new() })
    }

    fn statement(&mut self, sql: &'static str) -> Result<rusqlite::CachedStatement<'_>, StoreError> {
        let text = self.numbered.entry(sql).or_insert_with(|| sql.replace('$', "?"));
        Ok(self.connection.prepare_cached(text)?)
    }

    fn bind(statement: &mut rusqlite::CachedStatement<'_>, params: &[Value]) -> Result<(), StoreError> {
        for (index, value) in params.iter().enumerate() {
            let position = index + 1;
            match value {
                Value::Int(number) => statement.raw_bind_parameter(position, number)?,
                Value::Text(text) => statement.raw_bind_parameter(position, text.as_str())?,
                Value::NullInt | Value::NullText => statement.raw_bind_parameter(position, rusqlite::types::Null)?,
            }
        }
        Ok(())
    }

    fn is_unique_violation(error: &rusqlite::Error) -> bool {
        matches!(error, rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    }
}

impl Connection for SqliteConnection {
    async fn begin(&mut self) -> Result<(), StoreError> {
        // IMMEDIATE: the write lock at once, so a batch never fails on a lock upgrade.
        Ok(self.connection.execute_batch("BEGIN IMMEDIATE")?)
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        Ok(self.connection.execute_batch("COMMIT")?)
    }

    async fn rollback(&mut self) -> Result<(), StoreError> {
        Ok(self.connection.execute_batch("ROLLBACK")?)
    }

    async fn execute(
        &mut self,
        sql: &'static str,
        params: &[Value],
        unique: Option<&'static str>,
    ) -> Result<u64, StoreError> {
        let mut statement = self.statement(sql)?;
        Self::bind(&mut statement, params)?;
        match statement.raw_execute() {
            Ok(rows) => Ok(u64::try_from(rows).unwrap_or(u64::MAX)),
            Err(error) => match unique {
                Some(what) if Self::is_unique_violation(&error) => Err(StoreError::Conflict(what)),
                _ => Err(error.into()),
            },
        }
    }

    async fn query_i64(&mut self, sql: &'static str, params: &[Value]) -> Result<Option<i64>, StoreError> {
        let mut statement = self.statement(sql)?;
        Self::bind(&mut statement, params)?;
        let mut rows = statement.raw_query();
        match rows.next()? {
            Some(row) => Ok(Some(row.get(0)?)),
            None => Ok(None),
        }
    }
}

/// PostgreSQL (or any engine sqlx drives) on one connection of the pool, held for good.
struct SqlxConnection {
    connection: sqlx::pool::PoolConnection<sqlx::Any>,
}

fn bound<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    params: &'q [Value],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for value in params {
        query = match value {
            Value::Int(number) => query.bind(*number),
            Value::Text(text) => query.bind(text.as_str()),
            Value::NullInt => query.bind(None::<i64>),
            Value::NullText => query.bind(None::<String>),
        };
    }
    query
}

impl Connection for SqlxConnection {
    async fn begin(&mut self) -> Result<(), StoreError> {
        sqlx::query("BEGIN").execute(&mut *self.connection).await?;
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        sqlx::query("COMMIT").execute(&mut *self.connection).await?;
        Ok(())
    }

    async fn rollback(&mut self) -> Result<(), StoreError> {
        sqlx::query("ROLLBACK").execute(&mut *self.connection).await?;
        Ok(())
    }

    async fn execute(
        &mut self,
        sql: &'static str,
        params: &[Value],
        unique: Option<&'static str>,
    ) -> Result<u64, StoreError> {
        let done = bound(sqlx::query(sql), params).execute(&mut *self.connection).await;
        match (done, unique) {
            (Ok(done), _) => Ok(done.rows_affected()),
            (Err(error), Some(what)) => Err(StoreError::on_unique(error, what)),
            (Err(error), None) => Err(error.into()),
        }
    }

    async fn query_i64(&mut self, sql: &'static str, params: &[Value]) -> Result<Option<i64>, StoreError> {
        use sqlx::Row;
        let row = bound(sqlx::query(sql), params).fetch_optional(&mut *self.connection).await?;
        Ok(row.map(|row| row.try_get::<i64, _>(0)).transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_becomes_a_multi_row_insert_with_its_literals_kept() {
        let template = "INSERT INTO intents (id, status, created_at_ms) VALUES ($1, 'pending', $2)";
        assert!(mergeable(template));
        assert_eq!(
            merged_sql(template, 3),
            "INSERT INTO intents (id, status, created_at_ms) VALUES ($1, 'pending', $2), ($3, 'pending', $4), ($5, 'pending', $6)"
        );
        assert!(std::ptr::eq(merged_sql(template, 3), merged_sql(template, 3)), "made once");
        assert!(!mergeable("INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO NOTHING"));
        assert!(!mergeable("UPDATE t SET a = $1 WHERE id = $2"));
    }

    #[test]
    fn rows_are_sent_in_powers_of_two() {
        assert_eq!(chunks(37), vec![32, 4, 1]);
        assert_eq!(chunks(600), vec![256, 256, 64, 16, 8]);
        assert_eq!(chunks(1), vec![1]);
        assert!(chunks(0).is_empty());
    }

    fn plan(texts: &[&'static str]) -> Plan {
        Plan { statements: texts.iter().map(|sql| Statement::new(sql, Vec::new())).collect(), events: None }
    }

    #[test]
    fn a_batch_is_grouped_in_an_order_every_plan_agrees_with() {
        let (a, b, c) = ("INSERT INTO a (x) VALUES ($1)", "INSERT INTO b (x) VALUES ($1)", "UPDATE c SET x = $1");
        // c is first seen after b, but the second plan needs it before b.
        let (first, second) = (plan(&[a, b, b]), plan(&[c, b]));
        let schedule = Schedule::of(&[&first, &second]).expect("the orders agree");
        assert_eq!(schedule.groups, vec![(a, vec![(0, 0)]), (c, vec![(1, 0)]), (b, vec![(0, 1), (0, 2), (1, 1)])]);
        // One plan wants b before c, another c before b: no grouping, the batch runs in order.
        let third = plan(&[b, c]);
        assert!(Schedule::of(&[&first, &second, &third]).is_none());
    }
}

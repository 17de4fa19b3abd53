//! The export of the event log to MongoDB (when `MONGODB_URL` is set): a loop on every node that
//! claims a batch of the outbox (`medpay_store::log_export`), reads what it names as it is now,
//! writes it to MongoDB by id, and only then lets the rows go. At least once and idempotent:
//! a crash between the write and the release writes the same documents again. MongoDB being
//! down only grows the backlog (`medpay_log_export_backlog` in /metrics); the payment path never
//! waits for any of this.
//!
//! The export also gives way to the payments: while this node's commits queue behind each other
//! (more than `LOG_EXPORT_YIELD_PLANS_PER_BATCH` plans per write batch since the last look: the
//! writer is the bottleneck), it does not start a pass, for up to `log_export_yield_max_ms`
//! (`MEDPAY_LOG_EXPORT_YIELD_MAX_MS`, a minute by default) since the node was last seen quiet;
//! past that it takes its paced share, so a load that never lets up still has its log exported.
//! Each pass's claim, reads and release are SQLite work at normal priority and a WAL snapshot:
//! the load run measured about 13 KB more written and a smaller write batch per payment while
//! passes ran beside a saturating load, and none while the export waited.

use crate::state::AppState;
use medpay_store::log_export::{LOG_EXPORT_BATCH_MAX, OutboxRow};
use medpay_store::mongo::LogStore;
use medpay_store::{Store, WriteReading};
use std::time::Duration;

/// Longest wait between two tries while MongoDB fails.
pub const LOG_EXPORT_RETRY_MAX_MS: u64 = 30_000;
const LOG_EXPORT_RETRY_BASE_MS: u64 = 500;
/// Longest rest between two batches while rows wait.
const LOG_EXPORT_REST_MAX_MS: u64 = 1_000;
/// More plans per write batch than this, on average since the export last looked, and the node's
/// commits are queueing: the export waits (see the module's notes).
pub const LOG_EXPORT_YIELD_PLANS_PER_BATCH: u64 = 2;

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("store: {0}")]
    Store(#[from] medpay_store::StoreError),
    #[error("{0}")]
    Log(#[from] medpay_store::mongo::LogStoreError),
}

/// Where `SCHED_IDLE` cannot be had, the export's thread runs at this nice value (0 normal, 19
/// lowest).
pub const LOG_EXPORT_NICE: i32 = 19;

/// Turns the export on in the database (every node's triggers then fill the outbox) and starts
/// this node's exporter on a thread of its own that runs only on CPU the payments leave idle
/// (`SCHED_IDLE` on Linux, else `LOG_EXPORT_NICE`), with its
/// own runtime and MongoDB client: making the BSON and the driver's work run there. Its SQLite
/// reads go through a read-only connection of their own, opened here at normal priority: a
/// read statement holds a WAL snapshot until it ends, and one starved of CPU mid-statement would
/// keep the checkpoints from finishing, so a read runs as soon as it is asked for, and the
/// export asks only when it has the CPU. Every statement of the export runs to its end on the
/// calling (main) runtime, at normal priority: both stores are `Store::anchored` there, and this
/// thread only makes the documents. sqlx hands a statement's rows over a channel of 50, and a
/// statement whose rows were left for the low-priority thread stopped at the 50th and kept what
/// it held (the claim's `UPDATE … RETURNING` the write lock, a read its WAL snapshot) until that
/// thread next had the CPU, seconds later under load: the load run measured a smaller write
/// batch, a WAL three times its size and 20 KB more written per payment while it happened.
pub async fn start(state: &AppState, url: &str) -> anyhow::Result<()> {
    state.store.set_log_export(true).await?;
    let store = state.store.anchored();
    let stopping = state.stopping.clone();
    let poll = Duration::from_millis(state.config.limits.log_export_poll_ms.max(10));
    let yield_max = Duration::from_millis(state.config.limits.log_export_yield_max_ms);
    let url = url.to_owned();
    let reads = state.store.background_reads().await?;
    let (ready, started) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    std::thread::Builder::new().name("medpay-log-export".to_owned()).spawn(move || {
        lower_priority();
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = ready.send(Err(error.into()));
                return;
            }
        };
        runtime.block_on(async move {
            match LogStore::connect(&url).await {
                Ok(log) => {
                    tracing::info!(database = log.database_name(), "the event log is exported to MongoDB");
                    let _ = ready.send(Ok(()));
                    run(&store, &reads, &log, stopping, poll, yield_max).await;
                }
                Err(error) => {
                    let _ = ready.send(Err(error.into()));
                }
            }
        });
    })?;
    started.await.map_err(|_| anyhow::anyhow!("the log export thread ended before it started"))?
}

/// Lowers the calling thread's priority, for it and the threads it starts (they inherit it):
/// `SCHED_IDLE`, the Linux policy for work that should run only when nothing else wants the
/// CPU, so that a node busy with payments does not give the export a share of it (a nice value
/// still would: about 1.5 % of a core per busy thread at 19, more at 10, which the load run
/// measured); the backlog drains in the idle time. Best effort: where the policy is refused,
/// nice 19; where that is refused too, a warning and normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the call; pid 0 is the calling thread.
        let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if idle == 0 {
            return;
        }
        let refused = std::io::Error::last_os_error();
        // SAFETY: gettid and setpriority take no pointers; PRIO_PROCESS with a thread id
        // changes only that thread.
        let niced = unsafe {
            let thread = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, LOG_EXPORT_NICE)
        };
        if niced == 0 {
            tracing::warn!(error = %refused, nice = LOG_EXPORT_NICE, "SCHED_IDLE refused; the log export runs niced");
        } else {
            tracing::warn!(error = %std::io::Error::last_os_error(), "the log export runs at normal priority");
        }
    }
}

async fn run(
    store: &Store,
    reads: &Store,
    log: &LogStore,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    poll: Duration,
    yield_max: Duration,
) {
    let mut indexed = false;
    let mut failures: u32 = 0;
    let mut looked = store.write_counts();
    let mut quiet_at = std::time::Instant::now();
    let mut yielding = false;
    loop {
        if *stopping.borrow() {
            break;
        }
        let reading = store.write_counts();
        let busy = commits_queue(looked, reading);
        looked = reading;
        if !busy {
            quiet_at = std::time::Instant::now();
        }
        let waits = gives_way(busy, quiet_at.elapsed(), yield_max);
        if waits != yielding {
            yielding = waits;
            metrics::gauge!("medpay_log_export_yielding").set(if waits { 1.0 } else { 0.0 });
            tracing::debug!(yielding = waits, "the export to MongoDB gives way to the payments");
        }
        if waits {
            if pause(&mut stopping, poll).await {
                break;
            }
            continue;
        }
        if !indexed {
            match log.ensure_indexes().await {
                Ok(()) => indexed = true,
                Err(error) => tracing::warn!(%error, "MongoDB indexes not made yet; trying again"),
            }
        }
        let started = std::time::Instant::now();
        let wait = match pass(store, reads, log).await {
            Ok(0) => {
                failures = 0;
                poll
            }
            Ok(_) => {
                failures = 0;
                // Paced: rest as long as the pass took, so that even with CPU to spare the
                // export takes at most about half of one core (the backlog drains after).
                started.elapsed().min(Duration::from_millis(LOG_EXPORT_REST_MAX_MS))
            }
            // The main runtime is gone (the node is stopping): nothing of the export can run.
            Err(ExportError::Store(medpay_store::StoreError::ElsewhereStopped)) => break,
            Err(error) => {
                failures = failures.saturating_add(1);
                metrics::counter!("medpay_log_export_failures_total").increment(1);
                let wait = retry_wait_ms(failures);
                tracing::warn!(%error, failures, retry_in_ms = wait, "export to MongoDB failed; the rows wait");
                Duration::from_millis(wait)
            }
        };
        if wait.is_zero() {
            tokio::task::yield_now().await;
            continue;
        }
        if pause(&mut stopping, wait).await {
            break;
        }
    }
}

/// Waits `wait`, or less if the node stops meanwhile; true when it is stopping (or its stop
/// signal is gone with it).
async fn pause(stopping: &mut tokio::sync::watch::Receiver<bool>, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => *stopping.borrow(),
        changed = stopping.changed() => changed.is_err() || *stopping.borrow(),
    }
}

/// A node without MONGODB_URL: the triggers stop adding rows (what waits stays, for a node that
/// has MongoDB to export).
pub async fn stop(store: &Store) -> anyhow::Result<()> {
    store.set_log_export(false).await?;
    let backlog = store.log_export_backlog().await?;
    if backlog > 0 {
        tracing::warn!(backlog, "rows wait to be exported to MongoDB, but MONGODB_URL is not set on this node");
    }
    Ok(())
}

/// True when, between two readings of the writer's counts, its batches held more than
/// `LOG_EXPORT_YIELD_PLANS_PER_BATCH` plans on average: commits waited for each other.
fn commits_queue(before: WriteReading, now: WriteReading) -> bool {
    let batches = now.batches.saturating_sub(before.batches);
    let plans = now.plans.saturating_sub(before.plans);
    batches > 0 && plans > LOG_EXPORT_YIELD_PLANS_PER_BATCH.saturating_mul(batches)
}

/// Whether the export waits: only while the node is busy, and not once it has been busy without a
/// break for `yield_max`.
fn gives_way(busy: bool, busy_for: Duration, yield_max: Duration) -> bool {
    busy && busy_for < yield_max
}

fn retry_wait_ms(failures: u32) -> u64 {
    LOG_EXPORT_RETRY_BASE_MS.saturating_mul(1u64 << failures.min(16).saturating_sub(1)).min(LOG_EXPORT_RETRY_MAX_MS)
}

/// One batch: claimed, read, written, released. The number of rows it took.
async fn pass(store: &Store, reads: &Store, log: &LogStore) -> Result<usize, ExportError> {
    let now = medpay_store::now_ms();
    let rows = store.claim_log_export(now, LOG_EXPORT_BATCH_MAX).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    match write(reads, log, &rows).await {
        Ok(documents) => {
            store.complete_log_export(&rows).await?;
            metrics::counter!("medpay_log_export_documents_total").increment(documents as u64);
            tracing::debug!(rows = rows.len(), documents, "exported to MongoDB");
            Ok(rows.len())
        }
        Err(error) => {
            // Let another pass (this node's or another's) try them after the pause.
            let retry_at = medpay_store::now_ms() + i64::try_from(LOG_EXPORT_RETRY_BASE_MS).unwrap_or(500);
            if let Err(release) = store.release_log_export(&rows, retry_at).await {
                tracing::warn!(error = %release, "outbox rows not released; their lease runs out");
            }
            Err(error)
        }
    }
}

async fn write(reads: &Store, log: &LogStore, rows: &[OutboxRow]) -> Result<usize, ExportError> {
    // Fetched on the main runtime (`Store::anchored`), made into documents here.
    let documents = reads.log_export_documents(rows).await?;
    let count = documents.count();
    for (collection, batch) in documents.documents {
        log.put(collection, batch).await?;
    }
    for (collection, ids) in &documents.removed {
        log.remove(collection, ids).await?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_waits_only_while_commits_queue() {
        let at = |plans, batches| WriteReading { plans, batches };
        // Nothing committed, or one plan per batch: the node is not busy.
        assert!(!commits_queue(at(100, 50), at(100, 50)));
        assert!(!commits_queue(at(100, 50), at(130, 80)));
        // Exactly two plans per batch is still not queueing; more is.
        assert!(!commits_queue(at(0, 0), at(20, 10)));
        assert!(commits_queue(at(0, 0), at(21, 10)));
        // A saturating load: ten plans per batch.
        assert!(commits_queue(at(1_000, 100), at(11_000, 1_100)));
    }

    #[test]
    fn a_load_that_never_lets_up_still_gets_its_export() {
        let minute = Duration::from_secs(60);
        assert!(!gives_way(false, Duration::ZERO, minute));
        assert!(gives_way(true, Duration::from_secs(59), minute));
        assert!(!gives_way(true, minute, minute));
        assert!(!gives_way(true, Duration::from_secs(3_600), minute));
        // A setting of 0 turns the waiting off.
        assert!(!gives_way(true, Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn retries_back_off_to_a_ceiling() {
        assert_eq!(retry_wait_ms(1), 500);
        assert_eq!(retry_wait_ms(2), 1_000);
        assert_eq!(retry_wait_ms(4), 4_000);
        assert_eq!(retry_wait_ms(10), LOG_EXPORT_RETRY_MAX_MS);
        assert_eq!(retry_wait_ms(u32::MAX), LOG_EXPORT_RETRY_MAX_MS);
    }
}

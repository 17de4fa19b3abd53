//! The export of the event log to MongoDB (when `MONGODB_URL` is set): a loop on every node that
//! claims a batch of the outbox (`medpay_store::log_export`), reads what it names as it is now,
//! writes it to MongoDB by id, and only then lets the rows go. At least once and idempotent:
//! a crash between the write and the release writes the same documents again. MongoDB being
//! down only grows the backlog (`medpay_log_export_backlog` in /metrics); the payment path never
//! waits for any of this.

use crate::state::AppState;
use medpay_store::Store;
use medpay_store::log_export::{LOG_EXPORT_BATCH_MAX, OutboxRow};
use medpay_store::mongo::LogStore;
use std::time::Duration;

/// Longest wait between two tries while MongoDB fails.
pub const LOG_EXPORT_RETRY_MAX_MS: u64 = 30_000;
const LOG_EXPORT_RETRY_BASE_MS: u64 = 500;
/// Longest rest between two batches while rows wait.
const LOG_EXPORT_REST_MAX_MS: u64 = 1_000;

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
/// export asks only when it has the CPU. Its writes to the outbox (claim,
/// complete, release) are single statements on the main pool, so a low-priority thread never
/// holds a lock the payments wait for.
pub async fn start(state: &AppState, url: &str) -> anyhow::Result<()> {
    state.store.set_log_export(true).await?;
    let store = state.store.clone();
    let stopping = state.stopping.clone();
    let poll = Duration::from_millis(state.config.limits.log_export_poll_ms.max(10));
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
                    run(&store, &reads, &log, stopping, poll).await;
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
) {
    let mut indexed = false;
    let mut failures: u32 = 0;
    loop {
        if *stopping.borrow() {
            break;
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
            Err(error) => {
                failures = failures.saturating_add(1);
                metrics::counter!("medpay_log_export_failures_total").increment(1);
                let wait = retry_wait_ms(failures);
                tracing::warn!(%error, failures, retry_in_ms = wait, "export to MongoDB failed; the rows wait");
                Duration::from_millis(wait)
            }
        };
        if let Ok(backlog) = store.log_export_backlog().await {
            metrics::gauge!("medpay_log_export_backlog").set(backlog as f64);
        }
        if wait.is_zero() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopping.changed() => {}
        }
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
    fn retries_back_off_to_a_ceiling() {
        assert_eq!(retry_wait_ms(1), 500);
        assert_eq!(retry_wait_ms(2), 1_000);
        assert_eq!(retry_wait_ms(4), 4_000);
        assert_eq!(retry_wait_ms(10), LOG_EXPORT_RETRY_MAX_MS);
        assert_eq!(retry_wait_ms(u32::MAX), LOG_EXPORT_RETRY_MAX_MS);
    }
}

//! The payment path's point reads on SQLite, on a thread of their own.
//!
//! Through sqlx, every SQLite query is three hand-offs between a tokio worker and the connection's
//! own thread (the ping when the connection is taken from the pool, the query, the ping when it
//! goes back), each a futex wake-up and a task switch; the profile of `POST /v1/payments` showed
//! the one read every payment makes (its Idempotency-Key) costing more CPU than SQLite's own work
//! for it. Here a read is a closure run on one read-only rusqlite connection with its statements
//! prepared once: one hand-off each way, and the thread drains every read waiting when it wakes.
//! WAL lets it read beside the writer; it sees what the writer has committed. PostgreSQL keeps
//! sqlx (its reads go over the network anyway).

use crate::database::StoreError;
use tokio::sync::{mpsc, oneshot};

/// Reads waiting for the reader at most; a caller beyond it waits for room.
pub const READ_QUEUE_MAX: usize = 4_096;
/// Statements kept prepared.
const READ_STATEMENT_CACHE: usize = 64;

type ReadJob = Box<dyn FnOnce(&rusqlite::Connection) + Send>;

/// The way in to the reader of one SQLite database.
#[derive(Clone)]
pub(crate) struct Reader {
    jobs: mpsc::Sender<ReadJob>,
}

impl Reader {
    /// A read-only connection to the database file at `path` (which the writer has made), on a
    /// thread named `medpay-sqlite-reader`. The thread ends when the last `Reader` is dropped.
    pub fn sqlite(path: &str) -> Result<Reader, StoreError> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = rusqlite::Connection::open_with_flags(path, flags)?;
        connection.busy_timeout(std::time::Duration::from_millis(crate::writer::SQLITE_BUSY_TIMEOUT_MS))?;
        connection.set_prepared_statement_cache_capacity(READ_STATEMENT_CACHE);
        let (jobs, mut queue) = mpsc::channel::<ReadJob>(READ_QUEUE_MAX);
        std::thread::Builder::new().name("medpay-sqlite-reader".to_owned()).spawn(move || {
            while let Some(job) = queue.blocking_recv() {
                job(&connection);
                // Everything else already waiting, before sleeping again.
                while let Ok(job) = queue.try_recv() {
                    job(&connection);
                }
            }
            tracing::debug!("SQLite reader stopped");
        })?;
        Ok(Reader { jobs })
    }

    /// Runs `read` on the reader's connection and answers what it returns.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |connection| {
            let _ = reply.send(read(connection));
        });
        self.jobs.send(job).await.map_err(|_| StoreError::ReaderStopped)?;
        answer.await.map_err(|_| StoreError::ReaderStopped)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_what_the_writer_committed_and_refuses_to_write() {
        let folder = std::env::temp_dir().join(format!("medpay-reader-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("read.db");
        let path = path.to_str().unwrap().to_owned();
        let writer = rusqlite::Connection::open(&path).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (7);")
            .unwrap();
        let reader = Reader::sqlite(&path).unwrap();
        let read = |reader: Reader| async move {
            reader
                .read(|connection| Ok(connection.query_row("SELECT sum(v) FROM t", [], |row| row.get::<_, i64>(0))?))
                .await
        };
        assert_eq!(read(reader.clone()).await.unwrap(), 7);
        writer.execute("INSERT INTO t VALUES (5)", []).unwrap();
        assert_eq!(read(reader.clone()).await.unwrap(), 12, "a later commit is seen");
        let refused = reader.read(|connection| Ok(connection.execute("INSERT INTO t VALUES (1)", [])?)).await;
        assert!(matches!(refused, Err(StoreError::Sqlite(_))), "{refused:?}");
        // Many at once: each gets its own answer.
        let mut waiting = tokio::task::JoinSet::new();
        for n in 0..200i64 {
            let reader = reader.clone();
            waiting.spawn(async move { (n, reader.read(move |_| Ok(n * 2)).await.unwrap()) });
        }
        while let Some(answer) = waiting.join_next().await {
            let (n, doubled) = answer.unwrap();
            assert_eq!(doubled, n * 2);
        }
        std::fs::remove_dir_all(folder).unwrap();
    }
}

//! The event log and analytics documents in MongoDB (when `MONGODB_URL` is set), through the
//! official driver. Writes are idempotent by `_id` (replace, upserting), sent as one `update`
//! command per collection and batch; nothing on the payment path waits for them (see `log_export`).
//! Only commands and operators that a real MongoDB (targeted: 6.0 and later) and the wire-protocol
//! stand-in the tests run (nx-27017) both do are used.

use mongodb::bson::{self, Bson, Document, RawArrayBuf, RawDocumentBuf, doc, rawdoc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database, IndexModel};
use serde_json::Value;
use std::time::Duration;

/// Most statements in one `update` or `delete` command.
pub const MONGO_WRITE_STATEMENTS_MAX: usize = 1_000;
/// How long the driver looks for a server before an operation fails.
pub const MONGO_SERVER_SELECTION_TIMEOUT_MS: u64 = 2_000;
pub const MONGO_CONNECT_TIMEOUT_MS: u64 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("mongodb document: {0}")]
    Document(String),
    #[error("mongodb refused {count} writes to {collection}: {first}")]
    Refused { collection: String, count: usize, first: String },
}

/// The indexes made at start (idempotent: an index that exists is left as it is).
const INDEXES: &[(&str, &[&str])] = &[
    ("payments", &["provider_id", "day_number"]),
    ("payments", &["day_number"]),
    ("events", &["payment_id", "seq"]),
    ("events", &["provider_id", "provider_seq"]),
    ("decisions", &["payment_id"]),
    ("decisions", &["model_version", "at_ms"]),
    ("gateway_webhooks", &["payment_id"]),
    ("chat_messages", &["conversation_id", "seq"]),
    ("chat_messages", &["patient_id"]),
    ("audit", &["at_ms"]),
];

#[derive(Clone)]
pub struct LogStore {
    database: Database,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: only the database's name is shown.
        formatter.debug_struct("LogStore").field("database", &self.database.name()).finish()
    }
}

fn to_document(value: &Value) -> Result<Document, LogStoreError> {
    bson::to_document(value).map_err(|error| LogStoreError::Document(error.to_string()))
}

impl LogStore {
    /// Parses the URL and makes the client; no server is needed yet (the driver connects when
    /// asked, so MedPay starts while MongoDB is down). The database is the URL's, else `medpay`.
    pub async fn connect(url: &str) -> Result<LogStore, LogStoreError> {
        let mut options = ClientOptions::parse(url).await?;
        options.app_name = Some("medpay".to_owned());
        options.server_selection_timeout = Some(Duration::from_millis(MONGO_SERVER_SELECTION_TIMEOUT_MS));
        options.connect_timeout = Some(Duration::from_millis(MONGO_CONNECT_TIMEOUT_MS));
        let client = Client::with_options(options)?;
        let database = client.default_database().unwrap_or_else(|| client.database("medpay"));
        Ok(LogStore { database })
    }

    pub fn database_name(&self) -> &str {
        self.database.name()
    }

    pub async fn ping(&self) -> Result<(), LogStoreError> {
        self.database.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }

    /// Makes the indexes the reports and lookups use.
    pub async fn ensure_indexes(&self) -> Result<(), LogStoreError> {
        for (collection, fields) in INDEXES {
            let mut keys = Document::new();
            for field in *fields {
                keys.insert(*field, 1);
            }
            self.database
                .collection::<Document>(collection)
                .create_index(IndexModel::builder().keys(keys).build())
                .await?;
        }
        Ok(())
    }

    /// Writes the documents (each with its `_id`) as they are, replacing any of the same id.
    pub async fn put(&self, collection: &str, documents: Vec<RawDocumentBuf>) -> Result<(), LogStoreError> {
        let mut documents = documents.into_iter().peekable();
        while documents.peek().is_some() {
            // Built as bytes (`rawdoc!`), as the documents are: no `Document` tree on the way.
            let mut updates = RawArrayBuf::new();
            for document in documents.by_ref().take(MONGO_WRITE_STATEMENTS_MAX) {
                let id = match document.get("_id") {
                    Ok(Some(id)) => id.to_raw_bson(),
                    _ => return Err(LogStoreError::Document("a document without _id".to_owned())),
                };
                updates.push(rawdoc! {"q": {"_id": id}, "u": document, "upsert": true});
            }
            let answer = self
                .database
                .run_raw_command(rawdoc! {"update": collection, "updates": updates, "ordered": false})
                .await?;
            refused(collection, &answer)?;
        }
        Ok(())
    }

    /// Deletes the documents of these ids (gone at the source: an erasure).
    pub async fn remove(&self, collection: &str, ids: &[String]) -> Result<(), LogStoreError> {
        for chunk in ids.chunks(MONGO_WRITE_STATEMENTS_MAX) {
            let deletes: Vec<Document> = chunk.iter().map(|id| doc! {"q": {"_id": id}, "limit": 1}).collect();
            let answer =
                self.database.run_command(doc! {"delete": collection, "deletes": deletes, "ordered": false}).await?;
            refused(collection, &answer)?;
        }
        Ok(())
    }

    /// Runs an aggregation pipeline; the results as JSON (integers stay integers).
    pub async fn aggregate(&self, collection: &str, pipeline: &[Value]) -> Result<Vec<Value>, LogStoreError> {
        use futures::TryStreamExt;
        let stages = pipeline.iter().map(to_document).collect::<Result<Vec<_>, _>>()?;
        let cursor = self.database.collection::<Document>(collection).aggregate(stages).await?;
        let documents: Vec<Document> = cursor.try_collect().await?;
        Ok(documents.into_iter().map(|document| Bson::Document(document).into_relaxed_extjson()).collect())
    }

    /// The documents of a collection that match `filter`, by `_id` (tests and support look-ups).
    pub async fn find(&self, collection: &str, filter: &Value, limit: i64) -> Result<Vec<Value>, LogStoreError> {
        use futures::TryStreamExt;
        let cursor = self
            .database
            .collection::<Document>(collection)
            .find(to_document(filter)?)
            .sort(doc! {"_id": 1})
            .limit(limit)
            .await?;
        let documents: Vec<Document> = cursor.try_collect().await?;
        Ok(documents.into_iter().map(|document| Bson::Document(document).into_relaxed_extjson()).collect())
    }

    pub async fn count(&self, collection: &str, filter: &Value) -> Result<u64, LogStoreError> {
        Ok(self.database.collection::<Document>(collection).count_documents(to_document(filter)?).await?)
    }
}

/// A write command's `writeErrors`, as an error.
fn refused(collection: &str, answer: &Document) -> Result<(), LogStoreError> {
    let Ok(errors) = answer.get_array("writeErrors") else {
        return Ok(());
    };
    if errors.is_empty() {
        return Ok(());
    }
    let first = errors
        .first()
        .and_then(Bson::as_document)
        .and_then(|error| error.get_str("errmsg").ok())
        .unwrap_or("unknown")
        .to_owned();
    Err(LogStoreError::Refused { collection: collection.to_owned(), count: errors.len(), first })
}

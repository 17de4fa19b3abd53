//! Documents (contracts sent for signature, signed copies, dispute evidence) behind one
//! object-store interface (`object_store`): a local folder on the embedded defaults, S3 (or any
//! S3-compatible server) when configured.

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;

pub struct Documents {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// Where they are, for the logs: a folder or a URL.
    pub location: String,
}

impl Documents {
    /// Documents in a local folder (made when missing).
    pub fn local(dir: &std::path::Path) -> Result<Documents, String> {
        std::fs::create_dir_all(dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|error| error.to_string())?;
        Ok(Documents { store: Arc::new(store), prefix: Path::default(), location: dir.display().to_string() })
    }

    /// Documents at `url` (`s3://bucket/prefix`), with the store's options (`aws_endpoint`,
    /// `aws_access_key_id`, `aws_region`, …).
    pub fn at_url(url: &str, options: &[(String, String)]) -> Result<Documents, String> {
        let parsed = url::Url::parse(url).map_err(|error| format!("documents URL: {error}"))?;
        let (store, prefix) =
            object_store::parse_url_opts(&parsed, options.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(|error| format!("documents URL: {error}"))?;
        let mut location = parsed.clone();
        let _ = location.set_password(None);
        Ok(Documents { store: Arc::from(store), prefix, location: location.to_string() })
    }

    fn path(&self, key: &str) -> Path {
        key.split('/').fold(self.prefix.clone(), |path, part| path.clone().join(part))
    }

    /// Writes (or writes again, the same bytes) the document at `key`.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.store.put(&self.path(key), PutPayload::from(bytes)).await.map(drop).map_err(|error| error.to_string())
    }

    /// The document at `key`; none when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self.store.get(&self.path(key)).await {
            Ok(found) => found.bytes().await.map(|bytes| Some(bytes.to_vec())).map_err(|error| error.to_string()),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    }
}

/// Where a payment's installment contract is kept.
pub fn contract_key(payment: medpay_models::PaymentId) -> String {
    format!("contracts/{payment}.pdf")
}

/// Where the signed copy ClickSign returns of a payment's contract is kept.
pub fn signed_contract_key(payment: medpay_models::PaymentId) -> String {
    format!("contracts/{payment}-assinado.pdf")
}

//! Cache records: `cache/<key>.json`, what an operation with a given [`CacheKey`] produced. The
//! file's mtime is the record's last use (set on every hit), which is what LRU eviction reads.

use std::fs;
use std::time::SystemTime;

use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::key::CacheKey;
use crate::snapshots::SnapshotId;
use crate::store::{LeaseItem, Store};

/// What an operation produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The snapshot holding the result tree, if the operation makes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotId>,
    /// The layer blob made from that tree, if already made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_blob: Option<Digest>,
    /// The layer's diff id (digest of the uncompressed tar), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    /// Whatever else the executor wants back on a hit (image config changes, ...). Opaque here.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// A human description (the step), for `forge system df -v`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl Store {
    fn record_path(&self, key: &CacheKey) -> std::path::PathBuf {
        self.dir
            .join("cache")
            .join(format!("{}.json", key.to_hex()))
    }

    /// Stores (or replaces) the record for `key`. The snapshot and blob it names must exist.
    pub fn put_record(&self, key: &CacheKey, record: &CacheRecord) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(record).expect("cache records serialise");
        let _gc = self.gc_shared()?;
        if let Some(s) = &record.snapshot {
            if !self.snapshot_dir(s).join("meta.json").is_file() {
                return Err(StoreError::SnapshotNotFound { id: s.to_string() });
            }
        }
        if let Some(b) = &record.layer_blob {
            if !self.has_blob(b) {
                return Err(StoreError::BlobNotFound {
                    digest: b.to_string(),
                });
            }
        }
        fsutil::write_atomic(&self.staging, &self.record_path(key), &bytes)?;
        self.pin(LeaseItem::Record(*key))?;
        Ok(())
    }

    /// The record for `key`, if there is one whose snapshot and blob are still present. A hit
    /// updates the record's last-use time and pins it by this store's session lease.
    pub fn get_record(&self, key: &CacheKey) -> Result<Option<CacheRecord>> {
        let path = self.record_path(key);
        let _gc = self.gc_shared()?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &path)(e)),
        };
        let record: CacheRecord = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            // A record we cannot read is a miss; the step reruns and overwrites it.
            Err(_) => return Ok(None),
        };
        if let Some(s) = &record.snapshot {
            if !self.snapshot_dir(s).join("meta.json").is_file() {
                return Ok(None);
            }
        }
        if let Some(b) = &record.layer_blob {
            if !self.has_blob(b) {
                return Ok(None);
            }
        }
        if let Ok(f) = fs::File::options().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        self.pin(LeaseItem::Record(*key))?;
        Ok(Some(record))
    }

    /// Every record key in the store.
    pub fn list_records(&self) -> Result<Vec<CacheKey>> {
        Ok(crate::store::read_dir_names(&self.dir.join("cache"))?
            .into_iter()
            .filter_map(|n| n.strip_suffix(".json").and_then(CacheKey::from_hex))
            .collect())
    }
}

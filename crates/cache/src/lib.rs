//! forge-cache: forge's on-disk store under `<root>/v1/`: blobs by digest in an OCI image layout
//! (readable by skopeo and umoci as `oci:<root>/v1/oci`), named images, snapshots (unpacked layer
//! trees usable as overlay lowerdirs), cache records keyed by [`CacheKey`], build-context hashing
//! with a stat memo ([`ContextHasher`]), cache mounts, leases, and garbage collection.
//!
//! Every publish is staged in `tmp/`, fsynced and renamed, so a process killed at any instant
//! leaves the old state or the new one; the next open removes leftovers. Concurrent forge
//! processes share the store through short-lived and per-entry flocks (see the `store` module).
//! The crate knows nothing of Dockerfiles.

mod blobs;
mod cache_mounts;
mod context;
mod error;
mod fsutil;
mod gc;
mod images;
mod key;
mod records;
mod snapshots;
mod store;
mod uncached;

pub use blobs::{BlobInfo, BlobWriter};
pub use cache_mounts::{CacheMount, CacheSharing};
pub use context::{
    ContextEntry, ContextHasher, ContextTree, EntryKind, HashStats, NoFilter, PathFilter,
    PendingMemo,
};
pub use error::{Result, StoreError};
pub use gc::{
    parse_duration, parse_prune_filter, parse_size, DiskUsage, PruneOptions, PruneReport,
    RecordUsage, UsageRow,
};
pub use images::ImageEntry;
pub use key::{CacheKey, CacheKeyBuilder, ContentDigest};
pub use records::CacheRecord;
pub use snapshots::{SnapshotDraft, SnapshotId, SnapshotMeta};
pub use store::{Lease, LeaseItem, Store, StoreConfig};
pub use uncached::{Piece, PIECE_LEN};

//! Garbage collection and disk usage: what named images and live leases use is kept; build-cache
//! records go least recently used first (all of them, those older than `until`, or until the cache
//! fits `keep_storage`); snapshots and blobs nothing kept refers to go with them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::time::Duration;

use oci_spec::image::Digest;
use rayon::prelude::*;

use crate::cache_mounts;
use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::images::ImageEntry;
use crate::key::CacheKey;
use crate::records::CacheRecord;
use crate::snapshots::{read_meta, SnapshotId, SnapshotMeta};
use crate::store::{self, LeaseItem, Store};

/// What `prune` removes.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Also remove records whose layers named images use, and every unused cache mount.
    pub all: bool,
    /// Only remove records unused for at least this long.
    pub until: Option<Duration>,
    /// Stop once the build cache uses at most this many bytes (least recently used go first).
    pub keep_storage: Option<u64>,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Cache records removed.
    pub records: usize,
    /// Snapshots removed.
    pub snapshots: usize,
    /// Blobs removed.
    pub blobs: usize,
    /// Cache mounts removed.
    pub cache_mounts: usize,
    /// Bytes freed.
    pub reclaimed: u64,
}

/// One line of `forge system df`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// "Images", "Build cache", "Snapshots", "Cache mounts" or "Unreferenced blobs".
    pub kind: &'static str,
    /// How many there are.
    pub total: usize,
    /// How many a plain `forge prune` keeps: used by a named image, a live lease (a running
    /// build) or a running step.
    pub active: usize,
    /// Bytes they use (images: their blobs; build cache: layer blobs no image uses; snapshots:
    /// their trees).
    pub size: u64,
    /// Bytes `forge prune --all` would free.
    pub reclaimable: u64,
}

/// A build-cache record as `forge system df -v` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordUsage {
    /// Its key.
    pub key: CacheKey,
    /// What made it.
    pub description: String,
    /// Bytes of its snapshot and of a layer blob no image uses.
    pub size: u64,
    /// Seconds since the epoch of its last use.
    pub last_used: u64,
    /// Whether prune (without `--all`) keeps it: leased, or its layer is in a named image.
    pub in_use: bool,
}

/// The store's disk usage, by kind.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskUsage {
    /// One row per kind, in display order.
    pub rows: Vec<UsageRow>,
    /// Named images with the bytes of their blobs.
    pub images: Vec<(ImageEntry, u64)>,
    /// Build-cache records, most recently used first.
    pub records: Vec<RecordUsage>,
    /// Cache mounts: id, bytes, in use now.
    pub cache_mounts: Vec<(String, u64, bool)>,
}

struct RecordScan {
    key: CacheKey,
    record: Option<CacheRecord>,
    last_used: u64,
}

/// What garbage collection reads of a record: what it refers to and its description. The
/// payload is skipped unparsed (a COPY's reuse index is megabytes of it).
#[derive(serde::Deserialize)]
struct RecordRefs {
    #[serde(default)]
    snapshot: Option<SnapshotId>,
    #[serde(default)]
    layer_blob: Option<Digest>,
    #[serde(default)]
    description: String,
}

impl From<RecordRefs> for CacheRecord {
    fn from(r: RecordRefs) -> Self {
        CacheRecord {
            snapshot: r.snapshot,
            layer_blob: r.layer_blob,
            description: r.description,
            ..CacheRecord::default()
        }
    }
}

/// Everything on disk, read once.
struct Scan {
    sizes: Sizes,
    records: Vec<RecordScan>,
    leases: HashSet<LeaseItem>,
}

/// What is on disk and how big, without the cache records.
struct Sizes {
    images: Vec<ImageEntry>,
    image_blobs: HashSet<Digest>,
    snapshots: BTreeMap<SnapshotId, SnapshotMeta>,
    blobs: HashMap<Digest, u64>,
}

#[derive(Default)]
struct Plan {
    records: Vec<CacheKey>,
    snapshots: Vec<SnapshotId>,
    blobs: Vec<Digest>,
}

impl Store {
    fn scan(&self) -> Result<Scan> {
        fsutil::io_pool().install(|| {
            let sizes = self.sizes()?;
            let records: Vec<RecordScan> = self
                .list_records()?
                .into_par_iter()
                .filter_map(|key| {
                    let path = self
                        .dir
                        .join("cache")
                        .join(format!("{}.json", key.to_hex()));
                    let meta = fs::metadata(&path).ok()?;
                    let record = fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<RecordRefs>(&b).ok())
                        .map(CacheRecord::from);
                    Some(RecordScan {
                        key,
                        record,
                        last_used: fsutil::mtime_secs(&meta),
                    })
                })
                .collect();
            let leases = store::live_lease_items(&self.dir)?;
            Ok(Scan {
                sizes,
                records,
                leases,
            })
        })
    }

    /// The part of a [`Scan`] that says how big things are, which is all that deciding
    /// whether the cache is over its budget needs (no record is read). Files are read in
    /// parallel: on a host that evicts the page cache each is a disk read, and every build
    /// ends with this check.
    fn sizes(&self) -> Result<Sizes> {
        fsutil::io_pool().install(|| {
            let images = self.list_images()?;
            let blobs: HashMap<Digest, u64> = self
                .list_blobs()?
                .into_par_iter()
                .filter_map(|d| self.blob_size(&d).ok().map(|size| (d, size)))
                .collect();
            let image_blobs =
                self.blob_closure(images.iter().map(|i| i.descriptor.digest().clone()), &blobs);
            let snapshots: BTreeMap<SnapshotId, SnapshotMeta> = self
                .list_snapshots()?
                .into_par_iter()
                .map(|id| {
                    // A snapshot without readable metadata is garbage from the format's point
                    // of view.
                    let meta = read_meta(&self.snapshot_dir(&id)).unwrap_or_default();
                    (id, meta)
                })
                .collect();
            Ok(Sizes {
                images,
                image_blobs,
                snapshots,
                blobs,
            })
        })
    }

    /// The blobs reachable from `roots` through manifests and indexes (OCI or Docker).
    fn blob_closure(
        &self,
        roots: impl IntoIterator<Item = Digest>,
        sizes: &HashMap<Digest, u64>,
    ) -> HashSet<Digest> {
        let mut seen = HashSet::new();
        let mut todo: Vec<Digest> = roots.into_iter().collect();
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            // Only small JSON blobs can reference others; layers are never parsed.
            if sizes.get(&d).is_none_or(|s| *s > 4 << 20) {
                continue;
            }
            let Ok(path) = self.blob_path(&d) else {
                continue;
            };
            let Ok(bytes) = fs::read(&path) else { continue };
            if bytes.first() != Some(&b'{') {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let mut refs = Vec::new();
            if let Some(c) = v.get("config") {
                refs.push(c);
            }
            for field in ["layers", "manifests", "blobs"] {
                if let Some(arr) = v.get(field).and_then(|a| a.as_array()) {
                    refs.extend(arr.iter());
                }
            }
            if let Some(s) = v.get("subject") {
                refs.push(s);
            }
            for r in refs {
                if let Some(dd) = r
                    .get("digest")
                    .and_then(|x| x.as_str())
                    .and_then(|s| s.parse::<Digest>().ok())
                {
                    todo.push(dd);
                }
            }
        }
        seen
    }

    fn snapshot_closure(
        &self,
        scan: &Scan,
        roots: impl IntoIterator<Item = SnapshotId>,
    ) -> BTreeSet<SnapshotId> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<SnapshotId> = roots.into_iter().collect();
        while let Some(s) = todo.pop() {
            if !seen.insert(s.clone()) {
                continue;
            }
            // A kept snapshot keeps its parent and what it is laid over.
            if let Some(m) = scan.sizes.snapshots.get(&s) {
                todo.extend(m.parent.iter().chain(&m.below).cloned());
            }
        }
        seen
    }

    fn record_size(&self, scan: &Scan, r: &RecordScan) -> u64 {
        let Some(rec) = &r.record else { return 0 };
        let snap = rec
            .snapshot
            .as_ref()
            .and_then(|s| scan.sizes.snapshots.get(s))
            .map(|m| m.size)
            .unwrap_or(0);
        let blob = rec
            .layer_blob
            .as_ref()
            .filter(|b| !scan.sizes.image_blobs.contains(*b))
            .and_then(|b| scan.sizes.blobs.get(b))
            .copied()
            .unwrap_or(0);
        snap + blob
    }

    fn record_in_use(&self, scan: &Scan, r: &RecordScan) -> bool {
        scan.leases.contains(&LeaseItem::Record(r.key))
            || r.record
                .as_ref()
                .and_then(|rec| rec.layer_blob.as_ref())
                .is_some_and(|b| scan.sizes.image_blobs.contains(b))
    }

    /// Decides what to remove: records first (LRU), then whatever nothing kept refers to.
    fn plan(&self, scan: &Scan, opts: &PruneOptions) -> Plan {
        let now = fsutil::now_secs();
        let mut remove: BTreeSet<CacheKey> = BTreeSet::new();
        let mut candidates: Vec<&RecordScan> = Vec::new();
        for r in &scan.records {
            if scan.leases.contains(&LeaseItem::Record(r.key)) {
                continue;
            }
            let dangling = match &r.record {
                None => true,
                Some(rec) => {
                    rec.snapshot
                        .as_ref()
                        .is_some_and(|s| !scan.sizes.snapshots.contains_key(s))
                        || rec
                            .layer_blob
                            .as_ref()
                            .is_some_and(|b| !scan.sizes.blobs.contains_key(b))
                }
            };
            if dangling {
                remove.insert(r.key);
                continue;
            }
            if !opts.all && self.record_in_use(scan, r) {
                continue;
            }
            if let Some(until) = opts.until {
                if now.saturating_sub(r.last_used) < until.as_secs() {
                    continue;
                }
            }
            candidates.push(r);
        }
        candidates.sort_by_key(|r| (r.last_used, r.key));
        match opts.keep_storage {
            None => remove.extend(candidates.iter().map(|r| r.key)),
            Some(keep) => {
                let mut used = self.build_cache_bytes(&scan.sizes);
                for r in candidates {
                    if used <= keep {
                        break;
                    }
                    used = used.saturating_sub(self.record_size(scan, r));
                    remove.insert(r.key);
                }
            }
        }

        // Mark what stays.
        let kept: Vec<&CacheRecord> = scan
            .records
            .iter()
            .filter(|r| !remove.contains(&r.key))
            .filter_map(|r| r.record.as_ref())
            .collect();
        let mut snap_roots: Vec<SnapshotId> =
            kept.iter().filter_map(|r| r.snapshot.clone()).collect();
        let mut blob_roots: Vec<Digest> = scan.sizes.image_blobs.iter().cloned().collect();
        blob_roots.extend(kept.iter().filter_map(|r| r.layer_blob.clone()));
        for item in &scan.leases {
            match item {
                LeaseItem::Blob(d) => blob_roots.push(d.clone()),
                LeaseItem::Snapshot(s) => snap_roots.push(s.clone()),
                LeaseItem::Record(_) => {}
            }
        }
        let live_snaps = self.snapshot_closure(scan, snap_roots);
        for s in &live_snaps {
            if let Some(m) = scan.sizes.snapshots.get(s) {
                blob_roots.extend(m.layer_blob.clone());
            }
        }
        let live_blobs = self.blob_closure(blob_roots, &scan.sizes.blobs);
        Plan {
            records: remove.into_iter().collect(),
            snapshots: scan
                .sizes
                .snapshots
                .keys()
                .filter(|s| !live_snaps.contains(*s))
                .cloned()
                .collect(),
            blobs: scan
                .sizes
                .blobs
                .keys()
                .filter(|b| !live_blobs.contains(*b))
                .cloned()
                .collect(),
        }
    }

    /// Bytes the build cache uses: every snapshot plus every blob no named image uses.
    fn build_cache_bytes(&self, sizes: &Sizes) -> u64 {
        let snaps: u64 = sizes.snapshots.values().map(|m| m.size).sum();
        let blobs: u64 = sizes
            .blobs
            .iter()
            .filter(|(d, _)| !sizes.image_blobs.contains(*d))
            .map(|(_, s)| *s)
            .sum();
        snaps + blobs
    }

    /// Removes build cache as `opts` says, never what a named image or a live lease uses. Waits
    /// for in-flight publishes (each holds the GC lock for milliseconds), never for whole builds.
    pub fn prune(&self, opts: &PruneOptions) -> Result<PruneReport> {
        let _gc = self.gc_exclusive(true)?.expect("waited");
        self.prune_locked(opts)
    }

    fn prune_locked(&self, opts: &PruneOptions) -> Result<PruneReport> {
        store::clean_leftovers(&self.dir)?;
        let scan = self.scan()?;
        let plan = self.plan(&scan, opts);
        let mut report = PruneReport::default();
        // Records first: a crash part-way leaves records whose snapshot exists, never the reverse
        // (and a record whose snapshot is gone reads as a miss anyway).
        for key in &plan.records {
            let path = self
                .dir
                .join("cache")
                .join(format!("{}.json", key.to_hex()));
            fsutil::remove_any(&path)?;
            report.records += 1;
        }
        for id in &plan.snapshots {
            let dir = self.snapshot_dir(id);
            report.reclaimed += scan.sizes.snapshots.get(id).map(|m| m.size).unwrap_or(0);
            // Renamed out first so no half-deleted tree is ever visible under its id.
            let doomed = self.staging.join(fsutil::unique_name("del"));
            fsutil::rename(&dir, &doomed)?;
            fsutil::remove_any(&doomed)?;
            report.snapshots += 1;
        }
        for d in &plan.blobs {
            let path = self.blob_path(d)?;
            fsutil::remove_any(&path)?;
            let _ = fs::remove_file(
                self.dir
                    .join("locks")
                    .join(format!("blob-{}.lock", d.digest())),
            );
            report.reclaimed += scan.sizes.blobs.get(d).copied().unwrap_or(0);
            report.blobs += 1;
        }
        if opts.all {
            for entry in cache_mounts::list_cache_mounts(self)? {
                if let Some(size) = cache_mounts::remove_cache_mount(self, &entry)? {
                    report.reclaimed += size;
                    report.cache_mounts += 1;
                }
            }
        }
        for dir in ["snapshots", "oci/blobs/sha256", "cache"] {
            fsutil::fsync_dir(&self.dir.join(dir))?;
        }
        Ok(report)
    }

    /// The build cache's size budget: the configured one, else 10% of the store's filesystem, at
    /// most 20 GB.
    pub fn gc_budget(&self) -> u64 {
        if let Some(b) = self.config.gc_budget {
            return b;
        }
        let fs_bytes = nix::sys::statvfs::statvfs(&self.dir)
            .map(|s| s.blocks() * s.fragment_size())
            .unwrap_or(0);
        (fs_bytes / 10).min(20_000_000_000)
    }

    /// Prunes least-recently-used build cache down to [`Store::gc_budget`] when it is over it;
    /// skipped (returns `None`) when another prune is running. Builds call this when they end.
    pub fn auto_prune(&self) -> Result<Option<PruneReport>> {
        let Some(_gc) = self.gc_exclusive(false)? else {
            return Ok(None);
        };
        let budget = self.gc_budget();
        if self.build_cache_bytes(&self.sizes()?) <= budget {
            return Ok(None);
        }
        self.prune_locked(&PruneOptions {
            all: false,
            until: None,
            keep_storage: Some(budget),
        })
        .map(Some)
    }

    /// What the store uses, by kind, and what `forge prune --all` would free. Reads without
    /// stopping anyone, so it is a consistent picture only when nothing runs.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let scan = self.scan()?;
        let plan = self.plan(
            &scan,
            &PruneOptions {
                all: true,
                until: None,
                keep_storage: None,
            },
        );
        // "Active" is what a plain `forge prune` keeps; "reclaimable" what `--all` frees.
        let keep_plan = self.plan(&scan, &PruneOptions::default());
        let kept_blobs: HashSet<&Digest> = scan
            .sizes
            .blobs
            .keys()
            .filter(|b| !keep_plan.blobs.contains(*b))
            .collect();
        let leased_blobs: HashSet<Digest> = self.blob_closure(
            scan.leases.iter().filter_map(|i| match i {
                LeaseItem::Blob(d) => Some(d.clone()),
                _ => None,
            }),
            &scan.sizes.blobs,
        );
        let mut rows = Vec::new();

        let mut images = Vec::new();
        let mut image_active = 0;
        for img in &scan.sizes.images {
            let closure = self.blob_closure([img.descriptor.digest().clone()], &scan.sizes.blobs);
            let size: u64 = closure.iter().filter_map(|d| scan.sizes.blobs.get(d)).sum();
            if leased_blobs.contains(img.descriptor.digest()) {
                image_active += 1;
            }
            images.push((img.clone(), size));
        }
        rows.push(UsageRow {
            kind: "Images",
            total: scan.sizes.images.len(),
            active: image_active,
            size: scan
                .sizes
                .image_blobs
                .iter()
                .filter_map(|d| scan.sizes.blobs.get(d))
                .sum(),
            reclaimable: 0,
        });

        let record_blobs: HashSet<Digest> = scan
            .records
            .iter()
            .filter_map(|r| r.record.as_ref()?.layer_blob.clone())
            .filter(|b| !scan.sizes.image_blobs.contains(b))
            .collect();
        let doomed_blobs: HashSet<&Digest> = plan.blobs.iter().collect();
        let mut records: Vec<RecordUsage> = scan
            .records
            .iter()
            .map(|r| RecordUsage {
                key: r.key,
                description: r
                    .record
                    .as_ref()
                    .map(|x| x.description.clone())
                    .unwrap_or_default(),
                size: r
                    .record
                    .as_ref()
                    .and_then(|x| x.layer_blob.as_ref())
                    .filter(|b| record_blobs.contains(*b))
                    .and_then(|b| scan.sizes.blobs.get(b))
                    .copied()
                    .unwrap_or(0)
                    + r.record
                        .as_ref()
                        .and_then(|x| x.snapshot.as_ref())
                        .and_then(|s| scan.sizes.snapshots.get(s))
                        .map(|m| m.size)
                        .unwrap_or(0),
                last_used: r.last_used,
                in_use: self.record_in_use(&scan, r),
            })
            .collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.last_used));
        rows.push(UsageRow {
            kind: "Build cache",
            total: scan.records.len(),
            active: scan.records.len() - keep_plan.records.len(),
            size: record_blobs
                .iter()
                .filter_map(|b| scan.sizes.blobs.get(b))
                .sum(),
            reclaimable: record_blobs
                .iter()
                .filter(|b| doomed_blobs.contains(b))
                .filter_map(|b| scan.sizes.blobs.get(b))
                .sum(),
        });

        let doomed_snaps: BTreeSet<&SnapshotId> = plan.snapshots.iter().collect();
        rows.push(UsageRow {
            kind: "Snapshots",
            total: scan.sizes.snapshots.len(),
            active: scan.sizes.snapshots.len() - keep_plan.snapshots.len(),
            size: scan.sizes.snapshots.values().map(|m| m.size).sum(),
            reclaimable: doomed_snaps
                .iter()
                .filter_map(|s| scan.sizes.snapshots.get(*s))
                .map(|m| m.size)
                .sum(),
        });

        let mut mounts = Vec::new();
        for entry in cache_mounts::list_cache_mounts(self)? {
            let size = fsutil::tree_size(&entry.dir);
            let busy = cache_mounts::cache_mount_in_use(self, &entry.name);
            mounts.push((entry.id.clone(), size, busy));
        }
        rows.push(UsageRow {
            kind: "Cache mounts",
            total: mounts.len(),
            active: mounts.iter().filter(|m| m.2).count(),
            size: mounts.iter().map(|m| m.1).sum(),
            reclaimable: mounts.iter().filter(|m| !m.2).map(|m| m.1).sum(),
        });

        let other: Vec<&Digest> = scan
            .sizes
            .blobs
            .keys()
            .filter(|b| !scan.sizes.image_blobs.contains(*b) && !record_blobs.contains(*b))
            .collect();
        rows.push(UsageRow {
            kind: "Other blobs",
            total: other.len(),
            active: other.iter().filter(|b| kept_blobs.contains(**b)).count(),
            size: other.iter().filter_map(|b| scan.sizes.blobs.get(*b)).sum(),
            reclaimable: other
                .iter()
                .filter(|b| doomed_blobs.contains(**b))
                .filter_map(|b| scan.sizes.blobs.get(*b))
                .sum(),
        });
        Ok(DiskUsage {
            rows,
            images,
            records,
            cache_mounts: mounts,
        })
    }
}

/// Parses a size like `10GB`, `512MiB`, `1.5g` or `1000000` (bytes).
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || StoreError::InvalidSize {
        text: text.to_owned(),
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// Parses a duration like `90s`, `30m`, `24h`, `7d` or `1h30m` (Go's style, plus days).
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || StoreError::InvalidDuration {
        text: text.to_owned(),
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(split);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let secs = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// Parses a prune filter; only `until=DURATION` is supported.
pub fn parse_prune_filter(text: &str, opts: &mut PruneOptions) -> Result<()> {
    match text.split_once('=') {
        Some(("until", d)) => {
            opts.until = Some(parse_duration(d)?);
            Ok(())
        }
        _ => Err(StoreError::InvalidFilter {
            text: text.to_owned(),
        }),
    }
}

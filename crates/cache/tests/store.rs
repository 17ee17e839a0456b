//! The store's publishing, lookup, corruption detection, leases and garbage collection.

mod common;

use std::io::Read;
use std::process::Command;

use forge_cache::{
    CacheKey, CacheRecord, CacheSharing, LeaseItem, PruneOptions, SnapshotMeta, Store, StoreError,
};
use oci_spec::image::Digest;

fn sha256(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
        .parse()
        .unwrap()
}

#[test]
fn blob_round_trip_checks_digest_on_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let info = store.put_blob_bytes(b"hello").unwrap();
    assert_eq!(info.digest, sha256(b"hello"));
    assert_eq!(info.size, 5);
    assert!(store.has_blob(&info.digest));
    let mut s = String::new();
    store
        .open_blob_verified(&info.digest)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "hello");
    assert_eq!(
        store.blob_path(&info.digest).unwrap(),
        dir.path()
            .join("v1/oci/blobs/sha256")
            .join(info.digest.digest())
    );

    // A reader whose bytes do not match the expected digest is refused and leaves nothing.
    let err = store
        .put_blob_from_reader(&b"not hello"[..], Some(&info.digest))
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    let ok = store
        .put_blob_from_reader(&b"hello"[..], Some(&info.digest))
        .unwrap();
    assert_eq!(ok, info);
    assert!(
        common::problems(&store).is_empty(),
        "{:?}",
        common::problems(&store)
    );
}

#[test]
fn flipped_byte_in_blob_is_detected_removed_and_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let info = store.put_blob_bytes(&bytes).unwrap();
    let path = store.blob_path(&info.digest).unwrap();
    let mut on_disk = std::fs::read(&path).unwrap();
    on_disk[5_000] ^= 0x01;
    std::fs::write(&path, &on_disk).unwrap();

    let err = store.open_blob_verified(&info.digest).unwrap_err();
    match &err {
        StoreError::CorruptBlob {
            digest, path: p, ..
        } => {
            assert_eq!(digest, &info.digest.to_string());
            assert_eq!(p, &path);
        }
        other => panic!("expected CorruptBlob, got {other}"),
    }
    assert!(!path.exists(), "the corrupt blob must be removed");
    assert!(!store.has_blob(&info.digest));
    // Refetching puts the good bytes back.
    store
        .put_blob_from_reader(&bytes[..], Some(&info.digest))
        .unwrap();
    assert!(store.verify_blob(&info.digest).is_ok());

    // verify_blob finds corruption too.
    let mut on_disk = std::fs::read(&path).unwrap();
    on_disk[0] ^= 0x80;
    std::fs::write(&path, &on_disk).unwrap();
    assert!(matches!(
        store.verify_blob(&info.digest),
        Err(StoreError::CorruptBlob { .. })
    ));
    assert!(matches!(
        store.read_blob_verified(&info.digest),
        Err(StoreError::BlobNotFound { .. })
    ));
}

#[test]
fn named_images_are_readable_by_skopeo_and_survive_prune() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let desc = common::put_image(&store, b"layer bytes");
    store.tag_image("docker.io/library/app:1.0", &desc).unwrap();
    store.tag_image("app:latest", &desc).unwrap();
    let resolved = store
        .resolve_image("docker.io/library/app:1.0")
        .unwrap()
        .unwrap();
    assert_eq!(resolved.digest(), desc.digest());
    assert_eq!(store.list_images().unwrap().len(), 2);

    let out = Command::new("skopeo")
        .arg("inspect")
        .arg("--raw")
        .arg(format!(
            "oci:{}:docker.io/library/app:1.0",
            store.oci_dir().display()
        ))
        .output()
        .expect("skopeo must be installed (scripts/install-deps)");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sha256(&out.stdout),
        *desc.digest(),
        "skopeo must return our manifest"
    );

    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let report = store
        .prune(&PruneOptions {
            all: true,
            ..PruneOptions::default()
        })
        .unwrap();
    assert_eq!(report.blobs, 0, "named images' blobs stay");
    assert!(
        common::problems(&store).is_empty(),
        "{:?}",
        common::problems(&store)
    );

    assert!(store.untag("app:latest").unwrap());
    assert!(!store.untag("app:latest").unwrap());
    assert!(store.untag("docker.io/library/app:1.0").unwrap());
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let report = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!(
        report.blobs, 3,
        "config, layer and manifest go once untagged"
    );
    assert!(store.list_blobs().unwrap().is_empty());
}

#[test]
fn tagging_a_missing_blob_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let desc = oci_spec::image::Descriptor::new(
        oci_spec::image::MediaType::ImageManifest,
        3,
        sha256(b"abc"),
    );
    assert!(matches!(
        store.tag_image("x:1", &desc),
        Err(StoreError::BlobNotFound { .. })
    ));
    assert!(matches!(
        store.tag_image("", &desc),
        Err(StoreError::InvalidImageName { .. })
    ));
}

fn snapshot_with(
    store: &Store,
    files: &[(&str, &[u8])],
    parent: Option<forge_cache::SnapshotId>,
) -> forge_cache::SnapshotId {
    let draft = store.prepare_snapshot().unwrap();
    assert!(draft.work_dir().is_dir(), "overlay workdir is prepared");
    for (name, bytes) in files {
        std::fs::write(draft.fs_dir().join(name), bytes).unwrap();
    }
    store
        .commit_snapshot(
            draft,
            SnapshotMeta {
                parent,
                description: "test".into(),
                ..SnapshotMeta::default()
            },
        )
        .unwrap()
}

/// A snapshot's size: every non-directory below it at any depth, a multiply-linked file once.
#[test]
fn snapshot_size_counts_nested_files_and_hardlinks_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let draft = store.prepare_snapshot().unwrap();
    let fs_dir = draft.fs_dir();
    let mut expected = 0;
    for d in 0..6 {
        let sub = fs_dir.join(format!("d{d}/deeper/still"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..5 {
            let len = 1000 * d + 7 * f + 1;
            std::fs::write(sub.join(format!("f{f}")), vec![b'x'; len]).unwrap();
            expected += len as u64;
        }
    }
    // Two more names for d1's f0 (1001 bytes): not counted again.
    std::fs::hard_link(fs_dir.join("d1/deeper/still/f0"), fs_dir.join("d1/again")).unwrap();
    std::fs::hard_link(fs_dir.join("d1/deeper/still/f0"), fs_dir.join("d5/again")).unwrap();
    // A symlink counts its own length, not its target's.
    std::os::unix::fs::symlink("d5/deeper/still/f4", fs_dir.join("link")).unwrap();
    expected += "d5/deeper/still/f4".len() as u64;
    let id = store
        .commit_snapshot(draft, SnapshotMeta::default())
        .unwrap();
    assert_eq!(store.snapshot_meta(&id).unwrap().size, expected);
}

#[test]
fn snapshots_and_records_round_trip_and_prune_by_lru() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let base = snapshot_with(&store, &[("a", b"1")], None);
    let top = snapshot_with(&store, &[("b", b"22")], Some(base.clone()));
    assert_eq!(
        store.snapshot_chain(&top).unwrap(),
        vec![top.clone(), base.clone()]
    );
    assert_eq!(
        std::fs::read(store.snapshot_fs(&top).unwrap().join("b")).unwrap(),
        b"22"
    );
    assert_eq!(store.snapshot_meta(&top).unwrap().size, 2);
    assert_eq!(
        store.snapshot_fs(&top).unwrap(),
        dir.path()
            .join("v1/snapshots")
            .join(top.as_str())
            .join("fs")
    );

    let k_old = CacheKey::builder("op old").finish();
    let k_new = CacheKey::builder("op new").input(&k_old).finish();
    assert_ne!(k_old, k_new);
    let rec = |s: &forge_cache::SnapshotId| CacheRecord {
        snapshot: Some(s.clone()),
        payload: serde_json::json!({"env": ["A=1"]}),
        ..CacheRecord::default()
    };
    store.put_record(&k_old, &rec(&base)).unwrap();
    store.put_record(&k_new, &rec(&top)).unwrap();
    assert_eq!(store.get_record(&k_new).unwrap().unwrap(), rec(&top));
    assert!(store
        .get_record(&CacheKey::builder("other").finish())
        .unwrap()
        .is_none());

    // Make k_old least recently used.
    let old_path = dir.path().join("v1/cache").join(format!("{k_old}.json"));
    let f = std::fs::File::options()
        .write(true)
        .open(&old_path)
        .unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        .unwrap();
    drop(store); // release the session lease

    let store = Store::open(dir.path()).unwrap();
    // until=3h keeps both (the older one was used 2h ago).
    let r = store
        .prune(&PruneOptions {
            until: Some(std::time::Duration::from_secs(3 * 3600)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.records, 0);
    // until=1h removes the older record, but its snapshot stays: it is the newer one's parent.
    let r = store
        .prune(&PruneOptions {
            until: Some(std::time::Duration::from_secs(3600)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((r.records, r.snapshots), (1, 0));
    assert!(store.get_record(&k_old).unwrap().is_none());
    assert!(store.get_record(&k_new).unwrap().is_some());
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    let r = store
        .prune(&PruneOptions {
            keep_storage: Some(0),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((r.records, r.snapshots), (1, 2));
    assert_eq!(r.reclaimed, 3);
    assert!(store.list_snapshots().unwrap().is_empty());
}

/// A snapshot laid over another: its tree is both directories, topmost first, in the chain's
/// lowerdirs too; the one below lives as long as the one on top, and must exist to be named.
#[test]
fn a_snapshot_laid_over_another_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let base = snapshot_with(&store, &[("os", b"1")], None);
    let earlier = snapshot_with(&store, &[("a", b"old"), ("b", b"kept")], Some(base.clone()));
    let draft = store.prepare_snapshot().unwrap();
    std::fs::write(draft.fs_dir().join("a"), b"new!").unwrap();
    let top = store
        .commit_snapshot(
            draft,
            SnapshotMeta {
                parent: Some(base.clone()),
                below: Some(earlier.clone()),
                ..SnapshotMeta::default()
            },
        )
        .unwrap();
    let fs = |id: &forge_cache::SnapshotId| store.snapshot_fs(id).unwrap();
    assert_eq!(
        store.snapshot_tree(&top).unwrap(),
        vec![fs(&top), fs(&earlier)]
    );
    assert_eq!(
        store.chain_dirs(&top).unwrap(),
        vec![fs(&top), fs(&earlier), fs(&base)]
    );
    assert_eq!(
        store.snapshot_meta(&top).unwrap().size,
        4,
        "only its own bytes"
    );

    // Laid over a snapshot that is not there: refused.
    let draft = store.prepare_snapshot().unwrap();
    let gone: forge_cache::SnapshotId = "0123456789abcdef0123456789abcdef".parse().unwrap();
    let err = store
        .commit_snapshot(
            draft,
            SnapshotMeta {
                below: Some(gone),
                ..SnapshotMeta::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::SnapshotNotFound { .. }), "{err}");

    // Only the top one is recorded; pruning everything else keeps what it stands on.
    let key = CacheKey::builder("laid over").finish();
    let record = CacheRecord {
        snapshot: Some(top.clone()),
        ..CacheRecord::default()
    };
    store.put_record(&key, &record).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    // Records used in the last hour stay, and with them every snapshot they need.
    let r = store
        .prune(&PruneOptions {
            until: Some(std::time::Duration::from_secs(3600)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((r.records, r.snapshots), (0, 0), "{r:?}");
    assert_eq!(store.snapshot_tree(&top).unwrap().len(), 2);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let r = store
        .prune(&PruneOptions {
            all: true,
            keep_storage: Some(0),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.snapshots, 3, "{r:?}");
}

#[test]
fn leases_protect_from_prune_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let builder = Store::open(dir.path()).unwrap();
    let blob = builder
        .put_blob_bytes(b"in use by a running build")
        .unwrap();
    let snap = snapshot_with(&builder, &[("x", b"x")], None);
    let pruner = Store::open(dir.path()).unwrap();
    let r = pruner
        .prune(&PruneOptions {
            all: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        r,
        forge_cache::PruneReport::default(),
        "the builder's session lease protects its blob and snapshot"
    );
    assert!(builder.has_blob(&blob.digest));

    // An explicit lease outlives the session.
    let lease = pruner.lease().unwrap();
    pruner
        .add_to_lease(&lease, LeaseItem::Snapshot(snap.clone()))
        .unwrap();
    drop(builder);
    let r = pruner
        .prune(&PruneOptions {
            all: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((r.blobs, r.snapshots), (1, 0));
    drop(lease);
    let r = pruner
        .prune(&PruneOptions {
            all: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.snapshots, 1);
}

#[test]
fn cache_mounts_are_kept_while_held_and_listed_by_disk_usage() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let m = store
        .cache_mount("/root/.cache/go-build", CacheSharing::Locked)
        .unwrap();
    std::fs::write(m.path().join("obj"), vec![0u8; 1000]).unwrap();
    assert!(m.path().starts_with(dir.path().join("v1/cache-mounts")));
    // A private mount while the first is held gets its own directory.
    let p = store
        .cache_mount("/root/.cache/go-build", CacheSharing::Private)
        .unwrap();
    assert_ne!(p.path(), m.path());
    drop(p);

    let df = store.disk_usage().unwrap();
    let row = df.rows.iter().find(|r| r.kind == "Cache mounts").unwrap();
    assert_eq!((row.total, row.active, row.size), (2, 1, 1000));
    assert!(df
        .cache_mounts
        .iter()
        .any(|(id, size, busy)| id == "/root/.cache/go-build" && *size == 1000 && *busy));

    let r = store
        .prune(&PruneOptions {
            all: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.cache_mounts, 1, "only the free (private) one goes");
    assert!(m.path().join("obj").exists());
    drop(m);
    let r = store
        .prune(&PruneOptions {
            all: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((r.cache_mounts, r.reclaimed), (1, 1000));
}

#[test]
fn disk_usage_counts_images_cache_and_reclaimable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let desc = common::put_image(&store, &[7u8; 5000]);
    store.tag_image("app:1", &desc).unwrap();
    let snap = snapshot_with(&store, &[("f", &[1u8; 300])], None);
    let layer = store.put_blob_bytes(&[9u8; 700]).unwrap();
    store
        .put_record(
            &CacheKey::builder("x").finish(),
            &CacheRecord {
                snapshot: Some(snap),
                layer_blob: Some(layer.digest),
                ..Default::default()
            },
        )
        .unwrap();
    // A record whose layer a named image uses is active: plain prune keeps it.
    let used = snapshot_with(&store, &[("g", &[2u8; 50])], None);
    store
        .put_record(
            &CacheKey::builder("y").finish(),
            &CacheRecord {
                snapshot: Some(used),
                layer_blob: Some(desc.digest().clone()),
                ..Default::default()
            },
        )
        .unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let df = store.disk_usage().unwrap();
    let get = |k: &str| df.rows.iter().find(|r| r.kind == k).unwrap().clone();
    assert_eq!(
        (get("Build cache").total, get("Build cache").active),
        (2, 1)
    );
    assert_eq!((get("Snapshots").total, get("Snapshots").active), (2, 1));
    let images = get("Images");
    assert_eq!(images.total, 1);
    assert!(images.size > 5000, "{images:?}");
    assert_eq!(get("Build cache").size, 700);
    assert_eq!(get("Build cache").reclaimable, 700);
    assert_eq!(
        get("Snapshots").reclaimable,
        350,
        "--all also frees the active one"
    );
    assert_eq!(df.records.len(), 2);
    let x = df
        .records
        .iter()
        .find(|r| r.key == CacheKey::builder("x").finish())
        .unwrap();
    assert_eq!((x.size, x.in_use), (1000, false));
}

#[test]
fn sizes_and_durations_parse() {
    use forge_cache::{parse_duration, parse_size};
    assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
    assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
    assert_eq!(parse_size("1.5k").unwrap(), 1500);
    assert!(parse_size("ten").is_err());
    assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
    assert_eq!(parse_duration("7d").unwrap().as_secs(), 7 * 86400);
    assert!(parse_duration("5 parsecs").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn store_lives_under_a_versioned_directory_with_an_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path()).unwrap();
    let v1 = dir.path().join("v1");
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v1.join("oci/oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v1.join("oci/index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    for d in ["snapshots", "cache", "contexts", "cache-mounts", "tmp"] {
        assert!(v1.join(d).is_dir(), "{d}");
    }
}

#[test]
fn auto_prune_keeps_the_cache_within_its_budget_dropping_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = forge_cache::StoreConfig {
        gc_budget: Some(2_500),
        ..Default::default()
    };
    let store = Store::open_with(dir.path(), config.clone()).unwrap();
    let mut keys = Vec::new();
    for i in 0..4u8 {
        let snap = snapshot_with(&store, &[("f", &[i; 1000])], None);
        let key = CacheKey::builder(&format!("step {i}")).finish();
        store
            .put_record(
                &key,
                &CacheRecord {
                    snapshot: Some(snap),
                    ..Default::default()
                },
            )
            .unwrap();
        // Ages 40, 30, 20, 10 minutes: step 0 is the least recently used.
        let path = dir.path().join("v1/cache").join(format!("{key}.json"));
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(
                std::time::SystemTime::now() - std::time::Duration::from_secs(600 * (4 - i as u64)),
            )
            .unwrap();
        keys.push(key);
    }
    drop(store);
    let store = Store::open_with(dir.path(), config).unwrap();
    assert_eq!(store.gc_budget(), 2_500);
    // A hit makes step 0 the most recently used.
    assert!(store.get_record(&keys[0]).unwrap().is_some());
    drop(store);
    let store = Store::open_with(
        dir.path(),
        forge_cache::StoreConfig {
            gc_budget: Some(2_500),
            ..Default::default()
        },
    )
    .unwrap();
    let report = store
        .auto_prune()
        .unwrap()
        .expect("4000 bytes is over a 2500 budget");
    assert_eq!(
        (report.records, report.snapshots, report.reclaimed),
        (2, 2, 2000)
    );
    let left: Vec<bool> = keys
        .iter()
        .map(|k| store.get_record(k).unwrap().is_some())
        .collect();
    assert_eq!(
        left,
        vec![true, false, false, true],
        "steps 1 and 2 were least recently used"
    );
    assert!(store.auto_prune().unwrap().is_none(), "within budget now");
}

#[test]
fn cache_keys_frame_their_parts() {
    let a = CacheKey::builder("op")
        .extra("x", b"ab")
        .extra("y", b"c")
        .finish();
    let b = CacheKey::builder("op")
        .extra("x", b"a")
        .extra("y", b"bc")
        .finish();
    assert_ne!(a, b);
    let k = CacheKey::builder("op").finish();
    assert_ne!(
        CacheKey::builder("op").input(&k).finish(),
        CacheKey::builder("op").finish()
    );
    assert_eq!(k.to_hex().parse::<CacheKey>().unwrap(), k);
    assert!("nothex".parse::<CacheKey>().is_err());
}

#[test]
fn a_store_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Store>();
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    let handles: Vec<_> = (0..4u8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                let d = common::put_image(&store, &[i; 100]);
                store.tag_image(&format!("t:{i}"), &d).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        store.list_images().unwrap().len(),
        4,
        "no tag lost to a concurrent index.json update"
    );
}

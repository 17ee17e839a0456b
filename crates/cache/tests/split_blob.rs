//! A blob writer whose hashing was split off to another thread (what the layer exporter uses):
//! the blob is still published under the store's own digest, and refused when the hasher and the
//! writer disagree or the digest is not the one claimed. Also: big writes and writeback.

use std::io::Write;

use forge_cache::{Store, StoreError};
use oci_spec::image::Digest;

fn sha256(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
        .parse()
        .unwrap()
}

/// 20 MiB that cross several writeback steps, in pieces of odd sizes (some under the direct-write
/// threshold, some over it).
fn content() -> Vec<u8> {
    (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect()
}

fn pieces(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let sizes = [1usize << 20, 7, 300_000, 65_536, 4_096, 3 << 20];
    let mut at = 0;
    let mut i = 0;
    std::iter::from_fn(move || {
        if at == bytes.len() {
            return None;
        }
        let n = sizes[i % sizes.len()].min(bytes.len() - at);
        i += 1;
        at += n;
        Some(&bytes[at - n..at])
    })
}

/// Files in the store's staging directories (blobs being written).
fn staged_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root.join("v1/tmp")).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if !f.to_string_lossy().ends_with(".lock") {
                    out.push(f);
                }
            }
        }
    }
    out
}

#[test]
fn split_writer_publishes_under_the_stores_own_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = content();
    let (mut writer, hasher) = store.blob_writer().unwrap().split_hasher();
    // The hasher works on another thread, as the layer exporter uses it.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let hashing = std::thread::spawn(move || {
        let mut hasher = hasher;
        for piece in rx {
            hasher.update(&piece);
        }
        hasher
    });
    for piece in pieces(&bytes) {
        writer.write_all(piece).unwrap();
        tx.send(piece.to_vec()).unwrap();
    }
    drop(tx);
    let hasher = hashing.join().unwrap();
    let info = writer.commit(hasher, Some(&sha256(&bytes))).unwrap();
    assert_eq!(info.digest, sha256(&bytes));
    assert_eq!(info.size, bytes.len() as u64);
    let stored = std::fs::read(store.blob_path(&info.digest).unwrap()).unwrap();
    assert!(
        stored == bytes,
        "the published blob is not the bytes written"
    );
    store.verify_blob(&info.digest).unwrap();
    assert!(
        staged_files(dir.path()).is_empty(),
        "staging file left behind"
    );
}

#[test]
fn split_writer_refuses_a_wrong_claimed_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = content();
    let (mut writer, mut hasher) = store.blob_writer().unwrap().split_hasher();
    writer.write_all(&bytes).unwrap();
    hasher.update(&bytes);
    let wrong = sha256(b"something else");
    let err = writer.commit(hasher, Some(&wrong)).unwrap_err();
    assert!(
        matches!(&err, StoreError::DigestMismatch { expected, actual }
            if *expected == wrong.to_string() && *actual == sha256(&bytes).to_string()),
        "unexpected error: {err}"
    );
    assert_nothing_kept(&store, dir.path());
}

#[test]
fn split_writer_refuses_a_hasher_that_missed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = content();
    let (mut writer, mut hasher) = store.blob_writer().unwrap().split_hasher();
    writer.write_all(&bytes).unwrap();
    hasher.update(&bytes[..bytes.len() - 1]);
    // Without a claimed digest too: the hasher must have seen every byte written.
    let err = writer.commit(hasher, None).unwrap_err();
    assert!(
        matches!(&err, StoreError::SizeMismatch { expected, actual, .. }
            if *expected == bytes.len() as u64 && *actual == bytes.len() as u64 - 1),
        "unexpected error: {err}"
    );
    assert_nothing_kept(&store, dir.path());
}

#[test]
fn split_writer_dropped_without_commit_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (mut writer, _hasher) = store.blob_writer().unwrap().split_hasher();
    writer.write_all(&content()).unwrap();
    assert_eq!(
        staged_files(dir.path()).len(),
        1,
        "the blob is staged while written"
    );
    drop(writer);
    assert!(
        staged_files(dir.path()).is_empty(),
        "staging file left behind"
    );
    assert!(store.list_blobs().unwrap().is_empty());
}

#[test]
fn big_blobs_in_mixed_writes_keep_every_byte() {
    // Direct writes, buffered writes and started writeback must interleave without losing order.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = content();
    let mut writer = store.blob_writer().unwrap();
    for piece in pieces(&bytes) {
        writer.write_all(piece).unwrap();
    }
    let info = writer.commit(Some(&sha256(&bytes))).unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    let stored = std::fs::read(store.blob_path(&info.digest).unwrap()).unwrap();
    assert!(
        stored == bytes,
        "the published blob is not the bytes written"
    );
}

/// A refused blob is neither published nor left in staging.
fn assert_nothing_kept(store: &Store, root: &std::path::Path) {
    assert!(
        store.list_blobs().unwrap().is_empty(),
        "a refused blob was published"
    );
    assert!(
        staged_files(root).is_empty(),
        "refused blob left in staging"
    );
}

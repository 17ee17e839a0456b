//! The blob writer that writes past the page cache (what the layer exporter uses), filled by
//! slices or by pieces in place: the blob is the bytes given, in order, published under the
//! store's own digest, refused when the digest is not the one claimed, and never left behind
//! in staging. Also: the cached writer's big writes and writeback.

use std::io::Write;

use forge_cache::{BlobWriter, Store, StoreError, PIECE_LEN};
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

/// Feeds `bytes` to `writer`: slices of odd sizes, then whole pieces filled in place, then
/// slices again, so both ways and their joins are crossed.
fn feed(writer: &mut BlobWriter<'_>, bytes: &[u8]) {
    let third = bytes.len() / 3;
    for piece in pieces(&bytes[..third]) {
        writer.write_all(piece).unwrap();
    }
    let mut at = third;
    while at < 2 * third {
        let len = PIECE_LEN.min(2 * third - at);
        let mut piece = writer.take_piece().unwrap();
        piece.as_mut()[..len].copy_from_slice(&bytes[at..at + len]);
        writer.put_piece(piece, len).unwrap();
        at += len;
    }
    for piece in pieces(&bytes[2 * third..]) {
        writer.write_all(piece).unwrap();
    }
}

#[test]
fn uncached_writer_publishes_the_bytes_under_the_stores_own_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // 20 MiB, and the same shifted by a few bytes, so the pieces start both aligned to the
    // pieces of the file and not.
    for skip in [0, 7] {
        let bytes = &content()[skip..];
        let mut writer = store.blob_writer_uncached().unwrap();
        feed(&mut writer, bytes);
        let info = writer.commit(Some(&sha256(bytes))).unwrap();
        assert_eq!(info.digest, sha256(bytes));
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
}

#[test]
fn cached_writer_takes_pieces_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = content();
    let mut writer = store.blob_writer().unwrap();
    feed(&mut writer, &bytes);
    let info = writer.commit(None).unwrap();
    assert_eq!(info.digest, sha256(&bytes));
    assert!(std::fs::read(store.blob_path(&info.digest).unwrap()).unwrap() == bytes);
}

#[test]
fn uncached_writer_refuses_a_wrong_claimed_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = content();
    let mut writer = store.blob_writer_uncached().unwrap();
    feed(&mut writer, &bytes);
    let wrong = sha256(b"something else");
    let err = writer.commit(Some(&wrong)).unwrap_err();
    assert!(
        matches!(&err, StoreError::DigestMismatch { expected, actual }
            if *expected == wrong.to_string() && *actual == sha256(&bytes).to_string()),
        "unexpected error: {err}"
    );
    assert_nothing_kept(&store, dir.path());
}

#[test]
fn uncached_writer_dropped_without_commit_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut writer = store.blob_writer_uncached().unwrap();
    feed(&mut writer, &content());
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

//! Helpers shared by forge-cache's integration tests.
#![allow(dead_code)]

use std::path::Path;

use forge_cache::Store;
use oci_spec::image::{Descriptor, Digest, MediaType};

/// Everything wrong with a store, as readable lines; empty when the store is consistent: every
/// named image's manifest, config and layers exist and verify, every record's snapshot and blob
/// exist, every snapshot's parent chain resolves, and `tmp/` holds nothing but `store`'s own
/// staging directory.
pub(crate) fn problems(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    for img in store.list_images().expect("list images") {
        let d = img.descriptor.digest();
        match store.read_blob_verified(d) {
            Err(e) => out.push(format!("image {}: manifest {d}: {e}", img.name)),
            Ok(bytes) => {
                let v: serde_json::Value = match serde_json::from_slice(&bytes) {
                    Ok(v) => v,
                    Err(e) => {
                        out.push(format!("image {}: manifest does not parse: {e}", img.name));
                        continue;
                    }
                };
                let mut refs = vec![v["config"]["digest"].clone()];
                refs.extend(
                    v["layers"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|l| l["digest"].clone()),
                );
                for r in refs {
                    let dd: Digest = r.as_str().expect("digest string").parse().expect("digest");
                    if let Err(e) = store.verify_blob(&dd) {
                        out.push(format!("image {}: blob {dd}: {e}", img.name));
                    }
                }
            }
        }
    }
    for key in store.list_records().expect("list records") {
        let path = store.dir().join("cache").join(format!("{key}.json"));
        let rec: forge_cache::CacheRecord =
            match std::fs::read(&path).map(|b| serde_json::from_slice(&b)) {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    out.push(format!("record {key}: bad json: {e}"));
                    continue;
                }
                Err(e) => {
                    out.push(format!("record {key}: {e}"));
                    continue;
                }
            };
        if let Some(s) = &rec.snapshot {
            if let Err(e) = store.snapshot_chain(s) {
                out.push(format!("record {key}: snapshot {s}: {e}"));
            }
        }
        if let Some(b) = &rec.layer_blob {
            if let Err(e) = store.verify_blob(b) {
                out.push(format!("record {key}: blob {b}: {e}"));
            }
        }
    }
    for s in store.list_snapshots().expect("list snapshots") {
        if !store
            .dir()
            .join("snapshots")
            .join(s.as_str())
            .join("fs")
            .is_dir()
        {
            out.push(format!("snapshot {s}: no fs directory"));
        }
    }
    let tmp: Vec<String> = std::fs::read_dir(store.dir().join("tmp"))
        .expect("read tmp")
        .map(|e| e.expect("entry").path().display().to_string())
        .filter(|p| Path::new(p) != store.staging_dir())
        .collect();
    if !tmp.is_empty() {
        out.push(format!("leftovers in tmp: {tmp:?}"));
    }
    out
}

/// Stores a minimal image (config + one layer + manifest) and returns its manifest descriptor.
pub(crate) fn put_image(store: &Store, layer: &[u8]) -> Descriptor {
    let layer = store.put_blob_bytes(layer).expect("put layer");
    let config = store
        .put_blob_bytes(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .expect("put config");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest.to_string(), "size": config.size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.digest.to_string(), "size": layer.size}],
    }))
    .expect("json");
    let m = store.put_blob_bytes(&manifest).expect("put manifest");
    Descriptor::new(MediaType::ImageManifest, m.size, m.digest)
}

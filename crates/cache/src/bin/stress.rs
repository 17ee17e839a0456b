//! A child process for forge-cache's crash-safety and concurrency tests (not a user tool).
//!
//!     forge-cache-stress publish ROOT SEED N   publish N rounds (0: until killed)
//!     forge-cache-stress prune ROOT N          prune N times, alternating --all and a budget
//!
//! A round stores two layer blobs, a config and a manifest, tags the manifest, commits a
//! snapshot whose parent is the previous one, and records it under a cache key.

use std::io::Write;
use std::process::ExitCode;

use forge_cache::{CacheKey, CacheRecord, PruneOptions, SnapshotMeta, Store};
use oci_spec::image::{Descriptor, MediaType};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: enough to vary sizes and contents.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn publish(store: &Store, seed: u64, rounds: u64) -> forge_cache::Result<()> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut parent = None;
    let mut round = 0u64;
    while rounds == 0 || round < rounds {
        let mut layers = Vec::new();
        for _ in 0..2 {
            let len = (rng.next() % 200_000) as usize + 1;
            let fill = rng.next() as u8;
            let mut bytes = vec![fill; len];
            bytes[..8].copy_from_slice(&rng.next().to_le_bytes());
            let blob = store.put_blob_bytes(&bytes)?;
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": blob.digest.to_string(),
                "size": blob.size,
            }));
        }
        let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux", "round": round, "seed": seed}))
            .expect("json");
        let config = store.put_blob_bytes(&config)?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest.to_string(), "size": config.size},
            "layers": layers,
        }))
        .expect("json");
        let manifest = store.put_blob_bytes(&manifest)?;
        let desc = Descriptor::new(
            MediaType::ImageManifest,
            manifest.size,
            manifest.digest.clone(),
        );
        store.tag_image(&format!("stress/s{seed}:t{}", round % 3), &desc)?;

        let draft = store.prepare_snapshot()?;
        for i in 0..(rng.next() % 20) {
            let p = draft.fs_dir().join(format!("f{i}"));
            let mut f = std::fs::File::create(&p).expect("create in draft");
            f.write_all(&rng.next().to_le_bytes())
                .expect("write in draft");
        }
        let id = store.commit_snapshot(
            draft,
            SnapshotMeta {
                parent: parent.clone(),
                description: format!("seed {seed} round {round}"),
                ..SnapshotMeta::default()
            },
        )?;
        let key = CacheKey::builder(&format!("seed {seed} round {round}")).finish();
        store.put_record(
            &key,
            &CacheRecord {
                snapshot: Some(id.clone()),
                layer_blob: Some(manifest.digest.clone()),
                payload: serde_json::json!({"round": round}),
                ..CacheRecord::default()
            },
        )?;
        parent = Some(id);
        round += 1;
    }
    Ok(())
}

fn prune(store: &Store, times: u64) -> forge_cache::Result<()> {
    for i in 0..times {
        let opts = PruneOptions {
            all: i % 2 == 0,
            until: None,
            keep_storage: (i % 2 == 1).then_some(100_000),
        };
        store.prune(&opts)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize| args.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let Some(root) = args.get(2) else {
        eprintln!("usage: forge-cache-stress publish ROOT SEED N | prune ROOT N");
        return ExitCode::from(2);
    };
    let store = match Store::open(root) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("open: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = match args[1].as_str() {
        "publish" => publish(&store, num(3), num(4)),
        "prune" => prune(&store, num(3)),
        other => {
            eprintln!("unknown mode {other}");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

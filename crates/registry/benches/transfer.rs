//! Push and pull throughput of a 200 MB layer against a local `docker-registry` over loopback
//! plain HTTP: chunked upload (Docker's default above 64 MiB), monolithic upload, and pull
//! into an OCI directory with sha256 verification. Prints a table; run with
//! `cargo bench -p forge-registry --bench transfer`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{make_image, pseudo_random, Auth, Registry};
use forge_registry::{ClientConfig, OciDir, Platform, PushOptions, Reference, RegistryClient};

const SIZE: usize = 200 << 20;
const ROUNDS: usize = 3;

fn main() {
    let registry = Registry::start(Auth::None, None);
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    // A real gzip stream (of incompressible bytes), as registries and skopeo expect of a layer.
    let layer = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &pseudo_random(SIZE, 42)).unwrap();
        gz.finish().unwrap()
    };
    let image = make_image(&src, &[layer]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = |chunk_threshold: u64| {
        RegistryClient::new(ClientConfig {
            docker_config_dir: Some(tmp.path().to_path_buf()),
            chunk_threshold,
            ..Default::default()
        })
        .unwrap()
    };
    let mb = SIZE as f64 / (1 << 20) as f64;
    let mut rows = Vec::new();
    for (label, repo, threshold) in [
        ("push, chunked 16 MiB", "chunked", 64u64 << 20),
        ("push, monolithic", "mono", u64::MAX),
    ] {
        let c = client(threshold);
        let mut best = f64::MAX;
        for round in 0..ROUNDS {
            // A fresh repository each round, so HEAD finds nothing and the blob is uploaded.
            let target =
                Reference::parse(&format!("{}/bench/{repo}-{round}:1", registry.host)).unwrap();
            let t = Instant::now();
            runtime
                .block_on(c.push(
                    &src,
                    &image.manifest_digest,
                    &target,
                    &PushOptions::default(),
                ))
                .unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        rows.push((label, best));
    }
    let c = client(64 << 20);
    let target = Reference::parse(&format!("{}/bench/chunked-0:1", registry.host)).unwrap();
    let mut best = f64::MAX;
    for round in 0..ROUNDS {
        let dst = OciDir::create(tmp.path().join(format!("dst{round}"))).unwrap();
        let t = Instant::now();
        runtime
            .block_on(c.pull(&target, &Platform::new("linux", "amd64", None), &dst))
            .unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        std::fs::remove_dir_all(dst.root()).unwrap();
    }
    rows.push(("pull + sha256 verify", best));

    // skopeo, for comparison: the same image copied from an OCI layout, and back.
    let manifest_size = src.read_blob(&image.manifest_digest).unwrap().len();
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{manifest_size},"annotations":{{"org.opencontainers.image.ref.name":"1"}}}}]}}"#,
        image.manifest_digest
    );
    std::fs::write(src.root().join("index.json"), index).unwrap();
    let skopeo = |args: &[String]| {
        let t = Instant::now();
        let out = std::process::Command::new("skopeo")
            .args(args)
            .output()
            .expect("skopeo");
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed().as_secs_f64()
    };
    let mut best_push = f64::MAX;
    let mut best_pull = f64::MAX;
    for round in 0..ROUNDS {
        // A registry of its own each round: skopeo remembers where it saw a blob and would
        // mount it instead of uploading.
        let fresh = Registry::start(Auth::None, None);
        let dest = format!("docker://{}/bench/skopeo-{round}:1", fresh.host);
        let from = format!("oci:{}:1", src.root().display());
        best_push = best_push.min(skopeo(&[
            "copy".into(),
            "--dest-tls-verify=false".into(),
            from,
            dest.clone(),
        ]));
        let out = tmp.path().join(format!("skopeo-out{round}"));
        let into = format!("oci:{}:1", out.display());
        best_pull = best_pull.min(skopeo(&[
            "copy".into(),
            "--src-tls-verify=false".into(),
            dest,
            into,
        ]));
        std::fs::remove_dir_all(out).unwrap();
    }
    rows.push(("skopeo copy oci: -> registry (comparison)", best_push));
    rows.push(("skopeo copy registry -> oci: (comparison)", best_pull));

    println!("| transfer of a {mb:.0} MiB layer (best of {ROUNDS}) | seconds | MiB/s |");
    println!("|---|---|---|");
    for (label, secs) in rows {
        println!("| {label} | {secs:.2} | {:.0} |", mb / secs);
    }
}

//! COPY/ADD throughput: a context of many small files, one large file, and the same tree as
//! a gzip archive given to ADD. Prints a table; run as root (the copy chowns).
//! `cargo bench -p forge-executor --bench fileop_copy`

use std::fs;
use std::path::Path;
use std::time::Instant;

use forge_executor::{copy, resolve_sources, CopySource, CopySpec};

fn spec(source: &str, dest: &str, unpack: bool) -> CopySpec {
    CopySpec {
        sources: vec![CopySource::Path(source.to_string())],
        dest: dest.to_string(),
        unpack_archives: unpack,
        ..CopySpec::default()
    }
}

fn row(name: &str, files: u64, bytes: u64, secs: f64) {
    println!(
        "{name:<34} {files:>8} {:>10.1} {secs:>9.3} {:>11.0} {:>9.1}",
        bytes as f64 / 1e6,
        files as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
}

fn make_small_tree(root: &Path, dirs: usize, per_dir: usize) {
    let body = vec![b'x'; 4096];
    for d in 0..dirs {
        let dir = root.join(format!("small/d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            fs::write(dir.join(format!("f{f:04}.txt")), &body).unwrap();
        }
    }
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("context");
    fs::create_dir_all(&src).unwrap();
    make_small_tree(&src, 100, 100);
    let big = vec![7u8; 256 << 20];
    fs::write(src.join("big.bin"), &big).unwrap();
    drop(big);
    {
        let file = fs::File::create(src.join("small.tar.gz")).unwrap();
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.append_dir_all("small", src.join("small")).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }

    println!(
        "{:<34} {:>8} {:>10} {:>9} {:>11} {:>9}",
        "case", "files", "MB", "seconds", "files/s", "MB/s"
    );
    for round in 0..2 {
        let dest = tmp.path().join(format!("rootfs{round}"));
        fs::create_dir_all(&dest).unwrap();
        let t = Instant::now();
        let r = copy(&spec("small", "/app/", false), &src, &dest).unwrap();
        row(
            "COPY 10k x 4 KiB files",
            r.files,
            r.bytes,
            t.elapsed().as_secs_f64(),
        );
        let t = Instant::now();
        let r = copy(&spec("big.bin", "/big.bin", false), &src, &dest).unwrap();
        row(
            "COPY one 256 MiB file",
            r.files,
            r.bytes,
            t.elapsed().as_secs_f64(),
        );
        let t = Instant::now();
        let r = copy(&spec("small.tar.gz", "/x/", true), &src, &dest).unwrap();
        row(
            "ADD tar.gz of 10k x 4 KiB files",
            r.files,
            r.bytes,
            t.elapsed().as_secs_f64(),
        );
        let t = Instant::now();
        let n = resolve_sources(&spec("small/*/f00*.txt", "/w/", false), &src)
            .unwrap()
            .len();
        row(
            "resolve_sources small/*/f00*.txt",
            n as u64,
            0,
            t.elapsed().as_secs_f64(),
        );
    }
}

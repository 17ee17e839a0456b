//! Layer throughput: write a ~200 MB tree of a few thousand files as a layer (uncompressed, gzip,
//! zstd) and unpack each blob again; then export a 280 MB tree of 20,000 files of 14 KB (what
//! `COPY data /data` of scripts/bench-build makes) as an uncompressed layer into a store, the way
//! `forge build` does, staged, fsynced and renamed. Prints tables; MB/s are of the uncompressed tar.
//!
//!     cargo bench -p forge-export --bench layer            # everything
//!     cargo bench -p forge-export --bench layer -- store   # only the store export

use std::fs::{self, File};
use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::time::Instant;

use forge_cache::Store;
use forge_export::{
    unpack_layer, write_layer, write_layer_to_store, Compression, LayerInfo, LayerOptions,
    UnpackOptions,
};

/// xorshift64: reproducible content without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Half random bytes, half short words: gzip -6 gets it to about 69%, a little worse than binaries.
fn content(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: [&[u8]; 12] = [
        b"the ",
        b"layer ",
        b"forge ",
        b"\x00\x00\x00\x00",
        b"fn main() {\n",
        b"return 0;\n",
        b"0x7f454c46 ",
        b"import os\n",
        b"\t",
        b"    ",
        b"ELF",
        b"}\n",
    ];
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let r = rng.next();
        if r % 2 == 0 {
            out.extend((0..8).map(|i| (r >> (i * 8)) as u8));
        } else {
            out.extend_from_slice(WORDS[(r >> 8) as usize % WORDS.len()]);
        }
    }
    out.truncate(len);
    out
}

fn generate(root: &Path) -> (u64, usize) {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let (mut bytes, mut files) = (0u64, 0usize);
    for d in 0..50 {
        let dir = root.join(format!("usr/lib/pkg{d:02}/sub{}", d % 7));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..60 {
            // Mostly small files, a few large ones: like a package tree.
            let len = match rng.next() % 100 {
                0..=79 => (rng.next() % 16_384) as usize,
                80..=97 => (rng.next() % 262_144) as usize,
                _ => 1_000_000 + (rng.next() % 2_000_000) as usize,
            };
            fs::write(dir.join(format!("file{f:03}.so")), content(&mut rng, len)).unwrap();
            bytes += len as u64;
            files += 1;
        }
    }
    (bytes, files)
}

/// User + system CPU seconds of this process so far (all threads): under load, wall time alone
/// says little, CPU time says what the work costs.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// 20,000 files of 14,000 bytes in 40 directories of 500, as scripts/bench-build's big context.
fn generate_wide(root: &Path) -> (u64, usize) {
    let mut rng = Rng(0x2545f4914f6cdd1d);
    let block: Vec<u8> = (0..1 << 16).map(|_| rng.next() as u8).collect();
    let (size, files) = (14_000usize, 20_000usize);
    for i in 0..files {
        let dir = root.join(format!("data/d{:03}", i / 500));
        if i % 500 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        let off = (i * 7919) % (block.len() - size);
        fs::write(dir.join(format!("f{i:05}.bin")), &block[off..off + size]).unwrap();
    }
    ((size * files) as u64, files)
}

/// Exports the wide tree into a store `runs` times and prints one row per way of doing it.
fn store_export(tmp: &Path) {
    let tree = tmp.join("wide");
    let (bytes, files) = generate_wide(&tree);
    println!(
        "\nstore export: {files} files, {:.0} MB of content, uncompressed, blob staged + fsynced + renamed\n",
        bytes as f64 / 1e6
    );
    println!("| path | tar MB | wall s (median of 7) | min s | CPU s | MB/s (tar, wall) |");
    println!("|---|---|---|---|---|---|");
    let opts = LayerOptions {
        compression: Compression::Uncompressed,
        level: None,
        source_date_epoch: None,
    };
    // `-- store NAME` runs only the ways whose label contains NAME (e.g. for perf).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "store" && !a.starts_with("--"))
        .collect();
    let ways: Vec<_> = store_ways()
        .into_iter()
        .filter(|(label, _)| only.is_empty() || only.iter().any(|o| label.contains(o.as_str())))
        .collect();
    // Runs alternate between the ways, so a burst of load elsewhere hurts them alike.
    let mut walls = vec![Vec::new(); ways.len()];
    let mut cpus = vec![Vec::new(); ways.len()];
    let mut tar_mb = 0.0;
    for _ in 0..RUNS {
        for (i, (_, export)) in ways.iter().enumerate() {
            // A fresh store each time, so the blob is really written (not found present).
            let root = tmp.join("store");
            let store = Store::open(&root).unwrap();
            let (start, cpu) = (Instant::now(), cpu_seconds());
            let info = export(&store, &tree, &opts);
            walls[i].push(start.elapsed().as_secs_f64());
            cpus[i].push(cpu_seconds() - cpu);
            tar_mb = info.uncompressed_size as f64 / 1e6;
            drop(store);
            fs::remove_dir_all(&root).unwrap();
        }
    }
    for (i, (label, _)) in ways.iter().enumerate() {
        walls[i].sort_by(f64::total_cmp);
        cpus[i].sort_by(f64::total_cmp);
        let median = walls[i][RUNS / 2];
        println!(
            "| {label} | {tar_mb:.0} | {median:.3} | {:.3} | {:.2} | {:.0} |",
            walls[i][0],
            cpus[i][RUNS / 2],
            tar_mb / median
        );
    }
}

const RUNS: usize = 7;

type Export = fn(&Store, &Path, &LayerOptions) -> LayerInfo;

/// `write_layer` into a `BlobWriter`, committed against the digest it reported (forge build's
/// way before `write_layer_to_store`): the tar is hashed by both.
fn via_blob_writer(store: &Store, tree: &Path, opts: &LayerOptions) -> LayerInfo {
    let mut writer = store.blob_writer().unwrap();
    let info = write_layer(tree, &mut writer, opts).unwrap();
    writer.commit(Some(&info.digest)).unwrap();
    info
}

fn store_ways() -> Vec<(&'static str, Export)> {
    vec![
        (
            "write_layer into blob_writer (tar hashed twice)",
            via_blob_writer,
        ),
        ("write_layer_to_store", |store, tree, opts| {
            write_layer_to_store(tree, store, opts, None).unwrap()
        }),
    ]
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    if std::env::args().skip(1).any(|a| a == "store") {
        store_export(tmp.path());
        return;
    }
    let tree = tmp.path().join("tree");
    let (bytes, files) = generate(&tree);
    println!(
        "tree: {files} files, {:.0} MB of content\n",
        bytes as f64 / 1e6
    );
    println!("| operation | compression | tar MB | blob MB | wall s | CPU s | MB/s (tar, wall) |");
    println!("|---|---|---|---|---|---|---|");
    let cases = [
        ("uncompressed", Compression::Uncompressed, None),
        ("gzip -6", Compression::Gzip, None),
        ("gzip -1", Compression::Gzip, Some(1)),
        ("zstd -3", Compression::Zstd, None),
    ];
    for (label, compression, level) in cases {
        let blob = tmp.path().join(format!("blob-{label}"));
        let opts = LayerOptions {
            compression,
            level,
            source_date_epoch: None,
        };
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let info = write_layer(&tree, BufWriter::new(File::create(&blob).unwrap()), &opts).unwrap();
        let secs = start.elapsed().as_secs_f64();
        let tar_mb = info.uncompressed_size as f64 / 1e6;
        println!(
            "| write_layer | {label} | {tar_mb:.0} | {:.0} | {secs:.2} | {:.2} | {:.0} |",
            info.size as f64 / 1e6,
            cpu_seconds() - cpu,
            tar_mb / secs
        );
        let dest = tmp.path().join(format!("unpacked-{label}"));
        let (start, cpu) = (Instant::now(), cpu_seconds());
        unpack_layer(
            BufReader::new(File::open(&blob).unwrap()),
            &dest,
            &UnpackOptions::default(),
        )
        .unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "| unpack_layer | {label} | {tar_mb:.0} | {:.0} | {secs:.2} | {:.2} | {:.0} |",
            info.size as f64 / 1e6,
            cpu_seconds() - cpu,
            tar_mb / secs
        );
        fs::remove_dir_all(&dest).unwrap();
        fs::remove_file(&blob).unwrap();
    }
    fs::remove_dir_all(&tree).unwrap();
    store_export(tmp.path());
}

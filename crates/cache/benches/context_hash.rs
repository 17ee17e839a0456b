//! Build-context hashing benchmark: a generated context of 20,000 files totalling 280 MB, hashed
//! cold (no memo, page cache dropped when root), without memo on a warm page cache, and with the
//! stat memo (warm, and with dentry/inode caches dropped). Also measures the disk's sequential read
//! rate with dd for comparison. Prints a table.
//!
//!     cargo bench -p forge-cache --bench context_hash
//!
//! FORGE_BENCH_DIR chooses where the context is generated (default: the temp dir).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use forge_cache::{ContextHasher, Store};

const FILES: usize = 20_000;
const TOTAL: u64 = 280_000_000;
const BIG_FILES: usize = 40;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn generate(root: &Path) -> u64 {
    let mut rng = Rng(0x5eed_f0e9_e000_0001);
    let small = FILES - BIG_FILES;
    let sizes: Vec<u64> = (0..small).map(|_| 512 + rng.next() % 19_500).collect();
    let small_total: u64 = sizes.iter().sum();
    let big = (TOTAL - small_total) / BIG_FILES as u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    for (i, size) in sizes
        .iter()
        .chain(std::iter::repeat_n(&big, BIG_FILES))
        .enumerate()
    {
        let dir = root.join(format!("d{:03}/e{:02}", i % 200, (i / 200) % 10));
        if i < 2000 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let mut f = std::fs::File::create(dir.join(format!("f{i:05}.bin"))).unwrap();
        let mut left = *size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill(&mut buf[..n]);
            f.write_all(&buf[..n]).unwrap();
            left -= n as u64;
        }
        total += size;
    }
    total
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Drops the page cache (and dentries and inodes) so the next read comes from the disk.
fn drop_caches() -> bool {
    if !is_root() {
        return false;
    }
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// User + system CPU time of this process so far.
fn cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

thread_local! {
    static LAST_CPU: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// Wall time of `f`; its CPU time is kept for `last_cpu()` (the machine may be shared, so wall
/// time alone can mislead).
fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let c = cpu();
    let t = Instant::now();
    let v = f();
    let wall = t.elapsed();
    LAST_CPU.with(|l| l.set(cpu() - c));
    (wall, v)
}

fn last_cpu() -> Duration {
    LAST_CPU.with(|l| l.get())
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let base = std::env::var_os("FORGE_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir);
    let work = tempfile::tempdir_in(&base).unwrap();
    let ctx = work.path().join("context");
    let store_root = work.path().join("store");
    std::fs::create_dir_all(&ctx).unwrap();
    eprintln!(
        "generating {FILES} files, {TOTAL} bytes in {}",
        ctx.display()
    );
    let bytes = generate(&ctx);
    // dd's file: 512 MB, outside the context.
    let dd_file = work.path().join("dd.bin");
    {
        let mut f = std::fs::File::create(&dd_file).unwrap();
        let mut rng = Rng(7);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..512 {
            rng.fill(&mut buf);
            f.write_all(&buf).unwrap();
        }
        f.sync_all().unwrap();
    }
    // The memo only trusts entries that have not changed for a second.
    std::thread::sleep(Duration::from_millis(1200));
    let dropped = drop_caches();
    let cold_note = if dropped {
        "page cache dropped"
    } else {
        "NOT dropped (not root): warm"
    };

    let dd = if dropped || !is_root() {
        drop_caches();
        let out = Command::new("dd")
            .arg(format!("if={}", dd_file.display()))
            .args(["of=/dev/null", "bs=1M"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
            .to_owned()
    } else {
        String::new()
    };

    // Reading every file of the context once, cold, with plain tools: the floor for a cold hash
    // of many small files (dd measures large sequential reads, which a context is not).
    let cat_cold = if dropped {
        drop_caches();
        let t = Instant::now();
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "find '{}' -type f -print0 | xargs -0 cat > /dev/null",
                ctx.display()
            ))
            .status()
            .unwrap()
            .success();
        assert!(ok, "find | xargs cat failed");
        Some(t.elapsed())
    } else {
        None
    };

    drop_caches();
    let (cold, tree) = time(|| ContextHasher::new(&ctx).hash().unwrap());
    let cold_cpu = last_cpu();
    assert_eq!(tree.stats().bytes_read, bytes);
    let digest = tree.root_digest();

    let mut nomemo_cpu = Vec::new();
    let nomemo_warm = median(
        (0..3)
            .map(|_| {
                let d = time(|| ContextHasher::new(&ctx).hash().unwrap()).0;
                nomemo_cpu.push(last_cpu());
                d
            })
            .collect(),
    );
    let nomemo_cpu = median(nomemo_cpu);

    let store = Store::open(&store_root).unwrap();
    drop_caches();
    let (memo_build, t) = time(|| ContextHasher::new(&ctx).memo(&store).hash().unwrap());
    let memo_build_cpu = last_cpu();
    assert_eq!(t.root_digest(), digest);

    let mut warm = Vec::new();
    let mut warm_cpu = Vec::new();
    for _ in 0..7 {
        let (d, t) = time(|| ContextHasher::new(&ctx).memo(&store).hash().unwrap());
        assert_eq!(t.stats().files_read, 0, "the warm run must read no file");
        assert_eq!(t.root_digest(), digest);
        warm.push(d);
        warm_cpu.push(last_cpu());
    }
    let warm = median(warm);
    let warm_cpu = median(warm_cpu);

    drop_caches();
    let (memo_cold_meta, t) = time(|| ContextHasher::new(&ctx).memo(&store).hash().unwrap());
    let memo_cold_cpu = last_cpu();
    assert_eq!(t.stats().files_read, 0);

    let mb = bytes as f64 / 1e6;
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let rate = |d: Duration| format!("{:.0} MB/s", mb / d.as_secs_f64());
    println!();
    println!(
        "context: {FILES} files, {mb:.0} MB, {} cores, load average {} at the end",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        load()
    );
    println!(
        "{:<58} {:>10} {:>11} {:>12}",
        "run", "wall", "cpu", "throughput"
    );
    let row = |name: String, wall: Duration, cpu: Duration, tp: String| {
        println!("{name:<58} {:>10} {:>11} {tp:>12}", ms(wall), ms(cpu));
    };
    row(
        format!("cold, no memo ({cold_note})"),
        cold,
        cold_cpu,
        rate(cold),
    );
    row(
        "no memo, warm page cache (median of 3)".into(),
        nomemo_warm,
        nomemo_cpu,
        rate(nomemo_warm),
    );
    row(
        format!("first run with memo, building it ({cold_note})"),
        memo_build,
        memo_build_cpu,
        rate(memo_build),
    );
    row(
        "warm: memo present, caches warm (median of 7)".into(),
        warm,
        warm_cpu,
        "-".into(),
    );
    row(
        format!("memo present, {cold_note}"),
        memo_cold_meta,
        memo_cold_cpu,
        "-".into(),
    );
    if let Some(c) = cat_cold {
        println!(
            "{:<58} {:>10} {:>11} {:>12}",
            "every file read once, cold: find | xargs cat",
            ms(c),
            "-",
            rate(c)
        );
    }
    println!(
        "{:<58} {:>23}",
        "disk sequential read, dd bs=1M of 512 MB (cold)", dd
    );
}

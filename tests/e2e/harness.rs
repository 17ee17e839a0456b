//! The e2e harness: every test gets a fresh store (`FORGE_ROOT`) that already holds
//! `busybox:latest`, an empty build context, and helpers that run the real `forge` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The `forge` binary under test.
pub(crate) fn forge_exe() -> &'static str {
    env!("CARGO_BIN_EXE_forge")
}

/// Defines an e2e test with a fresh [`TestEnv`].
#[macro_export]
macro_rules! forgetest {
    ($name:ident, |$t:ident| $body:block) => {
        #[test]
        fn $name() {
            let $t = $crate::harness::TestEnv::new(stringify!($name));
            let $t = &$t;
            $body
        }
    };
}

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned));
    if euid.as_deref() != Some("0") {
        panic!(
            "the e2e tests need root (forge build and run use mount namespaces and overlayfs); \
             run them as root, as CI does"
        );
    }
}

/// A store that holds `busybox:latest`, made once per test process with the real `forge import`
/// (the rootfs comes from scripts/busybox-rootfs: static busybox, its applet symlinks,
/// /etc/passwd with root and app (uid 1000), /etc/group, /tmp 1777). Each test copies it, which
/// is much cheaper than importing (import re-compresses the layer).
fn base_store() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("e2e-base-{}", std::process::id()));
        remove_stale_bases(dir.parent().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tarball = dir.join("busybox.tar.gz");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/busybox-rootfs");
        let out = Command::new(&script).arg(&tarball).output().unwrap();
        assert!(
            out.status.success(),
            "scripts/busybox-rootfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root = dir.join("store");
        let out = Command::new(forge_exe())
            .env("FORGE_ROOT", &root)
            .args(["import"])
            .arg(&tarball)
            .arg("busybox:latest")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "forge import of the busybox rootfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        root
    })
}

/// Base stores of earlier test processes that are gone.
fn remove_stale_bases(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("e2e-base-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// The busybox rootfs tarball the base store was imported from.
pub(crate) fn busybox_tarball() -> PathBuf {
    base_store().parent().unwrap().join("busybox.tar.gz")
}

/// One test's store and build context.
pub(crate) struct TestEnv {
    pub(crate) name: &'static str,
    root: tempfile::TempDir,
    ctx: tempfile::TempDir,
    scratch: tempfile::TempDir,
}

/// What a finished `forge` process left.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) status: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    pub(crate) fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// A successful build: its plain progress (stderr) and image id.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) id: String,
    pub(crate) log: String,
}

impl Built {
    /// The plain-progress step lines (`#N [stage i/n] INSTR`) with their verdicts.
    pub(crate) fn steps(&self) -> Vec<Step> {
        parse_steps(&self.log)
    }

    /// The step whose name contains `needle` (panics with the log if none or several).
    pub(crate) fn step(&self, needle: &str) -> Step {
        let found: Vec<Step> = self
            .steps()
            .into_iter()
            .filter(|s| s.name.contains(needle))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one step matching {needle:?} in:\n{}",
            self.log
        );
        found.into_iter().next().unwrap()
    }
}

/// One step of a plain-progress log.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) number: usize,
    pub(crate) name: String,
    pub(crate) cached: bool,
    pub(crate) done: bool,
    pub(crate) miss: Option<String>,
    /// `[start -> end]` in seconds since the build began.
    pub(crate) window: Option<(f64, f64)>,
}

/// Reads `#N name`, `#N CACHED`, `#N cache miss: ...`, `#N DONE 0.1s [a -> b]` lines.
pub(crate) fn parse_steps(log: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((num, text)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(number) = num.parse::<usize>() else {
            continue;
        };
        let idx = steps.iter().position(|s| s.number == number);
        match idx {
            None => steps.push(Step {
                number,
                name: text.to_owned(),
                cached: false,
                done: false,
                miss: None,
                window: None,
            }),
            Some(i) => {
                let s = &mut steps[i];
                if text == "CACHED" {
                    s.cached = true;
                } else if let Some(reason) = text.strip_prefix("cache miss: ") {
                    s.miss = Some(reason.to_owned());
                } else if let Some(done) = text.strip_prefix("DONE ") {
                    s.done = true;
                    if let Some((_, w)) = done.split_once('[') {
                        let w = w.trim_end_matches(']');
                        if let Some((a, b)) = w.split_once(" -> ") {
                            let a = a.trim_end_matches('s').parse().ok();
                            let b = b.trim_end_matches('s').parse().ok();
                            if let (Some(a), Some(b)) = (a, b) {
                                s.window = Some((a, b));
                            }
                        }
                    }
                }
            }
        }
    }
    steps
}

impl TestEnv {
    pub(crate) fn new(name: &'static str) -> TestEnv {
        require_root();
        let base = base_store();
        let root = tempfile::Builder::new()
            .prefix("forge-e2e-root-")
            .tempdir()
            .unwrap();
        let out = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", base.display()))
            .arg(root.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "copying the base store: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ctx = tempfile::Builder::new()
            .prefix("forge-e2e-ctx-")
            .tempdir()
            .unwrap();
        let scratch = tempfile::Builder::new()
            .prefix("forge-e2e-tmp-")
            .tempdir()
            .unwrap();
        TestEnv {
            name,
            root,
            ctx,
            scratch,
        }
    }

    /// The store root.
    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }

    /// The build context directory.
    pub(crate) fn ctx(&self) -> &Path {
        self.ctx.path()
    }

    /// A directory outside the context for files the test needs (secrets, iidfiles).
    pub(crate) fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// Writes `content` at `rel` in the context, creating parents.
    pub(crate) fn write(&self, rel: &str, content: &str) -> PathBuf {
        self.write_bytes(rel, content.as_bytes())
    }

    pub(crate) fn write_bytes(&self, rel: &str, content: &[u8]) -> PathBuf {
        let path = self.ctx().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Writes the context's Dockerfile.
    pub(crate) fn dockerfile(&self, text: &str) {
        self.write("Dockerfile", text);
    }

    /// Runs `forge ARGS` with this test's store, in the context directory.
    pub(crate) fn forge(&self, args: &[&str]) -> Run {
        self.forge_stdin(args, None)
    }

    pub(crate) fn forge_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        use std::io::Write;
        let mut cmd = Command::new(forge_exe());
        cmd.env("FORGE_ROOT", self.root())
            .env_remove("SOURCE_DATE_EPOCH")
            .current_dir(self.ctx())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().expect("spawning forge");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        Run::from(child.wait_with_output().unwrap())
    }

    /// `forge build --progress plain ARGS CONTEXT`, whatever the outcome.
    pub(crate) fn build(&self, args: &[&str]) -> Run {
        let mut all = vec!["build", "--progress", "plain"];
        all.extend_from_slice(args);
        let ctx = self.ctx().display().to_string();
        all.push(&ctx);
        self.forge(&all)
    }

    /// A build that must succeed; returns its image id (from --iidfile) and plain log.
    pub(crate) fn build_ok(&self, args: &[&str]) -> Built {
        let iid = self.scratch().join("iid");
        let _ = std::fs::remove_file(&iid);
        let iid_s = iid.display().to_string();
        let mut all = vec!["--iidfile", iid_s.as_str()];
        all.extend_from_slice(args);
        let run = self.build(&all);
        assert!(
            run.success(),
            "[{}] forge build {args:?} failed ({:?}):\n{}",
            self.name,
            run.status,
            run.stderr
        );
        let id = std::fs::read_to_string(&iid).expect("the iidfile");
        assert!(id.starts_with("sha256:"), "image id {id:?}");
        Built {
            id,
            log: run.stderr,
        }
    }

    /// A build that must fail; returns its outcome.
    pub(crate) fn build_err(&self, args: &[&str]) -> Run {
        let run = self.build(args);
        assert!(
            !run.success(),
            "[{}] forge build {args:?} should have failed:\n{}",
            self.name,
            run.stderr
        );
        run
    }

    /// `forge run --rm IMAGE ARGS...`, whatever the outcome.
    pub(crate) fn run(&self, image: &str, args: &[&str]) -> Run {
        let mut all = vec!["run", "--rm", image];
        all.extend_from_slice(args);
        self.forge(&all)
    }

    /// `forge run --rm IMAGE ARGS...` that must exit 0; its stdout.
    pub(crate) fn run_ok(&self, image: &str, args: &[&str]) -> String {
        let run = self.run(image, args);
        assert!(
            run.success(),
            "[{}] forge run {image} {args:?} exited {:?}:\n{}\n{}",
            self.name,
            run.status,
            run.stdout,
            run.stderr
        );
        run.stdout
    }

    /// `sh -c SCRIPT` in IMAGE; its stdout.
    pub(crate) fn sh(&self, image: &str, script: &str) -> String {
        self.run_ok(image, &["sh", "-c", script])
    }

    /// `forge inspect IMAGE` as JSON.
    pub(crate) fn inspect(&self, image: &str) -> serde_json::Value {
        let run = self.forge(&["inspect", image]);
        assert!(run.success(), "forge inspect {image}: {}", run.stderr);
        serde_json::from_str(&run.stdout).expect("forge inspect prints JSON")
    }

    /// The image's config (`Config.config`: Env, Cmd, User, WorkingDir...).
    pub(crate) fn config(&self, image: &str) -> serde_json::Value {
        self.inspect(image)["Config"]["config"].clone()
    }

    /// Every layer of IMAGE, decompressed, from the store's OCI blobs.
    pub(crate) fn layer_tars(&self, image: &str) -> Vec<Vec<u8>> {
        let manifest = self.inspect(image)["Manifest"].clone();
        let layers = manifest["layers"]
            .as_array()
            .expect("manifest layers")
            .clone();
        assert!(!layers.is_empty(), "no layers in {manifest}");
        layers
            .iter()
            .map(|l| {
                let digest = l["digest"].as_str().unwrap();
                let hex = digest.strip_prefix("sha256:").unwrap();
                let blob = self.root().join("v1/oci/blobs/sha256").join(hex);
                let bytes =
                    std::fs::read(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
                let media = l["mediaType"].as_str().unwrap_or_default();
                if media.ends_with("gzip") {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(&bytes[..]),
                        &mut out,
                    )
                    .unwrap();
                    out
                } else {
                    assert!(media.ends_with(".tar"), "layer media type {media}");
                    bytes
                }
            })
            .collect()
    }
}

/// Whether `needle` occurs in `hay`.
pub(crate) fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

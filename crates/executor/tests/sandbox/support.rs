//! Test support: a busybox rootfs built once from /bin/busybox, fresh upperdirs per step, and
//! a runner that collects the step's output.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use forge_executor::{run, ExecError, RunOutcome, Runtime, SandboxConfig, SandboxSpec, Stream};

/// The shared read-only busybox layer, built once per target directory (statics are never
/// dropped, so a temporary directory here would leak on every run).
pub(crate) fn busybox_layer() -> &'static Path {
    static LAYER: OnceLock<PathBuf> = OnceLock::new();
    LAYER.get_or_init(|| {
        require_root();
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let layer = base.join("busybox-layer-v1");
        if !layer.exists() {
            // Built aside and renamed, so concurrent test binaries never see half a layer.
            let staging = tempfile::Builder::new()
                .prefix("busybox-staging-")
                .tempdir_in(base)
                .unwrap();
            build_busybox_rootfs(staging.path());
            let staged = staging.keep();
            if std::fs::rename(&staged, &layer).is_err() {
                // Another test binary won the race; its layer is as good as ours.
                std::fs::remove_dir_all(&staged).unwrap();
            }
        }
        layer
    })
}

/// Fails (never skips) when the tests cannot do their job.
pub(crate) fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap();
    assert_eq!(
        uid, "0",
        "the sandbox tests need root: they mount overlays and create namespaces"
    );
    assert!(
        Path::new("/bin/busybox").exists(),
        "the sandbox tests need /bin/busybox (busybox-static; scripts/install-deps installs it)"
    );
}

pub(crate) fn build_busybox_rootfs(root: &Path) {
    for d in ["bin", "etc", "root", "tmp", "home/app", "var", "usr/bin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000)).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" && !applet.contains('/') {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
    )
    .unwrap();
}

/// One test's scratch space: upperdirs, state, caches.
pub(crate) struct Scratch {
    pub(crate) dir: tempfile::TempDir,
    count: std::cell::Cell<usize>,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        require_root();
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("forge-sandbox-test-")
                .tempdir()
                .unwrap(),
            count: std::cell::Cell::new(0),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn config(&self, runtime: Runtime) -> SandboxConfig {
        SandboxConfig {
            // FORGE_TEST_SANDBOX_HELPER=path/to/forge checks the real binary's re-exec hook.
            helper_exe: std::env::var_os("FORGE_TEST_SANDBOX_HELPER")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_forge-sandbox-init"))),
            state_dir: self.path().join("state"),
            runtime,
            cancel: None,
        }
    }

    /// A `sh -c script` step over the busybox layer with a fresh upperdir.
    pub(crate) fn spec(&self, script: &str) -> SandboxSpec {
        let n = self.count.get();
        self.count.set(n + 1);
        let snap = self.path().join(format!("snap-{n}"));
        std::fs::create_dir_all(snap.join("fs")).unwrap();
        std::fs::create_dir_all(snap.join("work")).unwrap();
        SandboxSpec::new(
            vec![busybox_layer().to_path_buf()],
            snap.join("fs"),
            snap.join("work"),
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        )
    }
}

/// What a step printed, and how it ended.
pub(crate) struct Ran {
    pub(crate) result: Result<RunOutcome, ExecError>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Ran {
    /// The stdout of a step that must have succeeded.
    pub(crate) fn ok(self) -> String {
        match self.result {
            Ok(_) => self.stdout,
            Err(e) => panic!(
                "step failed: {e}\nstdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            ),
        }
    }
}

pub(crate) fn run_step(config: &SandboxConfig, spec: &SandboxSpec) -> Ran {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = run(config, spec, &mut |stream, bytes| match stream {
        Stream::Stdout => out.extend_from_slice(bytes),
        Stream::Stderr => err.extend_from_slice(bytes),
    });
    Ran {
        result,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

pub(crate) fn native() -> Runtime {
    Runtime::Native
}

pub(crate) fn runc() -> Runtime {
    Runtime::Runc {
        binary: PathBuf::from("/usr/bin/runc"),
    }
}

/// Every path under `root`, sorted, with its type, mode, owner and content (or link target).
pub(crate) fn tree(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let what = if meta.is_dir() {
                stack.push(path.clone());
                match xattr::get(&path, "trusted.overlay.opaque").unwrap() {
                    Some(v) if v == b"y" => "dir opaque".to_owned(),
                    _ => "dir".to_owned(),
                }
            } else if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_file() {
                format!(
                    "{:?}",
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap())
                )
            } else {
                format!("special rdev={:#x}", meta.rdev())
            };
            out.push(format!(
                "{rel} {:o} {}:{} {what}",
                meta.mode(),
                meta.uid(),
                meta.gid()
            ));
        }
    }
    out.sort();
    out
}

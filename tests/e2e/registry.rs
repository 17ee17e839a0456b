//! `forge push` and `forge pull` against a real registry: Debian's `docker-registry` (the
//! reference implementation of the distribution spec) on a free loopback port.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::forgetest;
use crate::harness::forge_exe;

struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry() -> Registry {
    let binary = PathBuf::from("/usr/bin/docker-registry");
    assert!(
        binary.exists(),
        "these tests need Debian's docker-registry (scripts/install-deps installs it)"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "docker-registry did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry {
        child,
        port,
        _dir: dir,
    }
}

/// `forge` with another store.
fn forge_in(root: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(forge_exe())
        .env("FORGE_ROOT", root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

forgetest!(
    pushed_image_pulls_into_a_fresh_store_and_runs_the_same,
    |t| {
        let registry = start_registry();
        t.dockerfile("FROM busybox\nRUN echo built-by-forge > /out\nCMD [\"cat\", \"/out\"]\n");
        t.build_ok(&["-t", "app:1"]);
        let local_output = t.run_ok("app:1", &[]);
        assert_eq!(local_output.trim(), "built-by-forge");

        let dest = format!("127.0.0.1:{}/team/app:1", registry.port);
        let push = t.forge(&["push", "app:1", &dest]);
        assert!(push.success(), "push failed: {}", push.stderr);
        let digest = push.stdout.trim().to_owned();
        assert!(
            digest.starts_with("sha256:"),
            "push prints the manifest digest: {digest:?}"
        );

        // An independent client reads what forge pushed.
        let skopeo = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", &format!("docker://{dest}")])
            .output()
            .unwrap();
        let inspected = ok(&skopeo, "skopeo inspect");
        assert!(
            inspected.contains(&digest),
            "skopeo sees {digest}: {inspected}"
        );

        // A second push finds every blob there: nothing is compressed or uploaded again.
        let again = t.forge(&["push", "app:1", &dest]);
        assert!(again.success(), "second push failed: {}", again.stderr);
        assert_eq!(
            again.stdout.trim(),
            digest,
            "the same layers give the same manifest"
        );
        assert!(!again.stderr.contains("uploaded"), "{}", again.stderr);

        // A fresh store pulls it and runs it with the same output.
        let fresh = tempfile::tempdir().unwrap();
        ok(&forge_in(fresh.path(), &["pull", &dest]), "forge pull");
        let ran = ok(
            &forge_in(fresh.path(), &["run", "--rm", &dest]),
            "forge run",
        );
        assert_eq!(ran.trim(), "built-by-forge");

        // Pushing to another repository of the same registry mounts the blobs the fresh store
        // knows are there, instead of uploading them.
        let other = format!("127.0.0.1:{}/team/copy:1", registry.port);
        let mounted = forge_in(fresh.path(), &["push", &dest, &other]);
        ok(&mounted, "push to another repository");
        let stderr = String::from_utf8_lossy(&mounted.stderr);
        assert!(stderr.contains("mounted from team/app"), "{stderr}");
    }
);

forgetest!(from_pulls_a_missing_base_image, |t| {
    let registry = start_registry();
    let base = format!("127.0.0.1:{}/library/busybox:latest", registry.port);
    let push = t.forge(&["push", "busybox:latest", &base]);
    assert!(push.success(), "push failed: {}", push.stderr);

    let fresh = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {base}\nRUN echo pulled-base > /x\nCMD [\"cat\", \"/x\"]\n"),
    )
    .unwrap();
    let ctx_arg = ctx.path().display().to_string();
    let built = forge_in(
        fresh.path(),
        &["build", "--progress", "plain", "-t", "x:1", &ctx_arg],
    );
    ok(&built, "build FROM a registry image");
    let ran = ok(
        &forge_in(fresh.path(), &["run", "--rm", "x:1"]),
        "forge run",
    );
    assert_eq!(ran.trim(), "pulled-base");
});

forgetest!(push_to_an_unreachable_registry_names_it, |t| {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dest = format!("127.0.0.1:{port}/team/app:1");
    let push = t.forge(&["push", "busybox:latest", &dest]);
    assert!(!push.success());
    assert!(
        push.stderr.contains(&format!("127.0.0.1:{port}")),
        "the error names the registry: {}",
        push.stderr
    );
});

//! RUN --mount types with their options, and what they leave in the layer (nothing).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use forge_executor::MountSpec;

use crate::support::*;

fn bind(root: &Path, target: &str, readwrite: bool) -> MountSpec {
    MountSpec::Bind {
        source_root: root.to_path_buf(),
        source: "/".into(),
        target: target.into(),
        readwrite,
    }
}

fn cache(dir: PathBuf, lock: Option<PathBuf>) -> MountSpec {
    MountSpec::Cache {
        host_dir: dir,
        target: "/cache".into(),
        readonly: false,
        mode: 0o750,
        uid: 1000,
        gid: 50,
        lock_file: lock,
    }
}

#[test]
fn bind_is_read_only_by_default() {
    let s = Scratch::new();
    let src = s.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "from host").unwrap();
    let mut spec = s.spec("cat /src/f; echo; (echo x > /src/g) 2>/dev/null || echo read-only");
    spec.mounts.push(bind(&src, "/src", false));
    let out = run_step(&s.config(native()), &spec).ok();
    assert_eq!(out, "from host\nread-only\n");
    assert!(
        tree(&spec.upperdir).is_empty(),
        "{:?}",
        tree(&spec.upperdir)
    );
}

#[test]
fn rw_bind_writes_are_discarded() {
    let s = Scratch::new();
    let src = s.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "orig").unwrap();
    std::fs::write(s.path().join("single"), "one\n").unwrap();
    let mut spec =
        s.spec("echo changed > /src/f; echo new > /src/g; cat /src/f; echo more >> /one; cat /one");
    spec.mounts.push(bind(&src, "/src", true));
    spec.mounts.push(MountSpec::Bind {
        source_root: s.path().to_path_buf(),
        source: "single".into(),
        target: "/one".into(),
        readwrite: true,
    });
    let out = run_step(&s.config(native()), &spec).ok();
    assert_eq!(out, "changed\none\nmore\n");
    assert_eq!(std::fs::read_to_string(src.join("f")).unwrap(), "orig");
    assert!(!src.join("g").exists());
    assert_eq!(
        std::fs::read_to_string(s.path().join("single")).unwrap(),
        "one\n"
    );
    assert!(
        tree(&spec.upperdir).is_empty(),
        "{:?}",
        tree(&spec.upperdir)
    );
}

#[test]
fn cache_is_created_with_its_mode_and_owner_and_persists() {
    let s = Scratch::new();
    let dir = s.path().join("caches/c1");
    let mut first = s.spec("echo 1 >> /cache/runs; stat -c '%a %u %g' /cache");
    first.mounts.push(cache(dir.clone(), None));
    assert_eq!(run_step(&s.config(native()), &first).ok(), "750 1000 50\n");
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(
        (meta.permissions().mode() & 0o7777, meta.uid(), meta.gid()),
        (0o750, 1000, 50)
    );
    let mut second = s.spec("echo 2 >> /cache/runs; cat /cache/runs");
    second.mounts.push(cache(dir, None));
    assert_eq!(run_step(&s.config(native()), &second).ok(), "1\n2\n");
    assert!(
        tree(&second.upperdir).is_empty(),
        "{:?}",
        tree(&second.upperdir)
    );
}

#[test]
fn shared_cache_is_used_by_concurrent_steps_at_once() {
    let s = Scratch::new();
    let dir = s.path().join("shared");
    // Each step waits (up to 20 s) for the other's marker: only possible if both run at once.
    let script = |me: &str, other: &str| {
        format!(
            "touch /cache/{me}; i=0; while [ ! -e /cache/{other} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; \
             test -e /cache/{other} && echo met"
        )
    };
    let config = s.config(native());
    let mut a = s.spec(&script("a", "b"));
    a.mounts.push(cache(dir.clone(), None));
    let mut b = s.spec(&script("b", "a"));
    b.mounts.push(cache(dir, None));
    let (ra, rb) = std::thread::scope(|scope| {
        let ta = scope.spawn(|| run_step(&config, &a).ok());
        let tb = scope.spawn(|| run_step(&config, &b).ok());
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!((ra.as_str(), rb.as_str()), ("met\n", "met\n"));
}

#[test]
fn locked_cache_admits_one_step_at_a_time() {
    let s = Scratch::new();
    let dir = s.path().join("locked");
    let lock = s.path().join("locked.lock");
    // mkdir is atomic: it fails when another step holds the "critical section" at the same time.
    let script = "for i in 1 2 3; do mkdir /cache/busy || exit 9; sleep 0.1; rmdir /cache/busy; done; echo clean";
    let config = s.config(native());
    let specs: Vec<_> = (0..3)
        .map(|_| {
            let mut spec = s.spec(script);
            spec.mounts.push(cache(dir.clone(), Some(lock.clone())));
            spec
        })
        .collect();
    let outs: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = specs
            .iter()
            .map(|spec| scope.spawn(|| run_step(&config, spec).ok()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outs, ["clean\n", "clean\n", "clean\n"]);
}

#[test]
fn tmpfs_has_its_size_and_leaves_nothing() {
    let s = Scratch::new();
    let mut spec = s.spec(
        "grep ' /scratch ' /proc/mounts | cut -d' ' -f3; \
         dd if=/dev/zero of=/scratch/big bs=1024 count=2048 2>/dev/null || echo full",
    );
    spec.mounts.push(MountSpec::Tmpfs {
        target: "/scratch".into(),
        size_bytes: Some(1 << 20),
    });
    let out = run_step(&s.config(native()), &spec).ok();
    assert_eq!(out, "tmpfs\nfull\n");
    assert!(
        tree(&spec.upperdir).is_empty(),
        "{:?}",
        tree(&spec.upperdir)
    );
}

fn secret(id: &str, target: Option<&str>, env: Option<&str>) -> MountSpec {
    MountSpec::Secret {
        id: id.into(),
        content: b"s3cr3t".to_vec(),
        target: target.map(Into::into),
        env: env.map(Into::into),
        mode: 0o400,
        uid: 0,
        gid: 0,
    }
}

#[test]
fn secrets_are_readable_and_never_in_the_layer() {
    let s = Scratch::new();
    let mut spec = s.spec(
        "cat /run/secrets/token; echo; stat -c %a /run/secrets/token; cat /etc/app/key; echo; echo $API_KEY; \
         cp /run/secrets/token /tmp/copied-on-purpose",
    );
    spec.mounts.push(secret("token", None, None));
    spec.mounts.push(secret("key", Some("/etc/app/key"), None));
    spec.mounts.push(secret("api", None, Some("API_KEY")));
    let out = run_step(&s.config(native()), &spec).ok();
    assert_eq!(out, "s3cr3t\n400\ns3cr3t\ns3cr3t\n");
    let t = tree(&spec.upperdir);
    let names: Vec<&str> = t.iter().map(|l| l.split(' ').next().unwrap()).collect();
    // Only what the step itself copied; no run/, no etc/app.
    assert_eq!(names, ["tmp", "tmp/copied-on-purpose"], "{t:#?}");
}

#[test]
fn ssh_agent_socket_is_forwarded() {
    let s = Scratch::new();
    let sock = s.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut spec = s.spec("echo $SSH_AUTH_SOCK; test -S $SSH_AUTH_SOCK && echo socket");
    spec.mounts.push(MountSpec::Ssh {
        socket: sock,
        target: None,
    });
    let out = run_step(&s.config(native()), &spec).ok();
    assert_eq!(out, "/run/buildkit/ssh_agent.0\nsocket\n");
    assert!(
        tree(&spec.upperdir).is_empty(),
        "{:?}",
        tree(&spec.upperdir)
    );
}

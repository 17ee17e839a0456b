//! Integration tests against the real `docker-registry` (Debian's distribution 2.8): plain
//! HTTP, TLS with a test CA, htpasswd, bearer tokens from a token server, cross-repository
//! mounts, chunked uploads, cut-off and corrupted transfers, mirrors, login and logout.

mod common;

use common::{
    client, make_image, pseudo_random, push_image, sha256, try_push, Auth, Fault, Proxy, Registry,
    TestCa, TokenServer,
};
use forge_registry::{
    BlobPush, BlobSink, ClientConfig, Credentials, DockerConfig, OciDir, Platform, PushOptions,
    Reference, RegistryClient, RegistryError,
};

fn reference(host: &str, repo_tag: &str) -> Reference {
    Reference::parse(&format!("{host}/{repo_tag}")).unwrap()
}

fn amd64() -> Platform {
    Platform::new("linux", "amd64", None)
}

/// Every blob of the pulled image is byte-identical to the pushed one.
fn assert_same_blobs(src: &OciDir, dst: &OciDir, digests: &[String]) {
    for d in digests {
        assert_eq!(
            dst.read_blob(d).unwrap(),
            src.read_blob(d).unwrap(),
            "blob {d} differs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_over_plain_http_is_byte_identical_and_skopeo_reads_it() {
    let registry = Registry::start(Auth::None, None);
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let image = make_image(
        &src,
        &[pseudo_random(3 << 20, 1), pseudo_random(1 << 20, 2)],
    );
    let c = client(tmp.path(), None);
    let target = reference(&registry.host, "team/app:1.0");

    let report = try_push(&c, &src, &image, &target).await.unwrap();
    assert_eq!(report.manifest_digest, image.manifest_digest);
    assert_eq!(report.blobs.len(), 3);
    assert!(
        report
            .blobs
            .iter()
            .all(|(_, b)| *b == BlobPush::Uploaded { chunks: 0 }),
        "{report:?}"
    );

    let dst = OciDir::create(tmp.path().join("dst")).unwrap();
    let pulled = c.pull(&target, &amd64(), &dst).await.unwrap();
    assert_eq!(pulled.resolved.digest, image.manifest_digest);
    assert_eq!(pulled.config_digest(), image.config_digest);
    assert_eq!(pulled.fetched.len(), 3);
    let mut all = image.layer_digests.clone();
    all.push(image.config_digest.clone());
    all.push(image.manifest_digest.clone());
    assert_same_blobs(&src, &dst, &all);

    // A second push finds everything there; a second pull reuses every blob.
    let again = try_push(&c, &src, &image, &target).await.unwrap();
    assert!(
        again.blobs.iter().all(|(_, b)| *b == BlobPush::Existed),
        "{again:?}"
    );
    let pulled = c.pull(&target, &amd64(), &dst).await.unwrap();
    assert!(pulled.fetched.is_empty());
    assert_eq!(pulled.reused.len(), 3);

    let out = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/team/app:1.0", registry.host),
        ])
        .output()
        .expect("skopeo is installed by scripts/install-deps");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Digest"], image.manifest_digest);
    assert_eq!(info["Layers"], serde_json::json!(image.layer_digests));
    assert_eq!(info["Architecture"], "amd64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_test_ca() {
    let ca = TestCa::new();
    let registry = Registry::start(Auth::None, Some(&ca));
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let image = make_image(&src, &[pseudo_random(100_000, 3), pseudo_random(50_000, 4)]);
    let target = reference(&registry.host, "tls/app:1");

    // Without the CA the certificate is refused, and the error says so rather than falling
    // back to plain HTTP silently.
    let untrusting = client(tmp.path(), None);
    let err = try_push(&untrusting, &src, &image, &target)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Connect { .. }), "{err}");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("https://{}/v2/", registry.host)),
        "{err}"
    );

    let c = client(tmp.path(), Some(&ca.ca_pem));
    try_push(&c, &src, &image, &target).await.unwrap();
    let dst = OciDir::create(tmp.path().join("dst")).unwrap();
    let pulled = c.pull(&target, &amd64(), &dst).await.unwrap();
    assert_eq!(pulled.resolved.digest, image.manifest_digest);
    assert_same_blobs(&src, &dst, &image.layer_digests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_basic_auth_and_the_401_message() {
    let registry = Registry::start(
        Auth::Htpasswd {
            user: "alice",
            password: "s3cret",
        },
        None,
    );
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let image = make_image(&src, &[pseudo_random(10_000, 5), pseudo_random(20_000, 6)]);
    let target = reference(&registry.host, "team/app:1");

    let anonymous = client(&tmp.path().join("empty-docker-config"), None);
    let err = anonymous.pull(&target, &amd64(), &src).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "pull manifest {}/team/app:1: 401 unauthorized: authentication required",
            registry.host
        )
    );

    let cfg_dir = tmp.path().join("docker");
    let mut cfg = DockerConfig::load(&cfg_dir).unwrap();
    cfg.store(
        &registry.host,
        &Credentials::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        },
    )
    .unwrap();
    let c = client(&cfg_dir, None);
    try_push(&c, &src, &image, &target).await.unwrap();
    let dst = OciDir::create(tmp.path().join("dst")).unwrap();
    c.pull(&target, &amd64(), &dst).await.unwrap();
    assert_same_blobs(&src, &dst, &image.layer_digests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_with_scopes_and_a_mount_across_repositories() {
    let tokens = TokenServer::start(Some(("bob", "hunter2")));
    let registry = Registry::start(Auth::Token(&tokens), None);
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let image = make_image(
        &src,
        &[pseudo_random(200_000, 7), pseudo_random(300_000, 8)],
    );

    // Wrong password: the token server refuses, and the error names the action.
    let cfg_dir = tmp.path().join("docker");
    let mut cfg = DockerConfig::load(&cfg_dir).unwrap();
    cfg.store(
        &registry.host,
        &Credentials::Basic {
            username: "bob".into(),
            password: "wrong".into(),
        },
    )
    .unwrap();
    let err = client(&cfg_dir, None)
        .push(
            &src,
            &image.manifest_digest,
            &reference(&registry.host, "base/img:1"),
            &PushOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("token server"), "{err}");

    cfg.store(
        &registry.host,
        &Credentials::Basic {
            username: "bob".into(),
            password: "hunter2".into(),
        },
    )
    .unwrap();
    let c = client(&cfg_dir, None);
    let base = reference(&registry.host, "base/img:1");
    try_push(&c, &src, &image, &base).await.unwrap();

    let app = reference(&registry.host, "team/app:2");
    let options = PushOptions {
        mount_from: vec!["base/img".to_string()],
    };
    let report = c
        .push(&src, &image.manifest_digest, &app, &options)
        .await
        .unwrap();
    assert_eq!(report.mounted(), 3, "{report:?}");
    assert!(report.blobs.iter().all(|(_, b)| *b
        == BlobPush::Mounted {
            from: "base/img".into()
        }));
    let seen = tokens.scopes_seen.lock().unwrap().clone();
    assert!(
        seen.contains(&"repository:team/app:pull,push".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"repository:base/img:pull".to_string()),
        "{seen:?}"
    );
    // One token per push, not one per concurrent blob request.
    let base_push = seen
        .iter()
        .filter(|s| *s == "repository:base/img:pull,push")
        .count();
    assert_eq!(base_push, 1, "{seen:?}");

    // The mounted image pulls back whole with a pull-only token.
    let dst = OciDir::create(tmp.path().join("dst")).unwrap();
    let pulled = c.pull(&app, &amd64(), &dst).await.unwrap();
    assert_eq!(pulled.resolved.digest, image.manifest_digest);
    assert_same_blobs(&src, &dst, &image.layer_digests);
    assert!(tokens
        .scopes_seen
        .lock()
        .unwrap()
        .contains(&"repository:team/app:pull".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_falls_back_to_upload_when_the_source_repository_lacks_the_blob() {
    let registry = Registry::start(Auth::None, None);
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let image = make_image(&src, &[pseudo_random(1000, 9), pseudo_random(2000, 10)]);
    let c = client(tmp.path(), None);
    let options = PushOptions {
        mount_from: vec!["nowhere/img".to_string()],
    };
    let report = c
        .push(
            &src,
            &image.manifest_digest,
            &reference(&registry.host, "a/b:1"),
            &options,
        )
        .await
        .unwrap();
    assert_eq!(report.mounted(), 0);
    assert!(
        report
            .blobs
            .iter()
            .all(|(_, b)| *b == BlobPush::Uploaded { chunks: 0 }),
        "{report:?}"
    );
    let report = c
        .push(
            &src,
            &image.manifest_digest,
            &reference(&registry.host, "c/d:1"),
            &PushOptions {
                mount_from: vec!["a/b".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(report.mounted(), 3, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_of_a_blob_over_64_mib() {
    let registry = Registry::start(Auth::None, None);
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let big = pseudo_random((64 << 20) + 5_000_000, 11);
    let image = make_image(&src, &[big, pseudo_random(1000, 12)]);
    let c = client(tmp.path(), None);
    assert_eq!(
        c.config().chunk_threshold,
        64 << 20,
        "Docker's threshold is the default"
    );
    let target = reference(&registry.host, "big/img:1");
    let report = try_push(&c, &src, &image, &target).await.unwrap();
    let big_digest = &image.layer_digests[0];
    let outcome = &report
        .blobs
        .iter()
        .find(|(d, _)| d == big_digest)
        .unwrap()
        .1;
    // 69 MB in 16 MiB chunks: 5 PATCH requests.
    assert_eq!(*outcome, BlobPush::Uploaded { chunks: 5 });
    let dst = OciDir::create(tmp.path().join("dst")).unwrap();
    c.pull(&target, &amd64(), &dst).await.unwrap();
    assert_eq!(sha256(&dst.read_blob(big_digest).unwrap()), *big_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_cut_off_midway_is_resumed_with_a_range_request() {
    let registry = Registry::start(Auth::None, None);
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let image = make_image(&src, &[pseudo_random(4 << 20, 13), pseudo_random(1000, 14)]);
    let c = client(tmp.path(), None);
    push_image(&c, &src, &image, &registry.host, "cut/img:1").await;

    let layer = image.layer_digests[0].clone();
    let proxy = Proxy::start(
        &registry.host,
        &format!("/blobs/{layer}"),
        Fault::CutAfter(1 << 20),
    );
    let dst = OciDir::create(tmp.path().join("dst")).unwrap();
    let pulled = c
        .pull(&reference(&proxy.host, "cut/img:1"), &amd64(), &dst)
        .await
        .unwrap();
    assert!(pulled.fetched.contains(&layer));
    assert_eq!(
        dst.read_blob(&layer).unwrap(),
        src.read_blob(&layer).unwrap()
    );
    let requests = proxy.requests.lock().unwrap().clone();
    let gets: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains(&format!("/blobs/{layer}")))
        .collect();
    assert_eq!(gets.len(), 2, "{requests:#?}");
    assert!(!gets[0].contains("range="), "{gets:?}");
    // The second GET continues from where the cut left the staged blob, not from 0.
    let range = gets[1]
        .split("range=bytes=")
        .nth(1)
        .expect("a Range request");
    let from: u64 = range.trim_end_matches('-').parse().unwrap();
    assert!(from > 0 && from < 4 << 20, "{range}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_serves_wrong_bytes_is_rejected_and_nothing_is_committed() {
    let registry = Registry::start(Auth::None, None);
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let image = make_image(&src, &[pseudo_random(500_000, 15), pseudo_random(1000, 16)]);
    let c = client(tmp.path(), None);
    push_image(&c, &src, &image, &registry.host, "bad/img:1").await;
    let layer = image.layer_digests[0].clone();
    let proxy = Proxy::start(&registry.host, &format!("/blobs/{layer}"), Fault::Corrupt);
    let dst = OciDir::create(tmp.path().join("dst")).unwrap();
    let err = c
        .pull(&reference(&proxy.host, "bad/img:1"), &amd64(), &dst)
        .await
        .unwrap_err();
    match &err {
        RegistryError::DigestMismatch { digest, actual, .. } => {
            assert_eq!(digest, &layer);
            assert_ne!(actual, &layer);
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(err.to_string().contains("discarded"), "{err}");
    assert!(!dst.has_blob(&layer));
    assert!(
        !dst.staging_path(&layer).exists(),
        "the wrong bytes were left staged"
    );
    assert!(
        !dst.has_blob(&image.manifest_digest),
        "a manifest went in without its layers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_is_pushed_and_the_requested_platform_pulled() {
    let registry = Registry::start(Auth::None, None);
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let amd = make_image(&src, &[pseudo_random(1000, 17)]);
    let arm = make_image(&src, &[pseudo_random(1000, 18)]);
    let size = |d: &str| src.read_blob(d).unwrap().len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd.manifest_digest, "size": size(&amd.manifest_digest), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm.manifest_digest, "size": size(&arm.manifest_digest), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
        ]
    });
    let index_digest = src.put_blob(&serde_json::to_vec(&index).unwrap()).unwrap();
    let c = client(tmp.path(), None);
    let target = reference(&registry.host, "multi/img:1");
    let report = c
        .push(&src, &index_digest, &target, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(report.manifest_digest, index_digest);

    let dst = OciDir::create(tmp.path().join("dst")).unwrap();
    let pulled = c
        .pull(&target, &"linux/arm64".parse().unwrap(), &dst)
        .await
        .unwrap();
    assert_eq!(
        pulled.resolved.index.as_ref().map(|(d, _)| d.clone()),
        Some(index_digest.clone())
    );
    assert_eq!(pulled.resolved.digest, arm.manifest_digest);
    assert!(dst.has_blob(&arm.layer_digests[0]) && !dst.has_blob(&amd.layer_digests[0]));

    let err = c
        .resolve(&target, &"linux/s390x".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::NoMatchingPlatform { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("linux/arm64/v8"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_hub_pulls_go_to_the_mirrors_in_order() {
    let empty = Registry::start(Auth::None, None);
    let mirror = Registry::start(Auth::None, None);
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let image = make_image(&src, &[pseudo_random(1000, 19)]);
    client(tmp.path(), None)
        .push(
            &src,
            &image.manifest_digest,
            &reference(&mirror.host, "library/mirrored:1"),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    let c = RegistryClient::new(ClientConfig {
        mirrors: vec![
            format!("http://{}", empty.host),
            format!("http://{}", mirror.host),
        ],
        docker_config_dir: Some(tmp.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let dst = OciDir::create(tmp.path().join("dst")).unwrap();
    // "mirrored:1" is docker.io/library/mirrored:1; this machine cannot reach docker.io, so
    // success shows the second mirror served it after the first answered 404.
    let pulled = c
        .pull(&Reference::parse("mirrored:1").unwrap(), &amd64(), &dst)
        .await
        .unwrap();
    assert_eq!(pulled.resolved.endpoint, format!("http://{}", mirror.host));
    assert_eq!(pulled.resolved.digest, image.manifest_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_logout_round_trip_through_config_json() {
    use std::os::unix::fs::PermissionsExt;
    let registry = Registry::start(
        Auth::Htpasswd {
            user: "carol",
            password: "pw",
        },
        None,
    );
    let tmp = tempfile::tempdir().unwrap();
    let cfg_dir = tmp.path().join("docker");
    let c = client(&cfg_dir, None);
    let good = Credentials::Basic {
        username: "carol".into(),
        password: "pw".into(),
    };
    let bad = Credentials::Basic {
        username: "carol".into(),
        password: "nope".into(),
    };

    let err = c
        .verify_credentials(&registry.host, &bad)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("login to {}: 401", registry.host)),
        "{err}"
    );

    c.verify_credentials(&registry.host, &good).await.unwrap();
    let mut cfg = DockerConfig::load(&cfg_dir).unwrap();
    cfg.store(&registry.host, &good).unwrap();
    let text = std::fs::read_to_string(cfg_dir.join("config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["auths"][&registry.host]["auth"], "Y2Fyb2w6cHc="); // base64("carol:pw")
    let mode = std::fs::metadata(cfg_dir.join("config.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // The stored credentials work for a pull (a 404, not a 401, for a missing image).
    let err = client(&cfg_dir, None)
        .resolve(&reference(&registry.host, "none/here:1"), &amd64())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");

    assert!(DockerConfig::load(&cfg_dir)
        .unwrap()
        .erase(&registry.host)
        .unwrap());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg_dir.join("config.json")).unwrap())
            .unwrap();
    assert!(json["auths"].get(&registry.host).is_none(), "{json}");
    let err = client(&cfg_dir, None)
        .resolve(&reference(&registry.host, "none/here:1"), &amd64())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}

#[test]
fn a_killed_pull_leaves_its_staged_bytes_for_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = OciDir::create(tmp.path()).unwrap();
    let data = pseudo_random(10_000, 20);
    let digest = sha256(&data);
    let mut w = dir.begin_blob(&digest, data.len() as u64).unwrap();
    std::io::Write::write_all(&mut w, &data[..4000]).unwrap();
    drop(w);
    assert!(
        !dir.has_blob(&digest),
        "an unfinished blob is never visible"
    );
    assert_eq!(
        dir.begin_blob(&digest, data.len() as u64).unwrap().offset(),
        4000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_replaced_once_on_401() {
    // The first token the server issues is already expired; the registry answers 401 and the
    // client fetches a new one and retries.
    let tokens = TokenServer::start_with(None, 1);
    let registry = Registry::start(Auth::Token(&tokens), None);
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let image = make_image(&src, &[pseudo_random(1000, 21)]);
    let c = RegistryClient::new(ClientConfig {
        docker_config_dir: Some(tmp.path().to_path_buf()),
        concurrency: 1,
        ..Default::default()
    })
    .unwrap();
    let target = reference(&registry.host, "exp/img:1");
    try_push(&c, &src, &image, &target).await.unwrap();
    let push_scope = "repository:exp/img:pull,push".to_string();
    let seen = tokens.scopes_seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|s| **s == push_scope).count(),
        2,
        "{seen:?}"
    );

    // A token server whose tokens never work: one renewal, then a clear 401, no endless loop.
    let bad_tokens = TokenServer::start_with(None, usize::MAX);
    let registry = Registry::start(Auth::Token(&bad_tokens), None);
    let target = reference(&registry.host, "exp/img:1");
    let err = try_push(&c, &src, &image, &target).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("push blob {}/exp/img@", registry.host)),
        "{err}"
    );
    assert_eq!(bad_tokens.scopes_seen.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_503_is_retried_and_endless_429_is_reported_after_bounded_attempts() {
    let registry = Registry::start(Auth::None, None);
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let image = make_image(&src, &[pseudo_random(1000, 22)]);
    let c = client(tmp.path(), None);
    push_image(&c, &src, &image, &registry.host, "flaky/img:1").await;

    let flaky = Proxy::start(
        &registry.host,
        "/manifests/1",
        Fault::Status {
            code: 503,
            times: 2,
        },
    );
    let dst = OciDir::create(tmp.path().join("dst")).unwrap();
    let pulled = c
        .pull(&reference(&flaky.host, "flaky/img:1"), &amd64(), &dst)
        .await
        .unwrap();
    assert_eq!(pulled.resolved.digest, image.manifest_digest);
    let requests = flaky.requests.lock().unwrap().clone();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.contains("/manifests/1"))
            .count(),
        3,
        "{requests:#?}"
    );

    let limited = Proxy::start(
        &registry.host,
        "/manifests/1",
        Fault::Status {
            code: 429,
            times: usize::MAX,
        },
    );
    let err = c
        .resolve(&reference(&limited.host, "flaky/img:1"), &amd64())
        .await
        .unwrap_err();
    match &err {
        RegistryError::RateLimited { attempts, .. } => {
            assert_eq!(*attempts, c.config().max_retries + 1)
        }
        other => panic!("expected rate limiting, got {other}"),
    }
    assert!(
        err.to_string().starts_with(&format!(
            "pull manifest {}/flaky/img:1: 429 too many requests",
            limited.host
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_that_dies_midway_leaves_nothing_corrupt_and_the_next_pull_resumes_it() {
    let registry = Registry::start(Auth::None, None);
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let image = make_image(&src, &[pseudo_random(4 << 20, 23), pseudo_random(1000, 24)]);
    let c = client(tmp.path(), None);
    push_image(&c, &src, &image, &registry.host, "die/img:1").await;
    let layer = image.layer_digests[0].clone();

    // One blob at a time (config, big layer, small layer) and no retries: the cut ends the pull.
    let fragile = RegistryClient::new(ClientConfig {
        docker_config_dir: Some(tmp.path().to_path_buf()),
        max_retries: 0,
        concurrency: 1,
        ..Default::default()
    })
    .unwrap();
    let cut = Proxy::start(
        &registry.host,
        &format!("/blobs/{layer}"),
        Fault::CutAfter(1 << 20),
    );
    let dst = OciDir::create(tmp.path().join("dst")).unwrap();
    let err = fragile
        .pull(&reference(&cut.host, "die/img:1"), &amd64(), &dst)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Interrupted { .. }), "{err}");
    assert!(
        dst.has_blob(&image.config_digest),
        "the blob completed before the cut is kept"
    );
    assert!(!dst.has_blob(&layer) && !dst.has_blob(&image.manifest_digest));
    let staged = std::fs::metadata(dst.staging_path(&layer)).unwrap().len();
    assert!(staged > 0 && staged < 4 << 20, "{staged}");

    // The next pull reuses the config, continues the layer from the staged bytes, and ends
    // with a verified, byte-identical image.
    let recorder = Proxy::start(&registry.host, "no-such-path", Fault::CutAfter(0));
    let pulled = c
        .pull(&reference(&recorder.host, "die/img:1"), &amd64(), &dst)
        .await
        .unwrap();
    assert_eq!(pulled.reused, vec![image.config_digest.clone()]);
    assert!(pulled.fetched.contains(&layer));
    let requests = recorder.requests.lock().unwrap().clone();
    let gets: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains(&format!("/blobs/{layer}")))
        .collect();
    assert_eq!(gets.len(), 1, "{requests:#?}");
    assert!(
        gets[0].ends_with(&format!("range=bytes={staged}-")),
        "{gets:?}"
    );
    let mut all = image.layer_digests.clone();
    all.push(image.config_digest.clone());
    all.push(image.manifest_digest.clone());
    assert_same_blobs(&src, &dst, &all);
    assert!(!dst.staging_path(&layer).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_manifests_and_manifest_lists_round_trip() {
    let registry = Registry::start(Auth::None, None);
    let tmp = tempfile::tempdir().unwrap();
    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let layer = pseudo_random(5000, 25);
    let layer_digest = src.put_blob(&layer).unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "arm", "variant": "v7", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
    }))
    .unwrap();
    let config_digest = src.put_blob(&config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer.len(), "digest": layer_digest}]
    }))
    .unwrap();
    let manifest_digest = src.put_blob(&manifest).unwrap();
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": manifest.len(), "digest": manifest_digest, "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}}]
    }))
    .unwrap();
    let list_digest = src.put_blob(&list).unwrap();
    let c = client(tmp.path(), None);
    let target = reference(&registry.host, "docker/img:1");
    c.push(&src, &list_digest, &target, &PushOptions::default())
        .await
        .unwrap();

    let dst = OciDir::create(tmp.path().join("dst")).unwrap();
    let pulled = c
        .pull(&target, &"linux/arm".parse().unwrap(), &dst)
        .await
        .unwrap();
    assert_eq!(
        pulled.resolved.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(pulled.resolved.digest, manifest_digest);
    assert_eq!(pulled.resolved.index.as_ref().unwrap().0, list_digest);
    assert_same_blobs(
        &src,
        &dst,
        &[
            layer_digest,
            config_digest,
            manifest_digest.clone(),
            list_digest,
        ],
    );

    // Pinned by digest, the manifest itself (no list) is pulled and its digest checked.
    let pinned = reference(&registry.host, &format!("docker/img@{manifest_digest}"));
    let resolved = c.resolve(&pinned, &amd64()).await.unwrap();
    assert!(resolved.index.is_none());
    assert_eq!(resolved.bytes, manifest);
}

#[test]
fn pull_and_push_futures_can_be_spawned() {
    // The build spawns pulls on a multi-threaded runtime: the futures must be Send.
    fn assert_send<T: Send>(_: &T) {}
    let tmp = tempfile::tempdir().unwrap();
    let dir = OciDir::create(tmp.path()).unwrap();
    let c = RegistryClient::new(ClientConfig::default()).unwrap();
    let r = Reference::parse("localhost:1/a:1").unwrap();
    let platform = Platform::host();
    let pull = c.pull(&r, &platform, &dir);
    assert_send(&pull);
    let options = PushOptions::default();
    let push = c.push(&dir, "sha256:00", &r, &options);
    assert_send(&push);
    let resolve = c.resolve(&r, &platform);
    assert_send(&resolve);
}

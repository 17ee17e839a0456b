//! Credentials kept by a credential helper (`credsStore`), invoked the way Docker invokes
//! `docker-credential-<name>`. A test binary of its own, because it puts the fake helper on
//! this process's PATH and DOCKER_CONFIG.

mod common;

use common::{make_image, pseudo_random, Auth, Registry};
use forge_registry::{Credentials, DockerConfig, OciDir, PushOptions, Reference};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_go_through_the_configured_helper() {
    let registry = Registry::start(
        Auth::Htpasswd {
            user: "dave",
            password: "pw2",
        },
        None,
    );
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    let state = tmp.path().join("helper-state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    // A helper that keeps one credential in a file and logs each call with its input.
    let script = format!(
        r#"#!/bin/sh
input=$(cat)
echo "$1 $input" >> {state}/log
case "$1" in
  store) printf '%s' "$input" > {state}/cred ;;
  get) if [ -f {state}/cred ]; then cat {state}/cred; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) if [ -f {state}/cred ]; then rm {state}/cred; else echo "credentials not found in native keychain"; exit 1; fi ;;
esac
"#,
        state = state.display()
    );
    let helper = bin.join("docker-credential-forgetest");
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The only test in this binary: nothing else reads the environment concurrently.
    std::env::set_var("PATH", path);

    let cfg_dir = tmp.path().join("docker");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(cfg_dir.join("config.json"), r#"{"credsStore":"forgetest"}"#).unwrap();
    // As `forge login` finds it: through $DOCKER_CONFIG.
    std::env::set_var("DOCKER_CONFIG", &cfg_dir);
    assert_eq!(DockerConfig::default_dir(), cfg_dir);
    let mut cfg = DockerConfig::load(&DockerConfig::default_dir()).unwrap();
    assert_eq!(cfg.helper_for(&registry.host).as_deref(), Some("forgetest"));
    assert_eq!(
        cfg.credentials(&registry.host).unwrap(),
        Credentials::Anonymous,
        "not found means anonymous"
    );
    cfg.store(
        &registry.host,
        &Credentials::Basic {
            username: "dave".into(),
            password: "pw2".into(),
        },
    )
    .unwrap();
    let text = std::fs::read_to_string(cfg_dir.join("config.json")).unwrap();
    assert!(
        !text.contains("pw2") && !text.contains("auths"),
        "secret leaked into config.json: {text}"
    );

    let src = OciDir::create(tmp.path().join("src")).unwrap();
    let image = make_image(&src, &[pseudo_random(1000, 30)]);
    let target = Reference::parse(&format!("{}/helped/img:1", registry.host)).unwrap();
    // A client left to find config.json itself ($DOCKER_CONFIG) gets the helper's credentials.
    let c = forge_registry::RegistryClient::new(forge_registry::ClientConfig::default()).unwrap();
    c.push(
        &src,
        &image.manifest_digest,
        &target,
        &PushOptions::default(),
    )
    .await
    .unwrap();

    assert!(cfg.erase(&registry.host).unwrap());
    assert!(
        !cfg.erase(&registry.host).unwrap(),
        "a second erase finds nothing"
    );
    let log = std::fs::read_to_string(state.join("log")).unwrap();
    let host = &registry.host;
    for line in [
        format!("get {host}"),
        format!(r#"store {{"Secret":"pw2","ServerURL":"{host}","Username":"dave"}}"#),
        format!("erase {host}"),
    ] {
        assert!(
            log.lines().any(|l| l == line),
            "missing {line:?} in the helper log:\n{log}"
        );
    }
}

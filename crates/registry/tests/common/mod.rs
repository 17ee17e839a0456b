//! Test fixtures: the real Debian `docker-registry` started on a free loopback port with a
//! generated config, a CA and server certificate made with rcgen, a small token server that
//! signs JWTs the registry verifies, a fault-injecting TCP proxy, and images made in code.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use forge_registry::OciDir;
use sha2::{Digest as _, Sha256};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "docker-registry exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("docker-registry did not listen on port {port} within 20 s");
}

/// How the registry authenticates clients.
pub enum Auth<'a> {
    None,
    Htpasswd { user: &'a str, password: &'a str },
    Token(&'a TokenServer),
}

/// A certificate authority and a server certificate for 127.0.0.1 and localhost.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "forge test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let ca_pem = dir.path().join("ca.pem");
        let cert_pem = dir.path().join("server.pem");
        let key_pem = dir.path().join("server.key");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        std::fs::write(&cert_pem, cert.pem()).unwrap();
        std::fs::write(&key_pem, key.serialize_pem()).unwrap();
        Self {
            dir,
            ca_pem,
            cert_pem,
            key_pem,
        }
    }
}

/// A running `docker-registry`, killed on drop.
pub struct Registry {
    child: Child,
    pub host: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Registry {
    pub fn start(auth: Auth<'_>, tls: Option<&TestCa>) -> Self {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: scripts/install-deps installs the docker-registry package"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: forge-test-secret\n",
            storage.display()
        );
        if let Some(ca) = tls {
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                ca.cert_pem.display(),
                ca.key_pem.display()
            );
        }
        match auth {
            Auth::None => {}
            Auth::Htpasswd { user, password } => {
                let hash = bcrypt::hash_with_result(password, 5)
                    .unwrap()
                    .format_for_version(bcrypt::Version::TwoA);
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, format!("{user}:{hash}\n")).unwrap();
                config += &format!(
                    "auth:\n  htpasswd:\n    realm: forge-test\n    path: {}\n",
                    path.display()
                );
            }
            Auth::Token(ts) => {
                config += &format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    ts.realm,
                    ts.service,
                    ts.issuer,
                    ts.bundle.display()
                );
            }
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("registry.log");
        let mut child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("registry.err")).unwrap())
            .spawn()
            .expect("start docker-registry");
        wait_for_port(port, &mut child, &dir.path().join("registry.err"));
        Self {
            child,
            host: format!("127.0.0.1:{port}"),
            port,
            dir,
            log,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.err")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny blocking HTTP server: `handler(request head, body)` answers each request.
fn serve(
    listener: TcpListener,
    handler: impl Fn(&str) -> (u16, String, String) + Send + Sync + 'static,
) {
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let handler = handler.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let (status, content_type, body) = handler(&head);
                let reason = if status == 200 { "OK" } else { "Unauthorized" };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A token server in the style of Docker Hub's: checks basic credentials (when it has some),
/// grants every requested scope, and signs an ES256 JWT with an `x5c` chain to its CA.
pub struct TokenServer {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub bundle: PathBuf,
    pub scopes_seen: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    pub fn start(credentials: Option<(&str, &str)>) -> Self {
        Self::start_with(credentials, 0)
    }

    /// Like `start`, but the first `expired` tokens are already past their `exp` (while the
    /// answer still says `expires_in: 300`), so the registry rejects them with 401.
    pub fn start_with(credentials: Option<(&str, &str)>, expired: usize) -> Self {
        let issued = std::sync::atomic::AtomicUsize::new(0);
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "forge token CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "forge token signer");
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let bundle = dir.path().join("token-ca.pem");
        std::fs::write(&bundle, ca.pem()).unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let service = "forge-test-registry".to_string();
        let issuer = "forge-test-issuer".to_string();
        let scopes_seen = Arc::new(Mutex::new(Vec::new()));
        let expected_auth = credentials.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .unwrap();
        let x5c = base64::engine::general_purpose::STANDARD.encode(cert.der());
        let (svc, iss, seen) = (service.clone(), issuer.clone(), scopes_seen.clone());
        serve(listener, move |head| {
            if let Some(expected) = &expected_auth {
                if header(head, "authorization") != Some(expected.as_str()) {
                    return (
                        401,
                        "application/json".into(),
                        r#"{"details":"incorrect username or password"}"#.into(),
                    );
                }
            }
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
            let mut access = Vec::new();
            for pair in query.split('&') {
                let Some((k, v)) = pair.split_once('=') else {
                    continue;
                };
                if k == "scope" {
                    let scope = percent_decode(v);
                    seen.lock().unwrap().push(scope.clone());
                    let parts: Vec<&str> = scope.split(':').collect();
                    if parts.len() >= 3 {
                        let actions: Vec<&str> = parts[parts.len() - 1].split(',').collect();
                        let name = parts[1..parts.len() - 1].join(":");
                        access.push(
                            serde_json::json!({"type": parts[0], "name": name, "actions": actions}),
                        );
                    }
                }
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let exp = if issued.fetch_add(1, Ordering::SeqCst) < expired {
                now - 3600
            } else {
                now + 300
            };
            let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
            let claims = serde_json::json!({
                "iss": iss, "sub": "forge-test-user", "aud": svc,
                "exp": exp, "nbf": now - 7200, "iat": now - 7200,
                "jti": format!("{now}-{}", rand_u64()), "access": access,
            });
            let b64 = |v: &serde_json::Value| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
            };
            let signing_input = format!("{}.{}", b64(&header), b64(&claims));
            let sig = signer
                .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
                .unwrap();
            let token = format!(
                "{signing_input}.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.as_ref())
            );
            let body =
                serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                    .to_string();
            (200, "application/json".into(), body)
        });
        Self {
            realm: format!("http://127.0.0.1:{port}/token"),
            service,
            issuer,
            bundle,
            scopes_seen,
            _dir: dir,
        }
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// What the fault-injecting proxy does to the first response to a GET whose path contains
/// the trigger.
#[derive(Clone, Copy)]
pub enum Fault {
    /// Forward this many bytes of the response, then close the connection.
    CutAfter(usize),
    /// Flip one bit of the first body byte.
    Corrupt,
    /// Answer the first `times` matching requests with this status (and `Retry-After: 0`)
    /// instead of forwarding them.
    Status { code: u16, times: usize },
}

/// A TCP proxy in front of a registry that injects one fault.
pub struct Proxy {
    pub host: String,
    /// The request lines (and Range headers) that went through, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn start(upstream: &str, trigger: &str, fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let fired = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (upstream, trigger, reqs) =
            (upstream.to_string(), trigger.to_string(), requests.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    return;
                };
                let armed = Arc::new(AtomicBool::new(false));
                // client -> server: watch request heads.
                {
                    let (mut c, mut s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (armed, fired, reqs, trigger) =
                        (armed.clone(), fired.clone(), reqs.clone(), trigger.clone());
                    let mut reply = client.try_clone().unwrap();
                    let answered = answered.clone();
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            let n = match c.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let text = String::from_utf8_lossy(&buf[..n]);
                            if let Some(line) =
                                text.lines().next().filter(|l| l.contains(" HTTP/1.1"))
                            {
                                let range = header(&text, "range")
                                    .map(|r| format!(" range={r}"))
                                    .unwrap_or_default();
                                reqs.lock().unwrap().push(format!("{line}{range}"));
                                let hit = line.starts_with("GET ") && line.contains(&trigger);
                                if let (true, Fault::Status { code, times }) = (hit, fault) {
                                    if answered.fetch_add(1, Ordering::SeqCst) < times {
                                        let _ = write!(
                                            reply,
                                            "HTTP/1.1 {code} Injected\r\nRetry-After: 0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
                                        );
                                        continue;
                                    }
                                } else if hit && !fired.swap(true, Ordering::SeqCst) {
                                    armed.store(true, Ordering::SeqCst);
                                }
                            }
                            if s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = s.shutdown(Shutdown::Write);
                    });
                }
                // server -> client: inject the fault once armed.
                let (mut c, mut s) = (client, server);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut sent_armed = 0usize;
                    let mut tail: Vec<u8> = Vec::new();
                    let mut corrupted = false;
                    loop {
                        let n = match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = &mut buf[..n];
                        if armed.load(Ordering::SeqCst) {
                            match fault {
                                Fault::CutAfter(limit) => {
                                    let room = limit.saturating_sub(sent_armed).min(n);
                                    let _ = c.write_all(&chunk[..room]);
                                    sent_armed += room;
                                    if sent_armed >= limit {
                                        let _ = c.shutdown(Shutdown::Both);
                                        let _ = s.shutdown(Shutdown::Both);
                                        return;
                                    }
                                    continue;
                                }
                                Fault::Corrupt if !corrupted => {
                                    // Find the end of the response head, then flip the next byte.
                                    let start = tail.len();
                                    tail.extend_from_slice(chunk);
                                    if let Some(pos) =
                                        tail.windows(4).position(|w| w == b"\r\n\r\n")
                                    {
                                        let body_at = pos + 4;
                                        if body_at >= start && body_at < tail.len() {
                                            chunk[body_at - start] ^= 0x01;
                                            corrupted = true;
                                        }
                                    }
                                }
                                Fault::Corrupt | Fault::Status { .. } => {}
                            }
                        }
                        if c.write_all(chunk).is_err() {
                            break;
                        }
                    }
                    let _ = c.shutdown(Shutdown::Write);
                });
            }
        });
        Self { host, requests }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so layers do not compress or repeat.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An image made in code: config + layers + manifest, stored in an OCI directory.
pub struct TestImage {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
}

pub fn make_image(dir: &OciDir, layers: &[Vec<u8>]) -> TestImage {
    let layer_digests: Vec<String> = layers.iter().map(|l| dir.put_blob(l).unwrap()).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
        "history": []
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = dir.put_blob(&config_bytes).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len()},
        "layers": layers.iter().zip(&layer_digests).map(|(l, d)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": l.len()
        })).collect::<Vec<_>>()
    });
    let manifest_digest = dir
        .put_blob(&serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    TestImage {
        manifest_digest,
        config_digest,
        layer_digests,
    }
}

/// A client that reads credentials from `docker_config` and retries quickly.
pub fn client(docker_config: &Path, tls_ca: Option<&Path>) -> forge_registry::RegistryClient {
    forge_registry::RegistryClient::new(forge_registry::ClientConfig {
        docker_config_dir: Some(docker_config.to_path_buf()),
        tls_ca: tls_ca.map(Path::to_path_buf),
        retry_delay: Duration::from_millis(20),
        ..Default::default()
    })
    .unwrap()
}

/// Pushes `image` from `src` to `repo` (`name:tag`) on the registry at `host`, with default
/// options: the set-up most pull and transfer tests start from.
pub async fn push_image(
    c: &forge_registry::RegistryClient,
    src: &OciDir,
    image: &TestImage,
    host: &str,
    repo: &str,
) -> forge_registry::PushReport {
    let target = forge_registry::Reference::parse(&format!("{host}/{repo}")).unwrap();
    try_push(c, src, image, &target).await.unwrap()
}

/// Pushes `image` from `src` to `target` with default options, for tests of what can go wrong.
pub async fn try_push(
    c: &forge_registry::RegistryClient,
    src: &OciDir,
    image: &TestImage,
    target: &forge_registry::Reference,
) -> Result<forge_registry::PushReport, forge_registry::RegistryError> {
    c.push(
        src,
        &image.manifest_digest,
        target,
        &forge_registry::PushOptions::default(),
    )
    .await
}

//! Credentials: Docker's config.json (`auths`, `credsStore`, `credHelpers`), credential helpers
//! invoked the way Docker invokes them, and the `WWW-Authenticate` challenges registries send.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::reference::DOCKER_HUB;
use crate::RegistryError;

/// The key Docker files Docker Hub credentials under.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// What the client authenticates with for one registry.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// No credentials: anonymous tokens only.
    #[default]
    Anonymous,
    /// A user name and password (or access token used as a password).
    Basic { username: String, password: String },
    /// An OAuth refresh token ("identitytoken") exchanged at the token server.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Self::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

/// The key under which `registry` is stored in config.json and sent to credential helpers.
pub fn auth_key(registry: &str) -> String {
    if registry == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// Reduces a config.json key (`https://index.docker.io/v1/`, `http://host:5000`, `host:5000`)
/// to the registry host it names, as Docker does when it looks credentials up.
fn key_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

/// Docker's client configuration file, kept as JSON so fields forge does not know survive a save.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG`, else `$HOME/.docker`.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        PathBuf::from(home).join(".docker")
    }

    /// Loads `<dir>/config.json`; a missing file is an empty configuration.
    pub fn load(dir: &Path) -> Result<Self, RegistryError> {
        let path = dir.join("config.json");
        let err = |reason: String| RegistryError::DockerConfig {
            path: path.clone(),
            reason,
        };
        let doc = match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(err("not a JSON object".to_string())),
                Err(e) => return Err(err(format!("invalid JSON: {e}"))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(Self { path, doc })
    }

    /// The file this configuration is read from and saved to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credential helper in charge of `registry`, if any (`credHelpers` wins over `credsStore`).
    pub fn helper_for(&self, registry: &str) -> Option<String> {
        let key = auth_key(registry);
        if let Some(Value::Object(helpers)) = self.doc.get("credHelpers") {
            for (k, v) in helpers {
                if (k == &key || key_host(k) == registry) && v.is_string() {
                    return v.as_str().map(str::to_string);
                }
            }
        }
        self.doc
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// The credentials for `registry`: from its helper if one is configured, else from `auths`.
    pub fn credentials(&self, registry: &str) -> Result<Credentials, RegistryError> {
        if let Some(helper) = self.helper_for(registry) {
            return helper_get(&helper, &auth_key(registry));
        }
        let Some(Value::Object(auths)) = self.doc.get("auths") else {
            return Ok(Credentials::Anonymous);
        };
        let entry = auths.get(&auth_key(registry)).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| key_host(k) == registry)
                .map(|(_, v)| v)
        });
        let Some(entry) = entry else {
            return Ok(Credentials::Anonymous);
        };
        if let Some(token) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            return Ok(Credentials::IdentityToken(token.to_string()));
        }
        if let Some(auth) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            let bad = |why: &str| RegistryError::DockerConfig {
                path: self.path.clone(),
                reason: format!("auths[{:?}].auth: {why}", auth_key(registry)),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("not base64"))?;
            let text = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
            let (user, pass) = text
                .split_once(':')
                .ok_or_else(|| bad("no ':' between user and password"))?;
            return Ok(Credentials::Basic {
                username: user.to_string(),
                password: pass.to_string(),
            });
        }
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(Value::as_str),
            entry.get("password").and_then(Value::as_str),
        ) {
            return Ok(Credentials::Basic {
                username: u.to_string(),
                password: p.to_string(),
            });
        }
        Ok(Credentials::Anonymous)
    }

    /// Stores credentials for `registry` in its helper, or in `auths` (then saves the file, 0600).
    pub fn store(
        &mut self,
        registry: &str,
        credentials: &Credentials,
    ) -> Result<(), RegistryError> {
        let key = auth_key(registry);
        if let Some(helper) = self.helper_for(registry) {
            let (user, secret) = match credentials {
                Credentials::Basic { username, password } => (username.as_str(), password.as_str()),
                Credentials::IdentityToken(t) => ("<token>", t.as_str()),
                Credentials::Anonymous => return self.erase(registry).map(|_| ()),
            };
            let input = json!({"ServerURL": key, "Username": user, "Secret": secret}).to_string();
            helper_call(&helper, "store", &key, &input)?;
            return Ok(());
        }
        let entry = match credentials {
            Credentials::Basic { username, password } => json!({
                "auth": base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            }),
            Credentials::IdentityToken(t) => json!({"identitytoken": t}),
            Credentials::Anonymous => return self.erase(registry).map(|_| ()),
        };
        let auths = self
            .doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Value::Object(map) = auths {
            map.retain(|k, _| key_host(k) != registry || *k == key);
            map.insert(key, entry);
        }
        self.save()
    }

    /// Removes the credentials for `registry`; returns whether there were any in `auths` or the
    /// helper.
    pub fn erase(&mut self, registry: &str) -> Result<bool, RegistryError> {
        let key = auth_key(registry);
        if let Some(helper) = self.helper_for(registry) {
            return match helper_call(&helper, "erase", &key, &key) {
                Ok(_) => Ok(true),
                Err(RegistryError::CredentialHelper { reason, .. }) if is_not_found(&reason) => {
                    Ok(false)
                }
                Err(e) => Err(e),
            };
        }
        let mut removed = false;
        if let Some(Value::Object(map)) = self.doc.get_mut("auths") {
            let before = map.len();
            map.retain(|k, _| key_host(k) != registry && *k != key);
            removed = map.len() != before;
        }
        if removed {
            self.save()?;
        }
        Ok(removed)
    }

    /// Writes the file atomically with mode 0600 (it holds secrets).
    pub fn save(&self) -> Result<(), RegistryError> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |reason: String| RegistryError::DockerConfig {
            path: self.path.clone(),
            reason,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(&Value::Object(self.doc.clone()))
            .map_err(|e| err(e.to_string()))?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(e.to_string()))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.write_all(b"\n"))
            .and_then(|_| file.sync_all())
            .map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| err(e.to_string()))
    }

    /// The `auths` keys, for display.
    pub fn auth_keys(&self) -> BTreeMap<String, String> {
        match self.doc.get("auths") {
            Some(Value::Object(map)) => map.keys().map(|k| (key_host(k), k.clone())).collect(),
            _ => BTreeMap::new(),
        }
    }
}

fn is_not_found(reason: &str) -> bool {
    reason.contains("credentials not found")
}

fn helper_get(helper: &str, server: &str) -> Result<Credentials, RegistryError> {
    let out = match helper_call(helper, "get", server, server) {
        Ok(out) => out,
        Err(RegistryError::CredentialHelper { reason, .. }) if is_not_found(&reason) => {
            return Ok(Credentials::Anonymous)
        }
        Err(e) => return Err(e),
    };
    let bad = |reason: String| RegistryError::CredentialHelper {
        helper: helper.to_string(),
        verb: "get".to_string(),
        server: server.to_string(),
        reason,
    };
    let v: Value =
        serde_json::from_str(&out).map_err(|e| bad(format!("invalid JSON output: {e}")))?;
    let user = v.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or("");
    Ok(match (user, secret) {
        (_, "") => Credentials::Anonymous,
        ("<token>", s) => Credentials::IdentityToken(s.to_string()),
        (u, s) => Credentials::Basic {
            username: u.to_string(),
            password: s.to_string(),
        },
    })
}

/// Runs `docker-credential-<helper> <verb>` with `input` on stdin, as Docker does.
fn helper_call(
    helper: &str,
    verb: &str,
    server: &str,
    input: &str,
) -> Result<String, RegistryError> {
    let err = |reason: String| RegistryError::CredentialHelper {
        helper: helper.to_string(),
        verb: verb.to_string(),
        server: server.to_string(),
        reason,
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| err(format!("writing stdin: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // Helpers print "credentials not found in native keychain" on stdout.
        let msg = if stdout.is_empty() { stderr } else { stdout };
        return Err(err(format!("{}: {msg}", out.status)));
    }
    Ok(stdout)
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn config_round_trip_keeps_unknown_fields_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("config.json"),
            r#"{"psFormat":"table","auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#,
        )
        .unwrap();
        let mut cfg = DockerConfig::load(tmp.path()).unwrap();
        assert_eq!(
            cfg.credentials("docker.io").unwrap(),
            Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        cfg.store(
            "localhost:5000",
            &Credentials::Basic {
                username: "a".into(),
                password: "b:c".into(),
            },
        )
        .unwrap();
        let cfg = DockerConfig::load(tmp.path()).unwrap();
        assert_eq!(
            cfg.credentials("localhost:5000").unwrap(),
            Credentials::Basic {
                username: "a".into(),
                password: "b:c".into()
            }
        );
        let text = std::fs::read_to_string(cfg.path()).unwrap();
        assert!(text.contains("psFormat"), "{text}");
        let mode = std::fs::metadata(cfg.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut cfg = cfg;
        assert!(cfg.erase("docker.io").unwrap());
        assert!(!cfg.erase("docker.io").unwrap());
        assert_eq!(
            cfg.credentials("docker.io").unwrap(),
            Credentials::Anonymous
        );
    }

    #[test]
    fn bad_auth_field_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("config.json"),
            r#"{"auths":{"h:1":{"auth":"%%%"}}}"#,
        )
        .unwrap();
        let err = DockerConfig::load(tmp.path())
            .unwrap()
            .credentials("h:1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.json") && err.contains("not base64"),
            "{err}"
        );
    }
}

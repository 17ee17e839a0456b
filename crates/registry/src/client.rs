//! The HTTP side: endpoints (scheme choice, mirrors), the auth flow (basic, bearer tokens per
//! scope, a fresh token on 401), bounded retries with exponential backoff, and turning
//! statuses into errors that name the registry, repository and action.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::auth::{parse_challenge, Challenge};
use crate::reference::DOCKER_HUB;
use crate::{Credentials, DockerConfig, RegistryError};

/// How the client behaves; `Default` gives Docker's choices.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Mirrors tried, in order, before docker.io for pulls (`https://mirror.example`,
    /// `mirror.example:5000`; a bare host means HTTPS).
    pub mirrors: Vec<String>,
    /// Registries (`host[:port]`) that may be reached over plain HTTP besides loopback.
    pub insecure: Vec<String>,
    /// An extra PEM file of CA certificates trusted besides the system roots.
    pub tls_ca: Option<PathBuf>,
    /// Where config.json lives (`None`: `$DOCKER_CONFIG` or `~/.docker`).
    pub docker_config_dir: Option<PathBuf>,
    /// Blobs transferred at once.
    pub concurrency: usize,
    /// Chunk size of chunked uploads.
    pub chunk_size: u64,
    /// Blobs larger than this are uploaded in chunks.
    pub chunk_threshold: u64,
    /// Retries of a transient failure (connection trouble, 429, 5xx) before giving up.
    pub max_retries: u32,
    /// The first retry delay; each further retry doubles it (capped at 10 s).
    pub retry_delay: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            mirrors: Vec::new(),
            insecure: Vec::new(),
            tls_ca: None,
            docker_config_dir: None,
            concurrency: 3,
            chunk_size: 16 << 20,
            chunk_threshold: 64 << 20,
            max_retries: 4,
            retry_delay: Duration::from_millis(200),
        }
    }
}

/// Normalises what a user types for a registry (`https://index.docker.io/v1/`, `docker.io`,
/// `http://localhost:5000/`) to the host name references use.
pub fn registry_host(text: &str) -> String {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .unwrap_or(text);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

/// What a request is for, for error messages: "pull manifest docker.io/library/alpine:3.20".
#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub(crate) action: String,
    pub(crate) target: String,
}

impl Op {
    pub(crate) fn new(action: &str, target: impl Into<String>) -> Self {
        Self {
            action: action.to_string(),
            target: target.into(),
        }
    }
}

struct Token {
    value: String,
    expires: Instant,
}

/// One registry (or mirror) as reached: its base URL, challenge, credentials and tokens.
pub(crate) struct Endpoint {
    pub(crate) base: String,
    challenge: Mutex<Option<Challenge>>,
    credentials: Credentials,
    tokens: Mutex<HashMap<String, Token>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The registry client. Cheap to share (`Arc`); endpoints and tokens are cached inside.
#[derive(Debug)]
pub struct RegistryClient {
    pub(crate) config: ClientConfig,
    pub(crate) http: reqwest::Client,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    credentials: Mutex<HashMap<String, Credentials>>,
}

impl RegistryClient {
    /// A client with TLS roots from the system plus `config.tls_ca`.
    pub fn new(config: ClientConfig) -> Result<Self, RegistryError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("forge/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(path) = &config.tls_ca {
            let err = |reason: String| RegistryError::TlsCa {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
            if certs.is_empty() {
                return Err(err("no PEM certificates in the file".to_string()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(RegistryError::HttpClient)?;
        Ok(Self {
            config,
            http,
            endpoints: Mutex::new(HashMap::new()),
            credentials: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Uses `credentials` for `registry` instead of what config.json says.
    pub fn set_credentials(&self, registry: &str, credentials: Credentials) {
        let host = registry_host(registry);
        self.endpoints.lock().unwrap().remove(&host);
        self.credentials.lock().unwrap().insert(host, credentials);
    }

    fn credentials_for(&self, host: &str) -> Result<Credentials, RegistryError> {
        if let Some(c) = self.credentials.lock().unwrap().get(host) {
            return Ok(c.clone());
        }
        let dir = self
            .config
            .docker_config_dir
            .clone()
            .unwrap_or_else(DockerConfig::default_dir);
        let creds = DockerConfig::load(&dir)?.credentials(host)?;
        self.credentials
            .lock()
            .unwrap()
            .insert(host.to_string(), creds.clone());
        Ok(creds)
    }

    /// Whether plain HTTP may be used for `host`: loopback (as Docker allows) or listed insecure.
    pub(crate) fn allows_http(&self, host: &str) -> bool {
        let name = host_without_port(host);
        let loopback = name == "localhost"
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        loopback
            || self
                .config
                .insecure
                .iter()
                .any(|h| registry_host(h) == host)
    }

    /// The endpoints a pull of `registry` tries, mirrors first.
    pub(crate) fn pull_endpoints(&self, registry: &str) -> Vec<String> {
        let mut out = Vec::new();
        if registry == DOCKER_HUB {
            out.extend(self.config.mirrors.iter().cloned());
        }
        out.push(registry.to_string());
        out
    }

    /// Resolves (and caches) the endpoint for `spec`: a registry host, or a mirror URL.
    pub(crate) async fn endpoint(
        &self,
        spec: &str,
        op: &Op,
    ) -> Result<Arc<Endpoint>, RegistryError> {
        if let Some(ep) = self.endpoints.lock().unwrap().get(spec) {
            return Ok(ep.clone());
        }
        let ep = Arc::new(self.ping(spec, op, None).await?);
        self.endpoints
            .lock()
            .unwrap()
            .insert(spec.to_string(), ep.clone());
        Ok(ep)
    }

    /// `GET /v2/` on each allowed scheme; records the auth challenge. With `credentials`, uses
    /// those instead of the configured ones (login).
    pub(crate) async fn ping(
        &self,
        spec: &str,
        op: &Op,
        credentials: Option<Credentials>,
    ) -> Result<Endpoint, RegistryError> {
        let (schemes, host): (Vec<&str>, String) = if let Some(rest) = spec.strip_prefix("https://")
        {
            (vec!["https"], rest.trim_end_matches('/').to_string())
        } else if let Some(rest) = spec.strip_prefix("http://") {
            let host = rest.trim_end_matches('/').to_string();
            if !self.allows_http(&host) {
                return Err(RegistryError::InsecureNotAllowed { registry: host });
            }
            (vec!["http"], host)
        } else if self.allows_http(spec) {
            (vec!["https", "http"], spec.to_string())
        } else {
            (vec!["https"], spec.to_string())
        };
        if host.is_empty() || host.contains('/') {
            return Err(RegistryError::InvalidEndpoint {
                endpoint: spec.to_string(),
                reason: "expected host[:port] or a URL without a path".to_string(),
            });
        }
        let api_host = if host == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            host.as_str()
        };
        let credentials = match credentials {
            Some(c) => c,
            None => self.credentials_for(&registry_host(&host))?,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut first_err = None;
            for scheme in &schemes {
                let base = format!("{scheme}://{api_host}");
                match self.http.get(format!("{base}/v2/")).send().await {
                    Ok(resp) => {
                        // A TLS server answers plain HTTP with 400: report the TLS failure then.
                        if *scheme == "http" && resp.status() == StatusCode::BAD_REQUEST {
                            if let Some(e) = first_err.take() {
                                return Err(RegistryError::Connect {
                                    action: op.action.clone(),
                                    target: op.target.clone(),
                                    url: format!("https://{api_host}/v2/"),
                                    reason: crate::error::cause_chain(&e),
                                });
                            }
                        }
                        let challenge = challenge_of(resp.headers());
                        return Ok(Endpoint {
                            base,
                            challenge: Mutex::new(challenge),
                            credentials,
                            tokens: Mutex::new(HashMap::new()),
                        });
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            let err = first_err.expect("at least one scheme was tried");
            if attempt > self.config.max_retries {
                return Err(RegistryError::Connect {
                    action: op.action.clone(),
                    target: op.target.clone(),
                    url: format!("{}://{api_host}/v2/", schemes[0]),
                    reason: crate::error::cause_chain(&err),
                });
            }
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(10);
        (self.config.retry_delay * factor).min(Duration::from_secs(10))
    }

    /// Sends the request `build` makes (again on each retry), with auth for `scopes`: a token is
    /// fetched on a bearer challenge and renewed once on a 401; connection failures, 429 and
    /// 5xx are retried with backoff. Returns the final response, whatever its status.
    pub(crate) async fn send(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        op: &Op,
        build: &(dyn Fn(&reqwest::Client) -> Result<RequestBuilder, RegistryError> + Sync),
    ) -> Result<(Response, u32), RegistryError> {
        let mut attempt = 0;
        let mut renewed = false;
        loop {
            attempt += 1;
            let mut rb = build(&self.http)?;
            if let Some(value) = self.authorization(ep, scopes, op).await? {
                rb = rb.header(AUTHORIZATION, value);
            }
            match rb.send().await {
                Err(e) => {
                    if attempt > self.config.max_retries || e.is_builder() || e.is_redirect() {
                        return Err(RegistryError::Connect {
                            action: op.action.clone(),
                            target: op.target.clone(),
                            url: e
                                .url()
                                .map(|u| u.to_string())
                                .unwrap_or_else(|| ep.base.clone()),
                            reason: crate::error::cause_chain(&e),
                        });
                    }
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED && !renewed {
                        renewed = true;
                        let fresh = challenge_of(resp.headers());
                        let retry = fresh.is_some()
                            && !matches!(
                                (&fresh, &ep.credentials),
                                (Some(Challenge::Basic), Credentials::Anonymous)
                            );
                        if let Some(ch) = fresh {
                            *ep.challenge.lock().unwrap() = Some(ch);
                        }
                        ep.tokens.lock().unwrap().remove(&scope_key(scopes));
                        if retry {
                            attempt -= 1;
                            continue;
                        }
                    }
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED);
                    if retryable && attempt <= self.config.max_retries {
                        let wait =
                            retry_after(resp.headers()).unwrap_or_else(|| self.backoff(attempt));
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Ok((resp, attempt));
                }
            }
        }
    }

    /// The Authorization header value for a request needing `scopes`, fetching a token if needed.
    pub(crate) async fn authorization(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        op: &Op,
    ) -> Result<Option<String>, RegistryError> {
        let challenge = ep.challenge.lock().unwrap().clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(basic_header(&ep.credentials)),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let key = scope_key(scopes);
                if let Some(t) = ep.tokens.lock().unwrap().get(&key) {
                    if t.expires > Instant::now() {
                        return Ok(Some(format!("Bearer {}", t.value)));
                    }
                }
                let token = self
                    .fetch_token(&realm, service.as_deref(), scopes, &ep.credentials, op)
                    .await?;
                let value = format!("Bearer {}", token.value);
                ep.tokens.lock().unwrap().insert(key, token);
                Ok(Some(value))
            }
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        credentials: &Credentials,
        op: &Op,
    ) -> Result<Token, RegistryError> {
        let token_err = |message: String| RegistryError::Token {
            action: op.action.clone(),
            target: op.target.clone(),
            realm: realm.to_string(),
            message,
        };
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let rb = match credentials {
                Credentials::IdentityToken(refresh) => {
                    let mut form = vec![
                        ("grant_type", "refresh_token".to_string()),
                        ("refresh_token", refresh.clone()),
                        ("client_id", "forge".to_string()),
                    ];
                    if let Some(s) = service {
                        form.push(("service", s.to_string()));
                    }
                    if !scopes.is_empty() {
                        form.push(("scope", scopes.join(" ")));
                    }
                    self.http.post(realm).form(&form)
                }
                _ => {
                    let mut query: Vec<(&str, &str)> = Vec::new();
                    if let Some(s) = service {
                        query.push(("service", s));
                    }
                    if let Credentials::Basic { username, .. } = credentials {
                        query.push(("account", username));
                    }
                    for s in scopes {
                        query.push(("scope", s));
                    }
                    let mut rb = self.http.get(realm).query(&query);
                    if let Some(h) = basic_header(credentials) {
                        rb = rb.header(AUTHORIZATION, h);
                    }
                    rb
                }
            };
            match rb.send().await {
                Ok(resp)
                    if resp.status().is_server_error() && attempt <= self.config.max_retries => {}
                Ok(resp) => break resp,
                Err(e) if attempt > self.config.max_retries => {
                    return Err(token_err(e.to_string()))
                }
                Err(_) => {}
            }
            tokio::time::sleep(self.backoff(attempt)).await;
        };
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized {
                action: op.action.clone(),
                target: op.target.clone(),
                message: format!(
                    "token server {realm} rejected the credentials: {}",
                    error_message(&body, status)
                ),
            });
        }
        if !status.is_success() {
            return Err(token_err(format!(
                "status {status}: {}",
                error_message(&body, status)
            )));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| token_err(format!("invalid JSON: {e}")))?;
        let value = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_err("no token in the answer".to_string()))?;
        // Docker's default when the server does not say: 60 s. Renew a little early.
        let lifetime = v
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .unwrap_or(60)
            .max(1);
        let expires = Instant::now() + Duration::from_secs(lifetime) * 9 / 10;
        Ok(Token {
            value: value.to_string(),
            expires,
        })
    }

    /// Checks `credentials` against `registry`'s `/v2/` with the full auth flow, as
    /// `docker login` does; nothing is stored.
    pub async fn verify_credentials(
        &self,
        registry: &str,
        credentials: &Credentials,
    ) -> Result<(), RegistryError> {
        let host = registry_host(registry);
        let op = Op::new("login to", host.clone());
        let ep = self.ping(&host, &op, Some(credentials.clone())).await?;
        let url = format!("{}/v2/", ep.base);
        let (resp, attempts) = self.send(&ep, &[], &op, &|c| Ok(c.get(&url))).await?;
        if resp.status().is_success() {
            // A registry without auth accepts anything; Docker reports success too.
            return Ok(());
        }
        Err(status_error(resp, &op, attempts).await)
    }
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn challenge_of(headers: &HeaderMap) -> Option<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(parse_challenge)
        // Prefer bearer when a registry offers both.
        .max_by_key(|c| matches!(c, Challenge::Bearer { .. }))
}

fn basic_header(credentials: &Credentials) -> Option<String> {
    match credentials {
        Credentials::Basic { username, password } => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        )),
        _ => None,
    }
}

fn scope_key(scopes: &[String]) -> String {
    scopes.join(" ")
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(30)))
}

/// The registry's `{"errors":[{"code","message"}]}` as one line, or the body, or the reason.
pub(crate) fn error_message(body: &str, status: StatusCode) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(errors) = v.get("errors").and_then(|e| e.as_array()) {
            let parts: Vec<String> = errors
                .iter()
                .map(|e| {
                    let msg = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
                    let code = e.get("code").and_then(|m| m.as_str()).unwrap_or("");
                    if msg.is_empty() {
                        code.to_lowercase()
                    } else {
                        msg.to_string()
                    }
                })
                .filter(|s| !s.is_empty())
                .collect();
            if !parts.is_empty() {
                return parts.join("; ");
            }
        }
        if let Some(d) = v
            .get("details")
            .or_else(|| v.get("error"))
            .and_then(|d| d.as_str())
        {
            return d.to_string();
        }
    }
    let body = body.trim();
    if body.is_empty() || body.len() > 300 {
        status
            .canonical_reason()
            .unwrap_or("no message")
            .to_lowercase()
    } else {
        body.to_string()
    }
}

/// Turns a failed response into the error naming what was being done.
pub(crate) async fn status_error(resp: Response, op: &Op, attempts: u32) -> RegistryError {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let message = error_message(&body, status);
    let (action, target) = (op.action.clone(), op.target.clone());
    match status.as_u16() {
        401 => RegistryError::Unauthorized {
            action,
            target,
            message,
        },
        403 => RegistryError::Denied {
            action,
            target,
            message,
        },
        404 => RegistryError::NotFound {
            action,
            target,
            message,
        },
        429 => RegistryError::RateLimited {
            action,
            target,
            attempts,
            message,
        },
        s @ 500..=599 => RegistryError::Server {
            action,
            target,
            status: s,
            attempts,
            message,
        },
        s => RegistryError::UnexpectedStatus {
            action,
            target,
            status: s,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts() {
        assert_eq!(registry_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_host("docker.io"), "docker.io");
        assert_eq!(registry_host("http://localhost:5000/"), "localhost:5000");
    }

    #[test]
    fn loopback_and_insecure() {
        let c = RegistryClient::new(ClientConfig {
            insecure: vec!["reg.lan:5000".into()],
            ..ClientConfig::default()
        })
        .unwrap();
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:1",
            "127.3.4.5",
            "[::1]:5000",
            "reg.lan:5000",
        ] {
            assert!(c.allows_http(h), "{h}");
        }
        for h in ["example.com", "reg.lan:5001", "10.0.0.1:5000"] {
            assert!(!c.allows_http(h), "{h}");
        }
    }

    #[tokio::test]
    async fn plain_http_is_refused_for_other_hosts() {
        let c = RegistryClient::new(ClientConfig::default()).unwrap();
        let op = Op::new("pull manifest", "x");
        let err = c.ping("http://10.1.2.3:5000", &op, None).await.unwrap_err();
        assert!(
            matches!(err, RegistryError::InsecureNotAllowed { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("10.1.2.3:5000"), "{err}");
    }

    #[test]
    fn registry_error_bodies() {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
        assert_eq!(
            error_message(body, StatusCode::UNAUTHORIZED),
            "authentication required"
        );
        assert_eq!(error_message("", StatusCode::NOT_FOUND), "not found");
    }
}

//! Image references, parsed and normalised the way Docker's distribution/reference does:
//! `alpine` is `docker.io/library/alpine:latest`, `user/app` is `docker.io/user/app:latest`, and the
//! first path component is a registry only when it contains `.` or `:` or is `localhost`.

use std::fmt;
use std::str::FromStr;

use crate::RegistryError;

/// The registry Docker uses for names without one.
pub const DOCKER_HUB: &str = "docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A normalised image reference: registry, repository path, optional tag and digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `text`. A reference with neither tag nor digest gets the tag `latest`.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let err = |reason: &str| RegistryError::InvalidReference {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(err("empty reference"));
        }
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err(
                "cannot specify 64-byte hexadecimal strings (use sha256:<hex> after @)",
            ));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((name, digest)) => {
                validate_digest(digest).map_err(|r| err(&r))?;
                (name, Some(digest.to_string()))
            }
            None => (text, None),
        };
        // A tag is the part after the last ':' that follows the last '/', so "host:5000/app"
        // keeps its port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                let tag = &rest[i + 1..];
                validate_tag(tag).map_err(|r| err(&r))?;
                (&rest[..i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(err("missing repository name"));
        }
        let (mut registry, mut repository) = split_domain(name);
        if registry == "index.docker.io" {
            registry = DOCKER_HUB.to_string();
        }
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if registry != DOCKER_HUB || name.contains('/') {
            validate_domain(&registry).map_err(|r| err(&r))?;
        }
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase"));
        }
        validate_path(&repository).map_err(|r| err(&r))?;
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(err("repository name must not be more than 255 characters"));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (with port), e.g. `docker.io` or `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry, e.g. `library/alpine`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` when the text had neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:...`), if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Self, RegistryError> {
        validate_tag(tag).map_err(|reason| RegistryError::InvalidReference {
            reference: format!("{}:{tag}", self.name()),
            reason,
        })?;
        Ok(Self {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: &str) -> Result<Self, RegistryError> {
        validate_digest(digest).map_err(|reason| RegistryError::InvalidReference {
            reference: format!("{}@{digest}", self.name()),
            reason,
        })?;
        Ok(Self {
            digest: Some(digest.to_string()),
            ..self.clone()
        })
    }

    /// Docker's short form: `alpine:3.20` for `docker.io/library/alpine:3.20`.
    pub fn familiar(&self) -> String {
        let name = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        let mut s = name;
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest);
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Docker's rule: the first component is a registry when it has `.` or `:`, is `localhost`, or
/// has an uppercase letter (repository paths cannot).
fn split_domain(name: &str) -> (String, String) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    }
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let bad = || format!("invalid registry host {domain:?}");
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        // An IPv6 literal: [::1]:5000.
        let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        match after.strip_prefix(':') {
            Some(port) => ("", Some(port)),
            None if after.is_empty() => ("", None),
            None => return Err(bad()),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid port in registry host {domain:?}"));
        }
    }
    if !domain.starts_with('[') {
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(bad());
            }
        }
    }
    Ok(())
}

/// Path components: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, separated by `/`.
fn validate_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err("empty path component in repository name".to_string());
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err(format!(
                "invalid repository component {component:?}: must start and end with [a-z0-9]"
            ));
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if alnum(b) {
                i += 1;
                continue;
            }
            // A separator run: ".", "_", "__" or one or more "-".
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let valid = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
            if !valid {
                return Err(format!(
                    "invalid repository component {component:?}: bad separator {sep:?}"
                ));
            }
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}} expected"
        ))
    }
}

pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("invalid digest {digest:?}: algorithm:hex expected"));
    };
    let alg_ok = !algorithm.is_empty()
        && algorithm.as_bytes()[0].is_ascii_alphabetic()
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b));
    if !alg_ok {
        return Err(format!("invalid digest algorithm in {digest:?}"));
    }
    let hex_ok = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_ok {
        return Err(format!(
            "invalid digest {digest:?}: hex part too short or not hex"
        ));
    }
    if algorithm == "sha256" && (hex.len() != 64 || hex.bytes().any(|b| b.is_ascii_uppercase())) {
        return Err(format!(
            "invalid digest {digest:?}: sha256 needs 64 lowercase hex digits"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn short_names_normalise_like_docker() {
        assert_eq!(norm("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(norm("alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("index.docker.io/library/x:1"), "docker.io/library/x:1");
        assert_eq!(norm("docker.io/redis"), "docker.io/library/redis:latest");
        assert_eq!(norm("a/b/c"), "docker.io/a/b/c:latest");
    }

    #[test]
    fn domains_ports_and_localhost() {
        let r = Reference::parse("localhost:5000/team/app:v1").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("localhost:5000", "team/app", Some("v1"))
        );
        let r = Reference::parse("localhost/app").unwrap();
        assert_eq!(r.registry(), "localhost");
        let r = Reference::parse("registry.example.com/app").unwrap();
        assert_eq!(r.registry(), "registry.example.com");
        let r = Reference::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        let r = Reference::parse("[::1]:5000/app:2").unwrap();
        assert_eq!((r.registry(), r.tag()), ("[::1]:5000", Some("2")));
        // "localhost5000" has no dot or colon: a Docker Hub user name.
        assert_eq!(
            Reference::parse("myhost/app").unwrap().registry(),
            "docker.io"
        );
    }

    #[test]
    fn digests_and_tag_plus_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("alpine@{d}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(r.manifest_reference(), d);
        let r = Reference::parse(&format!("alpine:3.20@{d}")).unwrap();
        assert_eq!(r.tag(), Some("3.20"));
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(r.familiar(), format!("alpine:3.20@{d}"));
    }

    #[test]
    fn errors_name_the_reference() {
        for (text, needle) in [
            ("Alpine", "lowercase"),
            ("docker.io/Library/alpine", "lowercase"),
            ("alpine:", "invalid tag"),
            ("alpine:-x", "invalid tag"),
            ("alpine@sha256:abc", "hex"),
            ("a//b", "empty path component"),
            ("a_-b", "bad separator"),
            ("", "empty"),
            (&"f".repeat(64), "64-byte"),
            ("host:port/app", "invalid port"),
        ] {
            let err = Reference::parse(text).unwrap_err().to_string();
            assert!(err.contains(&format!("{text:?}")), "{err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn uppercase_first_component_is_a_domain() {
        // distribution/reference treats a component with uppercase as a host name.
        let r = Reference::parse("Example/app").unwrap();
        assert_eq!((r.registry(), r.repository()), ("Example", "app"));
    }
}

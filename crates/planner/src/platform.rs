//! Platforms (`os/arch[/variant]`) as BuildKit normalises them, so `linux/x86_64` and
//! `linux/amd64` name the same thing and `TARGETPLATFORM` prints the canonical form.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An OCI platform: operating system, CPU architecture and optional variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

const KNOWN_OS: &[&str] = &[
    "linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos", "aix",
];

impl Platform {
    /// The platform this binary runs on: the only one steps can run on until emulation exists.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// A platform from its text form (`linux/amd64`, `linux/arm/v7`, `linux/aarch64`),
    /// normalised the way containerd's platforms package does. `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.trim().split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        let os = parts[0].to_ascii_lowercase();
        if !KNOWN_OS.contains(&os.as_str()) {
            return None;
        }
        let given_variant = parts.get(2).map(|v| v.to_ascii_lowercase());
        let (architecture, default_variant): (&str, Option<&str>) =
            match parts[1].to_ascii_lowercase().as_str() {
                "amd64" | "x86_64" | "x86-64" => ("amd64", None),
                "arm64" | "aarch64" => ("arm64", None),
                "arm" | "armhf" => ("arm", Some("v7")),
                "armel" => ("arm", Some("v6")),
                "386" | "i386" | "i686" => ("386", None),
                "ppc64le" => ("ppc64le", None),
                "s390x" => ("s390x", None),
                "riscv64" => ("riscv64", None),
                "mips64le" => ("mips64le", None),
                "loong64" => ("loong64", None),
                _ => return None,
            };
        let variant = match (architecture, given_variant) {
            // arm64/v8 is the only arm64 there is; containerd drops the variant.
            ("arm64", Some(v)) if v == "v8" => None,
            ("arm", Some(v)) => match v.as_str() {
                "v5" | "v6" | "v7" | "v8" => Some(v),
                "5" | "6" | "7" | "8" => Some(format!("v{v}")),
                _ => return None,
            },
            ("amd64", Some(v)) => match v.as_str() {
                "v1" => None,
                "v2" | "v3" | "v4" => Some(v),
                _ => return None,
            },
            (_, Some(_)) => return None,
            (_, None) => default_variant.map(str::to_string),
        };
        Some(Platform {
            os,
            architecture: architecture.to_string(),
            variant,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Platform;

    #[test]
    fn aliases_normalise_to_canonical_names() {
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("linux/aarch64").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("Linux/ARM/6").unwrap().to_string(),
            "linux/arm/v6"
        );
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "plan9/amd64",
            "linux/z80",
            "linux/amd64/v9",
            "a/b/c/d",
        ] {
            assert!(Platform::parse(bad).is_none(), "{bad:?} parsed");
        }
    }
}

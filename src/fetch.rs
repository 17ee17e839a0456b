//! `ADD <url>` downloads for `forge build`: the HTTP side of forge-build's `RemoteFetcher`.
//! Each download streams to its file while hashing, so a large file is never held in memory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use forge_build::{FetchError, FetchedFile, RemoteFetcher};
use sha2::{Digest, Sha256};

/// Downloads over HTTP(S), trusting the system's roots plus `--tls-ca`.
#[derive(Debug, Clone, Default)]
pub(crate) struct HttpFetcher {
    pub(crate) tls_ca: Option<PathBuf>,
    /// The build's cancel flag: a download stops when it is raised, stalled or not.
    pub(crate) cancel: Option<Arc<AtomicBool>>,
}

impl RemoteFetcher for HttpFetcher {
    fn fetch(&self, url: &str, dest_file: &Path) -> Result<FetchedFile, FetchError> {
        // Flattened so the build's one-line error shows the cause (DNS, TLS, status).
        self.download(url, dest_file)
            .map_err(|e| format!("{e:#}").into())
    }
}

impl HttpFetcher {
    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("forge/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30));
        if let Some(path) = &self.tls_ca {
            let pem =
                std::fs::read(path).with_context(|| format!("--tls-ca {}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--tls-ca {}", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(builder.build()?)
    }

    fn download(&self, url: &str, dest_file: &Path) -> anyhow::Result<FetchedFile> {
        // A runtime and client per download: steps download from several worker threads at
        // once, and a pooled connection must not outlive the runtime that drives it.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = self.client()?;
        let transfer = async {
            let mut response = client.get(url).send().await?;
            let status = response.status();
            if !status.is_success() {
                bail!("HTTP status {status}");
            }
            let last_modified = response
                .headers()
                .get(reqwest::header::LAST_MODIFIED)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_http_date);
            let mut out = std::fs::File::create(dest_file)
                .with_context(|| format!("creating {}", dest_file.display()))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = response.chunk().await? {
                hasher.update(&chunk);
                size += chunk.len() as u64;
                out.write_all(&chunk)
                    .with_context(|| format!("writing {}", dest_file.display()))?;
            }
            out.flush()
                .with_context(|| format!("writing {}", dest_file.display()))?;
            let sha256 = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Ok(FetchedFile {
                sha256,
                last_modified,
                size,
            })
        };
        runtime.block_on(async {
            tokio::select! {
                result = transfer => result,
                () = crate::cancel::raised(self.cancel.clone()) => bail!("download cancelled"),
            }
        })
    }
}

/// An HTTP date in its preferred form (RFC 9110 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`);
/// the obsolete forms are ignored, which leaves the file's mtime as the download time.
fn parse_http_date(text: &str) -> Option<SystemTime> {
    let (_, rest) = text.trim().split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *s > 60 || year < 1970 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse_to_unix_time() {
        let at = |s| parse_http_date(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(at("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(at("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951_825_600));
        assert_eq!(at("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(at("garbage"), None);
    }
}

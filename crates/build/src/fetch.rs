//! `ADD <url>`: the seam through which a build downloads a remote file, and the downloads a
//! build holds between computing a step's cache key and running it. The HTTP client lives
//! in the binary (a [`RemoteFetcher`]), so this crate stays free of network code.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::error::BuildError;
use crate::images::lock;

/// Downloads `ADD` URL sources.
pub trait RemoteFetcher: Sync {
    /// Downloads `url` into `dest_file` (following redirects) and reports what it got. A
    /// non-success status is an error naming the URL and the status.
    fn fetch(&self, url: &str, dest_file: &Path) -> Result<FetchedFile, FetchError>;
}

/// Why a download failed, in the fetcher's words (the build adds the URL and the step).
pub type FetchError = Box<dyn std::error::Error + Send + Sync>;

/// A file a [`RemoteFetcher`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    /// Hex SHA-256 of the bytes written (no `sha256:` prefix).
    pub sha256: String,
    /// The `Last-Modified` header, when the server sent one.
    pub last_modified: Option<SystemTime>,
    /// Bytes written.
    pub size: u64,
}

/// A fetcher for builds that have no network access to offer: every URL is an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFetcher;

impl RemoteFetcher for NoFetcher {
    fn fetch(&self, _url: &str, _dest_file: &Path) -> Result<FetchedFile, FetchError> {
        Err("this build cannot download remote ADD sources".into())
    }
}

/// `http://` and `https://` sources: the ones forge downloads (git sources are refused).
pub(crate) fn is_http(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// The name BuildKit gives a downloaded file: the last component of the URL's path, or
/// `__unnamed__` when the path has none.
pub(crate) fn url_file_name(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    // Go's path.Base, as BuildKit uses it: trailing slashes do not count.
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    match path.trim_end_matches('/').rsplit('/').next() {
        Some(base) if !base.is_empty() && base != "." && base != ".." => base.to_owned(),
        _ => "__unnamed__".to_owned(),
    }
}

/// The hex digest of `--checksum=sha256:<hex>`, or `None` when it is not of that form.
pub(crate) fn parse_checksum(checksum: &str) -> Option<String> {
    let hex = checksum.strip_prefix("sha256:")?;
    let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| hex.to_ascii_lowercase())
}

/// One URL source, downloaded.
#[derive(Debug, Clone)]
pub(crate) struct Download {
    pub(crate) url: String,
    /// Relative to the download directory: `<index>/<name>`.
    pub(crate) rel: String,
    pub(crate) file: FetchedFile,
}

/// The URL sources of one step, downloaded into `dir`.
#[derive(Debug)]
pub(crate) struct Downloads {
    pub(crate) dir: PathBuf,
    pub(crate) files: Vec<Download>,
}

impl Drop for Downloads {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The build's fetcher and the downloads made while computing keys, by op id, so a step
/// that misses does not fetch its URLs twice.
pub(crate) struct Remote<'a> {
    pub(crate) fetcher: &'a dyn RemoteFetcher,
    held: Mutex<BTreeMap<usize, Downloads>>,
}

impl<'a> Remote<'a> {
    pub(crate) fn new(fetcher: &'a dyn RemoteFetcher) -> Self {
        Remote {
            fetcher,
            held: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn keep(&self, op: usize, downloads: Downloads) {
        lock(&self.held).insert(op, downloads);
    }

    pub(crate) fn take(&self, op: usize) -> Option<Downloads> {
        lock(&self.held).remove(&op)
    }
}

/// Downloads `urls` into `dir` as BuildKit leaves them: named after the URL, mode 0600,
/// mtime from `Last-Modified`. `checksum` (hex) is verified for each; `fail` turns a
/// fetcher error or a mismatch into the step's error.
pub(crate) fn download_all(
    fetcher: &dyn RemoteFetcher,
    urls: &[&str],
    dir: PathBuf,
    checksum: Option<&str>,
    fail: &dyn Fn(&str, FetchFailure) -> BuildError,
) -> Result<Downloads, BuildError> {
    let mut downloads = Downloads {
        dir,
        files: Vec::new(),
    };
    for (i, url) in urls.iter().enumerate() {
        let rel = format!("{i}/{}", url_file_name(url));
        let path = downloads.dir.join(&rel);
        let parent = downloads.dir.join(i.to_string());
        std::fs::create_dir_all(&parent).map_err(|e| BuildError::io(&parent, e))?;
        let file = fetcher
            .fetch(url, &path)
            .map_err(|e| fail(url, FetchFailure::Fetch(e)))?;
        if let Some(expected) = checksum {
            if !file.sha256.eq_ignore_ascii_case(expected) {
                return Err(fail(
                    url,
                    FetchFailure::Checksum {
                        expected: format!("sha256:{expected}"),
                        actual: format!("sha256:{}", file.sha256),
                    },
                ));
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| BuildError::io(&path, e))?;
        if let Some(mtime) = file.last_modified {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(mtime))
                .map_err(|e| BuildError::io(&path, e))?;
        }
        downloads.files.push(Download {
            url: (*url).to_owned(),
            rel,
            file,
        });
    }
    Ok(downloads)
}

/// Why one URL could not be added.
pub(crate) enum FetchFailure {
    Fetch(FetchError),
    Checksum { expected: String, actual: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_file_name_is_the_last_path_component() {
        assert_eq!(url_file_name("https://h/a/b/tool.tar.gz"), "tool.tar.gz");
        assert_eq!(url_file_name("http://h:8080/x?y=/z#f"), "x");
        assert_eq!(url_file_name("https://h"), "__unnamed__");
        assert_eq!(url_file_name("https://h/"), "__unnamed__");
        assert_eq!(url_file_name("https://h/dir/"), "dir");
    }

    #[test]
    fn checksum_must_be_sha256_hex() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_checksum(&format!("sha256:{hex}")), Some(hex.clone()));
        assert_eq!(parse_checksum(&hex), None);
        assert_eq!(parse_checksum("sha256:abc"), None);
        assert_eq!(parse_checksum(&format!("sha512:{hex}")), None);
    }
}

//! Pull: resolve a reference to a manifest (choosing a platform from an index or manifest
//! list), then stream the config and layers into the sink, several at once, each verified
//! against its sha256 and resumed with a Range request when a transfer is cut off.

use std::io::Write;

use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};

use crate::client::{status_error, Endpoint, Op};
use crate::media_type::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::{BlobError, BlobSink, Platform, Reference, RegistryClient, RegistryError};

const MAX_MANIFEST: usize = 4 << 20;

/// The manifest a reference resolves to for one platform.
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    /// The endpoint that answered: the registry, or a mirror.
    pub endpoint: String,
    /// The image index or manifest list the reference named, if it named one: (digest, bytes).
    pub index: Option<(String, Vec<u8>)>,
    /// The platform manifest's digest (what FROM's cache key uses).
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its bytes, exactly as the registry served them.
    pub bytes: Vec<u8>,
    /// The parsed manifest.
    pub manifest: ImageManifest,
}

/// What a pull produced: every blob named here is in the sink.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference as requested.
    pub reference: Reference,
    /// The manifest (and index) resolved.
    pub resolved: ResolvedManifest,
    /// Blobs downloaded by this pull (config and layers).
    pub fetched: Vec<String>,
    /// Blobs the sink already had.
    pub reused: Vec<String>,
}

impl PulledImage {
    /// The config blob's digest.
    pub fn config_digest(&self) -> String {
        self.resolved.manifest.config().digest().to_string()
    }

    /// The layer descriptors, base first.
    pub fn layers(&self) -> &[Descriptor] {
        self.resolved.manifest.layers()
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn pull_scope(reference: &Reference) -> Vec<String> {
    vec![format!("repository:{}:pull", reference.repository())]
}

impl RegistryClient {
    /// Resolves `reference` to the manifest for `platform`, trying docker.io's mirrors first.
    pub async fn resolve(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedManifest, RegistryError> {
        let mut last = None;
        for spec in self.pull_endpoints(reference.registry()) {
            match self.resolve_at(&spec, reference, platform).await {
                Ok(r) => return Ok(r),
                Err(e)
                    if spec != reference.registry()
                        && !matches!(e, RegistryError::DigestMismatch { .. }) =>
                {
                    // A mirror without the image (or unreachable): fall back, as Docker does.
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("the registry itself is always tried"))
    }

    async fn resolve_at(
        &self,
        spec: &str,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedManifest, RegistryError> {
        let op = Op::new("pull manifest", reference.to_string());
        let ep = self.endpoint(spec, &op).await?;
        let scopes = pull_scope(reference);
        let (media_type, bytes, digest) = self
            .get_manifest(&ep, &scopes, &op, reference, reference.manifest_reference())
            .await?;
        let bad = |media_type: &str, reason: String| RegistryError::BadManifest {
            action: op.action.clone(),
            target: op.target.clone(),
            media_type: media_type.to_string(),
            reason,
        };
        if media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST {
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| bad(&media_type, e.to_string()))?;
            let chosen = select_platform(&index, platform).ok_or_else(|| {
                RegistryError::NoMatchingPlatform {
                    target: reference.to_string(),
                    platform: platform.to_string(),
                    available: available_platforms(&index),
                }
            })?;
            let child = chosen.digest().to_string();
            let child_op = Op::new("pull manifest", format!("{}@{child}", reference.name()));
            let (child_type, child_bytes, child_digest) = self
                .get_manifest(&ep, &scopes, &child_op, reference, &child)
                .await?;
            if child_type == OCI_INDEX || child_type == DOCKER_MANIFEST_LIST {
                return Err(bad(
                    &child_type,
                    "an index inside an index is not supported".to_string(),
                ));
            }
            let manifest: ImageManifest = serde_json::from_slice(&child_bytes)
                .map_err(|e| bad(&child_type, e.to_string()))?;
            return Ok(ResolvedManifest {
                endpoint: spec.to_string(),
                index: Some((digest, bytes)),
                digest: child_digest,
                media_type: child_type,
                bytes: child_bytes,
                manifest,
            });
        }
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| bad(&media_type, e.to_string()))?;
        Ok(ResolvedManifest {
            endpoint: spec.to_string(),
            index: None,
            digest,
            media_type,
            bytes,
            manifest,
        })
    }

    /// GETs a manifest by tag or digest; verifies the digest when one is known.
    async fn get_manifest(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        op: &Op,
        reference: &Reference,
        what: &str,
    ) -> Result<(String, Vec<u8>, String), RegistryError> {
        let url = format!("{}/v2/{}/manifests/{what}", ep.base, reference.repository());
        let accept = [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
        ]
        .join(", ");
        let (resp, attempts) = self
            .send(ep, scopes, op, &|c| Ok(c.get(&url).header(ACCEPT, &accept)))
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(resp, op, attempts).await);
        }
        let header_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(|e| RegistryError::Connect {
            action: op.action.clone(),
            target: op.target.clone(),
            url: url.clone(),
            reason: crate::error::cause_chain(&e),
        })?;
        if bytes.len() > MAX_MANIFEST {
            return Err(RegistryError::BadManifest {
                action: op.action.clone(),
                target: op.target.clone(),
                media_type: header_type.unwrap_or_default(),
                reason: format!(
                    "{} bytes is more than the 4 MiB a manifest may have",
                    bytes.len()
                ),
            });
        }
        let digest = sha256_digest(&bytes);
        let expected = if what.contains(':') && what.starts_with("sha256:") {
            Some(what.to_string())
        } else {
            header_digest.filter(|d| d.starts_with("sha256:"))
        };
        if let Some(expected) = expected {
            if expected != digest {
                return Err(RegistryError::DigestMismatch {
                    action: op.action.clone(),
                    target: op.target.clone(),
                    digest: expected,
                    actual: digest,
                });
            }
        }
        let media_type = manifest_media_type(header_type.as_deref(), &bytes);
        if media_type.contains("distribution.manifest.v1") {
            return Err(RegistryError::BadManifest {
                action: op.action.clone(),
                target: op.target.clone(),
                media_type,
                reason: "Docker schema 1 manifests are not supported".to_string(),
            });
        }
        Ok((media_type, bytes.to_vec(), digest))
    }

    /// Pulls `reference` for `platform` into `sink`: index, manifest, config and layers.
    /// Blobs the sink has are skipped; the others are fetched `config.concurrency` at a time.
    pub async fn pull(
        &self,
        reference: &Reference,
        platform: &Platform,
        sink: &dyn BlobSink,
    ) -> Result<PulledImage, RegistryError> {
        let resolved = self.resolve(reference, platform).await?;
        let op = Op::new("pull", reference.to_string());
        let ep = self.endpoint(&resolved.endpoint, &op).await?;
        let scopes = pull_scope(reference);
        let mut wanted: Vec<(String, u64)> = vec![(
            resolved.manifest.config().digest().to_string(),
            resolved.manifest.config().size(),
        )];
        for layer in resolved.manifest.layers() {
            let d = layer.digest().to_string();
            if !wanted.iter().any(|(w, _)| *w == d) {
                wanted.push((d, layer.size()));
            }
        }
        let results: Vec<(String, bool)> = futures_util::stream::iter(wanted)
            .map(|(digest, size)| {
                let (ep, scopes) = (&ep, &scopes);
                async move {
                    let fetched = self
                        .fetch_blob(ep, scopes, reference, sink, &digest, size)
                        .await?;
                    Ok::<_, RegistryError>((digest, fetched))
                }
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .try_collect()
            .await?;
        // Manifests go in last, so a store never holds a manifest whose blobs are missing.
        let put = |digest: &str, bytes: &[u8]| -> Result<(), RegistryError> {
            let blob_err = |source| RegistryError::Blob {
                action: "store manifest".to_string(),
                target: format!("{}@{digest}", reference.name()),
                source,
            };
            if sink.has_blob(digest) {
                return Ok(());
            }
            let mut w = sink
                .begin_blob(digest, bytes.len() as u64)
                .map_err(blob_err)?;
            if w.offset() > 0 {
                w.abort();
                w = sink
                    .begin_blob(digest, bytes.len() as u64)
                    .map_err(blob_err)?;
            }
            w.write_all(bytes).map_err(|source| {
                blob_err(BlobError::Write {
                    digest: digest.to_string(),
                    source,
                })
            })?;
            w.commit().map_err(blob_err)
        };
        put(&resolved.digest, &resolved.bytes)?;
        if let Some((digest, bytes)) = &resolved.index {
            put(digest, bytes)?;
        }
        let (fetched, reused) = results.into_iter().partition::<Vec<_>, _>(|(_, f)| *f);
        Ok(PulledImage {
            reference: reference.clone(),
            resolved,
            fetched: fetched.into_iter().map(|(d, _)| d).collect(),
            reused: reused.into_iter().map(|(d, _)| d).collect(),
        })
    }

    /// Streams one blob into the sink; returns false when the sink already had it.
    async fn fetch_blob(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        reference: &Reference,
        sink: &dyn BlobSink,
        digest: &str,
        size: u64,
    ) -> Result<bool, RegistryError> {
        if sink.has_blob(digest) {
            return Ok(false);
        }
        let op = Op::new("pull blob", format!("{}@{digest}", reference.name()));
        let blob_err = |source| RegistryError::Blob {
            action: op.action.clone(),
            target: op.target.clone(),
            source,
        };
        let mut writer = sink.begin_blob(digest, size).map_err(blob_err)?;
        if writer.offset() > size {
            writer.abort();
            writer = sink.begin_blob(digest, size).map_err(blob_err)?;
        }
        let url = format!("{}/v2/{}/blobs/{digest}", ep.base, reference.repository());
        let mut interruptions = 0;
        while writer.offset() < size {
            let offset = writer.offset();
            let (resp, attempts) = self
                .send(ep, scopes, &op, &|c| {
                    let rb = c.get(&url);
                    Ok(if offset > 0 {
                        rb.header(RANGE, format!("bytes={offset}-"))
                    } else {
                        rb
                    })
                })
                .await?;
            match resp.status() {
                StatusCode::PARTIAL_CONTENT if offset > 0 && range_start(&resp) == Some(offset) => {
                }
                StatusCode::OK if offset == 0 => {}
                StatusCode::OK | StatusCode::PARTIAL_CONTENT => {
                    // The registry ignored the range (or answered another one): start over.
                    writer.abort();
                    writer = sink.begin_blob(digest, size).map_err(blob_err)?;
                    if writer.offset() != 0 {
                        return Err(RegistryError::Blob {
                            action: op.action.clone(),
                            target: op.target.clone(),
                            source: BlobError::Write {
                                digest: digest.to_string(),
                                source: std::io::Error::other("sink kept staged bytes after abort"),
                            },
                        });
                    }
                    continue;
                }
                _ => return Err(status_error(resp, &op, attempts).await),
            }
            let mut body = resp.bytes_stream();
            let mut cut = false;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(chunk) => {
                        let got = writer.offset() + chunk.len() as u64;
                        if got > size {
                            writer.abort();
                            return Err(RegistryError::SizeMismatch {
                                action: op.action.clone(),
                                target: op.target.clone(),
                                digest: digest.to_string(),
                                expected: size,
                                actual: got,
                            });
                        }
                        writer.write_all(&chunk).map_err(|source| {
                            blob_err(BlobError::Write {
                                digest: digest.to_string(),
                                source,
                            })
                        })?;
                    }
                    Err(_) => {
                        cut = true;
                        break;
                    }
                }
            }
            if cut || writer.offset() < size {
                // Cut off midway: keep what arrived and ask for the rest.
                interruptions += 1;
                if interruptions > self.config.max_retries {
                    // The staged bytes stay in the sink: the next pull resumes from them.
                    return Err(RegistryError::Interrupted {
                        action: op.action.clone(),
                        target: op.target.clone(),
                        received: writer.offset(),
                        expected: size,
                        attempts: interruptions,
                    });
                }
                tokio::time::sleep(self.backoff(interruptions)).await;
            }
        }
        writer.flush().map_err(|source| {
            blob_err(BlobError::Write {
                digest: digest.to_string(),
                source,
            })
        })?;
        match writer.commit() {
            Ok(()) => Ok(true),
            Err(BlobError::DigestMismatch { actual, .. }) => Err(RegistryError::DigestMismatch {
                action: op.action.clone(),
                target: op.target.clone(),
                digest: digest.to_string(),
                actual,
            }),
            Err(e) => Err(blob_err(e)),
        }
    }
}

fn range_start(resp: &reqwest::Response) -> Option<u64> {
    // "bytes 100-199/200"
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

fn manifest_media_type(header: Option<&str>, bytes: &[u8]) -> String {
    let known = [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ];
    if let Some(h) = header.filter(|h| known.contains(h) || h.contains("distribution.manifest.v1"))
    {
        return h.to_string();
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        return mt.to_string();
    }
    if v.get("manifests").is_some() {
        OCI_INDEX.to_string()
    } else {
        OCI_MANIFEST.to_string()
    }
}

/// os, architecture, variant.
type PlatformFields = (String, String, Option<String>);

fn platform_fields(d: &Descriptor) -> Option<PlatformFields> {
    let p = d.platform().as_ref()?;
    Some((
        p.os().to_string(),
        p.architecture().to_string(),
        p.variant().clone(),
    ))
}

fn select_platform<'a>(index: &'a ImageIndex, want: &Platform) -> Option<&'a Descriptor> {
    let candidates: Vec<(&Descriptor, PlatformFields)> = index
        .manifests()
        .iter()
        .filter_map(|d| platform_fields(d).map(|p| (d, p)))
        .collect();
    candidates
        .iter()
        .find(|(_, (os, arch, variant))| want.matches(os, arch, variant.as_deref()))
        .or_else(|| {
            // No exact variant: when none was asked for, any variant of the architecture will do.
            candidates.iter().find(|(_, (os, arch, _))| {
                want.variant.is_none() && *os == want.os && *arch == want.architecture
            })
        })
        .map(|(d, _)| *d)
}

fn available_platforms(index: &ImageIndex) -> String {
    let list: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(platform_fields)
        .map(|(os, arch, variant)| match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        })
        .collect();
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_selection_from_a_docker_manifest_list() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let list = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST,
            "manifests": [
                {"mediaType": DOCKER_MANIFEST, "size": 1, "digest": d('a'), "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": DOCKER_MANIFEST, "size": 1, "digest": d('b'), "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
                {"mediaType": DOCKER_MANIFEST, "size": 1, "digest": d('c'), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": OCI_MANIFEST, "size": 1, "digest": d('d'), "platform": {"os": "unknown", "architecture": "unknown"}}
            ]
        });
        let index: ImageIndex = serde_json::from_value(list).unwrap();
        let pick =
            |p: &str| select_platform(&index, &p.parse().unwrap()).map(|d| d.digest().to_string());
        assert_eq!(pick("linux/amd64"), Some(d('a')));
        assert_eq!(pick("linux/arm64"), Some(d('c')));
        assert_eq!(pick("linux/arm/v6"), Some(d('b')));
        assert_eq!(
            pick("linux/arm"),
            Some(d('b')),
            "no v7: any arm variant when none asked"
        );
        assert_eq!(pick("linux/arm/v7"), None);
        assert_eq!(pick("windows/amd64"), None);
        assert!(available_platforms(&index).contains("linux/arm/v6"));
    }

    #[test]
    fn media_type_from_body_when_header_is_generic() {
        assert_eq!(
            manifest_media_type(Some("application/json"), br#"{"manifests":[]}"#),
            OCI_INDEX
        );
        assert_eq!(
            manifest_media_type(
                None,
                format!(r#"{{"mediaType":"{DOCKER_MANIFEST}"}}"#).as_bytes()
            ),
            DOCKER_MANIFEST
        );
    }
}

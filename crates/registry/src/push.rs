//! Push: every blob a manifest names (HEAD first, then a cross-repository mount when the caller
//! knows a repository that holds it, then a monolithic or chunked upload), the manifest last.
//! Blobs come from the source as they are pushed; compression happens before, in the caller.

use std::io::Read;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::{ImageIndex, ImageManifest};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};

use crate::client::{status_error, Endpoint, Op};
use crate::media_type::{DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::{BlobError, BlobSource, Reference, RegistryClient, RegistryError};

/// Choices for one push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Repositories on the same registry that may already hold the blobs (for example the
    /// base image's): the first one is asked to mount each missing blob (201: mounted; 202: uploaded).
    pub mount_from: Vec<String>,
}

/// What happened to one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry already had it in the repository (HEAD said so).
    Existed,
    /// Mounted from another repository of the same registry (201 to the mount request).
    Mounted { from: String },
    /// Uploaded: `chunks` is 0 for a monolithic PUT, else the number of PATCH requests.
    Uploaded { chunks: u32 },
}

/// The result of a push.
#[derive(Debug, Clone)]
pub struct PushReport {
    /// The digest of the manifest (or index) pushed under the target reference.
    pub manifest_digest: String,
    /// Every blob the manifests name and what happened to it, in manifest order.
    pub blobs: Vec<(String, BlobPush)>,
}

impl PushReport {
    /// How many blobs were mounted.
    pub fn mounted(&self) -> usize {
        self.blobs
            .iter()
            .filter(|(_, b)| matches!(b, BlobPush::Mounted { .. }))
            .count()
    }
}

fn read_all(source: &dyn BlobSource, digest: &str, op: &Op) -> Result<Vec<u8>, RegistryError> {
    let blob_err = |source| RegistryError::Blob {
        action: op.action.clone(),
        target: op.target.clone(),
        source,
    };
    let mut reader = source.open_blob(digest).map_err(blob_err)?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).map_err(|e| {
        blob_err(BlobError::Read {
            digest: digest.to_string(),
            source: e,
        })
    })?;
    Ok(out)
}

type ChunkRead = tokio::task::JoinHandle<(Box<dyn Read + Send>, std::io::Result<Vec<u8>>)>;

/// Reads the next `want` bytes of `reader` on a blocking thread, handing the reader back.
fn read_chunk(mut reader: Box<dyn Read + Send>, want: u64) -> ChunkRead {
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(want as usize);
        let res = (&mut reader).take(want).read_to_end(&mut buf).map(|_| buf);
        (reader, res)
    })
}

fn media_type_of(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match v.get("mediaType").and_then(|m| m.as_str()) {
        Some(mt) => mt.to_string(),
        None if v.get("manifests").is_some() => OCI_INDEX.to_string(),
        None => OCI_MANIFEST.to_string(),
    }
}

/// A reader as a stream of chunks, read on a blocking thread so the runtime is never stalled.
fn reader_stream(
    mut reader: Box<dyn Read + Send>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = vec![0u8; 1 << 20];
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                break;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

impl RegistryClient {
    /// Pushes the manifest (or index) `manifest_digest` and everything it names from `source`
    /// to `target` (tagged with its tag, or pushed by digest). Returns the manifest digest.
    pub async fn push(
        &self,
        source: &dyn BlobSource,
        manifest_digest: &str,
        target: &Reference,
        options: &PushOptions,
    ) -> Result<PushReport, RegistryError> {
        let op = Op::new("push", target.to_string());
        let ep = self.endpoint(target.registry(), &op).await?;
        let mut scopes = vec![format!("repository:{}:pull,push", target.repository())];
        for from in &options.mount_from {
            if from != target.repository() {
                // A mount needs pull access to the source repository in the same token.
                scopes.push(format!("repository:{from}:pull"));
            }
        }
        // One token for the whole push, before the blobs go concurrently (each would fetch its own).
        self.authorization(&ep, &scopes, &op).await?;
        let bytes = read_all(source, manifest_digest, &op)?;
        let media_type = media_type_of(&bytes);
        let mut blobs = Vec::new();
        if media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST {
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadManifest {
                    action: op.action.clone(),
                    target: op.target.clone(),
                    media_type: media_type.clone(),
                    reason: e.to_string(),
                })?;
            for child in index.manifests() {
                let child_digest = child.digest().to_string();
                let child_bytes = read_all(source, &child_digest, &op)?;
                blobs.extend(
                    self.push_image_blobs(&ep, &scopes, source, &child_bytes, target, options)
                        .await?,
                );
                self.put_manifest(&ep, &scopes, target, &child_digest, &child_bytes)
                    .await?;
            }
        } else {
            blobs.extend(
                self.push_image_blobs(&ep, &scopes, source, &bytes, target, options)
                    .await?,
            );
        }
        let tag_or_digest = target
            .tag()
            .map(str::to_string)
            .unwrap_or_else(|| manifest_digest.to_string());
        let digest = self
            .put_manifest(&ep, &scopes, target, &tag_or_digest, &bytes)
            .await?;
        Ok(PushReport {
            manifest_digest: digest,
            blobs,
        })
    }

    async fn push_image_blobs(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        source: &dyn BlobSource,
        manifest_bytes: &[u8],
        target: &Reference,
        options: &PushOptions,
    ) -> Result<Vec<(String, BlobPush)>, RegistryError> {
        let manifest: ImageManifest =
            serde_json::from_slice(manifest_bytes).map_err(|e| RegistryError::BadManifest {
                action: "push".to_string(),
                target: target.to_string(),
                media_type: media_type_of(manifest_bytes),
                reason: e.to_string(),
            })?;
        let mut digests = vec![manifest.config().digest().to_string()];
        for l in manifest.layers() {
            let d = l.digest().to_string();
            if !digests.contains(&d) {
                digests.push(d);
            }
        }
        futures_util::stream::iter(digests)
            .map(|digest| async move {
                let outcome = self
                    .push_blob(ep, scopes, source, &digest, target, options)
                    .await?;
                Ok::<_, RegistryError>((digest, outcome))
            })
            .buffered(self.config.concurrency.max(1))
            .try_collect()
            .await
    }

    async fn push_blob(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        source: &dyn BlobSource,
        digest: &str,
        target: &Reference,
        options: &PushOptions,
    ) -> Result<BlobPush, RegistryError> {
        let repo = target.repository();
        let op = Op::new("push blob", format!("{}@{digest}", target.name()));
        let blob_err = |source| RegistryError::Blob {
            action: op.action.clone(),
            target: op.target.clone(),
            source,
        };
        let size = source.blob_size(digest).map_err(blob_err)?;
        let head_url = format!("{}/v2/{repo}/blobs/{digest}", ep.base);
        let (resp, attempts) = self
            .send(ep, scopes, &op, &|c| Ok(c.head(&head_url)))
            .await?;
        match resp.status() {
            s if s.is_success() => return Ok(BlobPush::Existed),
            StatusCode::NOT_FOUND => {}
            _ => return Err(status_error(resp, &op, attempts).await),
        }
        let uploads = format!("{}/v2/{repo}/blobs/uploads/", ep.base);
        let mut location = None;
        // Like Docker, one mount attempt: a 202 opens the upload session used below.
        if let Some(from) = options.mount_from.iter().find(|f| f.as_str() != repo) {
            let mount_op = Op::new(
                "mount blob",
                format!("{}@{digest} from {from}", target.name()),
            );
            let (resp, attempts) = self
                .send(ep, scopes, &mount_op, &|c| {
                    Ok(c.post(&uploads)
                        .query(&[("mount", digest), ("from", from.as_str())])
                        .header(CONTENT_LENGTH, 0))
                })
                .await?;
            match resp.status() {
                StatusCode::CREATED => return Ok(BlobPush::Mounted { from: from.clone() }),
                // Not mountable from there: the registry opened an upload session instead.
                StatusCode::ACCEPTED => {
                    location = Some(self.location(ep, &resp, &mount_op)?);
                }
                _ => return Err(status_error(resp, &mount_op, attempts).await),
            }
        }
        let location = match location {
            Some(l) => l,
            None => {
                let (resp, attempts) = self
                    .send(ep, scopes, &op, &|c| {
                        Ok(c.post(&uploads).header(CONTENT_LENGTH, 0))
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(status_error(resp, &op, attempts).await);
                }
                self.location(ep, &resp, &op)?
            }
        };
        if size > self.config.chunk_threshold {
            let chunks = self
                .upload_chunked(ep, scopes, source, digest, size, location, &op)
                .await?;
            return Ok(BlobPush::Uploaded { chunks });
        }
        let put_url = with_digest(&location, digest);
        let (resp, attempts) = self
            .send(ep, scopes, &op, &|c| {
                let reader = source.open_blob(digest).map_err(blob_err)?;
                Ok(c.put(&put_url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size)
                    .body(reqwest::Body::wrap_stream(reader_stream(reader))))
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(resp, &op, attempts).await);
        }
        Ok(BlobPush::Uploaded { chunks: 0 })
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_chunked(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        source: &dyn BlobSource,
        digest: &str,
        size: u64,
        mut location: String,
        op: &Op,
    ) -> Result<u32, RegistryError> {
        let blob_err = |source| RegistryError::Blob {
            action: op.action.clone(),
            target: op.target.clone(),
            source,
        };
        let chunk_size = self.config.chunk_size.max(1);
        let read_err = |source| {
            blob_err(BlobError::Read {
                digest: digest.to_string(),
                source,
            })
        };
        // The next chunk is read while the current one is sent.
        let reader = source.open_blob(digest).map_err(blob_err)?;
        let mut pending = Some(read_chunk(reader, chunk_size.min(size)));
        let mut offset = 0u64;
        let mut chunks = 0u32;
        while offset < size {
            let want = chunk_size.min(size - offset);
            let (reader, chunk) = pending
                .take()
                .expect("a read is pending while bytes remain")
                .await
                .map_err(|e| read_err(std::io::Error::other(e)))?;
            let chunk = Bytes::from(chunk.map_err(read_err)?);
            if chunk.len() as u64 != want {
                return Err(RegistryError::SizeMismatch {
                    action: op.action.clone(),
                    target: op.target.clone(),
                    digest: digest.to_string(),
                    expected: size,
                    actual: offset + chunk.len() as u64,
                });
            }
            if offset + want < size {
                pending = Some(read_chunk(reader, chunk_size.min(size - offset - want)));
            }
            let end = offset + want - 1;
            let url = location.clone();
            let (resp, attempts) = self
                .send(ep, scopes, op, &|c| {
                    Ok(c.patch(&url)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header("Content-Range", format!("{offset}-{end}"))
                        .header(CONTENT_LENGTH, want)
                        .body(chunk.clone()))
                })
                .await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(status_error(resp, op, attempts).await);
            }
            location = self.location(ep, &resp, op)?;
            offset += want;
            chunks += 1;
        }
        let put_url = with_digest(&location, digest);
        let (resp, attempts) = self
            .send(ep, scopes, op, &|c| {
                Ok(c.put(&put_url).header(CONTENT_LENGTH, 0))
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(resp, op, attempts).await);
        }
        Ok(chunks)
    }

    async fn put_manifest(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        target: &Reference,
        tag_or_digest: &str,
        bytes: &[u8],
    ) -> Result<String, RegistryError> {
        let op = Op::new(
            "push manifest",
            format!("{}:{tag_or_digest}", target.name()),
        );
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let url = format!(
            "{}/v2/{}/manifests/{tag_or_digest}",
            ep.base,
            target.repository()
        );
        let media_type = media_type_of(bytes);
        let body = Bytes::copy_from_slice(bytes);
        let (resp, attempts) = self
            .send(ep, scopes, &op, &|c| {
                Ok(c.put(&url)
                    .header(CONTENT_TYPE, &media_type)
                    .body(body.clone()))
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(resp, &op, attempts).await);
        }
        if let Some(answer) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if answer != digest {
                return Err(RegistryError::DigestMismatch {
                    action: op.action.clone(),
                    target: op.target.clone(),
                    digest,
                    actual: answer.to_string(),
                });
            }
        }
        Ok(digest)
    }

    /// The upload location a response names, made absolute.
    fn location(
        &self,
        ep: &Endpoint,
        resp: &reqwest::Response,
        op: &Op,
    ) -> Result<String, RegistryError> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::UnexpectedStatus {
                action: op.action.clone(),
                target: op.target.clone(),
                status: resp.status().as_u16(),
                message: "no Location header in the upload answer".to_string(),
            })?;
        Ok(
            if loc.starts_with("http://") || loc.starts_with("https://") {
                loc.to_string()
            } else if loc.starts_with('/') {
                format!("{}{loc}", ep.base)
            } else {
                format!("{}/{loc}", ep.base)
            },
        )
    }
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={}", digest.replace(':', "%3A"))
}

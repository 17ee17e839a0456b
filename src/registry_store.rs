//! The store as the registry client's blob sink and source, and the image provider that
//! pulls base images that are not in the store (FROM, `forge pull`).
//!
//! Downloads are staged under `<root>/v1/downloads/` (kept across runs, unlike `tmp/`), so a
//! killed pull resumes where it stopped; a finished download is checked against its digest
//! and only then enters the store.

use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use forge_build::{BuildError, ImageProvider, ProvidedImage};
use forge_cache::Store;
use forge_planner::Platform;
use forge_registry::{
    BlobError, BlobSink, BlobSource, BlobWriter, ClientConfig, Reference, RegistryClient,
    StagedBlob,
};
use oci_spec::image::{Descriptor, Digest, MediaType};

/// Bytes per blob while a pull or push runs: a bar per layer on a terminal, a line per
/// finished blob otherwise.
#[derive(Debug)]
pub(crate) struct TransferProgress {
    multi: Option<indicatif::MultiProgress>,
    verb: &'static str,
}

impl TransferProgress {
    pub(crate) fn new(verb: &'static str) -> Arc<Self> {
        use std::io::IsTerminal;
        Arc::new(TransferProgress {
            multi: std::io::stderr()
                .is_terminal()
                .then(indicatif::MultiProgress::new),
            verb,
        })
    }

    fn start(self: &Arc<Self>, digest: &str, size: u64, done: u64) -> BlobMeter {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(indicatif::ProgressBar::new(size));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(short(digest));
            bar.set_position(done);
            bar
        });
        BlobMeter {
            progress: self.clone(),
            digest: digest.to_owned(),
            bar,
            bytes: done,
        }
    }
}

fn short(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

/// One blob's meter.
#[derive(Debug)]
struct BlobMeter {
    progress: Arc<TransferProgress>,
    digest: String,
    bar: Option<indicatif::ProgressBar>,
    bytes: u64,
}

impl BlobMeter {
    fn add(&mut self, n: usize) {
        self.bytes += n as u64;
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
    }

    fn finish(&mut self) {
        match self.bar.take() {
            Some(bar) => bar.finish(),
            None => eprintln!(
                "  {} {}: {} bytes",
                self.progress.verb,
                short(&self.digest),
                self.bytes
            ),
        }
    }
}

/// A reader that feeds a meter (pushes).
struct MeteredReader {
    inner: Box<dyn Read + Send>,
    meter: BlobMeter,
    finished: bool,
}

impl Read for MeteredReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.meter.add(n);
        if n == 0 && !buf.is_empty() && !self.finished {
            self.finished = true;
            self.meter.finish();
        }
        Ok(n)
    }
}

/// The store seen by the registry client.
#[derive(Debug, Clone)]
pub(crate) struct StoreBlobs {
    pub(crate) store: Arc<Store>,
    /// Where transfer progress goes, if anywhere.
    pub(crate) progress: Option<Arc<TransferProgress>>,
}

impl StoreBlobs {
    fn downloads(&self) -> PathBuf {
        self.store.dir().join("downloads")
    }
}

fn parse_digest(digest: &str) -> Result<Digest, BlobError> {
    digest.parse().map_err(|_| BlobError::Missing {
        digest: digest.to_owned(),
    })
}

impl BlobSink for StoreBlobs {
    fn has_blob(&self, digest: &str) -> bool {
        parse_digest(digest).is_ok_and(|d| self.store.has_blob(&d))
    }

    fn begin_blob(&self, digest: &str, size: u64) -> Result<Box<dyn BlobWriter>, BlobError> {
        let dir = self.downloads();
        fs::create_dir_all(&dir).map_err(|source| BlobError::Io {
            path: dir.clone(),
            source,
        })?;
        let staged = StagedBlob::open(dir.join(digest.replace(':', "-")), digest)?;
        let meter = self
            .progress
            .as_ref()
            .map(|p| p.start(digest, size, staged.offset()));
        Ok(Box::new(StoreBlobWriter {
            store: self.store.clone(),
            staged,
            digest: digest.to_owned(),
            meter,
        }))
    }
}

/// A download staged under `downloads/`, published into the store once its digest checks.
struct StoreBlobWriter {
    store: Arc<Store>,
    staged: StagedBlob,
    digest: String,
    meter: Option<BlobMeter>,
}

impl Write for StoreBlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.staged.write(buf)?;
        if let Some(m) = &mut self.meter {
            m.add(n);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.staged.flush()
    }
}

impl BlobWriter for StoreBlobWriter {
    fn offset(&self) -> u64 {
        self.staged.offset()
    }

    fn commit(self: Box<Self>) -> Result<(), BlobError> {
        let StoreBlobWriter {
            store,
            staged,
            digest,
            mut meter,
        } = *self;
        if let Some(m) = &mut meter {
            m.finish();
        }
        let staging = staged.verify()?;
        let expected = parse_digest(&digest)?;
        let file = fs::File::open(&staging).map_err(|source| BlobError::Io {
            path: staging.clone(),
            source,
        })?;
        let result = store.put_blob_from_reader(file, Some(&expected));
        let _ = fs::remove_file(&staging);
        result.map(|_| ()).map_err(|e| BlobError::Io {
            path: staging,
            source: io::Error::other(e.to_string()),
        })
    }

    fn abort(self: Box<Self>) {
        self.staged.abort();
    }
}

impl BlobSource for StoreBlobs {
    fn blob_size(&self, digest: &str) -> Result<u64, BlobError> {
        let d = parse_digest(digest)?;
        self.store.blob_size(&d).map_err(|_| BlobError::Missing {
            digest: digest.to_owned(),
        })
    }

    fn open_blob(&self, digest: &str) -> Result<Box<dyn Read + Send>, BlobError> {
        let d = parse_digest(digest)?;
        let file = self
            .store
            .open_blob_verified(&d)
            .map_err(|_| BlobError::Missing {
                digest: digest.to_owned(),
            })?;
        match &self.progress {
            Some(p) => {
                let size = self.store.blob_size(&d).unwrap_or(0);
                Ok(Box::new(MeteredReader {
                    inner: Box::new(file),
                    meter: p.start(digest, size, 0),
                    finished: false,
                }))
            }
            None => Ok(Box::new(file)),
        }
    }
}

/// Registry options shared by build, pull and push.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct RegistryArgs {
    /// An extra CA certificate file (PEM) trusted for registries.
    #[arg(long = "tls-ca", global = false)]
    pub(crate) tls_ca: Option<PathBuf>,
    /// A registry (`host:port`) that may be reached over plain HTTP.
    #[arg(long = "insecure-registry")]
    pub(crate) insecure: Vec<String>,
    /// A mirror for docker.io, tried first.
    #[arg(long = "registry-mirror")]
    pub(crate) mirrors: Vec<String>,
}

impl RegistryArgs {
    pub(crate) fn client(&self) -> anyhow::Result<RegistryClient> {
        let mut mirrors = self.mirrors.clone();
        if let Ok(env) = std::env::var("FORGE_REGISTRY_MIRRORS") {
            mirrors.extend(env.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
        }
        Ok(RegistryClient::new(ClientConfig {
            tls_ca: self.tls_ca.clone(),
            insecure: self.insecure.clone(),
            mirrors,
            ..ClientConfig::default()
        })?)
    }
}

fn registry_platform(p: &Platform) -> forge_registry::Platform {
    forge_registry::Platform::new(&p.os, &p.architecture, p.variant.as_deref())
}

/// Pulls `reference` into the store and tags it; returns the canonical name and descriptor.
pub(crate) fn pull_into_store(
    client: &RegistryClient,
    store: &Arc<Store>,
    reference: &Reference,
    platform: &Platform,
    progress: Option<Arc<TransferProgress>>,
    cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> anyhow::Result<(String, Descriptor)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sink = StoreBlobs {
        store: store.clone(),
        progress,
    };
    let platform = registry_platform(platform);
    let pulled = runtime.block_on(async {
        tokio::select! {
            pulled = client.pull(reference, &platform, &sink) => Ok(pulled?),
            () = crate::cancel::raised(cancel) => Err(anyhow::anyhow!("pull cancelled")),
        }
    })?;
    let resolved = &pulled.resolved;
    let descriptor = Descriptor::new(
        MediaType::from(resolved.media_type.as_str()),
        resolved.bytes.len() as u64,
        resolved.digest.parse::<Digest>()?,
    );
    let name = reference.to_string();
    store.tag_image(&name, &descriptor)?;
    Ok((name, descriptor))
}

/// Base images from the store, pulled from their registry when missing (or with `--pull`).
pub(crate) struct PullingProvider {
    pub(crate) store: Arc<Store>,
    pub(crate) registry: RegistryArgs,
    /// Made at the first pull: loading the system's root certificates costs about 9 ms, which a
    /// build from local images (a rebuild, a CI run with a warm store) should not pay.
    pub(crate) client: std::sync::OnceLock<RegistryClient>,
    /// Progress lines go here (stderr), one per pulled image.
    pub(crate) quiet: bool,
    /// The build's cancel flag: a pull in progress stops when it is raised.
    pub(crate) cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl PullingProvider {
    /// The provider; an extra `--tls-ca` is read at once, so a bad one fails the build before
    /// it starts, whether or not it pulls.
    pub(crate) fn new(
        store: Arc<Store>,
        registry: &RegistryArgs,
        quiet: bool,
        cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> anyhow::Result<Self> {
        let client = std::sync::OnceLock::new();
        if registry.tls_ca.is_some() {
            let _ = client.set(registry.client()?);
        }
        Ok(PullingProvider {
            store,
            registry: registry.clone(),
            client,
            quiet,
            cancel,
        })
    }

    fn client(&self) -> anyhow::Result<&RegistryClient> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let made = self.registry.client()?;
        Ok(self.client.get_or_init(|| made))
    }
}

impl ImageProvider for PullingProvider {
    fn provide(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
        pull: bool,
    ) -> Result<Option<ProvidedImage>, BuildError> {
        // `FROM oci-layout://DIR[:TAG|@DIGEST]`: the image is copied (digest-checked) from the
        // layout into the store under a name of its own.
        if let Some(layout) = reference.strip_prefix("oci-layout://") {
            let name =
                crate::oci_layout::import(store, layout).map_err(|e| BuildError::BadImage {
                    reference: reference.to_owned(),
                    what: format!("{e:#}"),
                })?;
            let name = Reference::parse(&name)
                .map(|r| r.to_string())
                .unwrap_or(name);
            return Ok(store
                .resolve_image(&name)?
                .map(|descriptor| ProvidedImage { name, descriptor }));
        }
        let parsed = Reference::parse(reference).map_err(|e| BuildError::BadImage {
            reference: reference.to_owned(),
            what: e.to_string(),
        })?;
        let name = parsed.to_string();
        let local = store.resolve_image(&name)?;
        if let (Some(descriptor), false) = (&local, pull) {
            return Ok(Some(ProvidedImage {
                name,
                descriptor: descriptor.clone(),
            }));
        }
        if !self.quiet {
            eprintln!("pulling {name}");
        }
        let progress = (!self.quiet).then(|| TransferProgress::new("pulled"));
        let cancel = self.cancel.clone();
        let pulled = self.client().and_then(|client| {
            pull_into_store(client, &self.store, &parsed, platform, progress, cancel)
        });
        match pulled {
            Ok((name, descriptor)) => Ok(Some(ProvidedImage { name, descriptor })),
            // With --pull and no registry reachable, the local image still serves.
            Err(_) if local.is_some() => {
                Ok(local.map(|descriptor| ProvidedImage { name, descriptor }))
            }
            Err(e) => Err(BuildError::BadImage {
                reference: name,
                what: format!("not in the local store, and pulling it failed: {e:#}"),
            }),
        }
    }
}

/// How `forge push` compresses layers that the store keeps uncompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PushCompression {
    Gzip,
    Zstd,
}

/// The manifest to push for `descriptor`: each uncompressed layer replaced by its compressed
/// blob, made once per (layer, compression) and remembered in the store, so a second push
/// compresses nothing. The config is unchanged (diff ids name uncompressed content), so the
/// image id stays the same; the pushed manifest digest differs from the local one.
pub(crate) fn manifest_for_push(
    store: &Store,
    descriptor: &Descriptor,
    compression: PushCompression,
) -> anyhow::Result<Descriptor> {
    let bytes = store.read_blob_verified(descriptor.digest())?;
    let Ok(mut manifest) = serde_json::from_slice::<oci_spec::image::ImageManifest>(&bytes) else {
        // An index (or something else): pushed as it is.
        return Ok(descriptor.clone());
    };
    let mut changed = false;
    let mut layers = Vec::new();
    for layer in manifest.layers() {
        if *layer.media_type() != MediaType::ImageLayer {
            layers.push(layer.clone());
            continue;
        }
        changed = true;
        layers.push(compressed_layer(store, layer, compression)?);
    }
    if !changed {
        return Ok(descriptor.clone());
    }
    manifest.set_layers(layers);
    let json = serde_json::to_vec(&manifest)?;
    let info = store.put_blob_bytes(&json)?;
    Ok(Descriptor::new(
        descriptor.media_type().clone(),
        info.size,
        info.digest,
    ))
}

fn compressed_layer(
    store: &Store,
    layer: &Descriptor,
    compression: PushCompression,
) -> anyhow::Result<Descriptor> {
    let (label, media_type) = match compression {
        PushCompression::Gzip => ("gzip", MediaType::ImageLayerGzip),
        PushCompression::Zstd => ("zstd", MediaType::ImageLayerZstd),
    };
    let key = forge_cache::CacheKey::builder("push-layer/v1")
        .extra("layer", layer.digest().to_string().as_bytes())
        .extra("compression", label.as_bytes())
        .finish();
    if let Some(record) = store.get_record(&key)? {
        if let Some(blob) = record.layer_blob.filter(|b| store.has_blob(b)) {
            return Ok(Descriptor::new(media_type, store.blob_size(&blob)?, blob));
        }
    }
    let mut input = store.open_blob_verified(layer.digest())?;
    let mut writer = store.blob_writer()?;
    match compression {
        PushCompression::Gzip => {
            // A fixed header (no name, mtime 0), so the same layer always gives the same blob.
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut writer, flate2::Compression::default());
            io::copy(&mut input, &mut enc)?;
            enc.finish()?;
        }
        PushCompression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(&mut writer, 3)?;
            io::copy(&mut input, &mut enc)?;
            enc.finish()?;
        }
    }
    let info = writer.commit(None)?;
    store.put_record(
        &key,
        &forge_cache::CacheRecord {
            layer_blob: Some(info.digest.clone()),
            diff_id: None,
            description: format!("{label} of layer {}", layer.digest()),
            ..forge_cache::CacheRecord::default()
        },
    )?;
    Ok(Descriptor::new(media_type, info.size, info.digest))
}

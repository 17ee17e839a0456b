//! Image outputs: an OCI layout directory or tar (`type=oci`), a docker-archive (`type=docker`),
//! a flattened root filesystem as a tar (`type=tar`) or a directory (`type=local`). They read
//! blobs through [`BlobSource`] so the store, a registry cache or memory can supply them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest, MediaType,
};

use crate::hash::{digest_of, HashingReader};
use crate::image::BuiltImage;
use crate::tarfmt::{self, Header};
use crate::{apply_layer, decompress, write_layer, ExportError, LayerOptions, UnpackOptions};

/// The annotation naming an image in an OCI layout's index.json (what `oci:DIR:NAME` selects).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Largest JSON blob (manifest, index, config) read into memory.
const MAX_JSON_BLOB: u64 = 32 << 20;

/// Where outputs read blobs from.
pub trait BlobSource {
    /// Opens the blob with this digest for reading. Callers verify what they read.
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>>;
}

/// Blobs of an OCI image layout directory (`<dir>/blobs/<algorithm>/<hex>`), e.g. the store's.
#[derive(Clone, Debug)]
pub struct OciLayoutBlobs {
    root: PathBuf,
}

impl OciLayoutBlobs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        OciLayoutBlobs { root: root.into() }
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_ref())
            .join(digest.digest())
    }
}

impl BlobSource for OciLayoutBlobs {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(File::open(self.path(digest))?))
    }
}

/// Small blobs held in memory (a freshly built config and manifest), in front of another source.
pub struct MemoryBlobs<'a> {
    blobs: HashMap<String, Vec<u8>>,
    fallback: Option<&'a dyn BlobSource>,
}

impl std::fmt::Debug for MemoryBlobs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBlobs")
            .field("blobs", &self.blobs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<'a> MemoryBlobs<'a> {
    pub fn new(fallback: Option<&'a dyn BlobSource>) -> Self {
        MemoryBlobs {
            blobs: HashMap::new(),
            fallback,
        }
    }

    /// Adds a blob and returns its digest.
    pub fn insert(&mut self, bytes: Vec<u8>) -> Digest {
        let digest = digest_of(&bytes);
        self.blobs.insert(digest.to_string(), bytes);
        digest
    }

    /// Adds an image's config and manifest.
    pub fn insert_image(&mut self, image: &BuiltImage) {
        self.insert(image.config_json.clone());
        self.insert(image.manifest_json.clone());
    }
}

impl BlobSource for MemoryBlobs<'_> {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        match (self.blobs.get(digest.as_ref()), self.fallback) {
            (Some(bytes), _) => Ok(Box::new(bytes.as_slice())),
            (None, Some(fallback)) => fallback.open_blob(digest),
            (None, None) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "blob not in memory",
            )),
        }
    }
}

fn open<'b>(
    blobs: &'b dyn BlobSource,
    desc: &Descriptor,
) -> Result<Box<dyn Read + 'b>, ExportError> {
    blobs
        .open_blob(desc.digest())
        .map_err(|source| ExportError::OpenBlob {
            digest: desc.digest().to_string(),
            source,
        })
}

fn check(desc: &Descriptor, reader: HashingReader<impl Read>) -> Result<(), ExportError> {
    let (actual, size) = reader.finish();
    if &actual != desc.digest() || size != desc.size() {
        return Err(ExportError::DigestMismatch {
            expected: desc.digest().to_string(),
            actual: actual.to_string(),
            size,
        });
    }
    Ok(())
}

fn read_err(desc: &Descriptor) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::OpenBlob {
        digest: desc.digest().to_string(),
        source,
    }
}

/// Reads a small JSON blob whole, verifying its digest.
fn read_blob(blobs: &dyn BlobSource, desc: &Descriptor) -> Result<Vec<u8>, ExportError> {
    let mut reader = HashingReader::new(open(blobs, desc)?.take(MAX_JSON_BLOB));
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(read_err(desc))?;
    check(desc, reader)?;
    Ok(bytes)
}

fn parse<T: serde::de::DeserializeOwned>(
    what: &str,
    desc: &Descriptor,
    bytes: &[u8],
) -> Result<T, ExportError> {
    serde_json::from_slice(bytes).map_err(|source| ExportError::Json {
        what: format!("{what} {}", desc.digest()),
        source,
    })
}

/// A manifest descriptor's manifest and config.
fn load_image(
    blobs: &dyn BlobSource,
    desc: &Descriptor,
) -> Result<(ImageManifest, ImageConfiguration, Vec<u8>), ExportError> {
    if !matches!(desc.media_type(), MediaType::ImageManifest)
        && desc.media_type().to_string() != "application/vnd.docker.distribution.manifest.v2+json"
    {
        return Err(ExportError::UnsupportedMediaType {
            digest: desc.digest().to_string(),
            media_type: desc.media_type().to_string(),
        });
    }
    let manifest: ImageManifest = parse("manifest", desc, &read_blob(blobs, desc)?)?;
    let config_bytes = read_blob(blobs, manifest.config())?;
    let config = parse("config", manifest.config(), &config_bytes)?;
    Ok((manifest, config, config_bytes))
}

/// A blob to copy, with its bytes if it is JSON already read (and verified).
type Blob = (Descriptor, Option<Vec<u8>>);

/// Every blob reachable from `roots`, children before the manifests and indexes naming them,
/// each once, with the bytes of the JSON ones.
fn collect_blobs(blobs: &dyn BlobSource, roots: &[Descriptor]) -> Result<Vec<Blob>, ExportError> {
    fn visit(
        blobs: &dyn BlobSource,
        desc: &Descriptor,
        seen: &mut HashSet<String>,
        out: &mut Vec<Blob>,
    ) -> Result<(), ExportError> {
        if !seen.insert(desc.digest().to_string()) {
            return Ok(());
        }
        let media_type = desc.media_type().to_string();
        if media_type.ends_with("manifest.v1+json") || media_type.ends_with("manifest.v2+json") {
            let bytes = read_blob(blobs, desc)?;
            let manifest: ImageManifest = parse("manifest", desc, &bytes)?;
            visit(blobs, manifest.config(), seen, out)?;
            for layer in manifest.layers() {
                visit(blobs, layer, seen, out)?;
            }
            out.push((desc.clone(), Some(bytes)));
        } else if media_type.ends_with("index.v1+json")
            || media_type.ends_with("manifest.list.v2+json")
        {
            let bytes = read_blob(blobs, desc)?;
            let index: ImageIndex = parse("index", desc, &bytes)?;
            for m in index.manifests() {
                visit(blobs, m, seen, out)?;
            }
            out.push((desc.clone(), Some(bytes)));
        } else if media_type.contains("config") {
            let bytes = read_blob(blobs, desc)?;
            out.push((desc.clone(), Some(bytes)));
        } else {
            out.push((desc.clone(), None));
        }
        Ok(())
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for root in roots {
        visit(blobs, root, &mut seen, &mut out)?;
    }
    Ok(out)
}

fn named(images: &[(String, Descriptor)]) -> Vec<Descriptor> {
    images
        .iter()
        .map(|(name, desc)| {
            let mut d = desc.clone();
            let mut annotations = d.annotations().clone().unwrap_or_default();
            annotations.insert(REF_NAME_ANNOTATION.to_owned(), name.clone());
            d.set_annotations(Some(annotations));
            d
        })
        .collect()
}

fn index_json(manifests: Vec<Descriptor>) -> Result<Vec<u8>, ExportError> {
    let index = oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|source| ExportError::Spec {
            what: "index.json",
            source,
        })?;
    let value = serde_json::to_value(&index).map_err(|source| ExportError::Json {
        what: "index.json".into(),
        source,
    })?;
    // Sorted keys: the same images give the same index.json.
    let sorted: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(value).map_err(|source| ExportError::Json {
            what: "index.json".into(),
            source,
        })?;
    serde_json::to_vec(&sorted).map_err(|source| ExportError::Json {
        what: "index.json".into(),
        source,
    })
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn out_err(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Output {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes (or adds to) an OCI image layout directory: the blobs of each image, and an index.json
/// entry per image with `org.opencontainers.image.ref.name` = its name, replacing an entry of the
/// same name. Blobs already present are kept; new ones are verified, then renamed into place.
pub fn write_oci_layout(
    dir: &Path,
    images: &[(String, Descriptor)],
    blobs: &dyn BlobSource,
) -> Result<(), ExportError> {
    let roots: Vec<Descriptor> = images.iter().map(|(_, d)| d.clone()).collect();
    for (desc, bytes) in collect_blobs(blobs, &roots)? {
        let alg_dir = dir.join("blobs").join(desc.digest().algorithm().as_ref());
        fs::create_dir_all(&alg_dir).map_err(out_err(&alg_dir))?;
        let path = alg_dir.join(desc.digest().digest());
        if fs::metadata(&path).is_ok_and(|m| m.len() == desc.size()) {
            continue;
        }
        let tmp = alg_dir.join(format!(".tmp-{}", desc.digest().digest()));
        let result = (|| {
            let mut file = File::create(&tmp).map_err(out_err(&tmp))?;
            match bytes {
                Some(bytes) => file.write_all(&bytes).map_err(out_err(&tmp))?,
                None => {
                    let mut reader = HashingReader::new(open(blobs, &desc)?);
                    io::copy(&mut reader, &mut file).map_err(out_err(&tmp))?;
                    check(&desc, reader)?;
                }
            }
            file.sync_all().map_err(out_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(out_err(&path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
    }
    let layout_path = dir.join("oci-layout");
    if !layout_path.exists() {
        write_atomically(&layout_path, OCI_LAYOUT)?;
    }
    let index_path = dir.join("index.json");
    let mut manifests: Vec<Descriptor> = match fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice::<ImageIndex>(&bytes)
            .map_err(|source| ExportError::Json {
                what: index_path.display().to_string(),
                source,
            })?
            .manifests()
            .clone(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(out_err(&index_path)(e)),
    };
    let names: HashSet<&str> = images.iter().map(|(n, _)| n.as_str()).collect();
    manifests.retain(|d| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME_ANNOTATION))
            .is_none_or(|n| !names.contains(n.as_str()))
    });
    manifests.extend(named(images));
    write_atomically(&index_path, &index_json(manifests)?)
}

/// Stages `bytes` beside `path`, fsyncs and renames, so readers see the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(out_err(path))
}

fn tar_err(what: &str) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Write {
        what: what.to_owned(),
        source,
    }
}

fn tar_dir<W: Write>(out: &mut W, path: &str) -> Result<(), ExportError> {
    tarfmt::write_header(out, &Header::dir(path.as_bytes())).map_err(tar_err(path))
}

fn tar_bytes<W: Write>(out: &mut W, path: &str, bytes: &[u8]) -> Result<(), ExportError> {
    tarfmt::write_header(out, &Header::file(path.as_bytes(), bytes.len() as u64))
        .map_err(tar_err(path))?;
    tarfmt::write_data(out, bytes, bytes.len() as u64).map_err(tar_err(path))
}

/// Streams a blob into the tar as `path`, verifying its digest on the way.
fn tar_blob<W: Write>(
    out: &mut W,
    path: &str,
    blobs: &dyn BlobSource,
    desc: &Descriptor,
) -> Result<(), ExportError> {
    tarfmt::write_header(out, &Header::file(path.as_bytes(), desc.size()))
        .map_err(tar_err(path))?;
    let mut reader = HashingReader::new(open(blobs, desc)?);
    io::copy(&mut (&mut reader).take(desc.size()), out).map_err(tar_err(path))?;
    // Read anything past the declared size too, so a longer blob fails the check.
    io::copy(&mut reader, &mut io::sink()).map_err(read_err(desc))?;
    check(desc, reader)?;
    tarfmt::write_padding(out, desc.size()).map_err(tar_err(path))
}

/// Writes an OCI image layout as a tar stream (`type=oci`): oci-layout, index.json naming each
/// image, and every blob under blobs/sha256/.
pub fn write_oci_archive(
    out: impl Write,
    images: &[(String, Descriptor)],
    blobs: &dyn BlobSource,
) -> Result<(), ExportError> {
    let mut out = io::BufWriter::with_capacity(256 * 1024, out);
    let roots: Vec<Descriptor> = images.iter().map(|(_, d)| d.clone()).collect();
    let all = collect_blobs(blobs, &roots)?;
    tar_bytes(&mut out, "oci-layout", OCI_LAYOUT)?;
    tar_bytes(&mut out, "index.json", &index_json(named(images))?)?;
    tar_dir(&mut out, "blobs/")?;
    let mut dirs = HashSet::new();
    for (desc, bytes) in &all {
        let alg = desc.digest().algorithm().as_ref().to_owned();
        if dirs.insert(alg.clone()) {
            tar_dir(&mut out, &format!("blobs/{alg}/"))?;
        }
        let path = format!("blobs/{alg}/{}", desc.digest().digest());
        match bytes {
            Some(bytes) => tar_bytes(&mut out, &path, bytes)?,
            None => tar_blob(&mut out, &path, blobs, desc)?,
        }
    }
    tarfmt::write_end(&mut out).map_err(tar_err("end of archive"))?;
    out.flush().map_err(tar_err("archive"))
}

fn is_uncompressed(desc: &Descriptor) -> bool {
    let m = desc.media_type().to_string();
    m == "application/vnd.oci.image.layer.v1.tar"
        || m == "application/vnd.docker.image.rootfs.diff.tar"
}

/// Writes a docker-archive (`type=docker`, what `docker load` and `skopeo docker-archive:` read):
/// manifest.json with Config, RepoTags and Layers, the config at blobs/sha256/<hex>, and each
/// layer uncompressed at blobs/sha256/<diff_id hex>. A compressed layer is decompressed twice
/// (once to learn its size and check its diff_id, once to copy) so nothing is held in memory.
pub fn write_docker_archive(
    out: impl Write,
    manifest: &Descriptor,
    repo_tags: &[String],
    blobs: &dyn BlobSource,
) -> Result<(), ExportError> {
    let mut out = io::BufWriter::with_capacity(256 * 1024, out);
    let (manifest, config, config_bytes) = load_image(blobs, manifest)?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ExportError::BaseLayerMismatch {
            diff_ids: diff_ids.len(),
            layers: manifest.layers().len(),
        });
    }
    tar_dir(&mut out, "blobs/")?;
    tar_dir(&mut out, "blobs/sha256/")?;
    let config_path = format!("blobs/sha256/{}", manifest.config().digest().digest());
    tar_bytes(&mut out, &config_path, &config_bytes)?;
    let mut layer_paths = Vec::new();
    let mut written = HashSet::new();
    for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let diff_digest =
            Digest::try_from(diff_id.as_str()).map_err(|source| ExportError::Spec {
                what: "diff_id in config",
                source,
            })?;
        let path = format!("blobs/sha256/{}", diff_digest.digest());
        layer_paths.push(path.clone());
        if !written.insert(path.clone()) {
            continue;
        }
        if is_uncompressed(layer) {
            tar_blob(&mut out, &path, blobs, layer)?;
            continue;
        }
        // First pass: the uncompressed size, and a check that it is the diff_id.
        let mut reader = HashingReader::new(decompress(open(blobs, layer)?)?);
        io::copy(&mut reader, &mut io::sink()).map_err(read_err(layer))?;
        let (actual, size) = reader.finish();
        if actual != diff_digest {
            return Err(ExportError::DigestMismatch {
                expected: diff_id.clone(),
                actual: actual.to_string(),
                size,
            });
        }
        tarfmt::write_header(&mut out, &Header::file(path.as_bytes(), size))
            .map_err(tar_err(&path))?;
        let reader = decompress(open(blobs, layer)?)?;
        tarfmt::write_data(&mut out, reader, size).map_err(tar_err(&path))?;
    }
    let docker_manifest = serde_json::json!([{
        "Config": config_path,
        "RepoTags": repo_tags,
        "Layers": layer_paths,
    }]);
    let bytes = serde_json::to_vec(&docker_manifest).map_err(|source| ExportError::Json {
        what: "manifest.json".into(),
        source,
    })?;
    tar_bytes(&mut out, "manifest.json", &bytes)?;
    tarfmt::write_end(&mut out).map_err(tar_err("end of archive"))?;
    out.flush().map_err(tar_err("archive"))
}

/// Flattens an image's layers onto the directory `dest` (`type=local`): whiteouts delete.
pub fn write_rootfs_dir(
    dest: &Path,
    manifest: &Descriptor,
    blobs: &dyn BlobSource,
    opts: &UnpackOptions,
) -> Result<(), ExportError> {
    let (manifest, _, _) = load_image(blobs, manifest)?;
    for layer in manifest.layers() {
        apply_layer(open(blobs, layer)?, dest, opts)?;
    }
    Ok(())
}

/// Writes an image's flattened root filesystem as one tar (`type=tar`). The layers are applied
/// in a fresh directory under `scratch` (on the store's filesystem), which is removed afterwards.
pub fn write_rootfs_tar(
    out: impl Write,
    manifest: &Descriptor,
    blobs: &dyn BlobSource,
    scratch: &Path,
    opts: &LayerOptions,
) -> Result<(), ExportError> {
    fs::create_dir_all(scratch).map_err(out_err(scratch))?;
    let dir = scratch.join(format!(
        "rootfs-{}-{}",
        std::process::id(),
        manifest.digest().digest()
    ));
    let result = (|| {
        write_rootfs_dir(&dir, manifest, blobs, &UnpackOptions::default())?;
        write_layer(&dir, out, opts).map(drop)
    })();
    let cleanup = fs::remove_dir_all(&dir);
    result?;
    cleanup.map_err(out_err(&dir))
}

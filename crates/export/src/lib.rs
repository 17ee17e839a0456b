//! forge-export: layers in and out of the store, OCI image config/manifest/index, and the image
//! outputs (`type=oci`, `type=docker`, `type=tar`, `type=local`).
//!
//! Everything streams: a layer is never held in memory, its digests are computed as it is written
//! (on a second thread, a few MiB behind the walk), and a layer bound for the store
//! ([`write_layer_to_store`]) is hashed once, by the store's own hasher.

mod error;
mod hash;
mod image;
mod layer;
mod output;
mod pgzip;
mod pipe;
mod prefetch;
mod sys;
mod tarfmt;
mod unpack;

pub use error::ExportError;
pub use image::{build_image, build_index, rfc3339, BaseImage, BuiltImage, BuiltIndex, ImageSpec};
pub use layer::{
    write_layer, write_layer_to_store, write_stacked_layer_to_store, Compression, LayerInfo,
    LayerOptions,
};
pub use output::{
    write_docker_archive, write_oci_archive, write_oci_layout, write_rootfs_dir, write_rootfs_tar,
    BlobSource, MemoryBlobs, OciLayoutBlobs, REF_NAME_ANNOTATION,
};
pub use unpack::{apply_layer, decompress, unpack_layer, UnpackOptions, UnpackStats};

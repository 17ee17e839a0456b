//! End-to-end tests of the real `forge` binary: `forge build` on real Dockerfiles and build
//! contexts against a busybox base image, then `forge run`, `forge inspect` and the store's
//! blobs to check what the image really holds. One test binary; `forgetest!` gives each test a
//! fresh store and context. Needs root (namespaces, overlayfs), as forge does.

mod harness;

mod add_url;
mod build;
mod cancel;
mod config;
mod copy;
mod images;
mod incremental;
mod more;
mod mounts;
mod named_contexts;
mod registry;
mod run;

//! The sandbox's integration tests, as root: real namespaces, overlays and runc. They fail
//! (never skip) when not run as root.

mod support;

mod basics;
mod isolation;
mod limits;
mod mounts;
mod runc;

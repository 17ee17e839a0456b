//! Integration tests of forge-export, one binary. They run as root (device nodes, chown, xattrs).

mod determinism;
mod image;
mod roundtrip;
mod safety;
mod store;
mod tools;
mod tree;

//! forge-executor: the sandbox that runs one RUN step in an isolated root filesystem made of
//! overlay layers, with its mounts, and reports the result; natively (namespaces, overlayfs,
//! pivot_root, capabilities, cgroups) or through runc from a generated config.json.
//! See docs/ARCHITECTURE.md for where it sits in forge.

mod cgroups;
mod error;
mod fileop;
mod init;
mod layer;
mod mounts;
mod native;
mod orphans;
mod output;
mod process;
mod runc;
mod sandbox;
mod spec;
mod syscall;
mod user;

pub use error::ExecError;
pub use fileop::{
    copy, copy_or_defer, list_source_files, path_below, resolve_owner, resolve_sources, ChmodSpec,
    CopyOptions, CopyReport, CopySource, CopySpec, DeferredCopy, FileOpError, Reuse, Staged,
};
pub use init::{sandbox_init_main, SANDBOX_INIT_ARG};
pub use orphans::reap_orphans;
pub use sandbox::run;
pub use spec::{
    ExitKind, MountSpec, NetworkMode, ResourceLimits, RunOutcome, Runtime, SandboxConfig,
    SandboxSpec, SecurityMode, Stream, DEFAULT_PATH,
};

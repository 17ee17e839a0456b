//! The errors of COPY/ADD file operations. Each variant names the source, destination or
//! archive entry a person has to look at; the lead folds this enum into `ExecError` later.

use std::io;
use std::path::PathBuf;

/// Why a COPY or ADD could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum FileOpError {
    /// A literal source path does not exist in the source tree (BuildKit: `"/x": not found`).
    #[error("{instruction} source {source_path:?}: not found")]
    SourceNotFound {
        instruction: &'static str,
        source_path: String,
    },
    /// The non-wildcard directory part of a wildcard source does not exist.
    #[error("{instruction} source {source_path:?}: lstat {base}: no such file or directory")]
    WildcardBaseMissing {
        instruction: &'static str,
        source_path: String,
        base: String,
    },
    /// Every source was a wildcard and none matched anything.
    #[error("{instruction} failed: no source files were specified ({} matched nothing)", sources.join(", "))]
    NoSourceFiles {
        instruction: &'static str,
        sources: Vec<String>,
    },
    /// Several files would land on one non-directory destination.
    #[error(
        "When using {instruction} with more than one source file, the destination must be a directory and end with a / (destination {dest:?})"
    )]
    DestinationNotDirectory {
        instruction: &'static str,
        dest: String,
    },
    /// URLs and git refs must be fetched by the caller before the copy.
    #[error(
        "{instruction} source {source_path:?} is remote; download it first and pass the local path"
    )]
    RemoteSourceUnsupported {
        instruction: &'static str,
        source_path: String,
    },
    /// A wildcard or --exclude pattern is malformed (Go filepath.Match syntax).
    #[error("invalid pattern {pattern:?}: {reason}")]
    BadPattern {
        pattern: String,
        reason: &'static str,
    },
    /// `--chmod` is neither octal (0..07777) nor a symbolic mode.
    #[error("invalid chmod parameter: {value:?}: {reason}")]
    InvalidChmod { value: String, reason: &'static str },
    /// `--chown` could not be parsed.
    #[error("invalid --chown value {value:?}: {reason}")]
    InvalidChown { value: String, reason: &'static str },
    /// `--chown` names a user absent from the target stage's /etc/passwd.
    #[error("--chown: unknown user {name:?}: not found in {}", file.display())]
    UnknownUser { name: String, file: PathBuf },
    /// `--chown` names a group absent from the target stage's /etc/group.
    #[error("--chown: unknown group {name:?}: not found in {}", file.display())]
    UnknownGroup { name: String, file: PathBuf },
    /// Symlink resolution inside a root went round in circles.
    #[error("too many levels of symbolic links resolving {path:?} inside {}", root.display())]
    SymlinkLoop { root: PathBuf, path: String },
    /// A directory would have to be written over a file or symlink (BuildKit refuses too).
    #[error("cannot copy to non-directory: {}", dest.display())]
    NotADirectory { dest: PathBuf },
    /// A file would have to replace an existing directory.
    #[error("cannot replace directory {} with a file", dest.display())]
    ReplaceDirectoryWithFile { dest: PathBuf },
    /// A filesystem call failed; `op` says which step, `path` on what.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Reading an archive given to ADD failed (corrupt data, truncated stream).
    #[error("ADD: reading archive {}: {source}", archive.display())]
    Archive {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The caller's cancel flag was set while the copy ran.
    #[error("{instruction} cancelled")]
    Cancelled { instruction: &'static str },
    /// Writing one entry of an archive given to ADD failed.
    #[error("ADD: archive {}: entry {entry:?}: {op}: {source}", archive.display())]
    ArchiveEntry {
        archive: PathBuf,
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl FileOpError {
    /// Shows destination conflicts as paths inside the image (`/usr/local/man`) rather than
    /// as host paths below the mounted rootfs.
    pub(crate) fn inside_rootfs(self, root: &std::path::Path) -> Self {
        let inside = |p: PathBuf| match p.strip_prefix(root) {
            Ok(rel) => std::path::Path::new("/").join(rel),
            Err(_) => p,
        };
        match self {
            Self::NotADirectory { dest } => Self::NotADirectory { dest: inside(dest) },
            Self::ReplaceDirectoryWithFile { dest } => {
                Self::ReplaceDirectoryWithFile { dest: inside(dest) }
            }
            other => other,
        }
    }
}

/// Shorthand for building [`FileOpError::Io`] in `map_err`.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> FileOpError {
    let path = path.into();
    move |source| FileOpError::Io { op, path, source }
}

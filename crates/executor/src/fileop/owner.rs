//! `--chown` resolution with BuildKit's rules: `user[:group]`, each part a number or a name;
//! names are looked up in the target stage's /etc/passwd and /etc/group (resolved inside the
//! stage's root); a user name alone takes that user's primary group, a numeric uid alone uses
//! the same number as gid. Unlike BuildKit, which silently falls back to 0 for an unknown
//! name, an unknown name is an error naming it (the Dockerfile reference says the build fails).

use std::path::Path;

use super::error::{io_err, FileOpError};
use super::scoped::{is_missing, resolve_in_root};

/// A numeric owner for everything a COPY writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// Resolves a `--chown` value against `dest_root`.
pub(crate) fn resolve_chown(value: &str, dest_root: &Path) -> Result<Owner, FileOpError> {
    let invalid = |reason| FileOpError::InvalidChown {
        value: value.to_string(),
        reason,
    };
    let (user, group) = match value.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (value, None),
    };
    if user.is_empty() {
        return Err(invalid("the user part is empty"));
    }
    if group.is_some_and(|g| g.is_empty() || g.contains(':')) {
        return Err(invalid(
            "the group part after ':' must be one name or number",
        ));
    }
    let mut owner = match user.parse::<u32>() {
        Ok(uid) => Owner { uid, gid: uid },
        Err(_) => {
            let (path, text) = read_id_file(dest_root, "/etc/passwd")?;
            lookup(&text, user, 3)
                .map(|(uid, gid)| Owner { uid, gid })
                .ok_or_else(|| FileOpError::UnknownUser {
                    name: user.to_string(),
                    file: path,
                })?
        }
    };
    if let Some(group) = group {
        owner.gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let (path, text) = read_id_file(dest_root, "/etc/group")?;
                lookup(&text, group, 2).map(|(gid, _)| gid).ok_or_else(|| {
                    FileOpError::UnknownGroup {
                        name: group.to_string(),
                        file: path,
                    }
                })?
            }
        };
    }
    Ok(owner)
}

/// Reads /etc/passwd or /etc/group of the target root; a missing file reads as empty, so the
/// lookup fails with "unknown user" naming that file.
fn read_id_file(root: &Path, name: &str) -> Result<(std::path::PathBuf, String), FileOpError> {
    let path = resolve_in_root(root, name, true)?;
    match std::fs::read(&path) {
        Ok(bytes) => Ok((path, String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if is_missing(&e) => Ok((path, String::new())),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Finds `name` in a colon-separated database; returns field 2 and field `second` as numbers.
fn lookup(text: &str, name: &str, second: usize) -> Option<(u32, u32)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| {
            let id = f.get(2)?.trim().parse().ok()?;
            let other = f
                .get(second)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(id);
            Some((id, other))
        })
}

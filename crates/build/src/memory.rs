//! Why did the cache miss? forge remembers, per build (context, Dockerfile, target), what
//! went into each step's key last time: the instruction, the files it read, its environment
//! (build args included) and the base image digest. On a miss it compares and names the input
//! that changed, which BuildKit cannot tell its users.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use forge_cache::CacheKey;
use forge_planner::{Op, OpKind};
use serde::{Deserialize, Serialize};

use crate::images::lock;

/// What went into one step's key.
#[derive(Debug, Clone)]
pub(crate) struct Ingredients {
    pub(crate) key: CacheKey,
    /// Context files read (path -> content digest).
    pub(crate) files: BTreeMap<String, String>,
    /// The files and symlinks below directories in `files` ([`detail_pairs`]), so a miss
    /// can name the file inside a copied directory that changed. Left empty when the memory
    /// already holds the same key ([`Memory::remembers`]): then it lists the same files.
    pub(crate) detail: String,
    /// `KEY=value` environment of a RUN (ENV and build args).
    pub(crate) env: Vec<String>,
    /// Keys of the step's inputs.
    pub(crate) inputs: Vec<String>,
    /// The manifest digest of a base image.
    pub(crate) image: Option<String>,
}

impl Ingredients {
    pub(crate) fn new(key: CacheKey) -> Self {
        Ingredients {
            key,
            files: BTreeMap::new(),
            detail: String::new(),
            env: Vec::new(),
            inputs: Vec::new(),
            image: None,
        }
    }
}

/// One remembered step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Remembered {
    name: String,
    key: String,
    #[serde(default)]
    files: BTreeMap<String, String>,
    /// [`detail_pairs`]: one string, not a map of thousands of entries, so that loading and
    /// saving the memory of a big context costs a copy rather than an allocation per file.
    #[serde(default, rename = "detail_pairs")]
    detail: String,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    inputs: Vec<String>,
    #[serde(default)]
    image: Option<String>,
}

/// The last build's steps, by slot (stage and position in it), and this build's.
#[derive(Debug)]
pub(crate) struct Memory {
    path: Option<PathBuf>,
    /// The last build's steps; a step this build remembers unchanged moves to `current`.
    previous: Mutex<BTreeMap<String, Remembered>>,
    current: Mutex<BTreeMap<String, Remembered>>,
    /// Whether this build remembered anything the last one did not (else nothing is written).
    changed: std::sync::atomic::AtomicBool,
    /// Keys of this build's ops by op id, to name the earlier step that changed.
    keys: Mutex<BTreeMap<String, String>>,
}

impl Memory {
    /// Loads the memory at `path` (missing or unreadable means no memory).
    pub(crate) fn load(path: Option<PathBuf>) -> Memory {
        let previous = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Memory {
            path,
            previous: Mutex::new(previous),
            current: Mutex::new(BTreeMap::new()),
            changed: std::sync::atomic::AtomicBool::new(false),
            keys: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether the last build's step in `op`'s slot had this key (and instruction).
    pub(crate) fn remembers(&self, op: &Op, key: &CacheKey) -> bool {
        lock(&self.previous)
            .get(&Self::slot(op))
            .is_some_and(|before| before.name == op.name && before.key == key.to_hex())
    }

    fn slot(op: &Op) -> String {
        // Position within the stage: the line number moves when lines are added above, but the
        // stage index and the kind of step rarely do; names carry the "[stage n/m]" prefix.
        let prefix = op.name.split(']').next().unwrap_or(&op.name);
        format!("{}:{}", op.stage, prefix)
    }

    /// Records what went into `op`'s key in this build.
    pub(crate) fn observe(&self, op: &Op, ingredients: Ingredients) {
        let slot = Self::slot(op);
        lock(&self.keys).insert(ingredients.key.to_hex(), op.name.clone());
        if self.remembers(op, &ingredients.key) {
            // The same key means the same inputs, files below directories included: the last
            // build's entry stays as it is.
            let before = lock(&self.previous).remove(&slot);
            if let Some(before) = before {
                lock(&self.current).insert(slot, before);
                return;
            }
        }
        self.changed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let remembered = Remembered {
            name: op.name.clone(),
            key: ingredients.key.to_hex(),
            files: ingredients.files,
            detail: ingredients.detail,
            env: ingredients.env,
            inputs: ingredients.inputs,
            image: ingredients.image,
        };
        lock(&self.current).insert(slot, remembered);
    }

    /// Says which input of `op` differs from the last build's step in the same slot.
    pub(crate) fn explain_miss(&self, op: &Op, now: &Ingredients) -> String {
        let previous = lock(&self.previous);
        let Some(before) = previous.get(&Self::slot(op)) else {
            return "no earlier build of this step".to_owned();
        };
        if before.name != op.name {
            return format!("instruction changed (was: {})", strip_prefix(&before.name));
        }
        if let (Some(a), Some(b)) = (&before.image, &now.image) {
            if a != b {
                return format!("base image digest changed ({a} -> {b})");
            }
        }
        for (path, digest) in &now.files {
            match before.files.get(path) {
                Some(old) if old == digest => {}
                // An ADD URL: what the server sends is not in the build context.
                Some(_) if path.contains("://") => return format!("file {path:?} changed"),
                Some(_) => {
                    return changed_below(path, &before.detail, &now.detail)
                        .unwrap_or_else(|| format!("file {path:?} in the build context changed"))
                }
                None => return format!("file {path:?} is new to this step"),
            }
        }
        if let Some(path) = before.files.keys().find(|p| !now.files.contains_key(*p)) {
            return format!("file {path:?} is no longer copied");
        }
        if before.env != now.env {
            let old: BTreeMap<&str, &str> = before
                .env
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let new: BTreeMap<&str, &str> =
                now.env.iter().filter_map(|kv| kv.split_once('=')).collect();
            for (k, v) in &new {
                match old.get(k) {
                    Some(o) if o == v => {}
                    Some(o) => return format!("build arg or env {k} changed ({o:?} -> {v:?})"),
                    None => return format!("build arg or env {k} is new ({v:?})"),
                }
            }
            if let Some(k) = old.keys().find(|k| !new.contains_key(*k)) {
                return format!("build arg or env {k} was removed");
            }
        }
        if before.inputs != now.inputs {
            let keys = lock(&self.keys);
            for input in &now.inputs {
                if !before.inputs.contains(input) {
                    if let Some(name) = keys.get(input) {
                        return format!("an earlier step changed: {}", strip_prefix(name));
                    }
                }
            }
            return "an earlier step changed".to_owned();
        }
        if before.key == now.key.to_hex() {
            return "its cache record was pruned".to_owned();
        }
        "the step's definition changed".to_owned()
    }

    /// Writes this build's steps as the memory for the next one, unless they are the last
    /// build's.
    pub(crate) fn save(&self) {
        let Some(path) = &self.path else { return };
        if !self.changed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mut all = std::mem::take(&mut *lock(&self.previous));
        all.extend(std::mem::take(&mut *lock(&self.current)));
        if let Ok(bytes) = serde_json::to_vec(&all) {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
    }
}

/// Files and their digests as one string, `path NUL digest NUL` for each, sorted by path (NUL
/// is the one byte no path holds).
pub(crate) fn detail_pairs(mut files: Vec<(&str, &forge_cache::ContextEntry)>) -> String {
    // Each directory's files come in path order: sorting the runs is a merge.
    files.sort_by(|a, b| a.0.cmp(b.0));
    files.dedup_by(|a, b| a.0 == b.0);
    let mut out = String::with_capacity(files.len() * 96);
    for (path, entry) in files {
        out.push_str(path);
        out.push('\0');
        entry.digest.push_hex(&mut out);
        out.push('\0');
    }
    out
}

/// The (path, digest) pairs of a [`detail_pairs`] string, in path order.
fn pairs(detail: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut parts = detail.split('\0');
    std::iter::from_fn(move || {
        let path = parts.next().filter(|p| !p.is_empty())?;
        Some((path, parts.next()?))
    })
}

/// The first file below the directory `dir` that changed, appeared or went away, found by
/// walking the two sorted lists side by side.
fn changed_below(dir: &str, before: &str, now: &str) -> Option<String> {
    // A memory from before files were listed (or of a tree too big to list) says nothing.
    if before.is_empty() {
        return None;
    }
    let prefix = format!("{dir}/");
    let below = |(p, _): &(&str, &str)| dir == "." || dir.is_empty() || p.starts_with(&prefix);
    let mut before = pairs(before).filter(below).peekable();
    let mut now = pairs(now).filter(below).peekable();
    loop {
        let (old, new) = match (before.peek(), now.peek()) {
            (None, None) => return None,
            (Some(&(p, _)), None) => {
                return Some(format!("file {p:?} was removed from the build context"))
            }
            (None, Some(&(p, _))) => {
                return Some(format!("file {p:?} was added to the build context"))
            }
            (Some(&old), Some(&new)) => (old, new),
        };
        match old.0.cmp(new.0) {
            std::cmp::Ordering::Less => {
                return Some(format!(
                    "file {:?} was removed from the build context",
                    old.0
                ))
            }
            std::cmp::Ordering::Greater => {
                return Some(format!("file {:?} was added to the build context", new.0))
            }
            std::cmp::Ordering::Equal if old.1 != new.1 => {
                return Some(format!("file {:?} in the build context changed", old.0))
            }
            std::cmp::Ordering::Equal => {
                before.next();
                now.next();
            }
        }
    }
}

fn strip_prefix(name: &str) -> &str {
    match name.split_once("] ") {
        Some((_, rest)) => rest,
        None => name,
    }
}

/// Whether progress shows this op as a step.
pub(crate) fn is_step(op: &Op) -> bool {
    !matches!(
        op.kind,
        OpKind::Scratch | OpKind::Config { .. } | OpKind::Context { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(files: &[(&str, &str)]) -> String {
        files.iter().map(|(p, d)| format!("{p}\0{d}\0")).collect()
    }

    #[test]
    fn the_first_difference_below_the_directory_is_named() {
        let before = listed(&[
            ("app/a", "1"),
            ("app/b", "2"),
            ("app/c", "3"),
            ("app2/x", "9"),
        ]);
        let changed = listed(&[
            ("app/a", "1"),
            ("app/b", "5"),
            ("app/c", "3"),
            ("app2/x", "9"),
        ]);
        let added = listed(&[
            ("app/a", "1"),
            ("app/aa", "7"),
            ("app/b", "2"),
            ("app/c", "3"),
        ]);
        let removed = listed(&[("app/a", "1"), ("app/c", "3"), ("app2/x", "8")]);
        assert_eq!(
            changed_below("app", &before, &changed).as_deref(),
            Some("file \"app/b\" in the build context changed")
        );
        assert_eq!(
            changed_below("app", &before, &added).as_deref(),
            Some("file \"app/aa\" was added to the build context")
        );
        assert_eq!(
            changed_below("app", &before, &removed).as_deref(),
            Some("file \"app/b\" was removed from the build context")
        );
        // Only what is below the directory counts: app2 is a sibling, not a child.
        assert_eq!(
            changed_below(
                "app",
                &before,
                &listed(&[("app/a", "1"), ("app/b", "2"), ("app/c", "3")])
            ),
            None
        );
        // The whole context.
        assert_eq!(
            changed_below(".", &before, &removed).as_deref(),
            Some("file \"app/b\" was removed from the build context")
        );
        // No list from the last build: nothing to compare.
        assert_eq!(changed_below("app", "", &changed), None);
    }
}

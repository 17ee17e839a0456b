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
    /// The files and symlinks below directories in `files` (path -> digest), so a miss can
    /// name the file inside a copied directory that changed.
    pub(crate) detail: BTreeMap<String, String>,
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
            detail: BTreeMap::new(),
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
    #[serde(default)]
    detail: BTreeMap<String, String>,
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
    previous: BTreeMap<String, Remembered>,
    current: Mutex<BTreeMap<String, Remembered>>,
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
            previous,
            current: Mutex::new(BTreeMap::new()),
            keys: Mutex::new(BTreeMap::new()),
        }
    }

    fn slot(op: &Op) -> String {
        // Position within the stage: the line number moves when lines are added above, but the
        // stage index and the kind of step rarely do; names carry the "[stage n/m]" prefix.
        let prefix = op.name.split(']').next().unwrap_or(&op.name);
        format!("{}:{}", op.stage, prefix)
    }

    /// Records what went into `op`'s key in this build.
    pub(crate) fn observe(&self, op: &Op, ingredients: Ingredients) {
        let remembered = Remembered {
            name: op.name.clone(),
            key: ingredients.key.to_hex(),
            files: ingredients.files,
            detail: ingredients.detail,
            env: ingredients.env,
            inputs: ingredients.inputs,
            image: ingredients.image,
        };
        lock(&self.keys).insert(remembered.key.clone(), op.name.clone());
        lock(&self.current).insert(Self::slot(op), remembered);
    }

    /// Says which input of `op` differs from the last build's step in the same slot.
    pub(crate) fn explain_miss(&self, op: &Op, now: &Ingredients) -> String {
        let Some(before) = self.previous.get(&Self::slot(op)) else {
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

    /// Writes this build's steps as the memory for the next one.
    pub(crate) fn save(&self) {
        let Some(path) = &self.path else { return };
        let mut all = self.previous.clone();
        all.extend(lock(&self.current).clone());
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

/// The first file below the directory `dir` that changed, appeared or went away.
fn changed_below(
    dir: &str,
    before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Option<String> {
    let below = |p: &str| dir == "." || dir.is_empty() || p.starts_with(&format!("{dir}/"));
    let mut paths: Vec<&String> = before
        .keys()
        .chain(now.keys())
        .filter(|p| below(p))
        .collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .find_map(|p| match (before.get(p), now.get(p)) {
            (Some(a), Some(b)) if a != b => {
                Some(format!("file {p:?} in the build context changed"))
            }
            (None, Some(_)) => Some(format!("file {p:?} was added to the build context")),
            (Some(_), None) => Some(format!("file {p:?} was removed from the build context")),
            _ => None,
        })
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

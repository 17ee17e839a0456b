//! `forge plan`: parse a Dockerfile, plan it for a target and print the build graph and the
//! stage configs as text, JSON or Graphviz DOT. Works offline: there is no image store yet,
//! so every base image appears as an unresolved source (the store will supply a resolver).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use forge_planner::{ImageResolver, PlanOptions, Platform, ResolvedImage};

use crate::Globals;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PlanFormat {
    Text,
    Json,
    Dot,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PlanArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// The stage to build (default: the last one).
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// A build argument, `K=V`, or `K` to take the value from the environment.
    #[arg(long = "build-arg", value_name = "K[=V]")]
    build_args: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    format: PlanFormat,
    /// The build context directory.
    #[arg(value_name = "CONTEXT", default_value = ".")]
    context: PathBuf,
}

pub(crate) fn run(globals: &Globals, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let name = file.display().to_string();
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {name}"))?;
    let df = match forge_parser::parse(&text) {
        Ok(df) => df,
        Err(err) => {
            eprint!("{}", err.render(&name));
            return Ok(ExitCode::from(1));
        }
    };
    let opts = PlanOptions {
        build_args: build_args(&args.build_args, |k| std::env::var(k).ok())?,
        target: args.target.clone(),
        dockerignore: dockerignore(&file, &args.context)?,
        ..PlanOptions::default()
    };
    let resolver = LocalImages {
        // Planning never creates a store: without one, every base image is unresolved.
        store: globals
            .root
            .join("v1")
            .is_dir()
            .then(|| forge_cache::Store::open(&globals.root).ok())
            .flatten(),
    };
    let plan =
        forge_planner::plan(&df, &opts, &resolver).with_context(|| format!("planning {name}"))?;
    match args.format {
        PlanFormat::Text => print!("{}", forge_planner::render_text(&plan)),
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        PlanFormat::Dot => print!("{}", forge_planner::render_dot(&plan)),
    }
    if args.format != PlanFormat::Text {
        for w in &plan.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `K=V` as given; `K` alone takes the environment's value and, like Docker, is dropped when
/// the environment does not have it.
fn build_args(
    given: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for arg in given {
        match arg.split_once('=') {
            Some(("", _)) => anyhow::bail!("--build-arg {arg:?}: the name is empty"),
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None if arg.is_empty() => anyhow::bail!("--build-arg: the name is empty"),
            None => {
                if let Some(v) = env(arg) {
                    out.insert(arg.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// The `.dockerignore` patterns in force: `<Dockerfile>.dockerignore` beside the Dockerfile
/// wins over `CONTEXT/.dockerignore`. Checked here so a bad pattern fails before planning.
fn dockerignore(dockerfile: &Path, context: &Path) -> anyhow::Result<Vec<String>> {
    let beside = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
    for path in [beside, context.join(".dockerignore")] {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                forge_parser::IgnoreMatcher::parse(&text)
                    .with_context(|| format!("in {}", path.display()))?;
                return Ok(forge_planner::dockerignore_patterns(&text));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(Vec::new())
}

/// Base images from the local store only: `forge plan` never pulls, and an image the store
/// lacks shows as an unresolved source.
struct LocalImages {
    store: Option<forge_cache::Store>,
}

impl ImageResolver for LocalImages {
    fn resolve(&self, reference: &str, platform: &Platform) -> Option<ResolvedImage> {
        let store = self.store.as_ref()?;
        let name = crate::images::canonical_name(reference).ok()?;
        let descriptor = store.resolve_image(&name).ok()??;
        let image = forge_build::load_image(store, &name, &descriptor, platform).ok()?;
        Some(ResolvedImage {
            reference: name,
            digest: image.manifest_descriptor.digest().to_string(),
            config: serde_json::from_slice(&image.config_json).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{build_args, dockerignore};

    #[test]
    fn build_arg_without_value_comes_from_the_environment() {
        let env = |k: &str| (k == "FROM_ENV").then(|| "yes".to_string());
        let args = build_args(
            &[
                "A=1".into(),
                "B=".into(),
                "FROM_ENV".into(),
                "MISSING".into(),
            ],
            env,
        )
        .unwrap();
        assert_eq!(args.get("A").map(String::as_str), Some("1"));
        assert_eq!(args.get("B").map(String::as_str), Some(""));
        assert_eq!(args.get("FROM_ENV").map(String::as_str), Some("yes"));
        assert!(!args.contains_key("MISSING"));
        assert!(build_args(&["=x".into()], env).is_err());
    }

    #[test]
    fn dockerignore_beside_the_dockerfile_wins_and_bad_patterns_fail() {
        let dir = tempfile::tempdir().unwrap();
        let df = dir.path().join("Dockerfile");
        std::fs::write(&df, "FROM scratch\n").unwrap();
        assert!(dockerignore(&df, dir.path()).unwrap().is_empty());
        std::fs::write(
            dir.path().join(".dockerignore"),
            "# comment\ntarget\n\n*.log\n",
        )
        .unwrap();
        assert_eq!(
            dockerignore(&df, dir.path()).unwrap(),
            vec!["target", "*.log"]
        );
        std::fs::write(dir.path().join("Dockerfile.dockerignore"), "node_modules\n").unwrap();
        assert_eq!(dockerignore(&df, dir.path()).unwrap(), vec!["node_modules"]);
        std::fs::write(dir.path().join("Dockerfile.dockerignore"), "[\n").unwrap();
        let err = dockerignore(&df, dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("Dockerfile.dockerignore"),
            "{err:#}"
        );
    }
}

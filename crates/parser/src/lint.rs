//! Build checks in the spirit of BuildKit's: each rule keeps BuildKit's name and message so the
//! findings read the same as `docker build --check`, and the `# check=skip=...;error=true`
//! directive is honoured the same way.
//!
//! The checks run on the parsed file alone: base images are not resolved, so variables a base
//! image defines in its config (other than `PATH`) are not known here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::ast::{
    ArgDecl, Args, CommandLine, Dockerfile, Healthcheck, Instruction, InstructionKind, KeyValue,
    Pos,
};
use crate::expand::{expand_word, VarSource};

/// Every rule `check` knows, by BuildKit's name.
pub const RULES: &[&str] = &[
    "ConsistentInstructionCasing",
    "DuplicateStageName",
    "FromAsCasing",
    "InvalidDefaultArgInFrom",
    "JSONArgsRecommended",
    "LegacyKeyValueFormat",
    "MaintainerDeprecated",
    "MultipleInstructionsDisallowed",
    "NoEmptyContinuation",
    "ReservedStageName",
    "SecretsUsedInArgOrEnv",
    "StageNameCasing",
    "UndefinedArgInFrom",
    "UndefinedVar",
    "WorkdirRelativePath",
];

/// One problem found by a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// BuildKit's rule name, e.g. `UndefinedVar`.
    pub rule: &'static str,
    /// 1-based line and column (characters) the finding points at.
    pub line: usize,
    pub column: usize,
    /// BuildKit's message for the rule.
    pub message: String,
    /// A one-line suggestion for fixing it.
    pub fix: String,
    /// True when the `check` directive's `error=true` makes findings fail the check.
    pub error: bool,
}

impl Finding {
    /// `FILE:LINE:COL: RuleName: message (fix: ...)`.
    pub fn render(&self, file_name: &str) -> String {
        format!("{file_name}:{self}")
    }
}

impl fmt::Display for Finding {
    /// `LINE:COL: RuleName: message (fix: ...)`, without the file name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {} (fix: {})",
            self.line, self.column, self.rule, self.message, self.fix
        )
    }
}

/// The `# check=` directive: which rules to skip and whether findings are errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// Skip every rule (`skip=all`).
    pub skip_all: bool,
    /// Rule names to skip.
    pub skip: BTreeSet<String>,
    /// `error=true`: every finding is an error.
    pub error: bool,
}

impl CheckConfig {
    /// Parse a directive value such as `skip=JSONArgsRecommended,StageNameCasing;error=true`.
    /// Unknown keys and rule names are ignored, as BuildKit ignores them.
    pub fn parse(value: &str) -> CheckConfig {
        let mut config = CheckConfig::default();
        for part in value.split(';') {
            let Some((key, val)) = part.split_once('=') else {
                continue;
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for rule in val.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if rule.eq_ignore_ascii_case("all") {
                            config.skip_all = true;
                        } else {
                            config.skip.insert(rule.to_string());
                        }
                    }
                }
                "error" => config.error = matches!(val.trim(), "true" | "1" | "TRUE" | "True"),
                _ => {}
            }
        }
        config
    }

    fn skips(&self, rule: &str) -> bool {
        self.skip_all || self.skip.contains(rule)
    }
}

/// Run every check on a parsed Dockerfile, honouring its `# check=` directive. `source` is the
/// text `df` was parsed from. Findings come sorted by position.
pub fn check(df: &Dockerfile, source: &str) -> Vec<Finding> {
    let config = df
        .directives
        .check
        .as_ref()
        .map(|c| CheckConfig::parse(&c.value))
        .unwrap_or_default();
    check_with(df, source, &config)
}

/// [`check`] with an explicit configuration instead of the file's directive.
pub fn check_with(df: &Dockerfile, _source: &str, config: &CheckConfig) -> Vec<Finding> {
    let mut linter = Linter {
        df,
        findings: Vec::new(),
    };
    linter.casing();
    linter.stages();
    linter.empty_continuations();
    let mut findings: Vec<Finding> = linter
        .findings
        .into_iter()
        .filter(|f| !config.skips(f.rule))
        .map(|mut f| {
            f.error = config.error;
            f
        })
        .collect();
    findings.sort_by(|a, b| (a.line, a.column, a.rule).cmp(&(b.line, b.column, b.rule)));
    findings
}

/// Args a FROM line may use without declaring them: BuildKit's platform args.
const FROM_PREDEFINED_ARGS: &[&str] = &[
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
];

/// Names BuildKit never reports as undefined inside a stage. Platform, proxy and other
/// predefined args are not among them: in a stage they expand to nothing until an `ARG NAME`
/// brings them in, which is exactly the mistake UndefinedVar is there to catch.
const STAGE_NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// Environment every stage starts with (BuildKit sets `PATH` when the image has none).
const DEFAULT_ENV: &[&str] = &["PATH"];

/// Stage names BuildKit reserves.
const RESERVED_STAGE_NAMES: &[&str] = &["context", "scratch"];

/// Name fragments that make an ARG or ENV look like it carries a secret (BuildKit's list),
/// unless a fragment says it is public.
const SECRET_TOKENS: &[&str] = &[
    "apikey",
    "auth",
    "credential",
    "credentials",
    "key",
    "password",
    "pword",
    "passwd",
    "secret",
    "token",
];

struct Linter<'a> {
    df: &'a Dockerfile,
    findings: Vec<Finding>,
}

/// What a later stage inherits from a named earlier one.
#[derive(Debug, Clone, Default)]
struct StageScope {
    env: BTreeMap<String, String>,
    workdir_set: bool,
    /// A SHELL instruction in the stage or its bases (JSONArgsRecommended then stays quiet).
    has_shell: bool,
}

/// Variables visible while expanding: ENV values and ARGs that have a value.
struct Scope<'a> {
    env: &'a BTreeMap<String, String>,
    args: &'a BTreeMap<String, Option<String>>,
}

impl VarSource for Scope<'_> {
    fn lookup(&self, name: &str) -> Option<String> {
        // ENV wins over ARG of the same name, as in BuildKit.
        self.env
            .get(name)
            .cloned()
            .or_else(|| self.args.get(name).cloned().flatten())
    }
}

fn at(inst: &Instruction) -> Pos {
    inst.node.keyword.span.start
}

fn is_upper(s: &str) -> bool {
    s.to_uppercase() == s
}

fn is_lower(s: &str) -> bool {
    s.to_lowercase() == s
}

impl Linter<'_> {
    fn push(&mut self, rule: &'static str, pos: Pos, message: String, fix: impl Into<String>) {
        self.findings.push(Finding {
            rule,
            line: pos.line,
            column: pos.column,
            message,
            fix: fix.into(),
            error: false,
        });
    }

    /// ConsistentInstructionCasing: keywords should follow the file's majority casing.
    fn casing(&mut self) {
        let df = self.df;
        let keywords: Vec<&Instruction> = df.instructions.iter().collect();
        let upper = keywords
            .iter()
            .filter(|i| is_upper(&i.node.keyword.value))
            .count();
        let lower = keywords
            .iter()
            .filter(|i| is_lower(&i.node.keyword.value))
            .count();
        let majority_lower = lower > upper;
        for inst in keywords {
            let word = &inst.node.keyword.value;
            let wrong = if majority_lower {
                !is_lower(word)
            } else {
                !is_upper(word)
            };
            if wrong {
                let casing = if majority_lower {
                    "lowercase"
                } else {
                    "uppercase"
                };
                let fixed = if majority_lower {
                    word.to_lowercase()
                } else {
                    word.to_uppercase()
                };
                self.push(
                    "ConsistentInstructionCasing",
                    at(inst),
                    format!(
                        "Command '{word}' should match the case of the command majority ({casing})"
                    ),
                    format!("write '{fixed}' like the other instructions"),
                );
            }
        }
    }

    /// NoEmptyContinuation: blank lines inside a continued instruction.
    fn empty_continuations(&mut self) {
        let df = self.df;
        for inst in &df.instructions {
            if let Some(&line) = inst.node.empty_continuation_lines.first() {
                self.push(
                    "NoEmptyContinuation",
                    Pos {
                        line,
                        column: 1,
                        offset: 0,
                    },
                    "Empty continuation line".to_string(),
                    format!(
                        "delete the blank line inside the {} instruction that starts on line {}",
                        inst.kind.keyword(),
                        at(inst).line
                    ),
                );
            }
        }
    }

    /// Every rule that needs to know stages and variable scope.
    fn stages(&mut self) {
        let df = self.df;
        let escape = df.escape;
        let mut global_args: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut global_names: BTreeSet<String> = BTreeSet::new();
        let mut named: BTreeMap<String, StageScope> = BTreeMap::new();
        let mut seen_stage_names: BTreeSet<String> = BTreeSet::new();
        let mut in_stage = false;

        // Per-stage state.
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut args: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut workdir_set = false;
        let mut stage_name: Option<String> = None;
        let mut once_only: Vec<(&'static str, &Instruction)> = Vec::new();
        let mut has_shell = false;
        let mut shell_forms: Vec<(&Instruction, &'static str, &CommandLine)> = Vec::new();

        for inst in &df.instructions {
            match &inst.kind {
                InstructionKind::Arg(decls) if !in_stage => {
                    self.secrets_in_arg(inst, decls);
                    // BuildKit resolves global ARGs one by one, so a default may use an ARG
                    // declared earlier on the same line.
                    let scope_env = BTreeMap::new();
                    for decl in decls {
                        let scope = Scope {
                            env: &scope_env,
                            args: &global_args,
                        };
                        let value = decl.default.as_deref().map(|d| {
                            expand_word(d, escape, &scope)
                                .map(|e| e.value)
                                .unwrap_or_default()
                        });
                        global_names.insert(decl.name.clone());
                        global_args.insert(decl.name.clone(), value);
                    }
                    continue;
                }
                InstructionKind::From(from) => {
                    if let Some(name) = stage_name.take() {
                        named.insert(
                            name,
                            StageScope {
                                env: env.clone(),
                                workdir_set,
                                has_shell,
                            },
                        );
                    }
                    self.multiple_instructions(&once_only);
                    once_only.clear();
                    self.json_args(&shell_forms, has_shell);
                    shell_forms.clear();
                    in_stage = true;

                    self.base_image_args(
                        inst,
                        &from.image,
                        from.platform.as_deref(),
                        &global_args,
                        &global_names,
                    );
                    self.stage_name_rules(inst, &mut seen_stage_names);

                    // The base, with global args expanded, may name an earlier stage.
                    let scope_env = BTreeMap::new();
                    let scope = Scope {
                        env: &scope_env,
                        args: &global_args,
                    };
                    let base = expand_word(&from.image, escape, &scope)
                        .map(|e| e.value.to_lowercase())
                        .unwrap_or_default();
                    let inherited = named.get(&base).cloned().unwrap_or_default();
                    env = inherited.env;
                    workdir_set = inherited.workdir_set;
                    has_shell = inherited.has_shell;
                    args = BTreeMap::new();
                    stage_name = from.alias.as_ref().map(|a| a.value.to_lowercase());
                    continue;
                }
                _ => {}
            }

            // Inside a stage.
            let known = |env: &BTreeMap<String, String>,
                         args: &BTreeMap<String, Option<String>>| {
                let mut names: BTreeSet<String> = env.keys().cloned().collect();
                names.extend(args.keys().cloned());
                names.extend(DEFAULT_ENV.iter().map(|s| s.to_string()));
                names
            };
            let words = expanded_words(&inst.kind);
            let mut unmatched = BTreeSet::new();
            {
                let scope = Scope {
                    env: &env,
                    args: &args,
                };
                for word in &words {
                    if let Ok(exp) = expand_word(word, escape, &scope) {
                        unmatched.extend(exp.unmatched);
                    }
                }
            }
            let names = known(&env, &args);
            for name in unmatched {
                if names.contains(&name) || STAGE_NON_ENV_ARGS.contains(&name.as_str()) {
                    continue;
                }
                let message = match suggest(&name, &names) {
                    Some(s) => {
                        format!("Usage of undefined variable '${name}' (did you mean ${s}?)")
                    }
                    None => format!("Usage of undefined variable '${name}'"),
                };
                self.push(
                    "UndefinedVar",
                    at(inst),
                    message,
                    format!(
                        "declare it first with `ARG {name}` or `ENV {name}=...`, or fix the name"
                    ),
                );
            }

            match &inst.kind {
                InstructionKind::Arg(decls) => {
                    self.secrets_in_arg(inst, decls);
                    let scope = Scope {
                        env: &env,
                        args: &args,
                    };
                    let mut values = Vec::new();
                    for decl in decls {
                        let value = match &decl.default {
                            Some(d) => Some(
                                expand_word(d, escape, &scope)
                                    .map(|e| e.value)
                                    .unwrap_or_default(),
                            ),
                            // A redeclared global ARG takes the global default.
                            None => global_args.get(&decl.name).cloned().flatten(),
                        };
                        values.push((decl.name.clone(), value));
                    }
                    args.extend(values);
                }
                InstructionKind::Env(pairs) => {
                    self.legacy_key_value(inst, "ENV", pairs);
                    let scope = Scope {
                        env: &env,
                        args: &args,
                    };
                    let mut values = Vec::new();
                    for pair in pairs {
                        if is_secret_name(&pair.key) {
                            self.push(
                                "SecretsUsedInArgOrEnv",
                                at(inst),
                                format!("Do not use ARG or ENV instructions for sensitive data (ENV {:?})", pair.key),
                                "pass secrets with RUN --mount=type=secret instead of ENV",
                            );
                        }
                        let value = expand_word(&pair.value, escape, &scope)
                            .map(|e| e.value)
                            .unwrap_or_default();
                        values.push((pair.key.clone(), value));
                    }
                    env.extend(values);
                }
                InstructionKind::Label(pairs) => self.legacy_key_value(inst, "LABEL", pairs),
                InstructionKind::Maintainer(_) => self.push(
                    "MaintainerDeprecated",
                    at(inst),
                    "Maintainer instruction is deprecated in favor of using label".to_string(),
                    "use LABEL org.opencontainers.image.authors=\"...\" instead",
                ),
                InstructionKind::Workdir(path) => {
                    let scope = Scope {
                        env: &env,
                        args: &args,
                    };
                    let resolved = expand_word(path, escape, &scope)
                        .map(|e| e.value)
                        .unwrap_or_else(|_| path.clone());
                    // As in BuildKit, only the stage's first WORKDIR is judged: fixing it fixes
                    // every later relative one.
                    let first = !workdir_set;
                    workdir_set = true;
                    if first && !resolved.starts_with('/') {
                        self.push(
                            "WorkdirRelativePath",
                            at(inst),
                            format!("Relative workdir {resolved:?} can have unexpected results if the base image changes"),
                            "use an absolute path, or set an absolute WORKDIR earlier in the stage",
                        );
                    }
                }
                InstructionKind::Cmd(cmd) => {
                    shell_forms.push((inst, "CMD", cmd));
                    once_only.push(("CMD", inst));
                }
                InstructionKind::Entrypoint(cmd) => {
                    shell_forms.push((inst, "ENTRYPOINT", cmd));
                    once_only.push(("ENTRYPOINT", inst));
                }
                InstructionKind::Shell(_) => has_shell = true,
                InstructionKind::Healthcheck(_) => once_only.push(("HEALTHCHECK", inst)),
                _ => {}
            }
        }
        self.multiple_instructions(&once_only);
        self.json_args(&shell_forms, has_shell);
    }

    fn base_image_args(
        &mut self,
        inst: &Instruction,
        image: &str,
        platform: Option<&str>,
        global_args: &BTreeMap<String, Option<String>>,
        global_names: &BTreeSet<String>,
    ) {
        let escape = self.df.escape;
        let empty = BTreeMap::new();
        let scope = Scope {
            env: &empty,
            args: global_args,
        };
        let mut unmatched = BTreeSet::new();
        for word in std::iter::once(image).chain(platform) {
            if let Ok(exp) = expand_word(word, escape, &scope) {
                unmatched.extend(exp.unmatched);
            }
        }
        for name in unmatched {
            if global_names.contains(&name) || FROM_PREDEFINED_ARGS.contains(&name.as_str()) {
                continue;
            }
            let message = match suggest(&name, global_names) {
                Some(s) => format!("FROM argument '{name}' is not declared (did you mean {s}?)"),
                None => format!("FROM argument '{name}' is not declared"),
            };
            self.push(
                "UndefinedArgInFrom",
                at(inst),
                message,
                format!("declare `ARG {name}` before the first FROM"),
            );
        }

        // InvalidDefaultArgInFrom: with only the defaults, does the base name parse as an image
        // reference? BuildKit asks this of every FROM, with or without variables.
        {
            let mut defaults: BTreeMap<String, Option<String>> = platform_defaults();
            defaults.extend(global_args.iter().map(|(k, v)| (k.clone(), v.clone())));
            let scope = Scope {
                env: &empty,
                args: &defaults,
            };
            let resolved = expand_word(image, escape, &scope).map(|e| e.value);
            // forge also takes `FROM oci-layout://DIR[:TAG]`, an image in an OCI layout.
            let valid = resolved
                .as_deref()
                .is_ok_and(|r| r.starts_with("oci-layout://") || valid_image_reference(r));
            if !valid {
                self.push(
                    "InvalidDefaultArgInFrom",
                    at(inst),
                    format!(
                        "Default value for ARG {image} results in empty or invalid base image name"
                    ),
                    "give the ARG used in FROM a default that makes a valid image name",
                );
            }
        }
    }

    /// StageNameCasing, ReservedStageName, DuplicateStageName and FromAsCasing.
    fn stage_name_rules(&mut self, inst: &Instruction, seen: &mut BTreeSet<String>) {
        let InstructionKind::From(from) = &inst.kind else {
            return;
        };
        let Some(alias) = &from.alias else {
            return;
        };
        let name = &alias.value;
        let lower = name.to_lowercase();
        if *name != lower {
            self.push(
                "StageNameCasing",
                alias.span.start,
                format!("Stage name '{name}' should be lowercase"),
                format!("rename the stage to '{lower}'"),
            );
        }
        if RESERVED_STAGE_NAMES.contains(&lower.as_str()) {
            self.push(
                "ReservedStageName",
                alias.span.start,
                format!("Stage name should not use the same name as reserved stage {lower:?}"),
                "pick another stage name",
            );
        }
        if !seen.insert(lower.clone()) {
            self.push(
                "DuplicateStageName",
                alias.span.start,
                format!("Duplicate stage name {lower:?}, stage names should be unique"),
                "give each stage a unique name",
            );
        }
        if let Args::Words(words) = &inst.node.args {
            if let Some(as_word) = words.get(1) {
                let from_word = &inst.node.keyword.value;
                let mismatch = (is_upper(from_word) && !is_upper(as_word))
                    || (is_lower(from_word) && !is_lower(as_word));
                if mismatch {
                    let fixed = if is_upper(from_word) { "AS" } else { "as" };
                    self.push(
                        "FromAsCasing",
                        at(inst),
                        format!("'{as_word}' and '{from_word}' keywords' casing do not match"),
                        format!("write '{fixed}' to match '{from_word}'"),
                    );
                }
            }
        }
    }

    fn secrets_in_arg(&mut self, inst: &Instruction, decls: &[ArgDecl]) {
        for decl in decls {
            if is_secret_name(&decl.name) {
                self.push(
                    "SecretsUsedInArgOrEnv",
                    at(inst),
                    format!(
                        "Do not use ARG or ENV instructions for sensitive data (ARG {:?})",
                        decl.name
                    ),
                    "pass secrets with RUN --mount=type=secret instead of ARG",
                );
            }
        }
    }

    fn legacy_key_value(&mut self, inst: &Instruction, keyword: &str, pairs: &[KeyValue]) {
        if let Some(pair) = pairs.iter().find(|p| p.legacy) {
            self.push(
                "LegacyKeyValueFormat",
                at(inst),
                format!("\"{keyword} key=value\" should be used instead of legacy \"{keyword} key value\" format"),
                format!("write {keyword} {}={}", pair.key, quote_if_needed(&pair.value)),
            );
        }
    }

    /// JSONArgsRecommended for the shell-form CMD and ENTRYPOINT of one stage. BuildKit stays
    /// quiet when the stage (or a stage it builds on) sets SHELL: shell form is then deliberate.
    fn json_args(
        &mut self,
        commands: &[(&Instruction, &'static str, &CommandLine)],
        has_shell: bool,
    ) {
        if has_shell {
            return;
        }
        for &(inst, keyword, cmd) in commands {
            let CommandLine::Shell(text) = cmd else {
                continue;
            };
            // Plain words convert directly; anything the shell would interpret keeps the shell
            // explicitly, so the suggestion never changes what runs.
            let plain = |w: &str| {
                w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            };
            let words: Vec<&str> = text.split_whitespace().collect();
            let json = if words.iter().all(|w| plain(w)) {
                words
                    .iter()
                    .map(|w| format!("{w:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                format!("\"/bin/sh\", \"-c\", {:?}", text.trim())
            };
            self.push(
                "JSONArgsRecommended",
                at(inst),
                format!("JSON arguments recommended for {keyword} to prevent unintended behavior related to OS signals"),
                format!("write {keyword} [{json}]"),
            );
        }
    }

    /// MultipleInstructionsDisallowed: only the last CMD, ENTRYPOINT and HEALTHCHECK of a stage
    /// take effect, so every earlier one is reported.
    fn multiple_instructions(&mut self, once_only: &[(&'static str, &Instruction)]) {
        for keyword in ["CMD", "ENTRYPOINT", "HEALTHCHECK"] {
            let of_kind: Vec<&Instruction> = once_only
                .iter()
                .filter(|(k, _)| *k == keyword)
                .map(|(_, i)| *i)
                .collect();
            if let Some((_, earlier)) = of_kind.split_last() {
                for inst in earlier {
                    self.push(
                        "MultipleInstructionsDisallowed",
                        at(inst),
                        format!("Multiple {keyword} instructions should not be used in the same stage because only the last one will be used"),
                        format!("remove this {keyword}; the one on line {} overrides it", at(of_kind[of_kind.len() - 1]).line),
                    );
                }
            }
        }
    }
}

/// The words of an instruction that BuildKit expands (and so checks for undefined variables).
/// Shell commands are left to the shell and are not among them.
fn expanded_words(kind: &InstructionKind) -> Vec<String> {
    let mut words = Vec::new();
    match kind {
        InstructionKind::Env(pairs) | InstructionKind::Label(pairs) => {
            for p in pairs {
                words.push(p.key.clone());
                words.push(p.value.clone());
            }
        }
        InstructionKind::Arg(decls) => {
            for d in decls {
                words.push(d.name.clone());
                words.extend(d.default.clone());
            }
        }
        InstructionKind::Add(c) | InstructionKind::Copy(c) => {
            words.extend(c.sources.iter().filter(|s| !s.starts_with("<<")).cloned());
            words.push(c.dest.clone());
            words.extend(c.from.clone());
            words.extend(c.chown.clone());
            words.extend(c.exclude.iter().cloned());
            words.extend(c.checksum.clone());
        }
        InstructionKind::Expose(ports) | InstructionKind::Volume(ports) => {
            words.extend(ports.iter().cloned())
        }
        InstructionKind::User(w) | InstructionKind::Workdir(w) | InstructionKind::Stopsignal(w) => {
            words.push(w.clone())
        }
        InstructionKind::Run(run) => {
            for m in &run.mounts {
                words.extend(m.target.clone());
                words.extend(m.source.clone());
                words.extend(m.from.clone());
                words.extend(m.id.clone());
            }
        }
        InstructionKind::Healthcheck(Healthcheck::None | Healthcheck::Check { .. })
        | InstructionKind::Cmd(_)
        | InstructionKind::Entrypoint(_)
        | InstructionKind::Shell(_)
        | InstructionKind::Maintainer(_)
        | InstructionKind::Onbuild(_)
        | InstructionKind::From(_) => {}
    }
    words
}

/// Platform args with the values they would have when building for this machine.
fn platform_defaults() -> BTreeMap<String, Option<String>> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    let platform = format!("linux/{arch}");
    let mut map = BTreeMap::new();
    for prefix in ["BUILD", "TARGET"] {
        map.insert(format!("{prefix}PLATFORM"), Some(platform.clone()));
        map.insert(format!("{prefix}OS"), Some("linux".to_string()));
        map.insert(format!("{prefix}ARCH"), Some(arch.to_string()));
        map.insert(format!("{prefix}VARIANT"), Some(String::new()));
    }
    map
}

/// BuildKit's secret-name test: an `_`-separated part of the name is a secret word, and no part
/// says `public`.
fn is_secret_name(name: &str) -> bool {
    let parts: Vec<String> = name.split('_').map(|p| p.to_ascii_lowercase()).collect();
    parts.iter().any(|p| SECRET_TOKENS.contains(&p.as_str()))
        && !parts.iter().any(|p| p == "public")
}

/// The closest known name within a small edit distance, for "did you mean".
fn suggest(name: &str, options: &BTreeSet<String>) -> Option<String> {
    let lower = name.to_lowercase();
    let max = if name.chars().count() < 3 { 1 } else { 2 };
    options
        .iter()
        .filter(|o| o.as_str() != name)
        .map(|o| (levenshtein(&lower, &o.to_lowercase()), o))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o.clone())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn quote_if_needed(value: &str) -> String {
    let v = value.trim();
    if v.contains(char::is_whitespace) && !v.starts_with('"') && !v.starts_with('\'') {
        format!("{v:?}")
    } else {
        v.to_string()
    }
}

/// Whether `reference` parses as a Docker image reference (`[domain/]path[:tag][@digest]`, the
/// path in lowercase), the test BuildKit applies to a FROM's base name.
fn valid_image_reference(reference: &str) -> bool {
    if reference.is_empty() {
        return false;
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else {
            return false;
        };
        let algo_ok = !algo.is_empty()
            && algo
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
        if !algo_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return false;
        }
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let mut chars = tag.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok
            || tag.len() > 128
            || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return false;
        }
    }
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        let is_domain =
            first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first;
        if is_domain {
            if !valid_domain(first) {
                return false;
            }
            components.remove(0);
        }
    }
    components.iter().all(|c| valid_path_component(c))
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit())) {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-');
        if !ok {
            return false;
        }
    }
    true
}

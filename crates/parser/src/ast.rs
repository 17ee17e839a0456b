//! The parsed Dockerfile: raw nodes as BuildKit's parser splits them, and typed
//! instructions built from them. Nothing here is expanded: word expansion needs
//! the build's variables and happens in the planner (see `expand`).

use serde::Serialize;

/// A position in the source text. Lines and columns are 1-based; columns count
/// characters (not bytes) from the start of the physical line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
    /// Byte offset into the source after BOM removal.
    pub offset: usize,
}

/// A range of source text, `start` inclusive and `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

/// A value with the span of source text it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

/// A whole parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    pub directives: Directives,
    /// The escape character in force (`\` unless the `escape` directive says otherwise).
    pub escape: char,
    pub instructions: Vec<Instruction>,
}

/// Parser directives from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Directives {
    pub syntax: Option<Spanned<String>>,
    pub escape: Option<Spanned<char>>,
    /// The raw `check` directive, e.g. `skip=JSONArgsRecommended;error=true`.
    pub check: Option<Spanned<String>>,
}

/// One instruction: its raw node (for `forge parse`, lints and error messages) and its
/// typed meaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    pub node: Node,
    pub kind: InstructionKind,
}

/// An instruction as the parser splits it, before it is given meaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The keyword as written (original case), e.g. `run` or `RUN`.
    pub keyword: Spanned<String>,
    /// Flags (`--name[=value]`) in order, before the arguments.
    pub flags: Vec<RawFlag>,
    /// The arguments, split the way BuildKit's parser splits them.
    pub args: Args,
    /// Heredocs opened on this instruction, in order.
    pub heredocs: Vec<Heredoc>,
    /// From the keyword to the end of the last continuation line (or heredoc terminator).
    pub span: Span,
    /// The instruction's logical line with continuations joined and comment lines dropped
    /// (heredoc bodies not included).
    pub original: String,
    /// 1-based numbers of the whitespace-only lines inside this instruction's continuation
    /// (legal, dropped, and reported by the NoEmptyContinuation lint).
    pub empty_continuation_lines: Vec<usize>,
}

/// A `--name[=value]` flag exactly as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawFlag {
    pub name: String,
    /// `None` for a bare `--name`.
    pub value: Option<String>,
    pub span: Span,
}

/// How an instruction's arguments were written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "snake_case")]
pub enum Args {
    /// A valid JSON array of strings: `["a", "b"]`.
    Exec(Vec<String>),
    /// Everything else for RUN/CMD/ENTRYPOINT/HEALTHCHECK CMD: one string with continuations
    /// joined and comment lines inside them dropped.
    Shell(String),
    /// Whitespace-separated words (quotes kept as written), for instructions that take words
    /// (FROM, COPY, ADD, EXPOSE, VOLUME, ARG, USER, WORKDIR, STOPSIGNAL, MAINTAINER, ...).
    Words(Vec<String>),
    /// ENV and LABEL: key/value pairs, quotes removed from keys, values as written.
    KeyValues(Vec<KeyValue>),
    /// ONBUILD's nested instruction.
    Nested(Box<Node>),
    /// No arguments (e.g. `HEALTHCHECK NONE` is `Words(["NONE"])`, not this).
    None,
}

/// A heredoc: `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    pub name: String,
    /// The body, each line ending with `\n`, tabs stripped when `strip_tabs`.
    pub body: String,
    /// False when the delimiter was quoted: the body is not expanded.
    pub expand: bool,
    pub strip_tabs: bool,
    /// The line range of the body and its terminator.
    pub span: Span,
}

/// `key=value` (or the legacy `key value`) of ENV and LABEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    /// Unexpanded, quotes as written; the planner expands it (which also removes quotes).
    pub value: String,
    /// True for the legacy `ENV key value` form.
    pub legacy: bool,
}

/// A command given in exec or shell form (RUN, CMD, ENTRYPOINT, HEALTHCHECK CMD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "snake_case")]
pub enum CommandLine {
    Exec(Vec<String>),
    Shell(String),
}

/// The typed meaning of an instruction. Strings are unexpanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "snake_case")]
pub enum InstructionKind {
    From(From),
    Run(Run),
    Cmd(CommandLine),
    Label(Vec<KeyValue>),
    Maintainer(String),
    Expose(Vec<String>),
    Env(Vec<KeyValue>),
    Add(Copy),
    Copy(Copy),
    Entrypoint(CommandLine),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Arg(Vec<ArgDecl>),
    Onbuild(Box<Instruction>),
    Stopsignal(String),
    Healthcheck(Healthcheck),
    Shell(Vec<String>),
}

impl InstructionKind {
    /// The upper-case keyword of this instruction.
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::From(_) => "FROM",
            Self::Run(_) => "RUN",
            Self::Cmd(_) => "CMD",
            Self::Label(_) => "LABEL",
            Self::Maintainer(_) => "MAINTAINER",
            Self::Expose(_) => "EXPOSE",
            Self::Env(_) => "ENV",
            Self::Add(_) => "ADD",
            Self::Copy(_) => "COPY",
            Self::Entrypoint(_) => "ENTRYPOINT",
            Self::Volume(_) => "VOLUME",
            Self::User(_) => "USER",
            Self::Workdir(_) => "WORKDIR",
            Self::Arg(_) => "ARG",
            Self::Onbuild(_) => "ONBUILD",
            Self::Stopsignal(_) => "STOPSIGNAL",
            Self::Healthcheck(_) => "HEALTHCHECK",
            Self::Shell(_) => "SHELL",
        }
    }
}

/// `FROM [--platform=P] IMAGE [AS NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    pub image: String,
    /// The stage name as written (stage names compare case-insensitively).
    pub alias: Option<Spanned<String>>,
    pub platform: Option<String>,
}

/// `ARG NAME[=default] [NAME[=default]...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    pub name: String,
    /// Unexpanded default, quotes as written.
    pub default: Option<String>,
}

/// `RUN [--mount=...]... [--network=...] [--security=...] COMMAND`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub command: CommandLine,
    pub mounts: Vec<Mount>,
    pub network: Option<NetworkMode>,
    pub security: Option<SecurityMode>,
    /// Heredocs of the instruction; with a shell-form command `RUN <<EOF`, the first heredoc is
    /// the script (BuildKit's rule), the rest are files it may read.
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    Sandbox,
    Insecure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

/// One `--mount=` of RUN, with BuildKit's defaults left as `None` so the planner can tell
/// what was written. String values are unexpanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub kind: MountType,
    /// `target`, `dst` or `destination`.
    pub target: Option<String>,
    /// `source` or `src`.
    pub source: Option<String>,
    /// `from`: a stage, image or named context.
    pub from: Option<String>,
    /// `ro`/`readonly` gives `Some(true)`, `rw`/`readwrite` gives `Some(false)`.
    pub readonly: Option<bool>,
    pub id: Option<String>,
    pub sharing: Option<CacheSharing>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    pub required: Option<bool>,
    /// secret `env=`: expose the secret as this environment variable.
    pub env: Option<String>,
    pub span: Span,
}

/// COPY and ADD share their shape; flags that only ADD accepts are refused on COPY by the parser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// Sources as written (unexpanded); heredoc sources appear as `<<NAME` and in `heredocs`.
    pub sources: Vec<String>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<Chmod>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    /// ADD only.
    pub checksum: Option<String>,
    /// ADD only.
    pub keep_git_dir: bool,
    /// ADD only: `--unpack` / `--unpack=false`.
    pub unpack: Option<bool>,
    pub heredocs: Vec<Heredoc>,
}

/// `--chmod`: octal (`0755`) or symbolic (`u+x,g-w`). A value containing `$` is kept as
/// `Symbolic` unvalidated: it can only be checked once the planner has expanded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "snake_case")]
pub enum Chmod {
    Octal(u32),
    Symbolic(String),
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Healthcheck {
    None,
    Check {
        command: CommandLine,
        /// Durations in nanoseconds, as Docker stores them.
        interval: Option<u64>,
        timeout: Option<u64>,
        start_period: Option<u64>,
        start_interval: Option<u64>,
        retries: Option<u32>,
    },
}

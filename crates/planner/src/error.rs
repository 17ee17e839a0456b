//! `PlanError`: a Dockerfile that parses but cannot be planned. Every variant names the line of
//! the instruction at fault so the message points where the user must look.

use forge_parser::{ExpandError, ParseError};

/// Why a Dockerfile could not be planned. Reported before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the Dockerfile has no FROM instruction")]
    NoStages,

    #[error("line {line}: FROM {name}: the build context {name:?} (--build-context) is a directory, not an image; use it with COPY --from={name} or RUN --mount=from={name}")]
    NamedContextNotImage { line: usize, name: String },

    #[error("line {line}: {keyword} before the first FROM; only ARG may come before FROM")]
    InstructionBeforeFrom { line: usize, keyword: &'static str },

    #[error("line {line}: duplicate stage name {name:?} (first defined on line {first_line})")]
    DuplicateStageName {
        line: usize,
        name: String,
        first_line: usize,
    },

    #[error("target stage {target:?} could not be found (stages: {})", stages.join(", "))]
    UnknownTarget { target: String, stages: Vec<String> },

    #[error("line {line}: {instruction}: variable {name:?} is not defined (only global ARGs declared before the first FROM are visible here)")]
    UndefinedVariable {
        line: usize,
        instruction: &'static str,
        name: String,
    },

    #[error("line {line}: FROM: base name {written:?} expands to nothing")]
    EmptyBaseName { line: usize, written: String },

    #[error("line {line}: {instruction}: could not expand {word:?}: {source}")]
    Expand {
        line: usize,
        instruction: &'static str,
        word: String,
        #[source]
        source: Box<ExpandError>,
    },

    #[error(
        "line {line}: invalid platform {platform:?} (expected os/arch[/variant], e.g. linux/amd64)"
    )]
    InvalidPlatform { line: usize, platform: String },

    #[error("line {line}: platform {platform} cannot run on this {host} host (no emulation yet)")]
    UnsupportedPlatform {
        line: usize,
        platform: String,
        host: String,
    },

    #[error("the requested platform {platform} cannot run on this {host} host (no emulation yet)")]
    UnsupportedTargetPlatform { platform: String, host: String },

    #[error("line {line}: {instruction} --from={reference}: a stage cannot refer to itself")]
    SelfStageReference {
        line: usize,
        instruction: &'static str,
        reference: String,
    },

    #[error("line {line}: {instruction} --from={reference}: stage {stage} is defined later (line {stage_line}); a stage can only use earlier stages")]
    ForwardStageReference {
        line: usize,
        instruction: &'static str,
        reference: String,
        stage: usize,
        stage_line: usize,
    },

    #[error("line {line}: {instruction} --from={index}: stage index out of range (the Dockerfile has {count} stages)")]
    StageIndexOutOfRange {
        line: usize,
        instruction: &'static str,
        index: usize,
        count: usize,
    },

    #[error("line {line}: EXPOSE: invalid port {port:?}")]
    InvalidPort { line: usize, port: String },

    #[error("line {line}: STOPSIGNAL: invalid signal {signal:?}")]
    InvalidSignal { line: usize, signal: String },

    #[error("line {line}: {instruction}: {what} can not be empty")]
    EmptyValue {
        line: usize,
        instruction: &'static str,
        what: &'static str,
    },

    #[error("line {line}: ONBUILD trigger {trigger:?} of {base}: {source}")]
    TriggerParse {
        line: usize,
        base: String,
        trigger: String,
        #[source]
        source: Box<ParseError>,
    },

    #[error("line {line}: ONBUILD trigger {trigger:?} of {base}: {keyword} is not allowed as an ONBUILD trigger")]
    TriggerForbidden {
        line: usize,
        base: String,
        trigger: String,
        keyword: &'static str,
    },

    #[error("build arg SOURCE_DATE_EPOCH={value:?} is not a number of seconds")]
    InvalidSourceDateEpoch { value: String },
}

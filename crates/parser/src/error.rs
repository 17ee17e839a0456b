//! The parser's error: what went wrong, where (line and column), and the offending source line,
//! rendered like a compiler diagnostic.

use std::fmt::Write as _;

/// A Dockerfile that cannot be parsed. `line` and `column` are 1-based; the column counts
/// characters of the physical source line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}:{column}: {kind}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub kind: ParseErrorKind,
    /// The physical source line the error points into (without its line terminator).
    pub source_line: String,
}

/// What is wrong. The messages follow BuildKit's wording where BuildKit has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("file with no instructions")]
    Empty,
    #[error("only one {name} parser directive can be used")]
    DuplicateDirective { name: String },
    #[error("invalid escape token '{value}' does not match ` or \\")]
    InvalidEscape { value: String },
    #[error("unknown instruction: {keyword}{}", did_you_mean(suggestion))]
    UnknownInstruction {
        keyword: String,
        /// The closest known keyword, when one is close.
        suggestion: Option<String>,
    },
    #[error("unknown flag: {flag}{}", did_you_mean(suggestion))]
    UnknownFlag {
        flag: String,
        /// The closest flag this instruction accepts, when one is close.
        suggestion: Option<String>,
    },
    #[error("duplicate flag specified: {flag}")]
    DuplicateFlag { flag: String },
    #[error("missing a value on flag: {flag}")]
    MissingFlagValue { flag: String },
    #[error("expecting boolean value for flag {flag}, not: {value}")]
    InvalidBool { flag: String, value: String },
    #[error("invalid value for --{flag}: {value:?}: {reason}")]
    InvalidFlagValue {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("invalid --mount option {field:?}: {reason}")]
    InvalidMount { field: String, reason: String },
    #[error("{instruction} requires at least one argument")]
    AtLeastOneArgument { instruction: &'static str },
    #[error("{instruction} requires at least two arguments")]
    AtLeastTwoArguments { instruction: &'static str },
    #[error("{instruction} requires exactly one argument")]
    ExactlyOneArgument { instruction: &'static str },
    #[error(
        "{instruction} requires at least two arguments, but only one was provided. Destination could not be determined"
    )]
    NoDestination { instruction: &'static str },
    #[error("FROM requires either one or three arguments")]
    FromArguments,
    #[error(
        "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
    )]
    InvalidStageName { name: String },
    #[error("{instruction} names can not be blank")]
    BlankName { instruction: &'static str },
    #[error("Syntax error - can't find = in {word:?}. Must be of the form: name=value")]
    MissingEquals { word: String },
    #[error("{instruction} must have two arguments")]
    LegacyTwoArguments { instruction: &'static str },
    #[error("SHELL requires the arguments to be in JSON form")]
    ShellNotJson,
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChain,
    #[error("{keyword} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger { keyword: String },
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    #[error("unknown type {kind:?} in HEALTHCHECK (try CMD)")]
    HealthcheckType { kind: String },
    #[error("missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand,
    #[error("unterminated heredoc {name:?}")]
    UnterminatedHeredoc { name: String },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

impl ParseError {
    /// The message alone, without location.
    pub fn message(&self) -> String {
        self.kind.to_string()
    }

    /// The error as a compiler-style diagnostic:
    ///
    /// ```text
    /// Dockerfile:3:5: unknown flag: foo
    ///     3 | RUN --foo echo hi
    ///       |     ^
    /// ```
    pub fn render(&self, file_name: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{file_name}:{}:{}: {}",
            self.line, self.column, self.kind
        );
        let number = self.line.to_string();
        let gutter = " ".repeat(number.len());
        let _ = writeln!(out, "  {number} | {}", self.source_line);
        // Reuse the line's own tabs in the padding so the caret lines up in a terminal.
        let pad: String = self
            .source_line
            .chars()
            .take(self.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let _ = writeln!(out, "  {gutter} | {pad}^");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_puts_the_caret_under_the_column_keeping_tabs() {
        let err = ParseError {
            line: 12,
            column: 6,
            kind: ParseErrorKind::UnknownFlag {
                flag: "foo".into(),
                suggestion: None,
            },
            source_line: "\tRUN --foo x".into(),
        };
        assert_eq!(
            err.render("app/Dockerfile"),
            "app/Dockerfile:12:6: unknown flag: foo\n  12 | \tRUN --foo x\n     | \t    ^\n"
        );
        assert_eq!(err.to_string(), "line 12:6: unknown flag: foo");
        assert_eq!(err.message(), "unknown flag: foo");
    }
}

//! Dockerfile parsing for forge: directives, line continuations, heredocs, exec versus shell
//! form, flags, typed instructions with source spans, BuildKit's shell-word expansion,
//! `.dockerignore` matching and lint checks. This crate does no I/O.

mod ast;
mod error;
mod expand;
mod ignore;
mod json;
mod lint;
mod parse;

pub use ast::{
    ArgDecl, Args, CacheSharing, Chmod, CommandLine, Copy, Directives, Dockerfile, From,
    Healthcheck, Heredoc, Instruction, InstructionKind, KeyValue, Mount, MountType, NetworkMode,
    Node, Pos, RawFlag, Run, SecurityMode, Span, Spanned,
};
pub use error::{ParseError, ParseErrorKind};
pub use expand::{
    expand_word, expand_word_with, expand_words, ExpandError, ExpandOptions, Expansion, VarSource,
    WordsExpansion,
};
pub use ignore::{ignore_file_candidates, IgnoreError, IgnoreMatcher};
pub use json::{
    json_document, text_listing, JsonDirectives, JsonDocument, JsonHeredoc, JsonInstruction,
    JsonPair, JSON_SCHEMA_VERSION,
};
pub use lint::{check, check_with, CheckConfig, Finding, RULES};
pub use parse::parse;

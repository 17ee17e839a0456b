//! Dockerfile parsing for forge: directives, line continuations, heredocs, exec versus shell
//! form, flags, typed instructions with source spans, BuildKit's shell-word expansion,
//! `.dockerignore` matching and lint checks. This crate does no I/O.

mod ast;

pub use ast::{
    ArgDecl, Args, CacheSharing, Chmod, CommandLine, Copy, Directives, Dockerfile, From,
    Healthcheck, Heredoc, Instruction, InstructionKind, KeyValue, Mount, MountType, NetworkMode,
    Node, Pos, RawFlag, Run, SecurityMode, Span, Spanned,
};

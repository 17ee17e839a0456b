//! The stable schema of `forge parse --json` (documented in docs/parse-json.md) and the text
//! listing of `forge parse`. Dedicated structs, so the internal AST can change without
//! changing what scripts read.

use std::fmt::Write as _;

use serde::Serialize;

use crate::ast::{Args, Dockerfile, Heredoc, Node};

/// Bumped whenever a field changes meaning or disappears.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// A parsed Dockerfile as `forge parse --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsonDocument {
    pub schema_version: u32,
    pub directives: JsonDirectives,
    /// The escape character in force.
    pub escape: String,
    pub instructions: Vec<JsonInstruction>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsonDirectives {
    pub syntax: Option<String>,
    pub escape: Option<String>,
    pub check: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsonInstruction {
    /// Upper-case keyword.
    pub keyword: String,
    pub start_line: usize,
    pub end_line: usize,
    /// Flags as written after quote removal, e.g. `--mount=type=cache,target=/x`.
    pub flags: Vec<String>,
    /// `exec`, `shell`, `words`, `key_values`, `nested` or `none`.
    pub form: &'static str,
    /// Each exec-form element; the shell form as one string; the words; for `key_values`
    /// key and value alternately; empty for `nested` and `none`.
    pub args: Vec<String>,
    /// ENV and LABEL only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairs: Option<Vec<JsonPair>>,
    pub heredocs: Vec<JsonHeredoc>,
    /// ONBUILD's instruction.
    pub nested: Option<Box<JsonInstruction>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsonPair {
    pub key: String,
    pub value: String,
    /// The legacy `ENV key value` form.
    pub legacy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsonHeredoc {
    pub name: String,
    pub body: String,
    pub expand: bool,
    pub strip_tabs: bool,
    pub start_line: usize,
    pub end_line: usize,
}

/// The `forge parse --json` document of a parsed Dockerfile.
pub fn json_document(dockerfile: &Dockerfile) -> JsonDocument {
    let d = &dockerfile.directives;
    JsonDocument {
        schema_version: JSON_SCHEMA_VERSION,
        directives: JsonDirectives {
            syntax: d.syntax.as_ref().map(|s| s.value.clone()),
            escape: d.escape.as_ref().map(|s| s.value.to_string()),
            check: d.check.as_ref().map(|s| s.value.clone()),
        },
        escape: dockerfile.escape.to_string(),
        instructions: dockerfile
            .instructions
            .iter()
            .map(|i| instruction(&i.node))
            .collect(),
    }
}

fn instruction(node: &Node) -> JsonInstruction {
    let (form, args, pairs, nested) = match &node.args {
        Args::Exec(list) => ("exec", list.clone(), None, None),
        Args::Shell(s) => ("shell", vec![s.clone()], None, None),
        Args::Words(w) => ("words", w.clone(), None, None),
        Args::KeyValues(kv) => (
            "key_values",
            kv.iter()
                .flat_map(|p| [p.key.clone(), p.value.clone()])
                .collect(),
            Some(
                kv.iter()
                    .map(|p| JsonPair {
                        key: p.key.clone(),
                        value: p.value.clone(),
                        legacy: p.legacy,
                    })
                    .collect(),
            ),
            None,
        ),
        Args::Nested(inner) => (
            "nested",
            Vec::new(),
            None,
            Some(Box::new(instruction(inner))),
        ),
        Args::None => ("none", Vec::new(), None, None),
    };
    JsonInstruction {
        keyword: node.keyword.value.to_ascii_uppercase(),
        start_line: node.span.start.line,
        end_line: node.span.end.line,
        flags: node
            .flags
            .iter()
            .map(|f| match &f.value {
                Some(v) => format!("--{}={v}", f.name),
                None => format!("--{}", f.name),
            })
            .collect(),
        form,
        args,
        pairs,
        heredocs: node.heredocs.iter().map(heredoc).collect(),
        nested,
    }
}

fn heredoc(h: &Heredoc) -> JsonHeredoc {
    JsonHeredoc {
        name: h.name.clone(),
        body: h.body.clone(),
        expand: h.expand,
        strip_tabs: h.strip_tabs,
        start_line: h.span.start.line,
        end_line: h.span.end.line,
    }
}

/// The text listing of `forge parse`: one line per instruction,
/// `START_LINE:COL-END_LINE:COL KEYWORD [flags] form: args`, heredocs indented below.
pub fn text_listing(dockerfile: &Dockerfile) -> String {
    let mut out = String::new();
    for d in [
        (
            "syntax",
            dockerfile
                .directives
                .syntax
                .as_ref()
                .map(|s| s.value.clone()),
        ),
        (
            "escape",
            dockerfile
                .directives
                .escape
                .as_ref()
                .map(|s| s.value.to_string()),
        ),
        (
            "check",
            dockerfile
                .directives
                .check
                .as_ref()
                .map(|s| s.value.clone()),
        ),
    ] {
        if let (name, Some(value)) = d {
            let _ = writeln!(out, "# {name}={value}");
        }
    }
    for i in &dockerfile.instructions {
        let n = &i.node;
        let _ = writeln!(
            out,
            "{}:{}-{}:{} {}",
            n.span.start.line,
            n.span.start.column,
            n.span.end.line,
            n.span.end.column,
            node_text(n)
        );
        let heredocs = match &n.args {
            Args::Nested(inner) => &inner.heredocs,
            _ => &n.heredocs,
        };
        for h in heredocs {
            let _ = writeln!(
                out,
                "    heredoc {} (lines {}-{}{}{}): {:?}",
                h.name,
                h.span.start.line,
                h.span.end.line,
                if h.expand { "" } else { ", no expansion" },
                if h.strip_tabs { ", tabs stripped" } else { "" },
                h.body
            );
        }
    }
    out
}

fn node_text(n: &Node) -> String {
    let mut s = n.keyword.value.to_ascii_uppercase();
    if !n.flags.is_empty() {
        let flags: Vec<String> = n
            .flags
            .iter()
            .map(|f| match &f.value {
                Some(v) => format!("--{}={v}", f.name),
                None => format!("--{}", f.name),
            })
            .collect();
        let _ = write!(s, " [{}]", flags.join(" "));
    }
    let quoted = |list: &[String]| serde_json::to_string(list).unwrap_or_default();
    let _ = match &n.args {
        Args::Exec(list) => write!(s, " exec: {}", quoted(list)),
        Args::Shell(cmd) => write!(s, " shell: {cmd}"),
        Args::Words(w) => write!(s, " words: {}", quoted(w)),
        Args::KeyValues(kv) => {
            let pairs: Vec<String> = kv
                .iter()
                .map(|p| format!("{}={}", p.key, p.value))
                .collect();
            write!(s, " pairs: {}", pairs.join(" "))
        }
        Args::Nested(inner) => write!(s, " -> {}", node_text(inner)),
        Args::None => Ok(()),
    };
    s
}

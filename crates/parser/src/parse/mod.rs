//! The Dockerfile parser: BuildKit's line model (directives, continuations, comments inside
//! continuations, heredoc bodies) driving the per-instruction parsers.

mod directives;
mod flags;
mod heredoc;
mod instruction;
mod source;
mod words;

use crate::ast::{Args, Dockerfile, Heredoc, Instruction, Span};
use crate::error::{ParseError, ParseErrorKind};
use source::{Logical, Source};

/// Parses a whole Dockerfile. A UTF-8 BOM and CRLF line endings are accepted.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let src = Source::new(text);
    let (directives, escape) = directives::read(&src)?;
    // Instructions are large; growing the vector by doubling would copy them repeatedly.
    let mut instructions = Vec::with_capacity(src.line_count() / 2 + 1);
    let mut logical = Logical::default();
    let lines = src.line_count();
    let mut i = 0;
    while i < lines {
        let (start, line) = src.line(i);
        i += 1;
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        let (piece, mut ends) = trim_continuation(trimmed, escape);
        if ends && piece.is_empty() {
            continue;
        }
        logical.clear();
        logical.push(piece, start + (line.len() - trimmed.len()), i - 1);
        let mut last = i - 1;
        let mut empty_lines = Vec::new();
        while !ends && i < lines {
            let (start, line) = src.line(i);
            i += 1;
            last = i - 1;
            let trimmed = line.trim_start();
            // Comment lines inside a continuation are dropped; blank ones too (lint reports them).
            if trimmed.starts_with('#') {
                continue;
            }
            if trimmed.is_empty() {
                empty_lines.push(i);
                continue;
            }
            let (piece, e) = trim_continuation(line, escape);
            ends = e;
            logical.push(piece, start, i - 1);
        }
        if logical.text.trim().is_empty() {
            continue;
        }

        let mut parsed = instruction::parse_node(&src, &logical, 0, escape)?;
        let owner = parsed.heredoc_owner();
        // BuildKit reads no heredocs for the exec form (`RUN ["cat", "<<EOF"]`).
        if owner.keyword.takes_heredocs() && !matches!(owner.node.args, Args::Exec(_)) {
            let markers = heredoc::markers(&logical.text);
            let mut docs = Vec::with_capacity(markers.len());
            for marker in markers {
                let body_start = i;
                let mut body = String::new();
                let mut terminated = false;
                while i < lines {
                    let raw = src.line_with_ending(i);
                    i += 1;
                    let mut candidate = raw.trim_end_matches(['\r', '\n']);
                    if marker.strip_tabs {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == marker.name {
                        terminated = true;
                        break;
                    }
                    body.push_str(if marker.strip_tabs {
                        raw.trim_start_matches('\t')
                    } else {
                        raw
                    });
                }
                if !terminated {
                    return Err(src.error_at(
                        owner.node.keyword.span.start.offset,
                        ParseErrorKind::UnterminatedHeredoc { name: marker.name },
                    ));
                }
                last = i - 1;
                let start = if body_start < lines {
                    src.line_start(body_start)
                } else {
                    src.line_end(lines - 1)
                };
                docs.push(Heredoc {
                    name: marker.name,
                    body,
                    expand: marker.expand,
                    strip_tabs: marker.strip_tabs,
                    span: Span {
                        start,
                        end: src.line_end(last),
                    },
                });
            }
            instruction::set_heredocs(owner, docs);
        }

        let end = src.line_end(last);
        parsed.node.span.end = end;
        parsed.node.empty_continuation_lines = empty_lines;
        if let Some(nested) = parsed.nested.as_mut() {
            nested.node.span.end = end;
            parsed.node.args = Args::Nested(Box::new(nested.node.clone()));
        }
        let kind = instruction::typed(&src, &parsed)?;
        instructions.push(Instruction {
            node: parsed.node,
            kind,
        });
    }
    if instructions.is_empty() {
        return Err(src.error_at(0, ParseErrorKind::Empty));
    }
    Ok(Dockerfile {
        directives,
        escape,
        instructions,
    })
}

/// BuildKit's continuation rule: the escape character, then only spaces and tabs, at the end of
/// the line, alone or after a character that is not itself the escape character (so `echo \\`
/// ends the instruction). Returns the line without them and whether the instruction ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(piece) if !piece.ends_with(escape) => (piece, false),
        _ => (line, true),
    }
}

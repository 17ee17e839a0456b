//! Physical lines of the source, positions, and the logical lines (continuations joined)
//! that instructions are parsed from, with a map back to source offsets for spans.

use crate::ast::{Pos, Span};
use crate::error::{ParseError, ParseErrorKind};

/// The source text after BOM removal, with the start offset of every physical line.
pub(crate) struct Source<'a> {
    pub(crate) text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut starts = Vec::with_capacity(text.len() / 40 + 1);
        if !text.is_empty() {
            starts.push(0);
            starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
            // A final newline ends the last line; it does not start another one.
            if starts.last() == Some(&text.len()) {
                starts.pop();
            }
        }
        Self { text, starts }
    }

    pub(crate) fn line_count(&self) -> usize {
        self.starts.len()
    }

    /// Line `idx` (0-based) without its terminator, and its start offset. Like Go's
    /// `bufio.ScanLines` plus BuildKit's `trimNewline`, trailing `\r`s are dropped.
    pub(crate) fn line(&self, idx: usize) -> (usize, &'a str) {
        let start = self.starts[idx];
        let end = self.starts.get(idx + 1).copied().unwrap_or(self.text.len());
        let line = self.text[start..end].trim_end_matches(['\n', '\r']);
        (start, line)
    }

    /// Line `idx` (0-based) with its line ending as written (`\n`, `\r\n` or none at the end
    /// of the file): heredoc bodies keep them, as BuildKit does.
    pub(crate) fn line_with_ending(&self, idx: usize) -> &'a str {
        let start = self.starts[idx];
        let end = self.starts.get(idx + 1).copied().unwrap_or(self.text.len());
        &self.text[start..end]
    }

    pub(crate) fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let idx = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let start = self.starts.get(idx).copied().unwrap_or(0);
        // Characters, not bytes: count the bytes that start a UTF-8 sequence (this loop
        // vectorises, unlike `chars().count()` on short strings).
        let column = self.text.as_bytes()[start..offset]
            .iter()
            .filter(|&&b| (b & 0xC0) != 0x80)
            .count()
            + 1;
        Pos {
            line: idx + 1,
            column,
            offset,
        }
    }

    /// The position of `offset`, known to lie on line `idx` (0-based): no search needed.
    pub(crate) fn pos_in_line(&self, idx: usize, offset: usize) -> Pos {
        let start = self.starts.get(idx).copied().unwrap_or(0);
        let offset = offset.clamp(start, self.text.len());
        // Characters, not bytes: count the bytes that start a UTF-8 sequence (this loop
        // vectorises, unlike `chars().count()` on short strings).
        let column = self.text.as_bytes()[start..offset]
            .iter()
            .filter(|&&b| (b & 0xC0) != 0x80)
            .count()
            + 1;
        Pos {
            line: idx + 1,
            column,
            offset,
        }
    }

    /// The position just after the content of line `idx` (0-based).
    pub(crate) fn line_end(&self, idx: usize) -> Pos {
        let (start, line) = self.line(idx);
        self.pos_in_line(idx, start + line.len())
    }

    /// The position at the start of line `idx` (0-based).
    pub(crate) fn line_start(&self, idx: usize) -> Pos {
        self.pos_in_line(idx, self.starts.get(idx).copied().unwrap_or(0))
    }

    pub(crate) fn span(&self, start: usize, end: usize) -> Span {
        Span {
            start: self.pos(start),
            end: self.pos(end),
        }
    }

    /// An error at a source offset, quoting its line.
    pub(crate) fn error_at(&self, offset: usize, kind: ParseErrorKind) -> ParseError {
        let pos = self.pos(offset);
        let source_line = if pos.line <= self.line_count() {
            self.line(pos.line - 1).1.to_string()
        } else {
            String::new()
        };
        ParseError {
            line: pos.line.max(1),
            column: pos.column,
            kind,
            source_line,
        }
    }
}

/// An instruction's logical line: the pieces of its physical lines with continuation
/// characters removed, and where each piece came from.
#[derive(Default)]
pub(crate) struct Logical {
    pub(crate) text: String,
    /// (offset in `text`, offset in the source, 0-based source line) of each piece, in order.
    segs: Vec<(usize, usize, usize)>,
}

impl Logical {
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.segs.clear();
    }

    pub(crate) fn push(&mut self, piece: &str, source_offset: usize, line: usize) {
        self.segs.push((self.text.len(), source_offset, line));
        self.text.push_str(piece);
    }

    /// The source offset of a byte offset of the logical line.
    pub(crate) fn source_offset(&self, logical: usize) -> usize {
        let idx = self
            .segs
            .partition_point(|&(l, _, _)| l <= logical)
            .saturating_sub(1);
        match self.segs.get(idx) {
            Some(&(l, s, _)) => s + (logical - l),
            None => logical,
        }
    }

    /// The span of logical range `start..end`, without searching the source's lines.
    pub(crate) fn span(&self, src: &Source<'_>, start: usize, end: usize) -> Span {
        let pos = |logical: usize, closing: bool| {
            let idx = if closing && logical > 0 {
                self.segs.partition_point(|&(l, _, _)| l < logical)
            } else {
                self.segs.partition_point(|&(l, _, _)| l <= logical)
            }
            .saturating_sub(1);
            match self.segs.get(idx) {
                Some(&(l, s, line)) => src.pos_in_line(line, s + (logical - l)),
                None => src.pos(logical),
            }
        };
        Span {
            start: pos(start, false),
            end: pos(end, true),
        }
    }
}

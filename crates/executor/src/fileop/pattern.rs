//! Pattern matching with Docker's rules: Go's `filepath.Match` for one path component (`*`, `?`,
//! `[...]` with `^` negation and ranges, `\` escapes) for COPY wildcards, and Docker's
//! patternmatcher rules (`**` across directories, `!` re-inclusion, the last matching pattern
//! wins, a match on a parent directory covers what is inside) for `--exclude`.

use super::error::FileOpError;

/// One compiled path component of a pattern.
#[derive(Debug, Clone)]
pub(crate) enum Segment {
    /// `**`: any number of path components.
    AnyDepth,
    /// A `filepath.Match` pattern for exactly one component.
    Glob(Vec<Token>),
}

#[derive(Debug, Clone)]
pub(crate) enum Token {
    Literal(char),
    AnyChar,
    AnyRun,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// True when `component` holds an unescaped `*`, `?` or `[` (fsutil's `containsWildcards`).
pub(crate) fn has_wildcard(component: &str) -> bool {
    let mut chars = component.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// Compiles one component with Go's `filepath.Match` syntax; malformed patterns are errors
/// (Go's `ErrBadPattern`), reported for the whole pattern `full`.
pub(crate) fn compile_glob(component: &str, full: &str) -> Result<Vec<Token>, FileOpError> {
    let bad = |reason| FileOpError::BadPattern {
        pattern: full.to_string(),
        reason,
    };
    let chars: Vec<char> = component.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                if !matches!(tokens.last(), Some(Token::AnyRun)) {
                    tokens.push(Token::AnyRun);
                }
                i += 1;
            }
            '?' => {
                tokens.push(Token::AnyChar);
                i += 1;
            }
            '\\' => {
                let c = *chars.get(i + 1).ok_or_else(|| bad("trailing backslash"))?;
                tokens.push(Token::Literal(c));
                i += 2;
            }
            '[' => {
                i += 1;
                let negated = chars.get(i) == Some(&'^');
                if negated {
                    i += 1;
                }
                let mut ranges = Vec::new();
                loop {
                    match chars.get(i) {
                        None => return Err(bad("unterminated character class")),
                        Some(']') if !ranges.is_empty() => {
                            i += 1;
                            break;
                        }
                        _ => {}
                    }
                    let (lo, next) =
                        class_char(&chars, i).ok_or_else(|| bad("bad character class"))?;
                    i = next;
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') {
                        let (h, next) =
                            class_char(&chars, i + 1).ok_or_else(|| bad("bad character range"))?;
                        hi = h;
                        i = next;
                    }
                    if hi < lo {
                        return Err(bad("character range is reversed"));
                    }
                    ranges.push((lo, hi));
                }
                tokens.push(Token::Class { negated, ranges });
            }
            c => {
                tokens.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    Ok(tokens)
}

/// One character inside `[...]`: Go refuses an unescaped `-` or `]` here.
fn class_char(chars: &[char], i: usize) -> Option<(char, usize)> {
    match chars.get(i)? {
        '-' | ']' => None,
        '\\' => chars.get(i + 1).map(|c| (*c, i + 2)),
        c => Some((*c, i + 1)),
    }
}

/// Matches one path component against compiled tokens.
pub(crate) fn glob_matches(tokens: &[Token], name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    match_from(tokens, &name)
}

fn match_from(tokens: &[Token], name: &[char]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return name.is_empty();
    };
    match first {
        Token::AnyRun => (0..=name.len()).any(|skip| match_from(rest, &name[skip..])),
        Token::AnyChar => !name.is_empty() && match_from(rest, &name[1..]),
        Token::Literal(c) => name.first() == Some(c) && match_from(rest, &name[1..]),
        Token::Class { negated, ranges } => match name.first() {
            Some(c) => {
                let inside = ranges.iter().any(|(lo, hi)| lo <= c && c <= hi);
                inside != *negated && match_from(rest, &name[1..])
            }
            None => false,
        },
    }
}

/// Splits a slash pattern into compiled segments (`**` becomes [`Segment::AnyDepth`]).
pub(crate) fn compile_segments(pattern: &str) -> Result<Vec<Segment>, FileOpError> {
    pattern
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(|c| {
            if c == "**" {
                Ok(Segment::AnyDepth)
            } else {
                compile_glob(c, pattern).map(Segment::Glob)
            }
        })
        .collect()
}

/// Matches a whole relative path (its components) against segments. `**` matches any number
/// of components, but at least one when it ends the pattern (Docker's `dir/**` does not match
/// `dir` itself).
pub(crate) fn segments_match(segments: &[Segment], path: &[&str]) -> bool {
    match segments.split_first() {
        None => path.is_empty(),
        Some((Segment::AnyDepth, rest)) => {
            let min = usize::from(rest.is_empty());
            (min..=path.len()).any(|skip| segments_match(rest, &path[skip..]))
        }
        Some((Segment::Glob(tokens), rest)) => match path.split_first() {
            Some((first, tail)) => glob_matches(tokens, first) && segments_match(rest, tail),
            None => false,
        },
    }
}

/// A list of `--exclude` patterns with Docker's semantics.
#[derive(Debug, Clone, Default)]
pub(crate) struct PatternSet {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    exclusion: bool,
    segments: Vec<Segment>,
}

impl PatternSet {
    pub(crate) fn new(raw: &[String]) -> Result<Self, FileOpError> {
        let mut patterns = Vec::new();
        for p in raw {
            let mut text = p.trim();
            if text.is_empty() {
                continue;
            }
            let exclusion = text.starts_with('!');
            if exclusion {
                text = text[1..].trim();
                if text.is_empty() {
                    return Err(FileOpError::BadPattern {
                        pattern: p.clone(),
                        reason: "illegal exclusion pattern \"!\"",
                    });
                }
            }
            let cleaned = super::scoped::clean_abs(text);
            let cleaned = cleaned.trim_start_matches('/').to_string();
            let segments = compile_segments(&cleaned)?;
            patterns.push(Pattern {
                text: cleaned,
                exclusion,
                segments,
            });
        }
        Ok(Self { patterns })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `rel` (slash-separated, relative) is excluded: the last pattern matching the
    /// path or one of its parent directories decides.
    pub(crate) fn matches(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let hit = (1..=parts.len()).any(|n| segments_match(&p.segments, &parts[..n]));
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// An excluded directory must still be walked when a `!` pattern may re-include something
    /// below it (fsutil's rule: the exclusion pattern starts with the directory's path).
    pub(crate) fn may_reinclude_below(&self, dir_rel: &str) -> bool {
        let dir_slash = format!("{}/", dir_rel.trim_end_matches('/'));
        self.patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.text).starts_with(&dir_slash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        glob_matches(&compile_glob(p, p).unwrap(), n)
    }

    #[test]
    fn go_match_semantics() {
        assert!(m("*.txt", "a.txt"));
        assert!(m("*.txt", ".hidden.txt"));
        assert!(!m("*.txt", "a.txt.bak"));
        assert!(m("a?c", "abc"));
        assert!(m("[a-c]x", "bx"));
        assert!(!m("[^a-c]x", "bx"));
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "x"));
        assert!(m("a*b*c", "aXbYc"));
        for bad in ["[", "[]", "a\\", "[z-a]", "[-]"] {
            assert!(compile_glob(bad, bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn docker_exclude_semantics() {
        let set =
            PatternSet::new(&["**/*.log".into(), "build".into(), "!build/keep".into()]).unwrap();
        assert!(set.matches("a.log"));
        assert!(set.matches("x/y/a.log"));
        assert!(set.matches("build/out.o"));
        assert!(!set.matches("build/keep"));
        assert!(!set.matches("src/main.rs"));
        assert!(set.may_reinclude_below("build"));
        let star = PatternSet::new(&["*.md".into()]).unwrap();
        assert!(star.matches("README.md"));
        assert!(!star.matches("docs/x.md"));
        let deep = PatternSet::new(&["dir/**".into()]).unwrap();
        assert!(!deep.matches("dir"));
        assert!(deep.matches("dir/a/b"));
    }
}

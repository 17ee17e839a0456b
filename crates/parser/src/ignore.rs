//! `.dockerignore` matching with Docker's semantics (moby/patternmatcher and the ignore-file
//! reader): patterns are cleaned like Go's `filepath.Clean`, use `filepath.Match` syntax per
//! path element plus `**` for any number of directories, `!` re-includes, the last matching
//! pattern wins, and a pattern that matches a directory also matches everything under it.

/// A bad `.dockerignore` pattern, naming its line (1-based; the position in the list for
/// [`IgnoreMatcher::from_patterns`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// A pattern that Go's `filepath.Match` would refuse (unclosed `[`, empty class, bad range,
    /// trailing `\`).
    #[error("line {line}: invalid .dockerignore pattern {pattern:?}: {reason}")]
    BadPattern {
        line: usize,
        pattern: String,
        reason: &'static str,
    },
    /// A line holding only `!`.
    #[error("line {line}: illegal exclusion pattern: \"!\"")]
    LoneExclamation { line: usize },
}

/// Parsed `.dockerignore` patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
}

/// The ignore file names to try for a Dockerfile path, in precedence order:
/// `<Dockerfile>.dockerignore` beside it, then `.dockerignore` at the context root.
pub fn ignore_file_candidates(dockerfile_name: &str) -> Vec<String> {
    let mut candidates = Vec::with_capacity(2);
    let trimmed = dockerfile_name.trim_end_matches('/');
    if !trimmed.is_empty() {
        candidates.push(format!("{trimmed}.dockerignore"));
    }
    candidates.push(".dockerignore".to_string());
    candidates
}

impl IgnoreMatcher {
    /// Parse the text of an ignore file: `#` comment lines and blank lines are skipped, lines are
    /// trimmed, a leading `/` is dropped and each pattern is cleaned.
    pub fn parse(text: &str) -> Result<IgnoreMatcher, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, line) in text.lines().enumerate() {
            // Docker drops comment lines before trimming, so an indented `#` is a pattern.
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (invert, rest) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let mut normalized = String::new();
            if !rest.is_empty() {
                let cleaned = clean(rest);
                let cleaned = match cleaned.strip_prefix('/') {
                    Some(stripped) if !stripped.is_empty() => stripped.to_string(),
                    _ => cleaned,
                };
                normalized = cleaned;
            }
            let full = if invert {
                format!("!{normalized}")
            } else {
                normalized
            };
            patterns.push(Pattern::new(&full, index + 1)?);
        }
        Ok(IgnoreMatcher { patterns })
    }

    /// Build from patterns as Docker's pattern matcher takes them (trimmed and cleaned, `!`
    /// for exceptions, no comment handling).
    pub fn from_patterns<I: IntoIterator<Item = S>, S: AsRef<str>>(
        patterns: I,
    ) -> Result<Self, IgnoreError> {
        let mut out = Vec::new();
        for (index, pattern) in patterns.into_iter().enumerate() {
            let pattern = pattern.as_ref().trim();
            if pattern.is_empty() {
                continue;
            }
            out.push(Pattern::new(pattern, index + 1)?);
        }
        Ok(IgnoreMatcher { patterns: out })
    }

    /// Whether the last pattern matching `rel_path` or one of its parent directories excludes it.
    /// `rel_path` is `/`-separated and relative to the context root.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let path = normalize_path(rel_path);
        if path.is_empty() || path == "." {
            // Docker never lets the context root itself be excluded.
            return false;
        }
        let parent = dir(path);
        let parents: Vec<&str> = if parent == "." {
            Vec::new()
        } else {
            // Every prefix of the parent, shortest first: "a", "a/b", ...
            let mut prefixes: Vec<&str> = parent
                .match_indices('/')
                .map(|(i, _)| &parent[..i])
                .collect();
            prefixes.push(parent);
            prefixes
        };
        let mut matched = false;
        for pattern in &self.patterns {
            // An inclusion cannot change an already excluded path, nor an exception a kept one.
            if pattern.exclusion != matched {
                continue;
            }
            let hit = pattern.matches_or_parent(path, &parents);
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// False only if `rel_dir` is excluded and no `!` pattern can re-include anything under it,
    /// so a walker may skip the whole directory.
    pub fn may_include_under(&self, rel_dir: &str) -> bool {
        if !self.is_excluded(rel_dir) {
            return true;
        }
        let dir = normalize_path(rel_dir).trim_end_matches('/');
        let prefix = format!("{dir}/");
        // Every pattern that matches the directory (or its parents) also matches everything in
        // it, so children can only differ through a pattern that reaches strictly below it.
        self.patterns
            .iter()
            .any(|p| p.exclusion && p.may_match_under(&prefix))
    }

    /// True when there are no patterns (nothing is excluded).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

fn normalize_path(path: &str) -> &str {
    let mut path = path;
    loop {
        if let Some(rest) = path.strip_prefix("./") {
            path = rest;
        } else if let Some(rest) = path.strip_prefix('/') {
            path = rest;
        } else {
            return path;
        }
    }
}

/// Go's `filepath.Dir` for `/`-separated paths.
fn dir(path: &str) -> &str {
    match path.rfind('/') {
        None => ".",
        Some(0) => "/",
        Some(i) => path[..i].trim_end_matches('/'),
    }
}

/// Go's `filepath.Clean` for `/`-separated paths.
fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// How a pattern is matched: patternmatcher picks a plain string comparison when the pattern
/// allows it, and those comparisons have their own (kept) quirks, e.g. `**foo` is a suffix test.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MatchKind {
    Exact,
    /// `dir/**`: anything starting with `dir/`.
    Prefix(String),
    /// `**/name` or `**name`: anything ending with the rest (or equal to it without its `/`).
    Suffix(String),
    Tokens(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`: one character other than `/`.
    Any,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**/` in the middle: optionally any characters (not newlines) ending with `/`.
    AnyDirs,
    /// `**` at the end: any characters but newlines.
    Rest,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: MatchKind,
}

impl Pattern {
    fn new(raw: &str, line: usize) -> Result<Pattern, IgnoreError> {
        let cleaned = clean(raw.trim());
        let (exclusion, body) = match cleaned.strip_prefix('!') {
            Some("") => return Err(IgnoreError::LoneExclamation { line }),
            Some(rest) => (true, rest.to_string()),
            None => (false, cleaned),
        };
        validate(&body).map_err(|reason| IgnoreError::BadPattern {
            line,
            pattern: raw.to_string(),
            reason,
        })?;
        let kind = compile(&body);
        Ok(Pattern {
            cleaned: body,
            exclusion,
            kind,
        })
    }

    /// Whether the pattern matches `path` or one of `parents` (its ancestor directories).
    fn matches_or_parent(&self, path: &str, parents: &[&str]) -> bool {
        match &self.kind {
            // One pass over the path answers for every parent too: a parent is the text
            // before one of the path's slashes.
            MatchKind::Tokens(tokens) => {
                let parent_len = parents.last().map_or(0, |p| p.len());
                nfa_matches(tokens, path, parent_len)
            }
            _ => self.matches(path) || parents.iter().any(|p| self.matches(p)),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            MatchKind::Exact => path == self.cleaned,
            MatchKind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            MatchKind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            MatchKind::Tokens(tokens) => nfa_matches(tokens, path, 0),
        }
    }

    /// Whether some path starting with `prefix` (which ends with `/`) could match.
    fn may_match_under(&self, prefix: &str) -> bool {
        match &self.kind {
            MatchKind::Exact => {
                self.cleaned.starts_with(prefix) && self.cleaned.len() > prefix.len()
            }
            MatchKind::Prefix(p) => p.starts_with(prefix) || prefix.starts_with(p.as_str()),
            // Any path can end with the suffix.
            MatchKind::Suffix(_) => true,
            MatchKind::Tokens(tokens) => {
                let text: Vec<char> = prefix.chars().collect();
                !run_nfa(tokens, &text).is_empty()
            }
        }
    }
}

/// Check a pattern the way Go's `filepath.Match` does before any matching.
fn validate(pattern: &str) -> Result<(), &'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err("trailing backslash");
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut ranges = 0;
                loop {
                    if chars.get(i) == Some(&']') && ranges > 0 {
                        i += 1;
                        break;
                    }
                    let lo = class_char(&chars, &mut i)?;
                    if chars.get(i) == Some(&'-') {
                        i += 1;
                        let hi = class_char(&chars, &mut i)?;
                        if hi < lo {
                            return Err("character range out of order");
                        }
                    }
                    ranges += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// One character of a class, escapes resolved; Go refuses `-` and `]` here and a class that
/// runs to the end of the pattern.
fn class_char(chars: &[char], i: &mut usize) -> Result<char, &'static str> {
    let mut ch = match chars.get(*i) {
        None => return Err("unterminated character class"),
        Some('-' | ']') => return Err("bad character class"),
        Some(&c) => c,
    };
    if ch == '\\' {
        *i += 1;
        ch = *chars.get(*i).ok_or("unterminated character class")?;
    }
    *i += 1;
    if *i >= chars.len() {
        return Err("unterminated character class");
    }
    Ok(ch)
}

/// Compile a validated pattern, choosing the match kind as patternmatcher does.
fn compile(pattern: &str) -> MatchKind {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regexp,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut step = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        tokens.push(Tok::Rest);
                        kind = Kind::Regexp;
                    }
                } else {
                    tokens.push(Tok::AnyDirs);
                    kind = Kind::Regexp;
                }
                if step == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                tokens.push(Tok::Star);
                kind = Kind::Regexp;
            }
            '?' => {
                tokens.push(Tok::Any);
                kind = Kind::Regexp;
            }
            '\\' => match chars.get(i) {
                Some(&next) => {
                    i += 1;
                    tokens.push(Tok::Lit(next));
                    kind = Kind::Regexp;
                }
                None => tokens.push(Tok::Lit('\\')),
            },
            '[' => {
                let mut negated = false;
                if chars.get(i) == Some(&'^') {
                    negated = true;
                    i += 1;
                }
                let mut ranges = Vec::new();
                while i < chars.len() {
                    if chars[i] == ']' && !ranges.is_empty() {
                        i += 1;
                        break;
                    }
                    let lo = take_class_char(&chars, &mut i);
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
                        i += 1;
                        hi = take_class_char(&chars, &mut i);
                    }
                    ranges.push((lo, hi));
                }
                tokens.push(Tok::Class { negated, ranges });
                kind = Kind::Regexp;
            }
            ']' => {
                tokens.push(Tok::Lit(']'));
                kind = Kind::Regexp;
            }
            _ => tokens.push(Tok::Lit(ch)),
        }
        step += 1;
    }
    match kind {
        Kind::Exact => MatchKind::Exact,
        Kind::Prefix => MatchKind::Prefix(pattern[..pattern.len() - 2].to_string()),
        Kind::Suffix => MatchKind::Suffix(pattern[2..].to_string()),
        Kind::Regexp => MatchKind::Tokens(tokens),
    }
}

fn take_class_char(chars: &[char], i: &mut usize) -> char {
    let mut ch = chars[*i];
    if ch == '\\' && *i + 1 < chars.len() {
        *i += 1;
        ch = chars[*i];
    }
    *i += 1;
    ch
}

/// Whether the pattern matches all of `text`, or the part before a `/` that lies within the
/// first `prefix_len` bytes (the parent directories). A Thompson simulation: linear in the
/// text's length times the pattern's.
fn nfa_matches(tokens: &[Tok], text: &str, prefix_len: usize) -> bool {
    let accept = (tokens.len(), false);
    let mut current = vec![(0, false)];
    closure(tokens, &mut current);
    let mut next = Vec::with_capacity(current.capacity());
    for (i, ch) in text.char_indices() {
        if ch == '/' && i > 0 && i <= prefix_len && current.contains(&accept) {
            return true;
        }
        step(tokens, &current, ch, &mut next);
        if next.is_empty() {
            return false;
        }
        std::mem::swap(&mut current, &mut next);
    }
    current.contains(&accept)
}

/// The live states `(token, inside AnyDirs)` after the whole text; empty when no continuation
/// of `text` can match.
fn run_nfa(tokens: &[Tok], text: &[char]) -> Vec<(usize, bool)> {
    let mut current = vec![(0, false)];
    closure(tokens, &mut current);
    let mut next = Vec::new();
    for &ch in text {
        step(tokens, &current, ch, &mut next);
        std::mem::swap(&mut current, &mut next);
        if current.is_empty() {
            break;
        }
    }
    current
}

/// The states after consuming `ch` from `current`, closed under empty moves, into `next`.
fn step(tokens: &[Tok], current: &[(usize, bool)], ch: char, next: &mut Vec<(usize, bool)>) {
    next.clear();
    for &(ti, inside) in current {
        if inside {
            if ch != '\n' {
                add(next, (ti, true));
            }
            if ch == '/' {
                add(next, (ti + 1, false));
            }
            continue;
        }
        let Some(tok) = tokens.get(ti) else { continue };
        match tok {
            Tok::Lit(c) if *c == ch => add(next, (ti + 1, false)),
            Tok::Any if ch != '/' => add(next, (ti + 1, false)),
            Tok::Star if ch != '/' => add(next, (ti, false)),
            Tok::Rest if ch != '\n' => add(next, (ti, false)),
            Tok::Class { negated, ranges } => {
                let in_class = ranges.iter().any(|(lo, hi)| *lo <= ch && ch <= *hi);
                if in_class != *negated {
                    add(next, (ti + 1, false));
                }
            }
            _ => {}
        }
    }
    closure(tokens, next);
}

/// Add the states reachable without consuming a character.
fn closure(tokens: &[Tok], states: &mut Vec<(usize, bool)>) {
    let mut i = 0;
    while i < states.len() {
        let (ti, inside) = states[i];
        if !inside {
            match tokens.get(ti) {
                Some(Tok::Star | Tok::Rest) => add(states, (ti + 1, false)),
                Some(Tok::AnyDirs) => {
                    add(states, (ti + 1, false));
                    add(states, (ti, true));
                }
                _ => {}
            }
        }
        i += 1;
    }
}

fn add(states: &mut Vec<(usize, bool)>, state: (usize, bool)) {
    if !states.contains(&state) {
        states.push(state);
    }
}

//! BuildKit's shell-word expansion: `$v`, `${v}`, the `${v:-w}` family, prefix/suffix
//! trimming and `${v/p/r}` replacement, single and double quotes and the escape character,
//! with the same quirks as BuildKit's lexer (frontend/dockerfile/shell) so a Dockerfile
//! expands here exactly as it would there.
//!
//! Expansion is pure: variables come from a [`VarSource`], and the names a word referenced
//! come back split into those that were set and those that were not (the lints' UndefinedVar
//! and the planner's unused-build-arg warning both need them).

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where expansion looks variables up.
pub trait VarSource {
    /// The value of `name`, or `None` when it is not set (set-but-empty is `Some("")`).
    fn lookup(&self, name: &str) -> Option<String>;
}

impl VarSource for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl VarSource for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl<T: VarSource + ?Sized> VarSource for &T {
    fn lookup(&self, name: &str) -> Option<String> {
        (**self).lookup(name)
    }
}

/// One expanded word.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The word with quotes removed, escapes processed and variables substituted.
    pub value: String,
    /// Variables the word referenced that were set.
    pub matched: BTreeSet<String>,
    /// Variables the word referenced that were not set.
    pub unmatched: BTreeSet<String>,
}

/// A text expanded and split into words.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WordsExpansion {
    pub words: Vec<String>,
    pub matched: BTreeSet<String>,
    pub unmatched: BTreeSet<String>,
}

/// Why a word could not be expanded. Every variant carries the word as written; the
/// messages follow BuildKit's so users see the text they know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// `${v?msg}` with `v` unset, or `${v:?msg}` with `v` unset or empty.
    #[error("failed to process {word:?}: {name}: {message}")]
    Required {
        word: String,
        name: String,
        message: String,
    },
    /// `${` without its closing brace.
    #[error("failed to process {word:?}: syntax error: missing '}}'")]
    MissingBrace { word: String },
    /// `${}`, `${:x}`, `${{x}`.
    #[error("failed to process {word:?}: syntax error: bad substitution")]
    BadSubstitution { word: String },
    /// `${v/pattern` without the `/` that ends the pattern.
    #[error("failed to process {word:?}: syntax error: missing '/' in ${{}}")]
    MissingSlash { word: String },
    /// `${v=w}`, `${v:x}` and other modifiers BuildKit does not support.
    #[error("failed to process {word:?}: unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier { word: String, modifier: String },
    /// A quote opened and never closed.
    #[error("failed to process {word:?}: unexpected end of statement while looking for matching {quote}")]
    UnterminatedQuote { word: String, quote: &'static str },
    /// A pattern of `${v#p}`, `${v%p}` or `${v/p/r}` with a bad escape.
    #[error("failed to process {word:?}: invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        word: String,
        pattern: String,
        reason: String,
    },
}

/// Switches for the less common ways BuildKit runs its lexer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpandOptions {
    /// Keep quote characters in the output (BuildKit's `RawQuotes`).
    pub raw_quotes: bool,
    /// Keep escape characters in the output (BuildKit's `RawEscapes`, used for heredoc bodies).
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters (BuildKit's `SkipProcessQuotes`, used for heredoc bodies).
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written (BuildKit's `SkipUnsetEnv`).
    pub skip_unset: bool,
}

/// Expand one word (quotes removed, escapes processed), as BuildKit's ProcessWordWithMatches.
pub fn expand_word(
    word: &str,
    escape: char,
    vars: &dyn VarSource,
) -> Result<Expansion, ExpandError> {
    expand_word_with(word, escape, vars, ExpandOptions::default())
}

/// [`expand_word`] with BuildKit's lexer switches.
pub fn expand_word_with(
    word: &str,
    escape: char,
    vars: &dyn VarSource,
    options: ExpandOptions,
) -> Result<Expansion, ExpandError> {
    let (value, _, matched, unmatched) = run(word, escape, vars, options)?;
    Ok(Expansion {
        value,
        matched,
        unmatched,
    })
}

/// Expand and split into words (as BuildKit's ProcessWords), for instructions taking several words.
///
/// Splitting happens after substitution: whitespace in a variable's value splits words unless
/// the reference was quoted.
pub fn expand_words(
    text: &str,
    escape: char,
    vars: &dyn VarSource,
) -> Result<WordsExpansion, ExpandError> {
    let (_, words, matched, unmatched) = run(text, escape, vars, ExpandOptions::default())?;
    Ok(WordsExpansion {
        words,
        matched,
        unmatched,
    })
}

type Run = (String, Vec<String>, BTreeSet<String>, BTreeSet<String>);

fn run(
    word: &str,
    escape: char,
    vars: &dyn VarSource,
    options: ExpandOptions,
) -> Result<Run, ExpandError> {
    let mut lexer = Lexer {
        chars: word.chars().collect(),
        pos: 0,
        escape,
        vars,
        options,
        raw_escapes: options.raw_escapes,
        matched: BTreeSet::new(),
        unmatched: BTreeSet::new(),
    };
    match lexer.process_stop_on(None, options.raw_escapes) {
        Ok((value, words)) => Ok((value, words, lexer.matched, lexer.unmatched)),
        Err(fail) => Err(fail.into_error(word)),
    }
}

/// An expansion failure before the word it happened in is attached.
enum Fail {
    Required { name: String, message: String },
    MissingBrace,
    BadSubstitution,
    MissingSlash,
    UnsupportedModifier(String),
    UnterminatedQuote(&'static str),
    InvalidPattern { pattern: String, reason: String },
}

impl Fail {
    fn into_error(self, word: &str) -> ExpandError {
        let word = word.to_string();
        match self {
            Fail::Required { name, message } => ExpandError::Required {
                word,
                name,
                message,
            },
            Fail::MissingBrace => ExpandError::MissingBrace { word },
            Fail::BadSubstitution => ExpandError::BadSubstitution { word },
            Fail::MissingSlash => ExpandError::MissingSlash { word },
            Fail::UnsupportedModifier(modifier) => {
                ExpandError::UnsupportedModifier { word, modifier }
            }
            Fail::UnterminatedQuote(quote) => ExpandError::UnterminatedQuote { word, quote },
            Fail::InvalidPattern { pattern, reason } => ExpandError::InvalidPattern {
                word,
                pattern,
                reason,
            },
        }
    }
}

/// Collects words the way BuildKit does: unquoted text and substituted values split on
/// whitespace, quoted text and escaped characters never do.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            // An empty quoted string marks a word as started but is dropped if nothing
            // follows it before the next space: BuildKit's behaviour, kept on purpose.
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: &'a dyn VarSource,
    options: ExpandOptions,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        match self.vars.lookup(name) {
            Some(value) => {
                self.matched.insert(name.to_string());
                Some(value)
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    /// Process up to `stop` (consumed) or the end of input when `stop` is `None`.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), Fail> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let result = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        result
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), Fail> {
        let mut result = String::new();
        let mut words = Words::default();
        let quotes = !self.options.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                    words.add_string(&value);
                }
                '\'' if quotes => {
                    let value = self.process_single_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                '"' if quotes => {
                    let value = self.process_double_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // A trailing escape is dropped (BuildKit: "escapes, except end of line").
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(_) => Err(Fail::MissingBrace),
            None => Ok((result, words.finish())),
        }
    }

    fn process_single_quote(&mut self) -> Result<String, Fail> {
        let mut result = String::new();
        let open = self.next();
        if self.options.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(Fail::UnterminatedQuote("single-quote")),
                Some('\'') => {
                    if self.options.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, Fail> {
        let mut result = String::new();
        let open = self.next();
        if self.options.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(Fail::UnterminatedQuote("double-quote")),
                Some('"') => {
                    self.pos += 1;
                    if self.options.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // An escape at the very end is dropped; the loop then reports the
                            // missing closing quote.
                            None => continue,
                            // Inside double quotes the escape only protects these; before any
                            // other character it stays literal.
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.pos += 1;
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, Fail> {
        self.pos += 1; // the '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.options.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // the '{'
        match self.peek() {
            None => return Err(Fail::MissingBrace),
            Some('{' | '}' | ':') => return Err(Fail::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(mut modifier) = self.next() else {
            return Err(Fail::MissingBrace);
        };
        let mut written = modifier.to_string();
        let mut null_is_unset = false;
        match modifier {
            '}' => {
                return Ok(match self.lookup(&name) {
                    Some(value) => value,
                    None if self.options.skip_unset => format!("${{{name}}}"),
                    None => String::new(),
                });
            }
            '/' => return self.process_replace(&name),
            ':' => {
                null_is_unset = true;
                match self.next() {
                    Some(ch) => {
                        modifier = ch;
                        written.push(ch);
                    }
                    None => return Err(Fail::MissingBrace),
                }
            }
            '+' | '-' | '?' | '#' | '%' => {}
            _ => return Err(Fail::UnsupportedModifier(written)),
        }

        // Patterns keep their escapes so the pattern compiler can see them.
        let raw = modifier == '#' || modifier == '%';
        let word = match self.process_stop_on(Some('}'), raw) {
            Ok((word, _)) => word,
            Err(_) if self.peek().is_none() => return Err(Fail::MissingBrace),
            Err(fail) => return Err(fail),
        };

        let value = self.lookup(&name);
        if self.options.skip_unset && value.is_none() {
            return Ok(format!("${{{name}{written}{word}}}"));
        }
        let empty = value
            .as_deref()
            .is_none_or(|v| null_is_unset && v.is_empty());
        match modifier {
            '-' => Ok(if empty {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if empty { String::new() } else { word }),
            '?' => match value {
                None => Err(Fail::Required {
                    name,
                    message: if word.is_empty() {
                        "is not allowed to be unset".into()
                    } else {
                        word
                    },
                }),
                Some(v) if null_is_unset && v.is_empty() => Err(Fail::Required {
                    name,
                    message: if word.is_empty() {
                        "is not allowed to be empty".into()
                    } else {
                        word
                    },
                }),
                Some(v) => Ok(v),
            },
            '#' | '%' => {
                // A doubled modifier (`##`, `%%`) asks for the longest match. BuildKit looks at
                // the expanded pattern, so a variable's value can supply the second `#`.
                let (greedy, pattern) = match word.strip_prefix(modifier) {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, word),
                };
                let value = value.unwrap_or_default();
                if modifier == '%' {
                    trim_suffix(&pattern, &value, greedy)
                } else {
                    trim_prefix(&pattern, &value, greedy)
                }
            }
            _ => Err(Fail::UnsupportedModifier(written)),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`, after the first `/`.
    fn process_replace(&mut self, name: &str) -> Result<String, Fail> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = match self.process_stop_on(Some('/'), true) {
            Ok((p, _)) => p,
            Err(_) if self.peek().is_none() => return Err(Fail::MissingSlash),
            Err(fail) => return Err(fail),
        };
        let replacement = match self.process_stop_on(Some('}'), true) {
            Ok((r, _)) => r,
            Err(_) if self.peek().is_none() => return Err(Fail::MissingBrace),
            Err(fail) => return Err(fail),
        };
        let value = self.lookup(name);
        if self.options.skip_unset && value.is_none() {
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        let tokens = compile_pattern(&pattern)?;
        let value: Vec<char> = value.unwrap_or_default().chars().collect();
        Ok(replace(&tokens, &value, &replacement, all))
    }

    /// A variable name: letters, digits and `_`; or a run of digits (positional parameter);
    /// or one special parameter character.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }
}

/// One element of a substitution pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`: any one character but a newline (BuildKit compiles it to the regexp `.`).
    Any,
    /// `*`: any run of characters but newlines.
    Star,
}

/// Compile a substitution pattern as BuildKit does: `*` and `?` are wildcards, `\` escapes
/// `*`, `?` and `\`, and is dropped before `}` and `/`; there are no bracket expressions.
fn compile_pattern(pattern: &str) -> Result<Vec<Token>, Fail> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::Any),
            '\\' => match chars.peek().copied() {
                Some('}' | '/') => {}
                Some(next @ ('*' | '?' | '\\')) => {
                    chars.next();
                    tokens.push(Token::Literal(next));
                }
                other => {
                    let shown = other.map(String::from).unwrap_or_default();
                    return Err(Fail::InvalidPattern {
                        pattern: pattern.to_string(),
                        reason: format!("invalid escape '\\{shown}'"),
                    });
                }
            },
            _ => tokens.push(Token::Literal(ch)),
        }
    }
    Ok(tokens)
}

/// States of the pattern search already explored, as a bitmap over (token, position).
struct Visited {
    seen: Vec<bool>,
    width: usize,
}

impl Visited {
    fn new(tokens: &[Token], text: &[char]) -> Visited {
        let width = text.len() + 1;
        Visited {
            seen: vec![false; (tokens.len() + 1) * width],
            width,
        }
    }

    /// Marks the state; false if it was already marked.
    fn insert(&mut self, ti: usize, pos: usize) -> bool {
        let slot = &mut self.seen[ti * self.width + pos];
        !std::mem::replace(slot, true)
    }
}

/// The end of the first match of `tokens` starting exactly at `start`, trying the
/// alternatives in the order a backtracking regexp engine would (`*` longest first when
/// `greedy`, shortest first otherwise), which is what BuildKit's regexps report.
///
/// Depth-first search that skips states seen before: a seen state has already been explored
/// without reaching the end (the search stops at the first success), so the search stays
/// polynomial whatever the pattern, and `visited` may be shared by searches from several starts.
fn match_at(
    tokens: &[Token],
    text: &[char],
    start: usize,
    greedy: bool,
    visited: &mut Visited,
) -> Option<usize> {
    let mut stack = vec![(0usize, start)];
    while let Some((ti, pos)) = stack.pop() {
        if !visited.insert(ti, pos) {
            continue;
        }
        let Some(token) = tokens.get(ti) else {
            return Some(pos);
        };
        let ch = text.get(pos).copied();
        match token {
            Token::Literal(lit) => {
                if ch == Some(*lit) {
                    stack.push((ti + 1, pos + 1));
                }
            }
            Token::Any => {
                if ch.is_some_and(|c| c != '\n') {
                    stack.push((ti + 1, pos + 1));
                }
            }
            Token::Star => {
                let can_eat = ch.is_some_and(|c| c != '\n');
                // Pushed last is tried first.
                if greedy {
                    stack.push((ti + 1, pos));
                    if can_eat {
                        stack.push((ti, pos + 1));
                    }
                } else {
                    if can_eat {
                        stack.push((ti, pos + 1));
                    }
                    stack.push((ti + 1, pos));
                }
            }
        }
    }
    None
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, Fail> {
    let tokens = compile_pattern(pattern)?;
    let text: Vec<char> = value.chars().collect();
    Ok(
        match match_at(&tokens, &text, 0, greedy, &mut Visited::new(&tokens, &text)) {
            Some(end) => text[end..].iter().collect(),
            None => value.to_string(),
        },
    )
}

/// The shortest or longest matching suffix is the shortest or longest matching prefix of
/// the reversed value against the reversed pattern.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, Fail> {
    let mut tokens = compile_pattern(pattern)?;
    tokens.reverse();
    let reversed: Vec<char> = value.chars().rev().collect();
    Ok(
        match match_at(
            &tokens,
            &reversed,
            0,
            greedy,
            &mut Visited::new(&tokens, &reversed),
        ) {
            Some(end) => {
                let keep = reversed.len() - end;
                value.chars().take(keep).collect()
            }
            None => value.to_string(),
        },
    )
}

/// The leftmost match at or after `from`.
fn find(tokens: &[Token], text: &[char], from: usize) -> Option<(usize, usize)> {
    let mut visited = Visited::new(tokens, text);
    (from..=text.len())
        .find_map(|start| match_at(tokens, text, start, true, &mut visited).map(|end| (start, end)))
}

/// Replace the first or every match, with Go's regexp rules for empty matches (an empty
/// match right after a previous match is not replaced; the search always advances).
fn replace(tokens: &[Token], text: &[char], replacement: &str, all: bool) -> String {
    let mut out = String::new();
    if !all {
        return match find(tokens, text, 0) {
            Some((start, end)) => {
                out.extend(&text[..start]);
                out.push_str(replacement);
                out.extend(&text[end..]);
                out
            }
            None => text.iter().collect(),
        };
    }
    let mut search = 0;
    let mut last_end = 0;
    while search <= text.len() {
        let Some((start, end)) = find(tokens, text, search) else {
            break;
        };
        out.extend(&text[last_end..start]);
        if end > last_end || start == 0 {
            out.push_str(replacement);
        }
        last_end = end;
        search = if search + 1 > end { search + 1 } else { end };
    }
    out.extend(&text[last_end.min(text.len())..]);
    out
}

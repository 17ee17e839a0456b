//! Splitting an instruction's text the ways BuildKit's parser does: leading `--flags`,
//! whitespace-delimited words, quote-aware words (ENV, LABEL, ARG), and the JSON form.

/// A word of a logical line with its byte range in that line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) text: String,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Go's `unicode.IsSpace`, which BuildKit uses for word boundaries.
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]+`.
pub(crate) fn is_ascii_blank(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Skips whitespace from `pos`.
pub(crate) fn skip_space(s: &str, pos: usize) -> usize {
    match s[pos..].find(|c: char| !is_space(c)) {
        Some(i) => pos + i,
        None => s.len(),
    }
}

/// BuildKit's `extractBuilderFlags`: the `--flag` words at the start of `line[from..]`
/// (quotes removed, `\` escapes the next character), and the offset where the arguments start.
/// A lone `--` ends the flags.
pub(crate) fn extract_flags(line: &str, from: usize) -> (Vec<Word>, usize) {
    let mut words = Vec::new();
    let mut pos = from;
    loop {
        pos = skip_space(line, pos);
        if pos >= line.len() {
            return (words, line.len());
        }
        if !line[pos..].starts_with("--") {
            return (words, pos);
        }
        let start = pos;
        // Fast path: a flag without quotes or escapes is copied as it is.
        let plain_end = line[start..]
            .find(|c: char| is_space(c) || c == '\'' || c == '"' || c == '\\')
            .map_or(line.len(), |i| start + i);
        if line[plain_end..].chars().next().is_none_or(is_space) {
            pos = plain_end;
            if &line[start..plain_end] == "--" {
                return (words, skip_space(line, pos));
            }
            words.push(Word {
                text: line[start..plain_end].to_string(),
                start,
                end: plain_end,
            });
            continue;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut end = line.len();
        let mut it = line[start..].char_indices();
        while let Some((i, c)) = it.next() {
            match quote {
                None if is_space(c) => {
                    end = start + i;
                    break;
                }
                None if c == '\'' || c == '"' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ if c == '\\' => match it.next() {
                    Some((_, n)) => word.push(n),
                    None => quote = None,
                },
                _ => word.push(c),
            }
        }
        pos = end;
        if word == "--" {
            return (words, skip_space(line, pos));
        }
        words.push(Word {
            text: word,
            start,
            end,
        });
    }
}

/// BuildKit's `parseStringsWhitespaceDelimited`: words split on ASCII blanks, nothing else.
pub(crate) fn split_blank(line: &str, from: usize) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line[from..].char_indices() {
        let i = from + i;
        if is_ascii_blank(c) {
            if let Some(s) = start.take() {
                out.push(Word {
                    text: line[s..i].to_string(),
                    start: s,
                    end: i,
                });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(Word {
            text: line[s..].to_string(),
            start: s,
            end: line.len(),
        });
    }
    out
}

/// BuildKit's `parseWords`: words split on whitespace outside quotes; quotes and escapes are
/// kept as written (only an escape character at the very end is dropped).
pub(crate) fn parse_words(line: &str, from: usize, escape: char) -> Vec<Word> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut start: Option<usize> = None;
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut it = line[from..].char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let i = from + i;
        let Some(s) = start else {
            if is_space(c) {
                continue;
            }
            start = Some(i);
            // Fall through into the word with this character.
            push_word_char(&mut word, &mut quote, &mut blank_ok, c, escape, &mut it);
            continue;
        };
        if quote.is_none() && is_space(c) {
            if blank_ok || !word.is_empty() {
                out.push(Word {
                    text: std::mem::take(&mut word),
                    start: s,
                    end: i,
                });
            }
            word.clear();
            start = None;
            blank_ok = false;
            continue;
        }
        push_word_char(&mut word, &mut quote, &mut blank_ok, c, escape, &mut it);
    }
    if let Some(s) = start {
        if blank_ok || !word.is_empty() {
            out.push(Word {
                text: word,
                start: s,
                end: line.len(),
            });
        }
    }
    out
}

fn push_word_char(
    word: &mut String,
    quote: &mut Option<char>,
    blank_ok: &mut bool,
    c: char,
    escape: char,
    it: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
) {
    match *quote {
        None => {
            if c == '\'' || c == '"' {
                *quote = Some(c);
                *blank_ok = true;
            }
            if c == escape {
                match it.next() {
                    // An escape at the very end is dropped.
                    None => return,
                    Some((_, n)) => {
                        word.push(c);
                        word.push(n);
                        return;
                    }
                }
            }
            word.push(c);
        }
        Some(q) => {
            if c == q {
                *quote = None;
            }
            // Nothing escapes inside single quotes.
            if c == escape && q != '\'' {
                match it.next() {
                    None => {
                        *quote = None;
                        return;
                    }
                    Some((_, n)) => {
                        word.push(c);
                        word.push(n);
                        return;
                    }
                }
            }
            word.push(c);
        }
    }
}

/// The exec form: a valid JSON array of strings (anything else is the shell form).
pub(crate) fn parse_json(rest: &str) -> Option<Vec<String>> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return None;
    }
    // Anything but an array of strings (numbers, nested arrays, bad JSON) is the shell form.
    serde_json::from_str(rest).ok()
}

/// The words of a line as BuildKit's shell lexer splits them for heredoc detection: on
/// whitespace outside quotes, `\` escaping the next character, quotes and escapes kept.
pub(crate) fn shell_words(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut quote: Option<char> = None;
    let mut it = line.char_indices();
    while let Some((i, c)) = it.next() {
        if start.is_none() {
            if matches!(c, ' ' | '\t' | '\n') {
                continue;
            }
            start = Some(i);
        }
        match quote {
            None if matches!(c, ' ' | '\t' | '\n') => {
                if let Some(s) = start.take() {
                    out.push(&line[s..i]);
                }
            }
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '\\' => {
                it.next();
            }
            Some('"') if c == '\\' => {
                it.next();
            }
            Some(q) if c == q => quote = None,
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(&line[s..]);
    }
    out
}

/// The candidate closest to `word` (ignoring case) when it is a likely typo: one edit per three
/// characters (at least one, at most two), a swap of neighbours counting as one edit.
pub(crate) fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let word: Vec<char> = word.to_lowercase().chars().collect();
    let limit = (word.len() / 3).clamp(1, 2);
    candidates
        .into_iter()
        .map(|c| {
            let c_chars: Vec<char> = c.to_lowercase().chars().collect();
            (edit_distance(&word, &c_chars), c)
        })
        .filter(|&(d, _)| d <= limit && d < word.len())
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_stop_at_first_non_flag_and_lone_dashes() {
        let (f, rest) = extract_flags("--a=1 \"--b\"=x --c y --d", 0);
        let names: Vec<_> = f.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(names, ["--a=1"]);
        assert_eq!(rest, 6);
        let (f, rest) = extract_flags(" --a='x y' -- --b", 0);
        assert_eq!(f[0].text, "--a=x y");
        assert_eq!(&" --a='x y' -- --b"[rest..], "--b");
    }

    #[test]
    fn suggestions_for_typos_only() {
        assert_eq!(closest("RUNN", ["RUN", "CMD"]), Some("RUN"));
        assert_eq!(closest("mout", ["mount", "network"]), Some("mount"));
        assert_eq!(closest("cpoy", ["COPY", "CMD"]), Some("COPY"));
        assert_eq!(closest("FOO", ["RUN", "COPY"]), None);
        assert_eq!(closest("x", ["a"]), None);
    }

    #[test]
    fn words_keep_quotes() {
        let w = parse_words(r#"a="x y" b=c\ d  'e f'"#, 0, '\\');
        let t: Vec<_> = w.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(t, [r#"a="x y""#, r"b=c\ d", "'e f'"]);
    }

    #[test]
    fn json_form_requires_strings() {
        assert_eq!(
            parse_json(r#"["a", "b"]"#),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_json(r#"["a", 1]"#), None);
        assert_eq!(parse_json("[a]"), None);
        assert_eq!(parse_json("[]"), Some(vec![]));
    }

    #[test]
    fn shell_words_respect_quotes() {
        assert_eq!(
            shell_words(r#"cat <<"E O" > 'x y' a\ b"#),
            ["cat", r#"<<"E O""#, ">", "'x y'", r"a\ b"]
        );
    }
}

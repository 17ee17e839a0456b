//! Heredoc markers (`<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'`, `2<<EOF`) in RUN, COPY and ADD.
//!
//! BuildKit finds them among the words of the joined instruction line (its shell lexer's
//! split), so `cat<<EOF` is not a heredoc but `cat <<EOF` is; the bodies then follow the
//! instruction, one after another, each ended by a line equal to its name.

use nom::bytes::complete::{tag, take_while};
use nom::combinator::{all_consuming, opt};
use nom::sequence::tuple;
use nom::IResult;

use super::words::shell_words;

/// A heredoc marker found on an instruction line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) name: String,
    pub(crate) expand: bool,
    pub(crate) strip_tabs: bool,
}

/// `^(\d*)<<(-?)([^<]*)$` with a non-empty rest.
fn marker_word(word: &str) -> IResult<&str, (bool, &str)> {
    let (rest, (_, _, dash, name)) = all_consuming(tuple((
        take_while(|c: char| c.is_ascii_digit()),
        tag("<<"),
        opt(tag("-")),
        take_while(|c: char| c != '<'),
    )))(word)?;
    Ok((rest, (dash.is_some(), name)))
}

/// Removes shell quoting from a heredoc word: `'...'` literal, `"..."` and bare text with `\`
/// escaping the next character.
fn unquote(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut quote: Option<char> = None;
    let mut it = word.chars();
    while let Some(c) = it.next() {
        match quote {
            None if c == '\'' || c == '"' => quote = Some(c),
            Some(q) if c == q => quote = None,
            Some('\'') => out.push(c),
            _ if c == '\\' => {
                if let Some(n) = it.next() {
                    out.push(n);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn count_quotes(s: &str) -> usize {
    s.chars().filter(|&c| c == '\'' || c == '"').count()
}

/// The heredoc markers of a joined instruction line, in order.
pub(crate) fn markers(line: &str) -> Vec<Marker> {
    if !line.contains("<<") {
        return Vec::new();
    }
    shell_words(line)
        .into_iter()
        .filter_map(|word| {
            let (_, (strip_tabs, rest)) = marker_word(word).ok()?;
            if rest.is_empty() {
                return None;
            }
            let name = unquote(rest);
            if name.is_empty() {
                return None;
            }
            // Some quoting was removed: the body is taken literally (BuildKit's rule).
            let expand = count_quotes(&name) == count_quotes(rest);
            Some(Marker {
                name,
                expand,
                strip_tabs,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, expand: bool, strip_tabs: bool) -> Marker {
        Marker {
            name: name.into(),
            expand,
            strip_tabs,
        }
    }

    #[test]
    fn marker_forms() {
        assert_eq!(markers("RUN <<EOF"), [m("EOF", true, false)]);
        assert_eq!(markers("RUN <<-EOT bash"), [m("EOT", true, true)]);
        assert_eq!(markers(r#"RUN <<"EOF""#), [m("EOF", false, false)]);
        assert_eq!(
            markers("COPY <<'A' <<B /dst/"),
            [m("A", false, false), m("B", true, false)]
        );
        assert_eq!(markers("RUN cat 3<<EOF"), [m("EOF", true, false)]);
        assert!(markers("RUN cat<<EOF").is_empty());
        assert!(markers("RUN echo '<<EOF'").is_empty());
        assert!(markers("RUN a << b").is_empty());
    }
}

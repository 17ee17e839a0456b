//! Parser directives (`# syntax=`, `# escape=`, `# check=`) at the top of the file.
//!
//! As in BuildKit, directives are read from the first lines until one line is not an allowed
//! directive (a blank line, a plain comment, an unknown directive or an instruction all end
//! them); a repeated directive is an error. A `#!` shebang on the first line is skipped when
//! looking for `syntax` and `check` (BuildKit's `DetectSyntax`), but it ends the directives of the
//! line parser, so an `escape` directive after it has no effect.

use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::{satisfy, space0};
use nom::combinator::recognize;
use nom::sequence::{pair, tuple};
use nom::IResult;

use super::source::Source;
use crate::ast::{Directives, Spanned};
use crate::error::{ParseError, ParseErrorKind};

/// `#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$`: the key and the value's range.
fn directive(line: &str) -> IResult<&str, (&str, &str)> {
    let (rest, (_, _, key, _, _, _)) = tuple((
        tag("#"),
        space0,
        recognize(pair(
            satisfy(|c| c.is_ascii_alphabetic()),
            take_while(|c: char| c.is_ascii_alphanumeric()),
        )),
        space0,
        tag("="),
        space0,
    ))(line)?;
    let (_, value) = take_while1(|_| true)(rest.trim_end_matches([' ', '\t']))?;
    Ok(("", (key, value)))
}

/// Reads the directives and returns them with the escape character in force.
pub(crate) fn read(src: &Source<'_>) -> Result<(Directives, char), ParseError> {
    let mut directives = Directives::default();
    let mut escape = '\\';
    let mut shebang = false;
    for idx in 0..src.line_count() {
        let (start, line) = src.line(idx);
        let trimmed = line.trim_start();
        let lead = line.len() - trimmed.len();
        if idx == 0 && trimmed.starts_with("#!") {
            shebang = true;
            continue;
        }
        let Ok((_, (key, value))) = directive(trimmed) else {
            break;
        };
        let value_start = start + lead + (value.as_ptr() as usize - trimmed.as_ptr() as usize);
        let span = src.span(value_start, value_start + value.len());
        let key_lower = key.to_ascii_lowercase();
        let already = match key_lower.as_str() {
            "syntax" => directives.syntax.is_some(),
            "escape" => directives.escape.is_some(),
            "check" => directives.check.is_some(),
            _ => break,
        };
        if already {
            return Err(src.error_at(
                start + lead,
                ParseErrorKind::DuplicateDirective { name: key_lower },
            ));
        }
        match key_lower.as_str() {
            "syntax" => {
                directives.syntax = Some(Spanned {
                    value: value.to_string(),
                    span,
                })
            }
            // After a shebang BuildKit's line parser has stopped reading directives.
            "escape" if shebang => {}
            "escape" => {
                let c = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(src.error_at(
                            value_start,
                            ParseErrorKind::InvalidEscape {
                                value: value.to_string(),
                            },
                        ))
                    }
                };
                escape = c;
                directives.escape = Some(Spanned { value: c, span });
            }
            _ => {
                directives.check = Some(Spanned {
                    value: value.to_string(),
                    span,
                })
            }
        }
    }
    Ok((directives, escape))
}

#[cfg(test)]
mod tests {
    use super::directive;

    #[test]
    fn directive_grammar() {
        assert_eq!(directive("# escape = ` ").unwrap().1, ("escape", "`"));
        assert_eq!(
            directive("#syntax=docker/dockerfile:1").unwrap().1,
            ("syntax", "docker/dockerfile:1")
        );
        assert!(directive("# not a directive").is_err());
        assert!(directive("# key=").is_err());
        assert!(directive("#1x=y").is_err());
    }
}

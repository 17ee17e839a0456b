//! One instruction: its keyword, flags and arguments split the way BuildKit's parser splits
//! them for that keyword (the raw [`Node`]), then the typed [`InstructionKind`].

use super::flags::{self, FlagError, FlagKind, Flags};
use super::source::{Logical, Source};
use super::words::{
    self, extract_flags, is_space, parse_json, parse_words, skip_space, split_blank,
};
use crate::ast::{
    ArgDecl, Args, CommandLine, Copy, From, Healthcheck, Heredoc, InstructionKind, KeyValue,
    NetworkMode, Node, RawFlag, Run, SecurityMode, Span, Spanned,
};
use crate::error::{ParseError, ParseErrorKind};

/// The instructions forge knows, by keyword (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    From,
    Run,
    Cmd,
    Label,
    Maintainer,
    Expose,
    Env,
    Add,
    Copy,
    Entrypoint,
    Volume,
    User,
    Workdir,
    Arg,
    Onbuild,
    Stopsignal,
    Healthcheck,
    Shell,
}

const KEYWORDS: [(&str, Keyword); 18] = [
    ("FROM", Keyword::From),
    ("RUN", Keyword::Run),
    ("CMD", Keyword::Cmd),
    ("LABEL", Keyword::Label),
    ("MAINTAINER", Keyword::Maintainer),
    ("EXPOSE", Keyword::Expose),
    ("ENV", Keyword::Env),
    ("ADD", Keyword::Add),
    ("COPY", Keyword::Copy),
    ("ENTRYPOINT", Keyword::Entrypoint),
    ("VOLUME", Keyword::Volume),
    ("USER", Keyword::User),
    ("WORKDIR", Keyword::Workdir),
    ("ARG", Keyword::Arg),
    ("ONBUILD", Keyword::Onbuild),
    ("STOPSIGNAL", Keyword::Stopsignal),
    ("HEALTHCHECK", Keyword::Healthcheck),
    ("SHELL", Keyword::Shell),
];

impl Keyword {
    pub(crate) fn parse(word: &str) -> Option<Self> {
        KEYWORDS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(word))
            .map(|&(_, kw)| kw)
    }

    pub(crate) fn name(self) -> &'static str {
        KEYWORDS
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Whether heredocs on this instruction's line are read (BuildKit: RUN, COPY, ADD).
    pub(crate) fn takes_heredocs(self) -> bool {
        matches!(self, Self::Run | Self::Copy | Self::Add)
    }

    fn accepted_flags(self) -> &'static [(&'static str, FlagKind)] {
        use FlagKind::*;
        match self {
            Self::From => &[("platform", Str)],
            Self::Run => &[("mount", Strs), ("network", Str), ("security", Str)],
            Self::Copy => &[
                ("from", Str),
                ("chown", Str),
                ("chmod", Str),
                ("link", Bool),
                ("parents", Bool),
                ("exclude", Strs),
            ],
            Self::Add => &[
                ("chown", Str),
                ("chmod", Str),
                ("link", Bool),
                ("exclude", Strs),
                ("checksum", Str),
                ("keep-git-dir", Bool),
                ("unpack", Bool),
            ],
            Self::Healthcheck => &[
                ("interval", Str),
                ("timeout", Str),
                ("start-period", Str),
                ("start-interval", Str),
                ("retries", Str),
            ],
            _ => &[],
        }
    }
}

/// A node with what the typed pass needs to locate its errors.
pub(crate) struct Parsed {
    pub(crate) node: Node,
    pub(crate) keyword: Keyword,
    /// Source offset of the keyword and of the first argument (or end of line).
    keyword_at: usize,
    args_at: usize,
    /// Spans of the whitespace-delimited words (FROM), for the stage name's span.
    word_spans: Vec<Span>,
    pub(crate) nested: Option<Box<Parsed>>,
}

impl Parsed {
    /// The node that owns heredocs: ONBUILD's nested instruction, or this one.
    pub(crate) fn heredoc_owner(&mut self) -> &mut Parsed {
        match self.nested {
            Some(ref mut nested) => nested,
            None => self,
        }
    }
}

/// Parses the instruction starting at logical offset `from`.
pub(crate) fn parse_node(
    src: &Source<'_>,
    logical: &Logical,
    from: usize,
    escape: char,
) -> Result<Parsed, ParseError> {
    let text = logical.text.as_str();
    let at = |logical_offset: usize| logical.source_offset(logical_offset);
    let span = |start: usize, end: usize| logical.span(src, start, end);

    let kw_start = skip_space(text, from);
    let kw_end = text[kw_start..]
        .find(is_space)
        .map_or(text.len(), |i| kw_start + i);
    let word = &text[kw_start..kw_end];
    let keyword = Keyword::parse(word).ok_or_else(|| {
        src.error_at(
            at(kw_start),
            ParseErrorKind::UnknownInstruction {
                keyword: word.to_string(),
                suggestion: words::closest(word, KEYWORDS.iter().map(|(k, _)| *k))
                    .map(str::to_string),
            },
        )
    })?;

    let (flag_words, args_start) = extract_flags(text, kw_end);
    let flags: Vec<RawFlag> = flag_words
        .into_iter()
        .map(|w| {
            // Reuse the word's buffer for the name: flags are on most RUN/COPY lines.
            let mut name = w.text;
            name.drain(..2.min(name.len()));
            let value = name.find('=').map(|eq| {
                let value = name.split_off(eq + 1);
                name.truncate(eq);
                value
            });
            RawFlag {
                name,
                value,
                span: span(w.start, w.end),
            }
        })
        .collect();
    let rest = text[args_start..].trim_end();
    let args_end = args_start + rest.len();

    let mut word_spans = Vec::new();
    let mut nested = None;
    let args = if rest.is_empty() {
        Args::None
    } else {
        match keyword {
            Keyword::Run | Keyword::Cmd | Keyword::Entrypoint | Keyword::Shell => maybe_json(rest),
            Keyword::Add | Keyword::Copy | Keyword::Volume => match parse_json(rest) {
                Some(list) => Args::Exec(list),
                None => Args::Words(words_of(split_blank(text, args_start), args_end)),
            },
            Keyword::From | Keyword::Expose => {
                let ws = split_blank(&text[..args_end], args_start);
                word_spans = ws.iter().map(|w| span(w.start, w.end)).collect();
                Args::Words(ws.into_iter().map(|w| w.text).collect())
            }
            Keyword::Maintainer | Keyword::Stopsignal | Keyword::User | Keyword::Workdir => {
                Args::Words(vec![rest.to_string()])
            }
            Keyword::Arg => Args::Words(
                parse_words(&text[..args_end], args_start, escape)
                    .into_iter()
                    .map(|w| w.text)
                    .collect(),
            ),
            Keyword::Env | Keyword::Label => Args::KeyValues(key_values(
                src, logical, keyword, args_start, args_end, escape,
            )?),
            Keyword::Healthcheck => {
                let sep = rest.find(is_space).unwrap_or(rest.len());
                let kind = &rest[..sep];
                let command = rest[sep..].trim_start();
                if kind.eq_ignore_ascii_case("NONE") || command.is_empty() {
                    let mut w = vec![kind.to_string()];
                    if !command.is_empty() {
                        w.push(command.to_string());
                    }
                    Args::Words(w)
                } else if kind.eq_ignore_ascii_case("CMD") {
                    maybe_json(command)
                } else {
                    return Err(src.error_at(
                        at(args_start),
                        ParseErrorKind::HealthcheckType {
                            kind: kind.to_string(),
                        },
                    ));
                }
            }
            Keyword::Onbuild => {
                let inner = parse_node(src, logical, args_start, escape)?;
                let node = inner.node.clone();
                nested = Some(Box::new(inner));
                Args::Nested(Box::new(node))
            }
        }
    };

    let node = Node {
        keyword: Spanned {
            value: word.to_string(),
            span: span(kw_start, kw_end),
        },
        flags,
        args,
        heredocs: Vec::new(),
        // The end is set by the caller once heredoc bodies are read.
        span: span(kw_start, kw_start),
        original: text[from..].to_string(),
        empty_continuation_lines: Vec::new(),
    };
    Ok(Parsed {
        node,
        keyword,
        keyword_at: at(kw_start),
        args_at: at(args_start),
        word_spans,
        nested,
    })
}

fn words_of(ws: Vec<words::Word>, end: usize) -> Vec<String> {
    ws.into_iter()
        .filter(|w| w.start < end)
        .map(|w| w.text)
        .collect()
}

/// BuildKit's `parseMaybeJSON`: the exec form if the text is a JSON array of strings.
fn maybe_json(rest: &str) -> Args {
    if rest.starts_with('[') {
        if let Some(list) = parse_json(rest) {
            return Args::Exec(list);
        }
    }
    Args::Shell(rest.to_string())
}

/// BuildKit's `parseNameVal` for ENV and LABEL: `k=v ...`, or the legacy `k v` when the first
/// word has no `=`.
fn key_values(
    src: &Source<'_>,
    logical: &Logical,
    keyword: Keyword,
    start: usize,
    end: usize,
    escape: char,
) -> Result<Vec<KeyValue>, ParseError> {
    let text = &logical.text[..end];
    let ws = parse_words(text, start, escape);
    let Some(first) = ws.first() else {
        return Ok(Vec::new());
    };
    let instruction = keyword.name();
    if !first.text.contains('=') {
        let rest = &text[start..];
        let Some(split) = rest.find(words::is_ascii_blank) else {
            return Err(src.error_at(
                logical.source_offset(start),
                ParseErrorKind::LegacyTwoArguments { instruction },
            ));
        };
        let key = &rest[..split];
        let value = rest[split..].trim_start_matches(words::is_ascii_blank);
        return Ok(vec![KeyValue {
            key: unquote(key, escape),
            value: value.to_string(),
            legacy: true,
        }]);
    }
    ws.iter()
        .map(|w| {
            let Some((k, v)) = w.text.split_once('=') else {
                return Err(src.error_at(
                    logical.source_offset(w.start),
                    ParseErrorKind::MissingEquals {
                        word: w.text.clone(),
                    },
                ));
            };
            let key = unquote(k, escape);
            if key.is_empty() {
                return Err(src.error_at(
                    logical.source_offset(w.start),
                    ParseErrorKind::BlankName { instruction },
                ));
            }
            Ok(KeyValue {
                key,
                value: v.to_string(),
                legacy: false,
            })
        })
        .collect()
}

/// Quote removal for keys: quotes dropped, the escape character takes the next one literally
/// (not inside single quotes).
fn unquote(s: &str, escape: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut quote: Option<char> = None;
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match quote {
            None if c == '\'' || c == '"' => quote = Some(c),
            Some(q) if c == q => quote = None,
            Some('\'') => out.push(c),
            _ if c == escape => {
                if let Some(n) = it.next() {
                    out.push(n);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn flag_err(src: &Source<'_>, (span, kind): FlagError) -> ParseError {
    // Point at the offending `--mount` field when it can be found inside the flag as written.
    let mut at = span.start.offset;
    if let ParseErrorKind::InvalidMount { field, .. } = &kind {
        let written = src
            .text
            .get(span.start.offset..span.end.offset)
            .unwrap_or_default();
        if let Some(i) = written.find(field.as_str()).filter(|_| !field.is_empty()) {
            at += i;
        }
    }
    src.error_at(at, kind)
}

/// The typed meaning of a parsed node (heredocs already attached).
pub(crate) fn typed(src: &Source<'_>, p: &Parsed) -> Result<InstructionKind, ParseError> {
    let node = &p.node;
    let instruction = p.keyword.name();
    // BuildKit never reads the flags of `HEALTHCHECK NONE` or STOPSIGNAL, so it accepts any.
    let unread = match (&p.keyword, &node.args) {
        (Keyword::Stopsignal, _) => true,
        (Keyword::Healthcheck, Args::Words(w)) => w[0].eq_ignore_ascii_case("NONE"),
        _ => false,
    };
    let flags = if unread {
        Flags::check(&[], &[]).map_err(|e| flag_err(src, e))?
    } else {
        Flags::check(&node.flags, p.keyword.accepted_flags()).map_err(|e| flag_err(src, e))?
    };
    let args_err = |kind: ParseErrorKind| {
        let at = if matches!(node.args, Args::None) {
            p.keyword_at
        } else {
            p.args_at
        };
        src.error_at(at, kind)
    };
    let words: &[String] = match &node.args {
        Args::Words(w) | Args::Exec(w) => w,
        _ => &[],
    };
    let one = || -> Result<String, ParseError> {
        match words {
            [w] => Ok(w.clone()),
            _ => Err(args_err(ParseErrorKind::ExactlyOneArgument { instruction })),
        }
    };
    let at_least_one = || -> Result<(), ParseError> {
        if words.is_empty() {
            Err(args_err(ParseErrorKind::AtLeastOneArgument { instruction }))
        } else {
            Ok(())
        }
    };

    Ok(match p.keyword {
        Keyword::From => {
            let alias = match words {
                [_] => None,
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    if !valid_stage_name(&name.to_ascii_lowercase()) {
                        return Err(src.error_at(
                            p.word_spans[2].start.offset,
                            ParseErrorKind::InvalidStageName { name: name.clone() },
                        ));
                    }
                    Some(Spanned {
                        value: name.clone(),
                        span: p.word_spans[2],
                    })
                }
                _ => return Err(args_err(ParseErrorKind::FromArguments)),
            };
            InstructionKind::From(From {
                image: words[0].clone(),
                alias,
                platform: flags.string("platform"),
            })
        }
        Keyword::Run => {
            let command = command_line(&node.args)
                .ok_or_else(|| args_err(ParseErrorKind::AtLeastOneArgument { instruction }))?;
            let mounts = flags
                .all("mount")
                .map(flags::mount)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| flag_err(src, e))?;
            let network = match flags.get("network") {
                None => None,
                Some(f) => Some(match f.value.as_deref().unwrap_or_default() {
                    "default" => NetworkMode::Default,
                    "none" => NetworkMode::None,
                    "host" => NetworkMode::Host,
                    _ => return Err(invalid_choice(src, f, "default, none or host")),
                }),
            };
            let security = match flags.get("security") {
                None => None,
                Some(f) => Some(match f.value.as_deref().unwrap_or_default() {
                    "sandbox" => SecurityMode::Sandbox,
                    "insecure" => SecurityMode::Insecure,
                    _ => return Err(invalid_choice(src, f, "sandbox or insecure")),
                }),
            };
            InstructionKind::Run(Run {
                command,
                mounts,
                network,
                security,
                heredocs: node.heredocs.clone(),
            })
        }
        Keyword::Cmd => InstructionKind::Cmd(
            command_line(&node.args).unwrap_or(CommandLine::Shell(String::new())),
        ),
        Keyword::Entrypoint => InstructionKind::Entrypoint(
            command_line(&node.args).unwrap_or(CommandLine::Shell(String::new())),
        ),
        Keyword::Label | Keyword::Env => {
            let pairs = match &node.args {
                Args::KeyValues(kv) if !kv.is_empty() => kv.clone(),
                _ => return Err(args_err(ParseErrorKind::AtLeastOneArgument { instruction })),
            };
            if p.keyword == Keyword::Env {
                InstructionKind::Env(pairs)
            } else {
                InstructionKind::Label(pairs)
            }
        }
        Keyword::Maintainer => InstructionKind::Maintainer(one()?),
        Keyword::User => InstructionKind::User(one()?),
        Keyword::Workdir => InstructionKind::Workdir(one()?),
        Keyword::Stopsignal => InstructionKind::Stopsignal(one()?),
        Keyword::Expose => {
            at_least_one()?;
            InstructionKind::Expose(words.to_vec())
        }
        Keyword::Volume => {
            at_least_one()?;
            if words.iter().any(|w| w.trim().is_empty()) {
                return Err(args_err(ParseErrorKind::EmptyVolume));
            }
            InstructionKind::Volume(words.to_vec())
        }
        Keyword::Arg => {
            at_least_one()?;
            let decls = words
                .iter()
                .map(|w| {
                    let (name, default) = match w.split_once('=') {
                        Some((n, d)) => (n, Some(d.to_string())),
                        None => (w.as_str(), None),
                    };
                    if name.is_empty() {
                        return Err(args_err(ParseErrorKind::BlankName { instruction }));
                    }
                    Ok(ArgDecl {
                        name: name.to_string(),
                        default,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            InstructionKind::Arg(decls)
        }
        Keyword::Add | Keyword::Copy => {
            let (dest, sources) = match words {
                [] => {
                    return Err(args_err(ParseErrorKind::AtLeastTwoArguments {
                        instruction,
                    }))
                }
                [_] => return Err(args_err(ParseErrorKind::NoDestination { instruction })),
                [sources @ .., dest] => (dest.clone(), sources.to_vec()),
            };
            let chmod = flags
                .get("chmod")
                .map(flags::chmod)
                .transpose()
                .map_err(|e| flag_err(src, e))?;
            let copy = Copy {
                sources,
                dest,
                from: flags.string("from"),
                chown: flags.string("chown"),
                chmod,
                link: flags.bool("link").unwrap_or(false),
                parents: flags.bool("parents").unwrap_or(false),
                exclude: flags
                    .all("exclude")
                    .filter_map(|f| f.value.clone())
                    .collect(),
                checksum: flags.string("checksum"),
                keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
                unpack: flags.bool("unpack"),
                heredocs: node.heredocs.clone(),
            };
            if p.keyword == Keyword::Add {
                InstructionKind::Add(copy)
            } else {
                InstructionKind::Copy(copy)
            }
        }
        Keyword::Onbuild => {
            let Some(inner) = &p.nested else {
                return Err(args_err(ParseErrorKind::AtLeastOneArgument { instruction }));
            };
            match inner.keyword {
                Keyword::Onbuild => {
                    return Err(src.error_at(inner.keyword_at, ParseErrorKind::OnbuildChain))
                }
                Keyword::From | Keyword::Maintainer => {
                    return Err(src.error_at(
                        inner.keyword_at,
                        ParseErrorKind::OnbuildTrigger {
                            keyword: inner.keyword.name().to_string(),
                        },
                    ))
                }
                _ => {}
            }
            let kind = typed(src, inner)?;
            InstructionKind::Onbuild(Box::new(crate::ast::Instruction {
                node: inner.node.clone(),
                kind,
            }))
        }
        Keyword::Healthcheck => {
            let check = match &node.args {
                Args::None => {
                    return Err(args_err(ParseErrorKind::AtLeastOneArgument { instruction }))
                }
                Args::Words(w) if w[0].eq_ignore_ascii_case("NONE") => {
                    if w.len() > 1 {
                        return Err(args_err(ParseErrorKind::HealthcheckNoneArguments));
                    }
                    Healthcheck::None
                }
                Args::Words(_) => return Err(args_err(ParseErrorKind::HealthcheckMissingCommand)),
                args => {
                    let duration = |name: &str| {
                        flags
                            .get(name)
                            .map(flags::healthcheck_duration)
                            .transpose()
                            .map_err(|e| flag_err(src, e))
                    };
                    Healthcheck::Check {
                        command: command_line(args).unwrap_or(CommandLine::Shell(String::new())),
                        interval: duration("interval")?,
                        timeout: duration("timeout")?,
                        start_period: duration("start-period")?,
                        start_interval: duration("start-interval")?,
                        retries: flags
                            .get("retries")
                            .map(flags::retries)
                            .transpose()
                            .map_err(|e| flag_err(src, e))?,
                    }
                }
            };
            InstructionKind::Healthcheck(check)
        }
        Keyword::Shell => match &node.args {
            Args::Exec(list) if !list.is_empty() => InstructionKind::Shell(list.clone()),
            Args::Shell(_) => return Err(args_err(ParseErrorKind::ShellNotJson)),
            _ => return Err(args_err(ParseErrorKind::AtLeastOneArgument { instruction })),
        },
    })
}

fn command_line(args: &Args) -> Option<CommandLine> {
    match args {
        Args::Exec(list) => Some(CommandLine::Exec(list.clone())),
        Args::Shell(s) => Some(CommandLine::Shell(s.clone())),
        _ => None,
    }
}

fn invalid_choice(src: &Source<'_>, f: &RawFlag, expected: &str) -> ParseError {
    src.error_at(
        f.span.start.offset,
        ParseErrorKind::InvalidFlagValue {
            flag: f.name.clone(),
            value: f.value.clone().unwrap_or_default(),
            reason: format!("expected {expected}"),
        },
    )
}

/// BuildKit's `^[a-z][a-z0-9-_\.]*$` for stage names (after lower-casing).
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// Attaches heredoc bodies read by the caller.
pub(crate) fn set_heredocs(p: &mut Parsed, heredocs: Vec<Heredoc>) {
    p.node.heredocs = heredocs;
}

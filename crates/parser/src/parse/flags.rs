//! Instruction flags: which flags an instruction accepts (BuildKit's `BFlags`), and the typed
//! values of each: booleans, Go durations, `--chmod` modes, RUN `--mount` specs and sizes.

use std::borrow::Cow;

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::{char as chr, digit0, digit1, one_of};
use nom::combinator::{all_consuming, opt, recognize};
use nom::multi::{many1, separated_list1};
use nom::sequence::{pair, preceded, tuple};
use nom::IResult;

use crate::ast::{CacheSharing, Chmod, Mount, MountType, RawFlag, Span};
use crate::error::ParseErrorKind;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--name`, `--name=true|false`.
    Bool,
    /// `--name=value`, once.
    Str,
    /// `--name=value`, repeatable.
    Strs,
}

/// The flags of one instruction after checking them against what it accepts.
pub(crate) struct Flags<'a> {
    used: Vec<(&'static str, &'a RawFlag)>,
}

/// An error about a flag, located at the flag.
pub(crate) type FlagError = (Span, ParseErrorKind);

impl<'a> Flags<'a> {
    pub(crate) fn check(
        raw: &'a [RawFlag],
        accepted: &[(&'static str, FlagKind)],
    ) -> Result<Self, FlagError> {
        let mut used: Vec<(&'static str, &'a RawFlag)> = Vec::new();
        for flag in raw {
            let Some(&(name, kind)) = accepted.iter().find(|(n, _)| *n == flag.name) else {
                return Err((
                    flag.span,
                    ParseErrorKind::UnknownFlag {
                        flag: flag.name.clone(),
                        suggestion: super::words::closest(
                            &flag.name,
                            accepted.iter().map(|(n, _)| *n),
                        )
                        .map(str::to_string),
                    },
                ));
            };
            if kind != FlagKind::Strs && used.iter().any(|(n, _)| *n == name) {
                return Err((
                    flag.span,
                    ParseErrorKind::DuplicateFlag {
                        flag: flag.name.clone(),
                    },
                ));
            }
            match (kind, flag.value.as_deref()) {
                (FlagKind::Bool, Some("")) | (FlagKind::Str | FlagKind::Strs, None) => {
                    return Err((
                        flag.span,
                        ParseErrorKind::MissingFlagValue {
                            flag: flag.name.clone(),
                        },
                    ))
                }
                (FlagKind::Bool, Some(v))
                    if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") =>
                {
                    return Err((
                        flag.span,
                        ParseErrorKind::InvalidBool {
                            flag: flag.name.clone(),
                            value: v.to_string(),
                        },
                    ))
                }
                _ => {}
            }
            used.push((name, flag));
        }
        Ok(Self { used })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'a RawFlag> {
        self.used.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.get(name).and_then(|f| f.value.clone())
    }

    pub(crate) fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a RawFlag> + 's {
        self.used
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, f)| *f)
    }

    /// A bool flag: `None` when absent, `--name` is true.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.get(name).map(|f| {
            f.value
                .as_deref()
                .is_none_or(|v| v.eq_ignore_ascii_case("true"))
        })
    }
}

fn invalid(flag: &RawFlag, reason: impl Into<String>) -> FlagError {
    (
        flag.span,
        ParseErrorKind::InvalidFlagValue {
            flag: flag.name.clone(),
            value: flag.value.clone().unwrap_or_default(),
            reason: reason.into(),
        },
    )
}

// ---- Go durations -------------------------------------------------------------------------

/// One `<number><unit>` term of a Go duration, as (integer digits, fraction digits, unit).
fn duration_term(s: &str) -> IResult<&str, (&str, Option<&str>, &str)> {
    let (s, int) = digit0(s)?;
    let (s, frac) = opt(preceded(chr('.'), digit0))(s)?;
    if int.is_empty() && frac.is_none_or(str::is_empty) {
        return Err(nom::Err::Error(nom::error::Error::new(
            s,
            nom::error::ErrorKind::Digit,
        )));
    }
    let (s, unit) = alt((
        tag("ns"),
        tag("us"),
        tag("µs"),
        tag("μs"),
        tag("ms"),
        tag("s"),
        tag("m"),
        tag("h"),
    ))(s)?;
    Ok((s, (int, frac, unit)))
}

/// Go's `time.ParseDuration`, in nanoseconds (negative durations allowed here).
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    let (body, negative) = match s.as_bytes().first() {
        Some(b'-') => (&s[1..], true),
        Some(b'+') => (&s[1..], false),
        _ => (s, false),
    };
    if body == "0" {
        return Ok(0);
    }
    let Ok((_, terms)) = all_consuming(many1(duration_term))(body) else {
        return Err(format!("time: invalid duration {s:?}"));
    };
    let mut total: u128 = 0;
    for (int, frac, unit) in terms {
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            _ => 3_600_000_000_000,
        };
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse()
                .map_err(|_| format!("time: invalid duration {s:?}"))?
        };
        total = total.saturating_add(whole.saturating_mul(scale));
        if let Some(frac) = frac {
            // Only the digits that can matter at nanosecond precision.
            let mut f: u128 = 0;
            let mut div: u128 = 1;
            for d in frac.bytes().take(20) {
                f = f * 10 + u128::from(d - b'0');
                div *= 10;
            }
            total = total.saturating_add(f * scale / div);
        }
        if total > i64::MAX as u128 {
            return Err(format!("time: invalid duration {s:?}"));
        }
    }
    let total = total as i64;
    Ok(if negative { -total } else { total })
}

/// A HEALTHCHECK duration: Docker refuses negative ones and ones below one millisecond
/// (zero means "the default").
pub(crate) fn healthcheck_duration(flag: &RawFlag) -> Result<u64, FlagError> {
    let value = flag.value.as_deref().unwrap_or_default();
    let ns = parse_duration(value).map_err(|e| invalid(flag, e))?;
    if ns < 0 {
        return Err(invalid(flag, "cannot be negative"));
    }
    if ns != 0 && ns < 1_000_000 {
        return Err(invalid(flag, "cannot be less than 1ms"));
    }
    Ok(ns as u64)
}

pub(crate) fn retries(flag: &RawFlag) -> Result<u32, FlagError> {
    let value = flag.value.as_deref().unwrap_or_default();
    let n: i64 = value.parse().map_err(|_| invalid(flag, "not an integer"))?;
    if n < 0 {
        return Err(invalid(flag, "cannot be negative"));
    }
    u32::try_from(n).map_err(|_| invalid(flag, "too large"))
}

// ---- --chmod ------------------------------------------------------------------------------

/// `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`, comma-separated.
fn symbolic_mode(s: &str) -> IResult<&str, &str> {
    let clause = recognize(pair(
        take_while(|c| "ugoa".contains(c)),
        many1(pair(
            one_of("-+="),
            alt((
                take_while1(|c| "ugo".contains(c)),
                take_while(|c| "rwxXst".contains(c)),
            )),
        )),
    ));
    all_consuming(recognize(separated_list1(chr(','), clause)))(s)
}

pub(crate) fn chmod(flag: &RawFlag) -> Result<Chmod, FlagError> {
    let value = flag.value.as_deref().unwrap_or_default();
    if value.contains('$') {
        // Validated by the planner once expanded.
        return Ok(Chmod::Symbolic(value.to_string()));
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return match u32::from_str_radix(value, 8) {
            Ok(mode) if mode <= 0o7777 => Ok(Chmod::Octal(mode)),
            _ => Err(invalid(flag, "not an octal mode up to 7777")),
        };
    }
    match symbolic_mode(value) {
        Ok(_) => Ok(Chmod::Symbolic(value.to_string())),
        Err(_) => Err(invalid(
            flag,
            "expected an octal mode (0755) or a symbolic one (u+x,g-w)",
        )),
    }
}

// ---- sizes --------------------------------------------------------------------------------

/// docker/go-units `RAMInBytes`: `<number>[ ][kmgtp][i][b]`, binary multiples.
fn ram_size(s: &str) -> IResult<&str, (&str, Option<char>)> {
    let number = recognize(pair(digit1, opt(pair(chr('.'), digit1))));
    let (rest, (n, _, unit, _, _)) = all_consuming(tuple((
        number,
        opt(chr(' ')),
        opt(one_of("kKmMgGtTpP")),
        opt(one_of("iI")),
        opt(one_of("bB")),
    )))(s)?;
    Ok((rest, (n, unit)))
}

pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let (_, (n, unit)) = ram_size(s).ok()?;
    let n: f64 = n.parse().ok()?;
    let mult: f64 = match unit.map(|c| c.to_ascii_lowercase()) {
        None => 1.0,
        Some('k') => 1024.0,
        Some('m') => 1024.0 * 1024.0,
        Some('g') => 1024f64.powi(3),
        Some('t') => 1024f64.powi(4),
        _ => 1024f64.powi(5),
    };
    let v = n * mult;
    (v.is_finite() && v < u64::MAX as f64).then_some(v as u64)
}

// ---- --mount ------------------------------------------------------------------------------

/// Splits a `--mount` value the way Go's `encoding/csv` reads one record.
fn csv_fields(value: &str) -> Result<Vec<Cow<'_, str>>, String> {
    // The common case, no quotes at all, borrows every field.
    if !value.contains('"') {
        return Ok(value.split(',').map(Cow::Borrowed).collect());
    }
    let mut fields = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(Cow::Owned(field));
                    return Ok(fields);
                }
                Some(',') => {}
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(Cow::Owned(field));
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("bare \" in non-quoted-field".into()),
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(Cow::Owned(field));
    }
}

/// Lower-cases only when needed: mount keys are almost always written in lower case.
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn mount_err(flag: &RawFlag, field: &str, reason: impl Into<String>) -> FlagError {
    (
        flag.span,
        ParseErrorKind::InvalidMount {
            field: field.to_string(),
            reason: reason.into(),
        },
    )
}

/// BuildKit's `ParseMount`: a CSV list of `key=value` (and bare `ro`, `rw`, `required`).
pub(crate) fn mount(flag: &RawFlag) -> Result<Mount, FlagError> {
    let value = flag.value.as_deref().unwrap_or_default();
    let fields = csv_fields(value).map_err(|e| mount_err(flag, value, e))?;
    let mut kind = MountType::Bind;
    for field in &fields {
        if let Some((k, v)) = field.split_once('=') {
            if k.trim().eq_ignore_ascii_case("type") {
                kind = match lower(v).as_ref() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        return Err(mount_err(
                            flag,
                            field,
                            format!("unsupported mount type {v:?}"),
                        ))
                    }
                };
            }
        }
    }
    let mut m = Mount {
        kind,
        target: None,
        source: None,
        from: None,
        readonly: None,
        id: None,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        required: None,
        env: None,
        span: flag.span,
    };
    let secretish = matches!(kind, MountType::Secret | MountType::Ssh);
    for field in &fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (lower(k.trim()), Some(v)),
            None => (lower(field.trim()), None),
        };
        let Some(val) = val else {
            match key.as_ref() {
                "readonly" | "ro" => m.readonly = Some(true),
                "readwrite" | "rw" => m.readonly = Some(false),
                "required" if secretish => m.required = Some(true),
                "required" => {
                    return Err(mount_err(
                        flag,
                        field,
                        format!(
                            "unexpected key 'required' for mount type '{}'",
                            type_name(kind)
                        ),
                    ))
                }
                _ => return Err(mount_err(flag, field, "must be a key=value pair")),
            }
            continue;
        };
        let bad = |what: &str| {
            let reason = if val.contains('$') {
                // BuildKit expands these before parsing; forge types them at parse time.
                format!("variables are not supported in {what}: write the value")
            } else {
                format!("invalid value {val:?} for {what}")
            };
            mount_err(flag, field, reason)
        };
        match key.as_ref() {
            "type" => {}
            "from" => m.from = Some(val.to_string()),
            "source" | "src" => m.source = Some(val.to_string()),
            "target" | "dst" | "destination" => m.target = Some(val.to_string()),
            "readonly" | "ro" => m.readonly = Some(parse_bool(val).ok_or_else(|| bad(&key))?),
            "readwrite" | "rw" => m.readonly = Some(!parse_bool(val).ok_or_else(|| bad(&key))?),
            "required" if secretish => m.required = Some(parse_bool(val).ok_or_else(|| bad(&key))?),
            "required" => {
                return Err(mount_err(
                    flag,
                    field,
                    format!(
                        "unexpected key 'required' for mount type '{}'",
                        type_name(kind)
                    ),
                ))
            }
            "id" => m.id = Some(val.to_string()),
            "sharing" => {
                m.sharing = match lower(val).as_ref() {
                    "" => None,
                    "shared" => Some(CacheSharing::Shared),
                    "private" => Some(CacheSharing::Private),
                    "locked" => Some(CacheSharing::Locked),
                    _ => return Err(bad("sharing (shared, private or locked)")),
                }
            }
            "mode" => m.mode = Some(u32::from_str_radix(val, 8).map_err(|_| bad("mode"))?),
            "uid" => m.uid = Some(val.parse().map_err(|_| bad("uid"))?),
            "gid" => m.gid = Some(val.parse().map_err(|_| bad("gid"))?),
            "size" if kind == MountType::Tmpfs => {
                m.size = Some(parse_size(val).ok_or_else(|| bad("size"))?)
            }
            "size" => {
                return Err(mount_err(
                    flag,
                    field,
                    format!("unexpected key 'size' for mount type '{}'", type_name(kind)),
                ))
            }
            "env" => m.env = Some(val.to_string()),
            _ => return Err(mount_err(flag, field, format!("unexpected key '{key}'"))),
        }
    }
    let file_info = matches!(kind, MountType::Secret | MountType::Ssh | MountType::Cache);
    if !file_info && (m.mode.is_some() || m.uid.is_some() || m.gid.is_some()) {
        return Err(mount_err(
            flag,
            value,
            format!(
                "mode, uid and gid are not allowed for {} mounts",
                type_name(kind)
            ),
        ));
    }
    if m.sharing.is_some() && kind != MountType::Cache {
        return Err(mount_err(
            flag,
            value,
            format!("invalid cache sharing set for {} mount", type_name(kind)),
        ));
    }
    if kind == MountType::Secret {
        if m.from.is_some() {
            return Err(mount_err(
                flag,
                value,
                "a secret mount should not have a from",
            ));
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err(mount_err(
                flag,
                value,
                "a secret mount needs one of source, target or id",
            ));
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(mount_err(flag, value, "both source and id can't be set"));
        }
    }
    if !secretish && m.target.as_deref().is_none_or(str::is_empty) {
        return Err(mount_err(
            flag,
            value,
            format!("a {} mount requires a target", type_name(kind)),
        ));
    }
    Ok(m)
}

fn type_name(kind: MountType) -> &'static str {
    match kind {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("10us"), Ok(10_000));
        assert_eq!(parse_duration("10µs"), Ok(10_000));
        assert_eq!(parse_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_duration("3ns"), Ok(3));
        assert_eq!(parse_duration("-2s"), Ok(-2_000_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration(".s").is_err());
        assert!(parse_duration("99999999999999h").is_err());
    }

    #[test]
    fn symbolic_modes() {
        for ok in ["u+x", "u+x,g-w", "a=rwx", "+x", "ug+rw-x", "o=u"] {
            assert!(symbolic_mode(ok).is_ok(), "{ok}");
        }
        for bad in ["", "u", "x+u", "u+x,", "u+q", "8"] {
            assert!(symbolic_mode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1 kb"), Some(1024));
        assert_eq!(parse_size("m"), None);
        assert_eq!(parse_size("1x"), None);
    }

    #[test]
    fn csv() {
        assert_eq!(csv_fields("a=1,b=2").unwrap(), ["a=1", "b=2"]);
        assert_eq!(csv_fields(r#""a=1,2",b"#).unwrap(), ["a=1,2", "b"]);
        assert!(csv_fields(r#"a="1""#).is_err());
    }
}

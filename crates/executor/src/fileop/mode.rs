//! `--chmod` values: octal (`755`, `0644`, up to `07777`) replacing the permission bits, or
//! symbolic (`u+x,g-w,o=r`, `a+X`, `go=u`) applied to each copied file's own mode, with `X`
//! giving execute permission only to directories and to files already executable by someone.

use std::fmt;

use super::error::FileOpError;

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChmodSpec {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    who: u32,
    actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Action {
    op: char,
    perms: Perms,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Perms {
    /// Any of `rwxXst`, kept as letters because `X` depends on the file.
    Letters(String),
    /// `u`, `g` or `o`: copy that class's current bits.
    CopyFrom(char),
}

const WHO_U: u32 = 0o4700;
const WHO_G: u32 = 0o2070;
const WHO_O: u32 = 0o1007;
const WHO_ALL: u32 = 0o7777;

impl ChmodSpec {
    /// Parses an octal or symbolic mode.
    pub fn parse(value: &str) -> Result<Self, FileOpError> {
        let invalid = |reason| FileOpError::InvalidChmod {
            value: value.to_string(),
            reason,
        };
        let text = value.trim();
        if text.is_empty() {
            return Err(invalid("empty mode"));
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            let mode = u32::from_str_radix(text, 8)
                .map_err(|_| invalid("octal modes use the digits 0-7"))?;
            if mode > 0o7777 {
                return Err(invalid("octal modes lie between 0 and 07777"));
            }
            return Ok(Self {
                text: text.to_string(),
                kind: Kind::Octal(mode),
            });
        }
        let mut clauses = Vec::new();
        for raw in text.split(',') {
            let chars: Vec<char> = raw.chars().collect();
            let mut i = 0;
            let mut who = 0;
            while let Some(c) = chars.get(i) {
                who |= match c {
                    'u' => WHO_U,
                    'g' => WHO_G,
                    'o' => WHO_O,
                    'a' => WHO_ALL,
                    _ => break,
                };
                i += 1;
            }
            if who == 0 {
                who = WHO_ALL;
            }
            let mut actions = Vec::new();
            while let Some(&op) = chars.get(i) {
                if !matches!(op, '+' | '-' | '=') {
                    return Err(invalid("expected + - or = in a symbolic mode"));
                }
                i += 1;
                let start = i;
                while chars.get(i).is_some_and(|c| !matches!(c, '+' | '-' | '=')) {
                    i += 1;
                }
                let perms: String = chars[start..i].iter().collect();
                let perms = match perms.as_str() {
                    "u" | "g" | "o" => Perms::CopyFrom(perms.chars().next().unwrap_or('u')),
                    p if p.chars().all(|c| "rwxXst".contains(c)) => Perms::Letters(p.to_string()),
                    _ => {
                        return Err(invalid(
                            "symbolic permissions are r w x X s t, or one of u g o",
                        ))
                    }
                };
                actions.push(Action { op, perms });
            }
            if actions.is_empty() {
                return Err(invalid("each symbolic clause needs + - or ="));
            }
            clauses.push(Clause { who, actions });
        }
        Ok(Self {
            text: text.to_string(),
            kind: Kind::Symbolic(clauses),
        })
    }

    /// The value as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The new permission bits (`0o7777` part) for a file whose current bits are `mode`.
    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match &self.kind {
            Kind::Octal(m) => *m,
            Kind::Symbolic(clauses) => {
                let mut cur = mode & 0o7777;
                for clause in clauses {
                    for action in &clause.actions {
                        let bits = match &action.perms {
                            Perms::Letters(letters) => {
                                let mut b = 0;
                                for l in letters.chars() {
                                    b |= match l {
                                        'r' => 0o444,
                                        'w' => 0o222,
                                        'x' => 0o111,
                                        'X' if is_dir || cur & 0o111 != 0 => 0o111,
                                        's' => 0o6000,
                                        't' => 0o1000,
                                        _ => 0,
                                    };
                                }
                                b & clause.who
                            }
                            Perms::CopyFrom(class) => {
                                let shift = match class {
                                    'u' => 6,
                                    'g' => 3,
                                    _ => 0,
                                };
                                let v = (cur >> shift) & 0o7;
                                ((v << 6) | (v << 3) | v) & clause.who & 0o777
                            }
                        };
                        match action.op {
                            '+' => cur |= bits,
                            '-' => cur &= !bits,
                            _ => cur = (cur & !clause.who) | bits,
                        }
                    }
                }
                cur
            }
        }
    }
}

impl fmt::Display for ChmodSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ap(spec: &str, mode: u32, dir: bool) -> u32 {
        ChmodSpec::parse(spec).unwrap().apply(mode, dir)
    }

    #[test]
    fn octal_replaces_bits() {
        assert_eq!(ap("755", 0o600, false), 0o755);
        assert_eq!(ap("04755", 0o600, false), 0o4755);
        assert!(ChmodSpec::parse("10000").is_err());
        assert!(ChmodSpec::parse("789").is_err());
    }

    #[test]
    fn symbolic_applies_per_file() {
        assert_eq!(ap("u+x", 0o644, false), 0o744);
        assert_eq!(ap("g-w,o=r", 0o666, false), 0o644);
        assert_eq!(ap("a+X", 0o644, false), 0o644);
        assert_eq!(ap("a+X", 0o644, true), 0o755);
        assert_eq!(ap("a+X", 0o744, false), 0o755);
        assert_eq!(ap("go=u", 0o700, false), 0o777);
        assert_eq!(ap("+x", 0o600, false), 0o711);
        assert_eq!(ap("u=rw,go=", 0o777, false), 0o600);
        for bad in ["u+q", "u", "x+", ""] {
            assert!(ChmodSpec::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}

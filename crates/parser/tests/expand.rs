//! Shell-word expansion against BuildKit's behaviour: cases ported (as facts) from BuildKit's
//! lexer tests (envVarTest, wordsTest, TestProcessWithMatches), every modifier with quotes and
//! escapes, and both escape characters.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use forge_parser::{
    expand_word, expand_word_with, expand_words, ExpandError, ExpandOptions, VarSource,
};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The environment of BuildKit's envVarTest.
fn envvar_test_env() -> BTreeMap<String, String> {
    env(&[
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ])
}

#[track_caller]
fn check_table(cases: &[(&str, Option<&str>)], vars: &dyn VarSource, escape: char) {
    for (input, expected) in cases {
        let got = expand_word(input, escape, vars);
        match (expected, &got) {
            (Some(want), Ok(exp)) => assert_eq!(&exp.value, want, "input {input:?}"),
            (None, Err(_)) => {}
            _ => panic!("input {input:?}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn envvar_test_cases_with_backslash() {
    // `None` means BuildKit reports an error.
    let cases: &[(&str, Option<&str>)] = &[
        ("hello", Some("hello")),
        ("he'll'o", Some("hello")),
        ("he'llo", None),
        ("he\\'llo", Some("he'llo")),
        ("he\\\\'llo", None),
        ("abc\\tdef", Some("abctdef")),
        ("\"abc\\tdef\"", Some("abc\\tdef")),
        ("\"abc\\\\tdef\"", Some("abc\\tdef")),
        ("'abc\\tdef'", Some("abc\\tdef")),
        ("hello\\", Some("hello")),
        ("hello\\\\", Some("hello\\")),
        ("\"hello", None),
        ("\"hello\\\"", None),
        ("\"hel'lo\"", Some("hel'lo")),
        ("'hello", None),
        ("'hello\\'", Some("hello\\")),
        ("'hello\\there'", Some("hello\\there")),
        ("'hello\\\\there'", Some("hello\\\\there")),
        ("\"''\"", Some("''")),
        ("$.", Some("$.")),
        ("he$1x", Some("hex")),
        ("he$.x", Some("he$.x")),
        ("he$pwd.", Some("he.")),
        ("he$PWD", Some("he/home")),
        ("he\\$PWD", Some("he$PWD")),
        ("he\\\\$PWD", Some("he\\/home")),
        ("\"he\\$PWD\"", Some("he$PWD")),
        ("\"he\\\\$PWD\"", Some("he\\/home")),
        ("\\${}", Some("${}")),
        ("\\${}aaa", Some("${}aaa")),
        ("he\\${}", Some("he${}")),
        ("he\\${}xx", Some("he${}xx")),
        ("${}", None),
        ("${}aaa", None),
        ("he${}", None),
        ("he${}xx", None),
        ("he${hi}", Some("he")),
        ("he${hi}xx", Some("hexx")),
        ("he${PWD}", Some("he/home")),
        ("he${.}", None),
        ("he${XXX:-000}xx", Some("he000xx")),
        ("he${PWD:-000}xx", Some("he/homexx")),
        ("he${XXX:-$PWD}xx", Some("he/homexx")),
        ("he${XXX:-${PWD:-yyy}}xx", Some("he/homexx")),
        ("he${XXX:-${YYY:-yyy}}xx", Some("heyyyxx")),
        ("he${XXX:YYY}", None),
        ("he${XXX?}", None),
        ("he${XXX:?}", None),
        ("he${PWD?}", Some("he/home")),
        ("he${PWD:?}", Some("he/home")),
        ("he${NULL?}", Some("he")),
        ("he${NULL:?}", None),
        ("he${XXX:+${PWD}}xx", Some("hexx")),
        ("he${PWD:+${XXX}}xx", Some("hexx")),
        ("he${PWD:+${SHELL}}xx", Some("hebashxx")),
        ("he${XXX:+000}xx", Some("hexx")),
        ("he${PWD:+000}xx", Some("he000xx")),
        ("'he${XX}'", Some("he${XX}")),
        ("\"he${PWD}\"", Some("he/home")),
        ("\"he'$PWD'\"", Some("he'/home'")),
        ("\"$PWD\"", Some("/home")),
        ("'$PWD'", Some("$PWD")),
        ("'\\$PWD'", Some("\\$PWD")),
        ("'\"hello\"'", Some("\"hello\"")),
        ("'he\\$PWD'", Some("he\\$PWD")),
        ("he${PWD", None),
        ("he${PWD=000}xx", None),
        ("he${PWD+${PWD}:}xx", Some("he/home:xx")),
        ("he${XXX:-\\$PWD:}xx", Some("he$PWD:xx")),
        ("he${XXX:-\\${PWD}z}xx", Some("he${PWDz}xx")),
        ("안녕하세요", Some("안녕하세요")),
        ("안'녕'하세요", Some("안녕하세요")),
        ("안'녕하세요", None),
        ("안녕\\'하세요", Some("안녕'하세요")),
        ("\"안녕\\t하세요\"", Some("안녕\\t하세요")),
        ("$KOREAN", Some("한국어")),
        ("안$KOREAN", Some("안한국어")),
        ("${{aaa}", None),
        ("${aaa}}", Some("}")),
        ("${aaa", None),
        ("${{aaa", None),
        ("${aaa:-bbb}}", Some("bbb}")),
        ("${aaa:-bbb", None),
        ("${aaa:-bbb}", Some("bbb")),
        // Positional and special parameters are looked up like names, and are never set.
        ("a$@b", Some("ab")),
        ("a$#b", Some("ab")),
        ("a$10b", Some("ab")),
        ("a${1}b", Some("ab")),
        ("a$", Some("a$")),
        ("$ a", Some("$ a")),
    ];
    check_table(cases, &envvar_test_env(), '\\');
}

#[test]
fn backtick_escape_character() {
    let vars = envvar_test_env();
    let cases: &[(&str, Option<&str>)] = &[
        ("he`$PWD", Some("he$PWD")),
        ("he``$PWD", Some("he`/home")),
        // With backtick as the escape, a backslash is an ordinary character (Windows paths).
        ("C:\\dir\\$SHELL", Some("C:\\dir\\bash")),
        ("\"C:\\dir\"", Some("C:\\dir")),
        ("\"a`\"b\"", Some("a\"b")),
        ("\"a`$PWD\"", Some("a$PWD")),
        ("\"a`x\"", Some("a`x")),
        ("he`'llo", Some("he'llo")),
        ("hello`", Some("hello")),
        ("${XXX:-`}}", Some("}")),
    ];
    check_table(cases, &vars, '`');
}

#[test]
fn process_with_matches_cases() {
    struct Case {
        input: &'static str,
        env: &'static [(&'static str, &'static str)],
        expected: Option<&'static str>,
        matched: &'static [&'static str],
        unmatched: &'static [&'static str],
    }
    let c = |input, env, expected, matched, unmatched| Case {
        input,
        env,
        expected,
        matched,
        unmatched,
    };
    let fb: &[(&str, &str)] = &[("FOO", "xxx"), ("BAR", "")];
    let cases = vec![
        c("x", &[("DUMMY", "dummy")], Some("x"), &[], &[]),
        c("x ${UNUSED}", &[("DUMMY", "dummy")], Some("x "), &[], &["UNUSED"]),
        c("x ${FOO}", &[("FOO", "y")], Some("x y"), &["FOO"], &[]),
        c("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", fb, Some("xxx  ccc"), &["FOO", "BAR"], &["BAZ"]),
        c("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", fb, Some("xxx bbb ccc"), &["FOO", "BAR"], &["BAZ"]),
        c("${FOO:-}", fb, Some("xxx"), &["FOO"], &[]),
        c("${FOO:-}", &[], Some(""), &[], &["FOO"]),
        c("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", fb, Some("aaa bbb "), &["FOO", "BAR"], &["BAZ"]),
        c("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", fb, Some("aaa  "), &["FOO", "BAR"], &["BAZ"]),
        c("${FOO?aaa}", fb, Some("xxx"), &["FOO"], &[]),
        c("${BAR?bbb}", fb, Some(""), &["BAR"], &[]),
        c("${BAZ?ccc}", fb, None, &[], &[]),
        c("${FOO:?aaa}", fb, Some("xxx"), &["FOO"], &[]),
        c("${BAR:?bbb}", fb, None, &[], &[]),
        c("${BAZ:?ccc}", fb, None, &[], &[]),
        c("${BAZ:?}", fb, None, &[], &[]),
        c("${FOO=aaa}", fb, None, &[], &[]),
        c("${FOO=:aaa}", fb, None, &[], &[]),
        c("${FOO=}", &[], None, &[], &[]),
        c(
            "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
            &[("FOO", "()[]{}^$.*?|\\x")],
            Some("x"),
            &["FOO"],
            &[],
        ),
        c("${FOO%%\\**}", &[("FOO", "xx**")], Some("xx"), &["FOO"], &[]),
        c("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y"), &["FOO"], &[]),
        c("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        c("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")], Some("xyy"), &["FOO", "BAR"], &[]),
        c("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")], Some("xxyy"), &["FOO", "BAR"], &[]),
        c("${FOO#}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        c("${FOO##*x}", &[("FOO", "xxyy")], Some("yy"), &["FOO"], &[]),
        c("${FOO##}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        c("${FOO#?\\?}", &[("FOO", "???y")], Some("?y"), &["FOO"], &[]),
        c("${ABC:-.}${FOO%x}${ABC:-.}", &[("FOO", "xxyy")], Some(".xxyy."), &["FOO"], &["ABC"]),
        c("${FOO%%\\**\\*}", &[("FOO", "a***yy*")], Some("a"), &["FOO"], &[]),
        c("${FOO%}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        c("${FOO%%$BAR}", &[("FOO", "xxyy"), ("BAR", "")], Some("xxyy"), &["FOO", "BAR"], &[]),
        c(
            "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
            &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")],
            Some("/foo.*/*.txt - /foo..*.txt"),
            &["FOO", "NEEDLE"],
            &[],
        ),
        c(
            "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
            &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
            Some("/tmp/bar.txt - /bar.txt"),
            &["FOO", "NEEDLE"],
            &[],
        ),
        c(
            "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
            &[("FOO", "/a/foo/b/c.txt"), ("NEEDLE", "/?/"), ("REPLACEMENT", "/")],
            Some("/foo/b/c.txt - /foo/c.txt"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        c(
            "${FOO/$NEEDLE/$REPLACEMENT}",
            &[("FOO", "http://google.de"), ("NEEDLE", "http://"), ("REPLACEMENT", "https://")],
            Some("https://google.de"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        c("${FOO//\\//\\/}", &[("FOO", "/tmp/foo.txt")], Some("\\/tmp\\/foo.txt"), &["FOO"], &[]),
        c("${FOO/$BAR/ww}", &[("FOO", "xxyy"), ("BAR", "")], Some("wwxxyy"), &["FOO", "BAR"], &[]),
        c("${FOO//ww}", &[("FOO", "xxyy")], None, &[], &[]),
        c("${FOO//}", &[("FOO", "xxyy")], None, &[], &[]),
        c("${FOO///}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        c("${FOO///}", &[], Some(""), &[], &["FOO"]),
        c(
            "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
            &[("VERSION", "v1.2.3"), ("TARGETOS", "linux"), ("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")],
            Some("something-v1.2.3.linux-arm-v7.tar.gz"),
            &["VERSION", "TARGETOS", "TARGETARCH", "TARGETVARIANT"],
            &[],
        ),
    ];
    for case in cases {
        let vars = env(case.env);
        let got = expand_word(case.input, '\\', &vars);
        match (case.expected, got) {
            (None, Err(_)) => {}
            (Some(want), Ok(exp)) => {
                assert_eq!(exp.value, want, "input {:?}", case.input);
                assert_eq!(
                    exp.matched,
                    set(case.matched),
                    "matched of {:?}",
                    case.input
                );
                assert_eq!(
                    exp.unmatched,
                    set(case.unmatched),
                    "unmatched of {:?}",
                    case.input
                );
            }
            (want, got) => panic!("input {:?}: expected {want:?}, got {got:?}", case.input),
        }
    }
}

#[test]
fn words_test_cases() {
    // BuildKit's wordsTest: ENV lines accumulate, `|` separates input from the comma-joined words.
    let mut vars = BTreeMap::new();
    let check = |vars: &BTreeMap<String, String>, input: &str, want: &[&str]| {
        let got = expand_words(input, '\\', vars).map(|w| w.words);
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, Ok(want), "input {input:?}");
    };
    check(&vars, "hello", &["hello"]);
    check(&vars, "hello${hi}bye", &["hellobye"]);
    vars.insert("hi".to_string(), "hi".to_string());
    check(&vars, "hello${hi}bye", &["hellohibye"]);
    vars.insert("space".to_string(), "abc  def".to_string());
    check(&vars, "hello${space}bye", &["helloabc", "defbye"]);
    check(&vars, "hello\"${space}\"bye", &["helloabc  defbye"]);
    check(&vars, "hello \"${space}\"bye", &["hello", "abc  defbye"]);
    vars.insert("leading".to_string(), "  ab c".to_string());
    check(&vars, "hello${leading}def", &["hello", "ab", "cdef"]);
    check(&vars, "hello\"${leading}\" def", &["hello  ab c", "def"]);
    check(&vars, "hello\"${leading}\"", &["hello  ab c"]);
    check(&vars, "hello${leading}", &["hello", "ab", "c"]);
    vars.insert("trailing".to_string(), "ab c   ".to_string());
    check(&vars, "hello${trailing}", &["helloab", "c"]);
    check(&vars, "hello${trailing}d", &["helloab", "c", "d"]);
    check(&vars, "hello\"${trailing}\"d", &["helloab c   d"]);
    check(&vars, "hel\"lo${trailing}\"", &["helloab c   "]);
    check(&vars, "hello\" there  \"", &["hello there  "]);
    check(&vars, "hello there", &["hello", "there"]);
    check(&vars, "hello\\ there", &["hello there"]);
    check(&vars, "hello\\\" there", &["hello\"", "there"]);
    check(&vars, "hello\"\\\\there\"", &["hello\\there"]);
    check(&vars, "hello\"\\there\"", &["hello\\there"]);
    check(&vars, "hello'\\\\there'", &["hello\\\\there"]);
    check(&vars, "hello'\\there'", &["hello\\there"]);
    check(&vars, "hello'$there'", &["hello$there"]);
    assert!(expand_words("hello\" there", '\\', &vars).is_err());
    // An empty quoted word followed by a space vanishes, as in BuildKit.
    check(&vars, "a \"\" b", &["a", "b"]);
    check(&vars, "   ", &[]);
}

#[test]
fn every_modifier_with_quotes_and_escapes() {
    let vars = env(&[
        ("v", "hello world"),
        ("e", ""),
        ("path", "/usr/local/bin/tool.tar.gz"),
        ("sp", "a b"),
    ]);
    let cases: &[(&str, Option<&str>)] = &[
        ("$v", Some("hello world")),
        ("${v}", Some("hello world")),
        ("\"${v}\"", Some("hello world")),
        ("'${v}'", Some("${v}")),
        ("\\${v}", Some("${v}")),
        ("\"\\${v}\"", Some("${v}")),
        // :- and -
        ("${u:-\"x y\"}", Some("x y")),
        ("${u:-'$v'}", Some("$v")),
        ("${e:-d}", Some("d")),
        ("${e-d}", Some("")),
        ("${u-d}", Some("d")),
        ("\"${u:-a\\\"b}\"", Some("a\"b")),
        ("${u:-\\}}", Some("}")),
        // :+ and +
        ("${v:+set}", Some("set")),
        ("${e:+set}", Some("")),
        ("${e+set}", Some("set")),
        ("${u+set}", Some("")),
        ("${v:+\"$sp\"}", Some("a b")),
        // :? and ?
        ("${v:?boom}", Some("hello world")),
        ("${e?boom}", Some("")),
        // # and ##
        ("${path#*/}", Some("usr/local/bin/tool.tar.gz")),
        ("${path##*/}", Some("tool.tar.gz")),
        ("${path#\"*\"/}", Some("usr/local/bin/tool.tar.gz")),
        ("${path#/usr}", Some("/local/bin/tool.tar.gz")),
        ("${path#nomatch}", Some("/usr/local/bin/tool.tar.gz")),
        ("${path#/???/}", Some("local/bin/tool.tar.gz")),
        // % and %%
        ("${path%.*}", Some("/usr/local/bin/tool.tar")),
        ("${path%%.*}", Some("/usr/local/bin/tool")),
        ("${path%/*}", Some("/usr/local/bin")),
        ("${path%%/*}", Some("")),
        ("\"${path%.gz}\"", Some("/usr/local/bin/tool.tar")),
        // Brackets are literal in substitution patterns (BuildKit has no bracket expressions).
        ("${u:-[ab]}", Some("[ab]")),
        // / and //
        ("${v/o/0}", Some("hell0 world")),
        ("${v//o/0}", Some("hell0 w0rld")),
        ("${v// /_}", Some("hello_world")),
        ("${v/#/x}", Some("hello world")),
        ("${v//l*o/L}", Some("heLrld")),
        ("${v/?/X}", Some("Xello world")),
        ("${path//\\//:}", Some(":usr:local:bin:tool.tar.gz")),
        ("${u/a/b}", Some("")),
        ("\"${v/world/\"there\"}\"", Some("hello there")),
    ];
    check_table(cases, &vars, '\\');

    // The message of `?` is BuildKit's, and the error carries the word.
    let err = expand_word("${u:?msg}", '\\', &vars).unwrap_err();
    assert_eq!(
        err,
        ExpandError::Required {
            word: "${u:?msg}".into(),
            name: "u".into(),
            message: "msg".into()
        }
    );
    assert_eq!(err.to_string(), "failed to process \"${u:?msg}\": u: msg");
    let err = expand_word("${e:?}", '\\', &vars).unwrap_err();
    assert!(
        err.to_string().ends_with("e: is not allowed to be empty"),
        "{err}"
    );
    let err = expand_word("${u?}", '\\', &vars).unwrap_err();
    assert!(
        err.to_string().ends_with("u: is not allowed to be unset"),
        "{err}"
    );
}

#[test]
fn errors_name_what_failed() {
    let vars = env(&[("v", "x")]);
    let err = |w: &str| expand_word(w, '\\', &vars).unwrap_err();
    assert!(matches!(err("${v"), ExpandError::MissingBrace { word } if word == "${v"));
    assert!(matches!(err("${v:-x"), ExpandError::MissingBrace { .. }));
    assert!(matches!(err("${}"), ExpandError::BadSubstitution { .. }));
    assert!(matches!(err("${:-x}"), ExpandError::BadSubstitution { .. }));
    assert!(matches!(err("${v/x}"), ExpandError::MissingSlash { .. }));
    assert!(
        matches!(err("${v=x}"), ExpandError::UnsupportedModifier { modifier, .. } if modifier == "=")
    );
    assert!(
        matches!(err("${v:x}"), ExpandError::UnsupportedModifier { modifier, .. } if modifier == ":x")
    );
    assert!(
        matches!(err("'abc"), ExpandError::UnterminatedQuote { quote, .. } if quote == "single-quote")
    );
    assert!(
        matches!(err("\"abc"), ExpandError::UnterminatedQuote { quote, .. } if quote == "double-quote")
    );
    assert!(matches!(
        err("${v#\\x}"),
        ExpandError::InvalidPattern { .. }
    ));
    assert_eq!(
        err("${v").to_string(),
        "failed to process \"${v\": syntax error: missing '}'"
    );
}

#[test]
fn matched_and_unmatched_follow_references_even_when_unused() {
    // BuildKit records a name as soon as it is looked up, including inside a default that is
    // not taken; the planner and UndefinedVar rely on exactly this.
    let vars = env(&[("A", "1")]);
    let exp = expand_word("${A:-$B} ${C:+$A} '$D' \\$E", '\\', &vars).unwrap();
    assert_eq!(exp.value, "1  $D $E");
    assert_eq!(exp.matched, set(&["A"]));
    assert_eq!(exp.unmatched, set(&["B", "C"]));
}

#[test]
fn options_skip_unset_and_raw_modes() {
    let vars = env(&[("A", "1")]);
    let opts = ExpandOptions {
        skip_unset: true,
        ..Default::default()
    };
    let exp = expand_word_with("$A $B ${C} ${D:-x} ${E/a/b}", '\\', &vars, opts).unwrap();
    assert_eq!(exp.value, "1 $B ${C} ${D:-x} ${E/a/b}");

    // Heredoc mode: quotes are ordinary characters and escapes stay.
    let heredoc = ExpandOptions {
        skip_process_quotes: true,
        raw_escapes: true,
        ..Default::default()
    };
    let exp = expand_word_with("echo \"$A\" '$A' \\$A", '\\', &vars, heredoc).unwrap();
    assert_eq!(exp.value, "echo \"1\" '1' \\$A");

    let raw_quotes = ExpandOptions {
        raw_quotes: true,
        ..Default::default()
    };
    let exp = expand_word_with("\"$A\"'b'", '\\', &vars, raw_quotes).unwrap();
    assert_eq!(exp.value, "\"1\"'b'");
}

#[test]
fn var_source_impls() {
    let mut h = HashMap::new();
    h.insert("X".to_string(), "from-hash".to_string());
    assert_eq!(expand_word("$X", '\\', &h).unwrap().value, "from-hash");
    let by_ref: &HashMap<String, String> = &h;
    assert_eq!(expand_word("$X", '\\', &by_ref).unwrap().value, "from-hash");
    // Names are case-sensitive (BuildKit on Linux).
    assert_eq!(expand_word("$x", '\\', &h).unwrap().value, "");
}

#[test]
fn pathological_patterns_finish() {
    // Many stars against a long value that never matches: the matcher must not backtrack
    // exponentially (this would not finish otherwise).
    let value = "a".repeat(2000);
    let vars = env(&[("V", &value)]);
    let exp = expand_word("${V#*a*a*a*a*a*a*a*a*b}", '\\', &vars).unwrap();
    assert_eq!(exp.value, value);
    let short = env(&[("V", &value[..300])]);
    let exp = expand_word("${V//*a*a*b/x}", '\\', &short).unwrap();
    assert_eq!(exp.value, &value[..300]);
}

#[test]
fn backtick_escape_in_modifiers() {
    let vars = env(&[("v", "a`}b"), ("p", "C:\\dir\\file.txt")]);
    let cases: &[(&str, Option<&str>)] = &[
        // In a pattern the escape character is kept for the pattern compiler, which only knows
        // `\`: with the backtick escape, "`}" stays a literal backtick followed by `}`.
        ("${v#*`}}", Some("b")),
        // Backslashes are plain characters, so Windows paths trim as expected.
        ("${p%\\\\*}", Some("C:\\dir")),
        ("${p##*\\\\}", Some("file.txt")),
        ("${u:-`$v}", Some("$v")),
        ("\"${u:-a`\"b}\"", Some("a\"b")),
        ("${p/dir/`}}", Some("C:\\`}\\file.txt")),
    ];
    check_table(cases, &vars, '`');
}

mod never_panics {
    use std::collections::BTreeMap;

    use forge_parser::{expand_word, expand_words};
    use proptest::prelude::*;

    proptest! {
        // Any input either expands or returns an error; nothing panics, and the word list
        // never contains an empty word.
        #[test]
        fn expansion_of_arbitrary_text(text in "[a-z$#%/:?+*{}'\"\\\\` -]{0,40}", escape in prop::sample::select(vec!['\\', '`'])) {
            let mut vars = BTreeMap::new();
            vars.insert("a".to_string(), "x y*".to_string());
            vars.insert("b".to_string(), String::new());
            let _ = expand_word(&text, escape, &vars);
            if let Ok(w) = expand_words(&text, escape, &vars) {
                prop_assert!(w.words.iter().all(|w| !w.is_empty()));
            }
        }
    }
}

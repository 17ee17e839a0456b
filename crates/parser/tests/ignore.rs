//! `.dockerignore` matching against Docker's documented examples and moby/patternmatcher's own
//! test tables (ported as facts).

use forge_parser::{ignore_file_candidates, IgnoreError, IgnoreMatcher};

fn matcher(text: &str) -> IgnoreMatcher {
    IgnoreMatcher::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn docs_example_temp_patterns() {
    let m = matcher("# comment\n*/temp*\n*/*/temp*\ntemp?\n");
    // `*/temp*`: names starting with temp in any immediate subdirectory of the root.
    assert!(m.is_excluded("somedir/temporary.txt"));
    assert!(m.is_excluded("somedir/temp"));
    assert!(
        m.is_excluded("somedir/temp/inside.txt"),
        "a matched directory excludes its contents"
    );
    // `*/*/temp*`: two levels below the root.
    assert!(m.is_excluded("somedir/subdir/temporary.txt"));
    // `temp?`: files and directories in the root whose name is temp plus one character.
    assert!(m.is_excluded("tempa"));
    assert!(m.is_excluded("tempb"));
    assert!(!m.is_excluded("temp"));
    assert!(!m.is_excluded("tempab"));
    // Nothing matches at the root for the directory patterns, nor three levels down.
    assert!(!m.is_excluded("temporary.txt"));
    assert!(!m.is_excluded("a/b/c/temp.txt"));
    // The comment line is not a pattern.
    assert!(!m.is_excluded("# comment"));
}

#[test]
fn docs_example_double_star() {
    let m = matcher("**/*.go\n");
    assert!(m.is_excluded("main.go"));
    assert!(m.is_excluded("cmd/app/main.go"));
    assert!(!m.is_excluded("cmd/app/main.rs"));
}

#[test]
fn docs_example_exceptions_last_match_wins() {
    // All markdown files are excluded except README files other than README-secret.md.
    let m = matcher("*.md\n!README*.md\nREADME-secret.md\n");
    assert!(m.is_excluded("CHANGELOG.md"));
    assert!(!m.is_excluded("README.md"));
    assert!(!m.is_excluded("README-public.md"));
    assert!(m.is_excluded("README-secret.md"));
    assert!(!m.is_excluded("main.go"));

    // With the exception last, every README file is included, README-secret.md too.
    let m = matcher("*.md\nREADME-secret.md\n!README*.md\n");
    assert!(m.is_excluded("CHANGELOG.md"));
    assert!(!m.is_excluded("README-secret.md"));
    assert!(!m.is_excluded("README.md"));
}

#[test]
fn lines_are_trimmed_cleaned_and_rooted_patterns_relative() {
    let m = matcher("\u{feff}  /build/  \n\n./dist//x\nfoo/../bar\n   \n  !  /build/keep\n");
    assert!(m.is_excluded("build"));
    assert!(m.is_excluded("build/out.o"));
    assert!(!m.is_excluded("build/keep"));
    assert!(m.is_excluded("dist/x"));
    assert!(m.is_excluded("bar"));
    assert!(!m.is_excluded("foo"));
    // Leading `./` and `/` on the queried path are ignored; the root itself never is excluded.
    assert!(m.is_excluded("./build/out.o"));
    assert!(m.is_excluded("/build/out.o"));
    assert!(!matcher("*\n").is_excluded("."));
    assert!(!matcher("*\n").is_excluded(""));
    // Docker drops comment lines before trimming, so an indented `#` line is a pattern.
    assert!(matcher("  #weird\n").is_excluded("#weird"));
}

#[test]
fn empty_matcher() {
    let m = matcher("# only a comment\n\n");
    assert!(m.is_empty());
    assert!(!m.is_excluded("anything"));
    assert!(!matcher("x\n").is_empty());
}

/// (pattern, path, matches the path itself or through a parent)
const PATTERNMATCHER_TABLE: &[(&str, &str, bool)] = &[
    ("**", "file", true),
    ("**", "file/", true),
    ("**/", "file", true),
    ("**/", "file/", true),
    // (patternmatcher's rows for the path "/" are left out: paths here are relative to the
    // context, and "/" names the context root, which is never excluded.)
    ("**", "dir/file", true),
    ("**/", "dir/file", true),
    ("**", "dir/file/", true),
    ("**/", "dir/file/", true),
    ("**/**", "dir/file", true),
    ("**/**", "dir/file/", true),
    ("dir/**", "dir/file", true),
    ("dir/**", "dir/file/", true),
    ("dir/**", "dir/dir2/file", true),
    ("dir/**", "dir/dir2/file/", true),
    ("**/dir", "dir", true),
    ("**/dir", "dir/file", true),
    ("**/dir2/*", "dir/dir2/file", true),
    ("**/dir2/*", "dir/dir2/file/", true),
    ("**/dir2/**", "dir/dir2/dir3/file", true),
    ("**/dir2/**", "dir/dir2/dir3/file/", true),
    ("**file", "file", true),
    ("**file", "dir/file", true),
    ("**/file", "dir/file", true),
    ("**file", "dir/dir/file", true),
    ("**/file", "dir/dir/file", true),
    ("**/file*", "dir/dir/file", true),
    ("**/file*", "dir/dir/file.txt", true),
    ("**/file*txt", "dir/dir/file.txt", true),
    ("**/file*.txt", "dir/dir/file.txt", true),
    ("**/file*.txt*", "dir/dir/file.txt", true),
    ("**/**/*.txt", "dir/dir/file.txt", true),
    ("**/**/*.txt2", "dir/dir/file.txt", false),
    ("**/*.txt", "file.txt", true),
    ("**/**/*.txt", "file.txt", true),
    ("a**/*.txt", "a/file.txt", true),
    ("a**/*.txt", "a/dir/file.txt", true),
    ("a**/*.txt", "a/dir/dir/file.txt", true),
    ("a/*.txt", "a/dir/file.txt", false),
    ("a/*.txt", "a/file.txt", true),
    ("a/*.txt**", "a/file.txt", true),
    ("a[b-d]e", "ae", false),
    ("a[b-d]e", "ace", true),
    ("a[b-d]e", "aae", false),
    ("a[^b-d]e", "aze", true),
    (".*", ".foo", true),
    (".*", "foo", false),
    ("abc.def", "abcdef", false),
    ("abc.def", "abc.def", true),
    ("abc.def", "abcZdef", false),
    ("abc?def", "abcZdef", true),
    ("abc?def", "abcdef", false),
    ("**/foo/bar", "foo/bar", true),
    ("**/foo/bar", "dir/foo/bar", true),
    ("**/foo/bar", "dir/dir2/foo/bar", true),
    ("abc/**", "abc", false),
    ("abc/**", "abc/def", true),
    ("abc/**", "abc/def/ghi", true),
    ("**/.foo", ".foo", true),
    ("**/.foo", "bar.foo", false),
    ("a(b)c/def", "a(b)c/def", true),
    ("a(b)c/def", "a(b)c/xyz", false),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
    (
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        true,
    ),
    (
        "dist/*.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        true,
    ),
    ("a\\\\", "a\\", true),
    ("a\\*b", "a*b", true),
    // Go's filepath.Match table, as patternmatcher runs it.
    ("abc", "abc", true),
    ("*", "abc", true),
    ("*c", "abc", true),
    ("a*", "a", true),
    ("a*", "abc", true),
    ("a*", "ab/c", true),
    ("a*/b", "abc/b", true),
    ("a*/b", "a/c/b", false),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
    ("a*b?c*x", "abxbbxdbxebxczzx", true),
    ("a*b?c*x", "abxbbxdbxebxczzy", false),
    ("ab[c]", "abc", true),
    ("ab[b-d]", "abc", true),
    ("ab[e-g]", "abc", false),
    ("ab[^c]", "abc", false),
    ("ab[^b-d]", "abc", false),
    ("ab[^e-g]", "abc", true),
    ("a\\*b", "ab", false),
    ("a?b", "a☺b", true),
    ("a[^a]b", "a☺b", true),
    ("a???b", "a☺b", false),
    ("a[^a][^a][^a]b", "a☺b", false),
    ("[a-ζ]*", "α", true),
    ("*[a-ζ]", "A", false),
    ("a?b", "a/b", false),
    ("a*b", "a/b", false),
    ("[\\]a]", "]", true),
    ("[\\-]", "-", true),
    ("[x\\-]", "x", true),
    ("[x\\-]", "-", true),
    ("[x\\-]", "z", false),
    ("[\\-x]", "x", true),
    ("[\\-x]", "-", true),
    ("[\\-x]", "a", false),
    ("*x", "xxx", true),
];

#[test]
fn patternmatcher_table() {
    for (pattern, path, want) in PATTERNMATCHER_TABLE {
        let m =
            IgnoreMatcher::from_patterns([pattern]).unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
        assert_eq!(
            m.is_excluded(path),
            *want,
            "pattern {pattern:?} path {path:?}"
        );
    }
}

#[test]
fn patternmatcher_multi_pattern_table() {
    let cases: &[(&[&str], &str, bool)] = &[
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
        ),
        (
            &[
                "**",
                "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            ],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
        (
            &["**", "!dist/*.whl"],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
        (&["docs", "!docs/README.md"], "docs/README.md", false),
        (&["docs/", "!docs/README.md"], "docs/README.md", false),
        (&["docs/*", "!docs/README.md"], "docs/README.md", false),
        (&["*.go", "!fileutils.go"], "fileutils.go", false),
        (&["!fileutils.go", "*.go"], "fileutils.go", true),
    ];
    for (patterns, path, want) in cases {
        let m = IgnoreMatcher::from_patterns(patterns.iter()).unwrap();
        assert_eq!(
            m.is_excluded(path),
            *want,
            "patterns {patterns:?} path {path:?}"
        );
    }
}

#[test]
fn malformed_patterns_are_refused_with_their_line() {
    for bad in [
        "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[",
    ] {
        let err = IgnoreMatcher::from_patterns([bad]).expect_err(bad);
        assert!(
            matches!(err, IgnoreError::BadPattern { line: 1, .. }),
            "{bad:?}: {err:?}"
        );
    }
    let err = IgnoreMatcher::parse("# header\nok\n\nsrc/[\n").unwrap_err();
    assert_eq!(
        err,
        IgnoreError::BadPattern {
            line: 4,
            pattern: "src/[".into(),
            reason: "unterminated character class"
        }
    );
    assert!(err
        .to_string()
        .starts_with("line 4: invalid .dockerignore pattern \"src/[\""));
    let err = IgnoreMatcher::parse("a\n!\n").unwrap_err();
    assert_eq!(err, IgnoreError::LoneExclamation { line: 2 });
    let err = IgnoreMatcher::parse("a\n  !  \n").unwrap_err();
    assert_eq!(err, IgnoreError::LoneExclamation { line: 2 });
}

#[test]
fn walker_may_skip_only_dirs_nothing_can_reinclude() {
    let m = matcher("node_modules\nbuild\n!build/keep.txt\n");
    // Not excluded at all: always descend.
    assert!(m.may_include_under("src"));
    // Excluded, and no exception reaches inside.
    assert!(!m.may_include_under("node_modules"));
    // Excluded, but an exception names a file inside.
    assert!(m.may_include_under("build"));
    assert!(!m.is_excluded("build/keep.txt"));
    assert!(m.is_excluded("build/other.txt"));

    // A wildcard exception can reach inside any top-level directory (Docker's own prefix check
    // misses this one; skipping would lose vendor/important).
    let m = matcher("vendor\nnode_modules\n!*/important\n");
    assert!(m.may_include_under("vendor"));
    assert!(m.may_include_under("node_modules"));
    assert!(!m.is_excluded("vendor/important"));
    assert!(m.is_excluded("vendor/other"));
    // ...but not two levels down, where `*/important` cannot match.
    assert!(!m.may_include_under("vendor/sub"));

    let m = matcher("**\n!src/**/*.rs\n");
    assert!(m.may_include_under("src"));
    assert!(m.may_include_under("src/deep"));
    assert!(!m.may_include_under("docs"));
    assert!(!m.is_excluded("src/deep/lib.rs"));
    assert!(m.is_excluded("docs/lib.rs"));
}

#[test]
fn may_include_under_agrees_with_is_excluded() {
    // Whenever may_include_under says a directory can be skipped, nothing below it in this
    // sample tree may be included.
    let files = [
        "a/b/c.txt",
        "a/b/keep",
        "a/x.rs",
        "b/keep",
        "b/c/keep",
        "c/d/e/f.go",
        "c/d/keep.go",
        "node_modules/x/y.js",
        "node_modules/keep/z.js",
    ];
    let ignore_files = [
        "a\n!a/b/keep\n",
        "*\n!*/keep\n",
        "**/*.go\n!c/d/keep.go\n",
        "node_modules\n!node_modules/keep\n",
        "**\n!**/keep\n",
        "a/**\n!a/b\n",
        "c/d\n!c/**/f.go\n",
    ];
    let mut skipped = 0;
    for text in ignore_files {
        let m = matcher(text);
        for file in files {
            let parts: Vec<&str> = file.split('/').collect();
            for depth in 1..parts.len() {
                let dir = parts[..depth].join("/");
                if !m.may_include_under(&dir) {
                    skipped += 1;
                    assert!(
                        m.is_excluded(file),
                        "{text:?}: skipped {dir} but {file} is included"
                    );
                }
            }
        }
    }
    assert!(skipped > 0, "the sample never lets a walker skip anything");
}

#[test]
fn ignore_file_candidates_in_precedence_order() {
    assert_eq!(
        ignore_file_candidates("Dockerfile"),
        vec!["Dockerfile.dockerignore", ".dockerignore"]
    );
    assert_eq!(
        ignore_file_candidates("build/app.Dockerfile"),
        vec!["build/app.Dockerfile.dockerignore", ".dockerignore"]
    );
}

mod never_panics {
    use forge_parser::IgnoreMatcher;
    use proptest::prelude::*;

    proptest! {
        // Arbitrary ignore files either parse or name a line; matching never panics, and a
        // directory a walker may skip never has an included path below it.
        #[test]
        fn arbitrary_patterns(text in "[a-c*?!/\\[\\]^\\\\.\n-]{0,30}", path in "[a-c/.]{0,12}") {
            if let Ok(m) = IgnoreMatcher::parse(&text) {
                let _ = m.is_excluded(&path);
                let child = format!("{path}/a/b");
                if !m.may_include_under(&path) {
                    prop_assert!(m.is_excluded(&child), "{:?} skipped {:?} but includes {:?}", text, path, child);
                }
            }
        }
    }
}

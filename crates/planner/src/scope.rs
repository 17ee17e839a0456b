//! Variables: the predefined args, build-arg values, global ARGs and the small path and
//! word helpers the planner needs to resolve them the way BuildKit does.

use std::collections::BTreeMap;

use crate::platform::Platform;

/// The proxy args every build may use without declaring them (both cases, as Docker lists them).
pub(crate) const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

pub(crate) fn is_proxy_arg(name: &str) -> bool {
    PROXY_ARGS.contains(&name)
}

/// Build args that never earn an "unused" warning: the predefined ones, and BuildKit's own
/// frontend switches.
pub(crate) fn is_predefined_arg(name: &str) -> bool {
    is_proxy_arg(name)
        || name == "SOURCE_DATE_EPOCH"
        || name.starts_with("BUILDKIT_")
        || platform_arg_names().contains(&name)
}

fn platform_arg_names() -> [&'static str; 8] {
    [
        "TARGETPLATFORM",
        "TARGETOS",
        "TARGETARCH",
        "TARGETVARIANT",
        "BUILDPLATFORM",
        "BUILDOS",
        "BUILDARCH",
        "BUILDVARIANT",
    ]
}

/// TARGET* and BUILD* for the given platforms: in the global scope automatically, in a stage
/// only once it declares them with ARG.
pub(crate) fn platform_args(target: &Platform, build: &Platform) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", build)] {
        out.insert(format!("{prefix}PLATFORM"), p.to_string());
        out.insert(format!("{prefix}OS"), p.os.clone());
        out.insert(format!("{prefix}ARCH"), p.architecture.clone());
        out.insert(
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    out
}

/// Names referenced plainly (`$NAME`, `${NAME}`) in a word: references with a modifier
/// (`${NAME:-default}`) say what to do when unset, plain ones do not.
pub(crate) fn plain_references(word: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_single = false;
    while i < chars.len() {
        let c = chars[i];
        if c == escape && !in_single {
            i += 2;
            continue;
        }
        if c == '\'' {
            in_single = !in_single;
            i += 1;
            continue;
        }
        if c != '$' || in_single {
            i += 1;
            continue;
        }
        let braced = chars.get(i + 1) == Some(&'{');
        let start = if braced { i + 2 } else { i + 1 };
        let mut end = start;
        while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_') {
            end += 1;
        }
        if end > start {
            let name: String = chars[start..end].iter().collect();
            let plain = !braced || chars.get(end) == Some(&'}');
            let valid = !chars[start].is_ascii_digit();
            if plain && valid {
                out.push(name);
            }
        }
        i = end.max(i + 1);
    }
    out
}

/// Linux signal names as Docker's signal.ParseSignal accepts them (with or without `SIG`).
const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

/// A STOPSIGNAL value Docker would accept: a number, a name, or `RTMIN+n` / `RTMAX-n`.
pub(crate) fn is_signal(text: &str) -> bool {
    if let Ok(n) = text.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let offset_ok = |rest: &str| rest.parse::<u32>().is_ok_and(|n| n <= 30);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return rest.is_empty() || rest.strip_prefix('+').is_some_and(offset_ok);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return rest.is_empty() || rest.strip_prefix('-').is_some_and(offset_ok);
    }
    SIGNALS.contains(&name)
}

/// Go's `path.Clean` for absolute paths: `/a/./b/../c/` becomes `/a/c`.
pub(crate) fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `path` resolved against the working directory (`/` when unset).
pub(crate) fn resolve_against(workdir: Option<&str>, path: &str) -> String {
    if path.starts_with('/') {
        clean_abs(path)
    } else {
        clean_abs(&format!(
            "{}/{}",
            workdir.filter(|w| !w.is_empty()).unwrap_or("/"),
            path
        ))
    }
}

/// A COPY destination resolved against WORKDIR, keeping the trailing `/` that means
/// "copy into this directory".
pub(crate) fn resolve_dest(workdir: Option<&str>, dest: &str) -> String {
    let into_dir = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    let abs = resolve_against(workdir, dest);
    if into_dir && abs != "/" {
        format!("{abs}/")
    } else {
        abs
    }
}

/// A source path as a path relative to the context root (`""` is the whole context).
pub(crate) fn context_relative(src: &str) -> String {
    clean_abs(src).trim_start_matches('/').to_string()
}

/// ADD sources fetched from the network rather than read from the source filesystem.
pub(crate) fn is_remote_source(src: &str) -> bool {
    src.starts_with("http://")
        || src.starts_with("https://")
        || src.starts_with("git@")
        || src.starts_with("git://")
        || src.starts_with("ssh://")
}

/// The patterns of a `.dockerignore` text: one per line, comments and blank lines dropped.
pub fn dockerignore_patterns(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Seconds since the epoch as RFC 3339 UTC, for SOURCE_DATE_EPOCH.
pub(crate) fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_references_skip_defaults_and_escapes() {
        assert_eq!(plain_references("alpine:$TAG", '\\'), vec!["TAG"]);
        assert_eq!(plain_references("${REG}/x:${V:-1}", '\\'), vec!["REG"]);
        assert!(plain_references(r"a\$TAG", '\\').is_empty());
        assert!(plain_references("'$TAG'", '\\').is_empty());
    }

    #[test]
    fn paths_resolve_like_buildkit() {
        assert_eq!(resolve_against(Some("/app"), "src/../bin"), "/app/bin");
        assert_eq!(resolve_against(None, "x"), "/x");
        assert_eq!(resolve_dest(Some("/app"), "."), "/app/");
        assert_eq!(resolve_dest(Some("/app"), "out/"), "/app/out/");
        assert_eq!(resolve_dest(None, "/"), "/");
        assert_eq!(context_relative("./src/"), "src");
        assert_eq!(context_relative("."), "");
    }

    #[test]
    fn signals_parse_like_docker() {
        for ok in [
            "SIGTERM",
            "TERM",
            "sigkill",
            "9",
            "SIGRTMIN+3",
            "RTMAX-1",
            "SIGRTMIN",
        ] {
            assert!(is_signal(ok), "{ok}");
        }
        for bad in ["", "SIGFOO", "0", "65", "RTMIN+", "RTMIN-1", "TERM9"] {
            assert!(!is_signal(bad), "{bad}");
        }
    }

    #[test]
    fn epoch_formats_as_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}

//! `forge check`: run the build checks on a Dockerfile and print one line per finding.
//! Exit status 1 when a finding is an error (`# check=error=true`) or the file does not parse.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::Globals;

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The Dockerfile to check.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "Dockerfile"
    )]
    file: PathBuf,
}

pub(crate) fn run(_globals: &Globals, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let name = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {name}"))?;
    let report = check_text(&name, &text);
    print!("{}", report.stdout);
    eprint!("{}", report.stderr);
    Ok(if report.failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What `forge check` prints for one file, and whether it fails.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    stdout: String,
    stderr: String,
    failed: bool,
}

fn check_text(name: &str, text: &str) -> Report {
    let df = match forge_parser::parse(text) {
        Ok(df) => df,
        Err(err) => {
            return Report {
                stdout: String::new(),
                stderr: err.render(name),
                failed: true,
            }
        }
    };
    let findings = forge_parser::check(&df, text);
    let mut stdout = String::new();
    for finding in &findings {
        stdout.push_str(&finding.render(name));
        stdout.push('\n');
    }
    Report {
        stdout,
        stderr: String::new(),
        failed: findings.iter().any(|f| f.error),
    }
}

#[cfg(test)]
mod tests {
    use super::check_text;

    #[test]
    fn findings_print_one_line_each_and_do_not_fail_by_default() {
        let report = check_text("app.Dockerfile", "FROM alpine as build\nMAINTAINER me\n");
        assert_eq!(
            report.stdout,
            "app.Dockerfile:1:1: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (fix: write 'AS' to match 'FROM')\n\
             app.Dockerfile:2:1: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (fix: use LABEL org.opencontainers.image.authors=\"...\" instead)\n"
        );
        assert!(report.stderr.is_empty());
        assert!(!report.failed);
    }

    #[test]
    fn error_directive_fails_and_skip_all_passes() {
        let report = check_text("D", "# check=error=true\nFROM alpine\nMAINTAINER me\n");
        assert!(report.failed);
        assert_eq!(report.stdout.lines().count(), 1);
        let report = check_text(
            "D",
            "# check=skip=all;error=true\nFROM alpine\nMAINTAINER me\n",
        );
        assert!(!report.failed);
        assert!(report.stdout.is_empty());
    }

    #[test]
    fn parse_error_is_rendered_with_its_position_and_fails() {
        let report = check_text("D", "FROM alpine\nRUN --bogus x\n");
        assert!(report.failed);
        assert!(report.stdout.is_empty());
        assert!(
            report.stderr.starts_with("D:2:5: unknown flag: bogus\n"),
            "{}",
            report.stderr
        );
    }

    #[test]
    fn clean_file_prints_nothing() {
        let report = check_text("D", "FROM alpine\nCMD [\"true\"]\n");
        assert_eq!(report, super::Report::default());
    }
}

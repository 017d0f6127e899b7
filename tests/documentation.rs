//! README's tables against the code they describe, so that neither drifts:
//! - "What every container gets" is the forced-settings table
//!   (`policy::forced::FORCED`): the same settings in the same order, and each row's
//!   values (literals such as `ALL`, `1777`, `core=0`, and every label key) in both;
//! - the accepted-flag table under "Usage" lists exactly the flags urun's CLI
//!   accepts (`client::cli`), and the "Refused" paragraph names every flag it refuses;
//! - under "Building images", the flag table lists exactly the flags `urun build`
//!   accepts, the "Refused by `urun build`" paragraph names every flag it refuses, and
//!   the rule table is `policy::dockerfile::RULES` (ids, defaults, fixed);
//! - "How urund builds" is the forced build settings table
//!   (`policy::forced::BUILD_FORCED`), rows in order, every fact of a value in both;
//! - every source path README and SECURITY.md name in backticks exists.

use std::collections::BTreeSet;
use urun::client::cli;
use urun::policy::forced;

const README: &str = include_str!("../README.md");

/// The rows (cells, trimmed) of the first table after the line `heading`.
fn table_after(heading: &str) -> Vec<Vec<String>> {
    let start = README
        .lines()
        .position(|l| l.trim() == heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    README
        .lines()
        .skip(start + 1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// `text` without Markdown's backticks.
fn plain(text: &str) -> String {
    text.replace('`', "")
}

/// The words of a forced value that are facts rather than prose: literals with a
/// digit, `=`, `-`, `/` or `.` in them, upper-case names, `true`/`false`, `none`,
/// `host`, `private`.
fn facts(value: &str) -> BTreeSet<String> {
    plain(value)
        .split(|c: char| c.is_whitespace() || ",;()\"'".contains(c))
        .map(|w| w.trim_end_matches([':', '.']))
        .filter(|w| !w.is_empty())
        .filter(|w| {
            let upper = w.len() >= 3 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_');
            let literal = w.chars().any(|c| c.is_ascii_digit() || "=-/.".contains(c))
                && w.chars().any(|c| c.is_ascii_alphanumeric());
            upper || literal || ["true", "false", "none", "host", "private"].contains(w)
        })
        .map(String::from)
        .collect()
}

#[test]
fn readme_forced_settings_table_is_the_one_in_the_code() {
    let rows = table_after("## What every container gets");
    let readme: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            assert_eq!(r.len(), 2, "README forced-settings row {r:?}");
            (plain(&r[0]), r[1].clone())
        })
        .collect();
    let names = |v: Vec<&str>| v.into_iter().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        names(readme.iter().map(|(k, _)| k.as_str()).collect()),
        names(forced::FORCED.iter().map(|(k, _)| *k).collect()),
        "README's forced settings must be FORCED's rows, in order (src/policy/forced.rs)"
    );
    let mut differ = vec![];
    for ((setting, theirs), (_, ours)) in readme.iter().zip(forced::FORCED) {
        let readme_value = plain(theirs);
        let missing: Vec<String> = facts(ours)
            .into_iter()
            .filter(|f| !readme_value.contains(f.as_str()))
            .collect();
        if !missing.is_empty() {
            differ.push(format!("{setting}: README lacks {missing:?}"));
        }
    }
    // Every label urund sets is named in both.
    let labels = [
        forced::LABEL_UID,
        forced::LABEL_USER,
        forced::LABEL_REQUEST,
        forced::LABEL_HELPER,
        forced::LABEL_INSTANCE,
        forced::LABEL_NAME,
    ];
    let row = |rows: &[(String, String)]| {
        rows.iter()
            .find(|(k, _)| k.starts_with("Labels"))
            .map(|(_, v)| plain(v))
            .expect("a Labels row")
    };
    let code: Vec<(String, String)> = forced::FORCED
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for l in labels {
        for (what, value) in [("README", row(&readme)), ("FORCED", row(&code))] {
            if !value.contains(l) {
                differ.push(format!("Labels: {what} does not name {l}"));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "README and FORCED differ:\n{}",
        differ.join("\n")
    );
}

/// The flags (`-x`, `--long`) in backticked spans of `text`.
fn flags_in(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|span| span.split(|c: char| c.is_whitespace() || c == ','))
        .filter(|w| w.starts_with('-') && w.len() > 1)
        .map(|w| w.split(['=', '[']).next().unwrap().to_string())
        .collect()
}

/// How an argument is written: `-s`, `--long`, and its visible aliases.
fn spellings(a: &clap::Arg) -> Vec<String> {
    let mut v = vec![];
    if let Some(s) = a.get_short() {
        v.push(format!("-{s}"));
    }
    if let Some(l) = a.get_long() {
        v.push(format!("--{l}"));
    }
    for l in a.get_visible_aliases().unwrap_or_default() {
        v.push(format!("--{l}"));
    }
    v
}

#[test]
fn readme_flag_tables_are_the_clis() {
    let cmd = cli::urun_command();
    let refused_only = |id: &str| {
        cli::REFUSED_FLAGS
            .iter()
            .any(|f| f.id == id && f.accepted.is_empty())
    };
    let args: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set())
        .filter(|a| !["help", "version"].contains(&a.get_id().as_str()))
        .collect();
    let accepted: BTreeSet<String> = args
        .iter()
        .filter(|a| !refused_only(a.get_id().as_str()))
        .flat_map(|a| spellings(a))
        .collect();
    let refused: BTreeSet<String> = args
        .iter()
        .filter(|a| {
            cli::REFUSED_FLAGS
                .iter()
                .any(|f| f.id == a.get_id().as_str())
        })
        .flat_map(|a| spellings(a))
        .collect();
    let known: BTreeSet<String> = args.iter().flat_map(|a| spellings(a)).collect();

    let table: BTreeSet<String> = table_after("## Usage")
        .iter()
        .flat_map(|r| flags_in(&r[0]))
        .collect();
    assert_eq!(
        table, accepted,
        "README's accepted-flag table must list exactly the flags urun accepts (src/client/cli.rs)"
    );

    let paragraph = README
        .split("\n\n")
        .find(|p| p.starts_with("Refused, with exit status 125"))
        .expect("README's paragraph of refused flags");
    let named = flags_in(paragraph);
    let missing: Vec<&String> = refused.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "README does not say these are refused: {missing:?}"
    );
    let unknown: Vec<&String> = named.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "README names flags urun does not know: {unknown:?}"
    );
}

/// The rows of the table whose header line is `header`.
fn table_with_header(header: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = README.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == header)
        .unwrap_or_else(|| panic!("README has no table {header:?}"));
    lines[start + 2..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn readme_build_flag_table_and_refusals_are_urun_builds() {
    let cmd = cli::build_command();
    let refused_only = |id: &str| {
        cli::BUILD_REFUSED_FLAGS
            .iter()
            .any(|f| f.id == id && f.accepted.is_empty())
    };
    let args: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set())
        .filter(|a| !["help", "version"].contains(&a.get_id().as_str()))
        .collect();
    let accepted: BTreeSet<String> = args
        .iter()
        .filter(|a| !refused_only(a.get_id().as_str()))
        .flat_map(|a| spellings(a))
        .collect();
    let table: BTreeSet<String> = table_with_header("| `urun build` flag | meaning |")
        .iter()
        .flat_map(|r| flags_in(&r[0]))
        .collect();
    assert_eq!(
        table, accepted,
        "README's urun build flag table must list exactly the flags urun build accepts \
         (src/client/cli/build.rs)"
    );
    let refused: BTreeSet<String> = args
        .iter()
        .filter(|a| {
            cli::BUILD_REFUSED_FLAGS
                .iter()
                .any(|f| f.id == a.get_id().as_str())
        })
        .flat_map(|a| spellings(a))
        .collect();
    let paragraph = README
        .split("\n\n")
        .find(|p| p.starts_with("Refused by `urun build`"))
        .expect("README's paragraph of refused build flags");
    let named = flags_in(paragraph);
    let missing: Vec<&String> = refused.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "README does not say urun build refuses {missing:?}"
    );
    let known: BTreeSet<String> = args.iter().flat_map(|a| spellings(a)).collect();
    let unknown: Vec<&String> = named.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "README names build flags urun does not know: {unknown:?}"
    );
}

#[test]
fn readme_dockerfile_rule_table_is_the_checks() {
    use urun::policy::dockerfile::{Severity, RULES};
    let rows = table_with_header("| rule id | default | checks |");
    let ids: Vec<String> = rows.iter().map(|r| plain(&r[0])).collect();
    let code: Vec<&str> = RULES.iter().map(|r| r.id).collect();
    assert_eq!(
        ids, code,
        "README's rule table must be RULES, in order (src/policy/dockerfile)"
    );
    for (row, rule) in rows.iter().zip(RULES) {
        let default = match rule.default {
            Severity::Off => "off",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        let want = match rule.fixed {
            true => format!("{default}, fixed"),
            false => default.to_string(),
        };
        assert_eq!(row[1], want, "{}", rule.id);
    }
}

#[test]
fn every_source_path_the_docs_name_exists() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut missing = vec![];
    for (doc, text) in [
        ("README.md", README),
        ("SECURITY.md", include_str!("../SECURITY.md")),
    ] {
        // Every `src/...` or `tests/...` in backticks, up to the closing one.
        for start in ["`src/", "`tests/"] {
            for (at, _) in text.match_indices(start) {
                let rest = &text[at + 1..];
                let path = rest[..rest.find('`').unwrap_or(rest.len())]
                    .split_whitespace()
                    .next()
                    .unwrap_or("");
                if !std::path::Path::new(root).join(path).exists() {
                    missing.push(format!("{doc}: {path}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "paths that do not exist: {missing:?}");
}

#[test]
fn readme_build_settings_table_is_the_one_in_the_code() {
    let rows = table_after("### How urund builds");
    let names: Vec<String> = rows.iter().map(|r| plain(&r[0])).collect();
    let ours: Vec<String> = forced::BUILD_FORCED
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(
        names, ours,
        "README's build settings must be BUILD_FORCED's rows, in order (src/policy/forced.rs)"
    );
    let mut differ = vec![];
    for (row, (setting, value)) in rows.iter().zip(forced::BUILD_FORCED) {
        assert_eq!(row.len(), 2, "README build-settings row {row:?}");
        let readme_value = plain(&row[1]);
        let missing: Vec<String> = facts(value)
            .into_iter()
            .filter(|f| !readme_value.contains(f.as_str()))
            .collect();
        if !missing.is_empty() {
            differ.push(format!("{setting}: README lacks {missing:?}"));
        }
    }
    assert!(
        differ.is_empty(),
        "README and BUILD_FORCED differ:\n{}",
        differ.join("\n")
    );
}

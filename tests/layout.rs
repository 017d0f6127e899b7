//! The folders are the architecture (README, "Layout"), and this test keeps them so:
//! - `src/client/` (urun, run by the untrusted user) uses nothing of `crate::daemon`
//!   or `crate::engine`: the client never touches Docker or urund's internals;
//! - `src/policy/` and `src/wire/` (pure: the decision and the protocol) use nothing
//!   of `crate::system`, `crate::daemon`, `crate::engine`, nor tokio or bollard.
//!
//! Paths are found in the code with comments and string literals taken out, whether
//! written `crate::daemon::...`, `crate::{daemon, ...}`, `super::super::daemon` or
//! `::tokio::...`.

use std::fs;
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// A rule: files under `dir` must not use the crate's modules `modules` nor the
/// external crates `crates`.
struct Rule {
    dir: &'static str,
    modules: &'static [&'static str],
    crates: &'static [&'static str],
}

const RULES: &[Rule] = &[
    Rule {
        dir: "client",
        modules: &["daemon", "engine"],
        crates: &[],
    },
    Rule {
        dir: "policy",
        modules: &["system", "daemon", "engine"],
        crates: &["tokio", "bollard"],
    },
    Rule {
        dir: "wire",
        modules: &["system", "daemon", "engine"],
        crates: &["tokio", "bollard"],
    },
];

/// Known violations, each with its reason; the test fails when one is fixed (so the
/// entry goes) as well as when a new one appears. Entries: (file under src/, what it
/// uses, why).
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The code of a Rust file without comments, string and character literals (each
/// replaced by a space), so that only real paths remain.
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !ident(b.get(i.wrapping_sub(1)))
        {
            // A raw string: r"...", r#"..."#, ...
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
            out.push(' ');
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') {
            // 'x'
            i += 3;
            out.push(' ');
        } else if c == '\'' && next == Some('\\') {
            // '\n', '\x7f', '\u{..}'
            i += 2;
            while i < b.len() && b[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// The path segments of `code`, as sequences: `a::b::{c, d::e}` gives [a, b, c],
/// [a, b, d, e]. Good enough for `use` trees and paths in expressions.
fn paths(code: &str) -> Vec<Vec<String>> {
    // Tokenise into identifiers, `::`, `{`, `}`, `,` and everything else.
    #[derive(Debug, PartialEq)]
    enum T {
        Id(String),
        Sep,
        Open,
        Close,
        Comma,
        Other,
    }
    let chars: Vec<char> = code.chars().collect();
    let mut toks = vec![];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphabetic() || c == '_' {
            let s = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(T::Id(chars[s..i].iter().collect()));
            continue;
        }
        if c == ':' && chars.get(i + 1) == Some(&':') {
            toks.push(T::Sep);
            i += 2;
            continue;
        }
        if !c.is_whitespace() {
            toks.push(match c {
                '{' => T::Open,
                '}' => T::Close,
                ',' => T::Comma,
                _ => T::Other,
            });
        }
        i += 1;
    }
    // Walk: a path is Id (Sep Id)*, with Sep Open ... Close groups expanding.
    fn walk(toks: &[T], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut cur = prefix;
        while let Some(T::Id(s)) = toks.get(*i) {
            cur.push(s.clone());
            *i += 1;
            if toks.get(*i) == Some(&T::Sep) {
                *i += 1;
                if toks.get(*i) == Some(&T::Open) {
                    *i += 1;
                    loop {
                        walk(toks, i, cur.clone(), out);
                        match toks.get(*i) {
                            Some(T::Comma) => *i += 1,
                            Some(T::Close) => {
                                *i += 1;
                                break;
                            }
                            _ => break,
                        }
                    }
                    return;
                }
                continue;
            }
            break;
        }
        out.push(cur);
    }
    let mut out = vec![];
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            T::Id(_) => walk(&toks, &mut i, vec![], &mut out),
            T::Sep => {
                // A leading `::` (`::tokio::...`).
                i += 1;
                walk(&toks, &mut i, vec![], &mut out);
            }
            _ => i += 1,
        }
    }
    out
}

/// What a path refers to at the crate's top: `Some(("crate", module))` for a path
/// into one of the crate's top modules, `Some(("extern", name))` for an external crate.
fn target(path: &[String], file_depth: usize) -> Option<(&'static str, String)> {
    let first = path.first()?;
    if first == "crate" {
        return path.get(1).map(|m| ("crate", m.clone()));
    }
    if first == "super" {
        let k = path.iter().take_while(|s| *s == "super").count();
        if k >= file_depth {
            return path.get(k).map(|m| ("crate", m.clone()));
        }
        return None;
    }
    Some(("extern", first.clone()))
}

/// The violations of all rules: (file under src/, what it uses).
fn violations() -> Vec<(String, String)> {
    let mut found = vec![];
    for rule in RULES {
        let mut files = vec![];
        rust_files(&Path::new(SRC).join(rule.dir), &mut files);
        assert!(!files.is_empty(), "no files under src/{}", rule.dir);
        for f in files {
            let rel = f.strip_prefix(SRC).unwrap().to_path_buf();
            let code = code_only(&fs::read_to_string(&f).unwrap());
            // Module depth below the crate root: src/policy/judge.rs is 2
            // (super::super:: is the crate), src/policy/mod.rs is 1.
            let comps = rel.components().count();
            let file_depth = if rel.file_name().unwrap() == "mod.rs" {
                comps - 1
            } else {
                comps
            };
            let mut hits = std::collections::BTreeSet::new();
            for p in paths(&code) {
                match target(&p, file_depth) {
                    Some(("crate", m)) if rule.modules.contains(&m.as_str()) => {
                        hits.insert(format!("crate::{m}"));
                    }
                    Some(("extern", c)) if rule.crates.contains(&c.as_str()) => {
                        hits.insert(c);
                    }
                    _ => {}
                }
            }
            for h in hits {
                found.push((rel.display().to_string(), h));
            }
        }
    }
    found
}

#[test]
fn the_client_and_the_pure_modules_use_only_what_their_folder_allows() {
    let found = violations();
    let new: Vec<&(String, String)> = found
        .iter()
        .filter(|(f, u)| !EXCEPTIONS.iter().any(|(ef, eu, _)| ef == f && eu == u))
        .collect();
    assert!(
        new.is_empty(),
        "layout broken (see README, \"Layout\"): {new:?}"
    );
    let fixed: Vec<&(&str, &str, &str)> = EXCEPTIONS
        .iter()
        .filter(|(ef, eu, _)| !found.iter().any(|(f, u)| f == ef && u == eu))
        .collect();
    assert!(
        fixed.is_empty(),
        "no longer a violation: remove from EXCEPTIONS: {fixed:?}"
    );
}

#[test]
fn the_layout_check_sees_every_way_of_writing_a_path() {
    let code = code_only(
        r###"
        use crate::daemon::instance::Owner;
        use crate::{wire, engine::Engine};
        use super::super::system::peer;
        fn f() { ::tokio::spawn(x); bollard::models::X; }
        // use crate::system;  (a comment)
        /* crate::system */
        const S: &str = "crate::system";
        const R: &str = r#"crate::system"#;
        "###,
    );
    let mut got: Vec<(&str, String)> = paths(&code)
        .iter()
        .filter_map(|p| target(p, 2))
        .filter(|(k, m)| *k == "crate" || m == "tokio" || m == "bollard")
        .collect();
    got.sort();
    got.dedup();
    assert_eq!(
        got,
        vec![
            ("crate", "daemon".to_string()),
            ("crate", "engine".to_string()),
            ("crate", "system".to_string()),
            ("crate", "wire".to_string()),
            ("extern", "bollard".to_string()),
            ("extern", "tokio".to_string()),
        ]
    );
}

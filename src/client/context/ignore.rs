//! `.dockerignore`, the way the docker 20.10 CLI reads and applies it: pure, no I/O.
//!
//! A port of `builder/dockerignore.ReadAll` and `pkg/fileutils.PatternMatcher` of
//! moby 20.10 (which the CLI's `archive.TarWithOptions` uses to build the context):
//!
//! - lines starting with `#` are comments (before trimming: `  #x` is a pattern); each
//!   pattern is trimmed, cleaned like Go's `filepath.Clean`, and a leading `/` dropped
//!   (so `/foo` and `foo` are the same); `!` makes an exception;
//! - a pattern matches a path, or one of the path's parent directories with as many
//!   components as the pattern has (so `foo` excludes `foo/bar/baz`); patterns are
//!   evaluated in order and the last one that matches wins;
//! - `*` is any run of characters but `/`, `?` one character but `/`, `[...]` a
//!   character class (`^` negates, `a-z` ranges), `**` any number of directories
//!   (`**/x`, `a/**/b`; a trailing `**` matches everything below), `\` escapes the next
//!   character.
//!
//! Docker turns each pattern into a Go regular expression and passes some characters
//! through unescaped, so `+ ( ) | { } ^` in a pattern act as regular-expression
//! operators there. Those patterns are refused here with a message rather than given
//! a meaning of our own, and so are `\` before a letter or digit (a character class
//! such as `\d` in Go) and patterns Go's `filepath.Match` calls malformed (docker fails
//! on those too).
#![forbid(unsafe_code)]

use std::fmt;

/// A `.dockerignore` pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            ".dockerignore pattern {:?}: {}",
            self.pattern, self.reason
        )
    }
}

/// Go's `filepath.Clean` on a `/`-separated path.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|p| *p != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// `dockerignore.ReadAll`: the patterns of a `.dockerignore` file, in order.
pub fn read_dockerignore(content: &str) -> Vec<String> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut out = Vec::new();
    let mut lines: Vec<&str> = content.split('\n').collect();
    if content.ends_with('\n') {
        lines.pop();
    }
    for line in lines {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim();
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = p[1..].trim();
        }
        let mut pat = p.to_string();
        if !p.is_empty() {
            pat = clean(p);
            if pat.len() > 1 && pat.starts_with('/') {
                pat.remove(0);
            }
        }
        out.push(if invert { format!("!{pat}") } else { pat });
    }
    out
}

/// One piece of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: `[^/]*`
    Star,
    /// `?`: `[^/]`
    One,
    /// `**` before more pattern: `(.*/)?` (`.` is any character but a newline)
    DirStar,
    /// `**` at the end: `.*`
    TailStar,
    /// `[...]`
    Class {
        negate: bool,
        ranges: Vec<(char, char)>,
    },
}

/// One cleaned pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The cleaned pattern without its `!`.
    pub text: String,
    pub exclusion: bool,
    dirs: usize,
    toks: Vec<Tok>,
}

/// Docker's `PatternMatcher`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

/// Checks a pattern the way Go's `filepath.Match(pattern, ".")` does (the whole
/// pattern, as Go does since 1.16).
fn validate_match_syntax(p: &[char]) -> Result<(), String> {
    let bad = |why: &str| Err(format!("malformed pattern ({why})"));
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    return bad("a trailing \\");
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if p.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut n = 0;
                loop {
                    if p.get(i) == Some(&']') && n > 0 {
                        i += 1;
                        break;
                    }
                    // getEsc for the low end, then maybe '-' and the high end
                    for end in 0..2 {
                        match p.get(i) {
                            None => return bad("an unclosed ["),
                            Some('-' | ']') => return bad("an empty or malformed [...]"),
                            Some('\\') => {
                                i += 1;
                                if i >= p.len() {
                                    return bad("an unclosed [");
                                }
                            }
                            Some(_) => {}
                        }
                        i += 1;
                        if i >= p.len() {
                            return bad("an unclosed [");
                        }
                        if end == 0 && p[i] == '-' {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    n += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn compile(text: &str) -> Result<Vec<Tok>, String> {
    let p: Vec<char> = text.chars().collect();
    validate_match_syntax(&p)?;
    let mut toks = Vec::new();
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        i += 1;
        match c {
            '*' if p.get(i) == Some(&'*') => {
                i += 1;
                if p.get(i) == Some(&'/') {
                    i += 1;
                }
                toks.push(if i >= p.len() {
                    Tok::TailStar
                } else {
                    Tok::DirStar
                });
            }
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::One),
            '\\' => {
                let n = p[i];
                i += 1;
                if n.is_ascii_alphanumeric() {
                    return Err(format!(
                        "\\{n} is a character class in docker's matcher, not the letter {n}"
                    ));
                }
                toks.push(Tok::Lit(n));
            }
            '[' => toks.push(class(&p, &mut i)?),
            '+' | '(' | ')' | '|' | '{' | '}' | '^' => {
                return Err(format!(
                    "{c:?} is a regular-expression operator in docker's matcher; urun does not \
                     support it in .dockerignore (escape it with \\ to mean the character)"
                ))
            }
            c => toks.push(Tok::Lit(c)),
        }
    }
    Ok(toks)
}

/// A `[...]` class whose `[` is just before `p[*i]`, moving past its `]`.
fn class(p: &[char], i: &mut usize) -> Result<Tok, String> {
    let mut negate = false;
    if p.get(*i) == Some(&'^') {
        negate = true;
        *i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        let c = p[*i];
        if c == ']' && !ranges.is_empty() {
            *i += 1;
            break;
        }
        if c == '[' {
            return Err("[ inside [...] is not supported".into());
        }
        let lo = class_char(p, i)?;
        let mut hi = lo;
        if p[*i] == '-' {
            *i += 1;
            hi = class_char(p, i)?;
            if hi < lo {
                return Err(format!("the range {lo}-{hi} is backwards"));
            }
        }
        ranges.push((lo, hi));
    }
    Ok(Tok::Class { negate, ranges })
}

/// One character of a `[...]` class at `p[*i]` (`\` escapes the next), moving past it.
fn class_char(p: &[char], i: &mut usize) -> Result<char, String> {
    let mut c = p[*i];
    if c == '\\' {
        *i += 1;
        c = p[*i];
        if c.is_ascii_alphanumeric() {
            return Err(format!("\\{c} inside [...] is not supported"));
        }
    }
    *i += 1;
    Ok(c)
}

/// Whether `toks` match all of `s` (anchored both ends).
fn matches(toks: &[Tok], s: &[char]) -> bool {
    // memo[t][i]: tokens t.. against s[i..] (0 unknown, 1 no, 2 yes)
    let mut memo = vec![vec![0u8; s.len() + 1]; toks.len() + 1];
    fn go(toks: &[Tok], s: &[char], t: usize, i: usize, memo: &mut [Vec<u8>]) -> bool {
        if memo[t][i] != 0 {
            return memo[t][i] == 2;
        }
        let r = match toks.get(t) {
            None => i == s.len(),
            Some(Tok::Lit(c)) => s.get(i) == Some(c) && go(toks, s, t + 1, i + 1, memo),
            Some(Tok::One) => {
                s.get(i).is_some_and(|c| *c != '/') && go(toks, s, t + 1, i + 1, memo)
            }
            Some(Tok::Class { negate, ranges }) => {
                s.get(i)
                    .is_some_and(|c| ranges.iter().any(|(lo, hi)| lo <= c && c <= hi) != *negate)
                    && go(toks, s, t + 1, i + 1, memo)
            }
            Some(Tok::Star) => {
                let mut j = i;
                loop {
                    if go(toks, s, t + 1, j, memo) {
                        break true;
                    }
                    if j >= s.len() || s[j] == '/' {
                        break false;
                    }
                    j += 1;
                }
            }
            Some(Tok::TailStar) => {
                s[i..].iter().all(|c| *c != '\n') && go(toks, s, t + 1, s.len(), memo)
            }
            Some(Tok::DirStar) => {
                // empty, or any run of non-newline characters ending with '/'
                go(toks, s, t + 1, i, memo)
                    || (i..s.len())
                        .take_while(|&j| s[j] != '\n')
                        .any(|j| s[j] == '/' && go(toks, s, t + 1, j + 1, memo))
            }
        };
        memo[t][i] = if r { 2 } else { 1 };
        r
    }
    go(toks, s, 0, 0, &mut memo)
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        let s: Vec<char> = path.chars().collect();
        matches(&self.toks, &s)
    }
}

/// Go's `filepath.Dir` on a clean relative path.
fn parent(path: &str) -> String {
    match path.rfind('/') {
        None => ".".into(),
        Some(i) => clean(&path[..i]),
    }
}

impl Matcher {
    /// `NewPatternMatcher`: trims, cleans and compiles each pattern.
    pub fn new(patterns: &[String]) -> Result<Matcher, PatternError> {
        let mut out = Vec::new();
        for raw in patterns {
            let p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean(p);
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    return Err(PatternError {
                        pattern: raw.clone(),
                        reason: "illegal exclusion pattern: \"!\"".into(),
                    });
                }
                p.remove(0);
            }
            let toks = compile(&p).map_err(|reason| PatternError {
                pattern: raw.clone(),
                reason,
            })?;
            out.push(Pattern {
                dirs: p.split('/').count(),
                text: p,
                exclusion,
                toks,
            });
        }
        Ok(Matcher { patterns: out })
    }

    /// `Matches`: whether a clean relative path is excluded (the last matching
    /// pattern decides; a pattern also matches through the path's leading
    /// directories).
    pub fn matches(&self, file: &str) -> bool {
        let parent = parent(file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for p in &self.patterns {
            let mut m = p.matches(file);
            if !m && parent != "." && p.dirs <= parent_dirs.len() {
                m = p.matches(&parent_dirs[..p.dirs].join("/"));
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether any pattern is an exception (`!`).
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether an excluded directory must still be walked: an exception pattern
    /// starts with the directory's path (docker's literal prefix test, so `!dir/keep`
    /// reopens `dir`, while `!**/keep` does not).
    pub fn must_walk(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.text).starts_with(&prefix))
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }
}

/// docker's `fileutils.Matches(file, patterns)`.
pub fn matches_one(file: &str, patterns: &[String]) -> Result<bool, PatternError> {
    let m = Matcher::new(patterns)?;
    let file = clean(file);
    if file == "." {
        return Ok(false);
    }
    Ok(m.matches(&file))
}

/// docker's `TrimBuildFilesFromExcludes`: the Dockerfile (when it is in the context)
/// and `.dockerignore` are always sent, however the patterns exclude them.
pub fn keep_build_files(
    mut patterns: Vec<String>,
    dockerfile: Option<&str>,
) -> Result<Vec<String>, PatternError> {
    if matches_one(".dockerignore", &patterns)? {
        patterns.push("!.dockerignore".into());
    }
    if let Some(df) = dockerfile {
        if matches_one(df, &patterns)? {
            patterns.push(format!("!{df}"));
        }
    }
    Ok(patterns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &[&str]) -> Matcher {
        Matcher::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn clean_is_go_s() {
        for (a, b) in [
            ("", "."),
            ("a//b/./c/", "a/b/c"),
            ("/../a", "/a"),
            ("../../a/..", "../.."),
            ("a/../..", ".."),
            ("/", "/"),
            ("./", "."),
            ("!./x", "!./x"),
        ] {
            assert_eq!(clean(a), b, "{a:?}");
        }
    }

    #[test]
    fn reading_the_file() {
        let p = read_dockerignore(
            "\u{feff}# comment\n  #not a comment\n\n/abs\r\n! /neg/./x \n*.o\n!\n",
        );
        assert_eq!(p, vec!["#not a comment", "abs", "!neg/x", "*.o", "!"]);
        assert!(Matcher::new(&p).is_err());
    }

    #[test]
    fn globs() {
        let x = m(&["*.o", "a?c", "[0-9]x", "[^a]y", "dir/*/z", "lit\\*"]);
        assert!(x.matches("f.o"));
        assert!(!x.matches("d/f.o"));
        assert!(x.matches("abc"));
        assert!(!x.matches("a/c"));
        assert!(x.matches("5x"));
        assert!(x.matches("by"));
        assert!(!x.matches("ay"));
        assert!(x.matches("dir/q/z"));
        assert!(!x.matches("dir/q/r/z"));
        assert!(x.matches("lit*"));
        assert!(!x.matches("litx"));
    }

    #[test]
    fn double_star() {
        let x = m(&["**/foo"]);
        assert!(x.matches("foo"));
        assert!(x.matches("a/b/foo"));
        let x = m(&["a/**/b"]);
        assert!(x.matches("a/b"));
        assert!(x.matches("a/x/y/b"));
        assert!(!x.matches("ab"));
        let x = m(&["a/**"]);
        assert!(x.matches("a/x/y"));
        let x = m(&["**"]);
        assert!(x.matches("anything/at/all"));
        // ** stops at a newline, as Go's '.' does
        assert!(!m(&["**/foo"]).matches("a\nb/foo"));
    }

    #[test]
    fn parents_and_exceptions() {
        let x = m(&["dir", "!dir/keep"]);
        assert!(x.matches("dir"));
        assert!(x.matches("dir/other"));
        assert!(x.matches("dir/sub/deep"));
        assert!(!x.matches("dir/keep"));
        assert!(!x.matches("dir/keep/inner"));
        assert!(x.must_walk("dir"));
        assert!(!x.must_walk("other"));
        // the last match wins
        let x = m(&["!a", "a"]);
        assert!(x.matches("a"));
        let x = m(&["*", "!important", "important/tmp"]);
        assert!(x.matches("x"));
        assert!(!x.matches("important"));
        assert!(x.matches("important/tmp"));
        // a leading slash is the same pattern once read from the file (docker's
        // ReadAll drops it; the matcher itself does not)
        assert!(Matcher::new(&read_dockerignore("/abs"))
            .unwrap()
            .matches("abs"));
        assert!(!m(&["/abs"]).matches("abs"));
        // `*` does not cross a slash: `*.o` is only the top level
        assert!(!m(&["*.o"]).matches("src/a.o"));
        assert!(m(&["**/*.o"]).matches("src/a.o"));
        // docker's literal prefix test: a wildcard exception does not reopen a dir
        assert!(!m(&["dir", "!**/keep"]).must_walk("dir"));
    }

    #[test]
    fn refused_patterns() {
        for p in [
            "a+b", "(x)", "a|b", "x{2}", "^x", "\\d", "a\\", "[", "[]", "[a-]", "[z-a]", "[-a]",
        ] {
            assert!(Matcher::new(&[p.to_string()]).is_err(), "{p:?}");
        }
        assert!(Matcher::new(&[
            "\\+".to_string(),
            "[^a-c]".to_string(),
            "[a\\]]".to_string()
        ])
        .is_ok());
    }

    #[test]
    fn build_files_are_kept() {
        let p = keep_build_files(vec!["*".into()], Some("Dockerfile")).unwrap();
        let x = Matcher::new(&p).unwrap();
        assert!(!x.matches(".dockerignore"));
        assert!(!x.matches("Dockerfile"));
        assert!(x.matches("other"));
        let p = keep_build_files(vec!["sub".into()], Some("sub/Dockerfile")).unwrap();
        let x = Matcher::new(&p).unwrap();
        assert!(x.must_walk("sub"));
        assert!(!x.matches("sub/Dockerfile"));
        assert!(x.matches("sub/other"));
        assert_eq!(
            keep_build_files(vec!["x".into()], Some("Dockerfile")).unwrap(),
            vec!["x"]
        );
    }

    // -- the reference: the same semantics, written the slow obvious way -------

    /// Reference glob for the generated alphabet (`a b / * ? **`): tries every split.
    fn ref_glob(p: &str, s: &str) -> bool {
        if let Some(rest) = p.strip_prefix("**/") {
            if rest.is_empty() {
                return ref_glob("**", s);
            }
            // (.*/)? then rest
            if ref_glob(rest, s) {
                return true;
            }
            return (0..s.len()).any(|i| s.as_bytes()[i] == b'/' && ref_glob(rest, &s[i + 1..]));
        }
        if p == "**" {
            return true;
        }
        if let Some(rest) = p.strip_prefix("**") {
            return ref_glob(&format!("**/{rest}"), s)
                || (0..=s.len()).any(|i| ref_glob(rest, &s[i..]) && s[..i].ends_with('/'));
        }
        match p.chars().next() {
            None => s.is_empty(),
            Some('*') => (0..=s.len())
                .take_while(|&i| i == 0 || s.as_bytes()[i - 1] != b'/')
                .any(|i| ref_glob(&p[1..], &s[i..])),
            Some('?') => s.chars().next().is_some_and(|c| c != '/') && ref_glob(&p[1..], &s[1..]),
            Some(c) => s.starts_with(c) && ref_glob(&p[c.len_utf8()..], &s[c.len_utf8()..]),
        }
    }

    /// Reference matcher: last match wins, parents count.
    fn ref_matches(patterns: &[String], path: &str) -> bool {
        let comps: Vec<&str> = path.split('/').collect();
        let mut out = false;
        for raw in patterns {
            let (neg, p) = match raw.strip_prefix('!') {
                Some(p) => (true, p.to_string()),
                None => (false, raw.clone()),
            };
            let p = clean(&p);
            let n = p.split('/').count();
            let hit = ref_glob(&p, path)
                || (comps.len() > 1 && n < comps.len() && ref_glob(&p, &comps[..n].join("/")));
            if hit {
                out = !neg;
            }
        }
        out
    }

    fn pattern() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            proptest::collection::vec(prop_oneof!["a", "b", "ab", "\\*", "\\?", "\\*\\*"], 1..4),
        )
            .prop_map(|(neg, parts)| {
                let p = parts.join("/").replace('\\', "");
                if neg {
                    format!("!{p}")
                } else {
                    p
                }
            })
    }

    fn path() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", "ab", "ba", "aa"], 1..5)
            .prop_map(|p| p.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn the_matcher_agrees_with_the_reference(
            patterns in proptest::collection::vec(pattern(), 1..4),
            p in path(),
        ) {
            let x = Matcher::new(&patterns).unwrap();
            prop_assert_eq!(x.matches(&p), ref_matches(&patterns, &p), "{:?} {:?}", patterns, p);
        }

        #[test]
        fn the_matcher_never_panics(patterns in proptest::collection::vec("\\PC{0,12}", 0..4), p in "\\PC{0,20}") {
            if let Ok(x) = Matcher::new(&patterns) {
                let _ = x.matches(&clean(&p));
            }
            let _ = read_dockerignore(&patterns.join("\n"));
        }
    }
}

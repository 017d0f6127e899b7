//! Reading a Dockerfile into instructions exactly as Docker 20.10's legacy builder reads
//! it: a line-by-line port of the `parser` and `instructions` packages of the buildkit
//! v0.8 frontend that `dockerd` 20.10 vendors (`parser.go`, `line_parsers.go`,
//! `split_command.go`, `instructions/parse.go`, `bflag.go`).
//!
//! Why a port and not a general Dockerfile crate: the static check is only worth
//! something if it sees the instructions the builder will run. A parser that follows
//! a newer BuildKit grammar splits some inputs differently (heredocs, directives,
//! whitespace) and would let a line hide from the check. So the rules here are the
//! legacy builder's, including its quirks:
//!
//! - parser directives (`# escape=`, `# syntax=`) only in the leading comment lines;
//!   a repeated directive or an escape other than `\` and `` ` `` is an error;
//! - a line continues when its last non-blank (space/tab) character is the escape
//!   token not itself escaped; inside a continued instruction, comment lines are
//!   dropped and empty lines are skipped **without** ending the instruction (Docker
//!   warns about those; so does the check);
//! - leading whitespace is dropped; instruction names are case-insensitive;
//! - `--flag=value` words at the start of any instruction are flags (Docker's own
//!   quoting rules); each instruction accepts only its own flags;
//! - exec (JSON) form when the arguments are a JSON array (only the first JSON value
//!   counts, as Go's decoder reads it), shell form otherwise;
//! - `ENV`/`LABEL`/`ARG` words with their quotes kept (they are removed at
//!   substitution time, see [`super::lex`]).
//!
//! Heredocs (`RUN <<EOF`) are BuildKit syntax: the legacy builder reads the lines
//! after them as instructions of their own, and so does this parser (the check then
//! reports the heredoc). Where Go would apply Unicode case mapping or Unicode space
//! classes to bytes of non-ASCII characters (instruction names, flags, stage names),
//! the input is refused instead of guessed: refusing is always the safe direction.
#![forbid(unsafe_code)]

use std::fmt;

/// The longest line Go's `bufio.Scanner` (and so Docker) reads.
pub const MAX_LINE: usize = 65535;

/// A parse error, with the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        message: message.into(),
    })
}

/// One logical instruction as the parser produced it (Docker's `parser.Node`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Lower-case instruction name as written (`run`, `from`, or anything unknown).
    pub command: String,
    /// `--name=value` words before the arguments, quotes removed.
    pub flags: Vec<String>,
    /// The arguments after the instruction-specific split (Docker's `nodeArgs`).
    pub args: Vec<String>,
    /// Exec (JSON array) form.
    pub json: bool,
    /// The logical line (continuations joined).
    pub original: String,
    pub start_line: usize,
    pub end_line: usize,
}

/// A parsed file: its nodes, its escape token and its parser warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub escape: char,
    pub nodes: Vec<Node>,
    /// Lines where an empty line sat inside a continued instruction (start line of
    /// the instruction).
    pub empty_continuations: Vec<usize>,
}

struct Directives {
    escape: char,
    done: bool,
    seen: Vec<String>,
}

impl Directives {
    /// `possibleParserDirective`: `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
    fn possible(&mut self, line: &str, line_no: usize) -> Result<(), ParseError> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = directive(line) else {
            self.done = true;
            return Ok(());
        };
        let k = name.to_ascii_lowercase();
        if k != "escape" && k != "syntax" {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&k) {
            return err(
                line_no,
                format!("only one {k} parser directive can be used"),
            );
        }
        self.seen.push(k.clone());
        if k == "escape" {
            match value {
                "`" => self.escape = '`',
                "\\" => self.escape = '\\',
                _ => {
                    return err(
                        line_no,
                        format!("invalid escape token '{value}' does not match ` or \\"),
                    )
                }
            }
        }
        Ok(())
    }
}

/// Go's `\s` (Perl class): `[\t\n\f\r ]`.
fn perl_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

/// The name and value of a parser directive line, if it is one.
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start_matches(perl_space);
    let name_len = rest
        .char_indices()
        .take_while(|(i, c)| {
            if *i == 0 {
                c.is_ascii_alphabetic()
            } else {
                c.is_ascii_alphanumeric()
            }
        })
        .count();
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let rest = rest.trim_start_matches(perl_space).strip_prefix('=')?;
    let value = rest.trim_matches(perl_space);
    // `(.+?)` needs one character that is not a newline (there are none in a line).
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

/// Go's `unicode.IsSpace`, which is the Unicode `White_Space` property, the same as
/// Rust's `char::is_whitespace`.
fn go_space(c: char) -> bool {
    c.is_whitespace()
}

/// Docker's `reWhitespace`: `[\t\v\f\r ]+`.
fn re_space(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// `reWhitespace.Split(s, n)` for n = 2 (`Some(2)`) or all (`None`).
fn split_re_space(s: &str, two: bool) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if two && out.len() == 1 {
            out.push(rest);
            return out;
        }
        match rest.find(re_space) {
            None => {
                out.push(rest);
                return out;
            }
            Some(i) => {
                out.push(&rest[..i]);
                rest = rest[i..].trim_start_matches(re_space);
            }
        }
    }
}

/// `trimContinuationCharacter`: the line without its continuation token, and whether
/// the instruction ends here.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    if let Some(before) = body.strip_suffix(escape) {
        if before.is_empty() {
            return (String::new(), false);
        }
        if !before.ends_with(escape) {
            return (before.to_string(), false);
        }
    }
    (line.to_string(), true)
}

fn is_comment(raw: &str) -> bool {
    raw.trim_start_matches(go_space).starts_with('#')
}

/// Splits `text` into lines as Go's `bufio.ScanLines` does (one trailing `\r` dropped).
fn scan_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') || text.is_empty() {
        lines.pop();
    }
    lines
        .into_iter()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect()
}

/// No NUL, no byte-order mark inside, no line longer than Docker reads.
fn check_lines(lines: &[&str]) -> Result<(), ParseError> {
    for (i, l) in lines.iter().enumerate() {
        if l.contains('\0') {
            return err(i + 1, "the Dockerfile contains a NUL character");
        }
        if l.contains('\u{feff}') {
            return err(
                i + 1,
                "the Dockerfile contains a byte-order mark (U+FEFF) inside it",
            );
        }
        if l.len() > MAX_LINE {
            return err(
                i + 1,
                format!("dockerfile line greater than max allowed size of {MAX_LINE}"),
            );
        }
    }
    Ok(())
}

/// The continuation lines of an instruction, appended to `line` until one does not
/// end with the escape character (comments skipped). Whether an empty continuation
/// line was among them.
fn continue_line<'t>(
    it: &mut impl Iterator<Item = &'t str>,
    d: &mut Directives,
    current: &mut usize,
    line: &mut String,
) -> Result<bool, ParseError> {
    let mut empty = false;
    for raw in it {
        d.possible(raw, *current + 1)?;
        let processed = if raw.starts_with('#') { "" } else { raw };
        *current += 1;
        if is_comment(raw) {
            continue;
        }
        if processed.trim_start_matches(go_space).is_empty() {
            empty = true;
            continue;
        }
        let (cont, end) = trim_continuation(processed, d.escape);
        line.push_str(&cont);
        if end {
            break;
        }
    }
    Ok(empty)
}

/// Parses a whole Dockerfile (Docker's `parser.Parse`). The text is refused if it
/// holds a NUL or a byte-order mark other than a leading one, or a line longer than
/// Docker reads.
pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = scan_lines(text);
    check_lines(&lines)?;
    let mut d = Directives {
        escape: '\\',
        done: false,
        seen: Vec::new(),
    };
    let mut nodes = Vec::new();
    let mut empty_continuations = Vec::new();
    let mut current = 0usize;
    let mut it = lines.into_iter();
    while let Some(raw) = it.next() {
        let trimmed = raw.trim_start_matches(go_space);
        d.possible(trimmed, current + 1)?;
        let processed = if trimmed.starts_with('#') {
            ""
        } else {
            trimmed
        };
        current += 1;
        let start = current;
        let (mut line, end) = trim_continuation(processed, d.escape);
        if end && line.is_empty() {
            continue;
        }
        let empty = !end && continue_line(&mut it, &mut d, &mut current, &mut line)?;
        if empty {
            empty_continuations.push(start);
        }
        let mut node = node_from_line(&line, d.escape).map_err(|m| ParseError {
            line: start,
            message: m,
        })?;
        node.start_line = start;
        node.end_line = current;
        nodes.push(node);
    }
    if nodes.is_empty() {
        return err(current.max(1), "file with no instructions");
    }
    Ok(Parsed {
        escape: d.escape,
        nodes,
        empty_continuations,
    })
}

/// `newNodeFromLine`: splits the instruction name, its flags and its arguments, and
/// applies the instruction's argument parser.
fn node_from_line(line: &str, escape: char) -> Result<Node, String> {
    let (command, flags, rest) = split_command(line)?;
    let (args, json) = match command.as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(&rest)?,
        "arg" => (parse_words(&rest, escape), false),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(&rest)?,
        "env" | "label" => (parse_name_val(&rest, &command, escape)?, false),
        "expose" | "from" => (whitespace_delimited(&rest), false),
        "healthcheck" => parse_health_config(&rest)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => (
            if rest.is_empty() {
                vec![]
            } else {
                vec![rest.clone()]
            },
            false,
        ),
        "onbuild" => {
            if rest.is_empty() {
                (vec![], false)
            } else {
                let child = node_from_line(&rest, escape)?;
                let mut args = vec![child.command];
                args.extend(child.args);
                (args, false)
            }
        }
        _ => (vec![], false),
    };
    Ok(Node {
        command,
        flags,
        args,
        json,
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
    })
}

/// `splitCommand`: the lower-case instruction name, the flags, the trimmed rest.
fn split_command(line: &str) -> Result<(String, Vec<String>, String), String> {
    let parts = split_re_space(line.trim(), true);
    let name = parts[0];
    if !name.is_ascii() {
        return Err(format!(
            "unknown instruction: {name} (instruction names are ASCII)"
        ));
    }
    let command = name.to_ascii_lowercase();
    let (rest, flags) = match parts.get(1) {
        Some(r) => extract_builder_flags(r)?,
        None => (String::new(), vec![]),
    };
    Ok((command, flags, rest.trim().to_string()))
}

/// Go's `unicode.IsSpace(rune(b))` for one byte, as `extractBuilderFlags` and
/// `parseHealthConfig` apply it byte by byte.
fn byte_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// `extractBuilderFlags`: the `--` words at the start of the arguments. Docker walks
/// bytes here; a non-ASCII byte inside the flags is refused (Go would re-encode it
/// and may even take part of a character for a space).
fn extract_builder_flags(line: &str) -> Result<(String, Vec<String>), String> {
    let b = line.as_bytes();
    let mut f = FlagWords::default();
    let mut pos = 0;
    while pos < b.len() {
        // Only the arguments after the flags may hold other bytes.
        let starts_args = f.phase == Phase::Spaces
            && !byte_space(b[pos])
            && (b[pos] != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-');
        if !starts_args && !b[pos].is_ascii() {
            return Err("non-ASCII characters in instruction flags are not supported".into());
        }
        let next = match f.phase {
            Phase::Spaces if byte_space(b[pos]) => Some(pos + 1),
            Phase::Spaces if b[pos] != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-' => None,
            Phase::Spaces => {
                f.phase = Phase::Word;
                Some(pos)
            }
            Phase::Word => f.in_word(b, pos)?,
            Phase::Quote => Some(f.in_quote(b, pos)?),
        };
        match next {
            Some(n) => pos = n,
            None => return Ok((line[pos..].to_string(), f.words)),
        }
    }
    if f.phase != Phase::Spaces && f.word != "--" && (f.blank_ok || !f.word.is_empty()) {
        f.words.push(f.word);
    }
    Ok((String::new(), f.words))
}

/// [`extract_builder_flags`]' state (bytes, all ASCII).
#[derive(Default)]
struct FlagWords {
    phase: Phase,
    quote: u8,
    blank_ok: bool,
    word: String,
    words: Vec<String>,
}

impl FlagWords {
    /// One byte of a flag word; the next position, or `None` where the arguments
    /// start (after a lone `--`).
    fn in_word(&mut self, b: &[u8], mut pos: usize) -> Result<Option<usize>, String> {
        let ch = b[pos];
        if byte_space(ch) {
            self.phase = Phase::Spaces;
            if self.word == "--" {
                return Ok(None);
            }
            if self.blank_ok || !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
            }
            self.blank_ok = false;
            return Ok(Some(pos + 1));
        }
        if ch == b'\'' || ch == b'"' {
            self.quote = ch;
            self.blank_ok = true;
            self.phase = Phase::Quote;
            return Ok(Some(pos + 1));
        }
        if ch == b'\\' {
            if pos + 1 == b.len() {
                return Ok(Some(pos + 1));
            }
            pos += 1;
        }
        self.push(b[pos])?;
        Ok(Some(pos + 1))
    }

    /// One byte in a quote; the next position.
    fn in_quote(&mut self, b: &[u8], mut pos: usize) -> Result<usize, String> {
        let ch = b[pos];
        if ch == self.quote {
            self.phase = Phase::Word;
            return Ok(pos + 1);
        }
        if ch == b'\\' {
            if pos + 1 == b.len() {
                self.phase = Phase::Word;
                return Ok(pos + 1);
            }
            pos += 1;
        }
        self.push(b[pos])?;
        Ok(pos + 1)
    }

    fn push(&mut self, c: u8) -> Result<(), String> {
        if !c.is_ascii() {
            return Err("non-ASCII characters in instruction flags are not supported".into());
        }
        self.word.push(c as char);
        Ok(())
    }
}

/// `parseWords`: space-separated words, quotes and escapes kept for the substitution.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut w = Words {
        escape,
        ..Words::default()
    };
    let mut pos = 0;
    while pos < chars.len() {
        pos = match w.phase {
            Phase::Spaces if go_space(chars[pos]) => pos + 1,
            Phase::Spaces => {
                w.phase = Phase::Word;
                pos
            }
            Phase::Word => w.in_word(&chars, pos),
            Phase::Quote => w.in_quote(&chars, pos),
        };
    }
    if w.phase != Phase::Spaces && (w.blank_ok || !w.word.is_empty()) {
        w.words.push(w.word);
    }
    w.words
}

/// Where a word scanner is: between words, in a word, in a quote.
#[derive(Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Spaces,
    Word,
    Quote,
}

/// [`parse_words`]' state.
#[derive(Default)]
struct Words {
    escape: char,
    phase: Phase,
    quote: char,
    blank_ok: bool,
    word: String,
    words: Vec<String>,
}

impl Words {
    /// One character of a word (quotes and escapes kept); the next position.
    fn in_word(&mut self, chars: &[char], mut pos: usize) -> usize {
        let mut ch = chars[pos];
        if go_space(ch) {
            self.phase = Phase::Spaces;
            if self.blank_ok || !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
            }
            self.blank_ok = false;
            return pos + 1;
        }
        if ch == '\'' || ch == '"' {
            self.quote = ch;
            self.blank_ok = true;
            self.phase = Phase::Quote;
        }
        if ch == self.escape {
            if pos + 1 == chars.len() {
                return pos + 1;
            }
            self.word.push(ch);
            pos += 1;
            ch = chars[pos];
        }
        self.word.push(ch);
        pos + 1
    }

    /// One character in a quote; the next position.
    fn in_quote(&mut self, chars: &[char], mut pos: usize) -> usize {
        let mut ch = chars[pos];
        if ch == self.quote {
            self.phase = Phase::Word;
        }
        if ch == self.escape && self.quote != '\'' {
            if pos + 1 == chars.len() {
                self.phase = Phase::Word;
                return pos + 1;
            }
            pos += 1;
            self.word.push(ch);
            ch = chars[pos];
        }
        self.word.push(ch);
        pos + 1
    }
}

/// `parseNameVal` (`ENV`, `LABEL`): `key=value ...`, or the old `KEY value` form.
/// The result alternates key, value.
fn parse_name_val(rest: &str, command: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(vec![]);
    }
    let key = command.to_ascii_uppercase();
    if !words[0].contains('=') {
        let parts = split_re_space(rest, true);
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        return Ok(vec![parts[0].to_string(), parts[1].to_string()]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            ));
        };
        out.push(k.to_string());
        out.push(v.to_string());
    }
    Ok(out)
}

fn whitespace_delimited(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return vec![];
    }
    split_re_space(rest, false)
        .into_iter()
        .map(str::to_string)
        .collect()
}

enum Json {
    Strings(Vec<String>),
    NotStrings,
    Invalid,
}

/// `parseJSON`: Go's decoder reads the first JSON value and ignores what follows.
fn parse_json(rest: &str) -> Json {
    let rest = rest.trim_start_matches(go_space);
    if !rest.starts_with('[') {
        return Json::Invalid;
    }
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    match stream.next() {
        Some(Ok(serde_json::Value::Array(items))) => {
            let mut out = Vec::new();
            for v in items {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Json::NotStrings,
                }
            }
            Json::Strings(out)
        }
        _ => Json::Invalid,
    }
}

const NOT_STRINGS: &str = "when using JSON array syntax, arrays must be comprised of strings only";

fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), String> {
    if rest.is_empty() {
        return Ok((vec![], false));
    }
    match parse_json(rest) {
        Json::Strings(v) => Ok((v, true)),
        Json::NotStrings => Err(NOT_STRINGS.into()),
        Json::Invalid => Ok((vec![rest.to_string()], false)),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), String> {
    match parse_json(rest) {
        Json::Strings(v) => Ok((v, true)),
        Json::NotStrings => Err(NOT_STRINGS.into()),
        Json::Invalid => Ok((whitespace_delimited(rest), false)),
    }
}

/// `parseHealthConfig`: the type word (`CMD`/`NONE`), then the command.
fn parse_health_config(rest: &str) -> Result<(Vec<String>, bool), String> {
    let b = rest.as_bytes();
    let sep = b.iter().position(|&c| byte_space(c)).unwrap_or(b.len());
    if sep == 0 {
        return Ok((vec![], false));
    }
    let next = sep + b[sep..].iter().take_while(|&&c| byte_space(c)).count();
    if !rest.is_char_boundary(sep) || !rest.is_char_boundary(next) {
        return Err("non-ASCII characters in HEALTHCHECK are not supported".into());
    }
    let (cmd, json) = parse_maybe_json(&rest[next..])?;
    let mut args = vec![rest[..sep].to_string()];
    args.extend(cmd);
    Ok((args, json))
}

// ----------------------------------------------------------------------------
// Typed instructions (Docker's `instructions.Parse`).

/// A flag an instruction accepts. `buildkit` flags are understood (so the check can
/// name them) but the legacy builder refuses them.
struct FlagSpec {
    name: &'static str,
    kind: FlagKind,
    buildkit: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    Bool,
    Str,
    Strings,
}

const fn flag(name: &'static str, kind: FlagKind, buildkit: bool) -> FlagSpec {
    FlagSpec {
        name,
        kind,
        buildkit,
    }
}

const RUN_FLAGS: &[FlagSpec] = &[
    flag("mount", FlagKind::Strings, true),
    flag("network", FlagKind::Str, true),
    flag("security", FlagKind::Str, true),
];
const ADD_FLAGS: &[FlagSpec] = &[
    flag("chown", FlagKind::Str, false),
    flag("chmod", FlagKind::Str, true),
    flag("checksum", FlagKind::Str, true),
    flag("keep-git-dir", FlagKind::Bool, true),
    flag("link", FlagKind::Bool, true),
];
const COPY_FLAGS: &[FlagSpec] = &[
    flag("chown", FlagKind::Str, false),
    flag("from", FlagKind::Str, false),
    flag("chmod", FlagKind::Str, true),
    flag("link", FlagKind::Bool, true),
    flag("parents", FlagKind::Bool, true),
    flag("exclude", FlagKind::Strings, true),
];
const FROM_FLAGS: &[FlagSpec] = &[flag("platform", FlagKind::Str, false)];
const HEALTH_FLAGS: &[FlagSpec] = &[
    flag("interval", FlagKind::Str, false),
    flag("timeout", FlagKind::Str, false),
    flag("start-period", FlagKind::Str, false),
    flag("retries", FlagKind::Str, false),
];

/// Flags given to one instruction, after Docker's `BFlags.Parse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags(pub Vec<(String, String)>);

impl Flags {
    /// The value of a single-valued flag.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable flag.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Flags that need BuildKit (understood, refused by the legacy builder).
fn buildkit_flags(specs: &[FlagSpec], flags: &Flags) -> Vec<String> {
    flags
        .0
        .iter()
        .filter(|(n, _)| specs.iter().any(|s| s.name == n && s.buildkit))
        .map(|(n, _)| n.clone())
        .collect()
}

fn parse_flags(words: &[String], specs: &[FlagSpec]) -> Result<Flags, String> {
    let mut out = Flags::default();
    for arg in words {
        let Some(a) = arg.strip_prefix("--") else {
            return Err(format!("Arg should start with -- : {arg}"));
        };
        if a.is_empty() {
            return Ok(out);
        }
        let (name, value) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (a, None),
        };
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            return Err(format!("Unknown flag: {name}"));
        };
        if spec.kind != FlagKind::Strings && out.get(name).is_some() {
            return Err(format!("Duplicate flag specified: {name}"));
        }
        let v = match spec.kind {
            FlagKind::Bool => match value {
                Some("") => return Err(format!("Missing a value on flag: {name}")),
                None => "true".to_string(),
                Some(v) if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") => {
                    v.to_ascii_lowercase()
                }
                Some(v) => {
                    return Err(format!("Expecting boolean value for flag {name}, not: {v}"))
                }
            },
            FlagKind::Str | FlagKind::Strings => match value {
                None => return Err(format!("Missing a value on flag: {name}")),
                Some(v) => v.to_string(),
            },
        };
        out.0.push((name.to_string(), v));
    }
    Ok(out)
}

/// A typed instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `FROM [--platform=P] IMAGE [AS NAME]`; the name in lower case.
    From {
        image: String,
        name: Option<String>,
        platform: Option<String>,
    },
    /// `ARG NAME[=DEFAULT] ...` (words with their quotes; substituted later).
    Arg(Vec<(String, Option<String>)>),
    /// `ENV`: key/value pairs (not yet substituted).
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    /// `USER user[:group]` (not yet substituted).
    User(String),
    Run {
        flags: Flags,
        /// BuildKit-only flags given.
        buildkit: Vec<String>,
        args: Vec<String>,
        json: bool,
    },
    Add {
        flags: Flags,
        buildkit: Vec<String>,
        /// Sources then destination, as written (substituted later).
        paths: Vec<String>,
    },
    Copy {
        flags: Flags,
        buildkit: Vec<String>,
        paths: Vec<String>,
    },
    /// `ONBUILD INSTR ...`: the trigger text Docker stores, and the trigger's name.
    Onbuild {
        expression: String,
        trigger: String,
    },
    /// `HEALTHCHECK NONE` (`none`) or `HEALTHCHECK [flags] CMD ...`.
    Healthcheck {
        none: bool,
    },
    Workdir(String),
    Cmd,
    Entrypoint,
    Expose,
    Volume,
    StopSignal,
    Shell,
    Maintainer,
}

/// A typed instruction with its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub kind: Kind,
    pub start_line: usize,
    pub end_line: usize,
    /// The logical line as written (continuations joined).
    pub original: String,
}

fn exactly_one(node: &Node, name: &str) -> Result<String, String> {
    if node.args.len() != 1 {
        return Err(format!("{name} requires exactly one argument"));
    }
    Ok(node.args[0].clone())
}

fn kvps(node: &Node, name: &str) -> Result<Vec<(String, String)>, String> {
    if node.args.is_empty() {
        return Err(format!("{name} requires at least one argument"));
    }
    if node.args.len() % 2 != 0 {
        return Err(format!("Bad input to {name}, too many arguments"));
    }
    let mut out = Vec::new();
    for pair in node.args.chunks(2) {
        if pair[0].is_empty() {
            return Err(format!("{name} names can not be blank"));
        }
        out.push((pair[0].clone(), pair[1].clone()));
    }
    Ok(out)
}

/// Go's `regexp` `(?i)^\s*ONBUILD\s*` removed from the original line.
fn strip_onbuild(original: &str) -> String {
    let s = original.trim_start_matches(perl_space);
    let s = if s.len() >= 7 && s[..7].eq_ignore_ascii_case("onbuild") {
        &s[7..]
    } else {
        s
    };
    s.trim_start_matches(perl_space).to_string()
}

/// Docker's `ParseInstruction` for one node.
pub fn instruction(node: &Node) -> Result<Instruction, String> {
    let kind = match node.command.as_str() {
        "add" | "copy" => kind_add_or_copy(node)?,
        "from" => kind_from(node)?,
        "onbuild" => kind_onbuild(node)?,
        "run" => kind_run(node)?,
        "healthcheck" => kind_healthcheck(node)?,
        "arg" => kind_arg(node)?,
        "shell" => kind_shell(node)?,
        "volume" => kind_volume(node)?,
        _ => kind_simple(node)?,
    };
    Ok(Instruction {
        kind,
        start_line: node.start_line,
        end_line: node.end_line,
        original: node.original.clone(),
    })
}

/// `ADD` and `COPY`: at least a source and a destination; their flags.
fn kind_add_or_copy(node: &Node) -> Result<Kind, String> {
    let add = node.command == "add";
    let name = if add { "ADD" } else { "COPY" };
    if node.args.len() < 2 {
        return Err(format!(
            "{name} requires at least two arguments, but only one was provided. \
             Destination could not be determined."
        ));
    }
    let specs = if add { ADD_FLAGS } else { COPY_FLAGS };
    let flags = parse_flags(&node.flags, specs)?;
    let buildkit = buildkit_flags(specs, &flags);
    let paths = node.args.clone();
    Ok(if add {
        Kind::Add {
            flags,
            buildkit,
            paths,
        }
    } else {
        Kind::Copy {
            flags,
            buildkit,
            paths,
        }
    })
}

/// `FROM image [AS name]`: a stage name Docker accepts; `--platform`.
fn kind_from(node: &Node) -> Result<Kind, String> {
    let name = match node.args.len() {
        3 if node.args[1].eq_ignore_ascii_case("as") => {
            let raw = &node.args[2];
            let n = raw.to_ascii_lowercase();
            let valid = n.starts_with(|c: char| c.is_ascii_lowercase())
                && n.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                });
            if !valid {
                return Err(format!(
                    "invalid name for build stage: {raw:?}, name can't start with a \
                     number or contain symbols"
                ));
            }
            Some(n)
        }
        1 => None,
        _ => return Err("FROM requires either one or three arguments".into()),
    };
    let flags = parse_flags(&node.flags, FROM_FLAGS)?;
    Ok(Kind::From {
        image: node.args[0].clone(),
        name,
        platform: flags.get("platform").map(str::to_string),
    })
}

/// `ONBUILD`: its trigger, never `ONBUILD`, `MAINTAINER` or `FROM`.
fn kind_onbuild(node: &Node) -> Result<Kind, String> {
    let no_flags = |n: &Node| parse_flags(&n.flags, &[]);
    if node.args.is_empty() {
        return Err("ONBUILD requires at least one argument".into());
    }
    no_flags(node)?;
    let trigger = node.args[0].trim().to_ascii_uppercase();
    match trigger.as_str() {
        "ONBUILD" => return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()),
        "MAINTAINER" | "FROM" => {
            return Err(format!("{trigger} isn't allowed as an ONBUILD trigger"))
        }
        _ => {}
    }
    Ok(Kind::Onbuild {
        expression: strip_onbuild(&node.original),
        trigger,
    })
}

/// `RUN`: its flags (BuildKit ones kept for the checks), its arguments.
fn kind_run(node: &Node) -> Result<Kind, String> {
    let flags = parse_flags(&node.flags, RUN_FLAGS)?;
    let buildkit = buildkit_flags(RUN_FLAGS, &flags);
    Ok(Kind::Run {
        flags,
        buildkit,
        args: node.args.clone(),
        json: node.json,
    })
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`.
fn kind_healthcheck(node: &Node) -> Result<Kind, String> {
    if node.args.is_empty() {
        return Err("HEALTHCHECK requires at least one argument".into());
    }
    let typ = node.args[0].to_ascii_uppercase();
    Ok(if typ == "NONE" {
        if node.args.len() != 1 {
            return Err("HEALTHCHECK NONE takes no arguments".into());
        }
        Kind::Healthcheck { none: true }
    } else {
        parse_flags(&node.flags, HEALTH_FLAGS)?;
        if typ != "CMD" {
            return Err(format!(
                "Unknown type {:?} in HEALTHCHECK (try CMD)",
                node.args[0].to_ascii_uppercase()
            ));
        }
        if node.args.len() < 2 {
            return Err("Missing command after HEALTHCHECK CMD".into());
        }
        Kind::Healthcheck { none: false }
    })
}

/// `VOLUME`: at least one, none empty.
fn kind_volume(node: &Node) -> Result<Kind, String> {
    let no_flags = |n: &Node| parse_flags(&n.flags, &[]);
    if node.args.is_empty() {
        return Err("VOLUME requires at least one argument".into());
    }
    no_flags(node)?;
    if node.args.iter().any(|v| v.trim().is_empty()) {
        return Err("VOLUME specified can not be an empty string".into());
    }
    Ok(Kind::Volume)
}

/// `ARG name[=default] ...`: names never blank.
fn kind_arg(node: &Node) -> Result<Kind, String> {
    if node.args.is_empty() {
        return Err("ARG requires at least one argument".into());
    }
    let mut pairs = Vec::new();
    for a in &node.args {
        match a.split_once('=') {
            Some(("", _)) => return Err("ARG names can not be blank".into()),
            Some((k, v)) => pairs.push((k.to_string(), Some(v.to_string()))),
            None => pairs.push((a.clone(), None)),
        }
    }
    Ok(Kind::Arg(pairs))
}

/// `SHELL ["executable", ...]`: JSON form only.
fn kind_shell(node: &Node) -> Result<Kind, String> {
    let no_flags = |n: &Node| parse_flags(&n.flags, &[]);
    no_flags(node)?;
    if node.args.is_empty() {
        return Err("SHELL requires at least one argument".into());
    }
    if !node.json {
        return Err(format!(
            "SHELL requires the arguments to be in JSON form: {}",
            node.original
        ));
    }
    Ok(Kind::Shell)
}

/// The instructions with no more than a count of arguments and no flags.
fn kind_simple(node: &Node) -> Result<Kind, String> {
    let no_flags = |n: &Node| parse_flags(&n.flags, &[]);
    Ok(match node.command.as_str() {
        "env" => {
            no_flags(node)?;
            Kind::Env(kvps(node, "ENV")?)
        }
        "label" => {
            no_flags(node)?;
            Kind::Label(kvps(node, "LABEL")?)
        }
        "maintainer" => {
            exactly_one(node, "MAINTAINER")?;
            no_flags(node)?;
            Kind::Maintainer
        }
        "workdir" => {
            let p = exactly_one(node, "WORKDIR")?;
            no_flags(node)?;
            Kind::Workdir(p)
        }
        "cmd" => {
            no_flags(node)?;
            Kind::Cmd
        }
        "entrypoint" => {
            no_flags(node)?;
            Kind::Entrypoint
        }
        "expose" => {
            if node.args.is_empty() {
                return Err("EXPOSE requires at least one argument".into());
            }
            no_flags(node)?;
            Kind::Expose
        }
        "user" => {
            let u = exactly_one(node, "USER")?;
            no_flags(node)?;
            Kind::User(u)
        }
        "stopsignal" => {
            exactly_one(node, "STOPSIGNAL")?;
            Kind::StopSignal
        }
        other => {
            return Err(format!(
                "unknown instruction: {}",
                other.to_ascii_uppercase()
            ))
        }
    })
}

/// A parsed and typed Dockerfile: the `ARG`s before the first `FROM`, then the stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub escape: char,
    pub meta_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
    pub empty_continuations: Vec<usize>,
}

/// One stage: its `FROM` and the instructions after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub from: Instruction,
    pub commands: Vec<Instruction>,
}

/// Parses and types a whole Dockerfile (Docker's `parser.Parse` then
/// `instructions.Parse`); the first error stops it, as it stops Docker.
pub fn dockerfile(text: &str) -> Result<Dockerfile, ParseError> {
    let parsed = parse(text)?;
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &parsed.nodes {
        let ins = instruction(node).map_err(|m| ParseError {
            line: node.start_line,
            message: m,
        })?;
        if stages.is_empty() && matches!(ins.kind, Kind::Arg(_)) {
            meta_args.push(ins);
            continue;
        }
        if matches!(ins.kind, Kind::From { .. }) {
            stages.push(Stage {
                from: ins,
                commands: vec![],
            });
            continue;
        }
        match stages.last_mut() {
            Some(s) => s.commands.push(ins),
            None => {
                return err(
                    node.start_line,
                    "no build stage in current context (the first instruction must be \
                     FROM, after ARGs only)",
                )
            }
        }
    }
    Ok(Dockerfile {
        escape: parsed.escape,
        meta_args,
        stages,
        empty_continuations: parsed.empty_continuations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(text: &str) -> Vec<Node> {
        parse(text).unwrap().nodes
    }

    fn cmds(text: &str) -> Vec<(String, usize, Vec<String>)> {
        nodes(text)
            .into_iter()
            .map(|n| (n.command, n.start_line, n.args))
            .collect()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn instructions_are_case_insensitive_and_lines_are_one_based() {
        let c = cmds("from alpine\n\n  UsEr nobody\nRun echo hi\n");
        assert_eq!(
            c,
            vec![
                ("from".into(), 1, s(&["alpine"])),
                ("user".into(), 3, s(&["nobody"])),
                ("run".into(), 4, s(&["echo hi"])),
            ]
        );
    }

    #[test]
    fn continuations_skip_comments_and_empty_lines_without_ending() {
        let p =
            parse("FROM a\nRUN echo \\\n# a comment \\\n\n   \nUSER root\nUSER nobody\n").unwrap();
        let c: Vec<_> = p
            .nodes
            .iter()
            .map(|n| (n.command.clone(), n.start_line, n.end_line))
            .collect();
        assert_eq!(
            c,
            vec![
                ("from".into(), 1, 1),
                ("run".into(), 2, 6),
                ("user".into(), 7, 7)
            ]
        );
        assert_eq!(p.nodes[1].args, s(&["echo USER root"]));
        assert_eq!(p.empty_continuations, vec![2]);
    }

    #[test]
    fn an_escaped_escape_does_not_continue() {
        let c = cmds("FROM a\nRUN echo \\\\\nUSER root\n");
        assert_eq!(c[1].2, s(&["echo \\\\"]));
        assert_eq!(c[2].0, "user");
        // a continuation token with trailing blanks still continues
        let c = cmds("FROM a\nRUN echo \\ \t\nUSER root\n");
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].2, s(&["echo USER root"]));
        // a lone continuation token
        let c = cmds("FROM a\nRUN echo\\\n\\\n x\n");
        assert_eq!(c[1].2, s(&["echo x"]));
    }

    #[test]
    fn the_escape_directive_changes_the_continuation_token() {
        let p = parse("# escape=`\nFROM a\nRUN dir c:\\ `\n  && echo\nUSER x\n").unwrap();
        assert_eq!(p.escape, '`');
        assert_eq!(p.nodes[1].args, s(&["dir c:\\   && echo"]));
        assert_eq!(p.nodes[2].start_line, 5);
        // a backslash at the end no longer continues
        let p = parse("#escape=`\nFROM a\nRUN echo \\\nUSER root\n").unwrap();
        assert_eq!(p.nodes.len(), 3);
    }

    #[test]
    fn directives_only_at_the_top() {
        // after a comment, escape= is a plain comment
        let p = parse("# hello\n# escape=`\nFROM a\nRUN x \\\nUSER root\n").unwrap();
        assert_eq!(p.escape, '\\');
        assert_eq!(p.nodes.len(), 2);
        // after an empty line too
        let p = parse("\n# escape=`\nFROM a\n").unwrap();
        assert_eq!(p.escape, '\\');
        assert!(parse("# escape=`\n# escape=\\\nFROM a\n").is_err());
        assert!(parse("# escape=x\nFROM a\n").is_err());
        let p = parse("# syntax=docker/dockerfile:1\n# ESCAPE = `\nFROM a\n").unwrap();
        assert_eq!(p.escape, '`');
        // an unknown directive ends the directives
        let p = parse("# foo=bar\n# escape=`\nFROM a\n").unwrap();
        assert_eq!(p.escape, '\\');
    }

    #[test]
    fn flags_are_extracted_with_quotes() {
        let n = nodes("FROM --platform=linux/amd64 alpine AS b\nRUN --mount=type=cache,target=/x \"--network\"=host echo\nCOPY --from='b' --chown=1:1 a b\nRUN -- --mount=x\n");
        assert_eq!(n[0].flags, s(&["--platform=linux/amd64"]));
        assert_eq!(n[0].args, s(&["alpine", "AS", "b"]));
        assert_eq!(n[1].flags, s(&["--mount=type=cache,target=/x"]));
        assert_eq!(n[1].args, s(&["\"--network\"=host echo"]));
        assert_eq!(n[2].flags, s(&["--from=b", "--chown=1:1"]));
        assert_eq!(n[3].flags, Vec::<String>::new());
        assert_eq!(n[3].args, s(&["--mount=x"]));
    }

    #[test]
    fn json_and_shell_forms() {
        let n = nodes("FROM a\nRUN [\"echo\", \"hi\"]\nRUN [\"echo\", hi]\nCMD [\"a\"] trailing\nCOPY [\"a b\", \"/c\"]\nADD x y z\n");
        assert_eq!((n[1].args.clone(), n[1].json), (s(&["echo", "hi"]), true));
        assert_eq!(
            (n[2].args.clone(), n[2].json),
            (s(&["[\"echo\", hi]"]), false)
        );
        assert_eq!((n[3].args.clone(), n[3].json), (s(&["a"]), true));
        assert_eq!(n[4].args, s(&["a b", "/c"]));
        assert_eq!(n[5].args, s(&["x", "y", "z"]));
        let e = parse("FROM a\nRUN [1]\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("strings only"));
    }

    #[test]
    fn env_and_arg_words() {
        let n = nodes(
            "FROM a\nENV A=1 B=\"x y\" C='$z'\nENV OLD some value\nARG U=root V\nLABEL a=b\n",
        );
        assert_eq!(n[1].args, s(&["A", "1", "B", "\"x y\"", "C", "'$z'"]));
        assert_eq!(n[2].args, s(&["OLD", "some value"]));
        assert_eq!(n[3].args, s(&["U=root", "V"]));
        assert!(parse("FROM a\nENV A=1 B\n").is_err());
        assert!(parse("FROM a\nENV A\n").is_err());
    }

    #[test]
    fn typed_instructions_and_their_errors() {
        let d = dockerfile("ARG V=1\nFROM --platform=linux/amd64 alpine:$V AS Build\nUSER nobody\nONBUILD RUN echo\nHEALTHCHECK NONE\n").unwrap();
        assert_eq!(d.meta_args.len(), 1);
        assert_eq!(
            d.stages[0].from.kind,
            Kind::From {
                image: "alpine:$V".into(),
                name: Some("build".into()),
                platform: Some("linux/amd64".into())
            }
        );
        assert_eq!(
            d.stages[0].commands[1].kind,
            Kind::Onbuild {
                expression: "RUN echo".into(),
                trigger: "RUN".into()
            }
        );
        let bad = |t: &str, line: usize, msg: &str| {
            let e = dockerfile(t).unwrap_err();
            assert_eq!(e.line, line, "{t:?}: {e}");
            assert!(e.message.contains(msg), "{t:?}: {e}");
        };
        bad("RUN x\n", 1, "no build stage");
        bad("FROM a\nFOO bar\n", 2, "unknown instruction: FOO");
        bad("FROM a\nUSER\n", 2, "exactly one");
        bad("FROM a b\n", 1, "one or three");
        bad("FROM a AS 1x\n", 1, "invalid name");
        bad("FROM a\nRUN --foo x\n", 2, "Unknown flag: foo");
        bad("FROM a\nUSER --x=1 root\n", 2, "Unknown flag: x");
        bad("FROM a\nONBUILD ONBUILD RUN x\n", 2, "Chaining");
        bad("FROM a\nONBUILD FROM b\n", 2, "isn't allowed");
        bad("FROM a\nCOPY x\n", 2, "at least two");
        bad("FROM a\nCOPY --from=a --from=b x y\n", 2, "Duplicate flag");
        bad("FROM a\nSHELL sh -c\n", 2, "JSON");
        bad("FROM a\nHEALTHCHECK FOO x\n", 2, "Unknown type");
        bad("FROM a\nARG =x\n", 2, "blank");
        bad("", 1, "no instructions");
        bad("# only a comment\n", 1, "no instructions");
        bad("FROM a\nWORKDİR /x\n", 2, "unknown instruction");
        bad("FROM a\nRUN --mount=é x\n", 2, "non-ASCII");
        bad("FROM a\nUSER a\0\n", 2, "NUL");
    }

    #[test]
    fn crlf_and_bom() {
        let c = cmds("\u{feff}FROM a\r\nUSER root\r\n");
        assert_eq!(c[1].2, s(&["root"]));
    }

    #[test]
    fn onbuild_keeps_the_trigger_text() {
        let d = dockerfile("FROM a\n  onbuild   USER $X\n").unwrap();
        assert_eq!(
            d.stages[0].commands[0].kind,
            Kind::Onbuild {
                expression: "USER $X".into(),
                trigger: "USER".into()
            }
        );
    }
}

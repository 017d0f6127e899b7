//! The static check of a submitted Dockerfile, before anything is built: pure, no I/O.
//!
//! `urund` calls [`check`] with the Dockerfile text, the build's arguments, the policy's
//! answer to "may this image be used?" and the facts it knows about local base images;
//! it gets a [`Report`]: findings (each with a stable rule id, the Dockerfile line, a
//! one-line message and a severity: an error refuses the build, a warning is printed
//! and recorded) and the facts it needs for the rest of the build and the audit record
//! (stages, the images used, the final user).
//!
//! # What is checked, and why
//! The rules are listed once, in [`RULES`] (id, default severity, whether the policy may
//! change it). The two seed rules of an audited build server, "at least one `USER`" and
//! "the last `USER` is not root / uid 0" (`user.missing`, `user.root`), and `parse.error`
//! cannot be lowered or turned off; the policy may raise or lower every other rule.
//!
//! - `user.missing`: no `USER` in the final stage, following the chain of stages it is
//!   built on (`FROM builder` inherits `builder`'s `USER`, as Docker does).
//! - `user.root`: the last `USER` of that chain is root: the user part (before the first
//!   `:`) is empty (`USER :0`, or a variable that expands to nothing), `root`, or a
//!   number Go's `strconv.Atoi` reads as 0 (`0`, `00`, `+0`, `-0`); `0:…`, `root:…`
//!   included. The value is the one Docker uses: `ARG`/`ENV` substitution as the legacy
//!   builder does it ([`lex`]), with `--build-arg` values, `ARG` defaults and the
//!   global `ARG`s. A user given by *name* cannot be resolved to a uid here: only
//!   `root` is caught by name; any other name is checked on the built image by `urund`,
//!   through the image's own `/etc/passwd`.
//! - `user.unresolved`: the `USER` value depends on a variable the Dockerfile does not
//!   define and the check cannot see (the base image's `ENV`, when `urund` did not
//!   supply it through [`CheckInput::base_image`]).
//! - `user.root-group` (warning): the group part is `root` or 0.
//! - `from.not-allowed`: a `FROM` image, after substitution of the global `ARG`s, that
//!   is neither `scratch` nor an earlier stage's name and that the policy does not allow.
//!   As in the legacy builder, `FROM 0` names an image, not stage 0.
//! - `copy.from`: `COPY --from=X` where X is not an earlier stage (name, or index as
//!   `strconv.ParseInt` reads it) and the policy does not allow the image X. The legacy
//!   builder does not substitute variables in `--from`; neither does the check.
//! - `run.mount`, `run.network`, `run.security`: `RUN --mount=…` (every type: cache,
//!   secret and ssh share state or secrets between builds, and the legacy builder runs
//!   none of them), `RUN --network=…`, `RUN --security=…`.
//! - `add.url`: `ADD` of an `http(s)://` URL or a git URL when the build has no network.
//! - `flag.buildkit`: other flags only BuildKit understands (`--chmod`, `ADD --checksum`,
//!   `ADD --keep-git-dir`, `--link`, `COPY --parents`, `COPY --exclude`).
//! - `heredoc`: `RUN <<EOF`, `COPY <<EOF …`: heredocs are BuildKit syntax; the legacy
//!   builder that `urund` drives reads the lines after them as instructions of their
//!   own (and so does this parser: nothing can hide in a heredoc body).
//! - `onbuild` (warning): `ONBUILD` registers triggers for whoever builds on the image.
//!   Triggers registered in an earlier stage run when a later stage is built `FROM` it
//!   (as Docker runs them), and are checked there like any instruction; triggers of a
//!   base image run too when `urund` supplied them in [`BaseImage::onbuild`].
//! - `healthcheck.missing` (warning): the final image has no `HEALTHCHECK` (an
//!   explicit `HEALTHCHECK NONE` is a choice, not a finding).
//! - `continuation.empty` (warning): an empty line inside a continued instruction, which
//!   does **not** end it (the next line still belongs to it).
//! - `parse.error`: anything the legacy builder would refuse to parse (unknown
//!   instruction, bad flags, a bad `--target`, …), and anything this check refuses
//!   rather than guess (a NUL, non-ASCII characters where Docker applies Unicode case
//!   rules).
//!
//! Only the stages the build runs are checked: with `--target`, the stages up to and
//! including the target (the legacy builder builds all of them, in order); stages after
//! it are parsed (a parse error anywhere still refuses) but not built.
//!
//! # References
//! The parser and the substitution are ports of the buildkit v0.8 Dockerfile frontend
//! vendored in `dockerd` 20.10 (`frontend/dockerfile/parser`, `instructions`, `shell`);
//! the evaluation follows `builder/dockerfile` of moby 20.10 (`dispatchers.go`,
//! `evaluator.go`, `buildargs.go`); root detection follows `GetExecUser` of
//! `moby/sys/user` (libcontainer), which Docker uses to resolve an image's user; the
//! Dockerfile reference (<https://docs.docker.com/reference/dockerfile/>).
#![forbid(unsafe_code)]

pub mod lex;
pub mod parse;

use lex::{Expanded, Lookup};
use parse::{Flags, Instruction, Kind};
use std::collections::BTreeMap;
use std::fmt;

/// How a finding counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Not reported (a policy choice; never for the fixed rules).
    Off,
    /// Printed and recorded; the build goes on.
    Warning,
    /// Refuses the build (exit status 125).
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Off => "off",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    /// Reads `off`, `warning` or `error` (the policy file's words).
    pub fn from_name(s: &str) -> Option<Severity> {
        match s {
            "off" => Some(Severity::Off),
            "warning" => Some(Severity::Warning),
            "error" => Some(Severity::Error),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A check rule. Its stable id is [`Rule::id`]; see [`RULES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    ParseError,
    UserMissing,
    UserRoot,
    UserUnresolved,
    UserRootGroup,
    FromNotAllowed,
    CopyFrom,
    RunMount,
    RunNetwork,
    RunSecurity,
    AddUrl,
    FlagBuildkit,
    Heredoc,
    Onbuild,
    HealthcheckMissing,
    ContinuationEmpty,
}

/// One row of the rule table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo {
    pub rule: Rule,
    /// Stable id, used in messages, the audit record and the policy.
    pub id: &'static str,
    pub default: Severity,
    /// The policy cannot lower or turn off this rule.
    pub fixed: bool,
    /// What it checks, in a few words.
    pub what: &'static str,
}

const fn row(
    rule: Rule,
    id: &'static str,
    default: Severity,
    fixed: bool,
    what: &'static str,
) -> RuleInfo {
    RuleInfo {
        rule,
        id,
        default,
        fixed,
        what,
    }
}

/// Every rule, once: id, default severity, whether it is fixed.
pub const RULES: &[RuleInfo] = &[
    row(
        Rule::ParseError,
        "parse.error",
        Severity::Error,
        true,
        "the Dockerfile does not parse as the legacy builder reads it",
    ),
    row(
        Rule::UserMissing,
        "user.missing",
        Severity::Error,
        true,
        "no USER in the final stage or the stages it is built on",
    ),
    row(
        Rule::UserRoot,
        "user.root",
        Severity::Error,
        true,
        "the last USER is root or uid 0",
    ),
    row(
        Rule::UserUnresolved,
        "user.unresolved",
        Severity::Error,
        false,
        "the last USER depends on a variable the check cannot see",
    ),
    row(
        Rule::UserRootGroup,
        "user.root-group",
        Severity::Warning,
        false,
        "the last USER's group is root or gid 0",
    ),
    row(
        Rule::FromNotAllowed,
        "from.not-allowed",
        Severity::Error,
        false,
        "a FROM image the policy does not allow",
    ),
    row(
        Rule::CopyFrom,
        "copy.from",
        Severity::Error,
        false,
        "COPY --from an image the policy does not allow",
    ),
    row(
        Rule::RunMount,
        "run.mount",
        Severity::Error,
        false,
        "RUN --mount (cache, secret, ssh, any type)",
    ),
    row(
        Rule::RunNetwork,
        "run.network",
        Severity::Error,
        false,
        "RUN --network",
    ),
    row(
        Rule::RunSecurity,
        "run.security",
        Severity::Error,
        false,
        "RUN --security",
    ),
    row(
        Rule::AddUrl,
        "add.url",
        Severity::Error,
        false,
        "ADD of a URL when the build has no network",
    ),
    row(
        Rule::FlagBuildkit,
        "flag.buildkit",
        Severity::Error,
        false,
        "a flag only BuildKit understands",
    ),
    row(
        Rule::Heredoc,
        "heredoc",
        Severity::Error,
        false,
        "a heredoc (BuildKit syntax)",
    ),
    row(
        Rule::Onbuild,
        "onbuild",
        Severity::Warning,
        false,
        "ONBUILD triggers",
    ),
    row(
        Rule::HealthcheckMissing,
        "healthcheck.missing",
        Severity::Warning,
        false,
        "no HEALTHCHECK in the final image",
    ),
    row(
        Rule::ContinuationEmpty,
        "continuation.empty",
        Severity::Warning,
        false,
        "an empty line inside a continued instruction",
    ),
];

impl Rule {
    pub fn info(self) -> &'static RuleInfo {
        RULES
            .iter()
            .find(|r| r.rule == self)
            .expect("every rule has a row")
    }

    pub fn id(self) -> &'static str {
        self.info().id
    }

    /// The rule with this id.
    pub fn from_id(id: &str) -> Option<Rule> {
        RULES.iter().find(|r| r.id == id).map(|r| r.rule)
    }

    /// The severity in force: the policy's override, except that a fixed rule is never
    /// below its default.
    pub fn severity(self, overrides: &BTreeMap<Rule, Severity>) -> Severity {
        let info = self.info();
        match overrides.get(&self) {
            Some(&s) if info.fixed => s.max(info.default),
            Some(&s) => s,
            None => info.default,
        }
    }
}

/// For the policy loader: whether the policy may set `rule` to `severity` (a fixed
/// rule cannot be lowered or turned off). The message names the rule.
pub fn validate_override(rule: Rule, severity: Severity) -> Result<(), String> {
    let info = rule.info();
    if info.fixed && severity < info.default {
        return Err(format!(
            "the Dockerfile rule {} cannot be set to {severity}: it is always an {}",
            info.id, info.default
        ));
    }
    Ok(())
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// What `urund` knows about a base image present on the build engine (from its
/// inspection), so the check can follow what Docker will do with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImage {
    /// `Config.Env`, as Docker stores it (`NAME=value` entries, in order).
    pub env: Vec<String>,
    /// `Config.OnBuild`: triggers Docker runs right after `FROM` this image.
    pub onbuild: Vec<String>,
    /// Whether the image has a `HEALTHCHECK` (other than `NONE`).
    pub healthcheck: bool,
}

/// What the check needs besides the Dockerfile.
pub struct CheckInput<'a> {
    /// `--build-arg NAME=value` (a bare `--build-arg NAME` is resolved from the
    /// client's environment by the client, and left out when unset, as docker does).
    pub build_args: &'a BTreeMap<String, String>,
    /// `--target`: the stage to stop at (by name, case-insensitive).
    pub target: Option<&'a str>,
    /// Whether the build's `RUN`/`ADD` steps have network access.
    pub network: bool,
    /// The policy's judgement of an image reference, as written after substitution
    /// (never called for `scratch` or a stage).
    pub image_allowed: &'a dyn Fn(&str) -> bool,
    /// Facts about an external base image, when `urund` has them; `None` makes every
    /// variable the Dockerfile does not define unknown in stages built on that image.
    pub base_image: &'a dyn Fn(&str) -> Option<BaseImage>,
    /// Per-rule severities from the policy (see [`validate_override`]).
    pub severity: &'a BTreeMap<Rule, Severity>,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    pub severity: Severity,
    /// 1-based line of the instruction in the Dockerfile.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {} [{}] {}",
            self.line, self.severity, self.rule, self.message
        )
    }
}

/// What a stage is built on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseRef {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image reference, as written after substitution.
    Image(String),
}

/// One stage the build runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageFact {
    pub index: usize,
    /// Lower-case name (`AS name`).
    pub name: Option<String>,
    /// Line of its `FROM`.
    pub line: usize,
    /// The `FROM` argument as written.
    pub from: String,
    /// What it resolved to (after substitution).
    pub base: BaseRef,
}

/// How an external image is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    From,
    CopyFrom,
}

/// An external image the build uses (and so the engine may need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    pub line: usize,
    pub stage: usize,
    pub reference: String,
    pub via: Via,
    /// Whether the policy allowed it.
    pub allowed: bool,
}

/// The final stage's user, as the check resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFact {
    /// Line of the `USER` instruction (possibly in an earlier stage of the chain).
    pub line: usize,
    /// The value after substitution; `None` when it could not be determined.
    pub value: Option<String>,
}

/// Facts for `urund` and the audit record. Empty when the Dockerfile does not parse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The stages the build runs, in order (up to the target).
    pub stages: Vec<StageFact>,
    /// Index of the final stage (the target, or the last one).
    pub final_stage: Option<usize>,
    /// The external image at the root of the final stage's chain (`None` for
    /// `scratch`, or when the Dockerfile does not parse).
    pub final_base: Option<String>,
    /// Every external image the built stages use (`FROM` and `COPY --from`).
    pub images: Vec<ImageUse>,
    /// The final stage's last `USER` (following its chain), if any.
    pub final_user: Option<UserFact>,
    /// The escape token in force (`\` or `` ` ``).
    pub escape: char,
}

/// The outcome of the check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// In Dockerfile order (by line, then rule).
    pub findings: Vec<Finding>,
    pub facts: Facts,
}

impl Report {
    /// Whether any finding refuses the build.
    pub fn refused(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
    }
}

/// Go's `strconv.Atoi`: optional sign, decimal digits, within 64 bits.
pub(crate) fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

/// Whether a `USER` value makes the container run as root, as `GetExecUser` reads it:
/// the user part (before the first `:`) empty, `root`, or numerically 0.
pub fn is_root_user(spec: &str) -> bool {
    let user = spec.split(':').next().unwrap_or("");
    user.is_empty() || user == "root" || go_atoi(user) == Some(0)
}

/// Whether the group part of a `USER` value is `root` or numerically 0.
pub fn is_root_group(spec: &str) -> bool {
    spec.split(':')
        .nth(1)
        .is_some_and(|g| g == "root" || go_atoi(g) == Some(0))
}

/// Docker's `urlutil.IsURL` (what `ADD` downloads) and `IsGitURL`.
fn url_kind(src: &str) -> Option<&'static str> {
    if src.starts_with("http://") || src.starts_with("https://") {
        let path = src.split('#').next().unwrap_or(src);
        return Some(if path.ends_with(".git") {
            "git URL"
        } else {
            "URL"
        });
    }
    if ["git://", "github.com/", "git@"]
        .iter()
        .any(|p| src.starts_with(p))
    {
        return Some("git URL");
    }
    None
}

/// Whether a shell-form command or a source opens a heredoc (`<<EOF`, `<<-"EOF"`),
/// not a here-string (`<<<`).
fn has_heredoc(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(off) = s[i..].find("<<") {
        let at = i + off;
        let before_lt = at > 0 && b[at - 1] == b'<';
        let mut j = at + 2;
        if j < b.len() && b[j] == b'<' {
            i = j + 1;
            continue;
        }
        if j < b.len() && b[j] == b'-' {
            j += 1;
        }
        if j < b.len() && (b[j] == b'"' || b[j] == b'\'') {
            j += 1;
        }
        if !before_lt && j < b.len() && (b[j].is_ascii_alphabetic() || b[j] == b'_') {
            return true;
        }
        i = at + 2;
    }
    false
}

const HEREDOC: &str = "heredocs (<<EOF) need BuildKit; the legacy builder urun uses reads the \
     lines after this instruction as instructions of their own";

/// Docker's built-in build args, usable without an `ARG` declaration.
const BUILTIN_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// One entry of a stage's environment (Docker's `runConfig.Env`).
#[derive(Debug, Clone)]
enum EnvEntry {
    /// `NAME=value`, as Docker stores it.
    Known(String),
    /// A name whose value the check cannot see.
    UnknownValue { key: String, why: String },
    /// An `ENV` whose name the check cannot see: any name may be set.
    Poison(String),
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// Where a `USER` came from.
#[derive(Debug, Clone)]
struct UserSet {
    value: Expanded,
    line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Yes,
    No,
    /// `HEALTHCHECK NONE` in the Dockerfile: switched off on purpose, no warning.
    Disabled,
    Unknown,
}

/// An `ONBUILD` trigger waiting to run: its text and where it came from.
#[derive(Debug, Clone)]
struct Trigger {
    expression: String,
    line: usize,
    from_image: bool,
}

/// The state of a stage while its instructions are followed (Docker's
/// `dispatchState`: the run config's `Env`, `User`, `OnBuild`, health check, and the
/// stage's declared `ARG`s).
#[derive(Debug, Clone)]
struct StageState {
    name: Option<String>,
    root: Option<String>,
    base_env_known: bool,
    env: Vec<EnvEntry>,
    user: Option<UserSet>,
    onbuild: Vec<Trigger>,
    health: Health,
    /// `ARG`s declared in this stage (Docker's `allowedBuildArgs`).
    allowed: BTreeMap<String, Option<Expanded>>,
    /// An `ARG` whose name could not be determined.
    allowed_poison: Option<String>,
}

/// Where the instruction being dispatched came from, for findings.
#[derive(Clone, Copy)]
struct Origin<'t> {
    line: usize,
    /// The trigger text, when the instruction is an `ONBUILD` trigger.
    trigger: Option<&'t str>,
}

impl Origin<'_> {
    fn prefix(&self) -> String {
        match self.trigger {
            Some(t) => format!("ONBUILD trigger {t:?}: "),
            None => String::new(),
        }
    }
}

struct Checker<'a, 'i> {
    input: &'a CheckInput<'i>,
    escape: char,
    findings: Vec<Finding>,
    /// Global `ARG`s (Docker's `allowedMetaArgs`), substituted.
    meta: BTreeMap<String, Option<String>>,
    /// Finished stages (Docker's `stagesBuildResults`).
    done: Vec<StageState>,
    facts: Facts,
}

/// Checks a Dockerfile. See the module documentation for the rules.
#[must_use]
pub fn check(dockerfile_text: &str, input: &CheckInput<'_>) -> Report {
    let mut c = Checker {
        input,
        escape: '\\',
        findings: Vec::new(),
        meta: BTreeMap::new(),
        done: Vec::new(),
        facts: Facts {
            escape: '\\',
            ..Facts::default()
        },
    };
    match parse::dockerfile(dockerfile_text) {
        Err(e) => {
            c.report(Rule::ParseError, e.line, e.message);
            // A heredoc body read as instructions is the usual cause: say so too.
            if let Ok(p) = parse::parse(dockerfile_text) {
                for n in &p.nodes {
                    let heredoc = match n.command.as_str() {
                        "run" => !n.json && n.args.first().is_some_and(|a| has_heredoc(a)),
                        "add" | "copy" => n.args.iter().any(|a| a.starts_with("<<")),
                        _ => false,
                    };
                    if heredoc {
                        c.report(Rule::Heredoc, n.start_line, HEREDOC.into());
                    }
                }
            }
        }
        Ok(df) => c.run(&df),
    }
    let mut findings = c.findings;
    findings.sort_by_key(|f| (f.line, f.rule));
    findings.dedup();
    Report {
        findings,
        facts: c.facts,
    }
}

impl Checker<'_, '_> {
    fn report(&mut self, rule: Rule, line: usize, message: String) {
        let severity = rule.severity(self.input.severity);
        if severity != Severity::Off {
            self.findings.push(Finding {
                rule,
                severity,
                line,
                message,
            });
        }
    }

    /// A build arg's value (Docker's `getBuildArg`): `--build-arg` first, then the
    /// declaration's default, then the global `ARG`'s value.
    fn build_arg(
        &self,
        key: &str,
        mapping: &BTreeMap<String, Option<Expanded>>,
    ) -> Option<Expanded> {
        if let Some(v) = self.input.build_args.get(key) {
            return Some(Expanded::Known(v.clone()));
        }
        match mapping.get(key) {
            Some(Some(v)) => Some(v.clone()),
            _ => self.meta.get(key).cloned().flatten().map(Expanded::Known),
        }
    }

    /// Lookup for `FROM` and global `ARG`s: Docker's `GetAllMeta`/`GetAllAllowed` of
    /// the global args (declared global `ARG`s and the built-in proxy args).
    fn meta_lookup(&self, name: &str) -> Lookup {
        if !self.meta.contains_key(name) && !BUILTIN_ARGS.contains(&name) {
            return Lookup::Unset;
        }
        let mapping: BTreeMap<String, Option<Expanded>> = self
            .meta
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().map(Expanded::Known)))
            .collect();
        match self.build_arg(name, &mapping) {
            Some(Expanded::Known(v)) => Lookup::Set(v),
            Some(Expanded::Unknown(w)) => Lookup::Unknown(w),
            None => Lookup::Unset,
        }
    }

    /// Lookup inside a stage: the environment first (`ENV` wins over `ARG`), then the
    /// base image's environment, then the stage's build args (Docker's `FilterAllowed`).
    fn stage_lookup(&self, st: &StageState, name: &str) -> Lookup {
        for e in st.env.iter().rev() {
            match e {
                EnvEntry::Known(s) if env_key(s) == name => {
                    return Lookup::Set(s.split_once('=').map_or("", |(_, v)| v).to_string())
                }
                EnvEntry::UnknownValue { key, why } if key == name => {
                    return Lookup::Unknown(why.clone())
                }
                EnvEntry::Poison(why) => return Lookup::Unknown(why.clone()),
                _ => {}
            }
        }
        if !st.base_env_known {
            return Lookup::Unknown(format!(
                "${name} is not set by the Dockerfile, and the base image's environment \
                 (which may set it) is not known"
            ));
        }
        if !st.allowed.contains_key(name) && !BUILTIN_ARGS.contains(&name) {
            return Lookup::Unset;
        }
        if let Some(why) = &st.allowed_poison {
            return Lookup::Unknown(why.clone());
        }
        match self.build_arg(name, &st.allowed) {
            Some(Expanded::Known(v)) => Lookup::Set(v),
            Some(Expanded::Unknown(w)) => Lookup::Unknown(w),
            None => Lookup::Unset,
        }
    }

    fn expand_meta(&self, word: &str) -> Result<Expanded, String> {
        lex::process_word(word, self.escape, &|n| self.meta_lookup(n))
    }

    fn expand(&self, st: &StageState, word: &str) -> Result<Expanded, String> {
        lex::process_word(word, self.escape, &|n| self.stage_lookup(st, n))
    }

    fn run(&mut self, df: &parse::Dockerfile) {
        self.escape = df.escape;
        self.facts.escape = df.escape;
        for &line in &df.empty_continuations {
            self.report(
                Rule::ContinuationEmpty,
                line,
                "an empty line inside this continued instruction does not end it; the \
                 lines after it still belong to it"
                    .into(),
            );
        }
        if !self.meta_args(df) {
            return;
        }
        if df.stages.is_empty() {
            return self.report(
                Rule::ParseError,
                1,
                "no FROM: the Dockerfile has only ARG instructions".into(),
            );
        }
        let last = match self.input.target {
            None => df.stages.len() - 1,
            Some(t) => match df.stages.iter().position(|s| {
                matches!(&s.from.kind, Kind::From { name: Some(n), .. } if n.eq_ignore_ascii_case(t))
            }) {
                Some(i) => i,
                None => {
                    return self.report(
                        Rule::ParseError,
                        1,
                        format!("failed to reach build target {t} in Dockerfile (no stage named {t:?})"),
                    )
                }
            },
        };
        self.facts.final_stage = Some(last);
        for (index, stage) in df.stages[..=last].iter().enumerate() {
            let Some(mut st) = self.begin_stage(index, &stage.from) else {
                return;
            };
            for ins in &stage.commands {
                self.dispatch(
                    &mut st,
                    index,
                    ins,
                    Origin {
                        line: ins.start_line,
                        trigger: None,
                    },
                );
            }
            self.done.push(st);
        }
        self.finish(last, df.stages[last].from.start_line);
    }

    /// Global ARGs (Docker's `processMetaArg`): every pair substituted with the global
    /// args seen so far, then all declared. `false`: one could not be (reported).
    fn meta_args(&mut self, df: &parse::Dockerfile) -> bool {
        for ins in &df.meta_args {
            let Kind::Arg(pairs) = &ins.kind else {
                continue;
            };
            let mut expanded = Vec::new();
            for (k, v) in pairs {
                let key = self.expand_meta(k);
                let value = v.as_ref().map(|v| self.expand_meta(v)).transpose();
                match (key, value) {
                    (Ok(Expanded::Known(k)), Ok(v)) => {
                        expanded.push((k, v.map(|v| v.known().unwrap_or_default().to_string())))
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        self.report(Rule::ParseError, ins.start_line, e);
                        return false;
                    }
                    (Ok(Expanded::Unknown(_)), _) => unreachable!("global args are known"),
                }
            }
            for (k, v) in expanded {
                self.meta.insert(k, v);
            }
        }
        true
    }

    /// `FROM`: resolves the base, checks it against the policy, starts the stage from
    /// the base's state and runs the base's `ONBUILD` triggers.
    fn begin_stage(&mut self, index: usize, from: &Instruction) -> Option<StageState> {
        let Kind::From { image, name, .. } = &from.kind else {
            unreachable!("a stage starts with FROM")
        };
        let line = from.start_line;
        let resolved = self.resolve_from(from)?;
        let stage_ix = resolved.is_ascii().then(|| {
            let lower = resolved.to_ascii_lowercase();
            self.done
                .iter()
                .position(|s| s.name.as_deref() == Some(&lower))
        });
        let (base, mut st, triggers) = if let Some(Some(j)) = stage_ix {
            let mut st = self.done[j].clone();
            let triggers = std::mem::take(&mut st.onbuild);
            (BaseRef::Stage(j), st, triggers)
        } else {
            self.base_image(index, line, image, &resolved)
        };
        st.name = name.clone();
        st.allowed.clear();
        st.allowed_poison = None;
        self.facts.stages.push(StageFact {
            index,
            name: name.clone(),
            line,
            from: image.clone(),
            base,
        });
        for t in triggers {
            self.run_trigger(&mut st, index, &t);
        }
        Some(st)
    }

    /// The `FROM` line's image with the global `ARG`s expanded, or `None` (reported)
    /// for a stage name used twice, a bad platform or a blank image.
    fn resolve_from(&mut self, from: &Instruction) -> Option<String> {
        let Kind::From {
            image,
            name,
            platform,
        } = &from.kind
        else {
            unreachable!("a stage starts with FROM")
        };
        let line = from.start_line;
        if let Some(n) = name {
            if self.done.iter().any(|s| s.name.as_deref() == Some(n)) {
                self.report(
                    Rule::ParseError,
                    line,
                    format!("{n} stage name already used"),
                );
                return None;
            }
        }
        if let Some(p) = platform {
            if let Err(e) = self.expand_meta(p) {
                self.report(
                    Rule::ParseError,
                    line,
                    format!("failed to process arguments for platform {p}: {e}"),
                );
                return None;
            }
        }
        let resolved = match self.expand_meta(image) {
            Ok(Expanded::Known(s)) => s,
            Ok(Expanded::Unknown(_)) => unreachable!("global args are known"),
            Err(e) => {
                self.report(Rule::ParseError, line, e);
                return None;
            }
        };
        if resolved.is_empty() {
            self.report(
                Rule::ParseError,
                line,
                format!("base name ({image}) should not be blank"),
            );
            return None;
        }
        Some(resolved)
    }

    /// A stage on an image (or `scratch`): allowed by the policy, its environment,
    /// healthcheck and `ONBUILD` triggers as far as they are known.
    fn base_image(
        &mut self,
        index: usize,
        line: usize,
        image: &str,
        resolved: &str,
    ) -> (BaseRef, StageState, Vec<Trigger>) {
        let resolved = resolved.to_string();
        let mut st = StageState {
            name: None,
            root: None,
            base_env_known: true,
            env: Vec::new(),
            user: None,
            onbuild: Vec::new(),
            health: Health::No,
            allowed: BTreeMap::new(),
            allowed_poison: None,
        };
        if resolved == "scratch" {
            return (BaseRef::Scratch, st, Vec::new());
        }
        let allowed = resolved.is_ascii() && (self.input.image_allowed)(&resolved);
        if !allowed {
            let message = if resolved == image {
                format!("FROM {resolved}: the policy does not allow this image")
            } else {
                format!("FROM {image} (= {resolved}): the policy does not allow this image")
            };
            self.report(Rule::FromNotAllowed, line, message);
        }
        self.facts.images.push(ImageUse {
            line,
            stage: index,
            reference: resolved.clone(),
            via: Via::From,
            allowed,
        });
        st.root = Some(resolved.clone());
        let mut triggers = Vec::new();
        match (self.input.base_image)(&resolved) {
            Some(b) => {
                st.env = b.env.into_iter().map(EnvEntry::Known).collect();
                st.health = if b.healthcheck {
                    Health::Yes
                } else {
                    Health::No
                };
                triggers = b
                    .onbuild
                    .into_iter()
                    .map(|expression| Trigger {
                        expression,
                        line,
                        from_image: true,
                    })
                    .collect();
            }
            None => {
                st.base_env_known = false;
                st.health = Health::Unknown;
            }
        }
        (BaseRef::Image(resolved), st, triggers)
    }

    /// Docker's `dispatchTriggeredOnBuild` for one trigger.
    fn run_trigger(&mut self, st: &mut StageState, index: usize, t: &Trigger) {
        let what = if t.from_image {
            "of the base image"
        } else {
            "registered here"
        };
        let ins = parse::parse(&t.expression)
            .map_err(|e| e.message)
            .and_then(|p| {
                if p.nodes.len() != 1 {
                    return Err("onbuild trigger should be a single expression".to_string());
                }
                parse::instruction(&p.nodes[0])
            })
            .and_then(|ins| match ins.kind {
                Kind::From { .. } => Err("FROM is not a command type".to_string()),
                _ => Ok(ins),
            });
        match ins {
            Err(e) => self.report(
                Rule::ParseError,
                t.line,
                format!("ONBUILD trigger {:?} {what}: {e}", t.expression),
            ),
            Ok(ins) => self.dispatch(
                st,
                index,
                &ins,
                Origin {
                    line: t.line,
                    trigger: Some(&t.expression),
                },
            ),
        }
    }

    /// One instruction of a stage (Docker's `dispatch`).
    fn dispatch(&mut self, st: &mut StageState, index: usize, ins: &Instruction, o: Origin<'_>) {
        let line = o.line;
        let p = o.prefix();
        match &ins.kind {
            Kind::Env(pairs) => self.dispatch_env(st, pairs, line, &p),
            Kind::Arg(pairs) => self.dispatch_arg(st, pairs, line, &p),
            Kind::User(u) => match self.expand(st, u) {
                Err(e) => self.report(Rule::ParseError, line, format!("{p}{e}")),
                Ok(value) => st.user = Some(UserSet { value, line }),
            },
            Kind::Run {
                flags, args, json, ..
            } => self.dispatch_run(flags, args, *json, line, &p),
            Kind::Add { .. } | Kind::Copy { .. } => {
                self.dispatch_add_copy(st, index, ins, line, &p)
            }
            Kind::Onbuild { expression, .. } => {
                self.report(
                    Rule::Onbuild,
                    line,
                    format!("{p}ONBUILD {expression}: a trigger that runs in whatever build uses this image as its base"),
                );
                st.onbuild.push(Trigger {
                    expression: expression.clone(),
                    line,
                    from_image: false,
                });
            }
            Kind::Healthcheck { none } => {
                st.health = if *none { Health::Disabled } else { Health::Yes };
            }
            _ => {}
        }
    }

    /// `ENV`: each pair expanded, later ones replacing earlier ones of that name.
    fn dispatch_env(
        &mut self,
        st: &mut StageState,
        pairs: &[(String, String)],
        line: usize,
        p: &str,
    ) {
        let mut out = Vec::new();
        for (k, v) in pairs {
            match (self.expand(st, k), self.expand(st, v)) {
                (Err(e), _) | (_, Err(e)) => {
                    return self.report(Rule::ParseError, line, format!("{p}{e}"))
                }
                (Ok(k), Ok(v)) => out.push((k, v)),
            }
        }
        for (k, v) in out {
            let entry = match (k, v) {
                (Expanded::Unknown(why), _) => {
                    st.env.push(EnvEntry::Poison(why));
                    continue;
                }
                (Expanded::Known(k), Expanded::Known(v)) => EnvEntry::Known(format!("{k}={v}")),
                (Expanded::Known(k), Expanded::Unknown(why)) => {
                    EnvEntry::UnknownValue { key: k, why }
                }
            };
            let key = match &entry {
                EnvEntry::Known(s) => env_key(s).to_string(),
                EnvEntry::UnknownValue { key, .. } => key.clone(),
                EnvEntry::Poison(_) => unreachable!(),
            };
            let slot = st.env.iter_mut().find(|e| match e {
                EnvEntry::Known(s) => env_key(s) == key,
                EnvEntry::UnknownValue { key: k, .. } => *k == key,
                EnvEntry::Poison(_) => false,
            });
            match slot {
                Some(s) => *s = entry,
                None => st.env.push(entry),
            }
        }
    }

    /// `ARG`: the names a later `${...}` may use.
    fn dispatch_arg(
        &mut self,
        st: &mut StageState,
        pairs: &[(String, Option<String>)],
        line: usize,
        p: &str,
    ) {
        let mut out = Vec::new();
        for (k, v) in pairs {
            let key = self.expand(st, k);
            let value = v.as_ref().map(|v| self.expand(st, v)).transpose();
            match (key, value) {
                (Err(e), _) | (_, Err(e)) => {
                    return self.report(Rule::ParseError, line, format!("{p}{e}"))
                }
                (Ok(k), Ok(v)) => out.push((k, v)),
            }
        }
        for (k, v) in out {
            match k {
                Expanded::Known(k) => {
                    st.allowed.insert(k, v);
                }
                Expanded::Unknown(why) => st.allowed_poison = Some(why),
            }
        }
    }

    /// `RUN`: no `--mount`, `--network`, `--security`, heredoc.
    fn dispatch_run(&mut self, flags: &Flags, args: &[String], json: bool, line: usize, p: &str) {
        for m in flags.all("mount") {
            let typ = m
                .split(',')
                .filter_map(|f| f.split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case("type"))
                .map_or("bind", |(_, v)| v);
            self.report(
                Rule::RunMount,
                line,
                format!(
                    "{p}RUN --mount={m}: {typ} mounts are not allowed (cache, secret and ssh \
                     mounts share state or secrets between builds; the legacy builder \
                     urun uses runs no RUN --mount)"
                ),
            );
        }
        if let Some(n) = flags.get("network") {
            self.report(Rule::RunNetwork, line, format!("{p}RUN --network={n}: a RUN step cannot choose its network (the build's network is set by the policy)"));
        }
        if let Some(s) = flags.get("security") {
            self.report(
                Rule::RunSecurity,
                line,
                format!("{p}RUN --security={s}: a RUN step cannot change its security settings"),
            );
        }
        if !json && args.first().is_some_and(|c| has_heredoc(c)) {
            self.report(Rule::Heredoc, line, format!("{p}{HEREDOC}"));
        }
    }

    /// `ADD` and `COPY`: no BuildKit flags or heredocs, no URL without a network, a
    /// `COPY --from` that is allowed.
    fn dispatch_add_copy(
        &mut self,
        st: &mut StageState,
        index: usize,
        ins: &Instruction,
        line: usize,
        p: &str,
    ) {
        let (Kind::Add {
            flags,
            buildkit,
            paths,
        }
        | Kind::Copy {
            flags,
            buildkit,
            paths,
        }) = &ins.kind
        else {
            return;
        };
        let add = matches!(ins.kind, Kind::Add { .. });
        let name = if add { "ADD" } else { "COPY" };
        for f in buildkit {
            self.report(
                Rule::FlagBuildkit,
                line,
                format!("{p}{name} --{f} needs BuildKit; the legacy builder urun uses refuses it"),
            );
        }
        let sources = &paths[..paths.len() - 1];
        if sources.iter().any(|s| s.starts_with("<<")) {
            self.report(Rule::Heredoc, line, format!("{p}{HEREDOC}"));
        }
        if add {
            for s in sources {
                match self.expand(st, s) {
                    Err(e) => return self.report(Rule::ParseError, line, format!("{p}{e}")),
                    Ok(Expanded::Known(v)) => {
                        if let (Some(kind), false) = (url_kind(&v), self.input.network) {
                            self.report(
                                Rule::AddUrl,
                                line,
                                format!("{p}ADD {v}: this build has no network, so a {kind} cannot be fetched; download it into the context first"),
                            );
                        }
                    }
                    Ok(Expanded::Unknown(_)) => {}
                }
            }
        } else if let Some(from) = flags.get("from").filter(|f| !f.is_empty()) {
            self.copy_from(index, line, from, p);
        }
    }

    /// `COPY --from`: an earlier stage (Docker's `stagesBuildResults.get`: name, then
    /// index), else an image the policy must allow.
    fn copy_from(&mut self, index: usize, line: usize, from: &str, p: &str) {
        if from.is_ascii() {
            let lower = from.to_ascii_lowercase();
            if self.done.iter().any(|s| s.name.as_deref() == Some(&lower)) {
                return;
            }
            if let Some(ix) = go_atoi(from) {
                if ix == self.done.len() as i64 {
                    return self.report(
                        Rule::ParseError,
                        line,
                        format!("{p}COPY --from={from}: refers to current build stage"),
                    );
                }
                if ix < 0 || ix > self.done.len() as i64 {
                    return self.report(
                        Rule::ParseError,
                        line,
                        format!("{p}COPY --from={from}: index out of bounds"),
                    );
                }
                return;
            }
        }
        let allowed = from.is_ascii() && !from.contains('$') && (self.input.image_allowed)(from);
        if !allowed {
            let why = if from.contains('$') {
                " (the legacy builder does not substitute variables in --from)"
            } else {
                ""
            };
            self.report(
                Rule::CopyFrom,
                line,
                format!("{p}COPY --from={from}: not an earlier stage, and the policy does not allow this image{why}"),
            );
        }
        self.facts.images.push(ImageUse {
            line,
            stage: index,
            reference: from.to_string(),
            via: Via::CopyFrom,
            allowed,
        });
    }

    /// The final stage's rules: `USER` and `HEALTHCHECK`.
    fn finish(&mut self, last: usize, from_line: usize) {
        let st = self.done[last].clone();
        self.facts.final_base = st.root.clone();
        match &st.user {
            None => self.report(
                Rule::UserMissing,
                from_line,
                "no USER in the final stage (or the stages it is built on): the image would \
                 run as its base image's user; add e.g. USER 1000:1000"
                    .into(),
            ),
            Some(UserSet { value, line }) => {
                self.facts.final_user = Some(UserFact {
                    line: *line,
                    value: value.known().map(str::to_string),
                });
                match value {
                    Expanded::Known(u) if is_root_user(u) => self.report(
                        Rule::UserRoot,
                        *line,
                        if u.is_empty() || u.starts_with(':') {
                            format!("USER {u:?}: an empty user is root; the last USER must not be root or uid 0")
                        } else {
                            format!("USER {u}: the last USER must not be root or uid 0")
                        },
                    ),
                    Expanded::Known(u) if is_root_group(u) => self.report(
                        Rule::UserRootGroup,
                        *line,
                        format!("USER {u}: the image's processes would have the root group (gid 0)"),
                    ),
                    Expanded::Known(_) => {}
                    Expanded::Unknown(why) => self.report(
                        Rule::UserUnresolved,
                        *line,
                        format!("the last USER cannot be checked: {why}; write the user literally, or set the variable with ARG or ENV"),
                    ),
                }
            }
        }
        match st.health {
            Health::Yes | Health::Disabled => {}
            Health::No => self.report(
                Rule::HealthcheckMissing,
                from_line,
                "the final image has no HEALTHCHECK".into(),
            ),
            Health::Unknown => self.report(
                Rule::HealthcheckMissing,
                from_line,
                "the Dockerfile sets no HEALTHCHECK (the base image may have one)".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests;

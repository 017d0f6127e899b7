use super::*;
use proptest::prelude::*;

/// A test set-up: the policy allows a few images; `alpine` and `busybox` are known
/// base images (with an environment), `debian:12` is allowed but not known.
struct T {
    args: BTreeMap<String, String>,
    target: Option<String>,
    network: bool,
    allowed: Vec<&'static str>,
    bases: BTreeMap<String, BaseImage>,
    sev: BTreeMap<Rule, Severity>,
}

impl T {
    fn new() -> T {
        let mut bases = BTreeMap::new();
        bases.insert(
            "alpine".to_string(),
            BaseImage {
                env: vec!["PATH=/usr/bin:/bin".into()],
                ..BaseImage::default()
            },
        );
        bases.insert(
            "busybox".to_string(),
            BaseImage {
                env: vec!["PATH=/bin".into(), "BASEUSER=root".into()],
                healthcheck: true,
                ..BaseImage::default()
            },
        );
        T {
            args: BTreeMap::new(),
            target: None,
            network: false,
            allowed: vec!["alpine", "busybox", "debian:12"],
            bases,
            sev: BTreeMap::new(),
        }
    }

    fn arg(mut self, k: &str, v: &str) -> T {
        self.args.insert(k.into(), v.into());
        self
    }

    fn check(&self, text: &str) -> Report {
        let allowed = |r: &str| self.allowed.contains(&r);
        let base = |r: &str| self.bases.get(r).cloned();
        check(
            text,
            &CheckInput {
                build_args: &self.args,
                target: self.target.as_deref(),
                network: self.network,
                image_allowed: &allowed,
                base_image: &base,
                severity: &self.sev,
            },
        )
    }
}

fn found(r: &Report) -> Vec<(&'static str, usize)> {
    r.findings.iter().map(|f| (f.rule.id(), f.line)).collect()
}

#[track_caller]
fn has(r: &Report, id: &str, line: usize) {
    assert!(
        r.findings
            .iter()
            .any(|f| f.rule.id() == id && f.line == line),
        "expected {id} at line {line}, got {:#?}",
        r.findings
    );
}

#[track_caller]
fn lacks(r: &Report, id: &str) {
    assert!(
        !r.findings.iter().any(|f| f.rule.id() == id),
        "did not expect {id}: {:#?}",
        r.findings
    );
}

fn chk(text: &str) -> Report {
    T::new().check(text)
}

#[test]
fn a_clean_dockerfile_has_no_findings() {
    let r = chk("FROM alpine\nRUN echo hi\nUSER 1000:1000\nHEALTHCHECK CMD true\n");
    assert_eq!(found(&r), vec![]);
    assert!(!r.refused());
    assert_eq!(
        r.facts.final_user,
        Some(UserFact {
            line: 3,
            value: Some("1000:1000".into())
        })
    );
    assert_eq!(r.facts.final_base.as_deref(), Some("alpine"));
}

#[test]
fn user_missing() {
    let r = chk("FROM alpine\nRUN true\n");
    has(&r, "user.missing", 1);
    assert!(r.refused());
    // a USER in another, unrelated stage does not count
    let r = chk("FROM alpine AS a\nUSER nobody\nFROM alpine\nRUN true\n");
    has(&r, "user.missing", 3);
    // scratch has no user either
    has(&chk("FROM scratch\nCOPY a /a\n"), "user.missing", 1);
}

#[test]
fn user_root_in_all_its_spellings() {
    for (u, root) in [
        ("root", true),
        ("0", true),
        ("00", true),
        ("+0", true),
        ("-0", true),
        ("0:0", true),
        ("0:1000", true),
        ("root:root", true),
        ("root:nogroup", true),
        (":0", true),
        (":1000", true),
        ("1000", false),
        ("1000:0", false),
        ("nobody", false),
        ("Root", false),
        ("0x0", false),
        ("1000:1000", false),
    ] {
        let r = chk(&format!("FROM alpine\nUSER {u}\n"));
        if root {
            has(&r, "user.root", 2);
        } else {
            lacks(&r, "user.root");
        }
        lacks(&r, "user.missing");
    }
    // a later USER wins
    lacks(
        &chk("FROM alpine\nUSER root\nRUN x\nUSER 1000\n"),
        "user.root",
    );
    has(&chk("FROM alpine\nUSER 1000\nUSER root\n"), "user.root", 3);
    // the group part alone is a warning
    let r = chk("FROM alpine\nUSER 1000:root\n");
    has(&r, "user.root-group", 2);
    assert!(!r.refused());
}

#[test]
fn user_through_arg_and_env_substitution() {
    has(&chk("FROM alpine\nARG U=root\nUSER $U\n"), "user.root", 3);
    has(&chk("FROM alpine\nARG U=root\nUSER ${U}\n"), "user.root", 3);
    has(&chk("FROM alpine\nUSER ${U:-root}\n"), "user.root", 2);
    has(&chk("FROM alpine\nARG U=\nUSER ${U:-0}\n"), "user.root", 3);
    lacks(
        &chk("FROM alpine\nARG U=1000\nUSER ${U:-root}\n"),
        "user.root",
    );
    // ${U:+x}: x when U is set and not empty
    has(
        &chk("FROM alpine\nARG U=1\nUSER ${U:+root}\n"),
        "user.root",
        3,
    );
    lacks(&chk("FROM alpine\nARG U=1\nUSER ${U:+1000}\n"), "user.root");
    has(&chk("FROM alpine\nUSER ${U:+1000}\n"), "user.root", 2);
    // ENV
    has(&chk("FROM alpine\nENV U=0\nUSER $U:$U\n"), "user.root", 3);
    // ENV wins over ARG
    lacks(
        &chk("FROM alpine\nENV U=1000\nARG U=root\nUSER $U\n"),
        "user.root",
    );
    // --build-arg overrides the default
    let t = T::new().arg("U", "root");
    has(
        &t.check("FROM alpine\nARG U=1000\nUSER $U\n"),
        "user.root",
        3,
    );
    // but only for declared args
    lacks(&t.check("FROM alpine\nUSER 1$U\n"), "user.root");
    // built-in proxy args need no declaration
    let t = T::new().arg("HTTP_PROXY", "0");
    has(&t.check("FROM alpine\nUSER $HTTP_PROXY\n"), "user.root", 2);
    // a global ARG is visible in a stage only when re-declared
    has(
        &chk("ARG U=root\nFROM alpine\nARG U\nUSER $U\n"),
        "user.root",
        4,
    );
    has(
        &chk("ARG U=root\nFROM alpine\nUSER x$U\nUSER $U\n"),
        "user.root",
        4,
    );
    // escaped and single-quoted dollars are literal
    lacks(&chk("FROM alpine\nARG U=root\nUSER \\$U\n"), "user.root");
    lacks(&chk("FROM alpine\nENV U=root\nUSER '$U'\n"), "user.root");
    // ENV of several pairs sees the values from before the instruction
    lacks(
        &chk("FROM alpine\nENV A=1000 B=$A\nUSER x$B\n"),
        "user.root",
    );
    // a value from the base image's environment (known to urund)
    has(&chk("FROM busybox\nUSER $BASEUSER\n"), "user.root", 2);
}

#[test]
fn user_naming_an_unset_variable_is_an_empty_user_which_is_root() {
    let r = chk("FROM alpine\nUSER $NOBODY\n");
    has(&r, "user.root", 2);
    let r = chk("FROM scratch\nUSER ${NOBODY}:1000\n");
    has(&r, "user.root", 2);
}

#[test]
fn user_depending_on_an_unknown_base_environment_is_unresolved() {
    // debian:12 is allowed, but urund gave no facts about it
    let r = chk("FROM debian:12\nUSER $APPUSER\n");
    has(&r, "user.unresolved", 2);
    assert!(r.refused());
    assert_eq!(r.facts.final_user.as_ref().unwrap().value, None);
    // even an ARG could be shadowed by the base image's ENV
    has(
        &chk("FROM debian:12\nARG U=1000\nUSER $U\n"),
        "user.unresolved",
        3,
    );
    // an ENV set by the Dockerfile is known
    lacks(
        &chk("FROM debian:12\nENV U=1000\nUSER $U\n"),
        "user.unresolved",
    );
    // the policy may lower this one
    let mut t = T::new();
    t.sev.insert(Rule::UserUnresolved, Severity::Warning);
    assert!(!t.check("FROM debian:12\nUSER $X\n").refused());
}

#[test]
fn user_follows_the_stage_chain() {
    // final stage FROM an earlier stage inherits its USER
    let r = chk("FROM alpine AS base\nUSER 1000\nFROM base\nRUN true\n");
    lacks(&r, "user.missing");
    assert_eq!(r.facts.final_user.as_ref().unwrap().line, 2);
    assert_eq!(r.facts.final_base.as_deref(), Some("alpine"));
    // ... including a root one, reported at the USER line
    has(
        &chk("FROM alpine AS base\nUSER root\nFROM base\nRUN true\n"),
        "user.root",
        2,
    );
    // two levels, case-insensitive stage names
    let r = chk("FROM alpine AS A\nUSER 0\nFROM a AS b\nRUN x\nFROM B\nRUN y\n");
    has(&r, "user.root", 2);
    // ENV flows through the chain too
    has(
        &chk("FROM alpine AS a\nENV U=root\nFROM a\nUSER $U\n"),
        "user.root",
        4,
    );
    // ARGs do not
    has(
        &chk("FROM alpine AS a\nARG U=1000\nFROM a\nUSER $U\n"),
        "user.root",
        4,
    );
    // FROM 0 is an image named 0 in the legacy builder, not stage 0
    let r = chk("FROM alpine\nUSER 1000\nFROM 0\nUSER 1\n");
    has(&r, "from.not-allowed", 3);
}

#[test]
fn target_selects_the_final_stage() {
    let mut t = T::new();
    t.target = Some("Build".into());
    let text = "FROM alpine AS build\nUSER root\nFROM alpine\nRUN --mount=type=cache,target=/x true\nUSER 1000\n";
    let r = t.check(text);
    has(&r, "user.root", 2);
    lacks(&r, "run.mount");
    assert_eq!(r.facts.final_stage, Some(0));
    assert_eq!(r.facts.stages.len(), 1);
    // without the target the last stage is final
    let r = T::new().check(text);
    lacks(&r, "user.root");
    has(&r, "run.mount", 4);
    t.target = Some("nope".into());
    has(&t.check(text), "parse.error", 1);
}

#[test]
fn from_images_after_global_arg_substitution() {
    has(&chk("FROM evil/img\nUSER 1\n"), "from.not-allowed", 1);
    lacks(
        &chk("ARG V=12\nFROM debian:$V\nUSER 1\n"),
        "from.not-allowed",
    );
    let t = T::new().arg("V", "sid");
    let r = t.check("ARG V=12\nFROM debian:${V}\nUSER 1\n");
    has(&r, "from.not-allowed", 2);
    assert!(r.findings[0].message.contains("debian:sid"));
    // a stage ARG is not visible to FROM
    has(
        &chk("FROM alpine\nARG I=alpine\nFROM $I\nUSER 1\n"),
        "parse.error",
        3,
    );
    // scratch and earlier stages are always allowed; later stages are images
    lacks(
        &chk("FROM scratch AS s\nFROM s\nUSER 1\n"),
        "from.not-allowed",
    );
    has(
        &chk("FROM later\nUSER 1\nFROM alpine AS later\n"),
        "from.not-allowed",
        1,
    );
    // global ARGs see earlier global ARGs
    lacks(
        &chk("ARG A=debian\nARG B=$A:12\nFROM $B\nUSER 1\n"),
        "from.not-allowed",
    );
    // the facts list the images used
    let r = chk("ARG V=12\nFROM debian:$V AS b\nFROM b\nCOPY --from=busybox /x /y\nUSER 1\n");
    let refs: Vec<_> = r
        .facts
        .images
        .iter()
        .map(|i| (i.reference.as_str(), i.via, i.line))
        .collect();
    assert_eq!(
        refs,
        vec![("debian:12", Via::From, 2), ("busybox", Via::CopyFrom, 4)]
    );
    assert_eq!(r.facts.stages[1].base, BaseRef::Stage(0));
}

#[test]
fn copy_from_must_be_a_stage_or_an_allowed_image() {
    let r = chk("FROM alpine AS b\nFROM alpine\nCOPY --from=evil /x /y\nCOPY --from=B /x /y\nCOPY --from=0 /x /y\nCOPY --from=busybox /a /b\nUSER 1\n");
    assert_eq!(
        found(&r)
            .into_iter()
            .filter(|(id, _)| *id == "copy.from")
            .collect::<Vec<_>>(),
        vec![("copy.from", 3)]
    );
    has(
        &chk("FROM alpine\nCOPY --from=0 /x /y\nUSER 1\n"),
        "parse.error",
        2,
    );
    has(
        &chk("FROM alpine\nCOPY --from=5 /x /y\nUSER 1\n"),
        "parse.error",
        2,
    );
    has(
        &chk("FROM alpine\nARG S=alpine\nCOPY --from=$S /x /y\nUSER 1\n"),
        "copy.from",
        3,
    );
}

#[test]
fn run_flags() {
    let r = chk("FROM alpine\nRUN --mount=type=cache,target=/c true\nRUN --mount=type=secret,id=x true\nRUN --mount=type=ssh true\nRUN --mount=target=/x true\nRUN --network=host true\nRUN --security=insecure true\nUSER 1\n");
    has(&r, "run.mount", 2);
    has(&r, "run.mount", 3);
    has(&r, "run.mount", 4);
    has(&r, "run.mount", 5);
    has(&r, "run.network", 6);
    has(&r, "run.security", 7);
    assert!(r
        .findings
        .iter()
        .find(|f| f.line == 2)
        .unwrap()
        .message
        .contains("cache"));
    lacks(
        &chk("FROM alpine\nRUN echo --mount=x\nUSER 1\n"),
        "run.mount",
    );
    has(
        &chk("FROM alpine\nrun \\\n  --mount=type=cache,target=/c true\nUSER 1\n"),
        "run.mount",
        2,
    );
}

#[test]
fn add_url_without_network() {
    let r = chk("FROM alpine\nADD https://example.org/x.tgz /x\nADD git@github.com:a/b.git /b\nADD local /l\nUSER 1\n");
    has(&r, "add.url", 2);
    has(&r, "add.url", 3);
    assert_eq!(
        r.findings.iter().filter(|f| f.rule == Rule::AddUrl).count(),
        2
    );
    has(
        &chk("FROM alpine\nARG U=http://x/y\nADD $U /y\nUSER 1\n"),
        "add.url",
        3,
    );
    has(
        &chk("FROM alpine\nADD [\"http://x/y\", \"/y\"]\nUSER 1\n"),
        "add.url",
        2,
    );
    let mut t = T::new();
    t.network = true;
    lacks(
        &t.check("FROM alpine\nADD https://example.org/x.tgz /x\nUSER 1\n"),
        "add.url",
    );
    // COPY never downloads
    lacks(&chk("FROM alpine\nCOPY http://x/y /y\nUSER 1\n"), "add.url");
}

#[test]
fn buildkit_only_flags_are_named() {
    let r = chk("FROM alpine\nADD --checksum=sha256:00 https://x/y /y\nADD --keep-git-dir=true https://x/y.git /y\nCOPY --chmod=755 a /a\nCOPY --link a /b\nUSER 1\n");
    has(&r, "flag.buildkit", 2);
    has(&r, "flag.buildkit", 3);
    has(&r, "flag.buildkit", 4);
    has(&r, "flag.buildkit", 5);
    lacks(
        &chk("FROM alpine\nCOPY --chown=1:1 a /a\nADD --chown=1:1 a /a\nUSER 1\n"),
        "flag.buildkit",
    );
}

#[test]
fn heredocs_are_reported_and_their_bodies_are_instructions() {
    let r = chk("FROM alpine\nUSER 1000\nRUN cat <<EOF > /x\nUSER root\n");
    has(&r, "heredoc", 3);
    // the legacy builder reads the body as instructions: the USER root counts
    has(&r, "user.root", 4);
    // and a terminator line is an unknown instruction
    let r = chk("FROM alpine\nRUN <<EOF\nUSER 1\nEOF\n");
    has(&r, "parse.error", 4);
    has(&r, "heredoc", 2);
    has(&chk("FROM alpine\nCOPY <<EOF /x\nUSER 1\n"), "heredoc", 2);
    lacks(
        &chk("FROM alpine\nRUN cat <<< hi && echo $((1<<2))\nUSER 1\n"),
        "heredoc",
    );
}

#[test]
fn onbuild_is_a_warning_and_its_triggers_run_in_later_stages() {
    let r = chk("FROM alpine AS a\nONBUILD USER root\nUSER 1000\nFROM a\nRUN true\n");
    has(&r, "onbuild", 2);
    // the trigger runs at FROM a, then nothing sets USER again
    has(&r, "user.root", 2);
    // a later USER overrides the trigger's
    lacks(
        &chk("FROM alpine AS a\nONBUILD USER root\nFROM a\nUSER 1000\n"),
        "user.root",
    );
    // triggers are checked like instructions
    let r = chk("FROM alpine AS a\nONBUILD RUN --mount=type=ssh true\nFROM a\nUSER 1\n");
    has(&r, "run.mount", 2);
    assert!(r
        .findings
        .iter()
        .any(|f| f.message.starts_with("ONBUILD trigger")));
    // a base image's triggers, when urund knows them
    let mut t = T::new();
    t.bases.get_mut("alpine").unwrap().onbuild = vec!["ENV U=root".into()];
    has(&t.check("FROM alpine\nUSER $U\n"), "user.root", 2);
    t.bases.get_mut("alpine").unwrap().onbuild = vec!["BOGUS x".into()];
    has(&t.check("FROM alpine\nUSER 1\n"), "parse.error", 1);
    let r = chk("FROM alpine\nONBUILD RUN x\nUSER 1\n");
    assert!(!r.refused());
}

#[test]
fn healthcheck_missing_is_a_warning() {
    let r = chk("FROM alpine\nUSER 1\n");
    has(&r, "healthcheck.missing", 1);
    assert!(!r.refused());
    lacks(
        &chk("FROM alpine\nHEALTHCHECK --interval=5s CMD true\nUSER 1\n"),
        "healthcheck.missing",
    );
    // HEALTHCHECK NONE is an explicit choice, here or in an earlier stage; a later
    // HEALTHCHECK CMD still counts, and NONE after it switches it off on purpose.
    lacks(
        &chk("FROM alpine\nHEALTHCHECK NONE\nUSER 1\n"),
        "healthcheck.missing",
    );
    lacks(
        &chk("FROM alpine AS a\nHEALTHCHECK NONE\nFROM a\nUSER 1\n"),
        "healthcheck.missing",
    );
    lacks(
        &chk("FROM busybox\nHEALTHCHECK CMD x\nHEALTHCHECK NONE\nUSER 1\n"),
        "healthcheck.missing",
    );
    // A NONE in another stage says nothing of the final one.
    has(
        &chk("FROM alpine AS a\nHEALTHCHECK NONE\nFROM alpine\nUSER 1\n"),
        "healthcheck.missing",
        3,
    );
    // inherited from the base image or an earlier stage
    lacks(&chk("FROM busybox\nUSER 1\n"), "healthcheck.missing");
    lacks(
        &chk("FROM alpine AS a\nHEALTHCHECK CMD x\nFROM a\nUSER 1\n"),
        "healthcheck.missing",
    );
    let r = chk("FROM debian:12\nUSER 1\n");
    assert!(r.findings[0].message.contains("may have one"));
}

#[test]
fn parse_errors_refuse() {
    for (text, line) in [
        ("FROM alpine\nFOO x\n", 2),
        ("FROM alpine\nUSER\n", 2),
        ("USER 1\nFROM alpine\n", 1),
        ("FROM alpine\n\nRUN --bogus=1 x\n", 3),
        ("ARG X\n", 1),
        ("FROM alpine AS a\nFROM alpine AS a\nUSER 1\n", 2),
        ("FROM alpine\nUSER ${X\n", 2),
        ("FROM ${NOPE}\nUSER 1\n", 1),
    ] {
        let r = chk(text);
        has(&r, "parse.error", line);
        assert!(r.refused(), "{text:?}");
    }
}

#[test]
fn continuations_across_comments_and_empty_lines() {
    // the comment line and the empty line do not end the RUN: USER root is part of it
    let r = chk("FROM alpine\nUSER 1000\nRUN echo \\\n# comment\n\nUSER root\n");
    lacks(&r, "user.root");
    has(&r, "continuation.empty", 3);
    // a comment ending in a backslash does not continue
    has(&chk("FROM alpine\n# note \\\nUSER root\n"), "user.root", 3);
}

#[test]
fn the_escape_directive() {
    // with ` as escape, a backslash does not continue: USER root is its own instruction
    let r = chk("# escape=`\nFROM alpine\nUSER 1000\nRUN dir c:\\\nUSER root\n");
    has(&r, "user.root", 5);
    assert_eq!(r.facts.escape, '`');
    // and a backtick does
    lacks(
        &chk("# escape=`\nFROM alpine\nUSER 1000\nRUN echo `\nUSER root\n"),
        "user.root",
    );
    // the backtick escapes in substitution too
    lacks(
        &chk("# escape=`\nFROM alpine\nARG U=root\nUSER `$U\n"),
        "user.root",
    );
}

#[test]
fn severities_from_the_policy() {
    let mut t = T::new();
    t.sev.insert(Rule::Onbuild, Severity::Error);
    t.sev.insert(Rule::HealthcheckMissing, Severity::Off);
    t.sev.insert(Rule::UserRoot, Severity::Off);
    t.sev.insert(Rule::UserMissing, Severity::Warning);
    let r = t.check("FROM alpine\nONBUILD RUN x\nUSER root\n");
    has(&r, "onbuild", 2);
    assert_eq!(
        r.findings
            .iter()
            .find(|f| f.rule == Rule::Onbuild)
            .unwrap()
            .severity,
        Severity::Error
    );
    lacks(&r, "healthcheck.missing");
    // the seed rules cannot be lowered
    has(&r, "user.root", 3);
    assert!(r.refused());
    let r = t.check("FROM alpine\nRUN x\n");
    assert_eq!(r.findings[0].severity, Severity::Error);
    assert!(validate_override(Rule::UserRoot, Severity::Warning).is_err());
    assert!(validate_override(Rule::UserMissing, Severity::Off).is_err());
    assert!(validate_override(Rule::ParseError, Severity::Off).is_err());
    assert!(validate_override(Rule::UserRoot, Severity::Error).is_ok());
    assert!(validate_override(Rule::Onbuild, Severity::Off).is_ok());
}

#[test]
fn the_rule_table_is_consistent() {
    for (i, r) in RULES.iter().enumerate() {
        assert_eq!(Rule::from_id(r.id), Some(r.rule));
        assert!(RULES[i + 1..]
            .iter()
            .all(|o| o.rule != r.rule && o.id != r.id));
        assert!(r.default != Severity::Off);
    }
    let fixed: Vec<_> = RULES.iter().filter(|r| r.fixed).map(|r| r.id).collect();
    assert_eq!(fixed, vec!["parse.error", "user.missing", "user.root"]);
    assert_eq!(Severity::from_name("warning"), Some(Severity::Warning));
}

#[test]
fn findings_print_on_one_line() {
    let r = chk("FROM alpine\nUSER root\n");
    let f = r.errors().next().unwrap().to_string();
    assert_eq!(
        f,
        "line 2: error [user.root] USER root: the last USER must not be root or uid 0"
    );
}

// ---------------------------------------------------------------------------
// Property tests (bounded).

fn word() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._/-]{0,7}"
}

/// One instruction of the small grammar: keyword, words, and what the parser should
/// make of the words.
#[derive(Debug, Clone)]
enum Gen {
    From(String, Option<String>),
    User(Vec<String>),
    Run(Vec<String>),
    Env(Vec<(String, String)>),
    Copy(Vec<String>),
    Expose(Vec<String>),
}

fn gen() -> impl Strategy<Value = Gen> {
    prop_oneof![
        (word(), proptest::option::of("[a-z][a-z0-9]{0,5}")).prop_map(|(i, n)| Gen::From(i, n)),
        proptest::collection::vec(word(), 1..4).prop_map(Gen::User),
        proptest::collection::vec(word(), 1..5).prop_map(Gen::Run),
        proptest::collection::vec(("[A-Z_][A-Z0-9_]{0,5}", word()), 1..3).prop_map(Gen::Env),
        proptest::collection::vec(word(), 2..5).prop_map(Gen::Copy),
        proptest::collection::vec("[0-9]{1,5}", 1..3).prop_map(Gen::Expose),
    ]
}

impl Gen {
    fn keyword(&self) -> &'static str {
        match self {
            Gen::From(..) => "from",
            Gen::User(_) => "user",
            Gen::Run(_) => "run",
            Gen::Env(_) => "env",
            Gen::Copy(_) => "copy",
            Gen::Expose(_) => "expose",
        }
    }

    fn words(&self) -> Vec<String> {
        match self {
            Gen::From(i, None) => vec![i.clone()],
            Gen::From(i, Some(n)) => vec![i.clone(), "AS".into(), n.clone()],
            Gen::User(w) | Gen::Run(w) | Gen::Copy(w) | Gen::Expose(w) => w.clone(),
            Gen::Env(p) => p.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        }
    }

    /// The node arguments the parser must produce (spaces inside single-argument
    /// instructions normalised by the caller).
    fn expected(&self) -> Vec<String> {
        match self {
            Gen::User(w) | Gen::Run(w) => vec![w.join(" ")],
            Gen::Env(p) => p.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect(),
            _ => self.words(),
        }
    }
}

/// How a separator between two words is written.
#[derive(Debug, Clone)]
enum Sep {
    Space,
    /// Continuation, then optional comment / empty lines, then indentation.
    Cont {
        comment: bool,
        empty: bool,
        indent: usize,
    },
}

fn sep() -> impl Strategy<Value = Sep> {
    prop_oneof![
        3 => Just(Sep::Space),
        1 => (any::<bool>(), any::<bool>(), 0usize..3).prop_map(|(comment, empty, indent)| Sep::Cont { comment, empty, indent }),
    ]
}

/// Renders instructions with random formatting; returns the text and each
/// instruction's keyword line.
fn render(ins: &[(Gen, Vec<Sep>, u8, usize)], escape: char) -> (String, Vec<usize>) {
    let mut text = String::new();
    let mut line = 1;
    if escape == '`' {
        text.push_str("# escape=`\n");
        line += 1;
    }
    let mut lines = Vec::new();
    for (g, seps, case, blank) in ins {
        for b in 0..*blank {
            text.push_str(if b % 2 == 0 { "\n" } else { "  # a comment\n" });
            line += 1;
        }
        lines.push(line);
        let kw: String = g
            .keyword()
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if (case >> (i % 8)) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        text.push_str(&" ".repeat((*case as usize) % 3));
        text.push_str(&kw);
        for (i, w) in g.words().iter().enumerate() {
            match seps.get(i).unwrap_or(&Sep::Space) {
                Sep::Space => text.push(' '),
                Sep::Cont {
                    comment,
                    empty,
                    indent,
                } => {
                    text.push(' ');
                    text.push(escape);
                    text.push('\n');
                    line += 1;
                    if *comment {
                        text.push_str("# inside\n");
                        line += 1;
                    }
                    if *empty {
                        text.push('\n');
                        line += 1;
                    }
                    text.push_str(&" ".repeat(*indent));
                }
            }
            text.push_str(w);
        }
        text.push('\n');
        line += 1;
    }
    (text, lines)
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn check_never_panics_on_dockerfile_like_text(text in "([ -~]|\t|\n|é|\u{a0}|\u{85}|`|\\\\\n){0,300}") {
        let _ = chk(&text);
    }

    #[test]
    fn check_never_panics_on_any_text(text in "\\PC{0,200}") {
        let _ = chk(&text);
    }

    #[test]
    fn check_never_panics_on_mutated_dockerfiles(
        prefix in proptest::sample::select(vec![
            "FROM alpine AS a\n", "# escape=`\n", "ARG U=root\n", "FROM busybox\nONBUILD ",
        ]),
        middle in "(USER|RUN|ENV|ARG|COPY|ADD|FROM|ONBUILD|HEALTHCHECK| |\\$|\\{|\\}|:|-|\\+|\\?|=|'|\"|\\\\|`|\n|--mount=|--from=|root|0|a|\\[|\\]|<<|#){0,40}",
    ) {
        let _ = chk(&format!("{prefix}{middle}"));
    }

    #[test]
    fn generated_dockerfiles_parse_into_the_same_instructions_at_their_lines(
        first in (word(), proptest::option::of("[a-z][a-z0-9]{0,5}")),
        rest in proptest::collection::vec(
            (gen(), proptest::collection::vec(sep(), 0..5), any::<u8>(), 0usize..3), 0..8),
        backtick in any::<bool>(),
    ) {
        let escape = if backtick { '`' } else { '\\' };
        let mut ins = vec![(Gen::From(first.0, first.1), vec![], 0u8, 0usize)];
        ins.extend(rest);
        let (text, lines) = render(&ins, escape);
        let parsed = parse::parse(&text).unwrap();
        prop_assert_eq!(parsed.escape, escape);
        prop_assert_eq!(parsed.nodes.len(), ins.len(), "{}", text);
        for ((g, ..), (node, line)) in ins.iter().zip(parsed.nodes.iter().zip(&lines)) {
            prop_assert_eq!(&node.command, g.keyword());
            prop_assert_eq!(node.start_line, *line, "{}", text);
            let got: Vec<String> = node.args.iter().map(|a| squash(a)).collect();
            prop_assert_eq!(got, g.expected(), "{}", text);
        }
        // and the typed parse agrees on the stages
        let df = parse::dockerfile(&text);
        if let Ok(df) = df {
            let froms = ins.iter().filter(|(g, ..)| matches!(g, Gen::From(..))).count();
            prop_assert_eq!(df.stages.len(), froms);
        }
    }

    #[test]
    fn findings_point_at_the_instruction_that_caused_them(
        before in proptest::collection::vec(proptest::sample::select(vec![
            "RUN true", "ENV A=1", "# c", "", "LABEL a=b", "RUN a \\\n  b",
        ]), 0..6),
        bad in proptest::sample::select(vec![
            ("RUN --mount=type=cache,target=/x true", "run.mount"),
            ("RUN --network=host true", "run.network"),
            ("ADD http://x/y /y", "add.url"),
            ("COPY --from=evil /a /b", "copy.from"),
            ("ONBUILD RUN true", "onbuild"),
            ("BOGUS x", "parse.error"),
        ]),
    ) {
        let mut text = String::from("FROM alpine\n");
        for b in &before {
            text.push_str(b);
            text.push('\n');
        }
        let line = text.lines().count() + 1;
        text.push_str(bad.0);
        text.push_str("\nUSER 1\n");
        let r = chk(&text);
        prop_assert!(
            r.findings.iter().any(|f| f.rule.id() == bad.1 && f.line == line),
            "{} at {}: {:?}", bad.1, line, r.findings
        );
    }

    #[test]
    fn root_detection_agrees_with_atoi(n in -3i64..3, zeros in 0usize..3, sign in proptest::sample::select(vec!["", "+", "-"])) {
        let digits = format!("{}{}", "0".repeat(zeros), n.unsigned_abs());
        let spec = format!("{sign}{digits}");
        let value = if sign == "-" { -(n.unsigned_abs() as i64) } else { n.unsigned_abs() as i64 };
        prop_assert_eq!(is_root_user(&spec), value == 0);
    }
}

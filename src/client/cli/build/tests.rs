use super::*;
use crate::client::cli::{split_command, Sub, REFUSED};
use std::ffi::OsString;

fn parse(args: &[&str]) -> (BuildArgs, ArgMatches) {
    parse_build(std::iter::once("urun").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn refused(args: &[&str]) -> Option<String> {
    let (a, m) = parse(args);
    build_refusal(&a, &m, 1001)
}

fn split(args: &[&str]) -> Result<(Sub, Vec<String>), String> {
    let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
    split_command(argv).map(|(s, v)| {
        (
            s,
            v.into_iter()
                .map(|a| a.into_string().unwrap())
                .collect::<Vec<_>>(),
        )
    })
}

#[test]
fn the_first_word_picks_the_command() {
    assert_eq!(
        split(&["urun", "build", "-t", "app", "."]).unwrap(),
        (
            Sub::Build,
            vec!["urun".into(), "-t".into(), "app".into(), ".".into()]
        )
    );
    for (word, sub) in [
        ("images", Sub::Images),
        ("rmi", Sub::Rmi),
        ("push", Sub::Push),
    ] {
        assert_eq!(split(&["urun", word]).unwrap().0, sub, "{word}");
    }
    // --socket (either form) may come first and is kept for the command's parser.
    assert_eq!(
        split(&["urun", "--socket", "/s", "images", "-q"]).unwrap(),
        (
            Sub::Images,
            ["urun", "--socket", "/s", "-q"].map(String::from).to_vec()
        )
    );
    assert_eq!(
        split(&["urun", "--socket=/s", "rmi", "a"]).unwrap(),
        (
            Sub::Rmi,
            ["urun", "--socket=/s", "a"].map(String::from).to_vec()
        )
    );
}

#[test]
fn run_with_or_without_the_word_is_todays_command_line() {
    // `urun run ...` is exactly `urun ...` without the word.
    assert_eq!(
        split(&["urun", "run", "-it", "busybox", "sh"]).unwrap(),
        (
            Sub::Run,
            ["urun", "-it", "busybox", "sh"].map(String::from).to_vec()
        )
    );
    // An image named like a command runs with `urun run`.
    assert_eq!(
        split(&["urun", "run", "build", "ls"]).unwrap(),
        (Sub::Run, ["urun", "build", "ls"].map(String::from).to_vec())
    );
    assert_eq!(
        split(&["urun", "--socket", "/s", "run", "images"])
            .unwrap()
            .1,
        ["urun", "--socket", "/s", "images"]
    );
    // Every other image name, with any flags, is unchanged.
    for args in [
        &["urun", "busybox", "build", "images"][..],
        &["urun", "-i", "busybox", "run"],
        &["urun", "-e", "build", "busybox"],
        &["urun", "-eTERM", "busybox"],
        &["urun", "-w", "/w", "--name=x", "busybox"],
        &["urun", "--entrypoint", "run", "busybox"],
        &["urun", "-itu", "1001", "busybox"],
        &["urun", "--", "build"],
        &["urun", "--policy"],
        &["urun", "--help"],
        &["urun", "-h", "build"],
        &["urun"],
    ] {
        let (sub, argv) = split(args).unwrap();
        assert_eq!(sub, Sub::Run, "{args:?}");
        assert_eq!(argv, args.to_vec(), "{args:?}");
    }
}

#[test]
fn a_command_word_after_run_flags_is_refused_as_ambiguous() {
    for (args, word) in [
        (&["urun", "-it", "build"][..], "build"),
        (&["urun", "--rm", "images"], "images"),
        (&["urun", "-e", "A=1", "run", "img"], "run"),
    ] {
        let e = split(args).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "{word} is a urun command: put the options after it"
            )) && e.contains(&format!("urun run [OPTIONS] {word}")),
            "{e}"
        );
    }
}

#[test]
fn accepted_build_flags_in_docker_syntax() {
    let (a, m) = parse(&[
        "-t",
        "app:1",
        "--tag=app:latest",
        "-f",
        "../Dockerfile.dev",
        "--build-arg",
        "A=1",
        "--build-arg=B",
        "--target",
        "final",
        "--no-cache",
        "--pull",
        "never",
        "--label",
        "org.example=x",
        "-q",
        "--iidfile",
        "id.txt",
        "--rm",
        "--force-rm",
        ".",
    ]);
    assert_eq!(build_refusal(&a, &m, 1001), None);
    assert_eq!(a.tags, ["app:1", "app:latest"]);
    assert_eq!(
        a.file.as_deref(),
        Some(std::path::Path::new("../Dockerfile.dev"))
    );
    assert_eq!(a.build_args, ["A=1", "B"]);
    assert_eq!(a.target.as_deref(), Some("final"));
    assert!(a.no_cache && a.quiet && a.rm && a.force_rm);
    assert_eq!(a.pull.as_deref(), Some("never"));
    assert_eq!(a.context.as_deref(), Some("."));
    // `-` for the context and for -f parse as values.
    let (a, _) = parse(&["-f", "-", "."]);
    assert_eq!(a.file.as_deref(), Some(std::path::Path::new("-")));
    let (a, m) = parse(&["--pull=missing", "-"]);
    assert_eq!(a.context.as_deref(), Some("-"));
    assert_eq!(build_refusal(&a, &m, 1001), None);
}

#[test]
fn every_refused_build_flag_is_refused_with_its_reason() {
    let cmd = build_command();
    for f in BUILD_REFUSED_FLAGS {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == f.id)
            .unwrap_or_else(|| panic!("{} is not a flag", f.id));
        let long = format!("--{}", arg.get_long().unwrap());
        let takes = arg.get_action().takes_values();
        let mut args = vec![long.as_str()];
        if takes && f.id != "pull" {
            args.push("x");
        }
        args.push(".");
        let msg = refused(&args).unwrap_or_else(|| panic!("{args:?} accepted"));
        assert_eq!(
            msg,
            format!(
                "{} is not allowed: {}",
                super::super::flag_name(&cmd, f.id),
                f.reason
            ),
            "{args:?}"
        );
        assert!(!msg.contains('\n'));
        if f.accepted.is_empty() {
            assert_eq!(arg.get_help_heading(), Some(REFUSED), "{}", f.id);
        }
    }
    // Short spellings too, and the first refused flag on the line is the one named.
    for (args, flag) in [
        (&["-m", "1g", "."][..], "-m/--memory"),
        (&["-c", "512", "."], "-c/--cpu-shares"),
        (&["-o", "type=local,dest=out", "."], "-o/--output"),
        (&["--squash", "--network=host", "."], "--squash"),
    ] {
        let msg = refused(args).unwrap();
        assert!(
            msg.starts_with(&format!("{flag} is not allowed: ")),
            "{msg}"
        );
    }
}

#[test]
fn pull_is_only_missing_or_never() {
    for args in [
        &["--pull", "always", "."][..],
        &["--pull=true", "."],
        &[".", "--pull"],
        // docker's boolean --pull before the path: the path is taken as its value,
        // and refused as one (docker would pull every time).
        &["--pull", "."],
    ] {
        let msg = refused(args).unwrap_or_else(|| panic!("{args:?} accepted"));
        assert!(
            msg.starts_with("--pull is not allowed: ")
                && msg.ends_with("(only --pull missing or --pull never)"),
            "{msg}"
        );
    }
    assert_eq!(refused(&["--pull", "missing", "."]), None);
}

#[test]
fn other_refusals_name_the_rule() {
    let m = refused(&["--label", "io.urun.build.uid=0", "."]).unwrap();
    assert!(
        m.starts_with("--label io.urun.build.uid=0 is not allowed: labels under io.urun."),
        "{m}"
    );
    for ctx in [
        "https://github.com/x/y.git",
        "git@github.com:x/y",
        "git://h/x",
        "http://h/ctx.tar",
    ] {
        let m = refused(&[ctx]).unwrap();
        assert!(
            m.contains("only a local directory or - can be a build context"),
            "{m}"
        );
    }
    let m = refused(&["-f", "-", "-"]).unwrap();
    assert!(m.starts_with("standard input cannot be both"), "{m}");
    let many: Vec<String> = (0..=MAX_BUILD_ITEMS).map(|i| format!("-tt{i}")).collect();
    let mut args: Vec<&str> = many.iter().map(String::as_str).collect();
    args.push(".");
    let m = refused(&args).unwrap();
    assert!(
        m.starts_with("-t/--tag is given 65 times: at most 64"),
        "{m}"
    );
    assert!(refused(&["--build-arg", "=x", "."])
        .unwrap()
        .contains("NAME=VALUE or NAME"));
    // No context: not a refusal of a flag (the caller says what is missing).
    assert_eq!(refused(&[]), None);
}

#[test]
fn unknown_build_flags_are_one_line_errors_naming_docker_build() {
    let e = parse_build(["urun", "--frobnicate", "."]).unwrap_err();
    assert_eq!(
        cli_one_line(&e),
        "unknown flag --frobnicate: urun does not know this docker build flag (see urun build --help)"
    );
}

fn cli_one_line(e: &clap::Error) -> String {
    super::super::one_line_error_for(e, &BUILD_USAGE)
}

#[test]
fn build_args_from_the_environment_as_docker_and_labels() {
    let args: Vec<String> = ["A=1", "HOME", "UNSET", "B=x=y", "A=2", "EMPTY="]
        .map(String::from)
        .to_vec();
    let m = build_args(&args, |n| (n == "HOME").then(|| "/home/alice".to_string()));
    let want: BTreeMap<String, String> = [
        ("A", "2"),
        ("HOME", "/home/alice"),
        ("B", "x=y"),
        ("EMPTY", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(m, want);
    let l = labels(&["a=1".into(), "b".into()]);
    assert_eq!(l.get("a").map(String::as_str), Some("1"));
    assert_eq!(l.get("b").map(String::as_str), Some(""));
}

#[test]
fn rmi_and_images_and_push_parse() {
    let cmd = rmi_command();
    let m = cmd
        .clone()
        .try_get_matches_from(["urun", "app:1", "abc"])
        .unwrap();
    let a = RmiArgs::from_arg_matches(&m).unwrap();
    assert_eq!(a.images, ["app:1", "abc"]);
    assert_eq!(refusal_in(&cmd, RMI_REFUSED_FLAGS, &m, 1), None);
    let m = cmd
        .clone()
        .try_get_matches_from(["urun", "-f", "app"])
        .unwrap();
    assert!(refusal_in(&cmd, RMI_REFUSED_FLAGS, &m, 1)
        .unwrap()
        .starts_with("-f/--force is not allowed: "));
    assert!(cmd.clone().try_get_matches_from(["urun"]).is_err());
    let m = images_command()
        .try_get_matches_from(["urun", "-q", "--registry"])
        .unwrap();
    let a = ImagesArgs::from_arg_matches(&m).unwrap();
    assert!(a.quiet && a.registry && !a.no_trunc);
    assert!(push_command().try_get_matches_from(["urun"]).is_err());
}

#[test]
fn help_lists_the_build_flags_refusals_and_statuses() {
    let h = build_command().render_long_help().to_string();
    for want in [
        "--build-arg",
        "--iidfile",
        "--secret",
        "build secrets are not available",
        "Exit status:",
        "124",
        "a RUN step failed",
    ] {
        assert!(h.contains(want), "{want}: {h}");
    }
    let top = super::super::urun_command().render_long_help().to_string();
    assert!(
        top.contains("urun build [OPTIONS] PATH | -") && top.contains("  rmi "),
        "{top}"
    );
}

#[test]
fn clap_definitions_are_consistent() {
    build_command().debug_assert();
    images_command().debug_assert();
    rmi_command().debug_assert();
    push_command().debug_assert();
    completion_command().debug_assert();
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("run".to_string()),
            Just("build".to_string()),
            Just("--socket".to_string()),
            Just("--socket=/s".to_string()),
            Just("-e".to_string()),
            Just("-it".to_string()),
            Just("--".to_string()),
            Just("-".to_string()),
            "[-a-z=/.]{0,8}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever the words: no panic; a run keeps every word but at most the one
        /// `run`; another command keeps everything after its word.
        #[test]
        fn splitting_never_panics_and_loses_no_argument(words in proptest::collection::vec(word(), 0..8)) {
            let mut argv = vec!["urun".to_string()];
            argv.extend(words);
            if let Ok((sub, out)) = split(&argv.iter().map(String::as_str).collect::<Vec<_>>()) {
                match sub {
                    Sub::Run => prop_assert!(out.len() == argv.len() || out.len() + 1 == argv.len()),
                    _ => prop_assert!(out.len() < argv.len()),
                }
                prop_assert_eq!(&out[0], "urun");
            }
        }
    }
}

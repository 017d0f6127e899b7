//! End-to-end against the real Docker daemon's legacy builder (docker 20.10,
//! `DOCKER_BUILDKIT=0`, the builder `urund` will drive): what the static Dockerfile
//! check concludes about the final user is what the builder actually produces, and a
//! context streamed by `urun::client::context` is accepted as docker's own (symlinks stay links,
//! a Dockerfile from outside the context is found under its added name).
//!
//! Only `FROM scratch` images with metadata instructions are built: nothing runs,
//! nothing is pulled. Every image is removed on drop.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use urun::client::context::{Builder, Dockerfile};
use urun::policy::dockerfile::{check, BaseImage, CheckInput, Report};

/// Streams `ctx` with `df` into `docker build -` and returns the image (removed on
/// drop) and the builder's output.
fn docker_build(ctx: &Path, df: Dockerfile, args: &[(&str, &str)]) -> (TestImage, String) {
    let mut tar = Vec::new();
    let summary = Builder::new(ctx, df)
        .write_to(&mut tar, &mut |_| {})
        .unwrap();
    let tag = format!("urun-test/legacy-{}:latest", unique());
    let image = TestImage(tag.clone());
    let mut cmd = Command::new("docker");
    cmd.args([
        "build",
        "--rm",
        "--force-rm",
        "-t",
        &tag,
        "-f",
        &summary.dockerfile_name,
    ]);
    for (k, v) in args {
        cmd.args(["--build-arg", &format!("{k}={v}")]);
    }
    let mut child = cmd
        .arg("-")
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker build");
    child.stdin.take().unwrap().write_all(&tar).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "docker build failed: {text}");
    (image, text)
}

fn inspect(image: &str, format: &str) -> String {
    let o = sh("docker", &["image", "inspect", "-f", format, image]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim_end_matches('\n').to_string()
}

fn static_check(text: &str, args: &[(&str, &str)]) -> Report {
    let args: BTreeMap<String, String> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let sev = BTreeMap::new();
    check(
        text,
        &CheckInput {
            build_args: &args,
            target: None,
            network: false,
            image_allowed: &|_| false,
            base_image: &|_| None::<BaseImage>,
            severity: &sev,
        },
    )
}

struct Tmp(std::path::PathBuf);
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn tmp() -> Tmp {
    let p = std::env::temp_dir().join(format!("urun-legacy-{}", unique()));
    std::fs::create_dir_all(&p).unwrap();
    Tmp(p)
}

#[test]
fn the_legacy_builder_resolves_the_same_final_user_as_the_static_check() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        // an empty line and a comment inside a continuation do not end it
        (
            "FROM scratch\nUSER 1000\nENV X a \\\n# comment\n\nUSER root\n",
            &[],
        ),
        // with the backtick escape, a backslash does not continue
        (
            "# escape=`\nFROM scratch\nUSER 1000\nENV X c:\\\nUSER 0:0\n",
            &[],
        ),
        (
            "# escape=`\nFROM scratch\nUSER 1000\nENV X c:`\n  USER 0:0\n",
            &[],
        ),
        // a comment line ending in a backslash does not continue either
        ("FROM scratch\nUSER 1\n# note \\\nUSER 2\n", &[]),
        // global ARG re-declared in the stage, and the :- :+ forms
        (
            "ARG U=1000\nFROM scratch\nARG U\nUSER ${U:-root}:${U:+7}\n",
            &[],
        ),
        (
            "ARG U=1000\nFROM scratch\nARG U\nUSER ${U:-root}\n",
            &[("U", "")],
        ),
        ("FROM scratch\nARG U=1000\nUSER $U\n", &[("U", "0")]),
        // a global ARG without re-declaration is not visible in the stage
        ("ARG U=5\nFROM scratch\nUSER x${U}y\n", &[]),
        // built-in proxy args need no declaration
        ("FROM scratch\nUSER p$HTTP_PROXY\n", &[("HTTP_PROXY", "9")]),
        // ENV wins over ARG; ENV pairs see the values from before the instruction
        ("FROM scratch\nARG U=1\nENV U=2\nUSER $U\n", &[]),
        ("FROM scratch\nENV A=3\nENV A=4 B=$A\nUSER $B\n", &[]),
        // quotes and escapes
        ("FROM scratch\nENV U=\"a b\" V='$U'\nUSER $V\n", &[]),
        ("FROM scratch\nENV U=x\nUSER \\$U:\"$U\"\n", &[]),
        // an unset variable is empty
        ("FROM scratch\nUSER ${NOPE}x\n", &[]),
        ("FROM scratch\nUSER $NOPE\n", &[]),
        // a continuation token with trailing blanks; continuation lines keep their spaces
        ("FROM scratch\nUSER 1 \\  \n  2\n", &[]),
        // instructions are case-insensitive; CRLF line ends
        ("from scratch\r\nuSeR 5:6\r\n", &[]),
        // the stage chain, and ONBUILD triggers run at FROM
        ("FROM scratch AS a\nUSER 4242\nFROM a\nLABEL x=y\n", &[]),
        (
            "FROM scratch AS a\nONBUILD USER 77\nFROM a\nLABEL x=y\n",
            &[],
        ),
        ("FROM scratch AS a\nENV U=31\nFROM A\nUSER $U\n", &[]),
        // no USER at all
        ("FROM scratch\nLABEL a=b\n", &[]),
    ];
    for (text, args) in cases {
        let report = static_check(text, args);
        assert!(
            !report
                .findings
                .iter()
                .any(|f| f.rule == urun::policy::dockerfile::Rule::ParseError),
            "{text:?}: {:?}",
            report.findings
        );
        let ours = report
            .facts
            .final_user
            .as_ref()
            .map(|u| u.value.clone().expect("known"))
            .unwrap_or_default();
        let dir = tmp();
        let (image, _) = docker_build(&dir.0, Dockerfile::Content(text.as_bytes().to_vec()), args);
        let theirs = inspect(&image.0, "{{.Config.User}}");
        assert_eq!(ours, theirs, "final USER of {text:?} with {args:?}");
    }
}

#[test]
fn a_context_with_a_symlink_to_etc_shadow_archives_the_link_not_the_file() {
    let dir = tmp();
    std::fs::write(
        dir.0.join("Dockerfile"),
        "FROM scratch\nCOPY . /ctx/\nUSER 1000\n",
    )
    .unwrap();
    std::fs::write(dir.0.join("plain"), "hello").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", dir.0.join("shadow")).unwrap();
    std::fs::write(dir.0.join(".dockerignore"), "ignored\n").unwrap();
    std::fs::write(dir.0.join("ignored"), "no").unwrap();
    let (image, _) = docker_build(&dir.0, Dockerfile::InContext("Dockerfile".into()), &[]);
    // export the image's files through a created (never started) container
    let name = format!("urun-test-legacy-{}", unique());
    let o = sh("docker", &["create", "--name", &name, &image.0, "/none"]);
    assert!(o.status.success(), "{}", stderr(&o));
    struct Rm(String);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = sh("docker", &["rm", "-f", &self.0]);
        }
    }
    let _rm = Rm(name.clone());
    let o = sh("docker", &["export", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut a = tar::Archive::new(o.stdout.as_slice());
    let mut seen = BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut data = String::new();
        let _ = e.read_to_string(&mut data);
        seen.insert(path, (e.header().entry_type(), link, data));
    }
    let shadow = &seen["ctx/shadow"];
    assert_eq!(shadow.0, tar::EntryType::Symlink);
    assert_eq!(shadow.1.as_deref(), Some("/etc/shadow"));
    assert_eq!(seen["ctx/plain"].2, "hello");
    assert!(!seen.contains_key("ctx/ignored"), "{:?}", seen.keys());
    // the daemon drops .dockerignore from what COPY sees only when it lists itself
    assert!(seen.contains_key("ctx/.dockerignore"));
}

//! End-to-end: `urun build` through a real urund, as real users, on a dedicated build
//! dockerd with `userns-remap = "default"` (tests/common/engine.rs: its own socket,
//! data-root, exec-root, pid file and bridge, all removed afterwards) loaded with the
//! test busybox image; the run engine is the machine's main daemon.
//!
//! The client is the real `urun build`, run as the test user; where a test needs what
//! urun never does (a context that never ends), a small crafted client ([`build_as`],
//! python3 as the test user) speaks the protocol with an archive made by
//! `urun::client::context::Builder`.
//!
//! Every image a test builds is removed from the main daemon on drop; the build
//! engine goes with everything in it; the `dockremap` user is removed if this test
//! binary's engine created it.

mod common;

use common::engine::{EngineConfig, ExtraEngine};
use common::*;
use serial_test::serial;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use urun::client::context::{Builder, Dockerfile};
use urun::wire::{BuildRequest, VERSION};

/// The crafted client: connects as the user, sends the `Build` frame, the archive in
/// `Context` frames of 256 KiB (once the archive's file exists: a test may write it
/// after the request was admitted), and (unless `end` is false) `ContextEnd`; then prints
/// `Stdout` frames on stdout, `Stderr` frames on stderr, a `Result` as a line
/// `urun-result: <json>` on stderr, and exits with the `Exit` status or the `Error`
/// frame's (its message on stderr).
const CLIENT: &str = r#"
import os, socket, struct, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
req = sys.argv[2].encode()
s.sendall(struct.pack(">BI", 0x07, len(req)) + req)
# The archive may come later than the request (a test writes it once admitted).
while not os.path.exists(sys.argv[3]):
    time.sleep(0.05)
data = open(sys.argv[3], "rb").read()
end = sys.argv[4] == "end"
def frame(k, p):
    return struct.pack(">BI", k, len(p)) + p
try:
    for i in range(0, len(data), 262144):
        s.sendall(frame(0x08, data[i:i + 262144]))
    if end:
        s.sendall(frame(0x09, b""))
except OSError:
    pass
buf = b""
def need(n):
    global buf
    while len(buf) < n:
        b = s.recv(65536)
        if not b:
            sys.stderr.write("connection closed without an exit status\n")
            sys.exit(99)
        buf += b
while True:
    need(5)
    k, n = struct.unpack(">BI", buf[:5])
    need(5 + n)
    body, buf = buf[5:5 + n], buf[5 + n:]
    if k == 0x81:
        sys.stdout.write(body.decode("utf-8", "replace")); sys.stdout.flush()
    elif k == 0x82:
        sys.stderr.write(body.decode("utf-8", "replace")); sys.stderr.flush()
    elif k == 0x86:
        sys.stderr.write("urun-result: " + body.decode() + "\n")
    elif k == 0x83:
        sys.exit(body[0])
    elif k == 0x84:
        sys.stderr.write(body[1:].decode() + "\n")
        sys.exit(body[0])
"#;

/// The build engine's `default-ulimits` nproc.
const NPROC: u32 = 4096;

/// A directory removed on drop.
struct Tmp(PathBuf);
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(mode: u32) -> Tmp {
    let p = std::env::temp_dir().join(format!("urun-build-{}", unique()));
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    Tmp(p)
}

/// Images (by ID) on the main daemon that a test's builds made, removed on drop.
#[derive(Default)]
struct Built(Vec<String>);
impl Drop for Built {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = sh("docker", &["rmi", "-f", id]);
        }
    }
}

/// Removes the `dockremap` user on drop if it did not exist when made.
struct Dockremap(bool);
impl Dockremap {
    fn note() -> Dockremap {
        Dockremap(!sh("getent", &["passwd", "dockremap"]).status.success())
    }
}
impl Drop for Dockremap {
    fn drop(&mut self) {
        if self.0 && sh("getent", &["passwd", "dockremap"]).status.success() {
            let o = sh("userdel", &["dockremap"]);
            if !o.status.success() {
                eprintln!("userdel dockremap: {}", stderr(&o));
            }
            let _ = sh("groupdel", &["dockremap"]);
            for f in ["/etc/subuid", "/etc/subgid"] {
                if let Ok(t) = std::fs::read_to_string(f) {
                    let kept: String = t
                        .lines()
                        .filter(|l| !l.starts_with("dockremap:"))
                        .map(|l| format!("{l}\n"))
                        .collect();
                    let _ = std::fs::write(f, kept);
                }
            }
        }
    }
}

/// One build set-up: the user-namespaced build engine with the test image, a group,
/// two users in it, urund with builds on and `extra` policy text.
struct Setup {
    // Dropped in this order: urund, the users, the group, the engine, dockremap.
    d: Daemon,
    alice: TestUser,
    bob: TestUser,
    _group: TestGroup,
    engine: ExtraEngine,
    _dockremap: Dockremap,
    built: Built,
}

impl Setup {
    fn new(extra: &str) -> Setup {
        Setup::allowing(&[image()], extra)
    }

    /// A set-up whose `images.allow` is `allow`.
    fn allowing(allow: &[&str], extra: &str) -> Setup {
        let dockremap = Dockremap::note();
        // The recommended build engine: user-namespaced, and a process limit for the
        // containers it makes (the build API has no pids limit; see SECURITY.md).
        let engine = ExtraEngine::start(EngineConfig {
            userns_remap: Some("default".into()),
            extra: Some(serde_json::json!({
                "default-ulimits": {"nproc": {"Name": "nproc", "Hard": NPROC, "Soft": NPROC}}
            })),
            ..Default::default()
        });
        engine.load_image(image());
        let group = TestGroup::new("urb");
        let alice = TestUser::new(&[&group]);
        let bob = TestUser::new(&[&group]);
        let runtime = match extra.contains("max_runtime") {
            true => "",
            false => "max_runtime = \"2m\"\n",
        };
        // Only the test image is admitted by images.allow (unless a test says
        // otherwise): one's own builds run through [build] run_own, not through a
        // catch-all pattern.
        let allow: Vec<String> = allow.iter().map(|a| format!("{a:?}")).collect();
        let policy = format!(
            "{}[images]\nallow = [{}]\n[build]\nenabled = true\nengine = \"{}\"\n{runtime}{extra}",
            policy_for(&group),
            allow.join(", "),
            engine.socket().display()
        );
        let d = Daemon::start(&policy);
        Setup {
            d,
            alice,
            bob,
            _group: group,
            engine,
            _dockremap: dockremap,
            built: Built::default(),
        }
    }

    /// Containers and images on the build engine, besides the test image.
    fn build_engine_leftovers(&self) -> (String, String) {
        let c = self.engine.must(&["ps", "-aq"]);
        let i = self.engine.must(&["images", "-aq", "--no-trunc"]);
        let base = self
            .engine
            .must(&["image", "inspect", "-f", "{{.Id}}", image()])
            .trim()
            .to_string();
        let others: Vec<&str> = i.split_whitespace().filter(|x| *x != base).collect();
        (c.trim().to_string(), others.join(" "))
    }

    /// Nothing is left on the build engine besides the test image.
    fn assert_build_engine_clean(&self) {
        let (containers, images) = self.build_engine_leftovers();
        assert_eq!(
            (containers.as_str(), images.as_str()),
            ("", ""),
            "{}",
            self.d.log_text()
        );
    }
}

/// `n` bytes of a fixed pseudo-random pattern.
fn noise(n: u32) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// The context directory `dir` with `dockerfile`, archived as the client would.
fn context(dir: &Path, dockerfile: &str) -> (PathBuf, String) {
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    let tar = dir.with_extension("tar");
    let f = std::fs::File::create(&tar).unwrap();
    let summary = Builder::new(dir, Dockerfile::InContext("Dockerfile".into()))
        .write_to(f, &mut |_| {})
        .unwrap();
    std::fs::set_permissions(&tar, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    (tar, summary.dockerfile_name)
}

fn request(dockerfile: &str, tags: &[&str]) -> BuildRequest {
    BuildRequest {
        version: VERSION,
        dockerfile: dockerfile.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    }
}

/// Runs the crafted client as `user`.
fn build_as(d: &Daemon, user: &TestUser, req: &BuildRequest, tar: &Path, end: bool) -> Output {
    let req = serde_json::to_string(req).unwrap();
    user.command("/usr/bin/python3")
        .args(["-c", CLIENT, d.socket.to_str().unwrap(), &req])
        .arg(tar)
        .arg(if end { "end" } else { "noend" })
        .stdin(Stdio::null())
        .output()
        .expect("python3")
}

/// A build in a fresh context directory as `user`, with the real client
/// (`urun build -t TAG... DIR`, the directory read as the user).
fn build(s: &Setup, user: &TestUser, dockerfile: &str, tags: &[&str]) -> Output {
    let dir = tmp(0o755);
    std::fs::write(dir.0.join("Dockerfile"), dockerfile).unwrap();
    let mut args = vec!["build"];
    for t in tags {
        args.extend(["-t", t]);
    }
    let path = dir.0.display().to_string();
    args.push(&path);
    let mut c = s.d.urun(user, &args);
    c.stdin(Stdio::null()).output().expect("urun build")
}

/// The ID of `user`'s image `name` (in their namespace) on the run engine.
fn own_id(user: &TestUser, name: &str) -> String {
    image_id(&format!("urun/{}/{name}", user.name))
}

#[test]
#[serial]
fn a_run_step_runs_as_a_remapped_uid_and_only_its_author_runs_the_image() {
    let mut s = Setup::new("");
    let df = format!(
        "FROM {}\nVOLUME /data\nRUN cat /proc/self/uid_map && cat /proc/self/uid_map > /uid_map \
         && grep 'Max processes' /proc/self/limits\nUSER 1000\n",
        image()
    );
    let o = build(&s, &s.alice, &df, &["app:1"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let id = own_id(&s.alice, "app:1");
    assert!(stdout(&o).contains(&format!("Successfully built {}", &id[7..19])));
    s.built.0.push(id.clone());
    // The RUN step's root was a subordinate uid of the host: uid_map "0 <start> <n>"
    // with start > 0 (the build output shows it).
    let out = stdout(&o);
    let map_line = out
        .lines()
        .find(|l| l.split_whitespace().count() == 3 && l.trim_start().starts_with("0 "))
        .unwrap_or_else(|| panic!("no uid_map in the build output:\n{out}"));
    let host: u64 = map_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(host > 0, "RUN ran as host root: {map_line}");
    // and under the engine's process limit
    let limits = out
        .lines()
        .find(|l| l.starts_with("Max processes"))
        .unwrap_or_else(|| panic!("no limits line:\n{out}"));
    assert_eq!(
        limits.split_whitespace().nth(2),
        Some(NPROC.to_string().as_str()),
        "{limits}"
    );
    // The image is on the run engine, tagged in alice's namespace, labelled by urund.
    let tag = format!("urun/{}/app:1", s.alice.name);
    assert_eq!(image_id(&tag), id);
    let o = sh(
        "docker",
        &[
            "image",
            "inspect",
            "-f",
            "{{index .Config.Labels \"io.urun.build.uid\"}}",
            &tag,
        ],
    );
    assert_eq!(stdout(&o).trim(), s.alice.uid.to_string());
    // and no longer on the build engine, nor the RUN step's anonymous volume
    s.assert_build_engine_clean();
    assert_eq!(s.engine.must(&["volume", "ls", "-q"]).trim(), "");
    // Its author runs it, as herself; the file the RUN step wrote is there.
    let o =
        s.d.run(&s.alice, &[&tag, "sh", "-c", "id -u; cat /uid_map"], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with(&format!("{}\n", s.alice.uid)), "{text}");
    assert!(text.contains(map_line.trim()), "{text}");
    // One audit record of the build: who, the digests, the image, the tags, the end.
    s.d.wait_log("\"argv\":[\"build\",\"app:1\"]", Duration::from_secs(10));
    let log = s.d.log_text();
    let line = log
        .lines()
        .filter_map(|l| l.strip_prefix("urund audit: "))
        .find(|l| l.contains("\"argv\":[\"build\",\"app:1\"]"))
        .unwrap();
    let rec: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(rec["uid"], s.alice.uid);
    assert_eq!(rec["status"], 0);
    assert_eq!(rec["image_id"], id.as_str());
    assert_eq!(rec["build"]["tags"][0], tag.as_str());
    let sha = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(df.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(rec["build"]["dockerfile"], sha.as_str());
    assert!(rec["build"]["context_bytes"].as_u64().unwrap() > 0);
    // By ID too.
    let o = s.d.run(&s.alice, &[&id, "true"], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Another user may not, by tag or by ID.
    for name in [tag.as_str(), id.as_str()] {
        let o = s.d.run(&s.bob, &[name, "true"], b"");
        assert_eq!(o.status.code(), Some(125), "{name}: {}", stderr(&o));
    }
}

#[test]
#[serial]
fn another_user_cannot_run_someone_elses_build_nor_pull_into_the_namespace() {
    let mut s = Setup::new("");
    let df = format!("FROM {}\nUSER 1000\n", image());
    let o = build(&s, &s.alice, &df, &["mine"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    s.built.0.push(own_id(&s.alice, "mine"));
    let tag = format!("urun/{}/mine", s.alice.name);
    let o = s.d.run(&s.alice, &[&tag, "true"], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = s.d.run(&s.bob, &[&tag, "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("images.allow"), "{}", stderr(&o));
    // Named in bob's own namespace, it is still not his build.
    let theirs = format!("urun/{}/mine:latest", s.bob.name);
    let _ = sh("docker", &["tag", &tag, &theirs]);
    let o = s.d.run(&s.bob, &[&theirs, "true"], b"");
    let _ = sh("docker", &["rmi", &theirs]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("not one of your builds"),
        "{}",
        stderr(&o)
    );
    // A pull of a reference inside the namespace is refused, never tried.
    let o = s.d.run(
        &s.bob,
        &[&format!("urun/{}/nothere:1", s.bob.name), "true"],
        b"",
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("build.namespace"), "{}", stderr(&o));
}

#[test]
#[serial]
fn each_static_check_refuses_with_its_line_and_exit_125() {
    let s = Setup::new("");
    let img = image();
    let cases: Vec<(String, &str)> = vec![
        (
            format!("FROM {img}\nRUN true\n"),
            "[user.missing] Dockerfile:",
        ),
        (
            format!("FROM {img}\nUSER 1000\nUSER root\n"),
            "[user.root] Dockerfile:3:",
        ),
        (
            format!("FROM {img}\nARG U=0\nUSER $U\n"),
            "[user.root] Dockerfile:3:",
        ),
        (
            format!("FROM {img}\nUSER 0:0\n"),
            "[user.root] Dockerfile:2:",
        ),
        (
            "FROM not-allowed.example/x:1\nUSER 1000\n".into(),
            "[from.not-allowed] Dockerfile:1:",
        ),
        (
            format!("FROM {img}\nRUN --mount=type=cache,target=/c true\nUSER 1000\n"),
            "[run.mount] Dockerfile:2:",
        ),
        (
            format!("FROM {img}\nRUN --network=host true\nUSER 1000\n"),
            "[run.network] Dockerfile:2:",
        ),
        (
            format!("FROM {img}\nRUN --security=insecure true\nUSER 1000\n"),
            "[run.security] Dockerfile:2:",
        ),
        (
            format!("FROM {img}\nADD http://example.org/x /x\nUSER 1000\n"),
            "[add.url] Dockerfile:2:",
        ),
    ];
    for (df, want) in &cases {
        let o = build(&s, &s.alice, df, &["x"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{df:?}: {err}");
        assert!(
            err.contains(&format!("urun: build: error {want}")),
            "{df:?}: {err}"
        );
        assert!(err.contains("nothing was built"), "{df:?}: {err}");
    }
    // Nothing reached either engine.
    s.assert_build_engine_clean();
    let o = sh(
        "docker",
        &["images", "-q", &format!("urun/{}/x", s.alice.name)],
    );
    assert_eq!(stdout(&o).trim(), "");
}

#[test]
#[serial]
fn a_context_over_max_context_is_refused_while_it_streams() {
    let s = Setup::new("max_context = \"4m\"\n");
    let dir = tmp(0o755);
    // 6 MiB.
    let big = noise(6 << 20);
    std::fs::write(dir.0.join("big"), &big).unwrap();
    let (tar, name) = context(
        &dir.0,
        &format!("FROM {}\nCOPY big /big\nUSER 1000\n", image()),
    );
    // The client never sends ContextEnd: only a refusal while streaming answers it.
    let t = Instant::now();
    let o = build_as(&s.d, &s.alice, &request(&name, &["big"]), &tar, false);
    let _ = std::fs::remove_file(&tar);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("[build] max_context"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(30));
    s.assert_build_engine_clean();
    s.d.wait_log("build.max_context", Duration::from_secs(10));
}

#[test]
#[serial]
fn a_build_past_max_runtime_is_stopped_with_124_and_leaves_nothing() {
    let s = Setup::new("max_runtime = \"5s\"\n");
    // A VOLUME before the RUN step: its container gets an anonymous volume.
    let df = format!(
        "FROM {}\nVOLUME /data\nUSER 1000\nRUN echo started; sleep 300\n",
        image()
    );
    let t = Instant::now();
    let o = build(&s, &s.alice, &df, &["slow"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(124), "{}\n{err}", stdout(&o));
    assert!(err.contains("[build] max_runtime"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert!(stdout(&o).contains("started"), "{}", stdout(&o));
    s.assert_build_engine_clean();
    // No volume either.
    assert_eq!(s.engine.must(&["volume", "ls", "-q"]).trim(), "");
}

#[test]
#[serial]
fn a_failing_run_step_exits_1_with_its_output_and_leaves_nothing() {
    let s = Setup::new("");
    let df = format!(
        "FROM {}\nVOLUME /data\nRUN echo kept > /data/x\nUSER 1000\n\
         RUN echo about to fail; echo on-stderr >&2; exit 3\n",
        image()
    );
    let o = build(&s, &s.alice, &df, &["broken"]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        out.contains("about to fail") && out.contains("on-stderr"),
        "{out}"
    );
    assert!(err.contains("returned a non-zero code: 3"), "{err}");
    s.assert_build_engine_clean();
    // The RUN steps' anonymous volumes (the base's VOLUME) went with their containers.
    assert_eq!(s.engine.must(&["volume", "ls", "-q"]).trim(), "");
}

#[test]
#[serial]
fn an_image_that_fails_a_check_is_removed_and_never_tagged() {
    let s = Setup::new("setuid = \"error\"\n");
    // USER names a passwd entry with uid 0: the Dockerfile check cannot know it, the
    // image check reads the image's own /etc/passwd.
    let root_alias = format!(
        "FROM {}\nRUN echo 'admin:x:0:0:admin:/:/bin/sh' >> /etc/passwd\nUSER admin\n",
        image()
    );
    let setuid = format!(
        "FROM {}\nRUN cp /bin/busybox /suid && chmod 4755 /suid\nUSER 1000\n",
        image()
    );
    for (df, want) in [
        (root_alias, "[image.user-root]"),
        (setuid, "[image.setuid]"),
    ] {
        let o = build(&s, &s.alice, &df, &["checked"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{}\n{err}", stdout(&o));
        assert!(
            err.contains(&format!("urun: build: error {want} image:")),
            "{err}"
        );
        assert!(err.contains("nothing was tagged"), "{err}");
        s.assert_build_engine_clean();
        let o = sh(
            "docker",
            &["images", "-q", &format!("urun/{}/checked", s.alice.name)],
        );
        assert_eq!(stdout(&o).trim(), "");
    }
    // A secret-looking variable is a warning: the build goes through. Two stages:
    // the first stage's image does not stay on the build engine either.
    let mut s = s;
    let df = format!(
        "FROM {0} AS first\nRUN echo x > /x\nFROM {0}\nCOPY --from=first /x /x\n\
         ENV API_TOKEN=x\nUSER 1000\n",
        image()
    );
    // A name of several components lands in the namespace as well.
    let o = build(&s, &s.alice, &df, &["warned", "team/warned:2"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    s.built.0.push(own_id(&s.alice, "warned"));
    assert_eq!(
        own_id(&s.alice, "team/warned:2"),
        own_id(&s.alice, "warned")
    );
    assert!(
        err.contains("urun: build: warning [image.secret-env] image:"),
        "{err}"
    );
    assert!(!err.contains("API_TOKEN=x"), "{err}");
    s.assert_build_engine_clean();
}

/// Measurement, not a check (run with `--ignored --nocapture`): the same build of a
/// 64 MiB context through `urun build` and with `docker build` straight at the build
/// engine, three times each, wall-clock.
#[test]
#[serial]
#[ignore]
fn measure_a_build_through_urund_against_docker_build() {
    let s = Setup::new("");
    let dir = tmp(0o755);
    let big = noise(64 << 20);
    std::fs::write(dir.0.join("big"), &big).unwrap();
    std::fs::set_permissions(
        dir.0.join("big"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let df = format!("FROM {}\nCOPY big /big\nUSER 1000\n", image());
    std::fs::write(dir.0.join("Dockerfile"), &df).unwrap();
    let path = dir.0.display().to_string();
    let mut built = Built::default();
    for round in 0..3 {
        let t = Instant::now();
        let o =
            s.d.urun(&s.alice, &["build", "--no-cache", "-t", "m", &path])
                .stdin(Stdio::null())
                .output()
                .unwrap();
        let urun = t.elapsed();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        built.0.push(own_id(&s.alice, "m"));
        let t = Instant::now();
        let o = std::process::Command::new("docker")
            .args([
                "-H",
                &s.engine.host(),
                "build",
                "--no-cache",
                "-q",
                "-t",
                "m:direct",
                &path,
            ])
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap();
        let docker = t.elapsed();
        assert!(o.status.success(), "{}", stderr(&o));
        let _ = s.engine.docker(&["rmi", "-f", "m:direct"]);
        eprintln!("round {round}: urun build {urun:?}, docker build {docker:?}");
    }
}

/// A RUN step can print the builder's own lines (` ---> Running in <id>`); urund once
/// removed whatever container such a line named (any container on the engine, with its
/// volumes). Now a container named in the output is removed only if it has this
/// build's forced shape and no urun label: a victim on the same engine keeps running.
#[test]
#[serial]
fn a_container_named_in_a_run_steps_output_is_left_alone() {
    let s = Setup::new("");
    let victim = s
        .engine
        .must(&[
            "run",
            "-d",
            "--label",
            "io.urun.uid=4242",
            image(),
            "sleep",
            "600",
        ])
        .trim()
        .to_string();
    let plain = s
        .engine
        .must(&["run", "-d", image(), "sleep", "600"])
        .trim()
        .to_string();
    let df = format!(
        "FROM {}\nUSER 1000\nRUN echo ' ---> Running in {}'; echo ' ---> Running in {}'; exit 3\n",
        image(),
        &victim[..12],
        &plain[..12]
    );
    let o = build(&s, &s.alice, &df, &["b2"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    for id in [&victim, &plain] {
        let state = s
            .engine
            .must(&["inspect", "-f", "{{.State.Running}}", id])
            .trim()
            .to_string();
        assert_eq!(
            state,
            "true",
            "container {id} was touched\n{}",
            s.d.log_text()
        );
    }
    s.engine.must(&["rm", "-f", &victim, &plain]);
}

/// Review S1: urund deleted any untagged image created since the build began whose ID
/// the build's output named (` ---> <id>`), so a RUN step could print the ID of
/// another user's build's intermediate image (learnt, say, from a cache hit) and have
/// it deleted under that build. Now an image is deleted only if the engine says this
/// build made it (committed from a container this build ran, or a COPY on such an
/// image): bob's first stage survives alice's build, and bob's build goes through.
#[test]
#[serial]
fn an_image_id_printed_by_a_run_step_is_not_deleted() {
    let mut s = Setup::new("");
    // Alice's request is admitted first (her context comes later, naming bob's image).
    let dir = tmp(0o755);
    let tar = dir.0.join("context.tar");
    let alice = {
        let (d, user, tar) = (
            s.d.socket.clone(),
            s.alice.command("/usr/bin/python3"),
            tar.clone(),
        );
        let req = serde_json::to_string(&request("Dockerfile", &["s1"])).unwrap();
        let mut c = user;
        c.args(["-c", CLIENT, d.to_str().unwrap(), &req])
            .arg(&tar)
            .arg("end")
            .stdin(Stdio::null());
        std::thread::spawn(move || c.output().expect("python3"))
    };
    std::thread::sleep(Duration::from_secs(1));
    // Bob's two-stage build: the first stage's image waits, untagged and unused,
    // while the second stage's RUN step sleeps; then COPY --from takes it.
    let bob_df = format!(
        "FROM {0} AS first\nRUN echo from-the-first-stage > /v\nFROM {0}\nRUN sleep 15\n\
         COPY --from=first /v /v\nUSER 1000\n",
        image()
    );
    let bob = {
        let dir = tmp(0o755);
        std::fs::write(dir.0.join("Dockerfile"), &bob_df).unwrap();
        let path = dir.0.display().to_string();
        let mut c = s.d.urun(&s.bob, &["build", "-t", "victim", &path]);
        c.stdin(Stdio::null());
        std::thread::spawn(move || {
            let o = c.output().expect("urun build");
            drop(dir);
            o
        })
    };
    // The first stage's image: the one image besides the base while bob's RUN sleeps.
    let t = Instant::now();
    let first = loop {
        let (containers, images) = s.build_engine_leftovers();
        if !containers.is_empty() && !images.is_empty() {
            let v: Vec<&str> = images.split_whitespace().collect();
            assert_eq!(v.len(), 1, "{images}");
            break v[0].to_string();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "bob's build did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Alice's RUN step prints the builder's line for it, and her build fails.
    let df = format!(
        "FROM {}\nUSER 1000\nRUN echo ' ---> {}'; exit 3\n",
        image(),
        &first["sha256:".len().."sha256:".len() + 12]
    );
    std::fs::create_dir(dir.0.join("ctx")).unwrap();
    let (made, _) = context(&dir.0.join("ctx"), &df);
    std::fs::rename(&made, &tar).unwrap();
    let o = alice.join().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    // Bob's image is still there, and his build goes through.
    let there = s.engine.docker(&["image", "inspect", &first]);
    assert!(
        there.status.success(),
        "bob's first stage {first} was deleted by alice's build\n{}",
        s.d.log_text()
    );
    let o = bob.join().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    s.built.0.push(own_id(&s.bob, "victim"));
    // Each build still cleaned up after itself.
    let (containers, images) = s.build_engine_leftovers();
    assert_eq!((containers.as_str(), images.as_str()), ("", ""));
}

/// Review B2's residual: a container named in the output was removed if it had the
/// build's memory limit and network mode and no urun label, which every build's step
/// containers have: a RUN step naming another user's running step container (its ID
/// is readable in `/proc/*/cgroup` on the build host) had it removed 30 s after the
/// build ended, and that build failed. Now each build in progress has its own mark
/// (its steps' `/dev/shm` size), and only a container with this build's mark is this
/// build's.
#[test]
#[serial]
fn another_builds_step_container_named_in_the_output_is_left_alone() {
    let s = Setup::new("memory = \"256m\"\n");
    // Another build's step: the same forced settings, another build's mark.
    let shm = ((64u64 << 20) + 7 * 4096).to_string();
    let other = s
        .engine
        .must(&[
            "run",
            "-d",
            "--memory",
            "256m",
            "--memory-swap",
            "256m",
            "--network",
            "none",
            "--shm-size",
            &shm,
            image(),
            "sleep",
            "600",
        ])
        .trim()
        .to_string();
    let df = format!(
        "FROM {}\nUSER 1000\nRUN grep ' /dev/shm ' /proc/mounts; \
         echo ' ---> Running in {}'; exit 3\n",
        image(),
        &other[..12]
    );
    let t = Instant::now();
    let o = build(&s, &s.alice, &df, &["b2r"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // The step got this build's mark: 64 MiB and one page (the first mark).
    assert!(stdout(&o).contains("size=65540k"), "{}", stdout(&o));
    // urund's clean-up is over once it logs the build's audit record; the old code
    // waited 30 s for the container, then removed it.
    s.d.wait_log("\"argv\":[\"build\",\"b2r\"]", Duration::from_secs(60));
    let state = s
        .engine
        .must(&["inspect", "-f", "{{.State.Running}}", &other])
        .trim()
        .to_string();
    assert_eq!(
        state,
        "true",
        "another build's step {other} was touched\n{}",
        s.d.log_text()
    );
    assert!(t.elapsed() < Duration::from_secs(25), "{:?}", t.elapsed());
    assert!(
        s.d.log_text()
            .contains("is not a step of that build; left alone"),
        "{}",
        s.d.log_text()
    );
    s.engine.must(&["rm", "-f", &other]);
}

/// Docker reads a bare hexadecimal name as the start of an image ID: with the default
/// `images.allow = ["*"]`, `FROM <12 hex digits>` was judged as the name
/// `<hex>:latest`, then found on the run engine as another member's image (and copied
/// to the build engine by that prefix): alice's `RUN` step read bob's build. The image
/// found must carry the name typed, and a name of hex digits only is refused.
#[test]
#[serial]
fn an_image_id_prefix_in_from_cannot_reach_another_members_image() {
    let mut s = Setup::allowing(&["*"], "");
    let secret = "bobs-secret-4f1c";
    let df = format!(
        "FROM {}\nRUN echo {secret} > /secret && chmod 644 /secret\nUSER 1000\n",
        image()
    );
    let o = build(&s, &s.bob, &df, &["vault"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let bobs = own_id(&s.bob, "vault");
    s.built.0.push(bobs.clone());
    let prefix = &bobs["sha256:".len().."sha256:".len() + 12];
    for df in [
        format!("FROM {prefix}\nRUN cat /secret\nUSER 1000\n"),
        format!(
            "FROM {}\nCOPY --from={prefix} /secret /s\nRUN cat /s\nUSER 1000\n",
            image()
        ),
    ] {
        let o = build(&s, &s.alice, &df, &["stolen"]);
        let (out, err) = (stdout(&o), stderr(&o));
        if o.status.success() {
            s.built.0.push(own_id(&s.alice, "stolen"));
        }
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "alice read bob's image through {prefix}:\n{out}\n{err}"
        );
        assert_eq!(o.status.code(), Some(125), "{df}\n{out}\n{err}");
        assert!(err.contains("build.base"), "{err}");
        // One line of refusal (after the client's "Sending build context" line).
        assert_eq!(
            err.lines().filter(|l| l.starts_with("urun:")).count(),
            1,
            "{err}"
        );
        s.assert_build_engine_clean();
    }
}

//! End-to-end: the real `urun build` client (and the shell function's `docker build`)
//! against a real urund, as real users. The build engine is the run daemon (the
//! default `[build] engine`); tests/build.rs proves the build path itself on a
//! user-namespaced engine.
//!
//! What is proven here is the client's part: the context is read as the caller
//! (a symlink to `/etc/shadow` is archived as a link, `.dockerignore` holds, a file
//! the caller cannot read or a FIFO stops the build before anything is built), the
//! Dockerfile may come from outside the context or stdin, a tar archive on stdin is a
//! context, docker's output lines and `--iidfile`, the exit statuses, and Ctrl-C
//! cancelling a build, which leaves nothing behind.

mod common;

use common::*;
use serial_test::serial;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

struct Setup {
    _g: TestGroup,
    alice: TestUser,
    bob: TestUser,
    d: Daemon,
}

impl Setup {
    fn new() -> Setup {
        let g = TestGroup::new("urg");
        let alice = TestUser::new(&[&g]);
        let bob = TestUser::new(&[&g]);
        let policy = format!(
            "{}[images]\nallow = [\"urun-test/*\"]\n[build]\nenabled = true\nallow_root_engine = true\n",
            policy_for(&g)
        );
        let d = Daemon::start(&policy);
        Setup {
            _g: g,
            alice,
            bob,
            d,
        }
    }

    /// `urun ARGS` as `user` in the directory `dir`, with `input` on stdin.
    fn urun_in(
        &self,
        user: &TestUser,
        dir: &Path,
        args: &[&str],
        input: &[u8],
    ) -> std::process::Output {
        let mut c = self.d.urun(user, args);
        c.current_dir(dir);
        run_with_input(c, input)
    }
}

impl Drop for Setup {
    /// Whatever a test built, in either user's namespace, goes.
    fn drop(&mut self) {
        for u in [&self.alice, &self.bob] {
            let o = self
                .d
                .docker(&["images", "-q", "--no-trunc", &format!("urun/{}/*", u.name)]);
            for id in stdout(&o).split_whitespace() {
                let _ = self.d.docker(&["rmi", "-f", id]);
            }
        }
    }
}

/// A directory of `user`'s (in their home), with files; removed with the user.
fn context(user: &TestUser, files: &[(&str, &str)]) -> PathBuf {
    let dir = PathBuf::from(format!("/home/{}/ctx-{}", user.name, unique()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, content) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    chown(user, &dir);
    dir
}

fn chown(user: &TestUser, path: &Path) {
    let o = sh(
        "chown",
        &[
            "-R",
            &format!("{}:{}", user.uid, user.gid),
            path.to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
}

fn df(body: &str) -> String {
    format!("FROM {}\n{body}USER 1000\n", image())
}

/// Images of `user`'s namespace on the engine.
fn own_images(s: &Setup, user: &TestUser) -> Vec<String> {
    let o =
        s.d.docker(&["images", "-q", &format!("urun/{}/*", user.name)]);
    stdout(&o).split_whitespace().map(String::from).collect()
}

#[test]
#[serial]
fn a_build_reads_the_context_as_the_caller_and_prints_what_docker_prints() {
    let s = Setup::new();
    let dir = context(
        &s.alice,
        &[
            (
                "Dockerfile",
                &df("COPY . /ctx/\nRUN ls -A /ctx && readlink /ctx/shadow\n"),
            ),
            ("data/file", "data\n"),
            ("secret.key", "do not send\n"),
            (".dockerignore", "secret.key\n"),
        ],
    );
    std::os::unix::fs::symlink("/etc/shadow", dir.join("shadow")).unwrap();
    // Outside the context (the ID file would change it).
    let iid = PathBuf::from(format!("/home/{}/iid-{}", s.alice.name, unique()));
    let iid_s = iid.display().to_string();
    let o = s.urun_in(
        &s.alice,
        &dir,
        &[
            "build",
            "-t",
            "app:1",
            "-t",
            "app:2",
            "--iidfile",
            &iid_s,
            ".",
        ],
        b"",
    );
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    // The link is a link (its target printed by readlink, the file never read), the
    // ignored file is not there.
    assert!(out.contains("\n/etc/shadow\n"), "{out}");
    assert!(out.contains("data") && !out.contains("secret.key"), "{out}");
    assert!(err.starts_with("Sending build context to urund  "), "{err}");
    // docker's legacy builder's last lines, and the ID file.
    let id = std::fs::read_to_string(&iid).unwrap();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id:?}");
    let want = format!(
        "Successfully built {}\nSuccessfully tagged urun/{u}/app:1\nSuccessfully tagged urun/{u}/app:2\n",
        &id[7..19],
        u = s.alice.name
    );
    assert!(out.ends_with(&want), "{out}");
    assert_eq!(image_id(&format!("urun/{}/app:1", s.alice.name)), id);
    // -q: only the ID on stdout.
    let o = s.urun_in(&s.alice, &dir, &["build", "-q", "-t", "app:3", "."], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{id}\n"), "the same build, cached");
    // The author runs it; urun images lists it; bob cannot remove it.
    let o = s.d.run(
        &s.alice,
        &[
            &format!("urun/{}/app:1", s.alice.name),
            "cat",
            "/ctx/data/file",
        ],
        b"",
    );
    assert_eq!(stdout(&o), "data\n", "{}", stderr(&o));
    let o = s.d.run(&s.alice, &["images"], b"");
    assert!(stdout(&o).contains(&format!("urun/{}/app", s.alice.name)));
    let o = s.d.run(&s.bob, &["rmi", &id], b"");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let o = s.d.run(&s.alice, &["rmi", "app:1", "app:2", "app:3"], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("Deleted: {id}\n")),
        "{}",
        stdout(&o)
    );
    assert!(own_images(&s, &s.alice).is_empty());
}

#[test]
#[serial]
fn the_dockerfile_from_outside_the_context_or_stdin_and_a_tar_on_stdin() {
    let s = Setup::new();
    let home = PathBuf::from(format!("/home/{}", s.alice.name));
    let dir = context(&s.alice, &[("f", "in the context\n")]);
    let outside = home.join("Dockerfile.outside");
    std::fs::write(&outside, df("COPY f /f\n")).unwrap();
    chown(&s.alice, &outside);
    let o = s.urun_in(
        &s.alice,
        &dir,
        &[
            "build",
            "-q",
            "-f",
            outside.to_str().unwrap(),
            "-t",
            "out",
            ".",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // -f - with a directory context
    let o = s.urun_in(
        &s.alice,
        &dir,
        &["build", "-q", "-f", "-", "-t", "fromstdin", "."],
        df("COPY f /g\n").as_bytes(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = s.d.run(
        &s.alice,
        &[&format!("urun/{}/fromstdin", s.alice.name), "cat", "/g"],
        b"",
    );
    assert_eq!(stdout(&o), "in the context\n", "{}", stderr(&o));
    // A Dockerfile alone on stdin: no context.
    let o = s.urun_in(
        &s.alice,
        &home,
        &["build", "-q", "-t", "alone", "-"],
        df("RUN true\n").as_bytes(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A tar archive on stdin (made without a leading "./").
    std::fs::write(dir.join("Dockerfile"), df("COPY f /h\n")).unwrap();
    let tar = sh(
        "tar",
        &["-C", dir.to_str().unwrap(), "-cf", "-", "Dockerfile", "f"],
    );
    assert!(tar.status.success());
    let o = s.urun_in(
        &s.alice,
        &home,
        &["build", "-q", "-t", "fromtar", "-"],
        &tar.stdout,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = s.d.run(
        &s.alice,
        &[&format!("urun/{}/fromtar", s.alice.name), "cat", "/h"],
        b"",
    );
    assert_eq!(stdout(&o), "in the context\n", "{}", stderr(&o));
    // One made as `tar -C dir -c .` does: its first entry is the root, "./"; docker
    // accepts it, and so does urund.
    std::fs::write(dir.join("Dockerfile"), df("COPY f /i\n")).unwrap();
    let tar = sh("tar", &["-C", dir.to_str().unwrap(), "-cf", "-", "."]);
    assert!(tar.status.success());
    assert!(tar.stdout.starts_with(b"./\0"), "first entry not ./");
    let o = s.urun_in(
        &s.alice,
        &home,
        &["build", "-q", "-t", "dotslash", "-"],
        &tar.stdout,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = s.d.run(
        &s.alice,
        &[&format!("urun/{}/dotslash", s.alice.name), "cat", "/i"],
        b"",
    );
    assert_eq!(stdout(&o), "in the context\n", "{}", stderr(&o));
    // A compressed one is refused by the client, with what to do.
    let o = s.urun_in(&s.alice, &home, &["build", "-"], &[0x1f, 0x8b, 8, 0, 0, 0]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("gzip-compressed"), "{}", stderr(&o));
}

#[test]
#[serial]
fn what_the_caller_cannot_read_or_send_stops_the_build_before_anything_is_built() {
    let s = Setup::new();
    // A file only root can read, inside the caller's context: the client, running as
    // the caller, cannot read it, so it is never sent (urund would have read it as root).
    let dir = context(&s.alice, &[("Dockerfile", &df("COPY . /ctx/\n"))]);
    let secret = dir.join("root-only");
    std::fs::write(&secret, "root's\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = s.urun_in(&s.alice, &dir, &["build", "-t", "x", "."], b"");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("root-only") && err.contains("ermission denied"),
        "{err}"
    );
    std::fs::remove_file(&secret).unwrap();
    // A FIFO: refused by name.
    nix::unistd::mkfifo(
        &dir.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    chown(&s.alice, &dir);
    let o = s.urun_in(&s.alice, &dir, &["build", "-t", "x", "."], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("pipe: a FIFO"), "{}", stderr(&o));
    std::fs::remove_file(dir.join("pipe")).unwrap();
    // A Dockerfile outside the context the caller cannot read.
    let o = s.urun_in(&s.alice, &dir, &["build", "-f", "/etc/shadow", "."], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("ermission denied"), "{}", stderr(&o));
    assert!(own_images(&s, &s.alice).is_empty());
    // A refused flag: one line, nothing sent.
    let o = s.urun_in(&s.alice, &dir, &["build", "--network", "host", "."], b"");
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        "urun: --network is not allowed: build steps get the network the policy gives builds ([build] network; urun --policy shows it)\n"
    );
}

#[test]
#[serial]
fn exit_statuses_a_failed_run_step_and_ctrl_c() {
    let s = Setup::new();
    let dir = context(
        &s.alice,
        &[("Dockerfile", &df("RUN echo step-output; exit 3\n"))],
    );
    let o = s.urun_in(&s.alice, &dir, &["build", "-t", "fails", "."], b"");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("step-output"), "{}", stdout(&o));
    // USER root: refused by the check, 125, nothing built.
    let dir = context(
        &s.alice,
        &[("Dockerfile", &format!("FROM {}\nUSER root\n", image()))],
    );
    let o = s.urun_in(&s.alice, &dir, &["build", "-t", "root", "."], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("[user.root]"), "{}", stderr(&o));
    assert!(own_images(&s, &s.alice).is_empty());
    // Ctrl-C during a RUN step: the build is cancelled and leaves nothing behind.
    let dir = context(
        &s.alice,
        &[("Dockerfile", &df("RUN echo started; sleep 60\n"))],
    );
    let mut c = s.d.urun(&s.alice, &["build", "-t", "slow", "."]);
    c.current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let t = Instant::now();
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    assert!(
        lines.any(|l| l.is_ok_and(|l| l == "started")),
        "the RUN step never started"
    );
    let o = sh("kill", &["-INT", &child.id().to_string()]);
    assert!(o.status.success());
    let status = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(50), "not cancelled");
    assert!(
        matches!(status.code(), Some(130 | 137)),
        "an interrupted build: {status}"
    );
    // Nothing in alice's namespace (tests/build.rs proves the engine is left clean).
    assert!(own_images(&s, &s.alice).is_empty());
}

#[test]
#[serial]
fn the_shell_functions_docker_build_builds() {
    let s = Setup::new();
    let dir = context(&s.alice, &[("Dockerfile", &df("RUN true\n"))]);
    let script = format!(
        "export PATH={bin}:$PATH URUN_SOCKET={sock}; . {f}; cd {dir} && docker build -q -t viafn . && docker images -q && docker image rm viafn; echo status=$?",
        bin = s.d.dir.display(),
        sock = s.d.socket.display(),
        f = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/shell/urun.sh"),
        dir = dir.display(),
    );
    let mut c = s.alice.command("/bin/bash");
    c.args(["-c", &script]);
    let o = run_with_input(c, b"");
    let out = stdout(&o);
    assert!(out.starts_with("sha256:"), "{out}{}", stderr(&o));
    assert!(
        out.contains("Untagged: urun/") && out.ends_with("status=0\n"),
        "{out}"
    );
    assert!(own_images(&s, &s.alice).is_empty());
}

/// The file descriptors of process `pid` whose target contains `what`.
fn fds_of(pid: u32, what: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|p| p.display().to_string())
                .filter(|p| p.contains(what))
                .collect()
        })
        .unwrap_or_default()
}

/// Review finding B3: a context was spooled in urund's runtime directory (under
/// /run, a tmpfs: RAM) and a client that stopped sending held it until max_runtime.
/// Now the spool is under the state directory, and a stalled client is cut off by
/// the context's own deadline, its spool released.
#[test]
#[serial]
fn b3_a_stalled_context_is_spooled_on_disk_and_cut_off_by_its_own_deadline() {
    use common::raw::{self, frame, Then};
    use urun::wire::{BuildRequest, Kind, VERSION};
    let g = TestGroup::new("urg");
    let alice = TestUser::new(&[&g]);
    let policy = format!(
        "{}[images]\nallow = [\"urun-test/*\"]\n[build]\nenabled = true\nallow_root_engine = true\nmax_runtime = \"1h\"\n",
        policy_for(&g)
    );
    let d = Daemon::prepare(&policy).launch_env(&[("URUND_TEST_CONTEXT_IDLE_MS", "3000")]);
    let req = BuildRequest {
        version: VERSION,
        dockerfile: "Dockerfile".into(),
        ..Default::default()
    };
    let mut first = frame(Kind::Build, &req.encode());
    first.extend(frame(Kind::Context, &[0u8; 16 << 10]));
    let t = Instant::now();
    let client = raw::spawn(
        &d,
        &alice,
        &first,
        Then::Send {
            more: b"",
            times: 0,
            pause: Duration::from_secs(120),
        },
    );
    // The spool: an unlinked file in <state dir>/spool, never in the runtime directory.
    let spool = loop {
        let found = fds_of(d.pid(), "context-");
        if !found.is_empty() {
            break found;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no spool seen");
        std::thread::sleep(Duration::from_millis(50));
    };
    let state = d.state.display().to_string();
    assert!(
        spool[0].starts_with(&format!("{state}/spool/context-")),
        "{spool:?}"
    );
    // Cut off after 3 s without data (max_runtime is an hour), with one line.
    let o = client.wait_with_output().unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let msg = raw::expect_error_frame(&raw::reply(&stdout(&o)));
    assert!(msg.starts_with("the build context stopped coming"), "{msg}");
    assert!(fds_of(d.pid(), "context-").is_empty(), "spool released");
    d.wait_log("\"rule\":\"build.spool\"", Duration::from_secs(10));
}

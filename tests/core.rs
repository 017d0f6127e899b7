//! End-to-end tests of the core path: real urund, real urun run as real users
//! (useradd), real Docker daemon.

mod common;

use common::*;
use serial_test::serial;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;
use urun::wire::{self, Kind, Request};

/// A member of the socket's group and a running helper.
fn setup() -> (TestGroup, TestUser, Daemon) {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::start(&policy_for(&g));
    (g, u, d)
}

#[test]
#[serial]
fn member_runs_as_their_own_uid_and_gid() {
    let (_g, u, d) = setup();
    let o = d.run(&u, &[image(), "sh", "-c", "id -u; id -g"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{}\n{}\n", u.uid, u.gid));
    assert!(d.containers().is_empty(), "container left behind");
}

#[test]
#[serial]
fn non_member_is_refused_by_the_socket_mode() {
    let (_g, _u, d) = setup();
    let outsider = TestUser::new(&[]);
    let o = d.run(&outsider, &[image(), "id"], b"");
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(
        e.contains("permission denied") && e.contains("not in the"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "one line: {e}");
}

#[test]
#[serial]
fn non_member_is_refused_by_the_helper_even_if_the_socket_is_opened_up() {
    let (g, _u, d) = setup();
    // Defence in depth: an administrator's mistake on the socket mode is not enough.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let outsider = TestUser::new(&[]);
    let o = d.run(&outsider, &[image(), "id"], b"");
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("not a member of group \"{}\"", g.name)) && e.contains("access.group"),
        "{e}"
    );
    assert!(d.containers().is_empty());
}

#[test]
#[serial]
fn root_is_refused_unless_the_policy_allows_it() {
    let (_g, _u, d) = setup();
    let o = run_with_input(
        {
            let mut c = std::process::Command::new(&d.urun);
            c.arg("--socket").arg(&d.socket).args([image(), "id", "-u"]);
            c
        },
        b"",
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("access.allow_root"), "{}", stderr(&o));
}

/// Checks the hardening from inside the container, not from the config that was sent.
const PROBE: &str = r#"
fail=0
check() { if [ "$2" = "$3" ]; then echo "ok $1"; else echo "FAIL $1: got '$2' want '$3'"; fail=1; fi; }
check CapEff "$(awk '/^CapEff/{print $2}' /proc/self/status)" 0000000000000000
check CapPrm "$(awk '/^CapPrm/{print $2}' /proc/self/status)" 0000000000000000
check NoNewPrivs "$(awk '/^NoNewPrivs/{print $2}' /proc/self/status)" 1
check Seccomp "$(awk '/^Seccomp:/{print $2}' /proc/self/status)" 2
if touch /probe-root 2>/dev/null; then check readonly-root writable read-only; else echo "ok readonly-root"; fi
if echo x > /tmp/probe; then echo "ok tmp-writable"; else check tmp-writable no yes; fi
check nofile "$(ulimit -n)" "$WANT_NOFILE"
check nproc "$(ulimit -u)" "$WANT_NPROC"
check core "$(ulimit -c)" 0
if [ -e /var/run/docker.sock ] || [ -e /run/docker.sock ]; then check docker-sock present absent; else echo "ok no-docker-sock"; fi
check uid "$(id -u)" "$WANT_UID"
exit $fail
"#;

#[test]
#[serial]
fn hardening_is_visible_from_inside() {
    let (_g, u, d) = setup();
    let script = format!(
        "WANT_NOFILE=1024 WANT_NPROC=256 WANT_UID={}; {PROBE}",
        u.uid
    );
    let o = d.run(&u, &[image(), "sh", "-c", &script], b"");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).matches("ok ").count(), 11, "{}", stdout(&o));
}

#[test]
#[serial]
fn the_probe_detects_an_unhardened_container() {
    // The probe must fail against a plain `docker run`, or it proves nothing.
    image();
    let script = "WANT_NOFILE=1024 WANT_NPROC=256 WANT_UID=1; ".to_string() + PROBE;
    let o = sh("docker", &["run", "--rm", image(), "sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    for item in ["CapEff", "NoNewPrivs", "readonly-root", "nofile", "uid"] {
        assert!(out.contains(&format!("FAIL {item}")), "{item}: {out}");
    }
}

#[test]
#[serial]
fn eight_mib_through_stdin_come_back_byte_exact_and_stderr_stays_separate() {
    let (_g, u, d) = setup();
    let mut data = vec![0u8; 8 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    let o = d.run(
        &u,
        &["-i", image(), "sh", "-c", "cat; echo to-stderr >&2"],
        &data,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout.len(), data.len());
    assert!(o.stdout == data, "stdout differs from stdin");
    assert_eq!(stderr(&o), "to-stderr\n");
}

#[test]
#[serial]
fn stdin_eof_reaches_the_container() {
    let (_g, u, d) = setup();
    let o = d.run(&u, &["-i", image(), "wc", "-c"], b"hello");
    assert_eq!(stdout(&o).trim(), "5");
    // Without -i the container's stdin is empty, as with docker run.
    let o = d.run(&u, &[image(), "wc", "-c"], b"hello");
    assert_eq!(stdout(&o).trim(), "0");
}

#[test]
#[serial]
fn exit_statuses_are_exact() {
    let (_g, u, d) = setup();
    for (cmd, want) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 42", 42),
        ("exit 255", 255),
        ("kill -9 $$", 137),
        ("kill -TERM $$", 143),
    ] {
        let o = d.run(&u, &[image(), "sh", "-c", cmd], b"");
        assert_eq!(o.status.code(), Some(want), "{cmd}: {}", stderr(&o));
    }
    let o = d.run(&u, &[image(), "no-such-command"], b"");
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    let o = d.run(&u, &[image(), "/etc/passwd"], b"");
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(d.containers().is_empty());
}

#[test]
#[serial]
fn missing_image_is_a_one_line_125() {
    let (_g, u, d) = setup();
    let o = d.run(&u, &["urun-test/no-such-image:1", "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(
        e.contains("Unable to find image 'urun-test/no-such-image:1' locally"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
#[serial]
fn client_killed_mid_run_leaves_no_container() {
    let (_g, u, d) = setup();
    let mut child = d
        .urun(&u, &[image(), "sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    d.wait_running(1, Duration::from_secs(20));
    child.kill().unwrap(); // SIGKILL: the client gets no chance to say goodbye
    child.wait().unwrap();
    let took = d
        .wait_no_containers(Duration::from_secs(2))
        .unwrap_or_else(|left| panic!("containers left after 2 s: {left:?}"));
    eprintln!("container removed {took:?} after the client was killed");
}

#[test]
#[serial]
fn client_killed_while_the_container_ignores_its_stdin_leaves_no_container() {
    let (_g, u, d) = setup();
    // The container never reads stdin, so the helper's write to it blocks; the
    // hang-up must still be noticed.
    let mut child =
        spawn_flooding_stdin(d.urun(&u, &["-i", image(), "sleep", "1000"]), Stdio::null());
    d.wait_running(1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    d.wait_no_containers(Duration::from_secs(2))
        .unwrap_or_else(|left| panic!("containers left after 2 s: {left:?}"));
}

#[test]
#[serial]
fn hostile_frames_are_refused_and_the_helper_keeps_serving() {
    let (_g, u, mut d) = setup();
    // A request claiming to be someone else.
    let claim = format!(
        r#"{{"version":1,"image":"{}","command":["id","-u"],"uid":0,"gid":0}}"#,
        image()
    );
    let msg = raw::expect_error_frame(&raw::exchange(
        &d,
        &u,
        &raw::frame(Kind::Request, claim.as_bytes()),
    ));
    assert!(msg.contains("unknown field `uid`"), "{msg}");
    // A header announcing a 4 GiB frame.
    let msg = raw::expect_error_frame(&raw::exchange(&d, &u, &[1, 0xff, 0xff, 0xff, 0xff]));
    assert!(msg.contains("exceeds the limit"), "{msg}");
    // A request just over the request limit.
    let mut big = raw::frame(Kind::Request, &vec![b' '; wire::MAX_REQUEST + 1]);
    big.truncate(wire::HEADER + 16);
    let msg = raw::expect_error_frame(&raw::exchange(&d, &u, &big));
    assert!(msg.contains("exceeds the limit"), "{msg}");
    // Garbage.
    let msg = raw::expect_error_frame(&raw::exchange(&d, &u, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(msg.contains("unknown frame type"), "{msg}");
    // A helper-to-client frame type from the client; and stdin before any request.
    let msg = raw::expect_error_frame(&raw::exchange(&d, &u, &raw::frame(Kind::Exit, &[0])));
    assert!(msg.contains("unexpected"), "{msg}");
    let msg = raw::expect_error_frame(&raw::exchange(&d, &u, &raw::frame(Kind::Stdin, b"x")));
    assert!(msg.contains("unexpected"), "{msg}");
    // Truncated JSON, and a future protocol version.
    let msg = raw::expect_error_frame(&raw::exchange(
        &d,
        &u,
        &raw::frame(Kind::Request, b"{\"version\":1,"),
    ));
    assert!(msg.contains("malformed request"), "{msg}");
    let v2 = format!(r#"{{"version":2,"image":"{}"}}"#, image());
    let msg = raw::expect_error_frame(&raw::exchange(
        &d,
        &u,
        &raw::frame(Kind::Request, v2.as_bytes()),
    ));
    assert!(msg.contains("protocol version 2"), "{msg}");
    // A frame of an unknown type in the middle of a run is refused and the run removed.
    let mut req = Request::new(image().into(), vec!["sleep".into(), "30".into()]);
    req.interactive = true;
    let mut bytes = raw::frame(Kind::Request, &req.encode());
    bytes.extend(raw::frame(Kind::Stdin, b"x"));
    bytes.extend([0x42, 0, 0, 0, 0]);
    let msg = raw::expect_error_frame(&raw::exchange(&d, &u, &bytes));
    assert!(msg.contains("unknown frame type 0x42"), "{msg}");

    assert!(d.is_running(), "urund died:\n{}", d.log_text());
    assert!(d.wait_no_containers(Duration::from_secs(2)).is_ok());
    let o = d.run(&u, &[image(), "id", "-u"], b"");
    assert_eq!(stdout(&o), format!("{}\n", u.uid), "{}", stderr(&o));
}

#[test]
#[serial]
fn helper_reaps_its_labelled_leftovers_at_start_and_stops_cleanly() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let mut d = Daemon::start(&policy_for(&g));
    // A container as a crashed helper leaves it: urund killed mid-run (its socket
    // file stays behind too).
    let mut c = d
        .urun(&u, &[image(), "sleep", "100"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    d.wait_running(1, Duration::from_secs(20));
    d.kill9();
    let _ = c.kill();
    let _ = c.wait();
    assert_eq!(d.containers().len(), 1, "SIGKILL leaves the container");
    // Someone else's container (another helper's label) must be left alone.
    let other = sh(
        "docker",
        &[
            "create",
            "--label",
            "io.urun.helper=/elsewhere.sock",
            image(),
            "true",
        ],
    );
    let other = stdout(&other).trim().to_string();
    assert!(d.socket.exists(), "the stale socket of the crash");
    d.relaunch();
    assert!(
        d.containers().is_empty(),
        "leftover not reaped:\n{}",
        d.log_text()
    );
    assert!(
        d.log_text().contains("1 leftover container(s) removed"),
        "{}",
        d.log_text()
    );
    let still = sh("docker", &["inspect", &other]);
    let _ = sh("docker", &["rm", "-f", &other]);
    assert!(
        still.status.success(),
        "another helper's container was removed"
    );
    // SIGTERM: clean exit, socket gone.
    let st = d.stop().unwrap();
    assert!(st.success(), "urund exit: {st}\n{}", d.log_text());
    assert!(!d.socket.exists(), "socket left behind");
}

#[test]
#[serial]
fn socket_is_group_only_and_its_directory_private() {
    let (g, _u, d) = setup();
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o660);
    assert_eq!((m.uid(), m.gid()), (0, g.gid));
    let dm = std::fs::metadata(d.socket.parent().unwrap()).unwrap();
    assert_eq!(dm.mode() & 0o022, 0);
}

#[test]
#[serial]
fn helper_refuses_to_start_on_a_bad_policy_or_an_unsafe_setup() {
    let g = TestGroup::new("urg");
    let cases: Vec<(String, u32, &str)> = vec![
        (
            format!(
                "[access]\ngroup = \"{}\"\n[limits]\nmemory = \"huge\"\n",
                g.name
            ),
            0o644,
            ":4: key limits.memory: invalid size \"huge\"",
        ),
        (
            format!("[access]\ngroup = \"{}\"\nallow_rot = true\n", g.name),
            0o644,
            ":3: key access.allow_rot: unknown field `allow_rot`",
        ),
        (policy_for(&g), 0o666, "writable by group or others"),
        (policy_for(&g), 0o664, "writable by group or others"),
        (
            "[access]\ngroup = \"no-such-group-urt\"\n".into(),
            0o644,
            "group \"no-such-group-urt\" (policy access.group) does not exist",
        ),
    ];
    for (text, mode, want) in cases {
        let d = Daemon::prepare(&text);
        std::fs::set_permissions(&d.policy, std::fs::Permissions::from_mode(mode)).unwrap();
        let st = d.urund_command(&[]).status().unwrap();
        assert_eq!(st.code(), Some(1), "{text}");
        let log = d.log_text();
        assert!(log.contains(want), "want {want:?} in:\n{log}");
        assert!(
            log.contains(&d.policy.display().to_string()) || want.contains("group \""),
            "{log}"
        );
        assert!(!d.socket.exists());
    }
    // A missing policy file means built-in defaults (group "urun").
    let d = Daemon::prepare("");
    std::fs::remove_file(&d.policy).unwrap();
    let has_urun = sh("getent", &["group", "urun"]).status.success();
    let mut child = d.urund_command(&[]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let _ = sh("kill", &["-TERM", &child.id().to_string()]);
    let st = child.wait().unwrap();
    if has_urun {
        assert!(st.success(), "{}", d.log_text());
    } else {
        assert!(d.log_text().contains("group \"urun\""), "{}", d.log_text());
    }
    // An unreachable Docker daemon.
    let d = Daemon::prepare(&policy_for(&g));
    let st = d
        .urund_command(&["--docker-host", "unix:///nonexistent/docker.sock"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1));
    assert!(
        d.log_text().contains("/nonexistent/docker.sock"),
        "{}",
        d.log_text()
    );
}

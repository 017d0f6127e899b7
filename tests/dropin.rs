//! End-to-end tests of urun as a drop-in for `docker run`: terminals (through a real
//! pseudo-terminal, tmux), signals, docker's flags accepted and refused, the shell
//! function, and the generated man pages and completions.

mod common;

#[path = "../examples/gen-docs.rs"]
mod gen_docs;

use common::*;
use serial_test::serial;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use urun::wire::{self, Kind, Request, Signal, WinSize};

fn setup() -> (TestGroup, TestUser, Daemon) {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::start(&policy_for(&g));
    (g, u, d)
}

fn home(u: &TestUser) -> String {
    format!("/home/{}", u.name)
}

/// Single-quotes a word for sh.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

// ───────────────────────────── terminals ─────────────────────────────

/// A private tmux server (its own socket file) with one session; killed and its socket
/// removed on drop.
struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    /// Starts `command` (a shell command line) in a detached `cols`x`rows` window.
    fn start(command: &str, cols: u16, rows: u16) -> Tmux {
        let t = Tmux {
            socket: std::env::temp_dir()
                .join(format!("urun-dropin-tmux-{}", unique()))
                .display()
                .to_string(),
            session: "s".into(),
        };
        let o = t.tmux(&[
            "new-session",
            "-d",
            "-s",
            &t.session,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            command,
        ]);
        assert!(o.status.success(), "tmux: {}", stderr(&o));
        t
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        let mut full = vec!["-S", &self.socket];
        full.extend(args);
        sh("tmux", &full)
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend(keys);
        let o = self.tmux(&args);
        assert!(o.status.success(), "send-keys: {}", stderr(&o));
    }

    fn screen(&self) -> String {
        stdout(&self.tmux(&["capture-pane", "-p", "-t", &self.session]))
    }

    /// Waits until the screen contains `want`; returns the screen.
    fn wait_for(&self, want: &str, limit: Duration) -> String {
        let t = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(want) {
                return s;
            }
            assert!(
                t.elapsed() < limit,
                "{want:?} not on the screen after {limit:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        self.send(&["-l", "--", text]);
    }

    /// Types `line` and Enter, then waits for `marker` in the output.
    fn run(&self, line: &str, marker: &str) -> String {
        self.type_text(line);
        self.send(&["Enter"]);
        self.wait_for(marker, Duration::from_secs(15))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The lines of `screen` between the line containing `from` and the one containing `to`.
fn between(screen: &str, from: &str, to: &str) -> Vec<String> {
    let lines: Vec<&str> = screen.lines().collect();
    let a = lines.iter().rposition(|l| l.contains(from)).unwrap();
    let b = a + lines[a..].iter().position(|l| l.contains(to)).unwrap();
    lines[a + 1..b]
        .iter()
        .map(|l| l.trim_end().to_string())
        .collect()
}

#[test]
#[serial]
fn interactive_tty_session_through_a_real_terminal() {
    let (_g, u, d) = setup();
    let h = home(&u);
    // In the pane, as the user: note the terminal settings, run urun -it, note its
    // status and the settings again, then stay (so the screen can be read).
    let script = format!(
        "stty -g > {h}/before; {urun} --socket {sock} -it {img} sh; echo $? > {h}/status; \
         stty -g > {h}/after; echo URUN-DONE; exec sleep 1000",
        urun = d.urun.display(),
        sock = d.socket.display(),
        img = image(),
    );
    let cmd = format!(
        "setpriv --reuid={} --regid={} --init-groups --reset-env -- /bin/sh -c {}",
        u.uid,
        u.gid,
        q(&script)
    );
    let t = Tmux::start(&cmd, 100, 30);
    // The shell in the container answers (the marker's digits come from the shell, so
    // the echo of the typed line cannot match).
    t.run("echo READY-$((20+1))", "READY-21");
    let s = t.run("id -u; tty; stty size; echo END-$((40+2))", "END-42");
    let out = between(&s, "echo END-", "END-42");
    assert_eq!(out.len(), 3, "{s}");
    assert_eq!(out[0], u.uid.to_string(), "{s}");
    assert!(out[1].starts_with("/dev/pts/"), "{s}");
    assert_eq!(out[2], "30 100", "{s}");

    // The window changes size: the container's terminal follows.
    let o = t.tmux(&["resize-window", "-t", "s", "-x", "120", "-y", "40"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t0 = Instant::now();
    for i in 0.. {
        // A marker of its own per try: an earlier try's output is still on the screen.
        let s = t.run(
            &format!("stty size; echo SZ{i}-$((1+2))"),
            &format!("SZ{i}-3"),
        );
        let out = between(&s, &format!("echo SZ{i}-"), &format!("SZ{i}-3"));
        if out == ["40 120"] {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "size not followed: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Ctrl-C reaches the container's terminal (the shell survives, the sleep does not),
    // and line editing is the container's: a backspaced character is gone.
    t.type_text("sleep 100");
    t.send(&["Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    t.send(&["C-c"]);
    t.run("echo ALIVE-$((3+4))", "ALIVE-7");
    t.type_text("echo EDITX");
    t.send(&["BSpace"]);
    t.type_text("-$((5+5))");
    t.send(&["Enter"]);
    t.wait_for("EDIT-10", Duration::from_secs(10));
    assert!(
        d.containers().len() == 1,
        "one container while the shell runs"
    );

    // `exit 3`: status 3, and the local terminal's settings are restored.
    t.run("exit 3", "URUN-DONE");
    let read = |f: &str| std::fs::read_to_string(format!("{h}/{f}")).unwrap();
    assert_eq!(read("status").trim(), "3");
    assert_eq!(
        read("before"),
        read("after"),
        "terminal settings not restored"
    );
    assert!(d.wait_no_containers(Duration::from_secs(2)).is_ok());
}

/// The shell command line that runs `urun ARGS` as `u` in a pane, then prints its
/// status and stays; the terminal's settings before and after go to ~/before and
/// ~/after. (The pane's shell traps Ctrl-C so that only urun acts on it; a trapped
/// signal is reset to the default in urun.)
fn pane_command(d: &Daemon, u: &TestUser, args: &str) -> String {
    let script = format!(
        "trap : INT; stty -g > {h}/before; {} --socket {} {args}; echo STATUS=$?; \
         stty -g > {h}/after; exec sleep 1000",
        d.urun.display(),
        d.socket.display(),
        h = home(u),
    );
    format!(
        "setpriv --reuid={} --regid={} --init-groups --reset-env -- /bin/sh -c {}",
        u.uid,
        u.gid,
        q(&script)
    )
}

#[test]
#[serial]
fn detaching_with_ctrl_p_ctrl_q_kills_the_container_and_says_so() {
    let (_g, u, d) = setup();
    let t = it_shell(&d, &u);
    t.send(&["C-p"]);
    t.send(&["C-q"]);
    let s = t.wait_for("STATUS=", Duration::from_secs(10));
    assert!(s.contains("STATUS=137"), "{s}");
    assert!(
        s.contains("urun: detached (ctrl-p ctrl-q): urun has no detach"),
        "{s}"
    );
    assert!(d.containers().is_empty());
    assert_terminal_restored(&u);
}

/// `urun -it IMAGE sh` in an 80x24 tmux pane, once the shell answers.
fn it_shell(d: &Daemon, u: &TestUser) -> Tmux {
    let t = Tmux::start(&pane_command(d, u, &format!("-it {} sh", image())), 80, 24);
    t.run("echo READY-$((20+1))", "READY-21");
    t
}

/// The settings noted by [`pane_command`] before and after urun are the same.
fn assert_terminal_restored(u: &TestUser) {
    let read = |f: &str| {
        let t = Instant::now();
        loop {
            match std::fs::read_to_string(format!("{}/{f}", home(u))) {
                Ok(s) if !s.is_empty() => return s,
                _ if t.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                r => panic!("{f}: {r:?}"),
            }
        }
    };
    assert_eq!(
        read("before"),
        read("after"),
        "terminal settings not restored"
    );
}

#[test]
#[serial]
fn full_screen_editor_and_ctrl_d_work_as_with_docker_run_it() {
    let (_g, u, d) = setup();
    let t = it_shell(&d, &u);
    // busybox vi: full screen, insert mode, Escape, ex command.
    t.run("vi /tmp/note", "/tmp/note");
    t.type_text("ihello from vi");
    std::thread::sleep(Duration::from_millis(300));
    t.send(&["Escape"]);
    std::thread::sleep(Duration::from_millis(500));
    t.type_text(":wq");
    t.send(&["Enter"]);
    t.run(
        "echo NOTE-$(cat /tmp/note)-$((1+1))",
        "NOTE-hello from vi-2",
    );
    // Ctrl-D at the prompt ends the shell (status 0).
    t.send(&["C-d"]);
    let s = t.wait_for("STATUS=", Duration::from_secs(10));
    assert!(s.contains("STATUS=0"), "{s}");
    assert!(d.wait_no_containers(Duration::from_secs(2)).is_ok());
    assert_terminal_restored(&u);
}

#[test]
#[serial]
fn tty_without_i_keeps_the_local_line_discipline_and_forwards_ctrl_c() {
    let (_g, u, d) = setup();
    let t = Tmux::start(
        &pane_command(&d, &u, &format!("-t {} sleep 1000", image())),
        80,
        24,
    );
    d.wait_running(1, Duration::from_secs(20));
    t.send(&["C-c"]);
    let s = t.wait_for("STATUS=", Duration::from_secs(5));
    assert!(s.contains("STATUS=130"), "{s}");
    assert!(d.containers().is_empty());
}

#[test]
#[serial]
fn tty_output_starting_with_stream_header_bytes_is_passed_intact() {
    // Raw TTY output is not multiplexed: bytes 0, 1, 2 at the start of a chunk must not
    // be taken for a stream header (8 bytes lost and the rest stalled).
    let (_g, u, d) = setup();
    let o = d.run(
        &u,
        &[
            "-t",
            image(),
            "printf",
            r"\001\002\000\001\000\000\000\377tail",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        o.stdout, b"\x01\x02\x00\x01\x00\x00\x00\xfftail",
        "{:?}",
        o.stdout
    );
    // And without a terminal on our side, -t still gives the container one.
    let o = d.run(&u, &["-t", image(), "sh", "-c", "tty; stty size"], b"");
    assert!(stdout(&o).starts_with("/dev/pts/"), "{}", stdout(&o));
}

#[test]
#[serial]
fn it_without_a_terminal_is_refused_like_docker() {
    let (_g, u, d) = setup();
    let o = d.run(&u, &["-it", image(), "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("not a TTY"), "{}", stderr(&o));
    assert!(d.containers().is_empty());
}

// ───────────────────────────── signals ─────────────────────────────

/// urun running `args` as `u`, stdout piped; waits until its container runs.
fn spawn(d: &Daemon, u: &TestUser, args: &[&str]) -> Child {
    let child = d
        .urun(u, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_running(1, Duration::from_secs(20));
    // Docker reports "running" a moment before docker-init has set up its signal
    // handling; a signal in that window is lost (PID 1 ignores default signals).
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn kill(child: &Child, sig: &str) {
    let o = sh("kill", &[&format!("-{sig}"), &child.id().to_string()]);
    assert!(o.status.success());
}

/// Waits for `child` to exit, at most `limit`; returns its status code.
fn wait_within(child: &mut Child, limit: Duration) -> Option<i32> {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("urun still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[serial]
fn sigint_and_sigterm_stop_a_plain_sleep_within_three_seconds() {
    let (_g, u, d) = setup();
    for (sig, want) in [("INT", 130), ("TERM", 143)] {
        let mut c = spawn(&d, &u, &[image(), "sleep", "1000"]);
        let t = Instant::now();
        kill(&c, sig);
        let code = wait_within(&mut c, Duration::from_secs(3));
        assert_eq!(code, Some(want), "SIG{sig}");
        assert!(
            d.containers().is_empty(),
            "SIG{sig}: container left after urun ended"
        );
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}

#[test]
#[serial]
fn signals_are_forwarded_to_the_containers_process() {
    let (_g, u, d) = setup();
    let script = "for s in USR1 USR2 HUP QUIT; do trap \"echo got-$s\" $s; done; \
                  echo ready; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done";
    let mut c = spawn(&d, &u, &[image(), "sh", "-c", script]);
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    for sig in ["USR1", "USR2", "HUP", "QUIT"] {
        kill(&c, sig);
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, format!("got-{sig}\n"));
    }
    kill(&c, "TERM");
    assert_eq!(wait_within(&mut c, Duration::from_secs(3)), Some(143));
    assert!(d.containers().is_empty());
}

#[test]
#[serial]
fn a_second_interrupt_kills_a_container_that_ignores_the_first() {
    let (_g, u, d) = setup();
    for sig in ["INT", "TERM"] {
        let mut c = spawn(
            &d,
            &u,
            &[image(), "sh", "-c", "trap '' INT TERM; sleep 1000"],
        );
        kill(&c, sig);
        // The container ignores it, so urun must keep waiting: it never exits while
        // its container runs.
        std::thread::sleep(Duration::from_millis(800));
        assert!(
            c.try_wait().unwrap().is_none(),
            "urun exited after one SIG{sig}"
        );
        assert_eq!(d.containers().len(), 1);
        kill(&c, sig);
        assert_eq!(wait_within(&mut c, Duration::from_secs(3)), Some(137));
        assert!(d.containers().is_empty());
    }
}

#[test]
#[serial]
fn a_second_interrupt_kills_even_a_container_that_does_not_read_its_full_stdin() {
    // urund is blocked writing stdin the container never reads, so it cannot read the
    // signal frames queued behind it; the client then closes its sending side. The
    // endless stdin is a device, which urun copies as `Stdin` frames (a pipe would be
    // passed to urund, which then reads the signal frames all along: tests/streams.rs).
    let (_g, u, d) = setup();
    let mut c = d
        .urun(&u, &["-i", image(), "sleep", "1000"])
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_running(1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    kill(&c, "INT");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        c.try_wait().unwrap().is_none(),
        "urun exited after one SIGINT"
    );
    kill(&c, "INT");
    assert_eq!(wait_within(&mut c, Duration::from_secs(5)), Some(137));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut c.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(
        err,
        "urun: connection closed by urun, so the container was killed\n"
    );
    assert!(d.containers().is_empty());
}

/// Sends a request to the helper as `user`, then, a second later (the container has
/// started), `more`; returns the reply frames.
fn raw_exchange(d: &Daemon, user: &TestUser, req: &Request, more: &[u8]) -> Vec<(Kind, Vec<u8>)> {
    let first = raw::frame(Kind::Request, &req.encode());
    raw::frames(&raw::exchange_later(
        d,
        user,
        &first,
        more,
        Duration::from_secs(1),
    ))
}

#[test]
#[serial]
fn only_listed_signals_and_well_formed_resizes_are_accepted() {
    let (_g, u, d) = setup();
    let req = Request::new(image().into(), vec!["sleep".into(), "30".into()]);
    for (bad, want) in [
        (raw::frame(Kind::Signal, &[19]), "malformed Signal frame"), // SIGSTOP
        (raw::frame(Kind::Signal, &[28]), "malformed Signal frame"), // SIGWINCH
        (raw::frame(Kind::Signal, &[2, 2]), "malformed Signal frame"),
        (
            raw::frame(Kind::Resize, &[0, 24, 0]),
            "malformed Resize frame",
        ),
    ] {
        let frames = raw_exchange(&d, &u, &req, &bad);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].0, Kind::Error);
        let (status, msg) = wire::decode_error(&frames[0].1).unwrap();
        assert_eq!(status, 125);
        assert!(msg.contains(want), "{msg}");
        assert!(d.wait_no_containers(Duration::from_secs(2)).is_ok());
    }
    // A listed signal goes to the container: SIGTERM ends the sleep (143).
    let mut more = raw::frame(Kind::Resize, &WinSize { rows: 5, cols: 5 }.encode());
    more.extend(raw::frame(Kind::Signal, &Signal::Term.encode()));
    let frames = raw_exchange(&d, &u, &req, &more);
    assert_eq!(frames.last().unwrap(), &(Kind::Exit, vec![143]));
    assert!(d.containers().is_empty());
}

// ───────────────────────────── flags ─────────────────────────────

#[test]
#[serial]
fn refused_flags_exit_125_with_one_line_naming_the_flag() {
    let (_g, u, d) = setup();
    let uid = u.uid.to_string();
    let own_user = format!("{}:{}", u.uid, u.gid);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--privileged"], "--privileged is not allowed: containers always run without privileges as you (uid UID)"),
        (vec!["--cap-add", "SYS_ADMIN"], "--cap-add is not allowed"),
        (vec!["--cap-add=ALL"], "--cap-add is not allowed"),
        (vec!["--security-opt", "seccomp=unconfined"], "--security-opt is not allowed"),
        (vec!["--pid=host"], "--pid is not allowed"),
        (vec!["--ipc", "host"], "--ipc is not allowed"),
        (vec!["--uts=host"], "--uts is not allowed"),
        (vec!["--userns", "host"], "--userns is not allowed"),
        (vec!["--cgroupns=host"], "--cgroupns is not allowed"),
        (vec!["--device", "/dev/sda"], "--device is not allowed"),
        (vec!["-p", "8080:80"], "-p/--publish is not allowed"),
        (vec!["-P"], "-P/--publish-all is not allowed"),
        // -v: only the working-directory form (tests/identity.rs), checked by the client
        // before anything is sent, then by urund.
        (vec!["-v", "/:/host"], "/ is not your current directory or below it"),
        (vec!["--volume=/etc:/etc"], "-v \"/etc:/etc\": cannot mount over /etc in the container"),
        (vec!["--mount", "type=bind,source=/,target=/h"], "--mount is not allowed: mounting host paths"),
        (vec!["--volumes-from", "other"], "--volumes-from is not allowed"),
        (vec!["--sysctl", "net.ipv4.ip_forward=1"], "--sysctl is not allowed"),
        (vec!["--add-host", "x:1.2.3.4"], "--add-host is not allowed"),
        (vec!["--runtime", "runc"], "--runtime is not allowed"),
        (vec!["--log-driver", "json-file"], "--log-driver is not allowed"),
        (vec!["-d"], "-d/--detach is not allowed"),
        (vec!["-itd"], "-d/--detach is not allowed"),
        (vec!["--pull", "always"], "--pull is not allowed"),
        // Decided by urund (the client cannot know the policy): sent, judged, refused.
        (vec!["-u", "0"], "-u/--user 0 is not allowed: containers always run as you (uid UID"),
        (vec!["--user=root"], "-u/--user root is not allowed"),
        (vec!["-u", "UID:0"], "-u/--user UID:0 is not allowed"),
        (vec!["--network", "host"], "--network host is not allowed"),
        (vec!["--net=bridge"], "--network bridge is not allowed"),
        (vec!["-e", "LD_PRELOAD=/tmp/x.so"], "-e LD_PRELOAD is not allowed: only TERM, LANG, LC_*, TZ may be passed"),
        (vec!["-e", "HOME=/"], "-e HOME is not allowed: urun sets HOME itself"),
        (vec!["--name", "../x"], "--name \"../x\" is not allowed"),
        // Unknown flags.
        (vec!["--frobnicate"], "unknown flag --frobnicate"),
        (vec!["--cap-drop=ALL"], "unknown flag --cap-drop"),
        (vec!["-X"], "unknown flag -X"),
    ];
    for (flags, want) in cases {
        let mut args: Vec<String> = flags.iter().map(|f| f.replace("UID", &uid)).collect();
        args.extend([image().to_string(), "id".to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = d.run(&u, &args, b"");
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{flags:?}: {e}");
        let want = format!("urun: {}", want.replace("UID", &uid));
        assert!(e.starts_with(&want), "{flags:?}: want {want:?}, got {e:?}");
        assert_eq!(e.lines().count(), 1, "{flags:?}: one line: {e}");
        assert!(o.stdout.is_empty());
    }
    assert!(
        d.containers().is_empty(),
        "a refused request created a container"
    );
    // The caller's own identity is fine.
    for user in [uid.as_str(), own_user.as_str(), u.name.as_str()] {
        let o = d.run(&u, &["-u", user, image(), "id", "-u"], b"");
        assert_eq!(stdout(&o), format!("{uid}\n"), "-u {user}: {}", stderr(&o));
    }
}

#[test]
#[serial]
fn accepted_flags_work() {
    let (_g, u, d) = setup();
    let h = home(&u);
    let env_file = format!("{h}/env");
    write_mode(
        std::path::Path::new(&env_file),
        b"# settings\nLC_ALL=C.UTF-8\nTZ=Europe/Berlin\nLC_TIME\n",
        0o644,
    );
    let script = "echo \"$TERM|$LANG|$LC_ALL|$TZ|$LC_TIME|$HOME\"; pwd; cat";
    // `-e LANG` without a value takes it from urun's environment (set through env(1):
    // the harness starts urun with a clean environment).
    let mut c = u.command("/usr/bin/env");
    c.arg("LANG=de_DE.UTF-8")
        .arg(&d.urun)
        .arg("--socket")
        .arg(&d.socket);
    c.args([
        "-i",
        "--rm",
        "--init",
        "-e",
        "TERM=xterm-test",
        "--env=LANG",
        "--env-file",
        &env_file,
        "-e",
        "TZ=UTC",
        "-w",
        "/tmp",
        "--pull",
        "never",
        "--network",
        "none",
        "--ipc=private",
        image(),
        "sh",
        "-c",
        script,
    ]);
    let o = run_with_input(c, b"piped-in");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "xterm-test|de_DE.UTF-8|C.UTF-8|UTC||/home/{}\n/tmp\npiped-in",
            u.name
        )
    );
    // --entrypoint replaces the image's, "" clears it.
    let o = d.run(&u, &["--entrypoint", "echo", image(), "a", "b"], b"");
    assert_eq!(stdout(&o), "a b\n", "{}", stderr(&o));
    let o = d.run(&u, &["--entrypoint=", image(), "echo", "c"], b"");
    assert_eq!(stdout(&o), "c\n", "{}", stderr(&o));
    // -w to a directory the image lacks: docker creates it, as with docker run.
    let o = d.run(&u, &["-w", "/work/x", image(), "pwd"], b"");
    assert_eq!(stdout(&o), "/work/x\n", "{}", stderr(&o));
    assert!(d.containers().is_empty());
}

#[test]
#[serial]
fn env_network_and_pull_flags_follow_the_policy() {
    let g = TestGroup::new("urg");
    let u = TestUser::new(&[&g]);
    let d = Daemon::start(&format!(
        "{}[env]\nallow = [\"FOO_*\"]\n[network]\nmode = \"isolated\"\n\
         [pull]\nmode = \"missing\"\nregistries = [\"127.0.0.1:*\"]\n",
        policy_for(&g)
    ));
    // Environment names come from the policy's [env] allow, not a built-in list.
    let o = d.run(
        &u,
        &["-e", "FOO_A=1", image(), "sh", "-c", "echo $FOO_A"],
        b"",
    );
    assert_eq!(stdout(&o), "1\n", "{}", stderr(&o));
    let o = d.run(&u, &["-e", "TERM=x", image(), "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        "urun: -e TERM is not allowed: only FOO_* may be passed (policy env.allow)\n"
    );
    // The policy's isolated network by default or by name; --network none gives less.
    let ifaces = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend([image(), "ls", "/sys/class/net"]);
        let o = d.run(&u, &a, b"");
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    assert_eq!(ifaces(&["--network", "none"]), "lo\n");
    assert!(ifaces(&[]).contains("eth0"));
    assert!(ifaces(&["--net=urun-isolated"]).contains("eth0"));
    let o = d.run(&u, &["--network", "host", image(), "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).starts_with("urun: --network host is not allowed")
            && stderr(&o).contains("only --network none or urun-isolated"),
        "{}",
        stderr(&o)
    );
    // --pull never: a missing image is not pulled even though the policy would.
    let missing = "127.0.0.1:9/urun-dropin/none:1";
    let o = d.run(&u, &["--pull", "never", missing, "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        format!("urun: Unable to find image '{missing}' locally (--pull never)\n")
    );
    let o = d.run(&u, &["--pull=missing", missing, "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(!stderr(&o).contains("--pull never"), "{}", stderr(&o));
    assert!(d.containers().is_empty());
}

#[test]
#[serial]
fn names_are_per_user_labels_so_users_cannot_collide() {
    let (g, u, d) = setup();
    let other = TestUser::new(&[&g]);
    let name = format!("web{}", unique());
    let mut a = spawn(&d, &u, &["--name", &name, image(), "sleep", "1000"]);
    let mut b = d
        .urun(&other, &["--name", &name, image(), "sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_running(2, Duration::from_secs(20));
    // Both users have a run of that name: the name is a label beside the owner's
    // uid, never Docker's name (which Docker's DNS would resolve for others).
    let labels = stdout(&sh(
        "docker",
        &[
            "ps",
            "--format",
            "{{.Label \"io.urun.name\"}} {{.Label \"io.urun.uid\"}} {{.Names}}",
            "--filter",
            &format!("label=io.urun.helper={}", d.socket.display()),
        ],
    ));
    let mut got: Vec<String> = labels
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
        .collect();
    got.sort();
    let mut want = [format!("{name} {}", u.uid), format!("{name} {}", other.uid)];
    want.sort();
    assert_eq!(got, want, "{labels}");
    assert!(!labels.contains(&format!(" {name}\n")), "{labels}");
    // The same user twice: docker's conflict, reported as 125.
    let o = d.run(&u, &["--name", &name, image(), "true"], b"");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));
    kill(&a, "TERM");
    kill(&b, "TERM");
    assert_eq!(wait_within(&mut a, Duration::from_secs(3)), Some(143));
    assert_eq!(wait_within(&mut b, Duration::from_secs(3)), Some(143));
    assert!(d.wait_no_containers(Duration::from_secs(2)).is_ok());
    // Once that run is over, the name is free again.
    let o = d.run(&u, &["--name", &name, image(), "true"], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
#[serial]
fn help_lists_forced_settings_refused_flags_and_exit_statuses() {
    let (_g, u, d) = setup();
    let o = d.run(&u, &["--help"], b"");
    assert_eq!(o.status.code(), Some(0));
    let h = stdout(&o);
    for want in [
        "Always forced",
        "CapDrop / CapAdd: ALL / none",
        "--privileged",
        "-v, --volume",
        "Exit status:",
        "125",
        "128+N",
    ] {
        assert!(h.contains(want), "{want}: {h}");
    }
}

// ───────────────────────────── shell function ─────────────────────────────

const SHELL_FN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/shell/urun.sh");

/// Runs `script` in bash as `user` with the shell function sourced and urun on PATH.
fn bash_with_function(
    d: &Daemon,
    user: &TestUser,
    script: &str,
    input: &[u8],
) -> std::process::Output {
    shell_with_function("/bin/bash", d, user, script, input)
}

fn shell_with_function(
    shell: &str,
    d: &Daemon,
    user: &TestUser,
    script: &str,
    input: &[u8],
) -> std::process::Output {
    let full = format!(
        "export PATH={dir}:$PATH URUN_SOCKET={sock}; . {f}; {script}",
        dir = d.dir.display(),
        sock = d.socket.display(),
        f = SHELL_FN
    );
    let mut c = user.command(shell);
    c.args(["-c", &full]);
    run_with_input(c, input)
}

#[test]
#[serial]
fn shell_function_routes_docker_run_to_urun_and_nothing_else() {
    let (_g, u, d) = setup();
    let o = bash_with_function(
        &d,
        &u,
        &format!(
            "echo hello-through-fn | docker run --rm -i {} cat; echo status=$?",
            image()
        ),
        b"",
    );
    assert_eq!(stdout(&o), "hello-through-fn\nstatus=0\n", "{}", stderr(&o));
    // The audit record is written once the client has its status: wait for it.
    d.wait_log("\"argv\":[\"cat\"]", Duration::from_secs(20));
    // `docker container run` too, with urun's own refusals and statuses.
    let o = bash_with_function(
        &d,
        &u,
        &format!(
            "docker container run --privileged {} id; echo status=$?",
            image()
        ),
        b"",
    );
    assert_eq!(stdout(&o), "status=125\n");
    assert!(
        stderr(&o).starts_with("urun: --privileged is not allowed"),
        "{}",
        stderr(&o)
    );
    // Other subcommands go to the real docker: its client answers, the daemon refuses
    // this user (not in the docker group); urun is not involved.
    let o = bash_with_function(&d, &u, "docker version; echo status=$?", b"");
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        out.contains("Client:") && out.contains("status=1"),
        "{out}{err}"
    );
    assert!(
        err.contains("permission denied") && !err.contains("urun"),
        "{err}"
    );
    // zsh too (tests/setup.sh installs it).
    let o = shell_with_function(
        "/usr/bin/zsh",
        &d,
        &u,
        &format!(
            "echo via-zsh | docker run -i {} cat; docker version >/dev/null 2>&1; echo status=$?",
            image()
        ),
        b"",
    );
    assert_eq!(stdout(&o), "via-zsh\nstatus=1\n", "{}", stderr(&o));
    // Someone who can use Docker (root here) keeps the real `docker run`.
    let o = Command::new("/bin/bash")
        .args([
            "-c",
            &format!(". {SHELL_FN}; __urun_docker_usable && echo real-docker"),
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "real-docker\n");
}

#[test]
#[serial]
fn shell_function_routes_build_images_rmi_and_push_to_urun() {
    let (_g, u, d) = setup();
    let short = image_id(image())["sha256:".len()..][..12].to_string();
    // docker images / image ls / image list: urun's table of what the user may run.
    let o = bash_with_function(
        &d,
        &u,
        "docker images -q; echo status=$?; docker image ls; docker image list --no-trunc -q",
        b"",
    );
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{short}\nstatus=0\n")),
        "{out}{}",
        stderr(&o)
    );
    assert!(
        out.contains("REPOSITORY") && out.contains("IMAGE ID"),
        "{out}"
    );
    assert!(out.contains(&image_id(image())), "{out}");
    // docker build / image build / builder build: urun's flags and refusals.
    for (cmd, flag) in [
        ("docker build --network host .", "--network"),
        ("docker image build --secret id=x .", "--secret"),
        (
            "docker builder build --platform linux/arm64 .",
            "--platform",
        ),
    ] {
        let o = bash_with_function(&d, &u, &format!("{cmd}; echo status=$?"), b"");
        assert_eq!(stdout(&o), "status=125\n", "{cmd}: {}", stderr(&o));
        assert!(
            stderr(&o).starts_with(&format!("urun: {flag} is not allowed: ")),
            "{cmd}: {}",
            stderr(&o)
        );
    }
    // docker rmi / image rm / image remove: only one's own builds.
    for cmd in ["docker rmi", "docker image rm", "docker image remove"] {
        let o = bash_with_function(&d, &u, &format!("{cmd} {}; echo status=$?", image()), b"");
        assert_eq!(stdout(&o), "status=125\n", "{cmd}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("not one of your builds"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
    assert!(d.docker(&["image", "inspect", image()]).status.success());
    // docker push / image push: urun's (here: building is off, which a push needs as a
    // build does), never the real docker's.
    let o = bash_with_function(
        &d,
        &u,
        "docker push app:1; docker image push app:1; echo status=$?",
        b"",
    );
    assert_eq!(stdout(&o), "status=125\n", "{}", stderr(&o));
    assert_eq!(
        stderr(&o)
            .matches("urun: building images is not enabled here (policy [build] enabled = false)")
            .count(),
        2,
        "{}",
        stderr(&o)
    );
    // `docker run` goes to `urun run`, so an image named like a urun command runs too.
    let o = bash_with_function(&d, &u, "docker run --rm build true; echo status=$?", b"");
    assert!(
        stderr(&o).contains("Unable to find image 'build"),
        "{}",
        stderr(&o)
    );
    // Other image commands stay docker's.
    let o = bash_with_function(&d, &u, "docker image inspect x; echo status=$?", b"");
    assert!(
        stderr(&o).contains("permission denied") && !stderr(&o).contains("urun"),
        "{}",
        stderr(&o)
    );
}

// ───────────────────────────── man pages and completions ─────────────────────────────

#[test]
fn man_pages_and_completions_come_from_the_clap_definition() {
    let dir = std::env::temp_dir().join(format!("urun-docs-{}", unique()));
    let files = gen_docs::generate(&dir).unwrap();
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    assert_eq!(files.len(), 9);
    let man = read("urun.1");
    for want in [
        "\\-\\-privileged",
        "FORCED SETTINGS",
        "EXIT STATUS",
        "128+N",
        "\\-\\-env\\-file",
    ] {
        assert!(man.contains(want), "{want} not in urun.1");
    }
    assert!(read("urund.8").contains("\\-\\-docker\\-host"));
    assert!(man.contains("COMMANDS") && man.contains("urun\\-build(1)"));
    let build = read("urun-build.1");
    for want in [
        "\\-\\-build\\-arg",
        "\\-\\-iidfile",
        "\\-\\-secret",
        "build secrets are not available",
        "EXIT STATUS",
    ] {
        assert!(build.contains(want), "{want} not in urun-build.1");
    }
    for page in ["urun-images.1", "urun-rmi.1", "urun-push.1"] {
        assert!(read(page).contains(".TH"), "{page}");
    }
    // The completions know the commands and each one's flags.
    let bash = read("completions/urun.bash");
    assert!(bash.contains("build") && bash.contains("--build-arg") && bash.contains("--iidfile"));
    assert!(read("completions/_urun").contains("--build-arg"));
    assert!(read("completions/urun.fish").contains("-l build-arg"));
    assert!(read("completions/urun.bash").contains("--entrypoint"));
    assert!(read("completions/_urun").contains("--entrypoint"));
    assert!(read("completions/urun.fish").contains("-l entrypoint"));
    let _ = std::fs::remove_dir_all(&dir);
}

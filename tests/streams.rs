//! The streams end to end, byte for byte, whatever the client's stdin is: a pipe, a
//! FIFO, a socket or a regular file (passed to urund as a descriptor, which reads it
//! itself), /dev/null (copied by the client as before); stdout and stderr at once;
//! stdin ended early, stdout closed early by its reader; the deadline and a hang-up while urund moves stdin;
//! descriptors a hostile client passes as its stdin. Real urund, real urun run as real
//! users, real Docker daemon.

mod common;

use common::*;
use serial_test::serial;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn setup(limits: &str) -> (TestGroup, TestUser, Daemon) {
    let g = TestGroup::new("urs");
    let u = TestUser::new(&[&g]);
    let d = Daemon::start(&format!("{}{limits}", policy_for(&g)));
    (g, u, d)
}

/// `n` bytes that no compression or pattern could fake (xorshift, seeded per call).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Runs `cmd` with `stdin`, collecting stdout and stderr.
fn output_with(mut cmd: Command, stdin: impl Into<Stdio>) -> Output {
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("running urun")
}

/// Starts `cmd` with these standard streams.
fn spawn(mut cmd: Command, stdin: impl Into<Stdio>, stdout: Stdio, stderr: Stdio) -> Child {
    cmd.stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Waits until urun's container runs (and has had a moment to start reading).
fn until_running(d: &Daemon) {
    d.wait_running(1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
}

/// Kills the client once its container runs.
fn kill_once_running(d: &Daemon, mut child: Child) {
    until_running(d);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// No container of urund's is left within `secs` seconds.
fn no_container_within(d: &Daemon, secs: u64, what: &str) {
    d.wait_no_containers(Duration::from_secs(secs))
        .unwrap_or_else(|left| panic!("{what}: containers left after {secs} s: {left:?}"));
}

/// Reads 1 MiB of the client's stdout (every byte `byte`), then closes it: urun ends
/// as SIGPIPE does (141) and no container is left.
fn close_stdout_after_a_mib(d: &Daemon, mut child: Child, byte: u8, what: &str) {
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    out.read_exact(&mut buf).unwrap();
    assert!(
        buf.iter().all(|&b| b == byte),
        "{what}: stdout is not what cat wrote"
    );
    drop(out);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(141), "{what}: urun's status");
    no_container_within(d, 5, what);
}

/// A scratch directory the test removes.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let p = std::env::temp_dir().join(format!("urun-streams-{}", unique()));
        std::fs::create_dir(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}");
    }
}

#[test]
#[serial]
fn a_quarter_gib_of_random_bytes_through_a_piped_stdin_comes_back_byte_exact() {
    let (_g, u, d) = setup("");
    let data = random_bytes(256 << 20, 0x5eed_0001);
    let t = Instant::now();
    let o = d.run(&u, &["-i", image(), "cat"], &data);
    eprintln!("256 MiB each way in {:?}", t.elapsed());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same(&o.stdout, &data, "stdout");
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    assert!(d.containers().is_empty(), "container left behind");
}

#[test]
#[serial]
fn random_bytes_written_to_stdout_and_stderr_at_once_arrive_byte_exact_on_each() {
    // `tee` writes every chunk to both streams, so docker's stdout and stderr frames
    // alternate, and urund reads them in batches after its pauses (bench/NOTES.md).
    let (_g, u, d) = setup("");
    let data = random_bytes(64 << 20, 0x5eed_0005);
    let o = d.run(&u, &["-i", image(), "tee", "/dev/stderr"], &data);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same(&o.stdout, &data, "stdout");
    assert_same(&o.stderr, &data, "stderr");
    // And output that trickles, a line at a time with pauses between, arrives whole.
    let o = d.run(
        &u,
        &[
            image(),
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do echo $i; usleep 3000; done; echo err >&2",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "1\n2\n3\n4\n5\n");
    assert_eq!(stderr(&o), "err\n");
    assert!(d.containers().is_empty(), "container left behind");
}

#[test]
#[serial]
fn a_regular_file_on_stdin_is_read_from_its_current_position_byte_exact() {
    let (_g, u, d) = setup("");
    let dir = Scratch::new();
    let path = dir.0.join("input");
    let data = random_bytes(64 << 20, 0x5eed_0002);
    std::fs::write(&path, &data).unwrap();
    let o = output_with(
        d.urun(&u, &["-i", image(), "cat"]),
        std::fs::File::open(&path).unwrap(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same(&o.stdout, &data, "whole file");
    // As with docker: what the container gets starts where the file position is.
    let mut f = std::fs::File::open(&path).unwrap();
    f.seek(std::io::SeekFrom::Start(12345)).unwrap();
    let o = output_with(d.urun(&u, &["-i", image(), "cat"]), f);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same(&o.stdout, &data[12345..], "from offset 12345");
    // An empty file: the container sees end of file at once.
    std::fs::write(&path, b"").unwrap();
    let o = output_with(
        d.urun(&u, &["-i", image(), "wc", "-c"]),
        std::fs::File::open(&path).unwrap(),
    );
    assert_eq!(stdout(&o).trim(), "0", "{}", stderr(&o));
}

#[test]
#[serial]
fn a_fifo_a_socket_and_dev_null_on_stdin_arrive_byte_exact() {
    let (_g, u, d) = setup("");
    let data = random_bytes(24 << 20, 0x5eed_0003);
    // A FIFO, written by a thread of ours.
    let dir = Scratch::new();
    let fifo = dir.0.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let writer = {
        let (fifo, data) = (fifo.clone(), data.clone());
        std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            w.write_all(&data).unwrap();
        })
    };
    let r = std::fs::File::open(&fifo).unwrap();
    let o = output_with(d.urun(&u, &["-i", image(), "cat"]), r);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same(&o.stdout, &data, "FIFO");
    writer.join().unwrap();
    // A socket, shut down for writing once everything is sent.
    let (ours, theirs) = UnixStream::pair().unwrap();
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            let mut s = ours;
            s.write_all(&data).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let o = output_with(
        d.urun(&u, &["-i", image(), "cat"]),
        std::os::fd::OwnedFd::from(theirs),
    );
    writer.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same(&o.stdout, &data, "socket");
    // /dev/null (a device: copied by the client as before).
    let o = output_with(d.urun(&u, &["-i", image(), "wc", "-c"]), Stdio::null());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "0");
    assert!(d.containers().is_empty(), "container left behind");
}

#[test]
#[serial]
fn stdin_ended_early_by_its_writer_gives_the_container_exactly_what_was_written() {
    let (_g, u, d) = setup("");
    let data = random_bytes(3 << 20, 0x5eed_0004);
    let mut child = spawn(
        d.urun(&u, &["-i", image(), "cat"]),
        Stdio::piped(),
        Stdio::piped(),
        Stdio::piped(),
    );
    let mut w = child.stdin.take().unwrap();
    // Part of it, a pause (the container is reading), the rest cut short by closing.
    w.write_all(&data[..1 << 20]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    w.write_all(&data[1 << 20..(2 << 20) + 7]).unwrap();
    drop(w);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same(&o.stdout, &data[..(2 << 20) + 7], "prefix");
}

#[test]
#[serial]
fn stdout_closed_early_by_its_reader_ends_the_run_as_sigpipe_and_leaves_no_container() {
    let (_g, u, d) = setup("");
    let child = spawn(
        d.urun(&u, &[image(), "cat", "/dev/zero"]),
        Stdio::null(),
        Stdio::piped(),
        Stdio::piped(),
    );
    close_stdout_after_a_mib(&d, child, 0, "cat /dev/zero");
    // The same with urund reading a passed stdin at the same time.
    let mut child = spawn(
        d.urun(&u, &["-i", image(), "cat"]),
        Stdio::piped(),
        Stdio::piped(),
        Stdio::null(),
    );
    let mut w = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let chunk = vec![7u8; 1 << 16];
        while w.write_all(&chunk).is_ok() {}
    });
    close_stdout_after_a_mib(&d, child, 7, "cat of a passed stdin");
    feeder.join().unwrap();
}

#[test]
#[serial]
fn a_container_that_reads_only_the_start_of_its_stdin_ends_the_run_at_once() {
    // urund is in the middle of moving a chunk when the container closes its stdin:
    // the run ends with the container's status and exactly what it printed, whatever
    // the stdin is (a regular file, a pipe fed forever, a 1 TiB sparse file).
    let (_g, u, d) = setup("");
    let dir = Scratch::new();
    let data = random_bytes(32 << 20, 0x5eed_0006);
    let path = dir.0.join("input");
    std::fs::write(&path, &data).unwrap();
    let sparse = dir.0.join("sparse");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let cmd = ["-i", image(), "head", "-c", "100000"];
    let o = output_with(d.urun(&u, &cmd), std::fs::File::open(&path).unwrap());
    assert!(o.status.success(), "file: {}", stderr(&o));
    assert_same(&o.stdout, &data[..100000], "file");
    let o = output_with(d.urun(&u, &cmd), std::fs::File::open(&sparse).unwrap());
    assert!(o.status.success(), "sparse file: {}", stderr(&o));
    assert_same(&o.stdout, &[0u8; 100000], "sparse file");
    let mut child = spawn(
        d.urun(&u, &cmd),
        Stdio::piped(),
        Stdio::piped(),
        Stdio::piped(),
    );
    let mut w = child.stdin.take().unwrap();
    let fed = data.clone();
    let feeder = std::thread::spawn(move || while w.write_all(&fed).is_ok() {});
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "pipe: {}", stderr(&o));
    assert_same(&o.stdout, &data[..100000], "pipe");
    feeder.join().unwrap();
    no_container_within(&d, 5, "a container that read the start of its stdin");
}

/// A stdin that never ends: a FIFO whose writer stays open and silent, and a huge
/// sparse file that is always ready.
fn endless_stdins(dir: &Scratch) -> Vec<(&'static str, std::fs::File, Option<std::fs::File>)> {
    let fifo = dir.0.join("silent");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let r = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    // Back to blocking for the client, as a shell would give it.
    nix::fcntl::fcntl(
        &r,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .unwrap();
    let sparse = dir.0.join("sparse");
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(1 << 40).unwrap();
    vec![
        ("a silent FIFO", r, Some(w)),
        (
            "a 1 TiB sparse file",
            std::fs::File::open(&sparse).unwrap(),
            None,
        ),
    ]
}

#[test]
#[serial]
fn the_deadline_ends_a_run_while_urund_moves_an_endless_stdin() {
    let (_g, u, d) = setup("[limits]\nmax_runtime = \"3s\"\n");
    let dir = Scratch::new();
    for (what, stdin, _writer) in endless_stdins(&dir) {
        let t = Instant::now();
        let o = output_with(
            d.urun(&u, &["-i", image(), "sh", "-c", "cat >/dev/null"]),
            stdin,
        );
        let took = t.elapsed();
        assert_eq!(o.status.code(), Some(124), "{what}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("limits.max_runtime"),
            "{what}: {}",
            stderr(&o)
        );
        assert!(took < Duration::from_secs(20), "{what}: took {took:?}");
        no_container_within(&d, 5, what);
    }
}

#[test]
#[serial]
fn a_client_killed_while_urund_moves_its_stdin_leaves_no_container() {
    let (_g, u, d) = setup("");
    let dir = Scratch::new();
    for (what, stdin, _writer) in endless_stdins(&dir) {
        let child = spawn(
            d.urun(&u, &["-i", image(), "sh", "-c", "cat >/dev/null"]),
            stdin,
            Stdio::null(),
            Stdio::null(),
        );
        kill_once_running(&d, child);
        no_container_within(&d, 3, what);
    }
    // And a container that never reads the file it is given.
    let sparse = dir.0.join("sparse");
    let child = spawn(
        d.urun(&u, &["-i", image(), "sleep", "1000"]),
        std::fs::File::open(&sparse).unwrap(),
        Stdio::null(),
        Stdio::null(),
    );
    kill_once_running(&d, child);
    no_container_within(&d, 3, "not reading");
}

/// A crafted client that passes, as its stdin, `path` opened `how` (see
/// [`common::raw::crafted`]), to `wc -c`.
fn pass_stdin(d: &Daemon, u: &TestUser, how: &str, path: &Path) -> Output {
    let request = serde_json::json!({"version": 1, "image": image(), "command": ["wc", "-c"],
        "interactive": true, "stdin_fd": true});
    common::raw::crafted(d, u, &request, &[(how, path)])
}

#[test]
#[serial]
fn a_passed_stdin_that_cannot_be_read_safely_is_refused_with_one_line() {
    let (_g, u, d) = setup("");
    let dir = Scratch::new();
    let file = dir.0.join("mine");
    std::fs::write(&file, b"abc").unwrap();
    // The user's own file, for the cases that depend only on how it is opened.
    nix::unistd::chown(&dir.0, Some(nix::unistd::Uid::from_raw(u.uid)), None).unwrap();
    nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(u.uid)), None).unwrap();
    let f = file.to_str().unwrap();
    for (how, path, why) in [
        ("path", f, "O_PATH"),
        ("wronly", f, "not open for reading"),
        (
            "rdonly",
            "/dev/zero",
            "not a pipe, a socket or a regular file",
        ),
        ("dir", "/", "not a pipe, a socket or a regular file"),
    ] {
        let o = pass_stdin(&d, &u, how, Path::new(path));
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{how} {path}: {e}");
        assert!(
            e.contains("passed stdin refused") && e.contains(why),
            "{how} {path}: {e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    // Read-only, a regular file: taken, and read.
    let o = pass_stdin(&d, &u, "rdonly", Path::new(f));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "3");
    assert!(d.containers().is_empty(), "container left behind");
}

#[test]
#[serial]
fn with_a_passed_stdin_one_interrupt_reaches_a_container_whose_stdin_is_full() {
    // urund moves the piped stdin beside the client's frames, so a signal is not
    // queued behind stdin the container does not read: SIGINT ends `sleep` (130), as
    // with docker's sig-proxy.
    let (_g, u, d) = setup("");
    let mut c = spawn_flooding_stdin(
        d.urun(&u, &["-i", image(), "sleep", "1000"]),
        Stdio::piped(),
    );
    until_running(&d);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "urun still running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    no_container_within(&d, 5, "after the interrupt");
}

/// A hostile client (python3, as `user`): passes one end of a pipe as its stdin
/// (`which`: "read", or "write", which urund refuses and closes) while a thread of its
/// own holds that pipe's lock (a blocking `splice` from an empty socket into the pipe
/// waits with the lock held), for `hold` seconds.
fn spawn_holding_stdin_lock(d: &Daemon, user: &TestUser, which: &str, hold: u32) -> Child {
    const PY: &str = r#"
import ctypes, json, os, socket, struct, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
r, w = os.pipe()
os.write(w, b"x")
a, b = socket.socketpair()
threading.Thread(target=lambda: libc.splice(a.fileno(), None, w, None, 65536, 0), daemon=True).start()
time.sleep(0.3)
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
req = json.dumps({"version": 1, "image": sys.argv[2], "command": ["cat"],
                  "interactive": True, "stdin_fd": True}).encode()
fd = r if sys.argv[3] == "read" else w
t = time.time()
while True:
    try:
        s.sendmsg([struct.pack(">BI", 1, len(req)) + req],
                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
        break
    except PermissionError:  # not admitted yet (SO_PASSRIGHTS)
        if time.time() - t > 10:
            raise
        time.sleep(0.001)
time.sleep(float(sys.argv[4]))
"#;
    user.command("/usr/bin/python3")
        .args(["-c", PY, d.socket.to_str().unwrap(), image(), which])
        .arg(hold.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3")
}

/// Another member's `urun IMAGE true`: its status, if it ends within 20 s (it is
/// killed otherwise, by [`status_within`]).
fn another_run_status(d: &Daemon, other: &TestUser) -> Option<i32> {
    let mut run = spawn(
        d.urun(other, &[image(), "true"]),
        Stdio::null(),
        Stdio::null(),
        Stdio::null(),
    );
    status_within(&mut run, Duration::from_secs(20))
}

/// The status of `child` if it ends within `limit`; else it is killed and `None`.
fn status_within(child: &mut Child, limit: Duration) -> Option<i32> {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Review R1: every read of a pipe and its last close take the pipe's lock, which the
/// client can hold for as long as it likes; urund once did both on its single event
/// loop, where the wait cannot even be interrupted (not by SIGKILL): one member froze
/// urund for everyone, deadlines included. Now the pipe is read and closed on a
/// thread of the run's own: another member's run goes through, and the hostile run
/// still ends at its deadline, while the lock is held.
#[test]
#[serial]
fn a_client_holding_its_stdin_pipes_lock_does_not_freeze_urund() {
    let (g, u, d) = setup("[limits]\nmax_runtime = \"3s\"\n");
    let other = TestUser::new(&[&g]);
    for which in ["read", "write"] {
        let mut hostile = spawn_holding_stdin_lock(&d, &u, which, 40);
        if which == "read" {
            d.wait_running(1, Duration::from_secs(20));
        }
        // urund is reading (or closing) the pipe by now.
        std::thread::sleep(Duration::from_secs(2));
        let t = Instant::now();
        let status = another_run_status(&d, &other);
        // The hostile run's container goes at its deadline, the lock still held.
        let left = d.wait_no_containers(Duration::from_secs(15));
        let _ = hostile.kill();
        let _ = hostile.wait();
        assert_eq!(
            status,
            Some(0),
            "{which} end: another member's run while a client holds its stdin pipe's lock \
             (gave up after {:?})",
            t.elapsed()
        );
        left.unwrap_or_else(|c| panic!("{which} end: containers left past the deadline: {c:?}"));
    }
}

/// A member that holds the lock of a pipe and makes urund drop the last reference to
/// it (`dir`: the pipe passed as the working directory, refused; `later`: the pipe
/// attached to a byte after the request), as /run/rv-review/close_wedge.py. The
/// client opens the pipe a second time before its holder thread starts, passes that
/// file and closes its own copy while it is in flight: urund's is the last reference.
fn spawn_close_wedge(d: &Daemon, user: &TestUser, how: &str, hold: u32) -> Child {
    const PY: &str = r#"
import ctypes, json, os, socket, struct, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
sock, image, hold, how = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
r, w = os.pipe()
fd = os.open("/proc/self/fd/%d" % r, os.O_RDONLY)
a, b = socket.socketpair()
threading.Thread(target=lambda: libc.splice(a.fileno(), None, w, None, 65536, 0), daemon=True).start()
time.sleep(0.3)
s = socket.socket(socket.AF_UNIX); s.connect(sock)
rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
if how == "dir":
    req = json.dumps({"version": 1, "image": image, "command": ["true"],
                      "mount": {"target": "/w"}}).encode()
    frame = struct.pack(">BI", 1, len(req)) + req
    t = time.time()
    while True:
        try:
            s.sendmsg([frame[:5]], rights)
            break
        except PermissionError:  # not admitted yet (SO_PASSRIGHTS)
            if time.time() - t > 10:
                raise
            time.sleep(0.001)
    os.close(fd)
    time.sleep(0.5)
    s.sendall(frame[5:])
else:
    req = json.dumps({"version": 1, "image": image, "command": ["sleep", "3"],
                      "interactive": True}).encode()
    s.sendall(struct.pack(">BI", 1, len(req)) + req)
    try:
        s.sendmsg([struct.pack(">BI", 2, 1) + b"x"], rights)
    except OSError:
        pass  # refused at once (SO_PASSRIGHTS off): nothing queued
    os.close(fd)
time.sleep(hold)
"#;
    user.command("/usr/bin/python3")
        .args(["-c", PY, d.socket.to_str().unwrap(), image()])
        .arg(hold.to_string())
        .arg(how)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3")
}

/// Whether urund's event loop (its main thread) stayed in `D` state (waiting
/// uninterruptibly) through ten looks over two seconds.
fn event_loop_stuck(pid: u32) -> bool {
    (0..10).all(|_| {
        let stat =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).unwrap_or_default();
        std::thread::sleep(Duration::from_millis(200));
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('D'))
    })
}

/// Review R2: a pipe's last close takes its lock uninterruptibly, as its reads do
/// (R1), and urund's event loop once closed descriptors a client passed: a refused
/// working directory, descriptors sent with bytes after the request (which a plain
/// `read` makes the kernel close inside urund's call). A member holding the pipe's
/// lock froze urund for everyone. Now those last references are closed on a thread:
/// the event loop never waits, and another member's run goes through.
#[test]
#[serial]
fn a_client_holding_a_passed_pipes_lock_cannot_freeze_urund_by_its_close() {
    let (g, u, d) = setup("[limits]\nmax_runtime = \"5s\"\n");
    let other = TestUser::new(&[&g]);
    for how in ["dir", "later"] {
        let mut hostile = spawn_close_wedge(&d, &u, how, 40);
        // The pipe has been passed and dropped by now.
        std::thread::sleep(Duration::from_secs(3));
        let stuck = event_loop_stuck(d.pid());
        let t = Instant::now();
        let status = another_run_status(&d, &other);
        let left = d.wait_no_containers(Duration::from_secs(15));
        let _ = hostile.kill();
        let _ = hostile.wait();
        assert!(
            !stuck,
            "{how}: urund's event loop waits uninterruptibly while a client holds a pipe's lock"
        );
        assert_eq!(
            status,
            Some(0),
            "{how}: another member's run while a client holds a passed pipe's lock \
             (gave up after {:?})",
            t.elapsed()
        );
        left.unwrap_or_else(|c| panic!("{how}: containers left past the deadline: {c:?}"));
    }
}

/// urund's closing threads now (named `urund-close`).
fn closing_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .filter(|c| c.trim() == "urund-close")
                .count()
        })
        .unwrap_or(0)
}

/// Waits until urund has no closing thread left (at most `limit`).
fn until_no_closing_thread(d: &Daemon, limit: Duration) -> usize {
    let t = Instant::now();
    loop {
        let n = closing_threads(d.pid());
        if n == 0 || t.elapsed() > limit {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A member whose closes wait (python3, as `user`): makes `admitted` connections, each
/// passing a file whose last close waits (`kind`: "pipe", a pipe whose lock a thread of
/// its own holds; "linger", a TCP socket with `SO_LINGER` and unsent data its peer never
/// reads) as its working directory (refused: urund closes it), waits for each answer,
/// then `refused` more at once, which its `per_user` cap refuses at `accept`, trying to
/// send such a file before urund takes the connection. Prints
/// `sent <n> refused <m>` (how many of the latter got a descriptor through, and how
/// many the kernel refused), then holds everything for `hold` seconds.
fn spawn_waiting_closes(
    d: &Daemon,
    user: &TestUser,
    kind: &str,
    admitted: u32,
    refused: u32,
    hold: u32,
) -> Child {
    const PY: &str = r#"
import ctypes, json, os, socket, struct, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
path, image, kind = sys.argv[1], sys.argv[2], sys.argv[3]
admitted, refused, hold = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
keep = []
lsn = socket.socket(); lsn.bind(("127.0.0.1", 0)); lsn.listen(64)
def wedge():
    if kind == "pipe":
        r, w = os.pipe()
        fd = os.open("/proc/self/fd/%d" % r, os.O_RDONLY)
        a, b = socket.socketpair()
        threading.Thread(target=lambda: libc.splice(a.fileno(), None, w, None, 65536, 0),
                         daemon=True).start()
        keep.extend([r, w, a, b])
        return fd
    c = socket.create_connection(lsn.getsockname())
    peer, _ = lsn.accept()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    keep.append(peer)
    c.setblocking(False)
    try:
        while True:
            c.send(b"x" * 65536)
    except BlockingIOError:
        pass
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 120))
    fd = os.dup(c.fileno())
    c.close()
    return fd
req = json.dumps({"version": 1, "image": image, "command": ["true"],
                  "mount": {"target": "/w"}}).encode()
frame = struct.pack(">BI", 1, len(req)) + req
def connect(wait):
    fd = wedge()
    time.sleep(0.2)
    s = socket.socket(socket.AF_UNIX); s.connect(path)
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
    t, sent = time.time(), False
    while True:
        try:
            s.sendmsg([frame[:5]], rights)
            sent = True
            break
        except PermissionError:  # not admitted (yet)
            if time.time() - t > wait:
                break
            time.sleep(0.001)
        except OSError:  # refused and closed
            break
    if sent:
        os.close(fd)  # in flight: urund's is the last reference
    else:
        keep.append(fd)  # the last reference: its close would wait for the lock
    try:
        s.sendall(frame[5:])
        s.settimeout(5)
        while s.recv(65536):
            pass
    except OSError:
        pass
    keep.append(s)
    return sent
for _ in range(admitted):
    connect(10)
sent = sum(connect(1) for _ in range(refused))
print("sent %d refused %d" % (sent, refused - sent), flush=True)
time.sleep(hold)
"#;
    user.command("/usr/bin/python3")
        .args(["-c", PY, d.socket.to_str().unwrap(), image(), kind])
        .args([admitted.to_string(), refused.to_string(), hold.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3")
}

/// The R2 residual: urund closed each connection whose close may wait on a thread of
/// its own, with no bound, a connection refused at `accept` included (its queue could
/// hold descriptors sent before urund took it): a member passing files whose last
/// close waits (a pipe whose lock they hold, a socket with `SO_LINGER`) made urund
/// spawn one thread per connection, for as long as they liked. Now a member's closes
/// take at most two closing threads (the rest wait in their own queue, counted against
/// their own `per_user` cap), a connection takes descriptors only once urund admitted
/// it (a refused one is closed at once, on no thread), another member is served
/// meanwhile, and everything is closed once the files let go.
#[test]
#[serial]
fn a_member_whose_closes_wait_holds_two_closing_threads_at_most() {
    let (g, u, d) = setup("[connections]\nper_user = 5\n");
    let other = TestUser::new(&[&g]);
    for kind in ["pipe", "linger"] {
        let mut hostile = spawn_waiting_closes(&d, &u, kind, 5, 4, 60);
        let out = hostile.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_default();
        std::thread::sleep(Duration::from_secs(1));
        let threads = closing_threads(d.pid());
        let stuck = event_loop_stuck(d.pid());
        let status = another_run_status(&d, &other);
        let _ = hostile.kill();
        let _ = hostile.wait();
        // The files let go: every close returns, the member's places come back.
        let left = until_no_closing_thread(&d, Duration::from_secs(20));
        let again = another_run_status(&d, &u);
        // Two: the member's closes do wait, and take no more threads than that.
        assert_eq!(
            threads, 2,
            "{kind}: closing threads for one member's closes that wait"
        );
        assert_eq!(
            line.trim(),
            "sent 0 refused 4",
            "{kind}: descriptors got onto connections urund refused at accept"
        );
        assert!(!stuck, "{kind}: urund's event loop waits uninterruptibly");
        assert_eq!(status, Some(0), "{kind}: another member's run");
        assert_eq!(
            left, 0,
            "{kind}: closing threads left once the files let go"
        );
        assert_eq!(again, Some(0), "{kind}: the member's own run afterwards");
    }
    assert!(d.containers().is_empty(), "container left behind");
}

/// A `Query`, `Build` or `Manage` frame (`urun --policy`, `urun build`, `urun images`)
/// carries no descriptor: one that does is refused with one line (status 125) before
/// anything is done, and urund keeps nothing of what was passed once it has closed it.
#[test]
#[serial]
fn a_query_build_or_manage_frame_carrying_descriptors_is_refused_and_nothing_is_kept() {
    let (_g, u, d) = setup("");
    let dir = Scratch::new();
    let marker = dir.0.join("urun-passed-marker");
    std::fs::write(&marker, "x").unwrap();
    for (kind, name) in [(0x06, "Query"), (0x07, "Build"), (0x0a, "Manage")] {
        let pass = [("rdonly", marker.as_path()), ("rdonly", marker.as_path())];
        let o = raw::crafted_frame(&d, &u, kind, r#"{"version": 1}"#, &pass);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(
            err.contains(&format!("descriptors passed with a {name} frame")),
            "{name}: {err}"
        );
    }
    // Closed on a closing thread, which returns at once: nothing of it kept.
    assert_eq!(until_no_closing_thread(&d, Duration::from_secs(10)), 0);
    let kept: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.to_string_lossy().contains("urun-passed-marker"))
        .collect();
    assert!(kept.is_empty(), "urund still holds {kept:?}");
}

/// A FUSE filesystem mounted at `at` for `user`, with `allow_other` (as a member can
/// where /etc/fuse.conf has `user_allow_other`; here root mounts it). Its server
/// (python3) answers `FUSE_INIT`, opening a directory, and looking up and opening its
/// one file `f` (a regular file), so the member can open and pass its root or `f`,
/// and never anything else: a `stat` or `statfs` of the root, or the `flush` that
/// every `close` of `f` sends, waits for ever, uninterruptibly once the server has
/// read the request. Dropped, the server
/// is killed, which aborts the connection (every call waiting on it fails at once),
/// and the mount goes.
struct SilentFuse {
    server: Child,
    at: std::path::PathBuf,
}

impl SilentFuse {
    fn mount(at: &Path, user: &TestUser) -> SilentFuse {
        const PY: &str = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/dev/fuse", os.O_RDWR)
opts = "fd=%d,rootmode=40000,user_id=%s,group_id=%s,allow_other" % (fd, sys.argv[2], sys.argv[3])
if libc.mount(b"urun-test", sys.argv[1].encode(), b"fuse", 0, opts.encode()) != 0:
    sys.exit("mount: " + os.strerror(ctypes.get_errno()))
print("mounted", flush=True)
def reply(unique, payload=b""):
    os.write(fd, struct.pack("<IiQ", 16 + len(payload), 0, unique) + payload)
while True:
    req = os.read(fd, 1 << 21)
    opcode, unique = struct.unpack("<IQ", req[4:16])
    if opcode == 26:  # INIT: the kernel's major version, minor 31
        major = struct.unpack("<I", req[40:44])[0]
        reply(unique, struct.pack("<IIIIHHIIHH", major, 31, 0, 0, 0, 0, 4096, 0, 0, 0) + bytes(28))
    elif opcode == 27:  # OPENDIR
        reply(unique, struct.pack("<QIi", 0, 0, 0))
    elif opcode == 29:  # RELEASEDIR
        reply(unique)
    elif opcode == 1 and req[40:].rstrip(b"\0") == b"f":  # LOOKUP of f: 0644, the user's
        attr = struct.pack("<QQQQQQIIIIIIIIII", 2, 0, 0, 0, 0, 0, 0, 0, 0, 0o100644, 1,
                           int(sys.argv[2]), int(sys.argv[3]), 0, 4096, 0)
        reply(unique, struct.pack("<QQQQII", 2, 0, 3600, 3600, 0, 0) + attr)
    elif opcode == 14:  # OPEN
        reply(unique, struct.pack("<QIi", 0, 0, 0))
"#;
        let mut server = Command::new("/usr/bin/python3")
            .args(["-c", PY, at.to_str().unwrap()])
            .arg(user.uid.to_string())
            .arg(user.gid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = [0u8; 8];
        let got = server.stdout.take().unwrap().read_exact(&mut line);
        let fuse = SilentFuse {
            server,
            at: at.to_path_buf(),
        };
        assert!(got.is_ok() && &line == b"mounted\n", "no FUSE mount here");
        fuse
    }
}

impl Drop for SilentFuse {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = sh("umount", &["-l", self.at.to_str().unwrap()]);
    }
}

/// A directory in `u`'s home, owned by `u`, for a [`SilentFuse`] to be mounted on.
fn silent_mount_point(u: &TestUser) -> std::path::PathBuf {
    let at = std::path::PathBuf::from(format!("/home/{}/silent", u.name));
    std::fs::create_dir(&at).unwrap();
    let owner = format!("{}:{}", u.uid, u.gid);
    assert!(sh("chown", &[&owner, at.to_str().unwrap()])
        .status
        .success());
    at
}

/// Review (2026-12-02, 3): urund once examined a passed working directory on its event loop
/// (`fstat`, `fstatvfs`, a lookup of its path, `openat2`): a member's FUSE directory
/// whose server never answers froze urund for everyone, uninterruptibly. Now a FUSE
/// directory is refused from /proc alone, and every call that reaches a directory's
/// filesystem is made on a thread of the run's own, within a few seconds: the
/// member's run ends with 125 and one line, another member's run goes through
/// meanwhile, and nothing is left behind.
#[test]
#[serial]
fn a_working_directory_whose_filesystem_does_not_answer_does_not_freeze_urund() {
    let (g, u, d) = setup("[mounts]\nworkdir = true\nroots = [\"/home\"]\n");
    let other = TestUser::new(&[&g]);
    let at = silent_mount_point(&u);
    let fuse = SilentFuse::mount(&at, &u);
    let request = serde_json::json!({"version": 1, "image": image(), "command": ["true"],
                                     "mount": {"target": "/w"}});
    let (hostile, stuck, status) = std::thread::scope(|s| {
        let hostile = s.spawn(|| raw::crafted(&d, &u, &request, &[("dir", &at)]));
        std::thread::sleep(Duration::from_secs(1));
        let stuck = event_loop_stuck(d.pid());
        let status = another_run_status(&d, &other);
        // The member's run has ended by now, or never will while the FUSE server
        // lives: its end is looked at after 15 s, then the connection is aborted.
        let t = Instant::now();
        while !hostile.is_finished() && t.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let ended = hostile.is_finished();
        drop(fuse);
        let out = hostile.join().unwrap();
        (ended.then_some(out), stuck, status)
    });
    assert!(!stuck, "urund's event loop waits for a FUSE server");
    assert_eq!(
        status,
        Some(0),
        "another member's run while urund examines a directory that does not answer"
    );
    let hostile = hostile.expect("the member's run did not end while its FUSE server lived");
    assert_eq!(hostile.status.code(), Some(125), "{}", stderr(&hostile));
    let line = stderr(&hostile);
    assert_eq!(line.trim().lines().count(), 1, "{line}");
    assert!(line.contains("mounts.workdir"), "{line}");
    d.wait_no_containers(Duration::from_secs(15))
        .unwrap_or_else(|c| panic!("containers left: {c:?}"));
    let runtime = d.socket.parent().unwrap().join("run");
    assert!(
        mounts_under(&runtime).is_empty(),
        "{:?}",
        mounts_under(&runtime)
    );
    assert!(mounts_under(&at).is_empty(), "the FUSE mount is left");
}

/// Every `close` of a file, not only its last, runs the filesystem's `flush`, and on
/// FUSE that waits for the server. urund once copied every descriptor a request came
/// with at once and dropped the copies on its event loop when the request was refused
/// (two descriptors without `stdin_fd`, a bad request, ...): a member passing a FUSE
/// file whose server never answers `FLUSH` froze urund for everyone. Now urund copies
/// only the descriptors a checked request uses, and the last references are closed
/// off the event loop.
#[test]
#[serial]
fn a_passed_file_whose_flush_never_answers_does_not_freeze_urund() {
    let (g, u, d) = setup("");
    let other = TestUser::new(&[&g]);
    let at = silent_mount_point(&u);
    let file = at.join("f");
    let request = serde_json::json!({"version": 1, "image": image(), "command": ["true"]});
    // Two descriptors (a request may carry two: refused as no `stdin_fd` is set), and
    // three (more than a request may carry: urund parks the extra ones).
    for n in [2, 3] {
        let fuse = SilentFuse::mount(&at, &u);
        let passed = vec![("rdonly", file.as_path()); n];
        let (refused, status) = std::thread::scope(|s| {
            // The client itself stays in its own `flush` at exit until the server goes.
            let hostile = s.spawn(|| raw::crafted(&d, &u, &request, &passed));
            std::thread::sleep(Duration::from_secs(2));
            let status = another_run_status(&d, &other);
            drop(fuse);
            (hostile.join().unwrap(), status)
        });
        assert_eq!(
            status,
            Some(0),
            "another member's run while a FUSE file's flush is not answered ({n} descriptors)"
        );
        assert_eq!(
            refused.status.code(),
            Some(125),
            "{n}: {}",
            stderr(&refused)
        );
    }
}

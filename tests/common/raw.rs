//! Raw bytes to urund's socket, sent as a test user (Debian's python3): what a
//! hostile client can write that urun never would. Frames are built, and replies
//! parsed, by urun's own wire module.

use super::{stderr, stdout, Daemon, TestUser};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::Duration;
use urun::wire::{self, Kind};

/// One frame as urun writes it.
pub fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    wire::write_frame(&mut v, kind, payload).unwrap();
    v
}

/// What the client does after its first bytes.
pub enum Then<'a> {
    /// Shuts down its writing side.
    Shut,
    /// `pause` later, sends `more` `times` times over (from a thread, as fast as
    /// urund reads them), keeping its writing side open.
    Send {
        more: &'a [u8],
        times: usize,
        pause: Duration,
    },
}

/// The client (python3) as `user`: connects to `d`'s socket, sends `first` (a send
/// the helper cuts short by closing the connection is not an error), then does
/// `then`, and reads everything urund sends until it closes the connection; prints
/// it in hex on stdout (see [`reply`]).
pub fn spawn(d: &Daemon, user: &TestUser, first: &[u8], then: Then) -> Child {
    const PY: &str = "import socket,sys,threading,time\n\
s=socket.socket(socket.AF_UNIX)\n\
s.connect(sys.argv[1])\n\
try:\n s.sendall(bytes.fromhex(sys.argv[2]))\nexcept OSError:\n pass\n\
def more():\n time.sleep(float(sys.argv[5]))\n try:\n  s.sendall(bytes.fromhex(sys.argv[3])*int(sys.argv[4]))\n except OSError:\n  pass\n\
if sys.argv[3] == 'shut':\n s.shutdown(socket.SHUT_WR)\n\
else:\n threading.Thread(target=more,daemon=True).start()\n\
d=b''\n\
while True:\n b=s.recv(65536)\n if not b: break\n d+=b\n\
sys.stdout.write(d.hex())\n";
    let (more, times, pause) = match then {
        Then::Shut => ("shut".to_string(), 0, 0.0),
        Then::Send { more, times, pause } => (hex(more), times, pause.as_secs_f64()),
    };
    user.command("/usr/bin/python3")
        .args(["-c", PY, d.socket.to_str().unwrap(), &hex(first), &more])
        .arg(times.to_string())
        .arg(pause.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3")
}

/// What a [`spawn`]ed client read (its stdout, in hex), as bytes.
pub fn reply(hex_text: &str) -> Vec<u8> {
    let s = hex_text.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn finish(c: Child) -> Vec<u8> {
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    reply(&stdout(&o))
}

/// Sends `bytes` to the helper as `user`, shuts down its writing side and returns all
/// that came back until urund closed the connection.
pub fn exchange(d: &Daemon, user: &TestUser, bytes: &[u8]) -> Vec<u8> {
    finish(spawn(d, user, bytes, Then::Shut))
}

/// Sends `first` to the helper as `user`, then, `pause` later (a container has
/// started), `more`; returns all that came back until urund closed the connection.
pub fn exchange_later(
    d: &Daemon,
    user: &TestUser,
    first: &[u8],
    more: &[u8],
    pause: Duration,
) -> Vec<u8> {
    let then = Then::Send {
        more,
        times: 1,
        pause,
    };
    finish(spawn(d, user, first, then))
}

/// The frames of a reply, in order.
pub fn frames(reply: &[u8]) -> Vec<(Kind, Vec<u8>)> {
    let mut r = reply;
    let mut frames = Vec::new();
    while let Some(f) = wire::read_frame(&mut r).unwrap() {
        frames.push(f);
    }
    frames
}

/// The reply must be exactly one Error frame with status 125; returns its message.
pub fn expect_error_frame(reply: &[u8]) -> String {
    let mut r = reply;
    let (kind, payload) = wire::read_frame(&mut r).unwrap().expect("a frame");
    assert_eq!(kind, Kind::Error);
    let (status, msg) = wire::decode_error(&payload).unwrap();
    assert_eq!(status, 125);
    assert!(
        wire::read_frame(&mut r).unwrap().is_none(),
        "more after the error"
    );
    msg
}

/// A client that speaks the protocol itself, as `user` (python3): opens each of `pass`
/// here (`how`: "path" for `O_PATH`, "wronly", "rdonly", or "dir"), sends `request` (a
/// request body) with those descriptors (SCM_RIGHTS, in order), then prints the
/// container's stdout and exits with the run's status, or prints an error frame's
/// message on stderr and exits with its status: whatever the real client would check.
pub fn crafted(
    d: &Daemon,
    user: &TestUser,
    request: &serde_json::Value,
    pass: &[(&str, &Path)],
) -> Output {
    crafted_frame(d, user, 1, &request.to_string(), pass)
}

/// [`crafted`], with a first frame of any `kind` (a `Query`, `Build` or `Manage`
/// carrying descriptors, say) and `body` as its payload.
pub fn crafted_frame(
    d: &Daemon,
    user: &TestUser,
    kind: u8,
    body: &str,
    pass: &[(&str, &Path)],
) -> Output {
    const PY: &str = r#"
import os, socket, struct, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
flags = {"path": os.O_PATH, "wronly": os.O_WRONLY, "rdonly": os.O_RDONLY,
         "dir": os.O_RDONLY | os.O_DIRECTORY}
pairs = sys.argv[4:]
fds = [os.open(pairs[i + 1], flags[pairs[i]]) for i in range(0, len(pairs), 2)]
p = sys.argv[3].encode()
rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("%di" % len(fds), *fds))]
t = time.time()
while True:
    try:
        s.sendmsg([struct.pack(">BI", int(sys.argv[2]), len(p)) + p], rights if fds else [])
        break
    except PermissionError:
        # descriptors only once urund admitted the connection (SO_PASSRIGHTS)
        if time.time() - t > 10:
            raise
        time.sleep(0.001)
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
while data:
    k, n = struct.unpack(">BI", data[:5])
    body, data = data[5:5 + n], data[5 + n:]
    if k == 0x81:
        sys.stdout.write(body.decode())
    if k == 0x83:
        sys.exit(body[0])
    if k == 0x84:
        sys.stderr.write(body[1:].decode() + "\n")
        sys.exit(body[0])
"#;
    let mut c = user.command("/usr/bin/python3");
    c.args([
        "-c",
        PY,
        d.socket.to_str().unwrap(),
        &kind.to_string(),
        body,
    ]);
    for (how, path) in pass {
        c.arg(how).arg(path);
    }
    c.stdin(Stdio::null()).output().expect("python3")
}

//! Raw bytes to urund's socket, sent as a test user (Debian's python3): what a
//! hostile client can write that urun never would. Frames are built, and replies
//! parsed, by urun's own wire module.

use super::{stderr, stdout, Daemon, TestUser};
use urun::wire::{self, Kind};

/// One frame as urun writes it.
pub fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    wire::write_frame(&mut v, kind, payload).unwrap();
    v
}

/// Sends `bytes` to the helper as `user`, shuts down its writing side and returns all
/// that came back until urund closed the connection. A send the helper cuts short
/// (it closed the connection on a bad frame) is not an error.
pub fn exchange(d: &Daemon, user: &TestUser, bytes: &[u8]) -> Vec<u8> {
    talk(d, user, bytes, None)
}

/// Sends `first` to the helper as `user`, then, `pause` later (a container has
/// started), `more`; returns all that came back until urund closed the connection.
pub fn exchange_later(
    d: &Daemon,
    user: &TestUser,
    first: &[u8],
    more: &[u8],
    pause: std::time::Duration,
) -> Vec<u8> {
    talk(d, user, first, Some((more, pause)))
}

fn talk(
    d: &Daemon,
    user: &TestUser,
    first: &[u8],
    later: Option<(&[u8], std::time::Duration)>,
) -> Vec<u8> {
    const PY: &str = "import socket,sys,time\n\
s=socket.socket(socket.AF_UNIX)\n\
s.connect(sys.argv[1])\n\
try:\n s.sendall(bytes.fromhex(sys.argv[2]))\nexcept OSError:\n pass\n\
if sys.argv[3] == 'shut':\n s.shutdown(socket.SHUT_WR)\n\
else:\n time.sleep(float(sys.argv[4]))\n s.sendall(bytes.fromhex(sys.argv[3]))\n\
d=b''\n\
while True:\n b=s.recv(65536)\n if not b: break\n d+=b\n\
sys.stdout.write(d.hex())\n";
    let hex = |b: &[u8]| -> String { b.iter().map(|b| format!("{b:02x}")).collect() };
    let (more, pause) = match later {
        Some((more, pause)) => (hex(more), pause.as_secs_f64().to_string()),
        None => ("shut".to_string(), "0".to_string()),
    };
    let o = user
        .command("/usr/bin/python3")
        .args([
            "-c",
            PY,
            d.socket.to_str().unwrap(),
            &hex(first),
            &more,
            &pause,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
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

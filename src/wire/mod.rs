//! The wire protocol between `urun` (untrusted) and `urund` (trusted). Pure: no I/O
//! beyond generic `Read`/`Write` helpers, no policy.
//!
//! A connection is a sequence of frames, each `[kind: u8][len: u32 big-endian][payload]`.
//! The client sends exactly one `Request` frame first, then only `Stdin`, `StdinEof`,
//! `Signal` and `Resize` frames. The helper answers with `Stdout`/`Stderr` frames and ends
//! with exactly one `Exit` or `Error` frame. A `Signal` payload is one byte, the Linux
//! number of a signal in the closed list [`Signal`]; a `Resize` payload is rows then
//! columns, u16 big-endian each ([`WinSize`]). Every limit below is checked by the helper
//! before it allocates anything for a frame; a violation gets one `Error` frame and the
//! connection is closed.
//!
//! Nothing in a request says who the caller is: identity comes from the kernel
//! (`SO_PEERCRED`), and `Request` rejects unknown fields, so a frame that tries to name a
//! uid is refused outright.
#![forbid(unsafe_code)]

pub mod build;
pub mod status;

pub use build::{BuildRequest, ImageRow, Manage, Op, Outcome};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, Read, Write};

/// Protocol version spoken by this build. A request with another version is refused.
pub const VERSION: u32 = 1;
/// Largest payload of any frame.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest payload of the request frame (the whole request).
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest number of command words (entrypoint + command together).
pub const MAX_ARGS: usize = 1024;
/// Largest number of environment entries in a request.
pub const MAX_ENV: usize = 256;
/// Largest single string in a request (an env entry, the working directory, ...).
pub const MAX_STRING: usize = 8 * 1024;
/// Frame header size.
pub const HEADER: usize = 5;

/// Frame kinds. Client→helper kinds are below 0x80, helper→client kinds above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Request = 0x01,
    Stdin = 0x02,
    StdinEof = 0x03,
    Signal = 0x04,
    Resize = 0x05,
    /// Instead of a `Request`: a question about the caller's effective policy.
    Query = 0x06,
    /// Instead of a `Request`: a build ([`build::BuildRequest`]).
    Build = 0x07,
    /// The build context: a piece of the tar archive.
    Context = 0x08,
    /// The end of the build context (empty payload).
    ContextEnd = 0x09,
    /// Instead of a `Request`: `images`, `rmi` or `push` ([`build::Manage`]).
    Manage = 0x0a,
    Stdout = 0x81,
    Stderr = 0x82,
    Exit = 0x83,
    Error = 0x84,
    /// Progress of a pull done for this request: a JSON [`Progress`] payload.
    Progress = 0x85,
    /// What a build or management request produced: a JSON [`build::Outcome`].
    Result = 0x86,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Request,
            0x02 => Kind::Stdin,
            0x03 => Kind::StdinEof,
            0x04 => Kind::Signal,
            0x05 => Kind::Resize,
            0x06 => Kind::Query,
            0x07 => Kind::Build,
            0x08 => Kind::Context,
            0x09 => Kind::ContextEnd,
            0x0a => Kind::Manage,
            0x81 => Kind::Stdout,
            0x82 => Kind::Stderr,
            0x83 => Kind::Exit,
            0x84 => Kind::Error,
            0x85 => Kind::Progress,
            0x86 => Kind::Result,
            _ => return None,
        })
    }

    /// True for the kinds a client may send.
    pub fn from_client(self) -> bool {
        (self as u8) < 0x80
    }
}

/// What is wrong with bytes received from the other side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    UnknownKind(u8),
    TooLarge { kind: Kind, len: usize, max: usize },
    UnexpectedKind(Kind),
    BadRequest(String),
    Version(u32),
    TooManyArgs(usize),
    BadPayload(Kind),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::UnknownKind(b) => write!(f, "unknown frame type 0x{b:02x}"),
            ProtocolError::TooLarge { kind, len, max } => {
                write!(
                    f,
                    "{kind:?} frame of {len} bytes exceeds the limit of {max}"
                )
            }
            ProtocolError::UnexpectedKind(k) => write!(f, "unexpected {k:?} frame"),
            ProtocolError::BadRequest(e) => write!(f, "malformed request: {e}"),
            ProtocolError::Version(v) => write!(
                f,
                "protocol version {v} is not supported (urund speaks {VERSION}); \
                 use the urun that matches this urund"
            ),
            ProtocolError::TooManyArgs(n) => {
                write!(f, "{n} command arguments exceed the limit of {MAX_ARGS}")
            }
            ProtocolError::BadPayload(k) => write!(f, "malformed {k:?} frame"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Parses and bounds-checks a frame header. Pure; called before any payload is read.
pub fn parse_header(h: [u8; HEADER]) -> Result<(Kind, usize), ProtocolError> {
    let kind = Kind::from_u8(h[0]).ok_or(ProtocolError::UnknownKind(h[0]))?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    let max = if matches!(
        kind,
        Kind::Request | Kind::Query | Kind::Build | Kind::Manage
    ) {
        MAX_REQUEST
    } else {
        MAX_FRAME
    };
    if len > max {
        return Err(ProtocolError::TooLarge { kind, len, max });
    }
    Ok((kind, len))
}

/// The header of a frame from a client after its first: a client's kind.
pub fn parse_client_header(h: [u8; HEADER]) -> Result<(Kind, usize), ProtocolError> {
    let (kind, len) = parse_header(h)?;
    if !kind.from_client() {
        return Err(ProtocolError::UnexpectedKind(kind));
    }
    Ok((kind, len))
}

/// The header of a connection's first frame: a `Request`, or a `Query`, `Build` or
/// `Manage` with no descriptor passed (`with_fd`).
pub fn parse_first_header(h: [u8; HEADER], with_fd: bool) -> Result<(Kind, usize), ProtocolError> {
    let (kind, len) = parse_header(h)?;
    match kind {
        Kind::Request => Ok((kind, len)),
        Kind::Query | Kind::Build | Kind::Manage if !with_fd => Ok((kind, len)),
        Kind::Query | Kind::Build | Kind::Manage => Err(ProtocolError::BadRequest(format!(
            "descriptors passed with a {kind:?} frame (only a run request may carry them)"
        ))),
        _ => Err(ProtocolError::UnexpectedKind(kind)),
    }
}

/// Encodes a frame header.
pub fn header(kind: Kind, len: usize) -> [u8; HEADER] {
    debug_assert!(len <= MAX_FRAME);
    let l = (len as u32).to_be_bytes();
    [kind as u8, l[0], l[1], l[2], l[3]]
}

/// Encodes one whole frame: header, then payload.
pub fn encode_frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER + payload.len());
    buf.extend_from_slice(&header(kind, payload.len()));
    buf.extend_from_slice(payload);
    buf
}

/// Writes one frame (header and payload in one `write_all`).
pub fn write_frame(w: &mut impl Write, kind: Kind, payload: &[u8]) -> io::Result<()> {
    w.write_all(&encode_frame(kind, payload))
}

/// Reads one frame. `Ok(None)` on a clean end of stream before a header.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(Kind, Vec<u8>)>> {
    let mut h = [0u8; HEADER];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (kind, len) = parse_header(h).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

/// The one request a client makes. Everything here is a wish; `urund` decides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub version: u32,
    /// Image reference as typed by the user.
    pub image: String,
    /// Command and arguments; empty means the image's default command.
    #[serde(default)]
    pub command: Vec<String>,
    /// Attach stdin (`-i`).
    #[serde(default)]
    pub interactive: bool,
    /// Allocate a terminal (`-t`).
    #[serde(default)]
    pub tty: bool,
    /// Initial terminal size (`-t`), applied once the container has started.
    #[serde(default)]
    pub size: Option<WinSize>,
    /// Environment entries `NAME=VALUE` (`-e`, `--env-file`); the judge checks names.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container (`-w`), absolute.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Replacement entrypoint (`--entrypoint`); `""` clears the image's.
    #[serde(default)]
    pub entrypoint: Option<String>,
    /// Container name as the user typed it (`--name`); urund prefixes it with the uid.
    #[serde(default)]
    pub name: Option<String>,
    /// The user the caller asked for (`-u`). Never used to set the container user: the
    /// judge only checks that it is the caller themself.
    #[serde(default)]
    pub user: Option<String>,
    /// Network mode asked for (`--network`); the judge decides.
    #[serde(default)]
    pub network: Option<String>,
    /// `--pull never`: fail rather than pull a missing image, whatever the policy allows.
    #[serde(default)]
    pub never_pull: bool,
    /// Mount the directory whose descriptor comes with this frame (SCM_RIGHTS) here.
    /// The request names only the container side: the host side is the descriptor.
    #[serde(default)]
    pub mount: Option<MountRequest>,
    /// With `-i` and no `-t`: the client's stdin comes as a descriptor with this frame
    /// (SCM_RIGHTS, after the directory's if there is one), read by urund itself, and
    /// no `Stdin`/`StdinEof` frame follows. Not sent when false, so a request without
    /// it is what it was before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_fd: bool,
}

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

impl WinSize {
    /// `Resize` payload: rows then columns, each u16 big-endian.
    pub fn encode(self) -> [u8; 4] {
        let (r, c) = (self.rows.to_be_bytes(), self.cols.to_be_bytes());
        [r[0], r[1], c[0], c[1]]
    }

    pub fn decode(p: &[u8]) -> Result<WinSize, ProtocolError> {
        match p {
            [r0, r1, c0, c1] => Ok(WinSize {
                rows: u16::from_be_bytes([*r0, *r1]),
                cols: u16::from_be_bytes([*c0, *c1]),
            }),
            _ => Err(ProtocolError::BadPayload(Kind::Resize)),
        }
    }
}

/// The signals a client may ask urund to deliver to its container: a closed list.
/// On the wire (`Signal` payload) each is one byte, its Linux number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Hup = 1,
    Int = 2,
    Quit = 3,
    Kill = 9,
    Usr1 = 10,
    Usr2 = 12,
    Term = 15,
}

impl Signal {
    pub const ALL: [Signal; 7] = [
        Signal::Hup,
        Signal::Int,
        Signal::Quit,
        Signal::Kill,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Term,
    ];

    /// The name Docker's kill endpoint takes.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Kill => "SIGKILL",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Term => "SIGTERM",
        }
    }

    pub fn encode(self) -> [u8; 1] {
        [self as u8]
    }

    /// Anything but one byte naming a listed signal is a protocol error.
    pub fn decode(p: &[u8]) -> Result<Signal, ProtocolError> {
        match p {
            [n] => Signal::ALL
                .into_iter()
                .find(|s| *s as u8 == *n)
                .ok_or(ProtocolError::BadPayload(Kind::Signal)),
            _ => Err(ProtocolError::BadPayload(Kind::Signal)),
        }
    }
}

/// The container side of the working-directory mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

impl Request {
    pub fn new(image: String, command: Vec<String>) -> Request {
        Request {
            version: VERSION,
            image,
            command,
            ..Default::default()
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Request always serialises")
    }

    /// Decodes and validates the structure of a request payload (not its policy).
    pub fn decode(payload: &[u8]) -> Result<Request, ProtocolError> {
        if payload.len() > MAX_REQUEST {
            return Err(ProtocolError::TooLarge {
                kind: Kind::Request,
                len: payload.len(),
                max: MAX_REQUEST,
            });
        }
        // The version is checked first so an old or new client gets the right message
        // rather than complaints about fields it did or did not send.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned = serde_json::from_slice(payload)
            .map_err(|e| ProtocolError::BadRequest(e.to_string()))?;
        if v.version != VERSION {
            return Err(ProtocolError::Version(v.version));
        }
        let req: Request = serde_json::from_slice(payload)
            .map_err(|e| ProtocolError::BadRequest(e.to_string()))?;
        req.check_bounds()?;
        req.check_strings()?;
        Ok(req)
    }

    /// Counts: command words and environment entries.
    fn check_bounds(&self) -> Result<(), ProtocolError> {
        if self.command.len() > MAX_ARGS {
            return Err(ProtocolError::TooManyArgs(self.command.len()));
        }
        if self.env.len() > MAX_ENV {
            return Err(ProtocolError::BadRequest(format!(
                "{} environment entries exceed the limit of {MAX_ENV}",
                self.env.len()
            )));
        }
        Ok(())
    }

    /// Strings: no NUL byte, bounded (command words only by the request size, for
    /// long `sh -c` scripts), environment entries `NAME=VALUE`, an absolute `-w`.
    fn check_strings(&self) -> Result<(), ProtocolError> {
        let bad = |m: String| Err(ProtocolError::BadRequest(m));
        let optional = [
            &self.workdir,
            &self.entrypoint,
            &self.name,
            &self.user,
            &self.network,
        ];
        let has_nul = std::iter::once(&self.image)
            .chain(self.command.iter())
            .any(|s| s.contains('\0'));
        let bad_string = self
            .env
            .iter()
            .chain(optional.into_iter().flatten())
            .any(|s| s.contains('\0') || s.len() > MAX_STRING);
        if has_nul || bad_string {
            return bad(format!(
                "NUL byte or a string longer than {MAX_STRING} bytes"
            ));
        }
        if let Some(e) = self.env.iter().find(|e| !valid_env_entry(e)) {
            let e: String = e.chars().take(64).collect();
            return bad(format!("environment entry {e:?} is not NAME=VALUE"));
        }
        if let Some(m) = &self.mount {
            if m.target.contains('\0') || m.target.len() > MAX_STRING {
                return bad(format!(
                    "mount target: NUL byte or longer than {MAX_STRING} bytes"
                ));
            }
        }
        match &self.workdir {
            Some(w) if !w.starts_with('/') => {
                bad(format!("working directory {w:?} is not an absolute path"))
            }
            _ => Ok(()),
        }
    }
}

/// A question the client may ask instead of making a request. Answered with
/// `Stdout` frames and `Exit` 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    pub version: u32,
    /// Only `"policy"`: the caller's effective limits, allowed images, forced settings.
    pub query: String,
}

impl Query {
    pub fn policy() -> Query {
        Query {
            version: VERSION,
            query: "policy".into(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Query always serialises")
    }

    pub fn decode(payload: &[u8]) -> Result<Query, ProtocolError> {
        let q: Query = serde_json::from_slice(payload)
            .map_err(|e| ProtocolError::BadRequest(e.to_string()))?;
        if q.version != VERSION {
            return Err(ProtocolError::Version(q.version));
        }
        if q.query != "policy" {
            return Err(ProtocolError::BadRequest(format!(
                "unknown query {:?}",
                q.query
            )));
        }
        Ok(q)
    }
}

/// Helper→client `Progress` payload: one event of a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The image being pulled.
    pub image: String,
    /// Layer id, or empty for events about the whole image.
    pub id: String,
    pub status: String,
    pub current: Option<u64>,
    pub total: Option<u64>,
}

/// `NAME=VALUE` with a portable name: a letter or `_`, then letters, digits, `_`.
pub fn valid_env_entry(e: &str) -> bool {
    match e.split_once('=') {
        Some((name, _)) => valid_env_name(name),
        None => false,
    }
}

pub fn valid_env_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Helper→client `Exit` payload: the exit status, 0..=255.
pub fn encode_exit(status: u8) -> [u8; 1] {
    [status]
}

pub fn decode_exit(p: &[u8]) -> Result<u8, ProtocolError> {
    match p {
        [s] => Ok(*s),
        _ => Err(ProtocolError::BadPayload(Kind::Exit)),
    }
}

/// Helper→client `Error` payload: the exit status the client should use, then a one-line
/// UTF-8 message.
pub fn encode_error(status: u8, msg: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + msg.len());
    v.push(status);
    v.extend_from_slice(msg.replace('\n', " ").as_bytes());
    v
}

pub fn decode_error(p: &[u8]) -> Result<(u8, String), ProtocolError> {
    match p.split_first() {
        Some((s, m)) => Ok((*s, String::from_utf8_lossy(m).into_owned())),
        None => Err(ProtocolError::BadPayload(Kind::Error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let r = Request::new("busybox".into(), vec!["id".into(), "-u".into()]);
        assert_eq!(Request::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn request_naming_a_uid_is_rejected() {
        let p = br#"{"version":1,"image":"busybox","command":["id"],"uid":0}"#;
        assert!(matches!(
            Request::decode(p),
            Err(ProtocolError::BadRequest(m)) if m.contains("unknown field `uid`")
        ));
    }

    #[test]
    fn wrong_version_is_rejected_first() {
        let p = br#"{"version":2,"image":"x","whatever":true}"#;
        assert_eq!(Request::decode(p), Err(ProtocolError::Version(2)));
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(matches!(
            Request::decode(b"\xff\xfegarbage"),
            Err(ProtocolError::BadRequest(_))
        ));
    }

    #[test]
    fn too_many_args() {
        let r = Request::new("x".into(), vec!["a".into(); MAX_ARGS + 1]);
        assert_eq!(
            Request::decode(&r.encode()),
            Err(ProtocolError::TooManyArgs(MAX_ARGS + 1))
        );
    }

    #[test]
    fn nul_bytes_rejected() {
        let r = Request::new("x".into(), vec!["a\0b".into()]);
        assert!(Request::decode(&r.encode()).is_err());
    }

    #[test]
    fn new_fields_round_trip_and_default() {
        let mut r = Request::new("x".into(), vec![]);
        r.tty = true;
        r.size = Some(WinSize { rows: 24, cols: 80 });
        r.env = vec!["TERM=xterm".into(), "LANG=".into()];
        r.workdir = Some("/w".into());
        r.entrypoint = Some(String::new());
        r.name = Some("web".into());
        r.user = Some("1001:1001".into());
        r.network = Some("none".into());
        r.never_pull = true;
        assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        // An old client's request (no new fields) still decodes.
        let old = Request::decode(br#"{"version":1,"image":"x"}"#).unwrap();
        assert!(!old.tty && old.env.is_empty() && old.user.is_none());
    }

    #[test]
    fn bad_env_and_workdir_rejected() {
        for env in ["NOEQUALS", "=x", "1A=x", "A-B=x", "A B=x", "A=\0"] {
            let mut r = Request::new("x".into(), vec![]);
            r.env = vec![env.into()];
            assert!(Request::decode(&r.encode()).is_err(), "{env:?}");
        }
        let mut r = Request::new("x".into(), vec![]);
        r.env = vec!["A=1".into(); MAX_ENV + 1];
        assert!(Request::decode(&r.encode()).is_err());
        r.env = vec![format!("A={}", "x".repeat(MAX_STRING))];
        assert!(Request::decode(&r.encode()).is_err());
        let mut r = Request::new("x".into(), vec![]);
        r.workdir = Some("relative".into());
        assert!(Request::decode(&r.encode()).is_err());
        r.workdir = Some("/a\0b".into());
        assert!(Request::decode(&r.encode()).is_err());
        r.workdir = Some("/ok".into());
        assert!(Request::decode(&r.encode()).is_ok());
        let p = br#"{"version":1,"image":"x","size":{"rows":1,"cols":2,"x":3}}"#;
        assert!(Request::decode(p).is_err());
    }

    #[test]
    fn signal_and_resize_payloads() {
        for s in Signal::ALL {
            assert_eq!(Signal::decode(&s.encode()), Ok(s));
        }
        // Only the listed signals: not SIGSTOP (19), SIGWINCH (28), 0, or two bytes.
        for bad in [&[19u8][..], &[28], &[0], &[2, 2], &[]] {
            assert_eq!(
                Signal::decode(bad),
                Err(ProtocolError::BadPayload(Kind::Signal))
            );
        }
        let w = WinSize {
            rows: 50,
            cols: 300,
        };
        assert_eq!(WinSize::decode(&w.encode()), Ok(w));
        assert!(WinSize::decode(&[0, 1, 2]).is_err());
    }

    #[test]
    fn which_kinds_a_client_may_send_first_and_after() {
        let h = |k: Kind| header(k, 3);
        assert_eq!(
            parse_first_header(h(Kind::Request), true),
            Ok((Kind::Request, 3))
        );
        assert_eq!(
            parse_first_header(h(Kind::Query), false),
            Ok((Kind::Query, 3))
        );
        for k in [Kind::Query, Kind::Build, Kind::Manage] {
            assert_eq!(
                parse_first_header(h(k), true),
                Err(ProtocolError::BadRequest(format!(
                    "descriptors passed with a {k:?} frame (only a run request may carry them)"
                )))
            );
        }
        for (k, fd) in [
            (Kind::Stdin, true),
            (Kind::Stdin, false),
            (Kind::Exit, false),
        ] {
            assert_eq!(
                parse_first_header(h(k), fd),
                Err(ProtocolError::UnexpectedKind(k))
            );
        }
        assert_eq!(parse_client_header(h(Kind::Stdin)), Ok((Kind::Stdin, 3)));
        assert_eq!(
            parse_client_header(h(Kind::Stdout)),
            Err(ProtocolError::UnexpectedKind(Kind::Stdout))
        );
        assert_eq!(encode_frame(Kind::Stdin, b"abc")[..HEADER], h(Kind::Stdin));
    }

    #[test]
    fn header_limits() {
        assert_eq!(
            parse_header(header(Kind::Stdin, 10)).unwrap(),
            (Kind::Stdin, 10)
        );
        assert_eq!(
            parse_header([0x7f, 0, 0, 0, 0]),
            Err(ProtocolError::UnknownKind(0x7f))
        );
        let big = ((MAX_REQUEST + 1) as u32).to_be_bytes();
        assert!(matches!(
            parse_header([1, big[0], big[1], big[2], big[3]]),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_header([2, 0xff, 0xff, 0xff, 0xff]),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Stdout, b"hello").unwrap();
        write_frame(&mut buf, Kind::Exit, &encode_exit(42)).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((Kind::Stdout, b"hello".to_vec()))
        );
        let (k, p) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!((k, decode_exit(&p).unwrap()), (Kind::Exit, 42));
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }

    #[test]
    fn query_round_trip_and_strictness() {
        let q = Query::policy();
        assert_eq!(Query::decode(&q.encode()).unwrap(), q);
        assert!(Query::decode(br#"{"version":1,"query":"policy","uid":0}"#).is_err());
        assert!(Query::decode(br#"{"version":1,"query":"secrets"}"#).is_err());
        assert_eq!(
            parse_header(header(Kind::Query, 3)).unwrap(),
            (Kind::Query, 3)
        );
        assert!(Kind::Query.from_client() && !Kind::Progress.from_client());
    }

    #[test]
    fn error_payload_is_one_line() {
        let (s, m) = decode_error(&encode_error(125, "a\nb")).unwrap();
        assert_eq!((s, m.as_str()), (125, "a b"));
    }
}

/// Property tests: the wire format from arbitrary bytes (bounded cases, run with the
/// unit tests).
#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;

    /// The largest payload a frame of `kind` may have.
    fn limit(kind: Kind) -> usize {
        match kind {
            Kind::Request | Kind::Query => MAX_REQUEST,
            _ => MAX_FRAME,
        }
    }

    /// A reader that serves `data` then endless `0x41`, counting what it handed out:
    /// a reader that trusted a length would read on.
    struct Endless<'a> {
        data: &'a [u8],
        taken: usize,
    }

    impl Read for Endless<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(64 * 1024);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = self.data.get(self.taken + i).copied().unwrap_or(0x41);
            }
            self.taken += n;
            Ok(n)
        }
    }

    const KINDS: [Kind; 11] = [
        Kind::Request,
        Kind::Stdin,
        Kind::StdinEof,
        Kind::Signal,
        Kind::Resize,
        Kind::Query,
        Kind::Stdout,
        Kind::Stderr,
        Kind::Exit,
        Kind::Error,
        Kind::Progress,
    ];

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => "[ -~]{0,12}",
            1 => "[a-z\0/=]{0,6}",
            1 => (0usize..=MAX_STRING + 2).prop_map(|n| "s".repeat(n)),
        ]
    }

    fn env_entry() -> impl Strategy<Value = String> {
        prop_oneof!["[A-Z_][A-Z0-9_]{0,6}=[ -~]{0,8}", "[ -~\0]{0,8}",]
    }

    fn request() -> impl Strategy<Value = Request> {
        (
            (
                text(),
                proptest::collection::vec(text(), 0..4),
                any::<bool>(),
                any::<bool>(),
            ),
            (
                proptest::option::of(any::<(u16, u16)>()),
                prop_oneof![
                    20 => proptest::collection::vec(env_entry(), 0..4),
                    1 => (0usize..=MAX_ENV + 1).prop_map(|n| vec!["A=1".to_string(); n]),
                ],
                proptest::option::of(prop_oneof!["/[ -~]{0,8}", text()]),
                proptest::option::of(text()),
            ),
            (
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                any::<bool>(),
                proptest::option::of((text(), any::<bool>())),
            ),
            prop_oneof![20 => Just(0usize), 1 => MAX_ARGS - 2..MAX_ARGS + 2],
        )
            .prop_map(
                |(
                    (image, command, interactive, tty),
                    (size, env, workdir, entrypoint),
                    (name, user, network, never_pull, mount),
                    extra_args,
                )| {
                    let mut command = command;
                    command.extend(std::iter::repeat_n(String::new(), extra_args));
                    Request {
                        version: VERSION,
                        image,
                        command,
                        interactive,
                        tty,
                        size: size.map(|(rows, cols)| WinSize { rows, cols }),
                        env,
                        workdir,
                        entrypoint,
                        name,
                        user,
                        network,
                        never_pull,
                        mount: mount.map(|(target, read_only)| MountRequest { target, read_only }),
                        stdin_fd: interactive && never_pull,
                    }
                },
            )
    }

    /// The bounds SECURITY.md documents for an accepted request.
    fn within_bounds(r: &Request) -> bool {
        let optional = [&r.workdir, &r.entrypoint, &r.name, &r.user, &r.network];
        let strings_ok = r
            .env
            .iter()
            .chain(optional.into_iter().flatten())
            .chain(r.mount.as_ref().map(|m| &m.target))
            .all(|s| !s.contains('\0') && s.len() <= MAX_STRING);
        r.version == VERSION
            && r.command.len() <= MAX_ARGS
            && r.env.len() <= MAX_ENV
            && strings_ok
            && !r.image.contains('\0')
            && r.command.iter().all(|s| !s.contains('\0'))
            && r.env.iter().all(|e| valid_env_entry(e))
            && r.workdir.as_ref().is_none_or(|w| w.starts_with('/'))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn header_parsing_never_panics_and_bounds_every_length(h in any::<[u8; HEADER]>()) {
            if let Ok((kind, len)) = parse_header(h) {
                prop_assert_eq!(kind as u8, h[0]);
                prop_assert!(len <= limit(kind));
            }
        }

        #[test]
        fn frame_reading_takes_no_more_than_the_limits_allow(
            head in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                (proptest::sample::select(KINDS.to_vec()), any::<u32>()).prop_map(|(k, l)| {
                    let l = l.to_be_bytes();
                    vec![k as u8, l[0], l[1], l[2], l[3]]
                }),
            ],
        ) {
            // Read from a source that never ends: only the header's length, once
            // checked, decides how much is read (and allocated).
            let mut r = Endless { data: &head, taken: 0 };
            if let Ok(Some((kind, payload))) = read_frame(&mut r) {
                prop_assert!(payload.len() <= limit(kind));
                prop_assert_eq!(r.taken, HEADER + payload.len());
            }
            // And from a source that ends: never a panic, never more than it had.
            let mut s = &head[..];
            while let Ok(Some((kind, payload))) = read_frame(&mut s) {
                prop_assert!(payload.len() <= limit(kind).min(head.len()));
            }
        }

        #[test]
        fn valid_frames_round_trip(
            frames in proptest::collection::vec(
                (proptest::sample::select(KINDS.to_vec()), proptest::collection::vec(any::<u8>(), 0..2048)),
                0..8,
            ),
        ) {
            let mut buf = Vec::new();
            for (k, p) in &frames {
                write_frame(&mut buf, *k, p).unwrap();
            }
            let mut r = &buf[..];
            for f in &frames {
                prop_assert_eq!(read_frame(&mut r).unwrap(), Some(f.clone()));
            }
            prop_assert_eq!(read_frame(&mut r).unwrap(), None);
        }

        #[test]
        fn request_decode_accepts_exactly_the_requests_within_the_bounds(r in request()) {
            let bytes = r.encode();
            let decoded = Request::decode(&bytes);
            let acceptable = within_bounds(&r) && bytes.len() <= MAX_REQUEST;
            prop_assert_eq!(decoded.is_ok(), acceptable, "{:?}", decoded);
            if let Ok(d) = decoded {
                prop_assert_eq!(d, r);
            }
        }

        #[test]
        fn request_decode_of_arbitrary_bytes_never_panics_and_bounds_what_it_accepts(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..512),
                // a valid request with bytes changed, cut or inserted
                (request(), any::<u64>(), any::<u8>(), 0..3u8).prop_map(|(r, at, b, how)| {
                    let mut v = r.encode();
                    let i = (at % (v.len() as u64 + 1)) as usize;
                    match how {
                        0 if i < v.len() => v[i] = b,
                        1 => v.truncate(i),
                        _ => v.insert(i, b),
                    }
                    v
                }),
            ],
        ) {
            if let Ok(r) = Request::decode(&bytes) {
                prop_assert!(within_bounds(&r), "{:?}", r);
                prop_assert!(bytes.len() <= MAX_REQUEST);
            }
            // the other payload decoders of untrusted bytes never panic either
            let _ = Query::decode(&bytes);
            let _ = Signal::decode(&bytes);
            let _ = WinSize::decode(&bytes);
            let _ = decode_exit(&bytes);
            let _ = decode_error(&bytes);
        }
    }
}

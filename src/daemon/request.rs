//! Reading from the client: its one bounded request (with the passed directory's
//! descriptor), its later frames, and the drain after the last frame.

use crate::system;
use crate::wire::{self, BuildRequest, Kind, Manage, ProtocolError, Query, Request};
use anyhow::Result;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;

/// How long a client may take to send its request.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send the first byte of its request (urun sends it at
/// once): an idle connection holds a descriptor and counts against `[connections]`.
pub(super) const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection is drained after its last frame (see [`linger`]).
pub(super) const LINGER: Duration = Duration::from_secs(1);

/// Step 2: the connection's first frame, a request (with the passed directory's
/// descriptor, if any) or a query: its first byte within [`FIRST_BYTE_TIMEOUT`], all of
/// it within [`REQUEST_TIMEOUT`]. `Err`: the one line refusing the connection
/// (rule `protocol`).
pub(super) async fn read_first(rd: &mut OwnedReadHalf) -> Result<First, String> {
    let first = async {
        if tokio::time::timeout(FIRST_BYTE_TIMEOUT, first_byte(rd))
            .await
            .is_err()
        {
            return Err(Late::FirstByte);
        }
        read_request(rd).await.map_err(Late::Bad)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, first).await {
        Ok(Ok(first)) => Ok(first),
        Ok(Err(Late::Bad(e))) => Err(format!("bad request: {e}")),
        Ok(Err(Late::FirstByte)) => Err("no request within 2 seconds".into()),
        Err(_) => Err("no request within 10 seconds".into()),
    }
}

/// The first frame of a connection.
pub(super) enum First {
    /// A run, with the working directory's descriptor and the client's stdin
    /// descriptor ([`Request::stdin_fd`]) if they were passed.
    Run(Box<Request>, Option<OwnedFd>, Option<OwnedFd>),
    Query,
    /// A build (`urun build`): its context follows in `Context` frames.
    Build(Box<BuildRequest>),
    /// `urun images`, `urun rmi`, `urun push`.
    Manage(Box<Manage>),
}

/// Why reading the client's request stopped early.
pub(super) enum Late {
    /// Not even its first byte came within [`FIRST_BYTE_TIMEOUT`].
    FirstByte,
    Bad(FrameError),
}

/// After the last frame: reads and drops what the client still sends, for at most
/// a second, so that closing does not reset the connection and destroy the final
/// frame before the client has read it.
pub(super) async fn linger(rd: &mut OwnedReadHalf) {
    let drain = async {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

pub(super) enum FrameError {
    Io(std::io::Error),
    Protocol(ProtocolError),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::Protocol(e) => write!(f, "{e}"),
        }
    }
}

/// Reads one client frame, checking the header before reading the payload.
pub(super) async fn read_frame(
    r: &mut (impl AsyncRead + Unpin),
) -> Result<Option<(Kind, Vec<u8>)>, FrameError> {
    let mut h = [0u8; wire::HEADER];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let (kind, len) = wire::parse_client_header(h).map_err(FrameError::Protocol)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(FrameError::Io)?;
    Ok(Some((kind, payload)))
}

/// Returns once the client has sent a byte (or closed, or failed): never on tokio's
/// readiness alone, which a fresh socket may report before anything came.
pub(super) async fn first_byte(rd: &OwnedReadHalf) {
    let sock: &UnixStream = rd.as_ref();
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        match sock.try_io(tokio::io::Interest::READABLE, || {
            system::peek_byte(sock.as_fd())
        }) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            _ => return,
        }
    }
}

/// The first frame must be a request or a query. Its header is read with `recvmsg`,
/// so descriptors sent with a request (SCM_RIGHTS) are received: at most a directory
/// and, if the request says [`Request::stdin_fd`], the client's stdin after it; none
/// with a query. Descriptors sent with any later byte are discarded by the kernel.
pub(super) async fn read_request(rd: &mut OwnedReadHalf) -> Result<First, FrameError> {
    let (h, fds) = read_header_with_fds(rd).await?;
    let (kind, len) = wire::parse_first_header(h, !fds.is_empty()).map_err(FrameError::Protocol)?;
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await.map_err(FrameError::Io)?;
    match kind {
        Kind::Request => run_request(&payload, fds),
        Kind::Build => BuildRequest::decode(&payload)
            .map(|b| First::Build(Box::new(b)))
            .map_err(FrameError::Protocol),
        Kind::Manage => Manage::decode(&payload)
            .map(|m| First::Manage(Box::new(m)))
            .map_err(FrameError::Protocol),
        _ => Query::decode(&payload)
            .map(|_| First::Query)
            .map_err(FrameError::Protocol),
    }
}

/// The first frame's header, with the descriptors passed along with its bytes (at most
/// [`system::MAX_PASSED_FDS`]).
async fn read_header_with_fds(
    rd: &OwnedReadHalf,
) -> Result<([u8; wire::HEADER], Vec<OwnedFd>), FrameError> {
    let mut h = [0u8; wire::HEADER];
    let mut got = 0;
    let mut fds: Vec<OwnedFd> = Vec::new();
    let sock: &UnixStream = rd.as_ref();
    while got < h.len() {
        sock.readable().await.map_err(FrameError::Io)?;
        let r = sock.try_io(tokio::io::Interest::READABLE, || {
            system::recv_with_fds(sock.as_fd(), &mut h[got..])
        });
        match r {
            Ok((0, _)) => return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok((n, f)) => {
                got += n;
                fds.extend(f);
                if fds.len() > system::MAX_PASSED_FDS {
                    return Err(FrameError::Protocol(ProtocolError::BadPayload(
                        Kind::Request,
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(FrameError::Protocol(ProtocolError::BadRequest(
                    e.to_string(),
                )))
            }
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok((h, fds))
}

/// A run request and the descriptors passed with it: the working directory's, then
/// (with `stdin_fd`, for -i without -t only) the stdin's; nothing else.
fn run_request(payload: &[u8], mut fds: Vec<OwnedFd>) -> Result<First, FrameError> {
    let req = Request::decode(payload).map_err(FrameError::Protocol)?;
    let bad = |m: &str| FrameError::Protocol(ProtocolError::BadRequest(m.to_string()));
    // The stdin descriptor is the last one sent.
    let stdin = match req.stdin_fd {
        true => Some(
            fds.pop()
                .ok_or_else(|| bad("stdin_fd without a descriptor"))?,
        ),
        false => None,
    };
    if req.stdin_fd && (!req.interactive || req.tty) {
        return Err(bad("stdin_fd is only for -i without -t"));
    }
    let dir = fds.pop();
    if !fds.is_empty() {
        return Err(bad("two descriptors, and stdin_fd not set"));
    }
    Ok(First::Run(Box::new(req), dir, stdin))
}

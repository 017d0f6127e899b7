//! Reading from the client: its one bounded request (with the passed directory's
//! descriptor), its later frames, and the drain after the last frame.

use crate::system;
use crate::wire::{self, BuildRequest, Kind, Manage, ProtocolError, Query, Request};
use anyhow::Result;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;

/// The reading side of a client's connection (review R2). Every byte is read with
/// `recvmsg` and room for descriptors, never a plain `read` (which would make the
/// kernel close descriptors sent with later bytes inside urund's call, on the event
/// loop); descriptors after the request end the connection (rule `protocol`). It holds
/// the last reference of the connection's socket and of every descriptor its client
/// passed (the rest of urund gets copies): [`ClientRead::into_last`] hands them over
/// to be closed off the event loop ([`super::closer`]), once urund's own copies are
/// gone.
pub(super) struct ClientRead {
    half: OwnedReadHalf,
    last: Vec<OwnedFd>,
}

impl ClientRead {
    /// `Err`: no descriptor left to copy the socket's (`rd` is then given back).
    pub(super) fn new(half: OwnedReadHalf) -> Result<ClientRead, (OwnedReadHalf, std::io::Error)> {
        let sock: &UnixStream = half.as_ref();
        match sock.as_fd().try_clone_to_owned() {
            Ok(fd) => Ok(ClientRead {
                half,
                last: vec![fd],
            }),
            Err(e) => Err((half, e)),
        }
    }

    pub(super) fn socket(&self) -> &UnixStream {
        self.half.as_ref()
    }

    /// A copy of the `i`th of the last references kept, for urund to hand to the
    /// thread that uses it. Copies are made only of descriptors a request has been
    /// checked to use: every `close` of a file, not only its last, runs the
    /// filesystem's `flush` (FUSE asks its server, which may never answer), so a copy
    /// is never closed on the event loop, and there is none to close on an error path.
    fn copy(&self, i: usize) -> std::io::Result<OwnedFd> {
        self.last[i].try_clone()
    }

    /// Keeps `fd` (a copy urund could not use) with the last references, to be
    /// closed off the event loop with them.
    pub(super) fn keep(&mut self, fd: OwnedFd) {
        self.last.push(fd);
    }

    /// Ends the connection's reading side on the event loop (not its last
    /// reference: see [`ClientRead`]), and returns the last references (the socket's
    /// first), to be closed off it once every other copy urund had is gone.
    pub(super) fn into_last(self) -> Vec<OwnedFd> {
        drop(self.half);
        self.last
    }
}

impl AsyncRead for ClientRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            let sock: &UnixStream = this.half.as_ref();
            ready!(sock.poll_read_ready(cx))?;
            let got = sock.try_io(tokio::io::Interest::READABLE, || {
                system::recv_fds(sock.as_fd(), buf.initialize_unfilled())
            });
            match got {
                Ok(got) if got.fds.is_empty() && got.bad.is_none() => {
                    buf.advance(got.bytes);
                    return Poll::Ready(Ok(()));
                }
                Ok(got) => {
                    this.last.extend(system::park_fds(got.fds));
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        AFTER_THE_REQUEST,
                    )));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Why a connection that sent descriptors after its request is refused.
pub(super) const AFTER_THE_REQUEST: &str = "descriptors passed after the request";

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
pub(super) async fn read_first(rd: &mut ClientRead) -> Result<First, String> {
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
pub(super) async fn linger(rd: &mut ClientRead) {
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
        Err(e) => return Err(io_error(e)),
    }
    let (kind, len) = wire::parse_client_header(h).map_err(FrameError::Protocol)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(io_error)?;
    Ok(Some((kind, payload)))
}

/// A failed read of the client's connection; descriptors sent after the request
/// ([`ClientRead`]) are a protocol error.
fn io_error(e: std::io::Error) -> FrameError {
    if e.kind() == std::io::ErrorKind::InvalidData && e.to_string() == AFTER_THE_REQUEST {
        return FrameError::Protocol(ProtocolError::BadRequest(AFTER_THE_REQUEST.into()));
    }
    FrameError::Io(e)
}

/// Returns once the client has sent a byte (or closed, or failed): never on tokio's
/// readiness alone, which a fresh socket may report before anything came.
pub(super) async fn first_byte(rd: &ClientRead) {
    let sock = rd.socket();
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
/// with a query. Once the header is in, the connection takes no more descriptors
/// (`SO_PASSRIGHTS` off, where the kernel has it); those already queued with later
/// bytes are received by [`ClientRead`] and refused.
pub(super) async fn read_request(rd: &mut ClientRead) -> Result<First, FrameError> {
    let (h, fds) = read_header_with_fds(rd).await?;
    let (kind, len) = wire::parse_first_header(h, fds.n > 0).map_err(FrameError::Protocol)?;
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await.map_err(io_error)?;
    match kind {
        Kind::Request => run_request(&payload, fds, rd),
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

/// The descriptors passed with the first frame's header: the `n` last references
/// `rd` keeps from index `at` on, in the order they were sent; urund copies only
/// those a checked request uses ([`run_request`]).
struct Passed {
    at: usize,
    n: usize,
}

/// The first frame's header, with the descriptors passed along with its bytes (at most
/// [`system::MAX_PASSED_FDS`]; their last references kept in `rd`, see [`Passed`]).
async fn read_header_with_fds(
    rd: &mut ClientRead,
) -> Result<([u8; wire::HEADER], Passed), FrameError> {
    let mut h = [0u8; wire::HEADER];
    let mut got = 0;
    let mut fds = Passed {
        at: rd.last.len(),
        n: 0,
    };
    while got < h.len() {
        rd.socket().readable().await.map_err(FrameError::Io)?;
        let sock = rd.socket();
        let r = sock.try_io(tokio::io::Interest::READABLE, || {
            system::recv_fds(sock.as_fd(), &mut h[got..])
        });
        match r {
            Ok(r) => {
                let (bytes, bad) = (r.bytes, r.bad);
                if fds.n + r.fds.len() > system::MAX_PASSED_FDS {
                    // Kept as one descriptor until the connection's close, not one
                    // each (a message may carry 253).
                    rd.last.extend(system::park_fds(r.fds));
                    return Err(FrameError::Protocol(ProtocolError::BadPayload(
                        Kind::Request,
                    )));
                }
                fds.n += r.fds.len();
                rd.last.extend(r.fds);
                if let Some(why) = bad {
                    return Err(FrameError::Protocol(ProtocolError::BadRequest(why.into())));
                }
                if bytes == 0 {
                    return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                got += bytes;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    // The request's descriptors came with its header: no more (Linux 6.16+).
    let _ = system::set_pass_rights(rd.socket().as_fd(), false);
    Ok((h, fds))
}

/// A run request and the descriptors passed with it: the working directory's, then
/// (with `stdin_fd`, for -i without -t only) the stdin's; nothing else. Copies of
/// those are made only once that is checked (see [`ClientRead::copy`]).
fn run_request(payload: &[u8], fds: Passed, rd: &mut ClientRead) -> Result<First, FrameError> {
    let req = Request::decode(payload).map_err(FrameError::Protocol)?;
    let bad = |m: &str| FrameError::Protocol(ProtocolError::BadRequest(m.to_string()));
    // The stdin descriptor is the last one sent.
    let (stdin, dir) = match (req.stdin_fd, fds.n) {
        (true, 0) => return Err(bad("stdin_fd without a descriptor")),
        (true, n) => (Some(fds.at + n - 1), (n == 2).then_some(fds.at)),
        (false, 0) => (None, None),
        (false, 1) => (None, Some(fds.at)),
        (false, _) => return Err(bad("two descriptors, and stdin_fd not set")),
    };
    if req.stdin_fd && (!req.interactive || req.tty) {
        return Err(bad("stdin_fd is only for -i without -t"));
    }
    let cannot = |e: std::io::Error| {
        FrameError::Protocol(ProtocolError::BadRequest(format!(
            "urund cannot take the descriptors passed now: {e}"
        )))
    };
    let dir = dir.map(|i| rd.copy(i)).transpose().map_err(cannot)?;
    let stdin = match stdin.map(|i| rd.copy(i)).transpose() {
        Ok(s) => s,
        Err(e) => {
            // The directory's copy goes with the last references, off the event loop.
            if let Some(d) = dir {
                rd.keep(d);
            }
            return Err(cannot(e));
        }
    };
    Ok(First::Run(Box::new(req), dir, stdin))
}

//! A client's stdin passed as a descriptor ([`crate::wire::Request::stdin_fd`]): urund
//! moves it to the container's attach connection itself, so the bytes no longer go
//! through the client and its socket (bench/NOTES.md). Where it can, without copying
//! them either: a pipe or a regular file is spliced into a pipe of urund's own and
//! from there into the attach connection ([`splice_stdin`]); a socket, or an engine
//! whose stdin is not a socket of urund's, is read and written in chunks.
//!
//! The descriptor is the client's and hostile (SECURITY.md, "A passed stdin"): it is
//! checked from what the kernel says of it ([`system::check_passed_stdin`]), only ever
//! read, never changed (its file description, with its `O_NONBLOCK` flag and its file
//! position, is shared with the client), and read only in ways that never wait on the
//! event loop: epoll for pipes and sockets, then `RWF_NOWAIT` reads (sockets) or
//! `splice(SPLICE_F_NONBLOCK)` into urund's own pipe (pipes and FIFOs), and a regular
//! file always on tokio's blocking pool, one bounded read or splice at a time.

use crate::engine::Input;
use crate::system::{self, StdinKind};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWriteExt, Interest};

/// Most bytes read from a passed stdin at once (and so written in one go to the
/// attach connection); also the most a regular file yields before the event loop
/// runs something else.
pub(super) const STDIN_CHUNK: usize = 256 * 1024;

/// A checked stdin descriptor.
pub(super) struct PassedStdin {
    fd: Arc<OwnedFd>,
    kind: StdinKind,
}

impl PassedStdin {
    /// `Err`: why the descriptor is refused (one line, rule `protocol`).
    pub(super) fn check(fd: OwnedFd) -> Result<PassedStdin, String> {
        match system::check_passed_stdin(fd.as_fd()) {
            Ok(kind) => Ok(PassedStdin {
                fd: Arc::new(fd),
                kind,
            }),
            Err(e) => Err(format!("passed stdin refused: {}", e.0)),
        }
    }
}

/// Copies the passed stdin to the container's stdin until it ends (end of file, or
/// any read error: as a client whose stdin fails sends `StdinEof`), then closes the
/// container's stdin. Returns early if the container no longer takes its stdin.
/// Cancelled by dropping (the deadline, the client's hang-up or SIGKILL): nothing it
/// holds outlives the run but a read on the blocking pool, which ends by itself.
pub(super) async fn move_stdin(
    stdin: PassedStdin,
    mut input: Pin<Box<dyn Input>>,
    bytes_in: &AtomicU64,
) {
    if let (Some(sock), StdinKind::Pipe | StdinKind::File) = (input.socket(), stdin.kind) {
        match splice_stdin(&stdin, sock, bytes_in).await {
            Spliced::End => return close(input).await,
            Spliced::Closed => return,
            Spliced::Unsupported => {}
        }
    }
    let mut buf = vec![0u8; STDIN_CHUNK];
    // Pipes and sockets: readiness from epoll (registering does not change the file
    // description). A regular file cannot be registered and is always ready.
    let ready = match stdin.kind {
        StdinKind::Pipe | StdinKind::Socket => match system::watch_readable(stdin.fd.clone()) {
            Ok(a) => Some(a),
            Err(_) => return close(input).await,
        },
        StdinKind::File => None,
    };
    let stage = match stdin.kind {
        StdinKind::Pipe => match system::staging_pipe() {
            Ok(p) => Some(p),
            Err(_) => return close(input).await,
        },
        _ => None,
    };
    loop {
        let n = match (&ready, &stage) {
            (Some(a), Some(stage)) => read_pipe(a, stage, &mut buf).await,
            (Some(a), None) => read_ready(a, &mut buf).await,
            (None, _) => {
                let r = read_file(&stdin.fd, buf).await;
                buf = r.1;
                r.0
            }
        };
        let n = match n {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        if input.write_all(&buf[..n]).await.is_err() {
            // The container closed its stdin: nothing more to write.
            return;
        }
        if stdin.kind == StdinKind::File {
            // A regular file is always ready: let the deadline, the client's frames
            // and every other connection run between chunks.
            tokio::task::yield_now().await;
        }
    }
    drop(ready);
    close(input).await;
}

async fn close(mut input: Pin<Box<dyn Input>>) {
    let _ = input.shutdown().await;
}

/// How [`splice_stdin`] ended.
enum Spliced {
    /// The stdin ended (end of file or a read error): close the container's stdin.
    End,
    /// The container no longer takes its stdin.
    Closed,
    /// The stdin cannot be spliced (nothing was taken from it): copy it instead.
    Unsupported,
}

/// Most bytes moved from the passed stdin into urund's pipe at once (the pipe's size
/// if the kernel allows it, see [`system::staging_pipe`]).
const SPLICE_CHUNK: usize = 1 << 20;

/// Moves a passed pipe or regular file into the attach connection `sock` (urund's
/// own, non-blocking) through urund's own pipe, without copying the bytes: a chunk is
/// spliced in (a pipe once epoll says it is readable, with `SPLICE_F_NONBLOCK`; a
/// regular file on the blocking pool, as its reads may wait for the disk), then
/// spliced out to the connection, waiting for room with epoll. The pipe is empty
/// whenever a chunk is taken, so taking one never waits on it.
async fn splice_stdin(stdin: &PassedStdin, sock: Arc<OwnedFd>, bytes_in: &AtomicU64) -> Spliced {
    let Ok((stage_r, stage_w)) = system::staging_pipe() else {
        return Spliced::Unsupported;
    };
    let stage_w = Arc::new(stage_w);
    let ready = match stdin.kind {
        StdinKind::Pipe => match system::watch_readable(stdin.fd.clone()) {
            Ok(a) => Some(a),
            Err(_) => return Spliced::Unsupported,
        },
        _ => None,
    };
    let mut first = true;
    loop {
        let taken = match &ready {
            Some(a) => splice_ready(a, &stage_w).await,
            None => {
                let (from, to) = (stdin.fd.clone(), stage_w.clone());
                let job = tokio::task::spawn_blocking(move || {
                    system::splice(from.as_fd(), to.as_fd(), SPLICE_CHUNK)
                });
                job.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
            }
        };
        let n = match taken {
            Ok(0) => return Spliced::End,
            Ok(n) => n,
            // A filesystem without `splice` says so at once: copy instead.
            Err(e) if first && e.raw_os_error() == Some(libc::EINVAL) => {
                return Spliced::Unsupported
            }
            Err(_) => return Spliced::End,
        };
        first = false;
        bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let mut left = n;
        while left > 0 {
            match system::splice(stage_r.as_fd(), sock.as_fd(), left) {
                Ok(0) => return Spliced::Closed,
                Ok(k) => left -= k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if system::wait_ready(sock.clone(), Interest::WRITABLE)
                        .await
                        .is_err()
                    {
                        return Spliced::Closed;
                    }
                }
                // The daemon closed the container's stdin (EPIPE) or the connection.
                Err(_) => return Spliced::Closed,
            }
        }
    }
}

/// One splice from a passed pipe or FIFO into urund's own once epoll says it is
/// readable: `SPLICE_F_NONBLOCK`, so bytes taken meanwhile by the client's own copy of
/// the descriptor mean waiting again, never a splice that blocks.
async fn splice_ready(a: &AsyncFd<Arc<OwnedFd>>, to: &OwnedFd) -> std::io::Result<usize> {
    loop {
        let mut guard = a.readable().await?;
        match guard.try_io(|fd| system::splice(fd.get_ref().as_fd(), to.as_fd(), SPLICE_CHUNK)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

/// One read of a pipe or socket once epoll says it is readable; `RWF_NOWAIT`, so a
/// byte taken meanwhile by the client's own copy of the descriptor means waiting
/// again, never a read that blocks.
async fn read_ready(a: &AsyncFd<Arc<OwnedFd>>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = a.readable().await?;
        match guard.try_io(|fd| system::read_nowait(fd.get_ref().as_fd(), buf, -1)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

/// One read of a pipe or FIFO once epoll says it is readable: spliced without waiting
/// into urund's own pipe (see [`system::staging_pipe`]), then read from there.
async fn read_pipe(
    a: &AsyncFd<Arc<OwnedFd>>,
    (stage_r, stage_w): &(OwnedFd, OwnedFd),
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let n = loop {
        let mut guard = a.readable().await?;
        let moved =
            guard.try_io(|fd| system::splice(fd.get_ref().as_fd(), stage_w.as_fd(), buf.len()));
        match moved {
            Ok(r) => break r?,
            Err(_would_block) => continue,
        }
    };
    // All `n` bytes are in our own pipe now: reading them never waits.
    let mut got = 0;
    while got < n {
        match system::read_nowait(stage_r.as_fd(), &mut buf[got..n], -1) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// One read of a regular file at its position: `RWF_NOWAIT` on the event loop; if the
/// data is not in memory yet, one ordinary read of at most [`STDIN_CHUNK`] on the
/// blocking pool (the filesystem was checked to support `RWF_NOWAIT`, so it is a local
/// one whose reads end).
async fn read_file(fd: &Arc<OwnedFd>, mut buf: Vec<u8>) -> (std::io::Result<usize>, Vec<u8>) {
    match system::read_nowait(fd.as_fd(), &mut buf, -1) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        r => return (r, buf),
    }
    let fd = fd.clone();
    let job = tokio::task::spawn_blocking(move || {
        let r = system::read_waiting(fd.as_fd(), &mut buf);
        (r, buf)
    });
    match job.await {
        Ok(r) => r,
        Err(e) => (Err(std::io::Error::other(e)), vec![0u8; STDIN_CHUNK]),
    }
}

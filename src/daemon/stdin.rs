//! A client's stdin passed as a descriptor ([`crate::wire::Request::stdin_fd`]): urund
//! moves it to the container's attach connection itself, so the bytes no longer go
//! through the client and its socket (bench/NOTES.md). Where it can, without copying
//! them: a pipe or a regular file is spliced into a pipe of urund's own, and from
//! there into the attach connection; a socket, or a file that cannot be spliced, is
//! read and written into that pipe; an engine whose stdin is not a socket of urund's
//! gets the pipe's bytes written.
//!
//! The descriptor is the client's and hostile (SECURITY.md, "A passed stdin"): it is
//! checked from what the kernel says of it ([`system::check_passed_stdin`]), only ever
//! read, never changed (its file description, with its `O_NONBLOCK` flag and its file
//! position, is shared with the client), and checked, read and closed only on a
//! thread of the run's own ([`fill_stage`]), never on the event loop: every read or
//! splice of a pipe, and its last close, take the pipe's lock, which the client can
//! hold for as long as it likes (a blocking `splice` from an empty socket into the
//! pipe waits with the lock held), and a thread waiting for that lock cannot be
//! interrupted (review R1: urund's single event loop once did both, and one member
//! froze it for everyone); `fstat` of a file on a filesystem the client serves (FUSE)
//! waits for the client's answer. The thread waits with `poll` (a tenth of a second at
//! most, so it notices a run that ended) and never reads in a way that waits for data.
//! The event loop touches only urund's own pipe, which the thread never holds locked while it
//! waits (see [`fill_stage`]). A thread stuck on the client's lock
//! costs the client's own run: its `max_concurrent` place (or, before it has one, its
//! connection) is kept until urund has let go of the descriptor ([`Released`]).

use crate::engine::Input;
use crate::system::{self, StdinKind};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::sync::oneshot;

/// Most bytes read from a passed stdin at once when it is copied (and so written in
/// one go); also the most the event loop moves to an engine without a socket at once.
pub(super) const STDIN_CHUNK: usize = 256 * 1024;

/// Most bytes moved from the passed stdin into urund's pipe at once (the pipe's size
/// if the kernel allows it, see [`system::staging_pipe`]).
const SPLICE_CHUNK: usize = 1 << 20;

/// How long the stdin's thread waits in `poll` before it looks whether the run still
/// wants the stdin.
const POLL_MS: u16 = 100;

/// The stack of a stdin's thread: it holds no buffer of its own (a copy's chunk is
/// on the heap).
const THREAD_STACK: usize = 128 * 1024;

/// A checked stdin descriptor. Dropped unused, it is closed on a thread of its own.
pub(super) struct PassedStdin {
    fd: Option<OwnedFd>,
    kind: StdinKind,
    released: Option<oneshot::Sender<()>>,
}

/// Resolves once urund has closed a passed stdin (which may wait for as long as the
/// client holds the file's lock): the connection keeps its place until then.
pub(super) struct Released(oneshot::Receiver<()>);

impl Released {
    /// A new one, and what resolves it when dropped.
    pub(super) fn new() -> (oneshot::Sender<()>, Released) {
        let (tx, rx) = oneshot::channel();
        (tx, Released(rx))
    }

    pub(super) async fn wait(self) {
        let _ = self.0.await;
    }
}

/// Runs `f` on a thread of its own; `Err` (nothing run, `f` dropped here) if no
/// thread can be made.
fn on_thread(f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    #[cfg(test)]
    if tests::NO_THREAD.with(|n| n.get()) {
        return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
    }
    std::thread::Builder::new()
        .name("urund-stdin".into())
        .stack_size(THREAD_STACK)
        .spawn(f)
        .map(drop)
}

impl PassedStdin {
    /// Takes a passed stdin descriptor: checked on a thread (`Err`: why it is refused,
    /// one line, rule `protocol`; it is then closed there), with what resolves once
    /// urund has let go of it.
    pub(super) async fn take(fd: OwnedFd) -> (Released, Result<PassedStdin, String>) {
        let (tx, released) = Released::new();
        let (ctx, crx) = oneshot::channel();
        let check = move || match system::check_passed_stdin(fd.as_fd()) {
            Ok(kind) => {
                let _ = ctx.send(Ok(PassedStdin {
                    fd: Some(fd),
                    kind,
                    released: Some(tx),
                }));
            }
            Err(e) => {
                drop(fd);
                let _ = ctx.send(Err(format!("passed stdin refused: {}", e.0)));
                drop(tx);
            }
        };
        let checked = match on_thread(check) {
            Ok(()) => crx
                .await
                .unwrap_or_else(|_| Err("passed stdin refused: its check failed".into())),
            Err(e) => Err(format!(
                "passed stdin refused: urund cannot check it now: {e}"
            )),
        };
        (released, checked)
    }
}

impl Drop for PassedStdin {
    fn drop(&mut self) {
        if let (Some(fd), Some(tx)) = (self.fd.take(), self.released.take()) {
            let _ = on_thread(move || {
                drop(fd);
                drop(tx);
            });
        }
    }
}

/// Sets its flag when dropped: the stdin's thread stops at its next look.
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Moves the passed stdin to the container's stdin until it ends (end of file, or
/// any read error: as a client whose stdin fails sends `StdinEof`), then closes the
/// container's stdin. Returns early if the container no longer takes its stdin.
/// Cancelled by dropping (the deadline, the client's hang-up or SIGKILL): the stdin's
/// thread notices within [`POLL_MS`] (at once if it is writing into urund's pipe,
/// whose reading end is gone), closes the descriptor and ends.
///
/// `Err`: urund cannot move the stdin now (no pipe or no thread for it), the user's
/// one line: the run must end (status 125), never go on with an empty stdin (`sort <
/// big` would print nothing and exit 0).
pub(super) async fn move_stdin(
    mut stdin: PassedStdin,
    mut input: Pin<Box<dyn Input>>,
    bytes_in: &AtomicU64,
) -> Result<(), String> {
    let (Some(fd), Some(released)) = (stdin.fd.take(), stdin.released.take()) else {
        close(input).await;
        return Ok(());
    };
    let Ok((stage_r, stage_w)) = system::staging_pipe() else {
        // `fd` and `released` are closed and dropped off the event loop.
        drop(PassedStdin {
            fd: Some(fd),
            kind: stdin.kind,
            released: Some(released),
        });
        return Err(cannot_take("no descriptor left for its pipe"));
    };
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = Stop(stop.clone());
    let kind = stdin.kind;
    let filled = on_thread(move || {
        fill_stage(fd.as_fd(), kind, stage_w.as_fd(), &stop);
        // Ends urund's pipe (the run reads end of file after the last byte), then the
        // client's descriptor: the last close of a pipe may wait for its lock.
        drop(stage_w);
        drop(fd);
        drop(released);
    });
    if filled.is_err() {
        return Err(cannot_take("no thread left for it"));
    }
    let stage_r = Arc::new(stage_r);
    let drained = match input.socket() {
        Some(sock) => splice_out(&stage_r, sock, bytes_in).await,
        None => copy_out(&stage_r, &mut input, bytes_in).await,
    };
    if drained {
        close(input).await;
    }
    Ok(())
}

/// The user's line when urund cannot move a passed stdin (`why`).
fn cannot_take(why: &str) -> String {
    format!("urund cannot take your stdin now ({why}), so the run was stopped; try again later")
}

async fn close(mut input: Pin<Box<dyn Input>>) {
    let _ = input.shutdown().await;
}

/// Moves urund's pipe into the attach connection `sock` (urund's own, non-blocking)
/// without copying: `true` at the pipe's end (the stdin ended: close the container's
/// stdin), `false` if the container no longer takes its stdin.
async fn splice_out(stage_r: &Arc<OwnedFd>, sock: Arc<OwnedFd>, bytes_in: &AtomicU64) -> bool {
    loop {
        if system::wait_ready(stage_r.clone(), Interest::READABLE)
            .await
            .is_err()
        {
            return true;
        }
        match system::splice(stage_r.as_fd(), sock.as_fd(), SPLICE_CHUNK) {
            Ok(0) => return true,
            Ok(n) => {
                bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            }
            // The pipe has bytes (it was readable): the connection has no room.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if system::wait_ready(sock.clone(), Interest::WRITABLE)
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            // The daemon closed the container's stdin (EPIPE) or the connection.
            Err(_) => return false,
        }
    }
}

/// Copies urund's pipe into an engine's stdin that is not a socket of urund's: as
/// [`splice_out`].
async fn copy_out(
    stage_r: &Arc<OwnedFd>,
    input: &mut Pin<Box<dyn Input>>,
    bytes_in: &AtomicU64,
) -> bool {
    let mut buf = vec![0u8; STDIN_CHUNK];
    loop {
        if system::wait_ready(stage_r.clone(), Interest::READABLE)
            .await
            .is_err()
        {
            return true;
        }
        match system::read_nowait(stage_r.as_fd(), &mut buf, -1) {
            Ok(0) => return true,
            Ok(n) => {
                bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                if input.write_all(&buf[..n]).await.is_err() {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return true,
        }
    }
}

/// Moves `n` bytes from the thread's own pipe into urund's (both urund's: nothing but
/// room in urund's pipe is waited for, with `poll`); `false` if the run no longer
/// wants them or urund's pipe is gone.
fn pass_on(own_r: BorrowedFd<'_>, stage_w: BorrowedFd<'_>, n: usize, stop: &AtomicBool) -> bool {
    let mut left = n;
    while left > 0 {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        match system::splice(own_r, stage_w, left) {
            Ok(0) => return false,
            Ok(k) => left -= k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if system::poll_for(stage_w, true, POLL_MS).is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// The stdin's thread: moves the passed stdin into urund's pipe until the stdin ends
/// or fails, the run no longer wants it (`stop`), or the pipe's reading end is gone.
/// A pipe, and a regular file where the filesystem can, by `splice` (never waiting on
/// either pipe); a socket with `RWF_NOWAIT` reads, a file without `splice` with
/// ordinary ones (on a filesystem checked to end its reads), written into the pipe.
///
/// What is spliced goes through a second pipe, the thread's own, first: a splice from
/// one pipe into another holds both pipes' locks (`pipe_double_lock`), so a splice
/// straight from the client's pipe into urund's could hold urund's pipe locked while
/// it waits for the lock the client holds, and the event loop, splicing urund's pipe
/// out, would wait with it; a splice from a file holds the pipe locked while the disk
/// is read. The thread's own pipe is locked by nobody else, and from there into
/// urund's pipe is a move between two pipes of urund's that waits for nothing.
fn fill_stage(fd: BorrowedFd<'_>, kind: StdinKind, stage_w: BorrowedFd<'_>, stop: &AtomicBool) {
    let mut buf: Vec<u8> = Vec::new();
    let mut first = true;
    let own = match kind {
        StdinKind::Socket => None,
        _ => match system::staging_pipe() {
            Ok(p) => Some(p),
            Err(_) => return,
        },
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // Room in urund's pipe (or its reading end gone: the splice or write says so).
        match system::poll_for(stage_w, true, POLL_MS) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        if kind != StdinKind::File {
            match system::poll_for(fd, false, POLL_MS) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => return,
            }
        }
        if let (true, Some((own_r, own_w))) = (buf.is_empty(), &own) {
            match system::splice(fd, own_w.as_fd(), SPLICE_CHUNK) {
                Ok(0) => return,
                Ok(n) => {
                    first = false;
                    if !pass_on(own_r.as_fd(), stage_w, n, stop) {
                        return;
                    }
                }
                // A filesystem without `splice` says so at once: copy instead.
                Err(e)
                    if first
                        && kind == StdinKind::File
                        && e.raw_os_error() == Some(libc::EINVAL) =>
                {
                    buf = vec![0u8; STDIN_CHUNK]
                }
                // Taken meanwhile by the client's own copy of the descriptor, or no
                // room after all: look again.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
            continue;
        }
        if buf.is_empty() {
            buf = vec![0u8; STDIN_CHUNK];
        }
        let n = match kind {
            StdinKind::Socket => system::read_nowait(fd, &mut buf, -1),
            _ => system::read_waiting(fd, &mut buf),
        };
        let n = match n {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        let mut done = 0;
        while done < n {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match system::write_nowait(stage_w, &buf[done..n]) {
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if system::poll_for(stage_w, true, POLL_MS).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Makes [`on_thread`] fail on this thread, as it does when urund has no
        /// thread left.
        pub(super) static NO_THREAD: Cell<bool> = const { Cell::new(false) };
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stdin_urund_cannot_move_ends_the_run_instead_of_being_empty() {
        let (r, w) = system::staging_pipe().unwrap();
        drop(w);
        let (let_go, _released) = Released::new();
        let stdin = PassedStdin {
            fd: Some(r),
            kind: StdinKind::Pipe,
            released: Some(let_go),
        };
        let (container, _ours) = tokio::io::duplex(64);
        NO_THREAD.with(|n| n.set(true));
        let got = move_stdin(stdin, Box::pin(container), &AtomicU64::new(0)).await;
        NO_THREAD.with(|n| n.set(false));
        let line = got.unwrap_err();
        assert!(line.contains("cannot take your stdin"), "{line}");
        assert!(!line.contains('\n'));
    }
}

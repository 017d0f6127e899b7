//! Closing what a client sent, off the event loop (review R2).
//!
//! The last close of a file runs its release, and a pipe's release takes the pipe's
//! lock uninterruptibly: a client can hold that lock for as long as it likes (a
//! blocking `splice` from an empty socket into the pipe), and a socket with
//! `SO_LINGER` makes its last close wait too. So urund's single event loop never
//! drops the last reference to a file a client passed, nor to a client's connection
//! (closing it purges descriptors still queued on it, which are then released by the
//! closing thread): [`ClientRead`](super::request::ClientRead) keeps the last
//! reference of each, and they are closed here, on a thread of their own. The
//! connection keeps its place in `[connections]` until the close has returned,
//! counted as an idle connection of its user: a member whose closes wait fills their
//! own `per_user` cap, and nobody else's.

use super::connections::Table;
use super::listen::Ticket;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

/// The stack of a closing thread: it only calls `close`.
const THREAD_STACK: usize = 64 * 1024;

/// Runs `f` on a thread of its own. If no thread can be made, `f` is not dropped (its
/// descriptors would be closed on the event loop): it is leaked, and said so.
fn on_thread(f: impl FnOnce() + Send + 'static) {
    let slot = Arc::new(Mutex::new(Some(f)));
    let theirs = slot.clone();
    let made = std::thread::Builder::new()
        .name("urund-close".into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let f = theirs.lock().unwrap().take();
            if let Some(f) = f {
                f();
            }
        });
    if let Err(e) = made {
        eprintln!("urund: cannot make a thread to close a client's descriptors ({e}): left open");
        std::mem::forget(slot.lock().unwrap().take());
    }
}

/// Closes the last references of a connection's files (`fds`: its socket and what
/// its client passed) on a thread; the connection (its `ticket`) counts as an idle one
/// of its user until that returns.
pub(super) fn close_connection(fds: Vec<OwnedFd>, mut ticket: Ticket) {
    ticket.closing();
    on_thread(move || {
        drop(fds);
        drop(ticket);
    });
}

/// Closes a connection refused at `accept` (`fd`, the last reference to its socket,
/// whose queue may hold descriptors) on a thread, counted as open and against `uid`'s
/// `per_user` cap until that returns. No more descriptors can be queued on it first,
/// where the kernel allows (`SO_PASSRIGHTS`).
pub(super) fn close_refused(fd: OwnedFd, uid: u32, table: Arc<Mutex<Table>>) {
    use std::os::fd::AsFd;
    let _ = crate::system::set_pass_rights(fd.as_fd(), false);
    table.lock().unwrap().refused_closing(uid);
    on_thread(move || {
        drop(fd);
        table.lock().unwrap().refused_closed(uid);
    });
}

//! Closing what a client sent, off the event loop (review R2).
//!
//! The last close of a file runs its release, and a pipe's release takes the pipe's
//! lock uninterruptibly: a client can hold that lock for as long as it likes (a
//! blocking `splice` from an empty socket into the pipe), and a passed socket with
//! `SO_LINGER` (a FUSE file's flush, ...) makes its last close wait too. So urund's
//! single event loop never drops the last reference to a file a client passed, nor to
//! a client's connection (closing it purges descriptors still queued on it, which are
//! then released by the closing thread): [`ClientRead`](super::request::ClientRead)
//! keeps the last reference of each, and they are closed here, by a closing thread.
//! The connection keeps its place in `[connections]` until the close has returned,
//! counted as an idle connection of its user: a member whose closes wait fills their
//! own `per_user` cap, and nobody else's.
//!
//! Closing threads are bounded: at most [`THREADS_PER_USER`] per uid and
//! [`THREADS`] in all. A close beyond them waits in its uid's queue (holding the
//! descriptors it will close, at most a connection's, see `system::park_fds`), and
//! each closing thread takes the next close of its uid, then of another uid whose
//! closes wait for a thread, until none is left. A member whose closes wait for ever
//! so holds at most [`THREADS_PER_USER`] threads, and only their own closes queue
//! behind them; the queue is bounded by their `per_user` cap (and the runs of theirs
//! that were ending, `limits.max_concurrent`), since each close in it is a connection
//! still counted there: while it waits, the member cannot connect again.
//!
//! Connections refused at `accept` need none of this where the kernel has
//! `SO_PASSRIGHTS` (Linux 6.16+): urund's listening socket has it off, a new
//! connection inherits that, and urund turns it on only for a connection it admits. A
//! refused connection so never held a descriptor, its close releases nothing of the
//! client's, and urund closes it at once ([`close_refused`]).

use super::connections::Table;
use super::listen::Ticket;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, LazyLock, Mutex};

/// The stack of a closing thread: it only calls `close`.
const THREAD_STACK: usize = 64 * 1024;

/// Most closing threads for one uid's closes at once.
pub(super) const THREADS_PER_USER: usize = 2;

/// Most closing threads at once, across uids.
pub(super) const THREADS: usize = 256;

/// One close: drops descriptors (and what counts the connection).
type Job = Box<dyn FnOnce() + Send>;

/// The closing threads and the closes waiting for one.
pub(super) struct Pool {
    per_user: usize,
    total: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Closes waiting for a thread, by uid (only uids with at least one).
    waiting: HashMap<u32, VecDeque<Job>>,
    /// Closing threads at work, by uid (only uids with at least one).
    threads: HashMap<u32, usize>,
    /// All closing threads.
    total: usize,
}

impl State {
    fn next(&mut self, uid: u32) -> Option<Job> {
        let q = self.waiting.get_mut(&uid)?;
        let job = q.pop_front();
        if q.is_empty() {
            self.waiting.remove(&uid);
        }
        job
    }

    fn thread_ended(&mut self, uid: u32) {
        match self.threads.get(&uid).copied() {
            Some(n) if n > 1 => {
                self.threads.insert(uid, n - 1);
            }
            _ => {
                self.threads.remove(&uid);
            }
        }
    }

    /// A uid whose closes wait and that may have one more thread.
    fn starved(&self, per_user: usize) -> Option<u32> {
        self.waiting
            .keys()
            .copied()
            .find(|uid| self.threads.get(uid).copied().unwrap_or(0) < per_user)
    }
}

/// urund's one pool.
static POOL: LazyLock<Arc<Pool>> = LazyLock::new(|| Arc::new(Pool::new(THREADS_PER_USER, THREADS)));

impl Pool {
    pub(super) fn new(per_user: usize, total: usize) -> Pool {
        Pool {
            per_user,
            total,
            state: Mutex::new(State::default()),
        }
    }

    /// Runs `job` on a closing thread for `uid`: a new one if `uid` and the pool are
    /// under their caps, else the next free one of `uid`'s (or any, when all were
    /// busy). Never runs it here.
    pub(super) fn close(self: &Arc<Self>, uid: u32, job: Job) {
        let mut s = self.state.lock().unwrap();
        s.waiting.entry(uid).or_default().push_back(job);
        let mine = s.threads.get(&uid).copied().unwrap_or(0);
        if mine >= self.per_user || s.total >= self.total {
            return;
        }
        *s.threads.entry(uid).or_insert(0) += 1;
        s.total += 1;
        drop(s);
        let pool = self.clone();
        let made = std::thread::Builder::new()
            .name("urund-close".into())
            .stack_size(THREAD_STACK)
            .spawn(move || pool.work(uid));
        if let Err(e) = made {
            // The close stays queued for the next thread of this or another uid.
            eprintln!("urund: cannot make a thread to close a client's descriptors ({e}): queued");
            let mut s = self.state.lock().unwrap();
            s.thread_ended(uid);
            s.total -= 1;
        }
    }

    /// A closing thread: `uid`'s closes, then those of any uid left waiting for a
    /// thread, until none is left.
    fn work(&self, mut uid: u32) {
        loop {
            let job = {
                let mut s = self.state.lock().unwrap();
                match s.next(uid) {
                    Some(job) => job,
                    None => {
                        s.thread_ended(uid);
                        match s.starved(self.per_user) {
                            Some(other) => {
                                *s.threads.entry(other).or_insert(0) += 1;
                                uid = other;
                                continue;
                            }
                            None => {
                                s.total -= 1;
                                return;
                            }
                        }
                    }
                }
            };
            job();
        }
    }

    /// Closing threads at work now, and for `uid`.
    #[cfg(test)]
    fn threads(&self, uid: u32) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        (s.total, s.threads.get(&uid).copied().unwrap_or(0))
    }
}

/// Closes the last references of a connection's files (`fds`: its socket first, then
/// what its client passed) on a closing thread; the connection (its `ticket`) counts
/// as an idle one of its user until that returns. The client sees the connection end
/// at once (`shutdown`, which releases nothing), even while the close waits its turn.
pub(super) fn close_connection(fds: Vec<OwnedFd>, mut ticket: Ticket) {
    if let Some(sock) = fds.first() {
        use std::os::fd::AsRawFd;
        let _ = nix::sys::socket::shutdown(sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
    ticket.closing();
    POOL.close(
        ticket.uid(),
        Box::new(move || {
            drop(fds);
            drop(ticket);
        }),
    );
}

/// Closes a connection refused at `accept` (`fd`, the last reference to its socket).
/// One that never took descriptors (made with `SO_PASSRIGHTS` off, inherited from
/// the listening socket) is closed here and now: nothing but bytes can be queued on
/// it, so its close releases nothing of the client's. Otherwise (a kernel before 6.16,
/// a connection queued before urund set its listening socket) its queue may hold
/// descriptors: it is closed by a closing thread, counted as open and against `uid`'s
/// `per_user` cap until that returns, no more descriptors queued on it first where the
/// kernel allows.
pub(super) fn close_refused(fd: OwnedFd, uid: u32, table: Arc<Mutex<Table>>) {
    if let Ok(false) = crate::system::pass_rights(fd.as_fd()) {
        drop(fd);
        return;
    }
    let _ = crate::system::set_pass_rights(fd.as_fd(), false);
    table.lock().unwrap().refused_closing(uid);
    POOL.close(
        uid,
        Box::new(move || {
            drop(fd);
            table.lock().unwrap().refused_closed(uid);
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Waits until `f` holds (at most 5 s).
    fn until(f: impl Fn() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(5), "not within 5 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn closes_that_wait_take_a_bounded_number_of_threads_and_others_still_close() {
        let pool = Arc::new(Pool::new(2, 3));
        let (release, held) = mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let (done_tx, done) = mpsc::channel::<u32>();
        // uid 1: ten closes that each wait until released
        for _ in 0..10 {
            let (held, done_tx) = (held.clone(), done_tx.clone());
            pool.close(
                1,
                Box::new(move || {
                    held.lock().unwrap().recv().unwrap();
                    done_tx.send(1).unwrap();
                }),
            );
        }
        until(|| pool.threads(1) == (2, 2));
        // uid 2's close goes through meanwhile, on a thread of its own
        let tx = done_tx.clone();
        pool.close(2, Box::new(move || tx.send(2).unwrap()));
        assert_eq!(done.recv_timeout(Duration::from_secs(5)), Ok(2));
        until(|| pool.threads(2).1 == 0);
        // still two threads for uid 1, whatever it queues
        assert_eq!(pool.threads(1), (2, 2));
        // all of uid 1's closes are done once released, by those two threads
        for _ in 0..10 {
            release.send(()).unwrap();
        }
        for _ in 0..10 {
            assert_eq!(done.recv_timeout(Duration::from_secs(5)), Ok(1));
        }
        until(|| pool.threads(1) == (0, 0));
    }

    #[test]
    fn with_every_thread_busy_a_close_waits_for_the_next_free_one() {
        let pool = Arc::new(Pool::new(1, 2));
        let (release, held) = mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let (done_tx, done) = mpsc::channel::<u32>();
        for uid in [1, 2] {
            let (held, tx) = (held.clone(), done_tx.clone());
            pool.close(
                uid,
                Box::new(move || {
                    held.lock().unwrap().recv().unwrap();
                    tx.send(uid).unwrap();
                }),
            );
        }
        until(|| pool.threads(1) == (2, 1));
        // the pool is full: uid 3 waits, on no thread
        let tx = done_tx.clone();
        pool.close(3, Box::new(move || tx.send(3).unwrap()));
        assert_eq!(pool.threads(3), (2, 0));
        assert!(done.recv_timeout(Duration::from_millis(100)).is_err());
        // one close returns: its thread takes uid 3's
        release.send(()).unwrap();
        let mut got = vec![
            done.recv_timeout(Duration::from_secs(5)).unwrap(),
            done.recv_timeout(Duration::from_secs(5)).unwrap(),
        ];
        got.sort();
        assert!(got.contains(&3), "{got:?}");
        release.send(()).unwrap();
        done.recv_timeout(Duration::from_secs(5)).unwrap();
        until(|| pool.threads(1) == (0, 0));
    }
}

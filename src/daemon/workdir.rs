//! The working directory's descriptor a client passed with its request: examined and
//! pinned only on a thread of the run's own, never on the event loop, each step
//! within [`ANSWER`] (SECURITY.md, "Working directory").
//!
//! Every call that reaches the directory's filesystem waits for it: `fstat`,
//! `fstatvfs`, the lookup of its path, the `openat2` lookups of a working directory
//! below it, opening the pinned mount to check its flags. On FUSE (any user may mount
//! one with `allow_other` where `/etc/fuse.conf` has `user_allow_other`) that is a wait
//! for the user's own server, uninterruptible once the server has read the request;
//! a network filesystem whose server is gone waits too. urund's single event loop once
//! made those calls itself, so one member's directory froze urund for everyone (no
//! accept, no deadline, nobody's output). Now:
//!   - a FUSE directory, or one on a mount urund's mount namespace does not have, is
//!     refused from `/proc` alone before anything touches it
//!     ([`system::dir_filesystem`]);
//!   - everything else is done by the directory's thread, one step at a time, and the
//!     run waits for each at most [`ANSWER`]: a directory that does not answer in time
//!     refuses the run (exit 125, one line, rule `mounts.workdir`), with nothing made
//!     for it left behind (a pin that lands late is removed with the run's directory,
//!     by the janitor if need be);
//!   - a thread that stays stuck holds only its own copy of the descriptor, and the
//!     connection keeps its place (its run's `max_concurrent` place, or its
//!     `[connections]` place) until the thread has let go of it ([`Released`]): a
//!     member's stuck threads count against that member's own limits, nobody else's.
//!
//! The thread also closes urund's copy of the descriptor; the last reference, which
//! the connection keeps, is closed off the event loop too ([`super::closer`]).

use super::stdin::Released;
use crate::policy::rule::{Refusal, Rule};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a run waits for one step on its directory (its examination, the lookup
/// of the image's working directory, the pin) before it is refused.
pub(super) const ANSWER: Duration = Duration::from_secs(5);

/// The stack of a directory's thread: it holds a path or two and a mountinfo read.
const THREAD_STACK: usize = 256 * 1024;

/// One step on the directory, run on its thread.
type Job = Box<dyn FnOnce(BorrowedFd<'_>) + Send>;

/// A passed directory, held by a thread of its own that does every step on it.
/// Dropped, the thread finishes the step it is in (for as long as that takes), closes
/// its copy of the descriptor and ends.
pub(super) struct PassedDir {
    jobs: Option<mpsc::Sender<Job>>,
    wait: Duration,
}

impl PassedDir {
    /// Hands `fd` (urund's copy) to a thread of its own, with what resolves once that
    /// thread has let go of it. `Err`: no thread can be made now; `fd` is given back
    /// (to be closed with the connection's last references, off the event loop), with
    /// the user's line.
    pub(super) fn take(fd: OwnedFd) -> Result<(PassedDir, Released), (OwnedFd, String)> {
        Self::take_waiting(fd, ANSWER)
    }

    fn take_waiting(
        fd: OwnedFd,
        wait: Duration,
    ) -> Result<(PassedDir, Released), (OwnedFd, String)> {
        let (let_go, released) = Released::new();
        let (jobs, queue) = mpsc::channel::<Job>();
        // The descriptor goes to the thread only once it runs: if it cannot be made,
        // it is still here to give back.
        let (hand, take) = std::sync::mpsc::sync_channel::<OwnedFd>(1);
        let made = std::thread::Builder::new()
            .name("urund-workdir".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let Ok(fd) = take.recv() else { return };
                for job in queue {
                    job(fd.as_fd());
                }
                drop(fd);
                drop(let_go);
            });
        match made {
            Ok(_) => {
                // The thread is waiting for it: this does not block.
                if let Err(e) = hand.send(fd) {
                    return Err((e.0, NO_THREAD.into()));
                }
                Ok((
                    PassedDir {
                        jobs: Some(jobs),
                        wait,
                    },
                    released,
                ))
            }
            Err(e) => {
                eprintln!("urund: no thread for a passed directory: {e}");
                Err((fd, NO_THREAD.into()))
            }
        }
    }

    /// Runs `f` on the directory's thread and returns what it returned, if that came
    /// within the wait; otherwise (or after an earlier step did not answer) the
    /// refusal saying so. Once a step has not answered, the directory takes no more.
    pub(super) async fn ask<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(BorrowedFd<'_>) -> T + Send + 'static,
    ) -> Result<T, Refusal> {
        let refused = || Refusal::new(Rule::MountsWorkdir, not_answering(self.wait));
        let Some(jobs) = &self.jobs else {
            return Err(refused());
        };
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |fd| {
            let _ = tx.send(f(fd));
        });
        if jobs.send(job).is_err() {
            self.jobs = None;
            return Err(refused());
        }
        match tokio::time::timeout(self.wait, rx).await {
            Ok(Ok(v)) => Ok(v),
            _ => {
                self.jobs = None;
                Err(refused())
            }
        }
    }
}

/// The user's line when no thread can be made for a passed directory.
const NO_THREAD: &str =
    "urund cannot take the passed directory now (no thread left for it); try again later";

/// The user's line for a directory that did not answer within `wait`.
pub(super) fn not_answering(wait: Duration) -> String {
    format!(
        "passed directory: its filesystem did not answer within {} s, so it is not \
         mounted (mounts.workdir); try again later",
        wait.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    fn a_dir() -> OwnedFd {
        std::fs::File::open("/").unwrap().into()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_directory_that_does_not_answer_refuses_the_run_in_time_and_keeps_its_place() {
        let (mut dir, released) =
            PassedDir::take_waiting(a_dir(), Duration::from_millis(200)).unwrap();
        // A step that answers.
        assert!(dir
            .ask(crate::system::dir_filesystem)
            .await
            .unwrap()
            .is_ok());
        // A step that does not (a filesystem whose server never answers): the event
        // loop, this test's only thread, goes on and the run is refused in time.
        let stuck = Arc::new(AtomicBool::new(true));
        let hold = stuck.clone();
        let t = Instant::now();
        let got = dir
            .ask(move |_| {
                while hold.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
            .await;
        let refusal = got.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(refusal.rule, Rule::MountsWorkdir);
        assert!(
            refusal.message.contains("did not answer"),
            "{}",
            refusal.message
        );
        assert!(!refusal.message.contains('\n'));
        // Later steps are refused at once, without waiting again.
        let t = Instant::now();
        assert!(dir.ask(|_| ()).await.is_err());
        assert!(t.elapsed() < Duration::from_millis(100));
        drop(dir);
        // The connection keeps its place while the thread holds the descriptor...
        let mut released = Box::pin(released.wait());
        let early = tokio::time::timeout(Duration::from_millis(300), &mut released).await;
        assert!(early.is_err(), "released while the step was still stuck");
        // ... and has it back once the thread let go.
        stuck.store(false, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(5), released)
            .await
            .expect("released once the thread let go");
    }
}

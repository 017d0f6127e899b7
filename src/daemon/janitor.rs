//! Clean-up that is never silently dropped. Every container urund created and every
//! per-run directory (with its pinned mount) is removed by the run that made it; when
//! that fails (the Docker daemon is restarting, a mount is busy) the removal goes into
//! this queue and is retried with back-off until it succeeds, whatever the outage.
//! Besides, a reconcile pass lists the containers urund can prove it created
//! ([`Owner::proves`]) that no live run tracks, and removes them: at start (leftovers
//! of a urund that died), periodically, and soon after any failure. Nothing else is
//! ever removed. Each outcome is logged on urund's stderr and written to the audit log:
//! a queued removal and how its retries ended as `decision = "cleanup"`, a container
//! the reconcile pass removed as `decision = "reaped"`.
//!
//! API for the rest of urund: [`Janitor::track`] a run before its first container is
//! created (its containers are then never reconciled away under it),
//! [`Janitor::remove_container`] and [`Janitor::remove_run_dir`] at its end,
//! [`Janitor::run`] as a background task, [`Janitor::drain`] at shutdown.
#![forbid(unsafe_code)]

use crate::daemon::audit::{self, Record};
use crate::daemon::instance::Owner;
use crate::engine::{self, Engine};
use crate::policy::forced::{LABEL_HELPER, LABEL_INSTANCE, LABEL_REQUEST, LABEL_UID, LABEL_USER};
use crate::system;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// First retry of a failed removal; each further one waits twice as long, up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// How often the reconcile pass runs when nothing fails.
const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// The clean-up queue and reconcile loop; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Janitor(Arc<Inner>);

struct Inner {
    engine: Arc<dyn Engine>,
    owner: Owner,
    /// [`RECONCILE_EVERY`], or the debug builds' test hook.
    every: Duration,
    audit: Arc<audit::Sink>,
    state: Mutex<State>,
    wake: Notify,
}

struct State {
    pending: Vec<Pending>,
    /// Request ids of runs in progress (with a count: a request may be tracked twice).
    live: HashMap<String, usize>,
    /// Image ID → its own labels (an ID's content never changes).
    images: HashMap<String, HashMap<String, String>>,
    /// Containers already reported as not proven (reported once, never touched).
    not_ours: HashSet<String>,
    next_reconcile: Instant,
    reconcile_failures: u32,
}

/// Whose clean-up it is, for the log and the audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Whose {
    pub request: String,
    pub uid: u32,
    pub user: String,
}

impl Whose {
    /// From a container's labels (urund set them; informational only).
    pub(crate) fn from_labels(l: &HashMap<String, String>) -> Whose {
        Whose {
            request: l.get(LABEL_REQUEST).cloned().unwrap_or_default(),
            uid: l.get(LABEL_UID).and_then(|u| u.parse().ok()).unwrap_or(0),
            user: l.get(LABEL_USER).cloned().unwrap_or_default(),
        }
    }
}

/// Something to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Task {
    /// A container urund created (or proved its own): killed and removed.
    Container(String),
    /// A per-run directory: everything mounted below it unmounted, the files `files`
    /// and the empty mount point `work` removed, never recursively.
    RunDir {
        path: PathBuf,
        files: &'static [&'static str],
        work: &'static str,
    },
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Task::Container(id) => write!(f, "container {id}"),
            Task::RunDir { path, .. } => write!(f, "run directory {}", path.display()),
        }
    }
}

struct Pending {
    task: Task,
    whose: Whose,
    /// Failed attempts so far.
    attempts: u32,
    next: Instant,
}

/// How a removal asked for at the end of a run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Done,
    /// It failed and is queued; `unreachable`: because the daemon did not answer.
    Queued {
        unreachable: bool,
    },
}

/// A run in progress: its containers are left alone by the reconcile pass until this
/// is dropped.
pub struct Live {
    janitor: Janitor,
    request: String,
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut s = self.janitor.0.state.lock().unwrap();
        match s.live.get(&self.request).copied() {
            Some(n) if n > 1 => {
                s.live.insert(self.request.clone(), n - 1);
            }
            _ => {
                s.live.remove(&self.request);
            }
        }
    }
}

/// The wait before retry number `attempts` (1 after the first failure). Pure.
pub fn backoff(attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << shift).min(MAX_RETRY)
}

impl Janitor {
    pub fn new(engine: Arc<dyn Engine>, owner: Owner, audit: Arc<audit::Sink>) -> Janitor {
        let every = reconcile_every();
        Janitor(Arc::new(Inner {
            engine,
            owner,
            every,
            audit,
            state: Mutex::new(State {
                pending: Vec::new(),
                live: HashMap::new(),
                images: HashMap::new(),
                not_ours: HashSet::new(),
                next_reconcile: Instant::now() + every,
                reconcile_failures: 0,
            }),
            wake: Notify::new(),
        }))
    }

    /// The labels that prove a container is this urund's.
    pub fn owner(&self) -> &Owner {
        &self.0.owner
    }

    /// Marks the run `request` as in progress until the returned guard is dropped:
    /// call it before creating any container labelled with it.
    pub fn track(&self, request: &str) -> Live {
        *self
            .0
            .state
            .lock()
            .unwrap()
            .live
            .entry(request.to_string())
            .or_insert(0) += 1;
        Live {
            janitor: self.clone(),
            request: request.to_string(),
        }
    }

    /// Removes a container urund created, now; if that fails it is queued and retried
    /// until it succeeds.
    pub async fn remove_container(&self, id: &str, whose: &Whose) -> Removal {
        match self.0.engine.remove(id).await {
            Ok(()) => Removal::Done,
            Err(e) => {
                let unreachable = engine::is_unreachable(&e);
                self.queue(Task::Container(id.to_string()), whose, &format!("{e:#}"));
                Removal::Queued { unreachable }
            }
        }
    }

    /// Unmounts and removes a per-run directory, now; if that fails it is queued and
    /// retried until it succeeds.
    pub fn remove_run_dir(
        &self,
        path: PathBuf,
        files: &'static [&'static str],
        work: &'static str,
        whose: &Whose,
    ) -> Removal {
        let task = Task::RunDir { path, files, work };
        match attempt_dir(&task) {
            Ok(()) => Removal::Done,
            Err(e) => {
                self.queue(task, whose, &e.to_string());
                Removal::Queued { unreachable: false }
            }
        }
    }

    /// Asks for a reconcile pass as soon as possible (after an error).
    pub fn reconcile_soon(&self) {
        self.0.state.lock().unwrap().next_reconcile = Instant::now();
        self.0.wake.notify_one();
    }

    /// How many removals are waiting for a retry.
    pub fn pending(&self) -> usize {
        self.0.state.lock().unwrap().pending.len()
    }

    fn queue(&self, task: Task, whose: &Whose, error: &str) {
        let mut s = self.0.state.lock().unwrap();
        if s.pending.iter().any(|p| p.task == task) {
            return;
        }
        eprintln!(
            "urund: clean-up: removing {task} failed: {error}; retrying in {:?} until it succeeds",
            backoff(1)
        );
        self.0.audit.write(&Record::cleanup(
            &whose.request,
            whose.uid,
            &whose.user,
            container_of(&task),
            format!("removing {task} failed ({error}); queued for retry"),
        ));
        s.pending.push(Pending {
            task,
            whose: whose.clone(),
            attempts: 1,
            next: Instant::now() + backoff(1),
        });
        // A container that could not be removed may not be the only one.
        s.next_reconcile = s.next_reconcile.min(Instant::now() + backoff(1));
        drop(s);
        self.0.wake.notify_one();
    }

    /// The background loop: retries what is due, reconciles when due. Never returns.
    pub async fn run(self) {
        loop {
            let due = {
                let s = self.0.state.lock().unwrap();
                s.pending
                    .iter()
                    .map(|p| p.next)
                    .chain([s.next_reconcile])
                    .min()
                    .unwrap_or_else(|| Instant::now() + self.0.every)
            };
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = self.0.wake.notified() => {}
            }
            self.retry(false).await;
            let reconcile = self.0.state.lock().unwrap().next_reconcile <= Instant::now();
            if reconcile {
                self.reconcile_pass().await;
            }
        }
    }

    /// At shutdown: retries everything still queued until it is done or `limit` has
    /// passed; returns how many removals are left (the next start takes them over:
    /// containers by their labels, run directories by their names).
    pub async fn drain(&self, limit: Duration) -> usize {
        let end = Instant::now() + limit;
        loop {
            self.retry(true).await;
            let left = self.pending();
            if left == 0 || Instant::now() >= end {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(250).min(end - Instant::now())).await;
        }
    }

    /// One attempt at every due (or, with `all`, every) queued removal. Entries stay
    /// in the queue while they are tried, so [`Janitor::pending`] counts them.
    async fn retry(&self, all: bool) {
        let now = Instant::now();
        let due: Vec<(Task, Whose, u32)> = {
            let mut s = self.0.state.lock().unwrap();
            s.pending
                .iter_mut()
                .filter(|p| all || p.next <= now)
                .map(|p| {
                    // Not picked again by a concurrent pass while it is being tried.
                    p.next = now + MAX_RETRY * 6;
                    (p.task.clone(), p.whose.clone(), p.attempts)
                })
                .collect()
        };
        for (task, whose, attempts) in due {
            let r = match &task {
                Task::Container(id) => self.0.engine.remove(id).await.map_err(|e| format!("{e:#}")),
                t => attempt_dir(t).map_err(|e| e.to_string()),
            };
            let mut s = self.0.state.lock().unwrap();
            match r {
                Ok(()) => {
                    s.pending.retain(|p| p.task != task);
                    drop(s);
                    eprintln!("urund: clean-up: {task} removed after {attempts} failed attempt(s)");
                    self.0.audit.write(&Record::cleanup(
                        &whose.request,
                        whose.uid,
                        &whose.user,
                        container_of(&task),
                        format!("{task} removed after {attempts} failed attempt(s)"),
                    ));
                }
                Err(e) => {
                    let wait = backoff(attempts + 1);
                    if let Some(p) = s.pending.iter_mut().find(|p| p.task == task) {
                        p.attempts = attempts + 1;
                        p.next = Instant::now() + wait;
                    }
                    drop(s);
                    eprintln!(
                        "urund: clean-up: removing {task} failed again (attempt {}): {e}; retrying in {wait:?}",
                        attempts + 1
                    );
                }
            }
        }
    }

    async fn reconcile_pass(&self) {
        match self.reconcile().await {
            Ok(n) => {
                if n > 0 {
                    eprintln!("urund: clean-up: {n} container(s) no run tracks removed");
                }
                let mut s = self.0.state.lock().unwrap();
                s.reconcile_failures = 0;
                s.next_reconcile = Instant::now() + self.0.every;
            }
            Err(e) => {
                let mut s = self.0.state.lock().unwrap();
                s.reconcile_failures += 1;
                let wait = backoff(s.reconcile_failures);
                s.next_reconcile = Instant::now() + wait;
                eprintln!(
                    "urund: clean-up: listing containers failed (attempt {}): {e:#}; retrying in {wait:?}",
                    s.reconcile_failures
                );
            }
        }
    }

    /// One reconcile pass: removes every container proven to be this urund's that no
    /// live run tracks and no queued removal covers. Returns how many it removed.
    pub async fn reconcile(&self) -> anyhow::Result<usize> {
        let o = &self.0.owner;
        let listed = self
            .0
            .engine
            .labelled(&[
                (LABEL_INSTANCE, o.secret.as_str()),
                (LABEL_HELPER, o.helper.as_str()),
            ])
            .await?;
        let mut removed = 0;
        for c in listed {
            let whose = Whose::from_labels(&c.labels);
            if self.accounted_for(&c.id, &whose) {
                continue;
            }
            let image = self.image_labels(&c.image_id).await?;
            let proof = match &image {
                Some(labels) => o.proves(&c.labels, labels),
                None => Err("its image is gone, so the image's own labels cannot be checked"),
            };
            if let Err(why) = proof {
                eprintln!("urund: clean-up: container {} left alone: {why}", c.id);
                self.0.state.lock().unwrap().not_ours.insert(c.id);
                continue;
            }
            // Not live was checked before the awaits above: check again.
            if self
                .0
                .state
                .lock()
                .unwrap()
                .live
                .contains_key(&whose.request)
            {
                continue;
            }
            if self.reap(&c, &whose).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A listed container the reconcile pass leaves alone: its run is live, its
    /// removal is queued already, or it was found not to be ours.
    fn accounted_for(&self, id: &str, whose: &Whose) -> bool {
        let s = self.0.state.lock().unwrap();
        let queued = s
            .pending
            .iter()
            .any(|p| p.task == Task::Container(id.to_string()));
        s.live.contains_key(&whose.request) || queued || s.not_ours.contains(id)
    }

    /// Removes a container proven ours that no run tracks, on record; a failed removal
    /// is queued (`Err` if the daemon does not answer: the pass stops).
    async fn reap(&self, c: &engine::Listed, whose: &Whose) -> anyhow::Result<bool> {
        match self.0.engine.remove(&c.id).await {
            Ok(()) => {
                eprintln!(
                    "urund: clean-up: removed container {} (request {}, uid {}): no run tracks it",
                    c.id, whose.request, whose.uid
                );
                self.0.audit.write(&Record::reaped(&c.id, &c.labels));
                Ok(true)
            }
            Err(e) => {
                let unreachable = engine::is_unreachable(&e);
                self.queue(Task::Container(c.id.clone()), whose, &format!("{e:#}"));
                match unreachable {
                    true => Err(e),
                    false => Ok(false),
                }
            }
        }
    }

    /// An image's own labels, cached by ID; `None` if the image is gone.
    async fn image_labels(
        &self,
        image_id: &str,
    ) -> anyhow::Result<Option<HashMap<String, String>>> {
        if let Some(l) = self.0.state.lock().unwrap().images.get(image_id) {
            return Ok(Some(l.clone()));
        }
        let got = self.0.engine.image_labels(image_id).await?;
        if let Some(l) = &got {
            let mut s = self.0.state.lock().unwrap();
            if s.images.len() >= 256 {
                s.images.clear();
            }
            s.images.insert(image_id.to_string(), l.clone());
        }
        Ok(got)
    }
}

/// How often the reconcile pass runs. Test hook, debug builds only:
/// `URUND_TEST_RECONCILE_MS=N` makes it every N ms (at least 100), so the end-to-end
/// tests see passes without waiting. Release builds ignore it.
fn reconcile_every() -> Duration {
    if cfg!(debug_assertions) {
        if let Some(ms) = std::env::var("URUND_TEST_RECONCILE_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            return Duration::from_millis(ms.max(100));
        }
    }
    RECONCILE_EVERY
}

fn attempt_dir(task: &Task) -> std::io::Result<()> {
    match task {
        Task::RunDir { path, files, work } => system::remove_run_dir(path, files, work),
        Task::Container(_) => Ok(()),
    }
}

fn container_of(task: &Task) -> Option<&str> {
    match task {
        Task::Container(id) => Some(id),
        Task::RunDir { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_up_to_ten() {
        let got: Vec<u64> = (1..=8).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
        assert_eq!(backoff(0), FIRST_RETRY);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }

    /// A janitor over the recording fake engine, its audit log in `dir`.
    fn janitor(fake: &crate::engine::fake::Fake, dir: &std::path::Path) -> Janitor {
        let audit = audit::Sink::with(Some(dir.join("audit.log")), None).unwrap();
        let owner = Owner {
            helper: "unit-test".into(),
            secret: "0".repeat(32),
        };
        Janitor::new(Arc::new(fake.clone()), owner, Arc::new(audit))
    }

    #[tokio::test]
    async fn a_removal_the_daemon_does_not_answer_is_queued_and_retried_until_it_succeeds() {
        use crate::engine::fake::{Fake, Op, Script};
        let dir = std::env::temp_dir().join(format!("urun-janitor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let fake = Fake::new(Script {
            fail: [(Op::Remove, 0)].into(),
            unreachable: true,
            ..Script::default()
        });
        let j = janitor(&fake, &dir);
        let id = fake.create(Default::default()).await.unwrap();
        let whose = Whose {
            request: "r".into(),
            uid: 1000,
            user: "alice".into(),
        };
        assert!(matches!(
            j.remove_container(&id, &whose).await,
            Removal::Queued { unreachable: true }
        ));
        assert_eq!(j.pending(), 1);
        assert_eq!(fake.live().len(), 1);
        // The daemon answers again: the queued removal goes through.
        fake.script(|s| s.fail.clear());
        assert_eq!(j.drain(Duration::from_secs(5)).await, 0);
        assert!(fake.live().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

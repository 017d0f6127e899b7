//! One connection, start to end: the steps of the security argument in the module
//! comment of [`crate::daemon`].

use super::audit::Record;
use super::describe::describe;
use super::instance;
use super::listen::Ticket;
use super::outbox::Outbox;
use super::request::{linger, read_first, First};
use super::rundir::RunDir;
use super::stdin::PassedStdin;
use super::{Helper, EXIT_MAX_RUNTIME};
use crate::daemon::janitor::{Removal, Whose};
use crate::engine::RunError;
use crate::policy::forced::{self, Inside};
use crate::policy::identity;
use crate::policy::judge::{
    self, judge, judge_access, judge_concurrency, judge_dir, judge_pull, judge_resolved, Decision,
};
use crate::policy::reference::{ImageFacts, Reference};
use crate::policy::{Limits, NetworkMode, RuntimeName, ISOLATED_NETWORK};
use crate::system::{self, Caller};
use crate::wire::{self, Kind, Request};
use anyhow::Result;
use bollard::models::ContainerCreateBody;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;

impl Helper {
    /// The groups never given to a container (see [`identity::DeniedGroups`]), their
    /// gids looked up now: a group created after urund started counts too.
    pub(super) fn denied_groups(&self) -> identity::DeniedGroups {
        identity::DeniedGroups::new(
            self.policy
                .identity
                .deny_groups
                .iter()
                .map(|g| g.0.as_str())
                .chain([self.policy.access.group.0.as_str()]),
            self.group_gid,
            |n| system::group_gid(n).ok().flatten(),
        )
    }

    pub(super) fn request_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        instance::request_id(self.boot, std::process::id(), n)
    }

    /// One connection, start to end: the steps of the module comment, each a function
    /// below. Whatever way [`Helper::admit_and_run`] ends, the run is recorded (7) before
    /// its last frame is delivered.
    pub(super) async fn serve(self: Arc<Self>, stream: UnixStream, mut ticket: Ticket) {
        // 1. Who: from the kernel, before reading anything.
        let caller = match system::peer_caller(stream.as_fd()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("urund: cannot identify a peer, dropping it: {e}");
                return;
            }
        };
        let started = Instant::now();
        let mut rec = Record::new(&self.request_id(), &caller);
        let (mut rd, wr) = stream.into_split();
        let out = Outbox::spawn(wr);
        // The run's place in `limits.max_concurrent`: kept until the client has its
        // last frame (or delivery gave up), so a user's undelivered runs count too.
        let mut slot = None;
        let end = self
            .admit_and_run(&caller, &mut rec, &mut rd, &out, &mut ticket, &mut slot)
            .await;
        // 7. Record.
        let frame = record_end(&mut rec, &end);
        rec.duration_ms = started.elapsed().as_millis() as u64;
        self.audit.write(&rec);
        // Bounded, whatever the client does: see `Outbox::finish` and `linger`.
        out.finish(Some(frame)).await;
        linger(&mut rd).await;
        drop(slot);
    }

    /// Steps 2 to 6. Returns how the connection ends.
    pub(super) async fn admit_and_run<'a>(
        &'a self,
        caller: &Caller,
        rec: &mut Record,
        rd: &mut OwnedReadHalf,
        out: &Outbox,
        ticket: &mut Ticket,
        slot: &mut Option<Slot<'a>>,
    ) -> End {
        // 2. What: one bounded request and the directory passed with it (or a
        //    question about the policy).
        let (req, dir, stdin) = match read_first(rd).await {
            Ok(First::Run(r, dir, stdin)) => (*r, dir, stdin),
            Ok(First::Query) => return self.answer_query(caller, rec, out).await,
            Err(message) => return End::Refused("protocol", message),
        };
        // A passed stdin: checked before anything else is done for the request.
        let stdin = match stdin.map(PassedStdin::check).transpose() {
            Ok(s) => s,
            Err(message) => return End::Refused("protocol", message),
        };
        record_request(rec, &req);
        // 3 and 4. May they, with which limits, which image, which network.
        let admitted = match self.admit(caller, rec, &req, dir.as_ref(), out, slot).await {
            Ok(a) => a,
            Err(end) => return end,
        };
        // From here the connection counts against max_concurrent, not [connections].
        ticket.running();
        // From here on containers exist: the run is tracked, so the reconcile pass
        // leaves them to it, and everything it makes is removed through the janitor.
        let _live = self.janitor.track(&rec.request);
        let whose = Whose {
            request: rec.request.clone(),
            uid: caller.uid,
            user: caller.display_name(),
        };
        // 5. How: the network, the run's directory, the forced settings.
        let (run, inside) = match self.prepare(caller, &whose, &admitted, &req, dir).await {
            Ok(x) => x,
            Err(end) => return end,
        };
        let body = self.configure(caller, &rec.request, &req, &admitted, &inside);
        // 6. Run, and remove whatever happens.
        self.run(
            rec,
            &req,
            body,
            &admitted.limits,
            &whose,
            &run,
            rd,
            stdin,
            out,
        )
        .await
    }

    /// Steps 3 and 4, admission: everything decided about this request, or the rule
    /// that refuses it. The access judge, the caller's limits and one more run
    /// (`max_concurrent`, held in `slot`), their `--name`, the passed directory, the
    /// image (pulled if missing and allowed, then judged again on what Docker found),
    /// the network.
    pub(super) async fn admit<'a>(
        &'a self,
        caller: &Caller,
        rec: &mut Record,
        req: &Request,
        dir: Option<&OwnedFd>,
        out: &Outbox,
        slot: &mut Option<Slot<'a>>,
    ) -> Result<Admitted<'a>, End> {
        let denied = self.denied_groups();
        if let Decision::Refuse(r) = judge(caller, &self.policy, self.group_gid, &denied, req) {
            return Err(End::Refused(r.rule, r.message));
        }
        let limits = self.limits_for(caller);
        *slot = Some(self.take_slot(caller.uid, &limits)?);
        rec.name = req.name.clone();
        let name = self.take_name(caller.uid, req.name.as_deref())?;
        self.admit_dir(caller, rec, req, dir).await?;
        // 4. Which image: exactly this ID, whatever the tag points to later, and only
        //    if what Docker found carries the name that was judged.
        let image = self.find_image(req, out).await?;
        if let Decision::Refuse(r) = judge_resolved(&self.policy, req, &image) {
            return Err(End::Refused(r.rule, r.message));
        }
        rec.image_id = Some(image.id.clone());
        let runtime = self.runtime_for(caller, req, &image);
        rec.runtime = Some(runtime.0.clone());
        // Without -w (checked with the directory), the image's WORKDIR.
        if let (Some(m), Some(fd), None) = (&req.mount, dir, &req.workdir) {
            workdir_in_mount(None, image.working_dir.as_deref(), &m.target, fd)?;
        }
        // The policy's network, or none if the user asked for less (the judge refused
        // anything else; the fallback is the safe side).
        let network = match &req.network {
            Some(asked) => judge::network_mode(&self.policy, asked).unwrap_or(NetworkMode::None),
            None => self.policy.network.mode,
        };
        Ok(Admitted {
            limits,
            denied,
            image,
            network,
            runtime,
            _name: name,
        })
    }

    /// The passed working directory, judged from what the kernel says of the
    /// descriptor (never from a path in the request); a mount needs one and one needs a
    /// mount.
    async fn admit_dir(
        &self,
        caller: &Caller,
        rec: &mut Record,
        req: &Request,
        dir: Option<&OwnedFd>,
    ) -> Result<(), End> {
        let refused = |m: &str| Err(End::Refused("protocol", m.to_string()));
        let (m, fd) = match (&req.mount, dir) {
            (Some(m), Some(fd)) => (m, fd),
            (None, None) => return Ok(()),
            (Some(_), None) => {
                return refused("a mount was requested without passing the directory")
            }
            (None, Some(_)) => return refused("a directory was passed without a mount request"),
        };
        let facts = system::dir_facts(fd.as_fd())
            .map_err(|e| End::Refused("mounts.workdir", format!("passed directory: {e}")))?;
        rec.message = facts
            .path
            .as_ref()
            .map(|p| format!("workdir {}", p.display()));
        if let Decision::Refuse(r) = judge_dir(caller, &self.policy, &facts, m.read_only) {
            return Err(End::Refused(r.rule, r.message));
        }
        // Before the image is looked up (or pulled): a refusal has no side effects.
        if req.workdir.is_some() {
            workdir_in_mount(req.workdir.as_deref(), None, &m.target, fd)?;
        }
        test_pause().await;
        Ok(())
    }

    /// Step 5, preparation: the isolated network if this run uses it, then the run's
    /// directory with the generated identity files and the pinned working directory
    /// (the descriptor is closed once it is pinned).
    async fn prepare(
        &self,
        caller: &Caller,
        whose: &Whose,
        admitted: &Admitted<'_>,
        req: &Request,
        dir: Option<OwnedFd>,
    ) -> Result<(RunDir, Inside), End> {
        if admitted.network == NetworkMode::Isolated {
            let _guard = self.network_lock.lock().await;
            if let Err(e) = self.engine.ensure_isolated_network(ISOLATED_NETWORK).await {
                return Err(End::Failed(daemon_error(e)));
            }
        }
        let prepared = self
            .prepare_inside(
                caller,
                whose,
                &admitted.image,
                req,
                dir.as_ref(),
                &admitted.denied,
                &admitted.runtime,
            )
            .await;
        prepared.map_err(|e| match e {
            e if crate::engine::is_unreachable(&e) => End::Failed(daemon_error(e)),
            e => End::Failed(RunError {
                status: 125,
                message: format!("preparing the container: {e:#}"),
            }),
        })
    }

    /// Step 5, forced configuration: the whole container configuration from the
    /// forced-settings table, the admission and what was prepared.
    fn configure(
        &self,
        caller: &Caller,
        request_id: &str,
        req: &Request,
        admitted: &Admitted<'_>,
        inside: &Inside,
    ) -> ContainerCreateBody {
        let labels = forced::labels(
            caller,
            request_id,
            self.janitor.owner(),
            req.name.as_deref(),
        );
        forced::container_config(
            caller,
            &admitted.limits,
            &admitted.image.id,
            req,
            labels,
            admitted.network,
            inside,
            &admitted.runtime,
        )
    }

    /// Step 6: create, record as admitted, relay until it ends, remove (through the
    /// janitor, which retries until the removal succeeds).
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        rec: &mut Record,
        req: &Request,
        body: ContainerCreateBody,
        limits: &Limits,
        whose: &Whose,
        run: &RunDir,
        rd: &mut OwnedReadHalf,
        stdin: Option<PassedStdin>,
        out: &Outbox,
    ) -> End {
        let id = match self.engine.create(body).await {
            Ok(id) => id,
            Err(e) => return End::Failed(daemon_error(e)),
        };
        rec.container = Some(id.clone());
        // Recorded where only urund writes: after a crash its next start removes it
        // by this ID, whatever its labels or its image's say.
        if let Err(e) = run.record_container(&id) {
            eprintln!("urund: {e:#}");
        }
        // On record before it starts: a run in flight when urund dies is not lost.
        self.audit.write(&rec.admitted(limits));
        self.runs
            .lock()
            .unwrap()
            .insert(rec.request.clone(), (id.clone(), whose.clone()));
        let max_runtime = Duration::from_secs(limits.max_runtime.0);
        let end = match self.relay(&id, req, rd, stdin, out, rec, max_runtime).await {
            End::Timeout(_) => End::Timeout(limits.max_runtime),
            e => e,
        };
        let removal = self.janitor.remove_container(&id, whose).await;
        self.runs.lock().unwrap().remove(&rec.request);
        match (end, removal) {
            // The daemon went away while the container ran (a status it still sent
            // came from a daemon stopping its containers): say so; the janitor removes
            // the container once the daemon answers again.
            (End::Exit(_) | End::Failed(_), Removal::Queued { unreachable: true }) => {
                End::DaemonGone
            }
            (end, _) => end,
        }
    }

    /// The runtime of this caller's run of `image`: the policy's `[runtime]` rules on
    /// the caller and on every name of the image (the reference as judged and the
    /// names Docker has for it), never the request.
    pub(super) fn runtime_for(
        &self,
        caller: &Caller,
        req: &Request,
        image: &ImageFacts,
    ) -> RuntimeName {
        let judged = Reference::parse(&req.image).map(|r| r.familiar()).ok();
        let names: Vec<&str> = judged
            .iter()
            .map(String::as_str)
            .chain(image.repo_tags.iter().map(String::as_str))
            .chain(image.repo_digests.iter().map(String::as_str))
            .collect();
        self.policy.effective_runtime(
            caller.uid,
            caller.name.as_deref(),
            |g| self.member_of(caller, g),
            &names,
        )
    }

    /// The caller's effective limits: the policy's override tables, never the request.
    pub(super) fn limits_for(&self, caller: &Caller) -> Limits {
        self.policy
            .effective_limits(caller.uid, caller.name.as_deref(), |g| {
                self.member_of(caller, g)
            })
    }

    /// Whether the caller is in group `g`, one of those the policy's override tables
    /// name (resolved at start).
    fn member_of(&self, caller: &Caller, g: &str) -> bool {
        self.override_gids
            .get(g)
            .is_some_and(|gid| caller.in_group(*gid))
    }

    /// Counts one more run for `uid`, or refuses it (`limits.max_concurrent`). The
    /// count drops when the returned slot does.
    pub(super) fn take_slot(&self, uid: u32, limits: &Limits) -> Result<Slot<'_>, End> {
        let mut m = self.per_user.lock().unwrap();
        let n = m.get(&uid).copied().unwrap_or(0);
        if let Decision::Refuse(r) = judge_concurrency(limits, n) {
            return Err(End::Refused(r.rule, r.message));
        }
        m.insert(uid, n + 1);
        Ok(Slot {
            map: &self.per_user,
            uid,
        })
    }

    /// What the request's image reference resolves to, locally; a missing image is
    /// pulled first if the request and the judge allow it.
    pub(super) async fn find_image(&self, req: &Request, out: &Outbox) -> Result<ImageFacts, End> {
        let missing = |what: &str| {
            End::Failed(RunError {
                status: 125,
                message: format!("Unable to find image '{}' locally{what}", req.image),
            })
        };
        match self.engine.inspect_image(&req.image).await {
            Ok(Some(found)) => return Ok(found),
            Ok(None) if req.never_pull => return Err(missing(" (--pull never)")),
            Ok(None) => {}
            Err(e) => return Err(End::Failed(daemon_error(e))),
        }
        if let Decision::Refuse(r) = judge_pull(&self.policy, &req.image) {
            return Err(End::Refused(r.rule, r.message));
        }
        let reference =
            Reference::parse(&req.image).map_err(|e| End::Refused("images.reference", e.0))?;
        if let Err(e) = self.pull(&reference, out).await {
            return Err(End::Failed(daemon_error(e)));
        }
        match self.engine.inspect_image(&req.image).await {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(missing(" after the pull")),
            Err(e) => Err(End::Failed(daemon_error(e))),
        }
    }

    /// Reserves the run's `--name` among the caller's runs in progress, or refuses it
    /// as docker does a name in use. The name is only a label (see
    /// [`forced::LABEL_NAME`]), so this check is urund's; it ends with the guard.
    pub(super) fn take_name(
        &self,
        uid: u32,
        name: Option<&str>,
    ) -> Result<Option<NameHold<'_>>, End> {
        let Some(name) = name else { return Ok(None) };
        let key = (uid, name.to_string());
        if !self.names.lock().unwrap().insert(key.clone()) {
            return Err(End::Refused(
                "name",
                format!(
                    "Conflict. The container name \"/{name}\" is already in use by another \
                     of your runs; end it or choose another name"
                ),
            ));
        }
        Ok(Some(NameHold {
            set: &self.names,
            key,
        }))
    }

    /// `urun --policy`: the caller's effective policy, computed here from the
    /// kernel's identity, as text.
    pub(super) async fn answer_query(
        &self,
        caller: &Caller,
        rec: &mut Record,
        out: &Outbox,
    ) -> End {
        rec.argv = vec!["--policy".into()];
        if let Decision::Refuse(r) = judge_access(caller, &self.policy, self.group_gid) {
            return End::Refused(r.rule, r.message);
        }
        let limits = self.limits_for(caller);
        let runtime = self
            .policy
            .caller_runtime(caller.uid, caller.name.as_deref(), |g| {
                self.member_of(caller, g)
            });
        let text = describe(&self.policy, &self.policy_path, caller, &limits, runtime);
        rec.bytes_out = text.len() as u64;
        if out.frame(Kind::Stdout, text.into_bytes()).await.is_err() {
            return End::ClientGone;
        }
        End::Exit(0)
    }
}

/// One run counted against `limits.max_concurrent` while it lives.
pub(super) struct Slot<'a> {
    map: &'a Mutex<HashMap<u32, u32>>,
    uid: u32,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap();
        match m.get(&self.uid).copied() {
            Some(n) if n > 1 => {
                m.insert(self.uid, n - 1);
            }
            _ => {
                m.remove(&self.uid);
            }
        }
    }
}

/// A `--name` in use by one of its owner's runs while it lives.
pub(super) struct NameHold<'a> {
    set: &'a Mutex<std::collections::HashSet<(u32, String)>>,
    key: (u32, String),
}

impl Drop for NameHold<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.key);
    }
}

/// How a connection ends.
pub(super) enum End {
    Exit(u8),
    /// Killed for exceeding `limits.max_runtime`.
    Timeout(crate::policy::Seconds),
    Refused(&'static str, String),
    Failed(RunError),
    ClientGone,
    /// The Docker daemon stopped (or restarted) while the container ran.
    DaemonGone,
}

/// What the request asked for, on its audit record: the image, the command, the
/// entrypoint and `-w`, the environment's names (never the values: one may be a secret).
fn record_request(rec: &mut Record, req: &Request) {
    rec.image = req.image.clone();
    rec.argv = req.command.clone();
    rec.entrypoint = req.entrypoint.clone();
    rec.workdir = req.workdir.clone();
    rec.env = req
        .env
        .iter()
        .map(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n).to_string())
        .collect();
}

/// The run's working directory against the mounted directory. runc creates a missing
/// working directory itself, as root, after the mounts: one below the mount target is
/// created in the caller's host directory. So with a mount, the working directory
/// (`-w`, else the image's `WORKDIR`) must be the target or an existing directory
/// below it (looked up on the passed descriptor, see SECURITY.md); a `-w` anywhere
/// else is refused, because the image's symlinks could lead it into the target
/// (`/lib/x` is `/usr/lib/x` in a merged-/usr image). The image's own `WORKDIR`
/// elsewhere is left as it is.
fn workdir_in_mount(
    asked: Option<&str>,
    image: Option<&str>,
    target: &str,
    fd: &OwnedFd,
) -> Result<(), End> {
    use crate::policy::mounts::{workdir_place, WorkdirPlace};
    let (w, whose) = match (asked, image) {
        (Some(w), _) => (w, "working directory"),
        (None, Some(w)) => (w, "the image's working directory (WORKDIR)"),
        (None, None) => return Ok(()),
    };
    let rel = match workdir_place(target, w) {
        WorkdirPlace::AtTarget => return Ok(()),
        WorkdirPlace::Elsewhere if asked.is_none() => return Ok(()),
        WorkdirPlace::Elsewhere => {
            return Err(End::Refused(
                "workdir",
                format!(
                    "working directory {w} is refused (workdir): with a mounted directory it \
                     must be the mount target {target} or a directory below it"
                ),
            ))
        }
        WorkdirPlace::Below(rel) => rel,
    };
    let Err(e) = system::existing_subdir(fd.as_fd(), &rel) else {
        return Ok(());
    };
    let why = match e.raw_os_error() {
        Some(libc::ENOENT) => "does not exist".to_string(),
        Some(libc::ENOTDIR) => "is not a directory".to_string(),
        Some(libc::ELOOP) => "goes through a symlink".to_string(),
        Some(libc::EXDEV) => "crosses another mount".to_string(),
        _ => e.to_string(),
    };
    Err(End::Refused(
        "workdir",
        format!(
            "{whose} {w} is refused (workdir): {} {why} in the directory you mount, and \
             urun does not create it (create it first)",
            rel.display()
        ),
    ))
}

/// Everything admission decided about one run: what the later steps use, never
/// re-derived from the request.
pub(super) struct Admitted<'a> {
    /// The caller's effective limits.
    pub(super) limits: Limits,
    /// Groups never given to the container.
    pub(super) denied: identity::DeniedGroups,
    /// The image, resolved to its ID and judged on what Docker found.
    pub(super) image: ImageFacts,
    pub(super) network: NetworkMode,
    /// The OCI runtime the policy chose for this caller and image.
    pub(super) runtime: RuntimeName,
    /// The run's `--name`, reserved among the caller's runs while this lives.
    pub(super) _name: Option<NameHold<'a>>,
}

/// Step 7: completes the connection's audit record from how it ended (every ending
/// has a decision: allowed, refused or error), and returns the client's last frame.
pub(super) fn record_end(rec: &mut Record, end: &End) -> (Kind, Vec<u8>) {
    let error = |rec: &mut Record, status: u8, msg: &str| {
        rec.message = Some(msg.to_string());
        rec.status = Some(status);
        (Kind::Error, wire::encode_error(status, msg))
    };
    match end {
        End::Exit(s) => {
            rec.decision = "allowed";
            rec.status = Some(*s);
            (Kind::Exit, wire::encode_exit(*s).to_vec())
        }
        End::Refused(rule, msg) => {
            rec.decision = "refused";
            rec.rule = Some(rule.to_string());
            error(rec, 125, msg)
        }
        End::Failed(e) => error(rec, e.status, &e.message),
        End::Timeout(limit) => {
            rec.decision = "allowed";
            rec.rule = Some("limits.max_runtime".into());
            let msg = format!(
                "container killed after {limit} (policy limits.max_runtime); exit status {EXIT_MAX_RUNTIME}"
            );
            error(rec, EXIT_MAX_RUNTIME, &msg)
        }
        End::DaemonGone => {
            rec.rule = Some("docker".into());
            error(rec, 125, DAEMON_GONE)
        }
        End::ClientGone => {
            rec.decision = "allowed";
            rec.message = Some("client went away; container removed".into());
            // A client that only shut down its sending side still reads this.
            let msg = "connection closed by urun, so the container was killed";
            (Kind::Error, wire::encode_error(137, msg))
        }
    }
}

/// Test hook, debug builds only: `URUND_TEST_PAUSE_MS=N` makes urund wait N ms after
/// it has checked a passed directory and before it pins it, so the end-to-end tests
/// can swap the directory's path in that window. Release builds ignore it.
pub(super) async fn test_pause() {
    if !cfg!(debug_assertions) {
        return;
    }
    if let Some(ms) = std::env::var("URUND_TEST_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        eprintln!("urund: test pause {ms} ms before pinning");
        tokio::time::sleep(Duration::from_millis(ms.min(30_000))).await;
    }
}

/// A failed daemon call as the user's one line (status 125). A daemon that does not
/// answer gets the same clear line whatever urund was doing; the detail goes to
/// urund's log.
pub(super) fn daemon_error(e: anyhow::Error) -> RunError {
    if crate::engine::is_unreachable(&e) {
        eprintln!("urund: {e:#}");
        return RunError {
            status: 125,
            message: crate::engine::NOT_ANSWERING.into(),
        };
    }
    RunError {
        status: 125,
        message: format!("docker daemon: {e:#}"),
    }
}

/// What a client is told when the daemon stopped while its container ran.
pub(super) const DAEMON_GONE: &str =
    "the Docker daemon stopped during the run; urund removes the container once the daemon is back";

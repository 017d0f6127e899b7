//! One connection, start to end: the steps of the security argument in the module
//! comment of [`crate::daemon`].

use super::audit::Record;
use super::describe::describe;
use super::listen::Ticket;
use super::outbox::Outbox;
use super::request::{linger, read_first, ClientRead, First};
use super::rundir::{Prepare, RunDir};
use super::stdin::{PassedStdin, Released};
use super::workdir::PassedDir;
use super::Helper;
use super::{closer, instance};
use crate::daemon::janitor::{Removal, Whose};
use crate::engine::RunError;
use crate::policy::admission::{self, Admission, AdmittedImage, Facts, Pull};
use crate::policy::forced::{self, Inside};
use crate::policy::identity;
use crate::policy::mounts::{self, DirFacts};
use crate::policy::reference::ImageFacts;
use crate::policy::rule::{Refusal, Rule};
use crate::policy::{Limits, NetworkMode, ISOLATED_NETWORK};
use crate::system::{self, Caller};
use crate::wire::{self, status, Kind, Request};
use bollard::models::ContainerCreateBody;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

/// What a connection keeps until its last frame is delivered: the run's place in
/// `max_concurrent` (so a user's undelivered runs count too), and, for a passed stdin
/// and a passed directory, what resolves once urund has let go of it off the event
/// loop (review R1: a run, or before admission the connection, keeps its place until
/// then).
#[derive(Default)]
pub(super) struct Kept<'a> {
    slot: Option<Slot<'a>>,
    released: Option<Released>,
    dir_released: Option<Released>,
}

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
                return close_stream(stream, ticket);
            }
        };
        let started = Instant::now();
        let mut rec = Record::new(&self.request_id(), &caller);
        let (rd, wr) = stream.into_split();
        // Every byte read with room for descriptors, and the last reference of the
        // socket and of what the client passes kept for a closing thread (review R2).
        let mut rd = match ClientRead::new(rd) {
            Ok(rd) => rd,
            Err((rd, e)) => {
                eprintln!("urund: no descriptor left to serve a connection: {e}");
                return match rd.reunite(wr) {
                    Ok(stream) => close_stream(stream, ticket),
                    Err(_) => eprintln!("urund: a connection's halves do not match"),
                };
            }
        };
        let out = Outbox::spawn(wr);
        // The run's place in `limits.max_concurrent`: kept until the client has its
        // last frame (or delivery gave up), so a user's undelivered runs count too, and
        // until urund has closed a passed stdin.
        let mut kept = Kept::default();
        let end = self
            .admit_and_run(&caller, &mut rec, &mut rd, &out, &mut ticket, &mut kept)
            .await;
        // 7. Record.
        let frame = record_end(&mut rec, &end);
        rec.duration_ms = started.elapsed().as_millis() as u64;
        self.audit.write(&rec);
        // Bounded, whatever the client does: see `Outbox::finish` and `linger`.
        out.finish(Some(frame)).await;
        linger(&mut rd).await;
        for r in [kept.released, kept.dir_released].into_iter().flatten() {
            r.wait().await;
        }
        drop(kept.slot);
        // Every copy urund had of the socket and of what the client passed is gone
        // (the outbox's writer ended with `finish`): the last references are closed on
        // a thread, the connection keeping its place until then.
        closer::close_connection(rd.into_last(), ticket);
    }

    /// Steps 2 to 6. Returns how the connection ends.
    pub(super) async fn admit_and_run<'a>(
        &'a self,
        caller: &Caller,
        rec: &mut Record,
        rd: &mut ClientRead,
        out: &Outbox,
        ticket: &mut Ticket,
        kept: &mut Kept<'a>,
    ) -> End {
        // 2. What: one bounded request and the directory passed with it (or a
        //    question about the policy).
        let (req, dir, stdin) = match read_first(rd).await {
            Ok(First::Run(r, dir, stdin)) => (*r, dir, stdin),
            Ok(First::Query) => return self.answer_query(caller, rec, out).await,
            Ok(First::Build(b)) => return self.serve_build(caller, rec, *b, rd, out, ticket).await,
            Ok(First::Manage(m)) => return self.manage(caller, rec, *m, out).await,
            Err(message) => return End::Refused(Refusal::new(Rule::Protocol, message)),
        };
        // A passed directory: handed to a thread of its own at once, which does every
        // step on it (see `workdir`); the connection keeps its place until that thread
        // has let go of it. If no thread can be made, urund's copy joins the last
        // references, closed off the event loop.
        let mut dir = match dir {
            None => None,
            Some(fd) => match PassedDir::take(fd) {
                Ok((d, let_go)) => {
                    kept.dir_released = Some(let_go);
                    Some(d)
                }
                Err((fd, message)) => {
                    rd.keep(fd);
                    return End::Refused(Refusal::new(Rule::MountsWorkdir, message));
                }
            },
        };
        // A passed stdin: checked before anything else is done for the request; the
        // connection keeps its place until urund has closed it (review R1).
        let stdin = match stdin {
            None => None,
            Some(fd) => {
                let (let_go, checked) = PassedStdin::take(fd).await;
                kept.released = Some(let_go);
                match checked {
                    Ok(s) => Some(s),
                    Err(message) => return End::Refused(Refusal::new(Rule::Protocol, message)),
                }
            }
        };
        record_request(rec, &req);
        // 3 and 4. May they, with which limits, which image, which network.
        let admitted = match self
            .admit(caller, rec, &req, dir.as_mut(), out, &mut kept.slot)
            .await
        {
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
        let (run, inside) = match self.prepare(&whose, &admitted, dir).await {
            Ok(x) => x,
            Err(end) => return end,
        };
        let body = self.configure(caller, &rec.request, &req, &admitted, &inside);
        // 6. Run, and remove whatever happens.
        self.run(
            rec,
            &req,
            body,
            &admitted.admission.limits,
            &whose,
            &run,
            rd,
            stdin,
            out,
        )
        .await
    }

    /// Steps 3 and 4, admission: one decision (see `policy::admission`) from the
    /// facts urund knows, with the run's place in `max_concurrent` (held in `slot`) and
    /// its `--name` taken under the locks they were counted under; then the image
    /// (pulled if missing and admitted), judged again on what Docker found.
    pub(super) async fn admit<'a>(
        &'a self,
        caller: &Caller,
        rec: &mut Record,
        req: &Request,
        mut dir: Option<&mut PassedDir>,
        out: &Outbox,
        slot: &mut Option<Slot<'a>>,
    ) -> Result<Admitted<'a>, End> {
        let (dir_facts, workdir_below) = self
            .examine_dir(req, dir.as_deref_mut())
            .await
            .map_err(End::Refused)?;
        let (admission, taken, name) = self
            .admit_request(caller, req, dir_facts, workdir_below)
            .map_err(End::Refused)?;
        *slot = Some(taken);
        if let Some(m) = &admission.mount {
            rec.message = m.path.as_ref().map(|p| format!("workdir {}", p.display()));
            test_pause().await;
        }
        // 4. Which image: exactly this ID, whatever the tag points to later, and only
        //    if what Docker found carries the name that was judged.
        let found = self.find_image(req, &admission, out).await?;
        // Without -w (checked with the directory), the image's WORKDIR below the target.
        let image_workdir = match (&admission.mount, &admission.workdir, dir) {
            (Some(m), None, Some(dir)) => {
                below_target(&m.target, found.working_dir.as_deref(), dir)
                    .await
                    .map_err(End::Refused)?
            }
            _ => None,
        };
        let image =
            admission::admit_image(caller, &self.policy, &admission, &found, &image_workdir)
                .map_err(End::Refused)?;
        // [build] run_own: an image named in the caller's namespace (or by ID, past
        // images.allow) runs only if urund's records say the caller built it.
        if admission.own {
            let owned = self.builds.owns(caller.uid, &found.id).unwrap_or_else(|e| {
                eprintln!("urund: {e:#}");
                false
            });
            admission::admit_own(&admission, owned).map_err(End::Refused)?;
        }
        rec.image_id = Some(image.id.clone());
        rec.runtime = Some(image.runtime.0.clone());
        Ok(Admitted {
            admission,
            image,
            _name: name,
        })
    }

    /// Step 3, the passed directory's facts ([`Facts::dir`]) and a `-w` below the
    /// mount target ([`Facts::workdir_below`]), found on the directory's own thread
    /// (see [`super::workdir`]; `Err`: it did not answer in time). Only for a mount the
    /// policy allows: a directory passed without a mount request, or with
    /// `mounts.workdir = false`, is refused by admission before its facts would count,
    /// and is never touched.
    async fn examine_dir(
        &self,
        req: &Request,
        dir: Option<&mut PassedDir>,
    ) -> Result<(Option<Result<DirFacts, String>>, admission::Below), Refusal> {
        let Some(dir) = dir else {
            return Ok((None, None));
        };
        let Some(m) = req.mount.as_ref().filter(|_| self.policy.mounts.workdir) else {
            return Ok((Some(Err("not examined".into())), None));
        };
        let facts = dir
            .ask(|fd| system::dir_facts(fd).map_err(|e| e.to_string()))
            .await?;
        let below = match facts {
            Ok(_) => below_target(&m.target, req.workdir.as_deref(), dir).await?,
            Err(_) => None,
        };
        Ok((Some(facts), below))
    }

    /// Step 3: the facts (groups, the caller's runs and names in progress, the passed
    /// directory's, from [`Helper::examine_dir`]), the admission, and on success the
    /// run's place in `max_concurrent` and its `--name`, taken under the locks the
    /// counts were read under.
    fn admit_request(
        &self,
        caller: &Caller,
        req: &Request,
        dir: Option<Result<DirFacts, String>>,
        workdir_below: admission::Below,
    ) -> Result<(Admission, Slot<'_>, Option<NameHold<'_>>), Refusal> {
        let mut facts = Facts {
            access_gid: self.group_gid,
            denied: self.denied_groups(),
            override_gids: self.override_gids.clone(),
            dir,
            workdir_below,
            group_names: group_names(caller),
            ..Facts::default()
        };
        let mut per_user = self.per_user.lock().unwrap();
        let mut names = self.names.lock().unwrap();
        let running = per_user.get(&caller.uid).copied().unwrap_or(0);
        let key = req.name.as_ref().map(|n| (caller.uid, n.clone()));
        facts.running = running;
        facts.name_in_use = key.as_ref().is_some_and(|k| names.contains(k));
        let admission = admission::admit_request(caller, &self.policy, req, &facts)?;
        per_user.insert(caller.uid, running + 1);
        let slot = Slot {
            map: &self.per_user,
            uid: caller.uid,
        };
        let name = key.map(|key| {
            names.insert(key.clone());
            NameHold {
                set: &self.names,
                key,
            }
        });
        Ok((admission, slot, name))
    }

    /// Step 5, preparation: the isolated network if this run uses it, then the run's
    /// directory with the generated identity files and the pinned working directory
    /// (the directory's thread closes urund's copy of it once it is pinned).
    async fn prepare(
        &self,
        whose: &Whose,
        admitted: &Admitted<'_>,
        mut dir: Option<PassedDir>,
    ) -> Result<(RunDir, Inside), End> {
        if admitted.admission.network == NetworkMode::Isolated {
            let _guard = self.network_lock.lock().await;
            if let Err(e) = self.engine.ensure_isolated_network(ISOLATED_NETWORK).await {
                return Err(End::Failed(daemon_error(e)));
            }
        }
        let prepared = self
            .prepare_inside(whose, &admitted.admission, &admitted.image, dir.as_mut())
            .await;
        prepared.map_err(|e| match e {
            Prepare::Refused(r) => End::Refused(r),
            Prepare::Failed(e) if crate::engine::is_unreachable(&e) => End::Failed(daemon_error(e)),
            Prepare::Failed(e) => End::Failed(RunError {
                status: status::REFUSED,
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
        let admission = &admitted.admission;
        let owner = self.janitor.owner();
        let labels = forced::labels(caller, request_id, owner, admission.name.as_deref());
        crate::engine::config::container_config(
            caller,
            &admission.limits,
            &admitted.image.id,
            req,
            labels,
            admission.network,
            inside,
            &admitted.image.runtime,
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
        rd: &mut ClientRead,
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

    /// What the request's image reference resolves to, locally; a missing image is
    /// pulled first if the admission allows it.
    pub(super) async fn find_image(
        &self,
        req: &Request,
        admission: &Admission,
        out: &Outbox,
    ) -> Result<ImageFacts, End> {
        let missing = |what: &str| {
            End::Failed(RunError {
                status: status::REFUSED,
                message: format!("Unable to find image '{}' locally{what}", req.image),
            })
        };
        match self.engine.inspect_image(&req.image).await {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => {}
            Err(e) => return Err(End::Failed(daemon_error(e))),
        }
        let reference = match &admission.pull {
            Pull::NotAsked => return Err(missing(" (--pull never)")),
            Pull::Refused(r) => return Err(End::Refused(r.clone())),
            Pull::Allowed(reference) => reference,
        };
        if let Err(e) = self.pull(reference, out).await {
            return Err(End::Failed(daemon_error(e)));
        }
        match self.engine.inspect_image(&req.image).await {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(missing(" after the pull")),
            Err(e) => Err(End::Failed(daemon_error(e))),
        }
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
        if let Err(r) = admission::admit_query(caller, &self.policy, self.group_gid) {
            return End::Refused(r);
        }
        let limits = admission::limits_for(caller, &self.policy, &self.override_gids);
        let member_of = |g: &str| {
            self.override_gids
                .get(g)
                .is_some_and(|gid| caller.in_group(*gid))
        };
        let runtime = self
            .policy
            .caller_runtime(caller.uid, caller.name.as_deref(), member_of);
        let in_build_group = self.policy.build.group.as_ref().is_some_and(|g| {
            system::group_gid(&g.0)
                .ok()
                .flatten()
                .is_some_and(|gid| caller.in_group(gid))
        });
        let text = describe(
            &self.policy,
            &self.policy_path,
            caller,
            &limits,
            runtime,
            in_build_group,
        );
        rec.bytes_out = text.len() as u64;
        if out.frame(Kind::Stdout, text.into_bytes()).await.is_err() {
            return End::ClientGone;
        }
        End::Exit(0)
    }
}

/// Closes a whole connection off the event loop ([`closer`]).
fn close_stream(stream: UnixStream, ticket: Ticket) {
    match stream.into_std() {
        Ok(s) => closer::close_connection(vec![s.into()], ticket),
        Err(e) => eprintln!("urund: cannot take a connection off the event loop: {e}"),
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
    Refused(Refusal),
    Failed(RunError),
    ClientGone,
    /// The Docker daemon stopped (or restarted) while the container ran.
    DaemonGone,
}

/// What the request asked for, on its audit record: the image, the command, the
/// `--name`, the entrypoint and `-w`, the environment's names (never the values: one
/// may be a secret).
fn record_request(rec: &mut Record, req: &Request) {
    rec.image = req.image.clone();
    rec.name = req.name.clone();
    rec.argv = req.command.clone();
    rec.entrypoint = req.entrypoint.clone();
    rec.workdir = req.workdir.clone();
    rec.env = req
        .env
        .iter()
        .map(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n).to_string())
        .collect();
}

/// A working directory `w` below the mount `target`, looked up in the passed
/// directory on its thread (see [`admission::Below`]; `Err`: it did not answer in
/// time); nothing is created.
async fn below_target(
    target: &str,
    w: Option<&str>,
    dir: &mut PassedDir,
) -> Result<admission::Below, Refusal> {
    let Some(w) = w else { return Ok(None) };
    let mounts::WorkdirPlace::Below(rel) = mounts::workdir_place(target, w) else {
        return Ok(None);
    };
    let at = rel.clone();
    let found = dir.ask(move |fd| system::existing_subdir(fd, &at)).await?;
    let found = found.map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => "does not exist".to_string(),
        Some(libc::ENOTDIR) => "is not a directory".to_string(),
        Some(libc::ELOOP) => "goes through a symlink".to_string(),
        Some(libc::EXDEV) => "crosses another mount".to_string(),
        _ => e.to_string(),
    });
    Ok(Some((rel, found)))
}

/// The names of the caller's groups in the user database (for the group file and the
/// denied groups), looked up now.
fn group_names(caller: &Caller) -> HashMap<u32, String> {
    std::iter::once(caller.gid)
        .chain(caller.groups.iter().copied())
        .filter_map(|g| system::group_name(g).map(|n| (g, n)))
        .collect()
}

/// Everything admission decided about one run: what the later steps use, never
/// re-derived from the request.
pub(super) struct Admitted<'a> {
    /// The terms of the run: limits, network, mount, identity, name.
    pub(super) admission: Admission,
    /// The image, resolved to its ID and judged on what Docker found.
    pub(super) image: AdmittedImage,
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
        End::Refused(r) => {
            rec.decision = "refused";
            rec.rule = Some(r.rule.id().to_string());
            error(rec, status::REFUSED, &r.message)
        }
        End::Failed(e) => error(rec, e.status, &e.message),
        End::Timeout(limit) => {
            rec.decision = "allowed";
            rec.rule = Some(Rule::MaxRuntime.id().into());
            let msg = format!(
                "container killed after {limit} (policy limits.max_runtime); exit status {}",
                status::MAX_RUNTIME
            );
            error(rec, status::MAX_RUNTIME, &msg)
        }
        End::DaemonGone => {
            rec.rule = Some(Rule::Docker.id().into());
            error(rec, status::REFUSED, DAEMON_GONE)
        }
        End::ClientGone => {
            rec.decision = "allowed";
            rec.message = Some("client went away; container removed".into());
            // A client that only shut down its sending side still reads this.
            let msg = "connection closed by urun, so the container was killed";
            (Kind::Error, wire::encode_error(status::KILLED, msg))
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

/// A failed daemon call as the user's one line ([`status::REFUSED`]). A daemon that does not
/// answer gets the same clear line whatever urund was doing; the detail goes to
/// urund's log.
pub(super) fn daemon_error(e: anyhow::Error) -> RunError {
    if crate::engine::is_unreachable(&e) {
        eprintln!("urund: {e:#}");
        return RunError {
            status: status::REFUSED,
            message: crate::engine::NOT_ANSWERING.into(),
        };
    }
    RunError {
        status: status::REFUSED,
        message: format!("docker daemon: {e:#}"),
    }
}

/// What a client is told when the daemon stopped while its container ran.
pub(super) const DAEMON_GONE: &str =
    "the Docker daemon stopped during the run; urund removes the container once the daemon is back";

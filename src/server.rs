//! urund: accepts connections on the urun socket and runs one container per request.
//!
//! The handler for one connection, [`Helper::serve`], is the security argument in order:
//!   1. who: the caller's identity from the kernel (`SO_PEERCRED`), before any byte;
//!   2. what: one bounded, strictly parsed request (or a `--policy` query, answered
//!      from the same identity and policy), and the working directory's descriptor if
//!      the client passed one (SCM_RIGHTS, read with the request's first bytes);
//!   3. may they: the pure policy judge (access, the gid they would run with, image
//!      patterns), then the same for the passed directory (from `fstat`, `fstatvfs`
//!      and its current path, never from a path in the request), the caller's
//!      effective limits (override tables), one more run (`max_concurrent`), their
//!      `--name` not in use by another of their runs;
//!   4. which image: resolved to an ID at admission; pulled first only if the judge
//!      allows the pull (`[pull]`), with progress frames to the client; judged again
//!      on what Docker found (its names, its `VOLUME`s);
//!   5. how: the run's root-only directory gets the generated passwd/group and the
//!      pinned working directory (every restriction of its mount kept); the
//!      forced-settings table builds the whole container configuration;
//!   6. run: create, attach, start, relay, wait (killed at `max_runtime`), remove —
//!      and remove on every other path too (client gone, bad frame, helper shutdown);
//!      a removal that fails is retried by the [`Janitor`] until it succeeds;
//!   7. record: one audit line (stderr, file, syslog) when the connection ends, and
//!      one `admitted` line as soon as the container exists (bounded and rate-limited
//!      by [`audit`]).
//!
//! Start-up ([`run`]) touches nothing before it holds the socket directory's lock, and
//! then cleans up only what it can prove it made (see [`crate::instance`]).

use crate::audit::{self, Record};
use crate::engine::{Attached, Engine, Output, PullEvent, RunError};
use crate::forced::{self, Inside, WorkMount};
use crate::identity;
use crate::image::{ImageFacts, Reference};
use crate::instance::{self, Lock, Owner, RuntimeDir};
use crate::janitor::{Janitor, Removal, Whose};
use crate::judge::{
    self, judge, judge_access, judge_concurrency, judge_dir, judge_pull, judge_resolved, Decision,
};
use crate::policy::{Limits, NetworkMode, Policy, PullMode, ISOLATED_NETWORK};
use crate::protocol::{self, Kind, Progress, ProtocolError, Query, Request, Signal, WinSize};
use crate::system::{self, Caller};
use anyhow::{Context, Result};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection is drained after its last frame (see [`linger`]).
const LINGER: Duration = Duration::from_secs(1);
/// How often a client that is not sending anything is checked for having gone away
/// while its container's stdin is full.
const HANGUP_POLL: Duration = Duration::from_millis(200);
/// Exit status of a run killed because it exceeded `limits.max_runtime` (as GNU
/// `timeout` has it).
pub const EXIT_MAX_RUNTIME: u8 = 124;
/// Smallest interval between two byte-count progress frames of one pull.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// How long a TTY container may keep running after its terminal output ended (docker's
/// detach keys, ctrl-p ctrl-q, end the attach): urun has no detach, so it is then killed.
const DETACH_GRACE: Duration = Duration::from_secs(2);

pub struct Options {
    pub socket: PathBuf,
    pub policy: PathBuf,
    pub docker_host: String,
    /// Where the installation's secret lives (survives reboots, as exited containers do).
    pub state_dir: PathBuf,
    /// The listening socket systemd passed (socket activation), if any: then urund
    /// checks it instead of creating `socket`, and leaves it in place on exit.
    pub activated: Option<std::os::unix::net::UnixListener>,
}

/// State shared by all connections.
pub struct Helper {
    engine: Engine,
    policy: Policy,
    policy_path: PathBuf,
    group_gid: u32,
    /// gids of the groups named by `[group.NAME]` override tables (those that exist).
    override_gids: HashMap<String, u32>,
    audit: Arc<audit::Sink>,
    /// Runs in progress per uid (`limits.max_concurrent`).
    per_user: Mutex<HashMap<u32, u32>>,
    /// `--name`s of runs in progress, per uid.
    names: Mutex<std::collections::HashSet<(u32, String)>>,
    /// Serialises checking/creating the isolated network (Docker allows two networks
    /// of one name if two creations race).
    network_lock: tokio::sync::Mutex<()>,
    /// Removals retried until they succeed; the reconcile pass; this helper's labels.
    janitor: Janitor,
    /// Containers of runs in progress: request id → container id and whose it is.
    runs: Mutex<HashMap<String, (String, Whose)>>,
    /// Root-only directory of per-run files and pinned mounts (`<socket dir>/run`),
    /// created and marked by urund.
    runtime: RuntimeDir,
    /// An image's identity files by image ID (an ID's content never changes).
    image_files: Mutex<HashMap<String, Arc<ImageFiles>>>,
    counter: AtomicU64,
    boot: u64,
}

/// Runs the daemon until SIGTERM or SIGINT.
///
/// Start-up order, each step before the next: policy and audit log (nothing touched);
/// the exclusive lock of the socket's directory, and a live socket refused — before
/// any clean-up, so a second urund leaves the first one's containers and mounts alone;
/// the daemon; the secret; the runtime directory (refused unless urund made it);
/// then clean-up of what the previous urund left (containers proven ours, per-run
/// directories by name); then the socket.
pub async fn run(opts: Options) -> Result<()> {
    system::private_umask();
    let policy = Policy::load(&opts.policy)?;
    let group = policy.access.group.0.clone();
    let group_gid = system::group_gid(&group)
        .with_context(|| format!("looking up group {group:?}"))?
        .with_context(|| {
            format!(
                "group {group:?} (policy access.group) does not exist: create it \
                 (groupadd --system {group}) or name another"
            )
        })?;
    let mut override_gids = HashMap::new();
    for g in policy.group.keys() {
        match system::group_gid(&g.0) {
            Ok(Some(gid)) => {
                override_gids.insert(g.0.clone(), gid);
            }
            _ => eprintln!(
                "urund: warning: group {:?} of policy table [group.{}] does not exist; \
                 its limits apply to nobody",
                g.0, g.0
            ),
        }
    }
    let audit = Arc::new(audit::Sink::open(&policy.audit).context("opening the audit log")?);
    let activated = opts.activated.is_some();
    // Only one urund per socket directory, and none on a live socket: decided before
    // anything is cleaned up.
    let dir = system::socket_dir(&opts.socket, !activated)?;
    let lock = Lock::acquire(&dir)?;
    if !activated && std::os::unix::net::UnixStream::connect(&opts.socket).is_ok() {
        anyhow::bail!(
            "socket {}: another urund is already listening there; nothing was cleaned up",
            opts.socket.display()
        );
    }
    let engine = Engine::connect(&opts.docker_host).await?;
    if policy.network.mode == NetworkMode::Isolated {
        engine
            .ensure_isolated_network(ISOLATED_NETWORK)
            .await
            .context("policy network.mode = \"isolated\"")?;
    }
    let owner = Owner {
        helper: opts.socket.display().to_string(),
        secret: instance::load_or_create_secret(&opts.state_dir)?,
    };
    let runtime = RuntimeDir::open(&dir)?;
    let janitor = Janitor::new(engine.clone(), owner, audit.clone());
    let helper = Arc::new(Helper {
        engine,
        policy,
        policy_path: opts.policy.clone(),
        group_gid,
        override_gids,
        audit,
        per_user: Mutex::new(HashMap::new()),
        names: Mutex::new(std::collections::HashSet::new()),
        network_lock: tokio::sync::Mutex::new(()),
        janitor,
        runs: Mutex::new(HashMap::new()),
        runtime,
        image_files: Mutex::new(HashMap::new()),
        counter: AtomicU64::new(0),
        boot: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    });
    let result = helper
        .clone()
        .serve_until_stopped(opts.socket.clone(), opts.activated)
        .await;
    if let Err(e) = helper.runtime.remove() {
        eprintln!("urund: {e:#}");
    }
    drop(lock);
    if result.is_ok() {
        eprintln!("urund: stopped");
    }
    result
}

impl Helper {
    /// Cleans up after a previous urund, binds (or checks) the socket, serves until
    /// SIGTERM/SIGINT, then removes what is still running.
    async fn serve_until_stopped(
        self: Arc<Self>,
        socket: PathBuf,
        activated: Option<std::os::unix::net::UnixListener>,
    ) -> Result<()> {
        // Leftovers of a urund that died: its containers (proven by the secret label),
        // then its pinned mounts and per-run files.
        let reaped = match self.janitor.reconcile().await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("urund: clean-up at start: {e:#}; retrying in the background");
                self.janitor.reconcile_soon();
                0
            }
        };
        self.clean_runtime();
        let from_systemd = activated.is_some();
        let std_listener = match activated {
            // systemd made the socket (SocketMode=, SocketGroup=): check it, change nothing.
            Some(l) => {
                system::check_inherited_socket(&l, &socket, self.group_gid)?;
                l
            }
            None => system::bind_socket(&socket, self.group_gid)?,
        };
        std_listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(std_listener)?;
        let background = tokio::spawn(self.janitor.clone().run());
        eprintln!(
            "urund: listening on {}{} (group {}, docker API {}, {reaped} leftover container(s) removed)",
            socket.display(),
            if from_systemd { " from systemd" } else { "" },
            self.policy.access.group.0,
            self.engine.api_version()
        );
        let result = self.clone().accept_loop(listener).await;
        self.shutdown().await;
        background.abort();
        // A socket from systemd stays: systemd owns it and keeps queueing connections.
        if !from_systemd {
            let _ = std::fs::remove_file(&socket);
        }
        result
    }

    async fn accept_loop(self: Arc<Self>, listener: UnixListener) -> Result<()> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut flush = tokio::time::interval(audit::FLUSH_EVERY);
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => { tokio::spawn(self.clone().serve(stream)); }
                    // Out of descriptors and the like: keep serving the others.
                    Err(e) => {
                        eprintln!("urund: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = hup.recv() => match self.audit.reopen() {
                    Ok(()) => eprintln!("urund: SIGHUP: audit log reopened"),
                    Err(e) => eprintln!("urund: SIGHUP: {e}; still writing to the old audit file"),
                },
                // Summaries of audit records held back by the rate limit.
                _ = flush.tick() => self.audit.flush(false),
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
            }
        }
    }

    /// On shutdown no container may outlive its client: remove every tracked one
    /// (retrying a while if the daemon does not answer), then every pinned mount and
    /// per-run file.
    async fn shutdown(&self) {
        let runs: Vec<(String, Whose)> = self.runs.lock().unwrap().values().cloned().collect();
        for (id, whose) in runs {
            self.janitor.remove_container(&id, &whose).await;
        }
        let left = self.janitor.drain(SHUTDOWN_DRAIN).await;
        if left > 0 {
            eprintln!(
                "urund: {left} removal(s) still failing at shutdown; the next start takes them over"
            );
        }
        self.clean_runtime();
        self.audit.flush(true);
    }

    /// Unmounts and removes the per-run directories under the runtime directory,
    /// recognised by urund's own name format (never recursively; a failure is queued
    /// for retry). Anything else there is left alone and reported.
    fn clean_runtime(&self) {
        let (runs, other) = match self.runtime.leftovers() {
            Ok(x) => x,
            Err(e) => {
                eprintln!("urund: reading {}: {e}", self.runtime.path.display());
                return;
            }
        };
        for path in runs {
            let whose = Whose {
                request: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                ..Default::default()
            };
            self.janitor
                .remove_run_dir(path, RunDir::FILES, RunDir::WORK, &whose);
        }
        for p in other {
            eprintln!(
                "urund: {} is not a run directory urund made: left alone",
                p.display()
            );
        }
    }

    /// The image's `/etc/passwd`, `/etc/group` and `/etc/shells`, read once per image
    /// ID without running it.
    /// The probe container is labelled like the run (`whose`), which is tracked, and
    /// removed through the janitor.
    async fn image_files(&self, image_id: &str, whose: &Whose) -> anyhow::Result<Arc<ImageFiles>> {
        if let Some(f) = self.image_files.lock().unwrap().get(image_id) {
            return Ok(f.clone());
        }
        let labels = self.janitor.owner().labels(&whose.request);
        let probe = forced::probe_config(image_id, labels);
        let id = self
            .engine
            .create(probe)
            .await
            .context("creating the probe container")?;
        let got = self
            .engine
            .read_files(&id, &["/etc/passwd", "/etc/group", "/etc/shells"])
            .await;
        self.janitor.remove_container(&id, whose).await;
        let got = got?;
        let text = |i: usize| {
            got.get(i)
                .cloned()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let files = Arc::new(ImageFiles {
            passwd: text(0),
            group: text(1),
            shells: text(2),
        });
        let mut cache = self.image_files.lock().unwrap();
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(image_id.to_string(), files.clone());
        Ok(files)
    }

    /// Step 5's preparation: the run's directory with the generated identity files
    /// and, if asked, the pinned working directory; and the supplementary groups.
    async fn prepare_inside(
        &self,
        caller: &Caller,
        whose: &Whose,
        found: &ImageFacts,
        req: &Request,
        dir: Option<&OwnedFd>,
        denied: &identity::DeniedGroups,
    ) -> anyhow::Result<(RunDir, Inside)> {
        let files = self.image_files(&found.id, whose).await?;
        let run = RunDir::create(&self.runtime, whose, self.janitor.clone())?;
        let groups = identity::supplementary(
            self.policy.identity.groups,
            caller.gid,
            &caller.groups,
            denied,
            system::group_name,
        );
        let safe = |n: Option<String>| n.filter(|n| identity::safe_name(n));
        let name = safe(caller.name.clone());
        let primary = safe(caller.group.clone());
        let extra: Vec<(u32, String)> = groups
            .iter()
            .filter_map(|&g| safe(system::group_name(g)).map(|n| (g, n)))
            .collect();
        let extra_ref: Vec<(u32, &str)> = extra.iter().map(|(g, n)| (*g, n.as_str())).collect();
        let home = forced::home_dir(caller);
        let shell = identity::shell(
            system::user_shell(caller.uid).as_deref(),
            &files.shells,
            &files.passwd,
        );
        let me = identity::Me {
            uid: caller.uid,
            gid: caller.gid,
            name: name.as_deref(),
            home: &home,
            shell: &shell,
        };
        let passwd = run.write("passwd", &identity::passwd(&files.passwd, &me))?;
        let group = run.write(
            "group",
            &identity::group(
                &files.group,
                primary.as_deref().map(|n| (caller.gid, n)),
                &extra_ref,
                name.as_deref(),
            ),
        )?;
        let work = match (&req.mount, dir) {
            (Some(m), Some(fd)) => {
                let mp = run.path.join(RunDir::WORK);
                system::pin_dir(fd.as_fd(), &mp, m.read_only)?;
                Some(WorkMount {
                    source: mp,
                    target: m.target.clone(),
                })
            }
            _ => None,
        };
        let inside = Inside {
            passwd: Some(passwd),
            group: Some(group),
            groups,
            work,
            // Judged already (judge_resolved); checked again rather than trusted.
            volumes: crate::image::volume_paths(&found.volumes).map_err(anyhow::Error::msg)?,
        };
        Ok((run, inside))
    }

    /// The groups never given to a container (see [`identity::DeniedGroups`]), their
    /// gids looked up now: a group created after urund started counts too.
    fn denied_groups(&self) -> identity::DeniedGroups {
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

    fn request_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        instance::request_id(self.boot, std::process::id(), n)
    }

    /// One connection, start to end. See the module comment.
    async fn serve(self: Arc<Self>, stream: UnixStream) {
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
        let (mut rd, mut wr) = stream.into_split();
        let end = self
            .admit_and_run(&caller, &mut rec, &mut rd, &mut wr)
            .await;
        let frame = match &end {
            End::Exit(s) => {
                rec.decision = "allowed";
                rec.status = Some(*s);
                Some((Kind::Exit, protocol::encode_exit(*s).to_vec()))
            }
            End::Refused(rule, msg) => {
                rec.decision = "refused";
                rec.rule = Some(rule.to_string());
                rec.message = Some(msg.clone());
                rec.status = Some(125);
                Some((Kind::Error, protocol::encode_error(125, msg)))
            }
            End::Failed(e) => {
                rec.message = Some(e.message.clone());
                rec.status = Some(e.status);
                Some((Kind::Error, protocol::encode_error(e.status, &e.message)))
            }
            End::Timeout(limit) => {
                rec.decision = "allowed";
                rec.rule = Some("limits.max_runtime".into());
                let msg = format!(
                    "container killed after {limit} (policy limits.max_runtime); exit status {EXIT_MAX_RUNTIME}"
                );
                rec.message = Some(msg.clone());
                rec.status = Some(EXIT_MAX_RUNTIME);
                Some((Kind::Error, protocol::encode_error(EXIT_MAX_RUNTIME, &msg)))
            }
            End::DaemonGone => {
                rec.rule = Some("docker".into());
                rec.message = Some(DAEMON_GONE.into());
                rec.status = Some(125);
                Some((Kind::Error, protocol::encode_error(125, DAEMON_GONE)))
            }
            End::ClientGone => {
                rec.decision = "allowed";
                rec.message = Some("client went away; container removed".into());
                // A client that only shut down its sending side still reads this.
                let msg = "connection closed by urun, so the container was killed";
                Some((Kind::Error, protocol::encode_error(137, msg)))
            }
        };
        if let Some((kind, payload)) = frame {
            let _ = send(&mut wr, kind, &payload).await;
        }
        let _ = wr.shutdown().await;
        linger(&mut rd).await;
        rec.duration_ms = started.elapsed().as_millis() as u64;
        self.audit.write(&rec);
    }

    /// Steps 2 to 6. Returns how the connection ends.
    async fn admit_and_run(
        &self,
        caller: &Caller,
        rec: &mut Record,
        rd: &mut OwnedReadHalf,
        wr: &mut OwnedWriteHalf,
    ) -> End {
        // 2. What: one bounded request and the directory passed with it (or a
        //    question about the policy).
        let (req, dir) = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(rd)).await {
            Ok(Ok(First::Run(r, dir))) => (*r, dir),
            Ok(Ok(First::Query)) => return self.answer_query(caller, rec, wr).await,
            Ok(Err(e)) => return End::Refused("protocol", format!("bad request: {e}")),
            Err(_) => return End::Refused("protocol", "no request within 10 seconds".into()),
        };
        rec.image = req.image.clone();
        rec.argv = req.command.clone();
        // 3. May they, with which limits, and one more run?
        let denied = self.denied_groups();
        if let Decision::Refuse(r) = judge(caller, &self.policy, self.group_gid, &denied, &req) {
            return End::Refused(r.rule, r.message);
        }
        let limits = self.limits_for(caller);
        let _slot = match self.take_slot(caller.uid, &limits) {
            Ok(s) => s,
            Err(refused) => return refused,
        };
        rec.name = req.name.clone();
        let _name = match self.take_name(caller.uid, req.name.as_deref()) {
            Ok(n) => n,
            Err(refused) => return refused,
        };
        match (&req.mount, &dir) {
            (Some(m), Some(fd)) => {
                let facts = match system::dir_facts(fd.as_fd()) {
                    Ok(f) => f,
                    Err(e) => {
                        return End::Refused("mounts.workdir", format!("passed directory: {e}"))
                    }
                };
                rec.message = facts
                    .path
                    .as_ref()
                    .map(|p| format!("workdir {}", p.display()));
                if let Decision::Refuse(r) = judge_dir(caller, &self.policy, &facts, m.read_only) {
                    return End::Refused(r.rule, r.message);
                }
                test_pause().await;
            }
            (None, None) => {}
            (Some(_), None) => {
                return End::Refused(
                    "protocol",
                    "a mount was requested without passing the directory".into(),
                )
            }
            (None, Some(_)) => {
                return End::Refused(
                    "protocol",
                    "a directory was passed without a mount request".into(),
                )
            }
        }
        // 4. Which image: exactly this ID, whatever the tag points to later, and only
        //    if what Docker found carries the name that was judged.
        let found = match self.find_image(&req, wr).await {
            Ok(f) => f,
            Err(end) => return end,
        };
        if let Decision::Refuse(r) = judge_resolved(&self.policy, &req, &found) {
            return End::Refused(r.rule, r.message);
        }
        let image_id = found.id.clone();
        rec.image_id = Some(image_id.clone());
        // 5. How: this run's network, identity files and pinned directory, the forced
        //    settings. The policy's network, or none if the user asked for less (the
        //    judge refused anything else; the fallback is the safe side).
        let network = match &req.network {
            Some(asked) => judge::network_mode(&self.policy, asked).unwrap_or(NetworkMode::None),
            None => self.policy.network.mode,
        };
        if network == NetworkMode::Isolated {
            let _guard = self.network_lock.lock().await;
            if let Err(e) = self.engine.ensure_isolated_network(ISOLATED_NETWORK).await {
                return End::Failed(daemon_error(e));
            }
        }
        // From here on containers exist: the run is tracked, so the reconcile pass
        // leaves them to it, and everything it makes is removed through the janitor.
        let _live = self.janitor.track(&rec.request);
        let whose = Whose {
            request: rec.request.clone(),
            uid: caller.uid,
            user: caller.display_name(),
        };
        let (_run, inside) = match self
            .prepare_inside(caller, &whose, &found, &req, dir.as_ref(), &denied)
            .await
        {
            Ok(x) => x,
            Err(e) if crate::engine::is_unreachable(&e) => return End::Failed(daemon_error(e)),
            Err(e) => {
                return End::Failed(RunError {
                    status: 125,
                    message: format!("preparing the container: {e:#}"),
                })
            }
        };
        // The descriptor is not needed once the directory is pinned.
        drop(dir);
        let labels = forced::labels(
            caller,
            &rec.request,
            self.janitor.owner(),
            req.name.as_deref(),
        );
        let body =
            forced::container_config(caller, &limits, &image_id, &req, labels, network, &inside);
        // 6. Run, and remove whatever happens.
        let id = match self.engine.create(body).await {
            Ok(id) => id,
            Err(e) => return End::Failed(daemon_error(e)),
        };
        rec.container = Some(id.clone());
        // On record before it starts: a run in flight when urund dies is not lost.
        self.audit.write(&rec.admitted(&limits));
        self.runs
            .lock()
            .unwrap()
            .insert(rec.request.clone(), (id.clone(), whose.clone()));
        let max_runtime = Duration::from_secs(limits.max_runtime.0);
        let end = self.relay(&id, &req, rd, wr, rec, max_runtime).await;
        let end = match end {
            End::Timeout(_) => End::Timeout(limits.max_runtime),
            e => e,
        };
        let removal = self.janitor.remove_container(&id, &whose).await;
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

    /// The caller's effective limits: the policy's override tables, never the request.
    fn limits_for(&self, caller: &Caller) -> Limits {
        self.policy
            .effective_limits(caller.uid, caller.name.as_deref(), |g| {
                self.override_gids
                    .get(g)
                    .is_some_and(|gid| caller.in_group(*gid))
            })
    }

    /// Counts one more run for `uid`, or refuses it (`limits.max_concurrent`). The
    /// count drops when the returned slot does.
    fn take_slot(&self, uid: u32, limits: &Limits) -> Result<Slot<'_>, End> {
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
    async fn find_image(&self, req: &Request, wr: &mut OwnedWriteHalf) -> Result<ImageFacts, End> {
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
        if let Err(e) = self.pull(&reference, wr).await {
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
    fn take_name(&self, uid: u32, name: Option<&str>) -> Result<Option<NameHold<'_>>, End> {
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

    /// Pulls a missing image (the judge allowed it), relaying progress to the client.
    async fn pull(&self, image: &Reference, wr: &mut OwnedWriteHalf) -> Result<()> {
        let reference = image.familiar();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PullEvent>();
        let pull = self.engine.pull(image, move |ev| {
            let _ = tx.send(ev);
        });
        tokio::pin!(pull);
        let mut last: Option<Instant> = None;
        let mut client_ok = true;
        let mut forward = |ev: PullEvent| {
            // Byte counts are throttled; status changes always go through.
            let counting = ev.current.is_some() && ev.status != "Download complete";
            if counting && last.is_some_and(|t| t.elapsed() < PROGRESS_INTERVAL) {
                return None;
            }
            if counting {
                last = Some(Instant::now());
            }
            let p = Progress {
                image: reference.clone(),
                id: ev.id,
                status: ev.status,
                current: ev.current,
                total: ev.total,
            };
            Some(serde_json::to_vec(&p).expect("Progress serialises"))
        };
        let result = loop {
            tokio::select! {
                r = &mut pull => break r,
                Some(ev) = rx.recv() => {
                    if let Some(frame) = forward(ev) {
                        if client_ok && send(wr, Kind::Progress, &frame).await.is_err() {
                            client_ok = false;
                        }
                    }
                }
            }
        };
        while let Ok(ev) = rx.try_recv() {
            if let Some(frame) = forward(ev) {
                if client_ok && send(wr, Kind::Progress, &frame).await.is_err() {
                    client_ok = false;
                }
            }
        }
        result
    }

    /// `urun --policy`: the caller's effective policy, computed here from the
    /// kernel's identity, as text.
    async fn answer_query(
        &self,
        caller: &Caller,
        rec: &mut Record,
        wr: &mut OwnedWriteHalf,
    ) -> End {
        rec.argv = vec!["--policy".into()];
        if let Decision::Refuse(r) = judge_access(caller, &self.policy, self.group_gid) {
            return End::Refused(r.rule, r.message);
        }
        let text = self.describe(caller);
        rec.bytes_out = text.len() as u64;
        if send(wr, Kind::Stdout, text.as_bytes()).await.is_err() {
            return End::ClientGone;
        }
        End::Exit(0)
    }

    fn describe(&self, caller: &Caller) -> String {
        let p = &self.policy;
        let l = self.limits_for(caller);
        let list = |v: &[crate::policy::Pattern]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter()
                    .map(|p| p.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let mut t = format!(
            "urun policy for {} (uid {}), from {}:\n\nYour limits:\n",
            caller.display_name(),
            caller.uid,
            self.policy_path.display()
        );
        for (k, v) in [
            ("memory", l.memory.to_string()),
            ("cpus", l.cpus.0.to_string()),
            ("pids", l.pids.0.to_string()),
            ("nofile", l.nofile.0.to_string()),
            ("nproc", l.nproc.0.to_string()),
            ("tmpfs_size", l.tmpfs_size.to_string()),
            (
                "max_runtime",
                format!(
                    "{} (then killed, exit status {EXIT_MAX_RUNTIME})",
                    l.max_runtime
                ),
            ),
            ("max_concurrent", l.max_concurrent.0.to_string()),
        ] {
            t.push_str(&format!("  {k} = {v}\n"));
        }
        t.push_str(&format!(
            "\nImages you may run: {}{}\n",
            list(&p.images.allow),
            if p.images.require_digest {
                " (pinned by digest only: NAME@sha256:...)"
            } else {
                ""
            }
        ));
        t.push_str(match p.images.volumes {
            crate::policy::ImageVolumes::Tmpfs => {
                "Image VOLUMEs: each an empty tmpfs of tmpfs_size (never a Docker volume)\n"
            }
            crate::policy::ImageVolumes::Refuse => "Images that declare a VOLUME: refused\n",
        });
        t.push_str(&match p.pull.mode {
            PullMode::Never => "Missing images: not pulled (ask your administrator)\n".to_string(),
            PullMode::Missing => {
                format!("Missing images: pulled from {}\n", list(&p.pull.registries))
            }
        });
        t.push_str(match p.network.mode {
            NetworkMode::None => "Network: none (only lo)\n",
            NetworkMode::Isolated => {
                "Network: isolated bridge urun-isolated (containers cannot reach each other)\n"
            }
        });
        t.push_str(&if p.mounts.workdir {
            format!(
                "Your working directory (-v \"$PWD\":DIR, --here): may be mounted below {} ({})\n",
                p.mounts.root_strings().join(", "),
                match p.mounts.access {
                    crate::policy::MountAccess::Owner => "directories you own",
                    crate::policy::MountAccess::Mode => "directories your permissions allow",
                }
            )
        } else {
            "Your working directory (-v, --here): not mounted (policy mounts.workdir = false)\n"
                .to_string()
        });
        t.push_str(match p.identity.groups {
            crate::policy::GroupsMode::Primary => "Supplementary groups: none\n",
            crate::policy::GroupsMode::Caller => {
                "Supplementary groups: yours, minus the denied ones (identity.deny_groups)\n"
            }
        });
        t.push_str(&format!(
            "Environment variables you may pass: {}\n\nAlways forced, whatever you ask:\n",
            list(&p.env.allow)
        ));
        for (k, v) in forced::FORCED {
            t.push_str(&format!("  {k}: {v}\n"));
        }
        t
    }

    /// Attaches, starts, and relays until the container exits or the client leaves.
    async fn relay(
        &self,
        id: &str,
        req: &Request,
        rd: &mut OwnedReadHalf,
        wr: &mut OwnedWriteHalf,
        rec: &mut Record,
        max_runtime: Duration,
    ) -> End {
        let Attached { mut output, input } =
            match self.engine.attach(id, req.interactive, req.tty).await {
                Ok(a) => a,
                Err(e) => return End::Failed(daemon_error(e)),
            };
        if let Err(e) = self.engine.start(id).await {
            return End::Failed(e);
        }
        if let (true, Some(size)) = (req.tty, req.size) {
            let _ = self.engine.resize(id, size).await;
        }
        let bytes_in = AtomicU64::new(0);
        let control = Control {
            engine: &self.engine,
            id,
            tty: req.tty,
        };
        let pump = pump_client(rd, input, &bytes_in, control);
        tokio::pin!(pump);
        let deadline = tokio::time::sleep(max_runtime);
        tokio::pin!(deadline);
        let end = loop {
            tokio::select! {
                _ = &mut deadline => {
                    if let Err(e) = self.engine.kill(id, "KILL").await {
                        eprintln!("urund: {e:#}");
                    }
                    break End::Timeout(crate::policy::Seconds(max_runtime.as_secs()));
                }
                item = output.next() => match item {
                    Some(Ok(first)) => {
                        // Whatever else is already decoded goes out in the same write.
                        let (batch, ended) = ready_outputs(first, &mut output);
                        let frames: Vec<(Kind, &[u8])> = batch.iter().map(Output::frame).collect();
                        rec.bytes_out += frames.iter().map(|(_, p)| p.len() as u64).sum::<u64>();
                        if send_frames(wr, &frames).await.is_err() { break End::ClientGone; }
                        if ended { break self.exit_status(id, req.tty).await; }
                    }
                    // The stream ends when the container's output closes: it has exited
                    // (or, with a TTY, was detached: then it is killed after a grace).
                    Some(Err(_)) | None => break self.exit_status(id, req.tty).await,
                },
                r = &mut pump => {
                    // The client left or broke the protocol while the container ran.
                    break match r {
                        PumpEnd::Bad(e) => End::Refused("protocol", format!("bad frame: {e}")),
                        PumpEnd::Gone => End::ClientGone,
                    };
                }
            }
        };
        rec.bytes_in = bytes_in.load(Ordering::Relaxed);
        end
    }

    /// The exit status once the output has ended. A TTY container still running after
    /// [`DETACH_GRACE`] was detached from, and is killed: nothing outlives its client.
    async fn exit_status(&self, id: &str, tty: bool) -> End {
        let wait = match tty {
            true => tokio::time::timeout(DETACH_GRACE, self.engine.wait(id)).await,
            false => Ok(self.engine.wait(id).await),
        };
        match wait {
            Ok(Ok(code)) => End::Exit(u8::try_from(code).unwrap_or(125)),
            Ok(Err(e)) if crate::engine::is_unreachable(&e) => End::DaemonGone,
            Ok(Err(e)) => End::Failed(daemon_error(e)),
            Err(_) => {
                let _ = self.engine.kill(id, Signal::Kill.name()).await;
                End::Failed(RunError {
                    status: 137,
                    message: "detached (ctrl-p ctrl-q): urun has no detach, so the \
                              container was killed"
                        .into(),
                })
            }
        }
    }
}

/// One run counted against `limits.max_concurrent` while it lives.
struct Slot<'a> {
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
struct NameHold<'a> {
    set: &'a Mutex<std::collections::HashSet<(u32, String)>>,
    key: (u32, String),
}

impl Drop for NameHold<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.key);
    }
}

/// The first frame of a connection.
enum First {
    /// A run, with the working directory's descriptor if one was passed.
    Run(Box<Request>, Option<OwnedFd>),
    Query,
}

/// How a connection ends.
enum End {
    Exit(u8),
    /// Killed for exceeding `limits.max_runtime`.
    Timeout(crate::policy::Seconds),
    Refused(&'static str, String),
    Failed(RunError),
    ClientGone,
    /// The Docker daemon stopped (or restarted) while the container ran.
    DaemonGone,
}

/// Why the client→container pump stopped.
enum PumpEnd {
    Gone,
    Bad(ProtocolError),
}

/// What the client may do to its running container besides writing to its stdin.
struct Control<'a> {
    engine: &'a Engine,
    id: &'a str,
    tty: bool,
}

impl Control<'_> {
    /// Delivers one of the listed signals (the payload was checked by [`Signal::decode`]).
    async fn signal(&self, sig: Signal) {
        if let Err(e) = self.engine.kill(self.id, sig.name()).await {
            eprintln!("urund: {e:#}");
        }
    }

    /// Follows the client's terminal size; meaningless without a TTY, so ignored then.
    async fn resize(&self, size: WinSize) {
        if self.tty && size.rows > 0 && size.cols > 0 {
            let _ = self.engine.resize(self.id, size).await;
        }
    }
}

/// Relays the client's frames to the container until the client goes away: stdin,
/// signals (only those [`Signal`] lists), terminal resizes. After `StdinEof` the
/// container's stdin is closed and the pump keeps watching the connection, so a
/// vanished client is noticed at once.
async fn pump_client(
    rd: &mut OwnedReadHalf,
    mut input: Pin<Box<dyn AsyncWrite + Send>>,
    bytes_in: &AtomicU64,
    control: Control<'_>,
) -> PumpEnd {
    let mut stdin_open = true;
    // Buffered: a frame's header and payload (and often several frames) in one read.
    let mut rd = tokio::io::BufReader::with_capacity(CLIENT_BUFFER, rd);
    loop {
        let (kind, payload) = match read_frame(&mut rd).await {
            Ok(Some(f)) => f,
            Ok(None) => return PumpEnd::Gone,
            Err(FrameError::Protocol(e)) => return PumpEnd::Bad(e),
            Err(FrameError::Io(_)) => return PumpEnd::Gone,
        };
        match kind {
            Kind::Stdin if stdin_open => {
                bytes_in.fetch_add(payload.len() as u64, Ordering::Relaxed);
                let write = input.write_all(&payload);
                tokio::pin!(write);
                // A container that does not read its stdin must not hide a client that
                // has gone away: watch for the hang-up while the write is blocked.
                loop {
                    tokio::select! {
                        r = &mut write => { if r.is_err() { stdin_open = false; } break; }
                        _ = tokio::time::sleep(HANGUP_POLL) => {
                            if peer_hung_up(rd.get_ref()) { return PumpEnd::Gone; }
                        }
                    }
                }
            }
            Kind::StdinEof if stdin_open => {
                let _ = input.shutdown().await;
                stdin_open = false;
            }
            // Stdin after EOF, or for a container whose stdin is closed: dropped.
            Kind::Stdin | Kind::StdinEof => {}
            Kind::Signal => match Signal::decode(&payload) {
                Ok(sig) => control.signal(sig).await,
                Err(e) => return PumpEnd::Bad(e),
            },
            Kind::Resize => match WinSize::decode(&payload) {
                Ok(size) => control.resize(size).await,
                Err(e) => return PumpEnd::Bad(e),
            },
            other => return PumpEnd::Bad(ProtocolError::UnexpectedKind(other)),
        }
    }
}

/// After the last frame: reads and drops what the client still sends, for at most
/// a second, so that closing does not reset the connection and destroy the final
/// frame before the client has read it.
async fn linger(rd: &mut OwnedReadHalf) {
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

/// The client closed its connection, or shut down its sending side: a client that
/// cannot get a signal through (urund is blocked writing to a container that does not
/// read its stdin) does that to have its container killed.
fn peer_hung_up(rd: &OwnedReadHalf) -> bool {
    let sock: &UnixStream = rd.as_ref();
    system::peer_done_writing(sock.as_fd())
}

enum FrameError {
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
async fn read_frame(
    r: &mut (impl AsyncRead + Unpin),
) -> Result<Option<(Kind, Vec<u8>)>, FrameError> {
    let mut h = [0u8; protocol::HEADER];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let (kind, len) = protocol::parse_header(h).map_err(FrameError::Protocol)?;
    if !kind.from_client() {
        return Err(FrameError::Protocol(ProtocolError::UnexpectedKind(kind)));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(FrameError::Io)?;
    Ok(Some((kind, payload)))
}

/// The first frame must be a request or a query. Its header is read with `recvmsg`,
/// so a directory descriptor sent with a request (SCM_RIGHTS) is received; at most
/// one is accepted, and none with a query. Descriptors sent with any later byte are
/// discarded by the kernel.
async fn read_request(rd: &mut OwnedReadHalf) -> Result<First, FrameError> {
    let mut h = [0u8; protocol::HEADER];
    let mut got = 0;
    let mut fds: Vec<OwnedFd> = Vec::new();
    {
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
                    if fds.len() > 1 {
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
    }
    let (kind, len) = protocol::parse_header(h).map_err(FrameError::Protocol)?;
    if !matches!(kind, Kind::Request | Kind::Query) || (kind == Kind::Query && !fds.is_empty()) {
        return Err(FrameError::Protocol(ProtocolError::UnexpectedKind(kind)));
    }
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await.map_err(FrameError::Io)?;
    match kind {
        Kind::Request => Request::decode(&payload)
            .map(|r| First::Run(Box::new(r), fds.pop()))
            .map_err(FrameError::Protocol),
        _ => Query::decode(&payload)
            .map(|_| First::Query)
            .map_err(FrameError::Protocol),
    }
}

/// Identity files an image ships (empty when absent).
struct ImageFiles {
    passwd: String,
    group: String,
    shells: String,
}

/// One run's root-only directory `<runtime>/<request id>/`: `passwd`, `group` (0644,
/// bind-mounted read-only) and `work` (the pinned working directory's mount point).
/// Dropping it unmounts and removes them, whatever way the run ended (retried by the
/// janitor until it succeeds).
struct RunDir {
    path: PathBuf,
    whose: Whose,
    janitor: Janitor,
}

impl RunDir {
    const FILES: &'static [&'static str] = &["passwd", "group"];
    const WORK: &'static str = "work";

    fn create(runtime: &RuntimeDir, whose: &Whose, janitor: Janitor) -> anyhow::Result<RunDir> {
        let path = runtime.run_dir(&whose.request);
        system::root_only_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        let run = RunDir {
            path,
            whose: whose.clone(),
            janitor,
        };
        system::root_only_dir(&run.path.join(Self::WORK))?;
        Ok(run)
    }

    fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let p = self.path.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        Ok(p)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        self.janitor
            .remove_run_dir(self.path.clone(), Self::FILES, Self::WORK, &self.whose);
    }
}

/// Test hook, debug builds only: `URUND_TEST_PAUSE_MS=N` makes urund wait N ms after
/// it has checked a passed directory and before it pins it, so the end-to-end tests
/// can swap the directory's path in that window. Release builds ignore it.
async fn test_pause() {
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

/// Read buffer for a client's frames once its run has started.
const CLIENT_BUFFER: usize = 256 * 1024;

/// Most frames sent in one write (two iovecs each, well under IOV_MAX).
const MAX_BATCH: usize = 64;

/// `first` and the outputs that are already decoded behind it, without waiting.
/// `true` if the stream ended (or failed) meanwhile: it must not be polled again.
fn ready_outputs(
    first: Output,
    output: &mut futures_util::stream::BoxStream<'static, std::io::Result<Output>>,
) -> (Vec<Output>, bool) {
    use futures_util::FutureExt;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match output.next().now_or_never() {
            Some(Some(Ok(o))) => batch.push(o),
            Some(Some(Err(_)) | None) => return (batch, true),
            None => break,
        }
    }
    (batch, false)
}

impl Output {
    fn frame(&self) -> (Kind, &[u8]) {
        match self {
            Output::Stdout(b) => (Kind::Stdout, b),
            Output::Stderr(b) => (Kind::Stderr, b),
        }
    }
}

/// Writes one frame (several for a payload over `MAX_FRAME`).
async fn send(wr: &mut OwnedWriteHalf, kind: Kind, payload: &[u8]) -> std::io::Result<()> {
    send_frames(wr, &[(kind, payload)]).await
}

/// Writes frames with as few system calls as possible: headers and payloads go out
/// in vectored writes, and payloads are not copied.
async fn send_frames(wr: &mut OwnedWriteHalf, frames: &[(Kind, &[u8])]) -> std::io::Result<()> {
    use std::io::IoSlice;
    let mut parts: Vec<([u8; protocol::HEADER], &[u8])> = Vec::with_capacity(frames.len());
    for (kind, payload) in frames {
        for chunk in payload.chunks(protocol::MAX_FRAME) {
            parts.push((protocol::header(*kind, chunk.len()), chunk));
        }
    }
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len() * 2);
    for (h, chunk) in &parts {
        slices.push(IoSlice::new(h));
        slices.push(IoSlice::new(chunk));
    }
    slices.retain(|s| !s.is_empty());
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        let n = wr.write_vectored(bufs).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// A failed daemon call as the user's one line (status 125). A daemon that does not
/// answer gets the same clear line whatever urund was doing; the detail goes to
/// urund's log.
fn daemon_error(e: anyhow::Error) -> RunError {
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
const DAEMON_GONE: &str =
    "the Docker daemon stopped during the run; urund removes the container once the daemon is back";

/// How long shutdown keeps retrying removals that fail (the daemon restarting).
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

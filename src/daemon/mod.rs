//! urund: accepts connections on the urun socket and runs one container per request.
//!
//! Before a connection is served at all, the accept loop counts it against the caps
//! of [`crate::daemon::connections`] by the uid the kernel reports, before any byte is read:
//! connections not running a container (waiting for their request or its answer),
//! per uid and in total, and all open connections against the descriptor limit minus
//! a reserve for Docker and clean-up.
//! One over a cap is refused at once with one error frame naming the cap.
//!
//! The handler for one connection, [`Helper::serve`], is the security argument in order:
//!   1. who: the caller's identity from the kernel (`SO_PEERCRED`), before any byte;
//!   2. what: one bounded, strictly parsed request (its first byte within 2 seconds,
//!      all of it within 10), or a `--policy` query, answered from the same identity
//!      and policy; and the working directory's descriptor if the client passed one
//!      (SCM_RIGHTS, read with the request's first bytes);
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
//!      a removal that fails is retried by the [`Janitor`] until it succeeds.
//!      Everything for the client goes through its [`Outbox`], a writer task with a
//!      bounded queue: a client that stops reading holds up only its own container's
//!      output, never the deadline, its frames (signals) or the hang-up check;
//!   7. record: one `admitted` audit line as soon as the container exists, and one
//!      when the run is over, written before the last frame is delivered, so a client
//!      that never reads again cannot hold it back (delivering what is left is
//!      bounded too); bounded and rate-limited by [`audit`].
//!
//! Start-up ([`run`]) touches nothing before it holds the socket directory's lock, and
//! then cleans up only what it can prove it made (see [`crate::daemon::instance`]).

pub mod audit;
pub mod check;
pub mod cli;
pub mod connections;
pub mod instance;
pub mod janitor;

use crate::daemon::janitor::{Janitor, Removal, Whose};
use crate::engine::{Attached, Engine, Output, PullEvent, RunError};
use crate::policy::forced::{self, Inside, WorkMount};
use crate::policy::identity;
use crate::policy::judge::{
    self, judge, judge_access, judge_concurrency, judge_dir, judge_pull, judge_resolved, Decision,
};
use crate::policy::reference::{ImageFacts, Reference};
use crate::policy::{Limits, NetworkMode, Policy, PullMode, ISOLATED_NETWORK};
use crate::system::{self, Caller};
use crate::wire::{self, Kind, Progress, ProtocolError, Query, Request, Signal, WinSize};
use anyhow::{Context, Result};
use audit::Record;
use futures_util::StreamExt;
use instance::{Lock, Owner, RuntimeDir};
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
/// How long a client may take to send the first byte of its request (urun sends it at
/// once): an idle connection holds a descriptor and counts against `[connections]`.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(2);
/// Once a run is over, how long delivering what is left for the client (queued
/// output, the final frame) may go without the client taking a byte.
const DELIVERY_STALL: Duration = Duration::from_secs(10);
/// Longest pause of the accept loop when accepting fails (out of descriptors).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
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
    /// Connections open, and those not running a container (see [`crate::daemon::connections`]).
    conns: Arc<Mutex<connections::Table>>,
    /// The open-files limit (soft, after raising it) and the most connections it
    /// leaves room for.
    nofile: u64,
    max_open: u32,
    /// A descriptor kept open to be closed when `accept` fails for lack of
    /// descriptors, so that one waiting client can still be told why.
    spare: Mutex<Option<std::fs::File>>,
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
    // Before anything is opened: every connection and run needs descriptors.
    let nofile = system::raise_nofile_limit().unwrap_or_else(|e| {
        eprintln!("urund: warning: cannot raise the open-files limit to its hard limit: {e}");
        system::nofile_limit().unwrap_or(1024)
    });
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
        conns: Arc::new(Mutex::new(connections::Table::default())),
        nofile,
        max_open: connections::budget(nofile),
        spare: Mutex::new(std::fs::File::open("/").ok()),
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
            "urund: listening on {}{} (group {}, docker API {}, {reaped} leftover container(s) removed, \
             open files {}: at most {} connections)",
            socket.display(),
            if from_systemd { " from systemd" } else { "" },
            self.policy.access.group.0,
            self.engine.api_version(),
            self.nofile,
            self.max_open
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
        let mut backoff = Duration::ZERO;
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => {
                        backoff = Duration::ZERO;
                        self.clone().take_connection(stream);
                    }
                    // Out of descriptors (the reserve should prevent it, but Docker's
                    // connections are not all counted): answer one waiting client with
                    // the spare descriptor, then pause, longer each time, instead of
                    // spinning; the running connections keep being served meanwhile.
                    Err(e) => {
                        eprintln!("urund: accept: {e}");
                        if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                            self.answer_with_spare(&listener);
                        }
                        backoff = (backoff * 2).clamp(Duration::from_millis(10), ACCEPT_BACKOFF_MAX);
                        tokio::time::sleep(backoff).await;
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

    /// Step 0: takes a new connection if the caps of [`crate::daemon::connections`] allow it
    /// (judged by the kernel's uid of the peer, before reading anything), else
    /// refuses it at once: one error frame naming the cap, then closed.
    fn take_connection(self: Arc<Self>, stream: UnixStream) {
        let Ok(peer) = system::peer_ids(stream.as_fd()) else {
            return;
        };
        let admitted = self.conns.lock().unwrap().admit(
            peer.uid,
            &self.policy.connections,
            self.max_open,
            self.nofile,
        );
        match admitted {
            Ok(()) => {
                let ticket = Ticket {
                    table: self.conns.clone(),
                    uid: peer.uid,
                    idle: true,
                };
                tokio::spawn(self.serve(stream, ticket));
            }
            Err(r) => self.refuse_at_once(&stream, &peer, r.rule, &r.message),
        }
    }

    /// `accept` failed for lack of descriptors: frees the spare one, takes one waiting
    /// client with it, tells it why, and takes the spare again.
    fn answer_with_spare(&self, listener: &UnixListener) {
        use futures_util::FutureExt;
        let mut spare = self.spare.lock().unwrap();
        drop(spare.take());
        if let Some(Ok((stream, _))) = listener.accept().now_or_never() {
            let msg = format!(
                "urund is out of open files (connections.descriptors: limit {}, \
                 LimitNOFILE= of urund.service); try again later",
                self.nofile
            );
            match system::peer_ids(stream.as_fd()) {
                Ok(peer) => self.refuse_at_once(&stream, &peer, "connections.descriptors", &msg),
                Err(_) => send_at_once(&stream, &msg),
            }
        }
        *spare = std::fs::File::open("/").ok();
    }

    /// Refuses a connection at `accept`: the error frame, and a `refused` audit record
    /// (rate-limited per uid like every record of a request that got no container, so
    /// a flood of connections is summed up, never written one by one). The peer is
    /// known by its ids alone: no user-database lookup at this rate.
    fn refuse_at_once(&self, stream: &UnixStream, peer: &Caller, rule: &str, message: &str) {
        send_at_once(stream, message);
        let mut rec = Record::new(&self.request_id(), peer);
        rec.decision = "refused";
        rec.rule = Some(rule.to_string());
        rec.message = Some(message.to_string());
        rec.status = Some(125);
        self.audit.write(&rec);
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
            volumes: crate::policy::reference::volume_paths(&found.volumes)
                .map_err(anyhow::Error::msg)?,
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
    async fn serve(self: Arc<Self>, stream: UnixStream, mut ticket: Ticket) {
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
        let frame = match &end {
            End::Exit(s) => {
                rec.decision = "allowed";
                rec.status = Some(*s);
                Some((Kind::Exit, wire::encode_exit(*s).to_vec()))
            }
            End::Refused(rule, msg) => {
                rec.decision = "refused";
                rec.rule = Some(rule.to_string());
                rec.message = Some(msg.clone());
                rec.status = Some(125);
                Some((Kind::Error, wire::encode_error(125, msg)))
            }
            End::Failed(e) => {
                rec.message = Some(e.message.clone());
                rec.status = Some(e.status);
                Some((Kind::Error, wire::encode_error(e.status, &e.message)))
            }
            End::Timeout(limit) => {
                rec.decision = "allowed";
                rec.rule = Some("limits.max_runtime".into());
                let msg = format!(
                    "container killed after {limit} (policy limits.max_runtime); exit status {EXIT_MAX_RUNTIME}"
                );
                rec.message = Some(msg.clone());
                rec.status = Some(EXIT_MAX_RUNTIME);
                Some((Kind::Error, wire::encode_error(EXIT_MAX_RUNTIME, &msg)))
            }
            End::DaemonGone => {
                rec.rule = Some("docker".into());
                rec.message = Some(DAEMON_GONE.into());
                rec.status = Some(125);
                Some((Kind::Error, wire::encode_error(125, DAEMON_GONE)))
            }
            End::ClientGone => {
                rec.decision = "allowed";
                rec.message = Some("client went away; container removed".into());
                // A client that only shut down its sending side still reads this.
                let msg = "connection closed by urun, so the container was killed";
                Some((Kind::Error, wire::encode_error(137, msg)))
            }
        };
        rec.duration_ms = started.elapsed().as_millis() as u64;
        self.audit.write(&rec);
        // Bounded, whatever the client does: see `Outbox::finish` and `linger`.
        out.finish(frame).await;
        linger(&mut rd).await;
        drop(slot);
    }

    /// Steps 2 to 6. Returns how the connection ends.
    async fn admit_and_run<'a>(
        &'a self,
        caller: &Caller,
        rec: &mut Record,
        rd: &mut OwnedReadHalf,
        out: &Outbox,
        ticket: &mut Ticket,
        slot: &mut Option<Slot<'a>>,
    ) -> End {
        // 2. What: one bounded request and the directory passed with it (or a
        //    question about the policy); its first byte soon, all of it in time.
        let first = async {
            if tokio::time::timeout(FIRST_BYTE_TIMEOUT, first_byte(rd))
                .await
                .is_err()
            {
                return Err(Late::FirstByte);
            }
            read_request(rd).await.map_err(Late::Bad)
        };
        let first = tokio::time::timeout(REQUEST_TIMEOUT, first).await;
        let (req, dir) = match first {
            Ok(Ok(First::Run(r, dir))) => (*r, dir),
            Ok(Ok(First::Query)) => return self.answer_query(caller, rec, out).await,
            Ok(Err(Late::Bad(e))) => return End::Refused("protocol", format!("bad request: {e}")),
            Ok(Err(Late::FirstByte)) => {
                return End::Refused("protocol", "no request within 2 seconds".into())
            }
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
        *slot = match self.take_slot(caller.uid, &limits) {
            Ok(s) => Some(s),
            Err(refused) => return refused,
        };
        // From here the connection counts against max_concurrent, not [connections].
        ticket.running();
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
        let found = match self.find_image(&req, out).await {
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
        let end = self.relay(&id, &req, rd, out, rec, max_runtime).await;
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
    async fn find_image(&self, req: &Request, out: &Outbox) -> Result<ImageFacts, End> {
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

    /// Pulls a missing image (the judge allowed it), relaying progress to the client:
    /// status changes in order, byte counts only while the client keeps up.
    async fn pull(&self, image: &Reference, out: &Outbox) -> Result<()> {
        let reference = image.familiar();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PullEvent>();
        let pull = self.engine.pull(image, move |ev| {
            let _ = tx.send(ev);
        });
        tokio::pin!(pull);
        let mut last: Option<Instant> = None;
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
            Some((
                counting,
                serde_json::to_vec(&p).expect("Progress serialises"),
            ))
        };
        // A byte count is dropped if the client is behind; a status change waits for
        // room, but not for a client that takes nothing: then progress stops.
        let mut reading = true;
        let result = loop {
            tokio::select! {
                r = &mut pull => break r,
                Some(ev) = rx.recv() => {
                    if let (true, Some((counting, frame))) = (reading, forward(ev)) {
                        reading = send_progress(out, counting, frame).await;
                    }
                }
            }
        };
        while let Ok(ev) = rx.try_recv() {
            if let (true, Some((counting, frame))) = (reading, forward(ev)) {
                reading = send_progress(out, counting, frame).await;
            }
        }
        result
    }

    /// `urun --policy`: the caller's effective policy, computed here from the
    /// kernel's identity, as text.
    async fn answer_query(&self, caller: &Caller, rec: &mut Record, out: &Outbox) -> End {
        rec.argv = vec!["--policy".into()];
        if let Decision::Refuse(r) = judge_access(caller, &self.policy, self.group_gid) {
            return End::Refused(r.rule, r.message);
        }
        let text = self.describe(caller);
        rec.bytes_out = text.len() as u64;
        if out.frame(Kind::Stdout, text.into_bytes()).await.is_err() {
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
    ///
    /// Four things run side by side, and none waits for another: the deadline, the
    /// client's frames ([`pump_client`]: stdin, signals, hang-up), the container's
    /// output on its way to the client's [`Outbox`] ([`forward_output`], which alone
    /// waits while the client does not read), and, once the output has ended, the wait
    /// for the exit status. So `max_runtime` and the client's signals take effect
    /// whatever the client reads. At the deadline, or when the client asks for SIGKILL,
    /// the attach connection is closed before the container is killed.
    async fn relay(
        &self,
        id: &str,
        req: &Request,
        rd: &mut OwnedReadHalf,
        out: &Outbox,
        rec: &mut Record,
        max_runtime: Duration,
    ) -> End {
        let Attached { output, input } =
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
        let bytes_out = AtomicU64::new(0);
        let deadline = tokio::time::sleep(max_runtime);
        tokio::pin!(deadline);
        let stop = {
            let control = Control {
                engine: &self.engine,
                id,
                tty: req.tty,
            };
            let pump = pump_client(rd, input, &bytes_in, control);
            tokio::pin!(pump);
            let forward = forward_output(output, out, &bytes_out);
            tokio::pin!(forward);
            let exit = self.exit_status(id, req.tty);
            tokio::pin!(exit);
            // The output has ended: wait for the exit status.
            let mut output_done = false;
            loop {
                tokio::select! {
                    _ = &mut deadline => break Stop::Kill,
                    r = &mut forward, if !output_done => match r {
                        // The stream ends when the container's output closes: it has
                        // exited (or, with a TTY, was detached: then it is killed after
                        // a grace).
                        Forwarded::Ended => output_done = true,
                        Forwarded::ClientGone => break Stop::End(End::ClientGone),
                    },
                    e = &mut exit, if output_done => break Stop::End(e),
                    r = &mut pump => break match r {
                        // The client left or broke the protocol while the container ran.
                        PumpEnd::Bad(e) => {
                            Stop::End(End::Refused("protocol", format!("bad frame: {e}")))
                        }
                        PumpEnd::Gone => Stop::End(End::ClientGone),
                        PumpEnd::Killed => Stop::Kill,
                    },
                }
            }
            // The attach connection closes here. Docker finishes a killed container
            // only once its output is taken, and a client that does not read would
            // otherwise hold that up.
        };
        rec.bytes_in = bytes_in.load(Ordering::Relaxed);
        rec.bytes_out = bytes_out.load(Ordering::Relaxed);
        if let Stop::End(end) = stop {
            return end;
        }
        // A kill that fails is not retried here: the removal that follows every run
        // (the janitor's, retried until it succeeds) forces the container down too.
        if let Err(e) = self.engine.kill(id, Signal::Kill.name()).await {
            eprintln!("urund: {e:#}");
        }
        if deadline.is_elapsed() {
            return End::Timeout(crate::policy::Seconds(max_runtime.as_secs()));
        }
        // The client's SIGKILL (its second Ctrl-C): the status Docker reports.
        tokio::select! {
            e = self.exit_status(id, false) => e,
            _ = &mut deadline => End::Timeout(crate::policy::Seconds(max_runtime.as_secs())),
        }
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
    /// The client asked for SIGKILL (its second Ctrl-C).
    Killed,
}

/// Why reading the client's request stopped early.
enum Late {
    /// Not even its first byte came within [`FIRST_BYTE_TIMEOUT`].
    FirstByte,
    Bad(FrameError),
}

/// One connection admitted by [`Helper::take_connection`], counted in the
/// [`connections::Table`]: as idle until [`Ticket::running`], as open until dropped.
struct Ticket {
    table: Arc<Mutex<connections::Table>>,
    uid: u32,
    idle: bool,
}

impl Ticket {
    /// The connection runs a container now (it has its `max_concurrent` slot).
    fn running(&mut self) {
        if std::mem::take(&mut self.idle) {
            self.table.lock().unwrap().not_idle(self.uid);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap();
        if self.idle {
            t.not_idle(self.uid);
        }
        t.closed();
    }
}

/// Why the relay stopped relaying.
enum Stop {
    End(End),
    /// The deadline passed, or the client asked for SIGKILL: the container is to be
    /// killed, after its attach connection is closed.
    Kill,
}

/// How forwarding the container's output ended.
enum Forwarded {
    /// The output stream ended (or failed): the container has closed it.
    Ended,
    ClientGone,
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
                // Delivered by the relay once the attach connection is closed.
                Ok(Signal::Kill) => return PumpEnd::Killed,
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
    let mut h = [0u8; wire::HEADER];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let (kind, len) = wire::parse_header(h).map_err(FrameError::Protocol)?;
    if !kind.from_client() {
        return Err(FrameError::Protocol(ProtocolError::UnexpectedKind(kind)));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(FrameError::Io)?;
    Ok(Some((kind, payload)))
}

/// Returns once the client has sent a byte (or closed, or failed): never on tokio's
/// readiness alone, which a fresh socket may report before anything came.
async fn first_byte(rd: &OwnedReadHalf) {
    let sock: &UnixStream = rd.as_ref();
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
/// so a directory descriptor sent with a request (SCM_RIGHTS) is received; at most
/// one is accepted, and none with a query. Descriptors sent with any later byte are
/// discarded by the kernel.
async fn read_request(rd: &mut OwnedReadHalf) -> Result<First, FrameError> {
    let mut h = [0u8; wire::HEADER];
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
    let (kind, len) = wire::parse_header(h).map_err(FrameError::Protocol)?;
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

/// Queues one progress frame of a pull: a byte count only if there is room now, a
/// status change waiting for room for up to [`DELIVERY_STALL`]. `false`: the client
/// takes nothing (or is gone), and gets no more progress.
async fn send_progress(out: &Outbox, counting: bool, frame: Vec<u8>) -> bool {
    if counting {
        out.try_frame(Kind::Progress, frame);
        return true;
    }
    let sent = tokio::time::timeout(DELIVERY_STALL, out.frame(Kind::Progress, frame)).await;
    matches!(sent, Ok(Ok(())))
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
/// Most output bytes taken into one batch (docker's frames are at most 32 KiB, a
/// TTY's chunks at most the attach buffer): bounds what a connection holds.
const BATCH_BYTES: usize = 1 << 20;

/// `first` and the outputs that are already decoded behind it, without waiting.
/// `true` if the stream ended (or failed) meanwhile: it must not be polled again.
fn ready_outputs(
    first: Output,
    output: &mut futures_util::stream::BoxStream<'static, std::io::Result<Output>>,
) -> (Vec<Output>, bool) {
    use futures_util::FutureExt;
    let mut bytes = first.frame().1.len();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH && bytes < BATCH_BYTES {
        match output.next().now_or_never() {
            Some(Some(Ok(o))) => {
                bytes += o.frame().1.len();
                batch.push(o);
            }
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

/// What a connection's [`Outbox`] writes: container output (framed on the way out,
/// payloads uncopied; the permit is its [`Outbox::turn`], given back once written) or
/// one frame urund made.
enum Out {
    Output {
        batch: Vec<Output>,
        _turn: tokio::sync::OwnedSemaphorePermit,
    },
    Frame(Kind, Vec<u8>),
}

/// The sending side of one connection: a task that owns the socket's write half and
/// writes, in order, what it is given through a bounded queue. A client that stops
/// reading (a pipe nobody drains, Ctrl-Z, SIGSTOP) stalls this task alone, and through
/// the full queue the reading of its own container's output: never the deadline, the
/// client's frames, the hang-up check or any other connection.
struct Outbox {
    tx: tokio::sync::mpsc::Sender<Out>,
    task: tokio::task::JoinHandle<()>,
    /// Bytes written so far, to tell a slow client from one that takes nothing.
    written: Arc<AtomicU64>,
    /// One permit: container output is read only once the last batch is written.
    turn: Arc<tokio::sync::Semaphore>,
}

/// Messages queued for the writer besides the one it is writing.
const OUTBOX_QUEUE: usize = 1;

impl Outbox {
    fn spawn(wr: OwnedWriteHalf) -> Outbox {
        let (tx, rx) = tokio::sync::mpsc::channel(OUTBOX_QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(write_out(wr, rx, written.clone()));
        let turn = Arc::new(tokio::sync::Semaphore::new(1));
        Outbox {
            tx,
            task,
            written,
            turn,
        }
    }

    /// Waits until the last batch of container output has been written (so at most
    /// one batch, [`MAX_BATCH`] frames and about [`BATCH_BYTES`], is held for a client
    /// that does not read, and what the container writes meanwhile goes out in one
    /// batch: bench/NOTES.md).
    async fn turn(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.turn
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Queues a batch of container output. `Err`: the client is gone (writing to it
    /// failed).
    async fn output(
        &self,
        batch: Vec<Output>,
        turn: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(), ()> {
        let m = Out::Output { batch, _turn: turn };
        self.tx.send(m).await.map_err(|_| ())
    }

    /// Queues one frame, waiting while the queue is full. `Err`: the client is gone.
    async fn frame(&self, kind: Kind, payload: Vec<u8>) -> Result<(), ()> {
        self.tx
            .send(Out::Frame(kind, payload))
            .await
            .map_err(|_| ())
    }

    /// Queues one frame if there is room now; drops it otherwise.
    fn try_frame(&self, kind: Kind, payload: Vec<u8>) {
        let _ = self.tx.try_send(Out::Frame(kind, payload));
    }

    /// Queues the last frame, closes the queue and waits until everything is written
    /// and the sending side shut down, for as long as the client keeps taking bytes:
    /// after [`DELIVERY_STALL`] without one, the writer is stopped (closing the
    /// sending side) and what is left is dropped.
    async fn finish(self, last: Option<(Kind, Vec<u8>)>) {
        let Outbox {
            tx, task, written, ..
        } = self;
        let abort = task.abort_handle();
        let done = async move {
            if let Some((kind, payload)) = last {
                let _ = tx.send(Out::Frame(kind, payload)).await;
            }
            drop(tx);
            let _ = task.await;
        };
        tokio::pin!(done);
        let mut seen = written.load(Ordering::Relaxed);
        loop {
            if tokio::time::timeout(DELIVERY_STALL, &mut done)
                .await
                .is_ok()
            {
                return;
            }
            let now = written.load(Ordering::Relaxed);
            if now == seen {
                abort.abort();
                return;
            }
            seen = now;
        }
    }
}

/// The writer task of an [`Outbox`]: takes what is queued (all of it, so several
/// batches go out in one vectored write), writes it, and shuts the sending side down
/// when the queue is closed. Stops at the first failed write: the queue's senders
/// then see the client as gone.
async fn write_out(
    mut wr: OwnedWriteHalf,
    mut rx: tokio::sync::mpsc::Receiver<Out>,
    written: Arc<AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        let mut msgs = vec![first];
        while let Ok(m) = rx.try_recv() {
            msgs.push(m);
        }
        let mut frames: Vec<(Kind, &[u8])> = Vec::new();
        for m in &msgs {
            match m {
                Out::Output { batch, .. } => frames.extend(batch.iter().map(Output::frame)),
                Out::Frame(kind, payload) => frames.push((*kind, payload)),
            }
        }
        if send_frames(&mut wr, &frames, &written).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// Reads the container's output and queues it for the client, whatever is already
/// decoded in one batch, once the previous batch is written: a client that does not
/// read slows down its own container's output and nothing else.
async fn forward_output(
    mut output: futures_util::stream::BoxStream<'static, std::io::Result<Output>>,
    out: &Outbox,
    bytes_out: &AtomicU64,
) -> Forwarded {
    loop {
        let turn = out.turn().await;
        let Some(Ok(first)) = output.next().await else {
            return Forwarded::Ended;
        };
        let (batch, ended) = ready_outputs(first, &mut output);
        let n: u64 = batch.iter().map(|o| o.frame().1.len() as u64).sum();
        bytes_out.fetch_add(n, Ordering::Relaxed);
        if out.output(batch, turn).await.is_err() {
            return Forwarded::ClientGone;
        }
        if ended {
            return Forwarded::Ended;
        }
    }
}

/// One error frame (status 125) to a connection refused at `accept`, if the socket
/// takes it now (a fresh socket always has room); the connection is closed after.
/// Never waits: the accept loop must not. (urun reads the frame even when urund
/// closed before urun had sent its request.)
fn send_at_once(stream: &UnixStream, message: &str) {
    let payload = wire::encode_error(125, message);
    let mut frame = wire::header(Kind::Error, payload.len()).to_vec();
    frame.extend_from_slice(&payload);
    let _ = stream.try_write(&frame);
}

/// Writes frames with as few system calls as possible: headers and payloads go out
/// in vectored writes, and payloads are not copied. Counts the bytes in `written`.
async fn send_frames(
    wr: &mut OwnedWriteHalf,
    frames: &[(Kind, &[u8])],
    written: &AtomicU64,
) -> std::io::Result<()> {
    use std::io::IoSlice;
    let mut parts: Vec<([u8; wire::HEADER], &[u8])> = Vec::with_capacity(frames.len());
    for (kind, payload) in frames {
        for chunk in payload.chunks(wire::MAX_FRAME) {
            parts.push((wire::header(*kind, chunk.len()), chunk));
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
        written.fetch_add(n as u64, Ordering::Relaxed);
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

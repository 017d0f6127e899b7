//! Start-up, the accept loop and shutdown of urund (see the module comment of
//! [`crate::daemon`]): nothing is touched before the socket directory's lock is held.

use super::audit::Record;
use super::instance::{Lock, Owner, RuntimeDir};
use super::rundir::RunDir;
use super::{audit, closer, connections, instance};
use super::{Helper, Options, Parts};
use crate::daemon::janitor::Whose;
use crate::engine::{DockerEngine, Engine};
use crate::policy::rule::{Refusal, Rule};
use crate::policy::{NetworkMode, Policy, ISOLATED_NETWORK};
use crate::system::{self, Caller};
use crate::wire::{self, status, Kind};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};

/// The uid counted for a connection whose peer the kernel could not name.
const UNKNOWN_UID: u32 = u32::MAX;

/// Longest pause of the accept loop when accepting fails (out of descriptors).
pub(super) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

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
    let policy = system::load_policy(&opts.policy)?;
    let (group_gid, override_gids) = group_ids(&policy)?;
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
    let engine: Arc<dyn Engine> = Arc::new(DockerEngine::connect(&opts.docker_host).await?);
    let (build_engine, build_engine_userns) = build_engine(&policy, &opts.docker_host).await?;
    if policy.build.enabled && build_engine.is_none() && !policy.build.allow_root_engine {
        eprintln!(
            "urund: builds would run on the run daemon: they are refused unless \
             [build] allow_root_engine = true (or set [build] engine)"
        );
    }
    check_runtimes(&policy, engine.as_ref()).await?;
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
    let builds = Arc::new(super::builds::Builds::open(&opts.state_dir)?);
    let helper = Arc::new(Helper::new(Parts {
        engine,
        build_engine,
        build_engine_userns,
        policy,
        policy_path: opts.policy.clone(),
        group_gid,
        override_gids,
        audit,
        owner,
        runtime,
        builds,
        nofile,
    }));
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

/// The build engine `[build] engine` names, connected now (builds on, and an engine
/// named): urund does not start without it rather than fail every build later. With
/// whether it is a dockerd of its own with `userns-remap` (`docker info`; the same
/// socket as the run daemon's is not), which builds need unless
/// `[build] allow_root_engine`.
async fn build_engine(
    policy: &Policy,
    docker_host: &str,
) -> Result<(Option<Arc<dyn Engine>>, bool)> {
    let Some(path) = policy
        .build
        .engine
        .as_ref()
        .filter(|_| policy.build.enabled)
    else {
        return Ok((None, false));
    };
    let uri = format!("unix://{}", path.0.display());
    let e = DockerEngine::connect(&uri)
        .await
        .with_context(|| format!("policy [build] engine = {:?}", path.0))?;
    let run = docker_host.strip_prefix("unix://").unwrap_or(docker_host);
    let same = std::fs::canonicalize(&path.0).ok() == std::fs::canonicalize(run).ok();
    let userns = !same
        && e.info()
            .await
            .context("asking the build engine whether it has userns-remap (docker info)")?
            .security_options
            .unwrap_or_default()
            .iter()
            .any(|o| o.split(',').any(|kv| kv == "name=userns"));
    if !userns && !policy.build.allow_root_engine {
        eprintln!(
            "urund: [build] engine {} is the run daemon or has no userns-remap: builds are \
             refused unless [build] allow_root_engine = true",
            path.0.display()
        );
    }
    Ok((Some(Arc::new(e)), userns))
}

/// Every runtime the policy names (`[runtime]`, `[[runtime.image]]`, the override
/// tables) must be registered with the daemon: else urund does not start, rather than
/// refuse (or worse, fall back for) the runs that would use it.
pub(super) async fn check_runtimes(policy: &Policy, engine: &dyn Engine) -> Result<()> {
    let registered = engine
        .runtimes()
        .await
        .context("asking the Docker daemon which runtimes it has (docker info)")?;
    let missing = crate::policy::runtime::missing_runtimes(&policy.runtimes(), &registered);
    if !missing.is_empty() {
        anyhow::bail!(
            "policy [runtime] names runtime {} that the Docker daemon does not have \
             (registered: {}): register it in dockerd's daemon.json \"runtimes\" and restart \
             dockerd, or change the policy",
            missing.join(", "),
            registered.join(", ")
        );
    }
    if let Some(why) = crate::policy::runtime::sandbox_limits_problem(policy) {
        anyhow::bail!("{why}");
    }
    Ok(())
}

/// The gid of the policy's `access.group` (which must exist), and those of the groups
/// named by `[group.NAME]` override tables (one missing is warned about and ignored).
fn group_ids(policy: &Policy) -> Result<(u32, HashMap<String, u32>)> {
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
                 its limits and runtime apply to nobody",
                g.0, g.0
            ),
        }
    }
    Ok((group_gid, override_gids))
}

impl Helper {
    /// Cleans up after a previous urund, binds (or checks) the socket, serves until
    /// SIGTERM/SIGINT, then removes what is still running.
    pub(super) async fn serve_until_stopped(
        self: Arc<Self>,
        socket: PathBuf,
        activated: Option<std::os::unix::net::UnixListener>,
    ) -> Result<()> {
        // Leftovers of a urund that died: the containers it recorded in its run
        // directories, those proven by the secret label, then its pinned mounts and
        // per-run files.
        let recorded = self.reap_recorded().await;
        let reaped = recorded
            + match self.janitor.reconcile().await {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("urund: clean-up at start: {e:#}; retrying in the background");
                    self.janitor.reconcile_soon();
                    0
                }
            };
        self.clean_runtime();
        // The registry names of pushes it was doing.
        self.sweep_push_names().await;
        let from_systemd = activated.is_some();
        let std_listener = match activated {
            // systemd made the socket (SocketMode=, SocketGroup=): check it, change nothing.
            Some(l) => {
                system::check_inherited_socket(&l, &socket, self.group_gid)?;
                l
            }
            None => system::bind_socket(&socket, self.group_gid)?,
        };
        // A new connection takes no descriptors until urund admitted it (it inherits
        // this from the listening socket; `take_connection` turns it on): a refused one
        // is closed at once, never by a thread ([`closer`]). Linux 6.16+.
        if let Err(e) = system::set_pass_rights(std_listener.as_fd(), false) {
            eprintln!(
                "urund: SO_PASSRIGHTS ({e}): connections refused at accept may carry \
                 descriptors, closed by closing threads"
            );
        }
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

    pub(super) async fn accept_loop(self: Arc<Self>, listener: UnixListener) -> Result<()> {
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
    pub(super) fn take_connection(self: Arc<Self>, stream: UnixStream) {
        let Ok(peer) = system::peer_ids(stream.as_fd()) else {
            self.close_refused(stream, UNKNOWN_UID);
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
                // Admitted: it may pass descriptors with its request now.
                let _ = system::set_pass_rights(stream.as_fd(), true);
                let ticket = Ticket::new(self.conns.clone(), peer.uid);
                tokio::spawn(self.serve(stream, ticket));
            }
            Err(r) => {
                self.refuse_at_once(&stream, &peer, &r);
                self.close_refused(stream, peer.uid);
            }
        }
    }

    /// Closes a connection refused at `accept` ([`closer::close_refused`]): at once if
    /// it never took descriptors, else off the event loop, as its queue may hold
    /// descriptors whose release waits for the client.
    fn close_refused(&self, stream: UnixStream, uid: u32) {
        match stream.into_std() {
            Ok(s) => closer::close_refused(s.into(), uid, self.conns.clone()),
            Err(e) => eprintln!("urund: cannot take a refused connection off the event loop: {e}"),
        }
    }

    /// `accept` failed for lack of descriptors: frees the spare one, takes one waiting
    /// client with it, tells it why, and takes the spare again.
    pub(super) fn answer_with_spare(&self, listener: &UnixListener) {
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
                Ok(peer) => {
                    self.refuse_at_once(
                        &stream,
                        &peer,
                        &Refusal::new(Rule::ConnectionsDescriptors, msg),
                    );
                    self.close_refused(stream, peer.uid);
                }
                Err(_) => {
                    send_at_once(&stream, &msg);
                    self.close_refused(stream, UNKNOWN_UID);
                }
            }
        }
        *spare = std::fs::File::open("/").ok();
    }

    /// Refuses a connection at `accept`: the error frame, and a `refused` audit record
    /// (rate-limited per uid like every record of a request that got no container, so
    /// a flood of connections is summed up, never written one by one). The peer is
    /// known by its ids alone: no user-database lookup at this rate.
    pub(super) fn refuse_at_once(&self, stream: &UnixStream, peer: &Caller, refusal: &Refusal) {
        send_at_once(stream, &refusal.message);
        let mut rec = Record::new(&self.request_id(), peer);
        rec.decision = "refused";
        rec.rule = Some(refusal.rule.id().to_string());
        rec.message = Some(refusal.message.clone());
        rec.status = Some(status::REFUSED);
        self.audit.write(&rec);
    }

    /// On shutdown no container may outlive its client: remove every tracked one
    /// (retrying a while if the daemon does not answer), then every pinned mount and
    /// per-run file.
    pub(super) async fn shutdown(&self) {
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

    /// Removes the containers a previous urund recorded in the run directories it left
    /// (`container`, written right after create, in urund's root-only runtime
    /// directory): urund's own by that record, whatever their labels or their image's
    /// labels say. Each that still exists is removed (or queued for retry) with a
    /// `reaped` record.
    async fn reap_recorded(&self) -> usize {
        let runs = match self.runtime.leftovers() {
            Ok((runs, _)) => runs,
            Err(_) => return 0,
        };
        let mut removed = 0;
        for path in runs {
            let Some(id) = RunDir::recorded_container(&path) else {
                continue;
            };
            let request = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // The request label is urund's (a container's own labels override its
            // image's); it narrows the listing, the recorded ID decides.
            let labels = match self
                .engine
                .labelled(&[(crate::policy::forced::LABEL_REQUEST, request.as_str())])
                .await
            {
                Ok(list) => match list.into_iter().find(|c| c.id == id) {
                    Some(c) => c.labels,
                    None => continue,
                },
                Err(_) => HashMap::from([(
                    crate::policy::forced::LABEL_REQUEST.to_string(),
                    request.clone(),
                )]),
            };
            let whose = Whose::from_labels(&labels);
            if let super::janitor::Removal::Done = self.janitor.remove_container(&id, &whose).await
            {
                removed += 1;
                eprintln!("urund: removed container {id}, recorded by run {request}");
                self.audit.write(&Record::reaped(&id, &labels));
            }
        }
        removed
    }

    /// Unmounts and removes the per-run directories under the runtime directory,
    /// recognised by urund's own name format (never recursively; a failure is queued
    /// for retry). Anything else there is left alone and reported.
    pub(super) fn clean_runtime(&self) {
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
}

/// One connection admitted by [`Helper::take_connection`], counted in the
/// [`connections::Table`]: as idle until [`Ticket::running`], as open until dropped.
pub(super) struct Ticket {
    table: Arc<Mutex<connections::Table>>,
    uid: u32,
    idle: bool,
}

impl Ticket {
    /// A connection just admitted by the table (counted there as open and idle).
    pub(super) fn new(table: Arc<Mutex<connections::Table>>, uid: u32) -> Ticket {
        Ticket {
            table,
            uid,
            idle: true,
        }
    }

    pub(super) fn uid(&self) -> u32 {
        self.uid
    }

    /// The connection runs a container now (it has its `max_concurrent` slot).
    pub(super) fn running(&mut self) {
        if std::mem::take(&mut self.idle) {
            self.table.lock().unwrap().not_idle(self.uid);
        }
    }

    /// The connection is being closed, which may wait for as long as its client likes
    /// ([`super::closer`]): it counts as idle again until the ticket is dropped.
    pub(super) fn closing(&mut self) {
        if !std::mem::replace(&mut self.idle, true) {
            self.table.lock().unwrap().idle_again(self.uid);
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

/// One error frame ([`status::REFUSED`]) to a connection refused at `accept`, if the socket
/// takes it now (a fresh socket always has room); the connection is closed after.
/// Never waits: the accept loop must not. (urun reads the frame even when urund
/// closed before urun had sent its request.)
pub(super) fn send_at_once(stream: &UnixStream, message: &str) {
    let payload = wire::encode_error(status::REFUSED, message);
    let _ = stream.try_write(&wire::encode_frame(Kind::Error, &payload));
}

/// How long shutdown keeps retrying removals that fail (the daemon restarting).
pub(super) const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

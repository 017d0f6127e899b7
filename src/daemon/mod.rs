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
//!      and its current path, never from a path in the request; every call that
//!      reaches its filesystem made on a thread of the run's own, within a few
//!      seconds, never on the event loop: `workdir`), the caller's
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
//!      Everything for the client goes through its `Outbox`, a writer task with a
//!      bounded queue: a client that stops reading holds up only its own container's
//!      output, never the deadline, its frames (signals) or the hang-up check;
//!   7. record: one `admitted` audit line as soon as the container exists, and one
//!      when the run is over, written before the last frame is delivered, so a client
//!      that never reads again cannot hold it back (delivering what is left is
//!      bounded too); bounded and rate-limited by [`audit`].
//!
//! Start-up ([`run`]) touches nothing before it holds the socket directory's lock, and
//! then cleans up only what it can prove it made (see [`crate::daemon::instance`]).
//!
//! Where each part lives: `listen` (start-up, the accept loop, shutdown), `serve` (the
//! steps above, one connection), `request` (reading the client's request and frames),
//! `rundir` (step 5's preparation: identity files, the run's directory, pinning),
//! `workdir` (the passed directory's own thread: its examination and pin),
//! `pull` (step 4's pull), `relay` (step 6: the client and the container side by side),
//! `outbox` (the client's writer task), `describe` (the text of `urun --policy`);
//! [`janitor`] (removals retried), [`audit`] (step 7), [`connections`] (step 0's caps),
//! [`instance`] (the lock, the runtime directory, the secret), [`check`] (`urund check`).

pub mod audit;
mod build;
pub mod builds;
pub mod check;
pub mod cli;
pub mod connections;
pub mod instance;
pub mod janitor;

mod closer;
mod describe;
mod images;
mod listen;
mod outbox;
mod pull;
mod push;
mod relay;
mod request;
mod rundir;
mod serve;
mod spool;
mod stdin;
mod workdir;

pub use listen::run;

use crate::daemon::janitor::{Janitor, Whose};
use crate::engine::Engine;
use crate::policy::Policy;
use instance::{Owner, RuntimeDir};
use rundir::ImageFiles;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

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
    engine: Arc<dyn Engine>,
    /// The engine builds run on (`[build] engine`); the same `Arc` as `engine` when
    /// the policy names none.
    build_engine: Arc<dyn Engine>,
    /// `[build] engine` is a dedicated dockerd with `userns-remap` (asked at start).
    build_engine_userns: bool,
    /// Builds in progress per uid (`[build] max_concurrent`).
    building: Mutex<HashMap<u32, u32>>,
    /// The marks of the builds in progress (each its own: review B2, see
    /// [`crate::engine::BuildShape`]).
    build_marks: Mutex<std::collections::BTreeSet<u16>>,
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
    /// The record of every image a user built (what makes an image "own").
    builds: Arc<builds::Builds>,
    /// Build contexts being received, across users (`spool`).
    spool: Arc<spool::Reservations>,
    /// Users with a `urun push` in progress (one each).
    pushes: Mutex<std::collections::HashSet<u32>>,
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

/// What a [`Helper`] is built from: start-up gathers it from the system, unit tests
/// make it in memory (with the recording fake engine).
pub(crate) struct Parts {
    pub engine: Arc<dyn Engine>,
    /// `[build] engine` when the policy names one (else builds use `engine`).
    pub build_engine: Option<Arc<dyn Engine>>,
    /// That engine reported `userns-remap` (`docker info`) at start.
    pub build_engine_userns: bool,
    pub policy: Policy,
    pub policy_path: PathBuf,
    /// gid of the policy's `access.group`.
    pub group_gid: u32,
    pub override_gids: HashMap<String, u32>,
    pub audit: Arc<audit::Sink>,
    pub owner: Owner,
    pub runtime: RuntimeDir,
    /// The build records (`<state dir>/builds`).
    pub builds: Arc<builds::Builds>,
    /// The open-files limit.
    pub nofile: u64,
}

impl Helper {
    pub(crate) fn new(p: Parts) -> Helper {
        Helper {
            janitor: Janitor::new(p.engine.clone(), p.owner, p.audit.clone()),
            build_engine_userns: p.build_engine.is_some() && p.build_engine_userns,
            build_engine: p.build_engine.unwrap_or_else(|| p.engine.clone()),
            building: Mutex::new(HashMap::new()),
            build_marks: Mutex::new(std::collections::BTreeSet::new()),
            engine: p.engine,
            policy: p.policy,
            policy_path: p.policy_path,
            group_gid: p.group_gid,
            override_gids: p.override_gids,
            audit: p.audit,
            per_user: Mutex::new(HashMap::new()),
            names: Mutex::new(std::collections::HashSet::new()),
            network_lock: tokio::sync::Mutex::new(()),
            runs: Mutex::new(HashMap::new()),
            runtime: p.runtime,
            builds: p.builds,
            spool: Arc::new(spool::Reservations::default()),
            pushes: Mutex::new(std::collections::HashSet::new()),
            image_files: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            boot: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            conns: Arc::new(Mutex::new(connections::Table::default())),
            nofile: p.nofile,
            max_open: connections::budget(p.nofile),
            spare: Mutex::new(std::fs::File::open("/").ok()),
        }
    }
}

#[cfg(test)]
mod tests;

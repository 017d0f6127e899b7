//! urund: accepts connections on the urun socket and runs one container per request.
//!
//! The handler for one connection, [`Helper::serve`], is the security argument in order:
//!   1. who: the caller's identity from the kernel (`SO_PEERCRED`), before any byte;
//!   2. what: one bounded, strictly parsed request;
//!   3. may they: the pure policy judge;
//!   4. which image: resolved to an ID, locally, at admission;
//!   5. how: the forced-settings table builds the whole container configuration;
//!   6. run: create, attach, start, relay, wait, remove — and remove on every other
//!      path too (client gone, bad frame, helper shutdown);
//!   7. record: one audit line.

use crate::audit::{self, Record};
use crate::engine::{Engine, RunError};
use crate::forced;
use crate::judge::{judge, Decision};
use crate::policy::Policy;
use crate::protocol::{self, Kind, ProtocolError, Request};
use crate::system::{self, Caller};
use anyhow::{Context, Result};
use bollard::container::{AttachContainerResults, LogOutput};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::os::fd::AsFd;
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

pub struct Options {
    pub socket: PathBuf,
    pub policy: PathBuf,
    pub docker_host: String,
}

/// State shared by all connections.
pub struct Helper {
    engine: Engine,
    policy: Policy,
    group_gid: u32,
    /// This helper's identity in container labels: its socket path.
    tag: String,
    /// Containers of runs in progress: request id → container id.
    runs: Mutex<HashMap<String, String>>,
    counter: AtomicU64,
    boot: u64,
}

/// Runs the daemon until SIGTERM or SIGINT.
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
    let engine = Engine::connect(&opts.docker_host).await?;
    let tag = opts.socket.display().to_string();
    let helper = Arc::new(Helper {
        engine,
        policy,
        group_gid,
        tag,
        runs: Mutex::new(HashMap::new()),
        counter: AtomicU64::new(0),
        boot: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    });
    let reaped = helper.reap_untracked().await?;
    let std_listener = system::bind_socket(&opts.socket, group_gid)?;
    std_listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(std_listener)?;
    eprintln!(
        "urund: listening on {} (group {group}, docker API {}, {reaped} leftover container(s) removed)",
        opts.socket.display(),
        helper.engine.api_version()
    );
    let result = helper.clone().accept_loop(listener).await;
    helper.shutdown().await;
    let _ = std::fs::remove_file(&opts.socket);
    eprintln!("urund: stopped");
    result
}

impl Helper {
    async fn accept_loop(self: Arc<Self>, listener: UnixListener) -> Result<()> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
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
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
            }
        }
    }

    /// Removes every container this helper labelled and does not track: leftovers of
    /// a helper that died. Returns how many.
    async fn reap_untracked(&self) -> Result<usize> {
        let ids = self
            .engine
            .labelled(forced::LABEL_HELPER, &self.tag)
            .await?;
        let tracked: Vec<String> = self.runs.lock().unwrap().values().cloned().collect();
        let mut n = 0;
        for id in ids.iter().filter(|id| !tracked.contains(id)) {
            self.engine.remove(id).await?;
            n += 1;
        }
        Ok(n)
    }

    /// On shutdown no container may outlive its client: remove every tracked one.
    async fn shutdown(&self) {
        let ids: Vec<String> = self.runs.lock().unwrap().values().cloned().collect();
        for id in ids {
            if let Err(e) = self.engine.remove(&id).await {
                eprintln!("urund: {e:#}");
            }
        }
    }

    fn request_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:x}-{}-{n}", self.boot, std::process::id())
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
            End::ClientGone => {
                rec.decision = "allowed";
                rec.message = Some("client went away; container removed".into());
                None
            }
        };
        if let Some((kind, payload)) = frame {
            let _ = send(&mut wr, kind, &payload).await;
        }
        let _ = wr.shutdown().await;
        linger(&mut rd).await;
        rec.duration_ms = started.elapsed().as_millis() as u64;
        audit::write(&rec);
    }

    /// Steps 2 to 6. Returns how the connection ends.
    async fn admit_and_run(
        &self,
        caller: &Caller,
        rec: &mut Record,
        rd: &mut OwnedReadHalf,
        wr: &mut OwnedWriteHalf,
    ) -> End {
        // 2. What: one bounded request.
        let req = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(rd)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return End::Refused("protocol", format!("bad request: {e}")),
            Err(_) => return End::Refused("protocol", "no request within 10 seconds".into()),
        };
        rec.image = req.image.clone();
        rec.argv = req.command.clone();
        // 3. May they.
        if let Decision::Refuse(r) = judge(caller, &self.policy, self.group_gid, &req) {
            return End::Refused(r.rule, r.message);
        }
        // 4. Which image: exactly this ID, whatever the tag points to later.
        let image_id = match self.engine.resolve_image(&req.image).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                return End::Failed(RunError {
                    status: 125,
                    message: format!(
                        "Unable to find image '{}' locally: urun does not pull images; \
                         ask your administrator to provide it",
                        req.image
                    ),
                })
            }
            Err(e) => return End::Failed(daemon_error(e)),
        };
        rec.image_id = Some(image_id.clone());
        // 5. How: the forced settings.
        let labels = forced::labels(caller, &rec.request, &self.tag);
        let body = forced::container_config(caller, &self.policy.limits, &image_id, &req, labels);
        // 6. Run, and remove whatever happens.
        let id = match self.engine.create(body).await {
            Ok(id) => id,
            Err(e) => return End::Failed(daemon_error(e)),
        };
        rec.container = Some(id.clone());
        self.runs
            .lock()
            .unwrap()
            .insert(rec.request.clone(), id.clone());
        let end = self.relay(&id, req.interactive, rd, wr, rec).await;
        if let Err(e) = self.engine.remove(&id).await {
            eprintln!("urund: {e:#}");
        }
        self.runs.lock().unwrap().remove(&rec.request);
        end
    }

    /// Attaches, starts, and relays until the container exits or the client leaves.
    async fn relay(
        &self,
        id: &str,
        interactive: bool,
        rd: &mut OwnedReadHalf,
        wr: &mut OwnedWriteHalf,
        rec: &mut Record,
    ) -> End {
        let AttachContainerResults { mut output, input } =
            match self.engine.attach(id, interactive).await {
                Ok(a) => a,
                Err(e) => return End::Failed(daemon_error(e)),
            };
        if let Err(e) = self.engine.start(id).await {
            return End::Failed(e);
        }
        let bytes_in = AtomicU64::new(0);
        let pump = pump_client(rd, input, &bytes_in);
        tokio::pin!(pump);
        let end = loop {
            tokio::select! {
                item = output.next() => match item {
                    Some(Ok(LogOutput::StdOut { message })) | Some(Ok(LogOutput::Console { message })) => {
                        rec.bytes_out += message.len() as u64;
                        if send(wr, Kind::Stdout, &message).await.is_err() { break End::ClientGone; }
                    }
                    Some(Ok(LogOutput::StdErr { message })) => {
                        rec.bytes_out += message.len() as u64;
                        if send(wr, Kind::Stderr, &message).await.is_err() { break End::ClientGone; }
                    }
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    // The stream ends when the container's output closes: it has exited.
                    Some(Err(_)) | None => {
                        break match self.engine.wait(id).await {
                            Ok(code) => End::Exit(u8::try_from(code).unwrap_or(125)),
                            Err(e) => End::Failed(daemon_error(e)),
                        };
                    }
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
}

/// How a connection ends.
enum End {
    Exit(u8),
    Refused(&'static str, String),
    Failed(RunError),
    ClientGone,
}

/// Why the client→container pump stopped.
enum PumpEnd {
    Gone,
    Bad(ProtocolError),
}

/// Relays stdin frames from the client to the container until the client goes away.
/// After `StdinEof` the container's stdin is closed and the pump keeps watching the
/// connection, so a vanished client is noticed at once.
async fn pump_client(
    rd: &mut OwnedReadHalf,
    mut input: Pin<Box<dyn AsyncWrite + Send>>,
    bytes_in: &AtomicU64,
) -> PumpEnd {
    let mut stdin_open = true;
    loop {
        let (kind, payload) = match read_frame(rd).await {
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
                            if peer_hung_up(rd) { return PumpEnd::Gone; }
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

fn peer_hung_up(rd: &OwnedReadHalf) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // No events requested: the kernel still reports POLLHUP once the peer has closed
    // both directions (a client that exited or was killed), whatever data is queued.
    // (Asking for POLLRDHUP would make nix's `revents()` return None: unknown bit.)
    let sock: &UnixStream = rd.as_ref();
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
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

/// The first frame must be a request.
async fn read_request(rd: &mut OwnedReadHalf) -> Result<Request, FrameError> {
    match read_frame(rd).await? {
        Some((Kind::Request, p)) => Request::decode(&p).map_err(FrameError::Protocol),
        Some((k, _)) => Err(FrameError::Protocol(ProtocolError::UnexpectedKind(k))),
        None => Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())),
    }
}

async fn send(wr: &mut OwnedWriteHalf, kind: Kind, payload: &[u8]) -> std::io::Result<()> {
    for chunk in payload.chunks(protocol::MAX_FRAME) {
        let mut buf = Vec::with_capacity(protocol::HEADER + chunk.len());
        buf.extend_from_slice(&protocol::header(kind, chunk.len()));
        buf.extend_from_slice(chunk);
        wr.write_all(&buf).await?;
    }
    Ok(())
}

fn daemon_error(e: anyhow::Error) -> RunError {
    RunError {
        status: 125,
        message: format!("docker daemon: {e:#}"),
    }
}

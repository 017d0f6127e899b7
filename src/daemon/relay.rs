//! A started container and its client, side by side: the client's frames to the
//! container, the container's output to the client's [`super::outbox::Outbox`], the
//! deadline and the exit status.

use super::audit::Record;
use super::outbox::Outbox;
use super::request::read_frame;
use super::request::ClientRead;
use super::request::FrameError;
use super::serve::daemon_error;
use super::serve::End;
use super::stdin::{move_stdin, PassedStdin};
use super::Helper;
use crate::engine::{Attached, Engine, Input, Output, RunError};
use crate::policy::rule::{Refusal, Rule};
use crate::system;
use crate::wire::{status, Kind, ProtocolError, Request, Signal, WinSize};
use futures_util::StreamExt;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::time::Sleep;

/// How often a client that is not sending anything is checked for having gone away
/// while its container's stdin is full.
pub(super) const HANGUP_POLL: Duration = Duration::from_millis(200);

/// At most one round of signal and resize calls to the Docker daemon per run in this
/// time: a client's `Signal` and `Resize` frames are coalesced in between (see
/// [`Pending`]), so a flood of them costs the shared daemon a bounded number of calls.
pub(super) const CONTROL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a TTY container may keep running after its terminal output ended (docker's
/// detach keys, ctrl-p ctrl-q, end the attach): urun has no detach, so it is then killed.
pub(super) const DETACH_GRACE: Duration = Duration::from_secs(2);

impl Helper {
    /// Attaches, starts, and relays until the container exits or the client leaves
    /// ([`Helper::side_by_side`]); a container to be killed is killed after its attach
    /// connection is closed ([`Helper::kill`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn relay(
        &self,
        id: &str,
        req: &Request,
        rd: &mut ClientRead,
        stdin: Option<PassedStdin>,
        out: &Outbox,
        rec: &mut Record,
        max_runtime: Duration,
    ) -> End {
        let attached = match self.engine.attach(id, req.interactive, req.tty).await {
            Ok(a) => a,
            Err(e) => return End::Failed(daemon_error(e)),
        };
        if let Err(e) = self.engine.start(id).await {
            return End::Failed(e);
        }
        if let (true, Some(size)) = (req.tty, req.size) {
            let _ = self.engine.resize(id, size).await;
        }
        // Room in the kernel for a whole batch of output (BATCH_BYTES) on its way to
        // the client: one write per batch (bench/NOTES.md).
        let _ = system::set_send_buffer(peer_socket(rd), CLIENT_SEND_BUFFER);
        let deadline = tokio::time::sleep(max_runtime);
        tokio::pin!(deadline);
        let counts = Counts::default();
        let stop = self
            .side_by_side(
                id,
                req.tty,
                rd,
                stdin,
                attached,
                out,
                &counts,
                deadline.as_mut(),
            )
            .await;
        rec.bytes_in = counts.input.load(Ordering::Relaxed);
        rec.bytes_out = counts.output.load(Ordering::Relaxed);
        match stop {
            Stop::End(end) => end,
            Stop::Kill => self.kill(id, deadline, max_runtime).await,
        }
    }

    /// Four things run side by side, and none waits for another: the deadline, the
    /// client's frames ([`pump_client`]: stdin, signals, hang-up, and a passed stdin
    /// moved beside them), the container's
    /// output on its way to the client's [`Outbox`] ([`forward_output`], which alone
    /// waits while the client does not read), and, once the output has ended, the wait
    /// for the exit status. So `max_runtime` and the client's signals take effect
    /// whatever the client reads. The attach connection is closed on return.
    #[allow(clippy::too_many_arguments)]
    async fn side_by_side(
        &self,
        id: &str,
        tty: bool,
        rd: &mut ClientRead,
        stdin: Option<PassedStdin>,
        attached: Attached,
        out: &Outbox,
        counts: &Counts,
        mut deadline: Pin<&mut Sleep>,
    ) -> Stop {
        let control = Control {
            engine: &*self.engine,
            id,
            tty,
        };
        let pump = pump_client(rd, attached.input, stdin, &counts.input, control);
        tokio::pin!(pump);
        let forward = forward_output(attached.output, out, &counts.output);
        tokio::pin!(forward);
        let exit = self.exit_status(id, tty);
        tokio::pin!(exit);
        // The output has ended: wait for the exit status.
        let mut output_done = false;
        loop {
            tokio::select! {
                _ = deadline.as_mut() => return Stop::Kill,
                r = &mut forward, if !output_done => match r {
                    // The stream ends when the container's output closes: it has
                    // exited (or, with a TTY, was detached: then it is killed after
                    // a grace).
                    Forwarded::Ended => output_done = true,
                    Forwarded::ClientGone => return Stop::End(End::ClientGone),
                },
                e = &mut exit, if output_done => return Stop::End(e),
                r = &mut pump => return match r {
                    // The client left or broke the protocol while the container ran.
                    PumpEnd::Bad(e) => {
                        Stop::End(End::Refused(Refusal::new(
                            Rule::Protocol,
                            format!("bad frame: {e}"),
                        )))
                    }
                    PumpEnd::Gone => Stop::End(End::ClientGone),
                    PumpEnd::Killed => Stop::Kill,
                    // The container is removed (forcibly) as after every run.
                    PumpEnd::Stdin(message) => Stop::End(End::Failed(RunError {
                        status: status::REFUSED,
                        message,
                    })),
                },
            }
        }
        // The attach connection closes on return. Docker finishes a killed container
        // only once its output is taken, and a client that does not read would
        // otherwise hold that up.
    }

    /// Kills the container (the deadline passed, or the client asked for SIGKILL) and
    /// says how the run ended.
    async fn kill(&self, id: &str, mut deadline: Pin<&mut Sleep>, max_runtime: Duration) -> End {
        let timeout = || End::Timeout(crate::policy::Seconds(max_runtime.as_secs()));
        // A kill that fails is not retried here: the removal that follows every run
        // (the janitor's, retried until it succeeds) forces the container down too.
        if let Err(e) = self.engine.signal(id, Signal::Kill).await {
            eprintln!("urund: {e:#}");
        }
        if deadline.is_elapsed() {
            return timeout();
        }
        // The client's SIGKILL (its second Ctrl-C): the status Docker reports.
        tokio::select! {
            e = self.exit_status(id, false) => e,
            _ = deadline.as_mut() => timeout(),
        }
    }

    /// The exit status once the output has ended. A TTY container still running after
    /// [`DETACH_GRACE`] was detached from, and is killed: nothing outlives its client.
    pub(super) async fn exit_status(&self, id: &str, tty: bool) -> End {
        let wait = match tty {
            true => tokio::time::timeout(DETACH_GRACE, self.engine.wait(id)).await,
            false => Ok(self.engine.wait(id).await),
        };
        match wait {
            Ok(Ok(code)) => End::Exit(u8::try_from(code).unwrap_or(status::REFUSED)),
            Ok(Err(e)) if crate::engine::is_unreachable(&e) => End::DaemonGone,
            Ok(Err(e)) => End::Failed(daemon_error(e)),
            Err(_) => {
                let _ = self.engine.signal(id, Signal::Kill).await;
                End::Failed(RunError {
                    status: status::KILLED,
                    message: "detached (ctrl-p ctrl-q): urun has no detach, so the \
                              container was killed"
                        .into(),
                })
            }
        }
    }
}

/// Bytes relayed each way, for the audit record.
#[derive(Default)]
pub(super) struct Counts {
    input: AtomicU64,
    output: AtomicU64,
}

/// Why the client→container pump stopped.
pub(super) enum PumpEnd {
    Gone,
    Bad(ProtocolError),
    /// The client asked for SIGKILL (its second Ctrl-C).
    Killed,
    /// urund cannot move the passed stdin (the user's line): the run ends, status
    /// 125, rather than go on with an empty stdin.
    Stdin(String),
}

/// Why the relay stopped relaying.
pub(super) enum Stop {
    End(End),
    /// The deadline passed, or the client asked for SIGKILL: the container is to be
    /// killed, after its attach connection is closed.
    Kill,
}

/// How forwarding the container's output ended.
pub(super) enum Forwarded {
    /// The output stream ended (or failed): the container has closed it.
    Ended,
    ClientGone,
}

/// What the client may do to its running container besides writing to its stdin.
pub(super) struct Control<'a> {
    engine: &'a dyn Engine,
    id: &'a str,
    tty: bool,
}

/// The client's signals and terminal size not yet passed on, coalesced as the kernel
/// coalesces a pending standard signal: one of each signal and the latest size. The
/// frame reader only records them here; [`Control::deliver`] passes them on.
#[derive(Default)]
pub(super) struct Pending {
    /// (signals by number as bits, the latest size)
    state: std::sync::Mutex<(u32, Option<WinSize>)>,
    wake: tokio::sync::Notify,
}

impl Pending {
    fn signal(&self, sig: Signal) {
        self.state.lock().unwrap().0 |= 1 << (sig as u32);
        self.wake.notify_one();
    }

    fn resize(&self, size: WinSize) {
        self.state.lock().unwrap().1 = Some(size);
        self.wake.notify_one();
    }

    fn take(&self) -> (u32, Option<WinSize>) {
        std::mem::take(&mut *self.state.lock().unwrap())
    }
}

impl Control<'_> {
    /// Passes the pending signals and size on, at most one round of Docker calls per
    /// [`CONTROL_INTERVAL`] (the first at once); never returns.
    pub(super) async fn deliver(&self, pending: &Pending) -> std::convert::Infallible {
        let mut sent: Option<WinSize> = None;
        loop {
            pending.wake.notified().await;
            loop {
                let (signals, size) = pending.take();
                if signals == 0 && size.is_none() {
                    break;
                }
                for sig in Signal::ALL {
                    if signals & (1 << (sig as u32)) != 0 {
                        self.signal(sig).await;
                    }
                }
                // Meaningless without a TTY; a size already set is not set again.
                if let Some(size) = size.filter(|s| self.tty && s.rows > 0 && s.cols > 0) {
                    if sent != Some(size) {
                        let _ = self.engine.resize(self.id, size).await;
                        sent = Some(size);
                    }
                }
                tokio::time::sleep(CONTROL_INTERVAL).await;
            }
        }
    }

    /// Delivers one of the listed signals (the payload was checked by [`Signal::decode`]).
    async fn signal(&self, sig: Signal) {
        if let Err(e) = self.engine.signal(self.id, sig).await {
            eprintln!("urund: {e:#}");
        }
    }
}

/// Relays the client's frames to the container until the client goes away: stdin,
/// signals (only those [`Signal`] lists), terminal resizes (those two coalesced and
/// passed on by [`Control::deliver`] beside the frames). After `StdinEof` the
/// container's stdin is closed and the pump keeps watching the connection, so a
/// vanished client is noticed at once. With a passed stdin, [`move_stdin`] writes the
/// container's stdin beside the frames (`Stdin` frames are then dropped), and the
/// connection is watched all along.
pub(super) async fn pump_client(
    rd: &mut ClientRead,
    input: Pin<Box<dyn Input>>,
    stdin: Option<PassedStdin>,
    bytes_in: &AtomicU64,
    control: Control<'_>,
) -> PumpEnd {
    let pending = Pending::default();
    let Some(stdin) = stdin else {
        return tokio::select! {
            end = pump_frames(rd, Some(input), bytes_in, &pending) => end,
            never = control.deliver(&pending) => match never {},
        };
    };
    let moved = async {
        if let Err(line) = move_stdin(stdin, input, bytes_in).await {
            return PumpEnd::Stdin(line);
        }
        std::future::pending::<PumpEnd>().await
    };
    tokio::select! {
        end = pump_frames(rd, None, bytes_in, &pending) => end,
        end = moved => end,
        never = control.deliver(&pending) => match never {},
    }
}

async fn pump_frames(
    rd: &mut ClientRead,
    mut input: Option<Pin<Box<dyn Input>>>,
    bytes_in: &AtomicU64,
    pending: &Pending,
) -> PumpEnd {
    // `None`: stdin was passed as a descriptor, and any `Stdin` frame is dropped.
    let mut stdin_open = input.is_some();
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
                let Some(input) = input.as_mut() else {
                    continue;
                };
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
                if let Some(input) = input.as_mut() {
                    let _ = input.shutdown().await;
                }
                stdin_open = false;
            }
            // Stdin after EOF, or for a container whose stdin is closed: dropped.
            Kind::Stdin | Kind::StdinEof => {}
            Kind::Signal => match Signal::decode(&payload) {
                // Delivered by the relay once the attach connection is closed.
                Ok(Signal::Kill) => return PumpEnd::Killed,
                Ok(sig) => pending.signal(sig),
                Err(e) => return PumpEnd::Bad(e),
            },
            Kind::Resize => match WinSize::decode(&payload) {
                Ok(size) => pending.resize(size),
                Err(e) => return PumpEnd::Bad(e),
            },
            other => return PumpEnd::Bad(ProtocolError::UnexpectedKind(other)),
        }
    }
}

/// The client closed its connection, or shut down its sending side: a client that
/// cannot get a signal through (urund is blocked writing to a container that does not
/// read its stdin) does that to have its container killed.
pub(super) fn peer_hung_up(rd: &ClientRead) -> bool {
    let sock: &UnixStream = rd.socket();
    system::peer_done_writing(sock.as_fd())
}

/// The kernel's send buffer for a client's connection once its run has started
/// (doubled by the kernel for its overhead): a full batch of output
/// ([`BATCH_BYTES`]) with its headers fits.
pub(super) const CLIENT_SEND_BUFFER: usize = BATCH_BYTES + (256 << 10);

fn peer_socket(rd: &ClientRead) -> std::os::fd::BorrowedFd<'_> {
    let sock: &UnixStream = rd.socket();
    sock.as_fd()
}

/// Read buffer for a client's frames once its run has started.
pub(super) const CLIENT_BUFFER: usize = 256 * 1024;

/// Most frames sent in one write (two iovecs each, well under IOV_MAX): a whole read
/// of the attach connection's 4 KiB frames (bench/NOTES.md).
pub(super) const MAX_BATCH: usize = 128;

/// Most output bytes taken into one batch (docker's frames are at most 32 KiB, a
/// TTY's chunks at most the attach buffer): bounds what a connection holds.
pub(super) const BATCH_BYTES: usize = 1 << 20;

/// `first` and the outputs that are already decoded behind it, without waiting.
/// `true` if the stream ended (or failed) meanwhile: it must not be polled again.
pub(super) fn ready_outputs(
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
    pub(super) fn frame(&self) -> (Kind, &[u8]) {
        match self {
            Output::Stdout(b) => (Kind::Stdout, b),
            Output::Stderr(b) => (Kind::Stderr, b),
        }
    }
}

/// Reads the container's output and queues it for the client, whatever is already
/// decoded in one batch, once the previous batch is written: a client that does not
/// read slows down its own container's output and nothing else.
pub(super) async fn forward_output(
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

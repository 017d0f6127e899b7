//! The sending side of one connection: a writer task behind a bounded queue, so a
//! client that stops reading holds up only its own container's output.

use crate::engine::Output;
use crate::wire::{self, Kind};
use anyhow::Result;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;

/// Once a run is over, how long delivering what is left for the client (queued
/// output, the final frame) may go without the client taking a byte.
pub(super) const DELIVERY_STALL: Duration = Duration::from_secs(10);

/// What a connection's [`Outbox`] writes: container output (framed on the way out,
/// payloads uncopied; the permit is its [`Outbox::turn`], given back once written) or
/// one frame urund made.
pub(super) enum Out {
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
pub(super) struct Outbox {
    tx: tokio::sync::mpsc::Sender<Out>,
    task: tokio::task::JoinHandle<()>,
    /// Bytes written so far, to tell a slow client from one that takes nothing.
    written: Arc<AtomicU64>,
    /// One permit: container output is read only once the last batch is written.
    turn: Arc<tokio::sync::Semaphore>,
}

/// Messages queued for the writer besides the one it is writing.
pub(super) const OUTBOX_QUEUE: usize = 1;

impl Outbox {
    pub(super) fn spawn(wr: OwnedWriteHalf) -> Outbox {
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
    pub(super) async fn turn(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.turn
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Queues a batch of container output. `Err`: the client is gone (writing to it
    /// failed).
    pub(super) async fn output(
        &self,
        batch: Vec<Output>,
        turn: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(), ()> {
        let m = Out::Output { batch, _turn: turn };
        self.tx.send(m).await.map_err(|_| ())
    }

    /// Queues one frame, waiting while the queue is full. `Err`: the client is gone.
    pub(super) async fn frame(&self, kind: Kind, payload: Vec<u8>) -> Result<(), ()> {
        self.tx
            .send(Out::Frame(kind, payload))
            .await
            .map_err(|_| ())
    }

    /// Queues one frame if there is room now; drops it otherwise.
    pub(super) fn try_frame(&self, kind: Kind, payload: Vec<u8>) {
        let _ = self.tx.try_send(Out::Frame(kind, payload));
    }

    /// Queues the last frame, closes the queue and waits until everything is written
    /// and the sending side shut down, for as long as the client keeps taking bytes:
    /// after [`DELIVERY_STALL`] without one, the writer is stopped (closing the
    /// sending side) and what is left is dropped.
    pub(super) async fn finish(self, last: Option<(Kind, Vec<u8>)>) {
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
                // Waits for the aborted writer to be dropped (at once): the socket's
                // write half is gone before the connection's last reference is
                // closed off the event loop (review R2).
                abort.abort();
                done.await;
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
pub(super) async fn write_out(
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

/// Writes frames with as few system calls as possible: headers and payloads go out
/// in vectored writes, and payloads are not copied. Counts the bytes in `written`.
pub(super) async fn send_frames(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::tests::frames;
    use bytes::Bytes;
    use tokio::net::UnixStream;

    #[tokio::test]
    async fn frames_and_output_go_out_in_order_then_the_sending_side_closes() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let (_rd, wr) = server.into_split();
        let out = Outbox::spawn(wr);
        out.frame(Kind::Progress, b"p".to_vec()).await.unwrap();
        let turn = out.turn().await;
        let batch = vec![
            Output::Stdout(Bytes::from_static(b"out")),
            Output::Stderr(Bytes::from_static(b"err")),
        ];
        out.output(batch, turn).await.unwrap();
        // A payload over the frame limit is cut into frames of at most MAX_FRAME.
        let big = vec![7u8; wire::MAX_FRAME + 1];
        let turn = out.turn().await;
        out.output(vec![Output::Stdout(Bytes::from(big))], turn)
            .await
            .unwrap();
        let reader = tokio::spawn(async move { frames(&mut client).await });
        out.finish(Some((Kind::Exit, vec![0]))).await;
        let got = reader.await.unwrap();
        let kinds: Vec<(Kind, usize)> = got.iter().map(|(k, p)| (*k, p.len())).collect();
        assert_eq!(
            kinds,
            [
                (Kind::Progress, 1),
                (Kind::Stdout, 3),
                (Kind::Stderr, 3),
                (Kind::Stdout, wire::MAX_FRAME),
                (Kind::Stdout, 1),
                (Kind::Exit, 1),
            ]
        );
    }
}

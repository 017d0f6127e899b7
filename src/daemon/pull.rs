//! Pulling a missing image the policy allows, with progress frames to the client.

use super::outbox::Outbox;
use super::outbox::DELIVERY_STALL;
use super::Helper;
use crate::engine::PullEvent;
use crate::policy::reference::Reference;
use crate::wire::{Kind, Progress};
use anyhow::Result;
use std::time::{Duration, Instant};

/// Smallest interval between two byte-count progress frames of one pull.
pub(super) const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

impl Helper {
    /// Pulls a missing image (the judge allowed it), relaying progress to the client:
    /// status changes in order, byte counts only while the client keeps up.
    pub(super) async fn pull(&self, image: &Reference, out: &Outbox) -> Result<()> {
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
}

/// Queues one progress frame of a pull: a byte count only if there is room now, a
/// status change waiting for room for up to [`DELIVERY_STALL`]. `false`: the client
/// takes nothing (or is gone), and gets no more progress.
pub(super) async fn send_progress(out: &Outbox, counting: bool, frame: Vec<u8>) -> bool {
    if counting {
        out.try_frame(Kind::Progress, frame);
        return true;
    }
    let sent = tokio::time::timeout(DELIVERY_STALL, out.frame(Kind::Progress, frame)).await;
    matches!(sent, Ok(Ok(())))
}

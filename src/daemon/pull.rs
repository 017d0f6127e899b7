//! Pulling a missing image the policy allows, with progress frames to the client.

use super::outbox::Outbox;
use super::outbox::DELIVERY_STALL;
use super::Helper;
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
        self.pull_on(self.engine.as_ref(), image, out).await
    }

    /// [`Helper::pull`] on a given engine (the build engine's base images).
    pub(super) async fn pull_on(
        &self,
        engine: &dyn crate::engine::Engine,
        image: &Reference,
        out: &Outbox,
    ) -> Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        let pull = engine.pull(
            image,
            Box::new(move |ev| {
                let _ = tx.send(ev);
            }),
        );
        tokio::pin!(pull);
        let mut throttle = Throttle::default();
        // A byte count is dropped if the client is behind; a status change waits for
        // room, but not for a client that takes nothing: then progress stops.
        let mut reading = true;
        let result = loop {
            tokio::select! {
                r = &mut pull => break r,
                Some(ev) = rx.recv() => {
                    if let (true, Some((counting, frame))) = (reading, throttle.frame(ev)) {
                        reading = send_progress(out, counting, frame).await;
                    }
                }
            }
        };
        while let Ok(ev) = rx.try_recv() {
            if let (true, Some((counting, frame))) = (reading, throttle.frame(ev)) {
                reading = send_progress(out, counting, frame).await;
            }
        }
        result
    }
}

/// Which progress events of one pull become frames: byte counts at most one per
/// [`PROGRESS_INTERVAL`], status changes always.
#[derive(Default)]
pub(super) struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    /// The event's frame payload, and whether it is a byte count (droppable); `None`:
    /// a byte count too soon after the last one.
    pub(super) fn frame(&mut self, ev: Progress) -> Option<(bool, Vec<u8>)> {
        let counting = ev.current.is_some() && ev.status != "Download complete";
        if counting && self.last.is_some_and(|t| t.elapsed() < PROGRESS_INTERVAL) {
            return None;
        }
        if counting {
            self.last = Some(Instant::now());
        }
        Some((
            counting,
            serde_json::to_vec(&ev).expect("Progress serialises"),
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(status: &str, current: Option<u64>) -> Progress {
        Progress {
            image: "busybox:latest".into(),
            id: "layer".into(),
            status: status.into(),
            current,
            total: Some(100),
        }
    }

    #[test]
    fn byte_counts_are_throttled_but_status_changes_always_go_through() {
        let mut t = Throttle::default();
        assert_eq!(t.frame(ev("Downloading", Some(1))).map(|f| f.0), Some(true));
        assert!(t.frame(ev("Downloading", Some(2))).is_none());
        assert_eq!(
            t.frame(ev("Download complete", Some(100))).map(|f| f.0),
            Some(false)
        );
        assert_eq!(t.frame(ev("Pull complete", None)).map(|f| f.0), Some(false));
        let (_, payload) = t.frame(ev("Extracting", None)).unwrap();
        let back: Progress = serde_json::from_slice(&payload).unwrap();
        assert_eq!(back, ev("Extracting", None));
    }
}

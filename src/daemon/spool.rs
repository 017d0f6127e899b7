//! Where a build's context waits while urund receives it, and the bounds on that
//! wait (review finding B3).
//!
//! A context is spooled into an unlinked root-only file in `<state dir>/spool`
//! (on disk, never the runtime directory under `/run`, a tmpfs: RAM shared with every
//! service). Across all users, every context being received reserves
//! `[build] max_context` bytes, and a new one is accepted only while the spool's
//! filesystem keeps [`MIN_FREE`] free after all reservations, and fewer than
//! [`MAX_RECEIVING`] contexts are being received: one member, or several, cannot fill
//! the disk or hold every slot (refused with one line, 125, rule `build.spool`). A
//! client that stops sending is cut off: [`IDLE`] without a frame, or [`TOTAL`] for
//! the whole context, whatever `[build] max_runtime` says.

use crate::policy::rule::{Refusal, Rule};
use crate::system;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The spool's directory inside urund's state directory.
pub const SPOOL_DIR: &str = "spool";
/// Free space the spool's filesystem keeps after every reservation.
pub const MIN_FREE: u64 = 1 << 30;
/// Contexts being received at once, across all users.
pub const MAX_RECEIVING: usize = 16;
/// Longest wait for the client's next context frame.
pub const IDLE: Duration = Duration::from_secs(60);
/// Longest time for the whole context.
pub const TOTAL: Duration = Duration::from_secs(600);

/// Contexts being received: their reservations, shared by all connections.
#[derive(Default)]
pub struct Reservations {
    inner: Mutex<(usize, u64)>,
}

/// One context's reservation, released when dropped (with the spooled file).
pub struct Room {
    all: Arc<Reservations>,
    bytes: u64,
}

impl Drop for Room {
    fn drop(&mut self) {
        let mut r = self.all.inner.lock().unwrap_or_else(|p| p.into_inner());
        r.0 = r.0.saturating_sub(1);
        r.1 = r.1.saturating_sub(self.bytes);
    }
}

/// Whether one more context of up to `want` bytes may be received: fewer than
/// [`MAX_RECEIVING`] are, and `free` bytes minus every reservation leave `want` and
/// [`MIN_FREE`]. Pure.
pub fn room_for(free: u64, receiving: usize, reserved: u64, want: u64) -> Result<(), String> {
    if receiving >= MAX_RECEIVING {
        return Err(format!(
            "urund is busy: {receiving} build contexts are being received (at most \
             {MAX_RECEIVING} at once); try again later"
        ));
    }
    if free.saturating_sub(reserved) < want.saturating_add(MIN_FREE) {
        return Err(
            "urund is busy: not enough free disk space to receive another build context \
             now; try again later"
                .into(),
        );
    }
    Ok(())
}

/// The spool directory under `state` (created 0700 if missing); it must be a real
/// directory of urund's user that nobody else can use.
pub fn dir(state: &Path) -> std::io::Result<PathBuf> {
    let d = state.join(SPOOL_DIR);
    match std::fs::DirBuilder::new().mode(0o700).create(&d) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let m = std::fs::symlink_metadata(&d)?;
    if !m.is_dir() || m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a directory of urund's own, closed to others",
            d.display()
        )));
    }
    Ok(d)
}

impl Reservations {
    /// Reserves room for a context of up to `want` bytes spooled in `dir`, and creates
    /// its file there (unlinked at once).
    pub fn open(
        self: &Arc<Self>,
        dir: &Path,
        name: &str,
        want: u64,
    ) -> Result<(File, Room), Refusal> {
        let failed = |e: std::io::Error| {
            eprintln!("urund: spooling a build context in {}: {e}", dir.display());
            Refusal::new(
                Rule::BuildSpool,
                "urund cannot spool the build context now (its log says why)",
            )
        };
        let d = File::open(dir).map_err(failed)?;
        let free = system::free_bytes(d.as_fd()).map_err(failed)?;
        let room = {
            let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            room_for(free, r.0, r.1, want).map_err(|m| Refusal::new(Rule::BuildSpool, m))?;
            r.0 += 1;
            r.1 = r.1.saturating_add(want);
            Room {
                all: self.clone(),
                bytes: want,
            }
        };
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(failed)?;
        // Unlinked at once: nothing to clean up, whatever happens.
        let _ = std::fs::remove_file(&path);
        Ok((file, room))
    }
}

/// Test hook, debug builds only: `URUND_TEST_CONTEXT_IDLE_MS=N` makes [`IDLE`] N ms,
/// so that the end-to-end test of a stalled client does not wait a minute. Release
/// builds ignore it.
pub fn idle() -> Duration {
    if cfg!(debug_assertions) {
        if let Some(ms) = std::env::var("URUND_TEST_CONTEXT_IDLE_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            return Duration::from_millis(ms);
        }
    }
    IDLE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_is_received_only_with_room_for_it_across_users() {
        let g = 1u64 << 30;
        assert!(room_for(10 * g, 0, 0, g).is_ok());
        // the reservations of contexts being received count, whoever sends them
        assert!(room_for(10 * g, 3, 9 * g, g)
            .unwrap_err()
            .contains("disk space"));
        assert!(room_for(10 * g, 3, 8 * g, g).is_ok());
        assert!(room_for(2 * g, 0, 0, g).is_ok());
        assert!(room_for(2 * g - 1, 0, 0, g).is_err());
        assert!(room_for(u64::MAX, MAX_RECEIVING, 0, 1)
            .unwrap_err()
            .contains("at most 16 at once"));
        assert!(room_for(0, 0, u64::MAX, u64::MAX).is_err());
    }

    #[test]
    fn a_reservation_is_released_with_its_file() {
        let dir = std::env::temp_dir().join(format!("urun-spool-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let spool = super::dir(&dir).unwrap();
        let all = Arc::new(Reservations::default());
        let (f, room) = all.open(&spool, "context-x", 4096).unwrap();
        assert_eq!(*all.inner.lock().unwrap(), (1, 4096));
        assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "unlinked");
        drop((f, room));
        assert_eq!(*all.inner.lock().unwrap(), (0, 0));
        // A spool directory others can use is refused.
        std::fs::set_permissions(&spool, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        assert!(super::dir(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

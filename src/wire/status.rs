//! Exit statuses urun returns besides the container's own, shared by client and
//! daemon: docker run's for runner errors, GNU `timeout`'s for a run over its time.
#![forbid(unsafe_code)]

/// A run killed because it exceeded `limits.max_runtime` (as GNU `timeout` has it).
pub const MAX_RUNTIME: u8 = 124;
/// urun or urund failed, a flag or the policy refused the request, or the Docker
/// daemon failed (docker run's 125).
pub const REFUSED: u8 = 125;
/// The command exists but cannot be executed (docker run's 126).
pub const NOT_EXECUTABLE: u8 = 126;
/// The command was not found (docker run's 127).
pub const NOT_FOUND: u8 = 127;
/// Added to a signal's number for a process it killed.
pub const SIGNAL_BASE: u8 = 128;
/// Killed by SIGKILL: a run whose client went away.
pub const KILLED: u8 = SIGNAL_BASE + 9;

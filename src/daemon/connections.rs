//! Which connections urund takes, decided at `accept` from the uid the kernel reports
//! and before any byte is read, so that one member holding connections open cannot take
//! the descriptors everyone else's runs, and the clean-up of running containers, need:
//!
//! - connections that are not running a container (waiting for their request, or
//!   for urund's answer to it: a refusal, `urun --policy`) are capped per uid
//!   (`connections.per_user`) and in total (`connections.total`); a connection that
//!   runs a container counts against `limits.max_concurrent` instead;
//! - all open connections are capped by urund's open-files limit minus a reserve
//!   ([`budget`]), counting for each one what its run may come to need, so the
//!   descriptors for Docker (attach, kill, wait, remove) and for clean-up are never
//!   taken by connections.
//!
//! Pure bookkeeping: the server keeps one [`Table`] and refuses a connection with the
//! [`Refusal`] it returns.
#![forbid(unsafe_code)]

use crate::policy::rule::{Refusal, Rule};
use crate::policy::Connections;
use std::collections::HashMap;

/// Descriptors kept for urund itself whatever its connections do: standard streams,
/// the runtime's own, the listening socket, the audit file and syslog, the spare
/// descriptor kept to answer a client when out of descriptors, and the short-lived
/// ones of clean-up (reading mountinfo, per-run files, Docker calls of the shutdown).
pub const RESERVE: u64 = 128;

/// Descriptors one connection may come to need if it becomes a run: its own socket
/// and the last reference urund keeps of it (review R2), a passed working directory
/// and a passed stdin (each a copy urund uses and the last reference it keeps), the
/// two ends of urund's pipe the stdin is moved into and of its thread's own pipe, the
/// container's attach stream (two: its reader's and its writer's) and the timer of
/// its output's pauses, and up to three Docker API connections at once (wait, a
/// signal or resize, remove). A connection that passed more than a request may carry
/// is ended, what it passed parked in one descriptor (`system::park_fds`), twice at
/// most: within the same count.
pub const PER_CONNECTION: u64 = 16;

/// The most connections urund keeps open at once with an open-files limit of `nofile`:
/// every one of them may become a run, and [`RESERVE`] stays free. At least 1.
pub fn budget(nofile: u64) -> u32 {
    let n = nofile.saturating_sub(RESERVE) / PER_CONNECTION;
    n.clamp(1, u64::from(u32::MAX)) as u32
}

/// The connections urund holds now.
#[derive(Debug, Default)]
pub struct Table {
    /// Open connections, from `accept` to close.
    open: u32,
    /// Of those, the idle ones: not running a container.
    idle: u32,
    /// The idle ones by uid (only uids with at least one).
    idle_by_uid: HashMap<u32, u32>,
    /// Connections refused at `accept` whose close has not returned yet, by uid (only
    /// uids with at least one): counted against their uid's `per_user` cap and as
    /// open, never against `total` (review R2: a client can make a close wait).
    closing_by_uid: HashMap<u32, u32>,
}

impl Table {
    /// Counts one more connection of `uid`, idle until [`Table::not_idle`], or says why not
    /// (then nothing is counted). `max_open` is [`budget`] of urund's limit; `nofile`
    /// that limit, for the message.
    pub fn admit(
        &mut self,
        uid: u32,
        caps: &Connections,
        max_open: u32,
        nofile: u64,
    ) -> Result<(), Refusal> {
        let mine = self.idle_by_uid.get(&uid).copied().unwrap_or(0);
        let closing = self.closing_by_uid.get(&uid).copied().unwrap_or(0);
        if mine.saturating_add(closing) >= caps.per_user.0 {
            return Err(Refusal {
                rule: Rule::ConnectionsPerUser,
                message: format!(
                    "you have {} connections to urund that are not running a container \
                     (waiting to send a request or for its answer, or to be closed), the most allowed \
                     (policy connections.per_user = {}); close them and try again",
                    mine.saturating_add(closing),
                    caps.per_user.0
                ),
            });
        }
        if self.idle >= caps.total.0 {
            return Err(Refusal {
                rule: Rule::ConnectionsTotal,
                message: format!(
                    "urund has {} connections that are not running a container, the most \
                     allowed (policy connections.total = {}); try again in a few seconds",
                    self.idle, caps.total.0
                ),
            });
        }
        if self.open >= max_open {
            return Err(Refusal {
                rule: Rule::ConnectionsDescriptors,
                message: format!(
                    "urund has {} connections open, the most its open-files limit of \
                     {nofile} leaves room for (connections.descriptors; LimitNOFILE= of \
                     urund.service); try again later",
                    self.open
                ),
            });
        }
        self.open += 1;
        self.idle += 1;
        self.idle_by_uid.insert(uid, mine + 1);
        Ok(())
    }

    /// A connection of `uid` admitted by [`Table::admit`] no longer counts as idle: it
    /// runs a container now, or it is closed. Call once per connection.
    pub fn not_idle(&mut self, uid: u32) {
        self.idle = self.idle.saturating_sub(1);
        match self.idle_by_uid.get(&uid).copied() {
            Some(n) if n > 1 => {
                self.idle_by_uid.insert(uid, n - 1);
            }
            _ => {
                self.idle_by_uid.remove(&uid);
            }
        }
    }

    /// A connection of `uid` that was running a container is being closed: it counts
    /// as idle again (against its uid's `per_user` cap) until [`Table::closed`], since
    /// its close may wait for as long as the client likes (review R2). Call at most
    /// once per connection, after [`Table::not_idle`].
    pub fn idle_again(&mut self, uid: u32) {
        self.idle += 1;
        *self.idle_by_uid.entry(uid).or_insert(0) += 1;
    }

    /// A connection of `uid` refused at `accept` (never admitted) is being closed:
    /// counted as open, and against its uid's `per_user` cap, until
    /// [`Table::refused_closed`].
    pub fn refused_closing(&mut self, uid: u32) {
        self.open += 1;
        *self.closing_by_uid.entry(uid).or_insert(0) += 1;
    }

    /// The close of a connection counted by [`Table::refused_closing`] returned.
    pub fn refused_closed(&mut self, uid: u32) {
        self.open = self.open.saturating_sub(1);
        match self.closing_by_uid.get(&uid).copied() {
            Some(n) if n > 1 => {
                self.closing_by_uid.insert(uid, n - 1);
            }
            _ => {
                self.closing_by_uid.remove(&uid);
            }
        }
    }

    /// A connection admitted by [`Table::admit`] is closed.
    pub fn closed(&mut self) {
        self.open = self.open.saturating_sub(1);
    }

    pub fn open(&self) -> u32 {
        self.open
    }

    pub fn idle(&self) -> u32 {
        self.idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Count;

    fn caps(per_user: u32, total: u32) -> Connections {
        Connections {
            per_user: Count(per_user),
            total: Count(total),
        }
    }

    #[test]
    fn the_budget_keeps_the_reserve_and_room_for_each_connections_run() {
        assert_eq!(budget(1024), (1024 - 128) / 16);
        assert_eq!(budget(65536), (65536 - 128) / 16);
        for n in [1024u64, 4096, 65536, 524288] {
            assert!(u64::from(budget(n)) * PER_CONNECTION + RESERVE <= n);
        }
        // never zero, even with an absurdly small limit
        assert_eq!(budget(0), 1);
        assert_eq!(budget(100), 1);
        assert_eq!(budget(u64::MAX), u32::MAX);
    }

    #[test]
    fn one_user_over_the_cap_is_refused_and_others_are_not() {
        let c = caps(3, 100);
        let mut t = Table::default();
        for _ in 0..3 {
            t.admit(1001, &c, 1000, 65536).unwrap();
        }
        let r = t.admit(1001, &c, 1000, 65536).unwrap_err();
        assert_eq!(r.rule, Rule::ConnectionsPerUser);
        assert!(
            r.message.contains("connections.per_user = 3"),
            "{}",
            r.message
        );
        assert!(!r.message.contains('\n'));
        // the refusal counted nothing; another user is served
        assert_eq!((t.open(), t.idle()), (3, 3));
        t.admit(1002, &c, 1000, 65536).unwrap();
        // a connection that runs a container frees its uid's place, not the open count
        t.not_idle(1001);
        assert_eq!((t.open(), t.idle()), (4, 3));
        t.admit(1001, &c, 1000, 65536).unwrap();
    }

    #[test]
    fn the_total_of_idle_connections_is_capped() {
        let c = caps(2, 3);
        let mut t = Table::default();
        t.admit(1, &c, 1000, 65536).unwrap();
        t.admit(1, &c, 1000, 65536).unwrap();
        t.admit(2, &c, 1000, 65536).unwrap();
        let r = t.admit(3, &c, 1000, 65536).unwrap_err();
        assert_eq!(r.rule, Rule::ConnectionsTotal);
        assert!(r.message.contains("connections.total = 3"), "{}", r.message);
        t.not_idle(2);
        t.admit(3, &c, 1000, 65536).unwrap();
    }

    #[test]
    fn open_connections_are_capped_by_the_descriptor_budget() {
        let c = caps(100, 100);
        let mut t = Table::default();
        for uid in 0..5 {
            t.admit(uid, &c, 5, 158).unwrap();
            t.not_idle(uid);
        }
        // all five are running now: none is idle, but they hold descriptors
        assert_eq!((t.open(), t.idle()), (5, 0));
        let r = t.admit(9, &c, 5, 158).unwrap_err();
        assert_eq!(r.rule, Rule::ConnectionsDescriptors);
        assert!(
            r.message.contains("open-files limit of 158"),
            "{}",
            r.message
        );
        assert!(
            r.message.contains("connections.descriptors"),
            "{}",
            r.message
        );
        t.closed();
        t.admit(9, &c, 5, 158).unwrap();
    }

    #[test]
    fn closes_that_wait_count_against_their_own_users_cap_only() {
        let c = caps(2, 3);
        let mut t = Table::default();
        // a run of uid 1 ends, its close waits: idle again
        t.admit(1, &c, 1000, 65536).unwrap();
        t.not_idle(1);
        t.idle_again(1);
        // a refused connection of uid 1 whose close waits
        t.refused_closing(1);
        let r = t.admit(1, &c, 1000, 65536).unwrap_err();
        assert_eq!(r.rule, Rule::ConnectionsPerUser);
        assert!(
            r.message.contains("you have 2 connections"),
            "{}",
            r.message
        );
        // not against the total: uid 2 still gets in
        t.admit(2, &c, 1000, 65536).unwrap();
        assert_eq!((t.open(), t.idle()), (3, 2));
        t.refused_closed(1);
        t.admit(1, &c, 1000, 65536).unwrap();
        assert_eq!((t.open(), t.idle()), (3, 3));
    }

    #[test]
    fn counts_never_underflow() {
        let mut t = Table::default();
        t.not_idle(7);
        t.closed();
        assert_eq!((t.open(), t.idle()), (0, 0));
    }
}

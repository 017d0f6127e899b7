//! Who is on the other end of a connection: a value built from the kernel's answer
//! (`SO_PEERCRED`, `SO_PEERGROUPS`) by the OS boundary, never from anything a client
//! sends. Pure.

/// The caller of one connection, as the kernel reports it at `connect()` time.
/// Built only by `system::peer_caller`: nothing a client sends can change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// Supplementary groups (`SO_PEERGROUPS`), or from the user database when the
    /// kernel cannot say.
    pub groups: Vec<u32>,
    /// User name from the user database; `None` when the uid has no entry.
    pub name: Option<String>,
    /// The name of the group `gid` from the user database; `None` when it has none.
    pub group: Option<String>,
}

impl Caller {
    /// The name for messages and labels: the user name, or the uid.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.uid.to_string())
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

#[cfg(test)]
impl Caller {
    /// alice, uid 1001, gid 1002, also in group 27: for unit tests.
    pub fn example() -> Caller {
        Caller {
            uid: 1001,
            gid: 1002,
            pid: 4242,
            groups: vec![1002, 27],
            name: Some("alice".into()),
            group: Some("alice".into()),
        }
    }
}

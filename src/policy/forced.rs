//! The forced settings in words ([`FORCED`], shown by `urun --help` and in
//! SECURITY.md) and the pure values they are built from: the labels that prove a
//! container is urund's ([`Owner`]), `HOME`, the environment, what urund prepared for a
//! run ([`Inside`]). Docker's container configuration is built from them, row by row
//! and tested against this table, by [`crate::engine::config`].
#![forbid(unsafe_code)]

use crate::policy::Caller;
use crate::wire::Request;
use std::collections::HashMap;
use std::path::PathBuf;

/// Label keys every urun container carries (audit and clean-up).
pub const LABEL_UID: &str = "io.urun.uid";
pub const LABEL_USER: &str = "io.urun.user";
pub const LABEL_REQUEST: &str = "io.urun.request";
/// Which helper instance (by socket path) owns the container: a helper only reaps its own.
pub const LABEL_HELPER: &str = "io.urun.helper";
/// The `--name` the user gave the run. Never Docker's container name: on a user-defined
/// network Docker's DNS resolves container names for every container on it.
pub const LABEL_NAME: &str = "io.urun.name";
/// The installation's secret (see [`crate::daemon::instance`]): what proves to the clean-up
/// that urund created the container. No image and no other user can know it.
pub const LABEL_INSTANCE: &str = "io.urun.instance";

/// What proves a container is this urund's: its socket path and the installation's
/// secret, as labels urund sets at create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The socket path: which urund of the installation (several may share a secret).
    pub helper: String,
    /// The installation's secret (`crate::daemon::instance::load_or_create_secret`).
    pub secret: String,
}

impl Owner {
    /// The labels urund puts on every container it creates (runs and probes).
    pub fn labels(&self, request: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_HELPER.to_string(), self.helper.clone()),
            (LABEL_INSTANCE.to_string(), self.secret.clone()),
            (LABEL_REQUEST.to_string(), request.to_string()),
        ])
    }

    /// Whether a container is proven to be one urund created: its labels carry this
    /// helper's socket and the secret, and its image's own labels do not carry the
    /// secret (an image that does was made from one of urund's containers, or by
    /// someone who knows it: a container of it has the secret without its creator
    /// knowing it). An image's instance label with any other value proves nothing
    /// either way: Docker gives a container its creator's value for a key both set, so
    /// the secret on the container came from its creator. (Refusing every image with
    /// the key made any image labelled `io.urun.instance=x` one whose runs urund never
    /// reaped after a crash, so they outlived `max_runtime`.) `Err` says why not. Pure.
    pub fn proves(
        &self,
        container: &HashMap<String, String>,
        image: &HashMap<String, String>,
    ) -> Result<(), &'static str> {
        if container.get(LABEL_INSTANCE) != Some(&self.secret) {
            return Err("it does not carry this installation's secret label");
        }
        if container.get(LABEL_HELPER) != Some(&self.helper) {
            return Err("it belongs to another urund (another socket)");
        }
        if image.get(LABEL_INSTANCE) == Some(&self.secret) {
            return Err("its image carries the instance label itself");
        }
        Ok(())
    }
}

/// The forced settings in words: (setting, value). Printed by `urun --help`.
pub const FORCED: &[(&str, &str)] = &[
    (
        "User",
        "your uid:gid, numeric (never a name the image could redefine)",
    ),
    ("CapDrop / CapAdd", "ALL / none"),
    ("Privileged", "false"),
    (
        "SecurityOpt",
        "no-new-privileges; the daemon's seccomp/AppArmor/SELinux defaults kept",
    ),
    ("ReadonlyRootfs", "true"),
    (
        "Tmpfs",
        "/tmp and $HOME, each rw,nosuid,nodev,noexec, sized, owned by you (/tmp mode 1777 \
         unless the image's /tmp has another mode, $HOME 0700)",
    ),
    (
        "Image VOLUMEs",
        "each an empty tmpfs like /tmp (policy images.volumes = \"tmpfs\"), or the image is \
         refused (\"refuse\"); never a disk-backed Docker volume",
    ),
    ("Ulimits", "nofile and nproc from policy, core=0"),
    (
        "Memory / PidsLimit / CPU",
        "from policy, always set; no extra swap",
    ),
    (
        "Network",
        "none (only lo), or with policy network.mode = \"isolated\" the helper's bridge \
         urun-isolated, where containers cannot reach each other; never host",
    ),
    ("Pid/Ipc/Uts/Userns/Cgroupns", "private, never host"),
    (
        "Devices, ports, links, volumes-from, host binds",
        "none, except the two below",
    ),
    (
        "/etc/passwd, /etc/group",
        "read-only: the image's entries minus any claiming your uid, gid or names, plus yours",
    ),
    (
        "Working directory (-v \"$PWD\":DIR, --here)",
        "only if policy [mounts] allows: the directory you opened, pinned, with every \
         restriction of its own mount (ro, noexec, ...) plus nosuid,nodev (ro with :ro)",
    ),
    (
        "GroupAdd",
        "none, or with policy identity.groups = \"caller\" your groups minus the denied ones",
    ),
    (
        "Runtime",
        "from policy [runtime] (runc, or a sandbox such as gVisor's runsc, by user, group \
         or image), also for the identity-file probe; never from the request",
    ),
    ("Init", "docker-init as PID 1 (signals and zombies handled)"),
    (
        "Healthcheck",
        "off (NONE): an image HEALTHCHECK never runs (each probe is a dockerd exec)",
    ),
    ("LogConfig", "none (output goes only to you)"),
    (
        "RestartPolicy / removal",
        "no / removed as soon as it exits or you disconnect",
    ),
    (
        "Labels, name",
        "io.urun.uid, io.urun.user, io.urun.request (owner uid, user name, request id), \
         io.urun.name (--name), io.urun.helper (urund's socket), io.urun.instance (its \
         secret: clean-up removes only containers that carry it); Docker's own name is its \
         random one",
    ),
    (
        "Env",
        "HOME forced to yours; from -e only names the policy allows (plus the image's own)",
    ),
];

/// Where `HOME` is inside the container: `/home/<name>` for a plain user name,
/// `/home/<uid>` otherwise (names from the user database are not trusted as paths).
pub fn home_dir(caller: &Caller) -> String {
    match &caller.name {
        Some(n) if crate::policy::names::home_name(n) => format!("/home/{n}"),
        _ => format!("/home/{}", caller.uid),
    }
}

/// The environment: `HOME` from urund, then the user's entries the judge allowed,
/// never one that names `HOME` again.
pub fn environment(caller: &Caller, req: &Request) -> Vec<String> {
    let mut env = vec![format!("HOME={}", home_dir(caller))];
    env.extend(req.env.iter().filter(|e| !e.starts_with("HOME=")).cloned());
    env
}

/// What the helper prepared for this run beyond the request: the identity files and
/// the pinned working directory (paths in urund's root-only runtime directory), and the
/// supplementary groups the policy passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inside {
    pub passwd: Option<PathBuf>,
    pub group: Option<PathBuf>,
    pub groups: Vec<u32>,
    pub work: Option<WorkMount>,
    /// The image's `VOLUME` paths, checked (`reference::volume_paths`): each gets a tmpfs.
    pub volumes: Vec<String>,
}

/// The pinned working directory: `source` is urund's private mount point, never a
/// path from the request. Read-only is enforced on that pinned mount itself (see
/// SECURITY.md: asking Docker for `ro` would make runc remount it without
/// nosuid,nodev).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkMount {
    pub source: PathBuf,
    pub target: String,
}

/// Labels identifying a run: owner, request, the helper's own (socket path and secret,
/// see [`crate::daemon::instance::Owner`]), and the `--name` the user gave it (validated by the
/// judge).
pub fn labels(
    caller: &Caller,
    request_id: &str,
    owner: &Owner,
    name: Option<&str>,
) -> HashMap<String, String> {
    let mut l = owner.labels(request_id);
    l.insert(LABEL_UID.to_string(), caller.uid.to_string());
    l.insert(LABEL_USER.to_string(), caller.display_name());
    if let Some(n) = name {
        l.insert(LABEL_NAME.to_string(), n.to_string());
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller::example()
    }

    #[test]
    fn home_never_comes_from_an_odd_name() {
        let mut c = caller();
        for (name, want) in [
            (Some("bob"), "/home/bob"),
            (Some("../etc"), "/home/1001"),
            (Some("a/b"), "/home/1001"),
            (Some(".x"), "/home/1001"),
            (None, "/home/1001"),
        ] {
            c.name = name.map(String::from);
            assert_eq!(home_dir(&c), want);
        }
    }

    #[test]
    fn every_row_is_documented() {
        assert_eq!(FORCED.len(), 22);
        assert!(FORCED.iter().all(|(k, v)| !k.is_empty() && !v.is_empty()));
    }
}

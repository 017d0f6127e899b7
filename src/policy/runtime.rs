//! `[runtime]`: which OCI runtime (runc, or a sandbox such as gVisor's `runsc`) a
//! container runs under. Chosen from the policy only, never from the request
//! (`--runtime` is refused), by the rules below. Pure.
//!
//! ```toml
//! [runtime]
//! name = "runc"                    # everyone, unless a table below says otherwise
//!
//! [[runtime.image]]                # images whose any name matches run under `name`
//! match = "untrusted/*"
//! name = "runsc"
//!
//! [group.students.runtime]
//! name = "runsc"
//!
//! [user.alice.runtime]
//! name = "runc"
//! ```
//!
//! Precedence, in this order:
//! 1. the caller's runtime: `[user.NAME.runtime]` (by name or uid) if present; else the
//!    `[group.NAME.runtime]` tables of the caller's groups, the stricter winning (a
//!    sandbox over a host-kernel runtime; between two different sandboxes, the group
//!    first in name order); else `[runtime] name`;
//! 2. the image's runtime: the first `[[runtime.image]]` whose pattern matches the
//!    reference as typed (familiar form, as `images.allow`) or any name Docker has for
//!    the image (its tags and repository digests), so naming the image by ID or
//!    another tag does not escape the rule;
//! 3. if both exist, the stricter: an image rule never lets a sandboxed caller out of
//!    the sandbox, and a sandbox an image rule names wins over the caller's runc. If
//!    both are (different) sandboxes, the image rule's wins: it names what the image is
//!    meant to run under.
#![forbid(unsafe_code)]

use crate::policy::model::{Pattern, Policy};
use serde::{de, Deserialize, Deserializer};
use std::collections::BTreeSet;
use std::fmt;

/// The runtime when the policy names none.
pub const DEFAULT_RUNTIME: &str = "runc";

/// Runtimes that run the container's processes directly on the host kernel (Docker
/// registers runc under these names). Every other registered runtime is taken as a
/// sandbox, stricter than these.
pub const HOST_KERNEL_RUNTIMES: &[&str] = &[
    "runc",
    "io.containerd.runc.v2",
    "io.containerd.runc.v1",
    "io.containerd.runtime.v1.linux",
];

/// A runtime name as Docker registers it in daemon.json (`runtimes`): letters,
/// digits, `.`, `_`, `-`, at most 64 bytes, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuntimeName(pub String);

impl RuntimeName {
    /// Whether it is a sandbox (not one of [`HOST_KERNEL_RUNTIMES`]).
    pub fn is_sandbox(&self) -> bool {
        !HOST_KERNEL_RUNTIMES.contains(&self.0.as_str())
    }

    pub fn valid(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }
}

impl Default for RuntimeName {
    fn default() -> Self {
        RuntimeName(DEFAULT_RUNTIME.into())
    }
}

impl fmt::Display for RuntimeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RuntimeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if RuntimeName::valid(&s) {
            Ok(RuntimeName(s))
        } else {
            Err(de::Error::custom(format!(
                "invalid runtime name {s:?}: letters, digits, '.', '_', '-' (as registered \
                 in dockerd's daemon.json \"runtimes\")"
            )))
        }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Everyone's runtime unless an override table or an image rule says otherwise.
    pub name: RuntimeName,
    /// `[[runtime.image]]`: images that always run under a named runtime.
    pub image: Vec<ImageRule>,
}

/// `[[runtime.image]]`: images matching `match` run under `name`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRule {
    /// A glob on the image's names (familiar form, as `images.allow`).
    #[serde(rename = "match")]
    pub pattern: Pattern,
    pub name: RuntimeName,
}

/// `[group.NAME.runtime]`, `[user.NAME.runtime]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeOverride {
    pub name: RuntimeName,
}

/// The stricter of two runtimes: a sandbox over a host-kernel runtime, else `a`.
fn stricter<'a>(a: &'a RuntimeName, b: &'a RuntimeName) -> &'a RuntimeName {
    if b.is_sandbox() && !a.is_sandbox() {
        b
    } else {
        a
    }
}

impl Policy {
    /// Step 1 of the precedence (see the module): the caller's runtime, whatever the
    /// image. Pure.
    pub fn caller_runtime(
        &self,
        uid: u32,
        name: Option<&str>,
        member_of: impl Fn(&str) -> bool,
    ) -> &RuntimeName {
        let user = self
            .user
            .iter()
            .find(|(k, _)| Some(k.as_str()) == name || *k == &uid.to_string())
            .and_then(|(_, o)| o.runtime.as_ref());
        if let Some(u) = user {
            return &u.name;
        }
        self.group
            .iter()
            .filter(|(g, _)| member_of(&g.0))
            .filter_map(|(_, o)| o.runtime.as_ref().map(|r| &r.name))
            .reduce(stricter)
            .unwrap_or(&self.runtime.name)
    }

    /// Step 2: the runtime of the first image rule that matches one of `names` (the
    /// reference as judged, in familiar form, and the names Docker has for the
    /// image). Pure.
    pub fn image_runtime<'a>(&'a self, names: &[&str]) -> Option<&'a ImageRule> {
        self.runtime
            .image
            .iter()
            .find(|r| names.iter().any(|n| r.pattern.matches(n)))
    }

    /// The runtime a run gets: steps 1 to 3 of the precedence. Pure.
    pub fn effective_runtime(
        &self,
        uid: u32,
        name: Option<&str>,
        member_of: impl Fn(&str) -> bool,
        image_names: &[&str],
    ) -> RuntimeName {
        let caller = self.caller_runtime(uid, name, member_of);
        match self.image_runtime(image_names) {
            Some(rule) if rule.name.is_sandbox() || !caller.is_sandbox() => rule.name.clone(),
            _ => caller.clone(),
        }
    }

    /// Every runtime the policy names anywhere: urund checks at start that the daemon
    /// has each one registered.
    pub fn runtimes(&self) -> BTreeSet<String> {
        let mut all = BTreeSet::from([self.runtime.name.0.clone()]);
        all.extend(self.runtime.image.iter().map(|r| r.name.0.clone()));
        let overrides = self.group.values().chain(self.user.values());
        all.extend(overrides.filter_map(|o| o.runtime.as_ref().map(|r| r.name.0.clone())));
        all
    }
}

/// The smallest pids limit a policy that names a sandbox may have. Under gVisor the
/// container's pids cgroup counts the sandbox's own host threads (its Go runtime, the
/// gofer, and on the ptrace platform one per task) besides the processes inside: on
/// this kind of host a sandbox running only `sh` hung at start with pids 32, was ended
/// (exit 2) with 48 and 64, ran with 96; one that reaches the limit is ended instead
/// of a fork failing. 512 leaves room for a few hundred processes; inside the sandbox the
/// number of processes is bounded by `nproc`, which gVisor enforces (fork fails with
/// EAGAIN).
pub const SANDBOX_MIN_PIDS: u32 = 512;

/// Why the policy's limits do not work under a sandbox it names (urund refuses to
/// start): the smallest pids limit, if below [`SANDBOX_MIN_PIDS`]. Pure.
pub fn sandbox_limits_problem(policy: &Policy) -> Option<String> {
    let sandbox = policy
        .runtimes()
        .into_iter()
        .find(|n| RuntimeName(n.clone()).is_sandbox())?;
    let (table, pids) = policy
        .group
        .iter()
        .filter_map(|(g, o)| {
            o.limits
                .pids
                .map(|p| (format!("group.{}.limits", g.0), p.0))
        })
        .chain(
            policy
                .user
                .iter()
                .filter_map(|(u, o)| o.limits.pids.map(|p| (format!("user.{u}.limits"), p.0))),
        )
        .chain([("limits".to_string(), policy.limits.pids.0)])
        .min_by_key(|(_, p)| *p)?;
    (pids < SANDBOX_MIN_PIDS).then(|| {
        format!(
            "policy names the sandbox runtime {sandbox}, whose own threads count against the \
             pids limit, but [{table}] pids = {pids}: a sandboxed run would hang or be ended; \
             set every pids limit to at least {SANDBOX_MIN_PIDS} (nproc still bounds the \
             processes inside the sandbox)"
        )
    })
}

/// The runtimes in `wanted` that `registered` (the daemon's `info` runtimes) lacks.
/// Pure.
pub fn missing_runtimes(wanted: &BTreeSet<String>, registered: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| !registered.contains(w))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(t: &str) -> Policy {
        Policy::parse(t, Path::new("/etc/urun/policy.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    const SITE: &str = "[runtime]\nname = \"runc\"\n\
        [[runtime.image]]\nmatch = \"untrusted/*\"\nname = \"runsc\"\n\
        [[runtime.image]]\nmatch = \"trusted/*\"\nname = \"runc\"\n\
        [[runtime.image]]\nmatch = \"kata/*\"\nname = \"kata\"\n\
        [group.students.runtime]\nname = \"runsc\"\n\
        [group.staff.runtime]\nname = \"runc\"\n\
        [group.zz.runtime]\nname = \"kata\"\n\
        [user.alice.runtime]\nname = \"runc\"\n\
        [user.1234.runtime]\nname = \"runsc\"\n\
        [user.bob.limits]\npids = 100\n";

    fn rt(p: &Policy, uid: u32, name: &str, groups: &[&str], image: &[&str]) -> String {
        p.effective_runtime(uid, Some(name), |g| groups.contains(&g), image)
            .0
    }

    #[test]
    fn default_is_runc_everywhere() {
        let p = parse("");
        assert_eq!(p.runtime, Runtime::default());
        assert_eq!(rt(&p, 1000, "x", &["students"], &["debian:12"]), "runc");
        assert_eq!(p.runtimes(), BTreeSet::from(["runc".to_string()]));
    }

    #[test]
    fn the_runtime_section_parses() {
        let p = parse(SITE);
        assert_eq!(p.runtime.name.0, "runc");
        assert_eq!(p.runtime.image.len(), 3);
        assert_eq!(p.runtime.image[0].pattern.0, "untrusted/*");
        assert_eq!(p.runtime.image[0].name.0, "runsc");
        assert_eq!(
            p.user["alice"].runtime,
            Some(RuntimeOverride {
                name: RuntimeName("runc".into())
            })
        );
        assert_eq!(p.user["bob"].runtime, None);
        assert_eq!(
            p.runtimes().into_iter().collect::<Vec<_>>(),
            ["kata", "runc", "runsc"]
        );
    }

    #[test]
    fn bad_runtime_tables_are_errors_with_line_and_key() {
        for (bad, line) in [
            ("[runtime]\nname = \"\"\n", 2),
            ("[runtime]\nname = \"run sc\"\n", 2),
            ("[runtime]\nname = \"../runsc\"\n", 2),
            ("[runtime]\nname = 3\n", 2),
            ("[runtime]\nargs = [\"--x\"]\n", 2),
            ("[[runtime.image]]\nmatch = \"a/*\"\n", 1),
            ("[[runtime.image]]\nmatch = \"a[b]\"\nname = \"runsc\"\n", 2),
            ("[user.alice.runtime]\nname = \"runsc\"\nimage = []\n", 3),
            ("[group.g.runtime]\n", 1),
        ] {
            let e = Policy::parse(bad, Path::new("/p")).unwrap_err();
            assert_eq!(e.line, Some(line), "{bad}: {e}");
        }
    }

    #[test]
    fn user_table_beats_groups_beats_default() {
        let p = parse(SITE);
        // [runtime] name
        assert_eq!(rt(&p, 1000, "carol", &[], &["debian:12"]), "runc");
        // a group
        assert_eq!(
            rt(&p, 1000, "carol", &["students"], &["debian:12"]),
            "runsc"
        );
        // the user table wins over the groups, by name and by uid
        assert_eq!(rt(&p, 1000, "alice", &["students"], &["debian:12"]), "runc");
        assert_eq!(rt(&p, 1234, "dave", &[], &["debian:12"]), "runsc");
        // a user table without runtime leaves it to the groups
        assert_eq!(rt(&p, 1000, "bob", &["students"], &["debian:12"]), "runsc");
    }

    #[test]
    fn among_groups_the_stricter_wins() {
        let p = parse(SITE);
        assert_eq!(rt(&p, 1, "c", &["staff", "students"], &["x:1"]), "runsc");
        assert_eq!(rt(&p, 1, "c", &["students", "staff"], &["x:1"]), "runsc");
        // two sandboxes: the group first in name order
        assert_eq!(rt(&p, 1, "c", &["zz", "students"], &["x:1"]), "runsc");
        assert_eq!(rt(&p, 1, "c", &["zz", "staff"], &["x:1"]), "kata");
    }

    #[test]
    fn image_rules_match_any_name_and_the_stricter_wins() {
        let p = parse(SITE);
        // an image rule puts runc users in the sandbox, whichever name matched
        assert_eq!(rt(&p, 1, "alice", &[], &["untrusted/x:1"]), "runsc");
        assert_eq!(
            rt(&p, 1, "alice", &[], &["sha256:abcd", "untrusted/x:1"]),
            "runsc"
        );
        // but never lets a sandboxed caller out
        assert_eq!(rt(&p, 1, "c", &["students"], &["trusted/y:1"]), "runsc");
        assert_eq!(rt(&p, 1, "c", &[], &["trusted/y:1"]), "runc");
        // two sandboxes: the image rule's
        assert_eq!(rt(&p, 1, "c", &["students"], &["kata/z:1"]), "kata");
        // the first matching rule
        let q = parse(
            "[[runtime.image]]\nmatch = \"a/*\"\nname = \"runsc\"\n\
             [[runtime.image]]\nmatch = \"*\"\nname = \"kata\"\n",
        );
        assert_eq!(rt(&q, 1, "c", &[], &["a/b:1"]), "runsc");
        assert_eq!(rt(&q, 1, "c", &[], &["c/d:1"]), "kata");
        assert_eq!(rt(&q, 1, "c", &[], &[]), "runc");
    }

    #[test]
    fn a_sandbox_needs_room_in_every_pids_limit() {
        assert_eq!(sandbox_limits_problem(&parse("")), None);
        let low = parse("[group.g.runtime]\nname = \"runsc\"\n");
        let e = sandbox_limits_problem(&low).unwrap();
        assert!(
            e.contains("[limits] pids = 256") && e.contains("512"),
            "{e}"
        );
        let ok = parse("[limits]\npids = 600\n[runtime]\nname = \"runsc\"\n");
        assert_eq!(sandbox_limits_problem(&ok), None);
        let one_low = parse(
            "[limits]\npids = 600\n[runtime]\nname = \"runsc\"\n[user.bob.limits]\npids = 100\n",
        );
        let e = sandbox_limits_problem(&one_low).unwrap();
        assert!(e.contains("[user.bob.limits] pids = 100"), "{e}");
        // runc only: any pids limit
        assert_eq!(
            sandbox_limits_problem(&parse("[limits]\npids = 10\n")),
            None
        );
    }

    #[test]
    fn sandboxes_and_registration() {
        assert!(!RuntimeName("runc".into()).is_sandbox());
        assert!(!RuntimeName("io.containerd.runc.v2".into()).is_sandbox());
        assert!(RuntimeName("runsc".into()).is_sandbox());
        let wanted = BTreeSet::from(["runc".to_string(), "runsc".to_string()]);
        assert_eq!(
            missing_runtimes(&wanted, &["runc".into(), "io.containerd.runc.v2".into()]),
            ["runsc"]
        );
        assert!(missing_runtimes(&wanted, &["runsc".into(), "runc".into()]).is_empty());
    }
}

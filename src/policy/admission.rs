//! Admission as a value: the one decision urund acts on, in two pure stages.
//!
//! [`admit_request`] takes the caller (from the kernel), the policy, the request and
//! the [`Facts`] urund learned before it (the passed directory's `fstat`/`fstatvfs`
//! and path, the caller's runs and `--name`s in progress, group lookups) and returns
//! an [`Admission`]: every term urund then carries out (limits, network, the
//! working-directory mount, what to do about a missing image, the identity the
//! container gets, the user-visible name) or the [`Refusal`] naming its [`Rule`].
//! The image can only be judged on what Docker found once it is present (possibly
//! after a pull the admission allowed): [`admit_image`] is that second stage, and
//! returns the [`AdmittedImage`] (its ID and checked volumes). urund never decides a
//! term again; it only gathers facts and does what these values say.
#![forbid(unsafe_code)]

use crate::policy::identity::{self, DeniedGroups};
use crate::policy::judge;
use crate::policy::mounts::{self, DirFacts, WorkdirPlace};
use crate::policy::reference::{ImageFacts, Reference};
use crate::policy::rule::{refuse, Refusal, Rule};
use crate::policy::{forced, Caller, Limits, NetworkMode, Policy, RuntimeName};
use crate::wire::Request;
use std::collections::HashMap;
use std::path::PathBuf;

/// What urund learned from the kernel and its own bookkeeping before admission.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The gid of `policy.access.group`.
    pub access_gid: u32,
    /// The groups never given to a container, their gids looked up now.
    pub denied: DeniedGroups,
    /// The gids of the groups named by `[group.NAME]` override tables that exist.
    pub override_gids: HashMap<String, u32>,
    /// The caller's runs in progress (`limits.max_concurrent`).
    pub running: u32,
    /// Whether the request's `--name` is in use by another of the caller's runs.
    pub name_in_use: bool,
    /// The directory passed with the request: `None` if none was; its facts from the
    /// kernel, or why they could not be had.
    pub dir: Option<Result<DirFacts, String>>,
    /// A `-w` below the mount target: see [`Below`].
    pub workdir_below: Below,
    /// The names of the caller's groups (primary and supplementary) in the user
    /// database; a gid missing here has none.
    pub group_names: HashMap<u32, String>,
}

/// A working directory below the mount target, as the kernel found it: the part
/// below the target ([`mounts::workdir_place`]), and whether it is a directory in the
/// passed one (looked up without following a symlink or crossing a mount), or why not.
pub type Below = Option<(PathBuf, Result<(), String>)>;

/// Everything urund does for an admitted request. `#[must_use]`: admitting and then
/// not acting on the value is a bug.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// The caller's effective limits (override tables; never the request).
    pub limits: Limits,
    /// The network the container gets.
    pub network: NetworkMode,
    /// The working-directory mount, if asked for and allowed.
    pub mount: Option<WorkDir>,
    /// What to do if the image is not present.
    pub pull: Pull,
    /// The identity the container gets: what goes into its passwd and group files.
    pub identity: Identity,
    /// The user-visible `--name` (a label; reserved among the caller's runs).
    pub name: Option<String>,
    /// The working directory asked for (`-w`), checked against the mount.
    pub workdir: Option<String>,
    /// The `[group.NAME]` override tables that apply to the caller.
    pub groups: Vec<String>,
    /// The reference that was judged; what Docker finds must carry it.
    pub reference: Reference,
    /// The image must be one of the caller's own builds (`[build] run_own`: named in
    /// their namespace or by ID), by urund's records: see [`admit_own`].
    pub own: bool,
}

/// The working-directory mount as admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkDir {
    /// Where it goes in the container.
    pub target: String,
    pub read_only: bool,
    /// Where it is on the host, as the kernel named it when it was judged (for the
    /// audit log; the mount itself is of the passed descriptor).
    pub path: Option<PathBuf>,
}

/// What to do about an image that is not present.
#[derive(Debug, Clone, PartialEq)]
pub enum Pull {
    /// The user said `--pull never`: fail.
    NotAsked,
    /// The policy allows pulling it: this reference.
    Allowed(Reference),
    /// The policy does not: this refusal.
    Refused(Refusal),
}

/// The identity files to generate: the caller's numeric identity, the names that are
/// safe to write, the supplementary groups, `HOME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// The user name, if safe for a passwd line.
    pub name: Option<String>,
    /// The primary group's name, if safe for a group line.
    pub primary: Option<String>,
    /// The supplementary groups the container gets (`identity.groups`), denied ones
    /// removed, sorted.
    pub groups: Vec<u32>,
    /// Of those, the ones with a safe name, for the group file.
    pub named_groups: Vec<(u32, String)>,
    pub home: String,
}

/// The image as admitted on what Docker found.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedImage {
    /// Exactly this ID runs, whatever the tag points to later.
    pub id: String,
    /// Its `VOLUME`s, checked: each gets a tmpfs.
    pub volumes: Vec<String>,
    /// The OCI runtime the policy's `[runtime]` rules give this caller and image, for
    /// the run and the identity-file probe; never the request's.
    pub runtime: RuntimeName,
}

/// Stage one: may `caller` make `req` under `policy`, given `facts`, and on which
/// terms. The checks run in the serve path's order; the first refusal wins.
pub fn admit_request(
    caller: &Caller,
    policy: &Policy,
    req: &Request,
    facts: &Facts,
) -> Result<Admission, Refusal> {
    let own = judge::judge_own(caller, policy, facts.access_gid, &facts.denied, req)?;
    let reference = judge::parse_reference(&req.image)?;
    let limits = limits_for(caller, policy, &facts.override_gids);
    judge::judge_concurrency(&limits, facts.running)?;
    if let Some(n) = &req.name {
        judge::judge_name_free(n, facts.name_in_use)?;
    }
    let mount = admit_dir(caller, policy, req, facts)?;
    Ok(Admission {
        limits,
        network: network(policy, req)?,
        mount,
        pull: pull(policy, req),
        identity: identity(caller, policy, facts),
        name: req.name.clone(),
        workdir: req.workdir.clone(),
        groups: member_groups(caller, policy, &facts.override_gids),
        reference,
        own,
    })
}

/// Stage two, once the image is present: what Docker found must carry the name that
/// was judged, and its volumes must be allowed (see [`judge::judge_resolved`]); with a
/// mount and no `-w`, the image's `WORKDIR` below the target must exist there
/// (`workdir_below`, as the kernel found it).
pub fn admit_image(
    caller: &Caller,
    policy: &Policy,
    admission: &Admission,
    found: &ImageFacts,
    workdir_below: &Below,
) -> Result<AdmittedImage, Refusal> {
    let target = admission.mount.as_ref().map(|m| m.target.as_str());
    let volumes = judge::judge_resolved(policy, &admission.reference, target, found)?;
    if let (Some(m), None) = (&admission.mount, &admission.workdir) {
        let image_workdir = found.working_dir.as_deref();
        workdir_in_mount(None, image_workdir, &m.target, workdir_below)?;
    }
    Ok(AdmittedImage {
        id: found.id.clone(),
        volumes,
        runtime: runtime(caller, policy, admission, found),
    })
}

/// Stage two for an image that must be the caller's own build ([`Admission::own`]):
/// `owned` is whether urund's build records (never the image's labels) say the caller
/// built the image Docker found.
pub fn admit_own(admission: &Admission, owned: bool) -> Result<(), Refusal> {
    if admission.own && !owned {
        return refuse(
            Rule::BuildNamespace,
            format!(
                "image {} is not one of your builds (urun images lists them) and the policy \
                 does not allow it (images.allow)",
                admission.reference.familiar()
            ),
        );
    }
    Ok(())
}

/// `urun --policy`: may the caller ask at all (`access.*`).
pub fn admit_query(caller: &Caller, policy: &Policy, access_gid: u32) -> Result<(), Refusal> {
    judge::judge_access(caller, policy, access_gid)
}

/// The caller's effective limits: the policy's override tables, never the request.
pub fn limits_for(
    caller: &Caller,
    policy: &Policy,
    override_gids: &HashMap<String, u32>,
) -> Limits {
    policy.effective_limits(caller.uid, caller.name.as_deref(), |g| {
        override_gids
            .get(g)
            .is_some_and(|gid| caller.in_group(*gid))
    })
}

/// The `[group.NAME]` tables whose group the caller is in.
fn member_groups(caller: &Caller, policy: &Policy, gids: &HashMap<String, u32>) -> Vec<String> {
    policy
        .group
        .keys()
        .filter(|g| gids.get(&g.0).is_some_and(|gid| caller.in_group(*gid)))
        .map(|g| g.0.clone())
        .collect()
}

/// The runtime of this caller's run of `found`: the policy's `[runtime]` rules on the
/// caller and on every name of the image (the reference as judged and the names
/// Docker has for it).
fn runtime(caller: &Caller, policy: &Policy, a: &Admission, found: &ImageFacts) -> RuntimeName {
    let judged = a.reference.familiar();
    let names: Vec<&str> = std::iter::once(judged.as_str())
        .chain(found.repo_tags.iter().map(String::as_str))
        .chain(found.repo_digests.iter().map(String::as_str))
        .collect();
    policy.effective_runtime(
        caller.uid,
        caller.name.as_deref(),
        |g| a.groups.iter().any(|m| m == g),
        &names,
    )
}

/// The policy's network, or `none` if the user asked for less.
fn network(policy: &Policy, req: &Request) -> Result<NetworkMode, Refusal> {
    match &req.network {
        Some(asked) => judge::network_mode(policy, asked),
        None => Ok(policy.network.mode),
    }
}

/// A mount request and a passed directory come together or not at all; the
/// directory must pass [`judge::judge_dir`].
fn admit_dir(
    caller: &Caller,
    policy: &Policy,
    req: &Request,
    facts: &Facts,
) -> Result<Option<WorkDir>, Refusal> {
    match (&req.mount, &facts.dir) {
        (None, None) => Ok(None),
        (Some(_), None) => refuse(
            Rule::Protocol,
            "a mount was requested without passing the directory",
        ),
        (None, Some(_)) => refuse(
            Rule::Protocol,
            "a directory was passed without a mount request",
        ),
        (Some(_), Some(Err(e))) => refuse(Rule::MountsWorkdir, format!("passed directory: {e}")),
        (Some(m), Some(Ok(dir))) => {
            judge::judge_dir(caller, policy, dir, m.read_only)?;
            let asked = req.workdir.as_deref();
            workdir_in_mount(asked, None, &m.target, &facts.workdir_below)?;
            Ok(Some(WorkDir {
                target: m.target.clone(),
                read_only: m.read_only,
                path: dir.path.clone(),
            }))
        }
    }
}

/// The run's working directory against the mounted directory. runc creates a missing
/// working directory itself, as root, after the mounts: one below the mount target is
/// created in the caller's host directory. So with a mount, the working directory
/// (`-w`, else the image's `WORKDIR`) must be the target or an existing directory
/// below it (`below`, see SECURITY.md); a `-w` anywhere else is refused, because the
/// image's symlinks could lead it into the target. The image's own `WORKDIR`
/// elsewhere is left as it is.
fn workdir_in_mount(
    asked: Option<&str>,
    image: Option<&str>,
    target: &str,
    below: &Below,
) -> Result<(), Refusal> {
    let (w, whose) = match (asked, image) {
        (Some(w), _) => (w, "working directory"),
        (None, Some(w)) => (w, "the image's working directory (WORKDIR)"),
        (None, None) => return Ok(()),
    };
    let rel = match mounts::workdir_place(target, w) {
        WorkdirPlace::AtTarget => return Ok(()),
        WorkdirPlace::Elsewhere if asked.is_none() => return Ok(()),
        WorkdirPlace::Elsewhere => {
            return refuse(
                Rule::Workdir,
                format!(
                    "working directory {w} is refused (workdir): with a mounted directory it \
                     must be the mount target {target} or a directory below it"
                ),
            )
        }
        WorkdirPlace::Below(rel) => rel,
    };
    let why = match below {
        Some((r, Ok(()))) if *r == rel => return Ok(()),
        Some((r, Err(why))) if *r == rel => why.as_str(),
        _ => "was not looked up",
    };
    refuse(
        Rule::Workdir,
        format!(
            "{whose} {w} is refused (workdir): {} {why} in the directory you mount, and \
             urun does not create it (create it first)",
            rel.display()
        ),
    )
}

/// What to do if the image is missing, decided now with everything else.
fn pull(policy: &Policy, req: &Request) -> Pull {
    if req.never_pull {
        return Pull::NotAsked;
    }
    match judge::judge_pull(policy, &req.image) {
        Ok(r) => Pull::Allowed(r),
        Err(r) => Pull::Refused(r),
    }
}

/// The identity the container gets (see [`Identity`]).
fn identity(caller: &Caller, policy: &Policy, facts: &Facts) -> Identity {
    let name_of = |g: u32| facts.group_names.get(&g).cloned();
    let groups = identity::supplementary(
        policy.identity.groups,
        caller.gid,
        &caller.groups,
        &facts.denied,
        name_of,
    );
    let safe = |n: Option<String>| n.filter(|n| identity::safe_name(n));
    let named_groups = groups
        .iter()
        .filter_map(|&g| safe(name_of(g)).map(|n| (g, n)))
        .collect();
    Identity {
        uid: caller.uid,
        gid: caller.gid,
        name: safe(caller.name.clone()),
        primary: safe(caller.group.clone()),
        groups,
        named_groups,
        home: forced::home_dir(caller),
    }
}

#[cfg(test)]
mod tests;

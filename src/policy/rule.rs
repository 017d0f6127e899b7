//! The rules a request can be refused by: a closed list, each with the stable id the
//! audit log, the user's message and SECURITY.md name it by (mostly the policy key
//! that decides it). Pure.
#![forbid(unsafe_code)]

use std::fmt;

/// A rule that refused a request (or, for [`Rule::MaxRuntime`] and [`Rule::Docker`],
/// ended a run). [`Rule::id`] is its stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The bytes the client sent (framing, request shape, timing).
    Protocol,
    AllowRoot,
    AccessGroup,
    AccessUsers,
    DenyGroups,
    ImageReference,
    RequireDigest,
    ImagesAllow,
    ImageVolumes,
    EnvAllow,
    User,
    NetworkMode,
    Name,
    MountsWorkdir,
    MountsTarget,
    MountsRoots,
    MountsAccess,
    MountsReadonly,
    /// A `-w` below the mount target that does not exist in the caller's directory.
    Workdir,
    PullMode,
    PullRegistries,
    MaxConcurrent,
    MaxRuntime,
    ConnectionsPerUser,
    ConnectionsTotal,
    ConnectionsDescriptors,
    /// The Docker daemon went away during the run.
    Docker,
    /// `urun build` is off (`[build] enabled`).
    BuildEnabled,
    /// The caller is not in `[build] group`.
    BuildGroup,
    /// `[build] max_concurrent` builds in progress.
    BuildMaxConcurrent,
    /// `[build] max_images` own images kept.
    BuildMaxImages,
    /// The context passed `[build] max_context` while urund read it.
    BuildMaxContext,
    /// The context archive is not one urund builds from (names, types, Dockerfile).
    BuildContext,
    /// A tag or label of the request.
    BuildTags,
    /// A Dockerfile check at severity error (`[build.rules]`).
    BuildChecks,
    /// A base image that is not present and may not be pulled.
    BuildBase,
    /// A check of the built image at severity error.
    BuildImage,
    /// The build ran past `[build] max_runtime`.
    BuildMaxRuntime,
    /// A reference inside the build namespace, which only builds fill.
    BuildNamespace,
    /// The build engine is the run daemon or lacks `userns-remap`, and
    /// `[build] allow_root_engine` is off.
    BuildEngine,
    /// `urun push` without a usable registry (`[build] registry`, `registry_auth`), or
    /// while another push of the caller's is in progress.
    BuildRegistry,
    /// No room to receive another build context now (urund's spool, across users).
    BuildSpool,
}

impl Rule {
    /// Every rule, in the order of the serve path.
    pub const ALL: [Rule; 42] = [
        Rule::Protocol,
        Rule::AllowRoot,
        Rule::AccessGroup,
        Rule::AccessUsers,
        Rule::DenyGroups,
        Rule::ImageReference,
        Rule::RequireDigest,
        Rule::ImagesAllow,
        Rule::ImageVolumes,
        Rule::EnvAllow,
        Rule::User,
        Rule::NetworkMode,
        Rule::Name,
        Rule::MountsWorkdir,
        Rule::MountsTarget,
        Rule::MountsRoots,
        Rule::MountsAccess,
        Rule::MountsReadonly,
        Rule::Workdir,
        Rule::PullMode,
        Rule::PullRegistries,
        Rule::MaxConcurrent,
        Rule::MaxRuntime,
        Rule::ConnectionsPerUser,
        Rule::ConnectionsTotal,
        Rule::ConnectionsDescriptors,
        Rule::Docker,
        Rule::BuildEnabled,
        Rule::BuildGroup,
        Rule::BuildMaxConcurrent,
        Rule::BuildMaxImages,
        Rule::BuildMaxContext,
        Rule::BuildContext,
        Rule::BuildTags,
        Rule::BuildChecks,
        Rule::BuildBase,
        Rule::BuildImage,
        Rule::BuildMaxRuntime,
        Rule::BuildNamespace,
        Rule::BuildEngine,
        Rule::BuildRegistry,
        Rule::BuildSpool,
    ];

    /// The stable id: the audit log's `rule`, and what messages name.
    pub const fn id(self) -> &'static str {
        match self {
            Rule::Protocol => "protocol",
            Rule::AllowRoot => "access.allow_root",
            Rule::AccessGroup => "access.group",
            Rule::AccessUsers => "access.users",
            Rule::DenyGroups => "identity.deny_groups",
            Rule::ImageReference => "images.reference",
            Rule::RequireDigest => "images.require_digest",
            Rule::ImagesAllow => "images.allow",
            Rule::ImageVolumes => "images.volumes",
            Rule::EnvAllow => "env.allow",
            Rule::User => "user",
            Rule::NetworkMode => "network.mode",
            Rule::Name => "name",
            Rule::MountsWorkdir => "mounts.workdir",
            Rule::MountsTarget => "mounts.target",
            Rule::MountsRoots => "mounts.roots",
            Rule::MountsAccess => "mounts.access",
            Rule::MountsReadonly => "mounts.readonly",
            Rule::Workdir => "workdir",
            Rule::PullMode => "pull.mode",
            Rule::PullRegistries => "pull.registries",
            Rule::MaxConcurrent => "limits.max_concurrent",
            Rule::MaxRuntime => "limits.max_runtime",
            Rule::ConnectionsPerUser => "connections.per_user",
            Rule::ConnectionsTotal => "connections.total",
            Rule::ConnectionsDescriptors => "connections.descriptors",
            Rule::Docker => "docker",
            Rule::BuildEnabled => "build.enabled",
            Rule::BuildGroup => "build.group",
            Rule::BuildMaxConcurrent => "build.max_concurrent",
            Rule::BuildMaxImages => "build.max_images",
            Rule::BuildMaxContext => "build.max_context",
            Rule::BuildContext => "build.context",
            Rule::BuildTags => "build.tags",
            Rule::BuildChecks => "build.rules",
            Rule::BuildBase => "build.base",
            Rule::BuildImage => "build.image",
            Rule::BuildMaxRuntime => "build.max_runtime",
            Rule::BuildNamespace => "build.namespace",
            Rule::BuildEngine => "build.engine",
            Rule::BuildRegistry => "build.registry",
            Rule::BuildSpool => "build.spool",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Why a request was refused: the rule and a one-line message for the user.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: Rule,
    pub message: String,
}

impl Refusal {
    pub fn new(rule: Rule, message: impl Into<String>) -> Refusal {
        Refusal {
            rule,
            message: message.into(),
        }
    }
}

/// `Err` of a refusal, for the checks that return `Result<_, Refusal>`.
pub fn refuse<T>(rule: Rule, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::new(rule, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_one_distinct_id() {
        let mut ids: Vec<&str> = Rule::ALL.iter().map(|r| r.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Rule::ALL.len());
        assert_eq!(Rule::MaxConcurrent.to_string(), "limits.max_concurrent");
    }
}

//! urund's command line, defined once (its help text and man page come from here).
#![forbid(unsafe_code)]

use crate::daemon::instance;
use crate::{engine, policy, DEFAULT_SOCKET};
use clap::Parser;
use std::path::PathBuf;

/// For urund's man page: what it does and where its files are.
pub const URUND_AFTER_HELP: &str = "\
urund listens on its socket (root:<access.group> 0660; started by systemd's urund.socket, \
it takes that socket over and refuses one with another group or a mode above 0660), learns \
each caller's uid, gid and groups from the kernel (SO_PEERCRED), judges the request against the policy file, and \
creates the container with the forced settings listed in urun(1). Every request is \
recorded as one JSON audit line on standard error (and the policy's audit file or \
syslog), a run also when its container is created; long fields are clipped and the \
records of refused requests are rate-limited per uid and summed up. Only one urund runs \
per socket directory (it holds <socket dir>/urund.lock; a second one exits before \
touching anything). Its runtime directory <socket dir>/run is created and marked by \
urund; one it did not create is refused. Every container it creates is labelled with a \
secret kept in the state directory (--state-dir); it removes only containers proven to \
be its own (that label, on the container and not on its image) that no run tracks: at \
start, periodically and after errors, and records each. A removal that fails (the \
Docker daemon restarting) is retried until it succeeds; a run whose daemon stops ends \
with status 125. On SIGTERM or SIGINT it removes the containers of runs in progress, its \
runtime directory and its socket, and exits.";

/// urund: the helper daemon, the only user of the Docker socket.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "urund",
    version,
    after_help = POLICY_HELP,
    about = "urun's helper daemon: runs hardened containers for members of the urun group"
)]
pub struct Urund {
    /// Socket to listen on: created root:<access.group> 0660, or, under socket
    /// activation (LISTEN_FDS), the one systemd passed, checked and left in place
    #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,

    /// Policy file (missing: built-in defaults)
    #[arg(long, default_value = policy::DEFAULT_PATH, value_name = "PATH")]
    pub policy: PathBuf,

    /// Docker daemon (unix:// only)
    #[arg(long, default_value = engine::DEFAULT_HOST, value_name = "URI")]
    pub docker_host: String,

    /// State directory (root-only, kept across reboots): the installation's secret
    /// that labels every container urund creates; clean-up removes only containers
    /// that carry it
    #[arg(long, default_value = instance::DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,

    #[command(subcommand)]
    pub command: Option<UrundCommand>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum UrundCommand {
    /// Validate the policy and audit this host's Docker setup (one line per item,
    /// OK or WARN with what to do); exit status 1 when the policy is invalid
    Check {
        /// Policy file to validate
        #[arg(long, default_value = policy::DEFAULT_PATH, value_name = "PATH")]
        policy: PathBuf,

        /// Docker daemon (unix:// only)
        #[arg(long, default_value = engine::DEFAULT_HOST, value_name = "URI")]
        docker_host: String,
    },
}

/// The policy file's sections, for `urund --help`.
pub const POLICY_HELP: &str = "\
Policy file (TOML, --policy; commented example: packaging/policy.toml):
  [access]   group, users (optional list), allow_root
  [images]   allow = glob patterns on references (* and ?), require_digest
  [pull]     mode = \"never\" | \"missing\", registries = glob patterns on host[:port]
  [limits]   memory, cpus, pids, nofile, nproc, tmpfs_size, max_runtime (exit 124 when
             exceeded), max_concurrent (runs per user)
  [group.NAME.limits], [user.NAME.limits]
             overrides: user beats group beats [limits], field by field; among
             several groups the largest value; only this file sets them
  [network]  mode = \"none\" | \"isolated\" (helper-managed bridge urun-isolated, ICC off)
  [env]      allow = glob patterns on variable names (default TERM, LANG, LC_*, TZ)
  [audit]    file = absolute path (0600, append-only, reopened on SIGHUP; in a directory
             only urund's user can write, no symlink in the path), syslog = bool
  [connections] per_user (64), total (512): connections not running a container
             (waiting for their request or its answer); one more is refused at once
Audit records are also written to standard error.";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

    #[test]
    fn urund_check_subcommand() {
        let a = Urund::try_parse_from(["urund", "check", "--policy", "/x.toml"]).unwrap();
        assert!(
            matches!(a.command, Some(UrundCommand::Check { policy, .. }) if policy == Path::new("/x.toml"))
        );
        let a = Urund::try_parse_from(["urund", "--socket", "/s", "--policy", "/p"]).unwrap();
        assert!(a.command.is_none() && a.policy == Path::new("/p"));
        let h = Urund::command().render_long_help().to_string();
        assert!(
            h.contains("[group.NAME.limits]") && h.contains("check"),
            "{h}"
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        Urund::command().debug_assert();
    }
}

//! Command-line definitions of both programs, each defined once (help text, man pages
//! and completions come from here).
#![forbid(unsafe_code)]

use crate::{engine, forced, policy, DEFAULT_SOCKET};
use clap::{CommandFactory, FromArgMatches, Parser};
use std::path::PathBuf;

/// urun: run a container as yourself through urund.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "urun",
    version,
    about = "Run a Docker container as yourself, hardened, through urund",
    override_usage = "urun [OPTIONS] IMAGE [COMMAND [ARG...]]"
)]
pub struct Urun {
    /// urund's socket
    #[arg(long, env = "URUN_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,

    /// Keep stdin open and pass it to the container
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Accepted for docker compatibility: containers are always removed
    #[arg(long)]
    pub rm: bool,

    /// Show your effective policy (limits, allowed images, what is always forced) and exit
    #[arg(long = "policy", conflicts_with_all = ["image", "command", "interactive"])]
    pub show_policy: bool,

    /// Image to run (present on the host, or pulled if the policy allows it)
    #[arg(
        value_name = "IMAGE",
        required_unless_present = "show_policy",
        default_value = ""
    )]
    pub image: String,

    /// Command and arguments (default: the image's)
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// Exit statuses, as `docker run` has them.
pub const EXIT_STATUSES: &str = "\
Exit status:
  0-255  the container command's own status
  128+N  the command was killed by signal N (e.g. 137 for SIGKILL)
  124    the container was killed for exceeding the policy's limits.max_runtime
  125    urun itself failed or a policy refused the request (the message names the rule)
  126    the command cannot be executed
  127    the command was not found";

/// `urun`'s clap command with the forced settings and exit statuses appended to --help.
pub fn urun_command() -> clap::Command {
    let mut forced = String::from("Always forced, whatever you ask:\n");
    for (k, v) in forced::FORCED {
        forced.push_str(&format!("  {k}: {v}\n"));
    }
    Urun::command().after_help(format!("{forced}\n{EXIT_STATUSES}"))
}

/// Parses urun's arguments. `Err` carries clap's error (printed by the caller).
pub fn parse_urun<I, T>(args: I) -> Result<Urun, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let m = urun_command().try_get_matches_from(args)?;
    Urun::from_arg_matches(&m)
}

/// urund: the helper daemon, the only user of the Docker socket.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "urund",
    version,
    after_help = POLICY_HELP,
    about = "urun's helper daemon: runs hardened containers for members of the urun group"
)]
pub struct Urund {
    /// Socket to listen on (created root:<access.group> 0660)
    #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,

    /// Policy file (missing: built-in defaults)
    #[arg(long, default_value = policy::DEFAULT_PATH, value_name = "PATH")]
    pub policy: PathBuf,

    /// Docker daemon (unix:// only)
    #[arg(long, default_value = engine::DEFAULT_HOST, value_name = "URI")]
    pub docker_host: String,

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
  [audit]    file = absolute path (0600, append-only, reopened on SIGHUP), syslog = bool
Audit records are also written to standard error.";

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn command_words_after_the_image_are_not_options() {
        let a = parse_urun(["urun", "-i", "busybox", "ls", "-l", "--help", "-i"]).unwrap();
        assert!(a.interactive);
        assert_eq!(a.image, "busybox");
        assert_eq!(a.command, ["ls", "-l", "--help", "-i"]);
    }

    #[test]
    fn rm_is_accepted() {
        let a = parse_urun(["urun", "--rm", "-i", "img"]).unwrap();
        assert!(a.rm && a.interactive && a.command.is_empty());
    }

    #[test]
    fn unknown_flags_are_errors() {
        assert!(parse_urun(["urun", "--privileged", "img"]).is_err());
    }

    #[test]
    fn help_lists_forced_settings_and_statuses() {
        let h = urun_command().render_long_help().to_string();
        assert!(h.contains("CapDrop / CapAdd: ALL / none"), "{h}");
        assert!(h.contains("127    the command was not found"), "{h}");
    }

    #[test]
    fn policy_flag_needs_no_image_and_takes_nothing_else() {
        let a = parse_urun(["urun", "--policy"]).unwrap();
        assert!(a.show_policy);
        assert!(parse_urun(["urun", "--policy", "img"]).is_err());
        assert!(
            parse_urun(["urun", "--socket", "/s", "--policy"])
                .unwrap()
                .show_policy
        );
        assert!(parse_urun(["urun"]).is_err());
        // an image named "policy" is still an image
        let a = parse_urun(["urun", "policy", "ls"]).unwrap();
        assert!(!a.show_policy && a.image == "policy");
    }

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
    fn clap_definitions_are_consistent() {
        urun_command().debug_assert();
        Urund::command().debug_assert();
    }
}

//! The command lines of `urun build`, `urun images`, `urun rmi` and `urun push`, each
//! defined once like the run's: help text, man pages, completions and the refusals
//! come from these definitions and tables.
#![forbid(unsafe_code)]

use super::Takes::{Many, Nothing, One};
use super::{refusal_in, refused_flag, with_refused, RefusedFlag, Usage};
use crate::policy::build::RESERVED_LABEL_PREFIX;
use crate::wire::build::MAX_BUILD_ITEMS;
use crate::DEFAULT_SOCKET;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `urun build`: the safe subset of `docker build`. Every `docker build` flag urun
/// knows is defined here if accepted, or in [`BUILD_REFUSED_FLAGS`] if refused;
/// anything else is an unknown flag.
#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "urun-build",
    bin_name = "urun build",
    version,
    about = "Build an image through urund, checked, into your own namespace",
    long_about = "Build an image through urund, checked, into your own namespace.\n\n\
                  The safe subset of `docker build` (its legacy builder): the context \
                  is read by urun as you and streamed to urund, which checks the \
                  Dockerfile, builds with the policy's forced settings ([build]), \
                  checks the image and tags it as <namespace>/<you>/NAME:TAG. \
                  PATH is a directory, or - for a tar archive (or a Dockerfile \
                  alone) on standard input. The flags urun refuses are listed at \
                  the end.",
    override_usage = "urun build [OPTIONS] PATH | -"
)]
pub struct BuildArgs {
    /// urund's socket
    #[arg(long, env = "URUN_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,

    /// Name (and tag) of the image, repeatable; it becomes <namespace>/<you>/NAME:TAG
    /// (urun --policy shows your namespace)
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,

    /// The Dockerfile (default: PATH/Dockerfile); may be outside the context, read as
    /// you; - reads it from standard input
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// A build argument (NAME=VALUE, or NAME to take it from your environment; an
    /// unset NAME is left out, as docker does)
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    pub build_args: Vec<String>,

    /// Build up to this stage of a multi-stage Dockerfile
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// Do not use the build engine's layer cache
    #[arg(long = "no-cache")]
    pub no_cache: bool,

    /// "missing" (the default: a missing base image is pulled only where the policy
    /// allows it) or "never" (a missing base image is an error)
    #[arg(long, value_name = "POLICY", num_args = 0..=1, default_missing_value = "always")]
    pub pull: Option<String>,

    /// A label on the image (KEY=VALUE or KEY); not under io.urun., which are urund's
    #[arg(long = "label", value_name = "KEY[=VALUE]")]
    pub labels: Vec<String>,

    /// No builder output; print only the image ID
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Write the image ID (sha256:...) to this file
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,

    /// Accepted for docker compatibility: intermediate containers are always removed
    #[arg(long)]
    pub rm: bool,

    /// Accepted for docker compatibility: intermediate containers are always removed
    #[arg(long = "force-rm")]
    pub force_rm: bool,

    /// The build context: a directory (read as you), or - for a tar archive or a
    /// Dockerfile alone on standard input
    #[arg(value_name = "PATH | -")]
    pub context: Option<String>,
}

const BUILD_LIMITS: &str =
    "build limits come from the administrator's policy ([build] memory, cpus, max_runtime)";
const BUILD_NETWORK: &str =
    "build steps get the network the policy gives builds ([build] network; urun --policy shows it)";

/// Every refused `docker build` flag, in one table (see [`RefusedFlag`]): all but
/// `--pull` (refused for some values) are defined by their row alone.
pub const BUILD_REFUSED_FLAGS: &[RefusedFlag] = &[
    RefusedFlag {
        id: "pull",
        reason: "base images are pulled only when missing, and only where the policy \
                 allows it (only --pull missing or --pull never)",
        accepted: &["missing", "never"],
        spelling: None,
    },
    refused_flag("network", None, One("MODE"), BUILD_NETWORK),
    refused_flag("add-host", None, Many("HOST:IP"), BUILD_NETWORK),
    refused_flag(
        "secret",
        None,
        Many("SECRET"),
        "build secrets are not available: layers and cache stay on a shared build engine",
    ),
    refused_flag(
        "ssh",
        None,
        Many("SSH"),
        "SSH agent forwarding is not available to builds",
    ),
    refused_flag(
        "security-opt",
        None,
        Many("OPT"),
        "build containers have the build engine's fixed security settings",
    ),
    refused_flag(
        "isolation",
        None,
        One("MODE"),
        "the isolation is the build engine's",
    ),
    refused_flag("cgroup-parent", None, One("CGROUP"), BUILD_LIMITS),
    refused_flag(
        "output",
        Some('o'),
        Many("OUTPUT"),
        "the image always goes to the run engine, tagged in your namespace; nothing is exported",
    ),
    refused_flag(
        "cache-from",
        None,
        Many("IMAGE"),
        "only the build engine's own layer cache is used",
    ),
    refused_flag(
        "cache-to",
        None,
        Many("CACHE"),
        "the layer cache stays on the build engine",
    ),
    refused_flag(
        "platform",
        None,
        One("PLATFORM"),
        "images are built for the build engine's own platform",
    ),
    refused_flag(
        "squash",
        None,
        Nothing,
        "layers are kept as built (urund checks what they add)",
    ),
    refused_flag("memory", Some('m'), One("BYTES"), BUILD_LIMITS),
    refused_flag("memory-swap", None, One("BYTES"), BUILD_LIMITS),
    refused_flag("cpu-shares", Some('c'), One("N"), BUILD_LIMITS),
    refused_flag("cpu-period", None, One("N"), BUILD_LIMITS),
    refused_flag("cpu-quota", None, One("N"), BUILD_LIMITS),
    refused_flag("cpuset-cpus", None, One("CPUS"), BUILD_LIMITS),
    refused_flag("cpuset-mems", None, One("MEMS"), BUILD_LIMITS),
    refused_flag("ulimit", None, Many("LIMIT"), BUILD_LIMITS),
    refused_flag("shm-size", None, One("BYTES"), BUILD_LIMITS),
    refused_flag(
        "build-context",
        None,
        Many("NAME=PATH"),
        "a build sees only the one context you send",
    ),
    refused_flag(
        "compress",
        None,
        Nothing,
        "the context goes to urund on this host, uncompressed",
    ),
    refused_flag(
        "stream",
        None,
        Nothing,
        "the context is always streamed to urund",
    ),
    refused_flag(
        "progress",
        None,
        One("TYPE"),
        "the build's output is the legacy builder's plain log",
    ),
    refused_flag(
        "disable-content-trust",
        None,
        Nothing,
        "content trust is not available; base images are the policy's",
    ),
    refused_flag(
        "push",
        None,
        Nothing,
        "push a checked build with urun push once it is built",
    ),
    refused_flag(
        "builder",
        None,
        One("BUILDER"),
        "the builder is urund's ([build] engine)",
    ),
];

/// `urun build`'s exit statuses: (status, meaning). In --help, the man page and README.
pub const BUILD_EXIT_STATUSES: &[(&str, &str)] = &[
    ("0", "the image was built, checked and tagged"),
    ("1", "a RUN step failed (its output is shown)"),
    ("124", "the build was stopped at the policy's [build] max_runtime; nothing is left behind"),
    ("125", "urun failed, or a flag, a check or the policy refused the build (the message names the flag, check or rule)"),
];

/// `urun build`'s one-line errors.
pub const BUILD_USAGE: Usage = Usage {
    docker: "build",
    usage: "urun build [OPTIONS] PATH | -",
    help: "urun build --help",
};

/// `urun build`'s clap command, with the refused flags' reasons as their help and the
/// exit statuses appended.
pub fn build_command() -> clap::Command {
    let mut statuses = String::from("Exit status:\n");
    for (k, v) in BUILD_EXIT_STATUSES {
        statuses.push_str(&format!("  {k:<4} {v}\n"));
    }
    let cmd = BuildArgs::command().after_help(statuses);
    with_refused(cmd, BUILD_REFUSED_FLAGS, str::to_string)
}

/// Parses `urun build`'s arguments (after the word `build`; the first is the program)
/// and keeps clap's matches for [`build_refusal`].
pub fn parse_build<I, T>(args: I) -> Result<(BuildArgs, ArgMatches), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let m = build_command().try_get_matches_from(args)?;
    Ok((BuildArgs::from_arg_matches(&m)?, m))
}

/// The one-line refusal of a build's command line, if any: the first refused flag,
/// a label urund keeps for itself, too many tags, arguments or labels, a context that
/// is not a local directory, both the context and the Dockerfile from stdin.
pub fn build_refusal(a: &BuildArgs, m: &ArgMatches, uid: u32) -> Option<String> {
    if let Some(r) = refusal_in(&build_command(), BUILD_REFUSED_FLAGS, m, uid) {
        return Some(r);
    }
    if let Some(l) = a
        .labels
        .iter()
        .find(|l| l.starts_with(RESERVED_LABEL_PREFIX))
    {
        return Some(format!(
            "--label {l} is not allowed: labels under {RESERVED_LABEL_PREFIX} are set by \
             urund only (who built the image, its digests and checks)"
        ));
    }
    for (flag, n) in [
        ("-t/--tag", a.tags.len()),
        ("--build-arg", a.build_args.len()),
        ("--label", a.labels.len()),
    ] {
        if n > MAX_BUILD_ITEMS {
            return Some(format!(
                "{flag} is given {n} times: at most {MAX_BUILD_ITEMS} are accepted"
            ));
        }
    }
    if let Some(bad) = a
        .build_args
        .iter()
        .find(|b| b.is_empty() || b.starts_with('='))
    {
        return Some(format!(
            "--build-arg {bad:?} is not valid: NAME=VALUE or NAME"
        ));
    }
    let context = a.context.as_deref()?;
    if is_remote(context) {
        return Some(format!(
            "{context}: only a local directory or - can be a build context (urun reads \
             it as you; fetch it first, e.g. with git clone)"
        ));
    }
    if context == "-" && a.file.as_deref() == Some(std::path::Path::new("-")) {
        return Some(
            "standard input cannot be both the build context and the Dockerfile (PATH - \
             with -f -)"
                .into(),
        );
    }
    None
}

/// A context docker would fetch itself (a URL or a git remote).
fn is_remote(context: &str) -> bool {
    ["http://", "https://", "git://", "git@", "github.com/"]
        .iter()
        .any(|p| context.starts_with(p))
}

/// `--build-arg`s as urund gets them: `NAME=VALUE` as given; `NAME` alone takes the
/// value from `lookup` (our environment), and is left out when unset, as docker does.
/// Later ones win.
pub fn build_args(
    args: &[String],
    lookup: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Some(v) = lookup(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    out
}

/// `--label`s: `KEY=VALUE`, or `KEY` for an empty value (docker's). Later ones win.
pub fn labels(args: &[String]) -> BTreeMap<String, String> {
    args.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

/// `urun images`: the images you may run.
#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "urun-images",
    bin_name = "urun images",
    version,
    about = "List the images you may run: your own builds and those the policy allows",
    override_usage = "urun images [OPTIONS] [REPOSITORY[:TAG]]"
)]
pub struct ImagesArgs {
    /// urund's socket
    #[arg(long, env = "URUN_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Only the image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Full image IDs
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// The builds you promoted to the policy's registry (urun push)
    #[arg(long)]
    pub registry: bool,
    /// Only this repository (and tag), as docker images takes it
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub filter: Option<String>,
}

/// `urun rmi`: removes your own builds.
#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "urun-rmi",
    bin_name = "urun rmi",
    version,
    about = "Remove your own builds (by tag, by your namespace's full name, or by ID)",
    long_about = "Remove your own builds (by tag, by your namespace's full name, or by ID).\n\n\
                  NAME:TAG is one of your tags (app:1 or urun/<you>/app:1); an image \
                  goes when its last tag of yours goes and nothing else uses it. \
                  Images you did not build with urun build are refused, and then \
                  nothing is removed.",
    override_usage = "urun rmi IMAGE..."
)]
pub struct RmiArgs {
    /// urund's socket
    #[arg(long, env = "URUN_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Your images: NAME[:TAG] or an ID
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

/// Every refused `docker rmi` flag, each defined by its row (see [`RefusedFlag`]).
pub const RMI_REFUSED_FLAGS: &[RefusedFlag] = &[
    refused_flag(
        "force",
        Some('f'),
        Nothing,
        "an image still used by a container, or tagged outside your namespace, is never removed",
    ),
    refused_flag(
        "no-prune",
        None,
        Nothing,
        "urun rmi removes only what your builds made; there is nothing else to keep",
    ),
];

/// `urun push`: promotes a checked build.
#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "urun-push",
    bin_name = "urun push",
    version,
    about = "Push one of your checked builds to the policy's registry, under your namespace",
    long_about = "Push one of your checked builds to the policy's registry, under your \
                  namespace (<registry>/<namespace>/<you>/NAME:TAG), and print its digest. \
                  Only while you may build: with [build] enabled and, if the policy names \
                  one, as a member of [build] group (else the same one-line refusal as \
                  urun build, exit status 125, nothing pushed).",
    override_usage = "urun push NAME[:TAG]"
)]
pub struct PushArgs {
    /// urund's socket
    #[arg(long, env = "URUN_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// One of your builds: NAME[:TAG]
    #[arg(value_name = "NAME[:TAG]", required = true)]
    pub image: String,
}

/// `urun images`' one-line errors.
pub const IMAGES_USAGE: Usage = Usage {
    docker: "images",
    usage: "urun images [OPTIONS] [REPOSITORY[:TAG]]",
    help: "urun images --help",
};
/// `urun rmi`'s one-line errors.
pub const RMI_USAGE: Usage = Usage {
    docker: "rmi",
    usage: "urun rmi IMAGE...",
    help: "urun rmi --help",
};
/// `urun push`'s one-line errors.
pub const PUSH_USAGE: Usage = Usage {
    docker: "push",
    usage: "urun push NAME[:TAG]",
    help: "urun push --help",
};

pub fn images_command() -> clap::Command {
    ImagesArgs::command()
}

pub fn rmi_command() -> clap::Command {
    with_refused(RmiArgs::command(), RMI_REFUSED_FLAGS, str::to_string)
}

pub fn push_command() -> clap::Command {
    PushArgs::command()
}

/// `urun`'s commands as one clap command (for shell completions and the man page's
/// list): the run's flags and arguments at the top, each other command a subcommand.
pub fn completion_command() -> clap::Command {
    super::urun_command()
        .subcommand_negates_reqs(true)
        .args_conflicts_with_subcommands(true)
        .subcommand(super::urun_command().name("run").bin_name("urun run"))
        .subcommand(build_command().name("build"))
        .subcommand(images_command().name("images"))
        .subcommand(rmi_command().name("rmi"))
        .subcommand(push_command().name("push"))
}

#[cfg(test)]
mod tests;

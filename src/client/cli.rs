//! Command-line definitions of both programs, each defined once (help text, man pages
//! and completions come from here).
#![forbid(unsafe_code)]

use crate::policy::forced;
use crate::DEFAULT_SOCKET;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use std::ffi::OsString;
use std::path::PathBuf;

mod build;
pub use build::*;
use Takes::{Many, Nothing, One};

/// Heading under which `--help` lists the docker flags urun knows and refuses.
const REFUSED: &str = "Docker flags urun refuses (exit 125, the message says why)";

/// urun: run a container as yourself through urund. Every `docker run` flag urun knows
/// is defined once: here if accepted (or refused only for some values), in
/// [`REFUSED_FLAGS`] if refused; anything else is an unknown flag.
#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "urun",
    version,
    about = "Run a Docker container as yourself, hardened, through urund",
    long_about = "Run a Docker container as yourself, hardened, through urund.\n\n\
                  A drop-in for `docker run` for everything that is safe: the flags \
                  below are docker's; the ones urun refuses are listed at the end.",
    override_usage = "urun [OPTIONS] IMAGE [COMMAND [ARG...]]\n       \
                      urun run [OPTIONS] IMAGE [COMMAND [ARG...]]\n       \
                      urun build [OPTIONS] PATH | -\n       \
                      urun images [OPTIONS] [REPOSITORY[:TAG]]\n       \
                      urun rmi IMAGE...\n       \
                      urun push NAME[:TAG]"
)]
pub struct Urun {
    /// urund's socket
    #[arg(long, env = "URUN_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,

    /// Keep stdin open and pass it to the container
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Allocate a terminal in the container (as docker run -t); use with -i for a shell
    #[arg(short = 't', long)]
    pub tty: bool,

    /// Accepted for docker compatibility: containers are always removed
    #[arg(long)]
    pub rm: bool,

    /// Show your effective policy (limits, allowed images, what is always forced) and exit
    #[arg(long = "policy", conflicts_with_all = ["image", "command", "interactive"])]
    pub show_policy: bool,

    /// Accepted for docker compatibility: an init process is always PID 1
    #[arg(long)]
    pub init: bool,

    /// Set an environment variable (NAME=VALUE, or NAME to take it from your
    /// environment); only names the policy allows (built in: TERM, LANG, LC_*, TZ)
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,

    /// Read environment variables from a file (NAME=VALUE or NAME per line, # comments)
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// Working directory inside the container (absolute); with -v, the mount target or
    /// a directory below it that exists already
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// Mount a host directory: your current directory or one below it, if the policy
    /// allows it ([mounts]): HOST-DIR:CONTAINER-DIR[:ro]; a read-only one only with :ro.
    /// Not over /etc, /proc, /sys, /dev, /tmp or docker-init
    #[arg(short = 'v', long = "volume", value_name = "HOST-DIR:DIR[:ro]")]
    pub volume: Vec<String>,

    /// Mount the current directory at the same path and start there
    /// (like -v "$PWD":"$PWD" -w "$PWD")
    #[arg(long, conflicts_with = "volume")]
    pub here: bool,

    /// Override the image's entrypoint ("" clears it)
    #[arg(long, value_name = "COMMAND", allow_hyphen_values = true)]
    pub entrypoint: Option<String>,

    /// Name the run (a label on the container, not Docker's name, which others on
    /// the isolated network could resolve); one run of yours per name at a time
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// "missing" (pulled only if the policy allows it) or "never" (never pulled)
    #[arg(long, value_name = "POLICY")]
    pub pull: Option<String>,

    /// Only yourself: your uid, uid:gid, or user name (containers always run as you)
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,

    /// "none", or the policy's isolated network "urun-isolated" if it has one
    #[arg(long, visible_alias = "net", value_name = "MODE")]
    pub network: Option<String>,

    /// Only "private"
    #[arg(long, value_name = "MODE")]
    pub ipc: Option<String>,

    /// Only "private"
    #[arg(long, value_name = "MODE")]
    pub cgroupns: Option<String>,

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

/// A docker flag urun knows and refuses, defined once: its clap id (a flag its row
/// defines: its long spelling), why it is refused (`{uid}` is replaced by the caller's uid), the values that are accepted
/// after all (`--ipc private`), and, for a flag that is nothing but refused, how it is
/// spelled if its table row defines it (`urun build`'s). The reason is the flag's help
/// text (man page, completions) and the refusal message.
pub struct RefusedFlag {
    pub id: &'static str,
    pub reason: &'static str,
    pub accepted: &'static [&'static str],
    /// `None`: the flag is a field of the command's arguments struct.
    pub spelling: Option<Spelling>,
}

/// How a refused flag that its table row defines is spelled besides `--ID`: an
/// optional short form, and what it takes.
#[derive(Clone, Copy)]
pub struct Spelling {
    pub short: Option<char>,
    pub takes: Takes,
}

/// What a refused flag takes, as docker's does (parsed, so that the refusal can name
/// it rather than call it unknown).
#[derive(Clone, Copy)]
pub enum Takes {
    /// Nothing (`--squash`).
    Nothing,
    /// One value, once (`--network MODE`).
    One(&'static str),
    /// A value, as often as given (`--secret SECRET`).
    Many(&'static str),
}

/// A refused flag defined by its table row alone: `--long` (`-short` too), taking
/// `takes`; its id is `long`.
pub(crate) const fn refused_flag(
    long: &'static str,
    short: Option<char>,
    takes: Takes,
    reason: &'static str,
) -> RefusedFlag {
    RefusedFlag {
        id: long,
        reason,
        accepted: &[],
        spelling: Some(Spelling { short, takes }),
    }
}

/// `cmd` with its table of refused flags: the flags a row defines added under the
/// [`REFUSED`] heading, and every flag that is nothing but refused given `help(reason)`
/// as its help (a flag refused only for some values keeps its own, which names them).
fn with_refused(
    mut cmd: clap::Command,
    table: &[RefusedFlag],
    help: impl Fn(&'static str) -> String,
) -> clap::Command {
    use clap::{Arg, ArgAction};
    for f in table.iter().filter(|f| f.accepted.is_empty()) {
        let Some(s) = f.spelling else {
            cmd = cmd.mut_arg(f.id, |a| a.help(help(f.reason)));
            continue;
        };
        // As clap's derive makes a field's flag (bool, Option<String>, Vec<String>).
        let arg = match s.takes {
            Takes::Nothing => Arg::new(f.id)
                .required(false)
                .value_parser(clap::value_parser!(bool))
                .action(ArgAction::SetTrue),
            Takes::One(v) => Arg::new(f.id)
                .value_name(v)
                .value_parser(clap::value_parser!(String))
                .action(ArgAction::Set),
            Takes::Many(v) => Arg::new(f.id)
                .value_name(v)
                .value_parser(clap::value_parser!(String))
                .action(ArgAction::Append),
        };
        cmd = cmd.arg(
            arg.short(s.short)
                .long(f.id)
                .help_heading(REFUSED)
                .help(help(f.reason)),
        );
    }
    cmd
}

const NAMESPACES: &str = "namespaces are always private, never the host's or another container's";
const DEVICES: &str = "host devices are never available in containers";
const PORTS: &str = "containers have no network, so no ports can be published";
const NO_NETWORK: &str = "containers have no network";
const NO_LOG: &str = "container output goes only to you, never to a log";
const LIMITS: &str = "resource limits come from the administrator's policy ([limits])";

/// Every refused `docker run` flag, in one table (see [`RefusedFlag`]): all but
/// `--ipc`, `--cgroupns` and `--pull` (refused for some values) are defined by their
/// row alone.
pub const REFUSED_FLAGS: &[RefusedFlag] = &[
    refused_flag("privileged", None, Nothing, "containers always run without privileges as you (uid {uid})"),
    refused_flag("cap-add", None, Many("CAP"), "all capabilities are always dropped; containers run as you (uid {uid})"),
    refused_flag("security-opt", None, Many("OPT"), "security options are fixed (no-new-privileges, the daemon's seccomp/AppArmor profile)"),
    refused_flag("pid", None, One("MODE"), NAMESPACES),
    refused_flag("uts", None, One("MODE"), NAMESPACES),
    refused_flag("userns", None, One("MODE"), NAMESPACES),
    RefusedFlag {
        id: "ipc",
        reason: "namespaces are always private, never the host's or another container's (only --ipc private)",
        accepted: &["private"],
        spelling: None,
    },
    RefusedFlag {
        id: "cgroupns",
        reason: "namespaces are always private (only --cgroupns private)",
        accepted: &["private"],
        spelling: None,
    },
    refused_flag("device", None, Many("DEVICE"), DEVICES),
    refused_flag("gpus", None, One("GPUS"), DEVICES),
    refused_flag("publish", Some('p'), Many("PORTS"), PORTS),
    refused_flag("publish-all", Some('P'), Nothing, PORTS),
    // -v is accepted (the working-directory form, checked by the client and urund);
    // --mount is docker's general form and stays refused.
    refused_flag("mount", None, Many("SPEC"), "mounting host paths is not available: only your working \
        directory can be mounted, with -v \"$PWD\":DIR or --here (policy [mounts])"),
    refused_flag("volumes-from", None, Many("CONTAINER"), "containers never share volumes"),
    refused_flag("sysctl", None, Many("NAME=VALUE"), "kernel parameters are the daemon's defaults"),
    refused_flag("add-host", None, Many("HOST:IP"), NO_NETWORK),
    refused_flag("link", None, Many("CONTAINER"), NO_NETWORK),
    refused_flag("group-add", None, Many("GROUP"), "containers run with your own uid and gid only (uid {uid})"),
    refused_flag(
        "runtime",
        None,
        One("RUNTIME"),
        "the runtime is the policy's ([runtime]; urun --policy shows yours)",
    ),
    refused_flag("log-driver", None, One("DRIVER"), NO_LOG),
    refused_flag("log-opt", None, Many("OPT"), NO_LOG),
    refused_flag("restart", None, One("POLICY"), "containers are never restarted; they end when urun does"),
    refused_flag("memory", Some('m'), One("BYTES"), LIMITS),
    refused_flag("cpus", None, One("N"), LIMITS),
    refused_flag("pids-limit", None, One("N"), LIMITS),
    refused_flag("ulimit", None, Many("LIMIT"), LIMITS),
    refused_flag("detach", Some('d'), Nothing, "urun runs in the foreground only: the container ends when urun does"),
    RefusedFlag {
        id: "pull",
        reason: "urund pulls only missing images, and only where the policy allows it (only --pull missing or --pull never)",
        accepted: &["never", "missing"],
        spelling: None,
    },
];

/// The one-line refusal of the first refused flag on the command line, if any:
/// `--privileged is not allowed: containers always run without privileges as you (uid 1001)`.
pub fn refusal(m: &ArgMatches, uid: u32) -> Option<String> {
    refusal_in(&urun_command(), REFUSED_FLAGS, m, uid)
}

/// [`refusal`] for any command and its table of refused flags.
pub fn refusal_in(
    cmd: &clap::Command,
    table: &[RefusedFlag],
    m: &ArgMatches,
    uid: u32,
) -> Option<String> {
    let present = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    let accepted = |f: &RefusedFlag| {
        !f.accepted.is_empty()
            && m.get_one::<String>(f.id)
                .is_some_and(|v| f.accepted.contains(&v.as_str()))
    };
    table
        .iter()
        .filter(|f| present(f.id) && !accepted(f))
        .map(|f| {
            let at = m.index_of(f.id).unwrap_or(usize::MAX);
            (
                at,
                format!("{} is not allowed: {}", flag_name(cmd, f.id), f.reason),
            )
        })
        .min()
        .map(|(_, msg)| msg.replace("{uid}", &uid.to_string()))
}

/// `-v/--volume` or `--privileged`: how a flag is spelled in messages.
pub fn flag_name(cmd: &clap::Command, id: &str) -> String {
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_id() == id)
        .expect("every refused id is a defined flag");
    match (arg.get_short(), arg.get_long()) {
        (Some(s), Some(l)) => format!("-{s}/--{l}"),
        (None, Some(l)) => format!("--{l}"),
        (Some(s), None) => format!("-{s}"),
        (None, None) => id.to_string(),
    }
}

/// The environment entries to send: `--env-file` files first, then `-e`, later ones
/// winning as with docker. `NAME` alone takes the value from `lookup` (our environment)
/// and is dropped when unset, as docker does.
pub fn environment(
    args: &Urun,
    read: impl Fn(&std::path::Path) -> std::io::Result<String>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    let mut words: Vec<String> = Vec::new();
    for f in &args.env_file {
        let text = read(f).map_err(|e| format!("--env-file {}: {e}", f.display()))?;
        for line in text.lines() {
            let line = line.trim_start();
            if !line.is_empty() && !line.starts_with('#') {
                words.push(line.to_string());
            }
        }
    }
    words.extend(args.env.iter().cloned());
    let mut out: Vec<String> = Vec::new();
    for w in words {
        let entry = match w.split_once('=') {
            Some(_) => w,
            None => match lookup(&w) {
                Some(v) => format!("{w}={v}"),
                None => continue,
            },
        };
        let name = entry.split('=').next().unwrap_or("").to_string();
        out.retain(|e| e.split('=').next() != Some(name.as_str()));
        out.push(entry);
    }
    Ok(out)
}

/// Exit statuses, as `docker run` has them: (status, meaning). In --help, the man page
/// and README.
pub const EXIT_STATUSES: &[(&str, &str)] = &[
    ("0-255", "the container command's own status"),
    ("128+N", "the command was killed by signal N (e.g. 130 for SIGINT, 137 for SIGKILL)"),
    ("124", "the container was killed for exceeding the policy's limits.max_runtime"),
    ("125", "urun itself failed, or a flag or the policy refused the request (the message names the flag or rule), or the Docker daemon is not answering or stopped during the run"),
    ("126", "the command cannot be executed"),
    ("127", "the command was not found"),
];

/// urun's commands besides running (the words reserved as the first argument), and
/// what each does. In --help, the man page and README.
pub const COMMANDS: &[(&str, &str)] = &[
    ("run", "run a container: `urun run IMAGE ...` always runs, even an image named like one of these words; `urun IMAGE ...` runs every other image"),
    ("build", "build an image from a Dockerfile, checked by urund, into your own namespace (see urun build --help)"),
    ("images", "list the images you may run: your own builds and those the policy allows"),
    ("rmi", "remove your own builds"),
    ("push", "promote one of your checked builds to the policy's registry"),
];

/// Which of urun's commands a command line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Run,
    Build,
    Images,
    Rmi,
    Push,
}

impl Sub {
    fn from_word(w: &str) -> Option<Sub> {
        Some(match w {
            "run" => Sub::Run,
            "build" => Sub::Build,
            "images" => Sub::Images,
            "rmi" => Sub::Rmi,
            "push" => Sub::Push,
            _ => return None,
        })
    }
}

/// Finds the command: the first word that is not an option nor an option's value,
/// when it is one of [`COMMANDS`]' words. Only `--socket` may come before it (and
/// `URUN_SOCKET` works everywhere). Returns the command and the arguments for its
/// parser: for `run` (named or not) the `docker run`-style line without the word, for
/// the others `urun` then `--socket` if given, then what follows the word.
/// `Err`: a command word after run options (`urun -it build`), which is ambiguous.
pub fn split_command(argv: Vec<OsString>) -> Result<(Sub, Vec<OsString>), String> {
    let cmd = urun_command();
    let mut only_socket = true;
    let mut i = 1;
    while i < argv.len() {
        let Some(a) = argv[i].to_str() else { break };
        if a.len() > 1 && a.starts_with('-') {
            let Some((words, socket)) = option_span(&cmd, a) else {
                break;
            };
            only_socket &= socket;
            i += words;
            continue;
        }
        let Some(sub) = Sub::from_word(a) else { break };
        if !only_socket {
            return Err(format!(
                "{a} is a urun command: put the options after it (urun {a} ...); \
                 to run an image named {a}: urun run [OPTIONS] {a}"
            ));
        }
        let mut out = argv;
        if sub == Sub::Run {
            out.remove(i);
        } else {
            let rest = out.split_off(i + 1);
            out.truncate(i);
            out[0] = OsString::from("urun");
            out.extend(rest);
        }
        return Ok((sub, out));
    }
    Ok((Sub::Run, argv))
}

/// How many words the option `a` (a word starting with `-`) spans on the run's
/// command line `cmd`, and whether it is `--socket`. `None` for `--`, help and
/// version: no command word is looked for after them.
fn option_span(cmd: &clap::Command, a: &str) -> Option<(usize, bool)> {
    let takes_value = |a: &clap::Arg| a.get_action().takes_values();
    if a == "--" {
        return None;
    }
    if let Some(long) = a.strip_prefix("--") {
        let (name, inline) = match long.split_once('=') {
            Some((n, _)) => (n, true),
            None => (long, false),
        };
        if name == "help" || name == "version" {
            return None;
        }
        let takes = name == "socket"
            || cmd.get_arguments().any(|a| {
                (a.get_long() == Some(name)
                    || a.get_all_aliases().unwrap_or_default().contains(&name))
                    && takes_value(a)
            });
        return Some((if takes && !inline { 2 } else { 1 }, name == "socket"));
    }
    let cluster = &a[1..];
    for (k, c) in cluster.char_indices() {
        if c == 'h' || c == 'V' {
            return None;
        }
        if cmd
            .get_arguments()
            .any(|a| a.get_short() == Some(c) && takes_value(a))
        {
            // the value is the rest of the cluster, or the next word
            let last = k + c.len_utf8() == cluster.len();
            return Some((if last { 2 } else { 1 }, false));
        }
    }
    Some((1, false))
}

/// `urun`'s clap command with the commands, forced settings and exit statuses
/// appended to --help.
pub fn urun_command() -> clap::Command {
    let mut commands = String::from("Commands (the first word; see urun COMMAND --help):\n");
    for (k, v) in COMMANDS {
        commands.push_str(&format!("  {k:<7} {v}\n"));
    }
    let mut forced = format!("{commands}\nAlways forced, whatever you ask:\n");
    for (k, v) in forced::FORCED {
        forced.push_str(&format!("  {k}: {v}\n"));
    }
    let mut statuses = String::from("Exit status:\n");
    for (k, v) in EXIT_STATUSES {
        statuses.push_str(&format!("  {k:<6} {v}\n"));
    }
    with_refused(
        Urun::command().after_help(format!("{forced}\n{statuses}")),
        REFUSED_FLAGS,
        |reason| reason.replace(" (uid {uid})", ""),
    )
}

/// Parses urun's arguments. `Err` carries clap's error (printed by the caller).
pub fn parse_urun<I, T>(args: I) -> Result<Urun, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    parse_urun_matches(args).map(|(a, _)| a)
}

/// Parses urun's arguments and keeps clap's matches (for [`refusal`]).
pub fn parse_urun_matches<I, T>(args: I) -> Result<(Urun, ArgMatches), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let m = urun_command().try_get_matches_from(args)?;
    Ok((Urun::from_arg_matches(&m)?, m))
}

/// A clap error as urun's one line: `unknown flag --foo ...`, or clap's own first line.
pub fn one_line_error(e: &clap::Error) -> String {
    one_line_error_for(e, &RUN_USAGE)
}

/// How a command is named in its one-line errors.
pub struct Usage {
    /// The docker command whose flags it takes (`run`, `build`, ...).
    pub docker: &'static str,
    /// Its usage line.
    pub usage: &'static str,
    /// Where its help is.
    pub help: &'static str,
}

/// `urun [OPTIONS] IMAGE ...` (and `urun run ...`).
pub const RUN_USAGE: Usage = Usage {
    docker: "run",
    usage: "urun [OPTIONS] IMAGE [COMMAND [ARG...]]",
    help: "urun --help",
};

/// [`one_line_error`] for any of urun's commands.
pub fn one_line_error_for(e: &clap::Error, u: &Usage) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::UnknownArgument {
        if let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) {
            return format!(
                "unknown flag {arg}: urun does not know this docker {} flag (see {})",
                u.docker, u.help
            );
        }
    }
    if e.kind() == ErrorKind::MissingRequiredArgument {
        if let Some(ContextValue::Strings(args)) = e.get(ContextKind::InvalidArg) {
            return format!(
                "missing {}: usage: {} (see {})",
                args.join(", "),
                u.usage,
                u.help
            );
        }
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    format!(
        "{} (see {})",
        first.strip_prefix("error: ").unwrap_or(first),
        u.help
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_in_the_help_are_the_shared_constants() {
        use crate::wire::status;
        let listed: Vec<u8> = EXIT_STATUSES
            .iter()
            .filter_map(|(k, _)| k.parse().ok())
            .collect();
        let shared = [
            status::MAX_RUNTIME,
            status::REFUSED,
            status::NOT_EXECUTABLE,
            status::NOT_FOUND,
        ];
        assert_eq!(listed, shared);
        assert!(REFUSED.contains(&format!("exit {}", status::REFUSED)));
    }

    #[test]
    fn every_refused_flag_is_defined_and_refused_with_its_reason() {
        let cmd = urun_command();
        for f in REFUSED_FLAGS {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == f.id)
                .unwrap_or_else(|| panic!("{} is not a flag", f.id));
            if f.accepted.is_empty() {
                assert_eq!(arg.get_help_heading(), Some(REFUSED), "{}", f.id);
            }
        }
    }

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

    fn refused(args: &[&str]) -> Option<String> {
        let (_, m) = parse_urun_matches(args).unwrap();
        refusal(&m, 1001)
    }

    #[test]
    fn volume_here_and_workdir() {
        let a = parse_urun(["urun", "-v", ".:/work:ro", "-w", "/work", "img", "ls"]).unwrap();
        assert_eq!(a.volume, [".:/work:ro"]);
        assert_eq!(a.workdir.as_deref(), Some("/work"));
        assert!(parse_urun(["urun", "--here", "img"]).unwrap().here);
        assert!(parse_urun(["urun", "--here", "-v", ".:/w", "img"]).is_err());
    }

    #[test]
    fn unknown_flags_are_one_line_errors() {
        for args in [
            &["urun", "--frobnicate", "img"][..],
            &["urun", "--cap-drop=ALL", "img"],
            &["urun", "-X", "img"],
        ] {
            let e = parse_urun(args).unwrap_err();
            let line = one_line_error(&e);
            assert!(line.starts_with("unknown flag -"), "{line}");
            assert!(!line.contains('\n'));
        }
        let e = parse_urun(["urun"]).unwrap_err();
        assert_eq!(
            one_line_error(&e),
            "missing <IMAGE>: usage: urun [OPTIONS] IMAGE [COMMAND [ARG...]] (see urun --help)"
        );
    }

    #[test]
    fn refused_flags_parse_and_are_named() {
        assert_eq!(
            refused(&["urun", "--privileged", "img"]).unwrap(),
            "--privileged is not allowed: containers always run without privileges as you (uid 1001)"
        );
        for (args, flag) in [
            (&["urun", "--cap-add=SYS_ADMIN", "img"][..], "--cap-add"),
            (
                &["urun", "--security-opt", "seccomp=unconfined", "img"],
                "--security-opt",
            ),
            (&["urun", "--pid=host", "img"], "--pid"),
            (&["urun", "--ipc", "host", "img"], "--ipc"),
            (&["urun", "--uts=host", "img"], "--uts"),
            (&["urun", "--userns=host", "img"], "--userns"),
            (&["urun", "--cgroupns=host", "img"], "--cgroupns"),
            (&["urun", "--device", "/dev/sda", "img"], "--device"),
            (&["urun", "-p", "80:80", "img"], "-p/--publish"),
            (&["urun", "-P", "img"], "-P/--publish-all"),
            (
                &["urun", "--mount", "type=bind,src=/,dst=/h", "img"],
                "--mount",
            ),
            (&["urun", "--volumes-from", "c", "img"], "--volumes-from"),
            (&["urun", "--sysctl", "a=b", "img"], "--sysctl"),
            (&["urun", "--add-host", "a:1.2.3.4", "img"], "--add-host"),
            (&["urun", "--runtime", "runc", "img"], "--runtime"),
            (
                &["urun", "--log-driver", "json-file", "img"],
                "--log-driver",
            ),
            (&["urun", "-d", "img"], "-d/--detach"),
            (&["urun", "-itd", "img"], "-d/--detach"),
            (&["urun", "--pull", "always", "img"], "--pull"),
        ] {
            let msg = refused(args).unwrap_or_else(|| panic!("{args:?} accepted"));
            assert!(
                msg.starts_with(&format!("{flag} is not allowed: ")),
                "{msg}"
            );
        }
        // Mounts name the policy section that allows the working-directory form.
        assert!(
            refused(&["urun", "--mount", "type=bind,src=/a,dst=/b", "img"])
                .unwrap()
                .contains("policy [mounts]")
        );
        // -v is not refused here: the client and urund check the working-directory form.
        assert_eq!(refused(&["urun", "-v", "/:/host", "img"]), None);
        // The first refused flag on the line is the one named.
        let m = refused(&["urun", "-d", "--privileged", "img"]).unwrap();
        assert!(m.starts_with("-d/--detach"), "{m}");
    }

    #[test]
    fn accepted_flags_in_docker_syntax() {
        let (a, m) = parse_urun_matches([
            "urun",
            "-it",
            "--rm",
            "--init",
            "-e",
            "TERM=xterm",
            "--env=LANG=C",
            "-eTZ=UTC",
            "--env-file",
            "f",
            "-w",
            "/w",
            "--entrypoint",
            "sh",
            "--name=web",
            "--pull",
            "never",
            "-u",
            "1001:1001",
            "--net",
            "none",
            "--ipc=private",
            "--cgroupns",
            "private",
            "img",
            "cmd",
            "-d",
        ])
        .unwrap();
        assert_eq!(refusal(&m, 1001), None);
        assert!(a.interactive && a.tty && a.rm && a.init);
        assert_eq!(a.env, ["TERM=xterm", "LANG=C", "TZ=UTC"]);
        assert_eq!(a.workdir.as_deref(), Some("/w"));
        assert_eq!(a.entrypoint.as_deref(), Some("sh"));
        assert_eq!(a.name.as_deref(), Some("web"));
        assert_eq!(a.user.as_deref(), Some("1001:1001"));
        assert_eq!(a.network.as_deref(), Some("none"));
        assert_eq!(a.command, ["cmd", "-d"]);
    }

    #[test]
    fn env_files_then_flags_later_wins_and_bare_names_from_the_environment() {
        let (a, _) = parse_urun_matches([
            "urun",
            "--env-file",
            "f",
            "-e",
            "LANG=C",
            "-e",
            "TERM",
            "-e",
            "TZ",
            "img",
        ])
        .unwrap();
        let env = environment(
            &a,
            |_| Ok("# comment\n\n  LANG=de_DE\nLC_ALL=C\nLC_TIME\n".into()),
            |n| (n == "TERM").then(|| "screen".to_string()),
        )
        .unwrap();
        assert_eq!(env, ["LC_ALL=C", "LANG=C", "TERM=screen"]);
        let e = environment(&a, |_| Err(std::io::ErrorKind::NotFound.into()), |_| None);
        assert!(e.unwrap_err().starts_with("--env-file f: "));
    }

    #[test]
    fn help_lists_forced_settings_and_statuses() {
        let h = urun_command().render_long_help().to_string();
        assert!(h.contains("CapDrop / CapAdd: ALL / none"), "{h}");
        assert!(h.contains("127    the command was not found"), "{h}");
        assert!(
            h.contains("--privileged") && h.contains("-v, --volume"),
            "{h}"
        );
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
    fn clap_definitions_are_consistent() {
        urun_command().debug_assert();
    }
}

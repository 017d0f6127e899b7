//! `urun images`, `urun rmi`, `urun push`: one `Manage` request each, answered by a
//! `Result` that is printed the way docker prints its own (`docker images`' table,
//! `Untagged:`/`Deleted:` lines). urund decides what the caller sees and may remove.

use super::build::human_size;
use super::cli::{self, Usage};
use super::{connect, refused_or, relay_with_result, Finished};
use crate::wire::{self, status, ImageRow, Kind, Manage, Op, Outcome};
use anyhow::{Context as _, Result};
use clap::FromArgMatches;
use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

/// Parses a command's arguments; `Err`: its exit status (help printed, or the one-line
/// error).
fn parse<T: FromArgMatches>(
    cmd: clap::Command,
    argv: Vec<OsString>,
    usage: &Usage,
) -> Result<(T, clap::ArgMatches), u8> {
    let parsed = cmd
        .try_get_matches_from(argv)
        .and_then(|m| T::from_arg_matches(&m).map(|a| (a, m)));
    match parsed {
        Ok(x) => Ok(x),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            Err(0)
        }
        Err(e) => {
            eprintln!("urun: {}", cli::one_line_error_for(&e, usage));
            Err(status::REFUSED)
        }
    }
}

/// Sends one `Manage` request and relays the answer; the `Result`, if the request
/// succeeded.
fn manage(socket: &Path, op: Op) -> Result<(Finished, Option<Outcome>)> {
    let sock = connect(socket)?;
    let mut w = sock.try_clone().context("socket")?;
    let sent = wire::write_frame(&mut w, Kind::Manage, &Manage::new(op).encode());
    if sent.is_err() {
        return refused_or(sent, sock, "sending the request to urund").map(|f| (f, None));
    }
    let mut outcome = None;
    let finished = relay_with_result(sock, false, Some(&mut outcome))?;
    Ok((finished, outcome))
}

/// Prints urund's message, or `text` for a successful request; the exit status.
fn finish(
    r: Result<(Finished, Option<Outcome>)>,
    text: impl FnOnce(Outcome) -> Result<String>,
) -> u8 {
    let (finished, outcome) = match r {
        Ok(x) => x,
        Err(e) => {
            eprintln!("urun: {e:#}");
            return status::REFUSED;
        }
    };
    if let Some(m) = &finished.message {
        eprintln!("urun: {m}");
        return finished.status;
    }
    if finished.status != 0 {
        return finished.status;
    }
    let Some(outcome) = outcome else {
        eprintln!("urun: urund ended the request without its result");
        return status::REFUSED;
    };
    match text(outcome) {
        Ok(t) => {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(t.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return status::REFUSED;
            }
            0
        }
        Err(e) => {
            eprintln!("urun: {e:#}");
            status::REFUSED
        }
    }
}

fn unexpected() -> anyhow::Error {
    anyhow::anyhow!("urund answered with another request's result")
}

/// `urun images [-q] [--no-trunc] [--registry]`.
pub fn images_main(argv: Vec<OsString>) -> u8 {
    let (a, _) = match parse::<cli::ImagesArgs>(cli::images_command(), argv, &cli::IMAGES_USAGE) {
        Ok(x) => x,
        Err(s) => return s,
    };
    let r = manage(
        &a.socket,
        Op::Images {
            registry: a.registry,
        },
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    finish(r, |o| match o {
        Outcome::Images { images } if a.registry => {
            Ok(registry_table(&images, a.quiet, a.no_trunc, now))
        }
        Outcome::Images { images } => {
            let rows: Vec<ImageRow> = images
                .into_iter()
                .filter(|r| {
                    a.filter
                        .as_deref()
                        .is_none_or(|f| matches_filter(&r.reference, f))
                })
                .collect();
            Ok(images_table(&rows, a.quiet, a.no_trunc, now))
        }
        _ => Err(unexpected()),
    })
}

/// `urun rmi IMAGE...`.
pub fn rmi_main(argv: Vec<OsString>) -> u8 {
    let (a, m) = match parse::<cli::RmiArgs>(cli::rmi_command(), argv, &cli::RMI_USAGE) {
        Ok(x) => x,
        Err(s) => return s,
    };
    let cmd = cli::rmi_command();
    let uid = nix::unistd::getuid().as_raw();
    if let Some(msg) = cli::refusal_in(&cmd, cli::RMI_REFUSED_FLAGS, &m, uid) {
        eprintln!("urun: {msg}");
        return status::REFUSED;
    }
    if a.images.len() > wire::build::MAX_BUILD_ITEMS {
        eprintln!(
            "urun: at most {} images can be removed at once",
            wire::build::MAX_BUILD_ITEMS
        );
        return status::REFUSED;
    }
    let r = manage(&a.socket, Op::Rmi { images: a.images });
    finish(r, |o| match o {
        Outcome::Removed { untagged, deleted } => Ok(removed_lines(&untagged, &deleted)),
        _ => Err(unexpected()),
    })
}

/// `urun push NAME[:TAG]`.
pub fn push_main(argv: Vec<OsString>) -> u8 {
    let (a, _) = match parse::<cli::PushArgs>(cli::push_command(), argv, &cli::PUSH_USAGE) {
        Ok(x) => x,
        Err(s) => return s,
    };
    let r = manage(&a.socket, Op::Push { image: a.image });
    finish(r, |o| match o {
        Outcome::Pushed { reference, digest } => Ok(format!(
            "{}: digest: {}\n",
            clean(&reference),
            clean(&digest)
        )),
        _ => Err(unexpected()),
    })
}

/// Text from urund without control characters.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// `docker images REPOSITORY[:TAG]`: the row's repository is the argument, or its
/// `repository:tag` is.
pub(crate) fn matches_filter(reference: &str, filter: &str) -> bool {
    let (repo, tag) = split_reference(reference);
    repo == filter || format!("{repo}:{tag}") == filter
}

/// docker rmi's lines: `Untagged: REF` then `Deleted: ID`.
pub(crate) fn removed_lines(untagged: &[String], deleted: &[String]) -> String {
    let mut t = String::new();
    for u in untagged {
        t.push_str(&format!("Untagged: {}\n", clean(u)));
    }
    for d in deleted {
        t.push_str(&format!("Deleted: {}\n", clean(d)));
    }
    t
}

/// `repository:tag` split as docker shows it (the tag after the last `:` that is not
/// part of a registry's port; `<none>` for either part missing).
fn split_reference(r: &str) -> (String, String) {
    let r = clean(r);
    let slash = r.rfind('/').map_or(0, |i| i + 1);
    match r[slash..].rfind(':') {
        Some(i) => (r[..slash + i].to_string(), r[slash + i + 1..].to_string()),
        None if r.is_empty() => ("<none>".into(), "<none>".into()),
        None => (r.clone(), "<none>".into()),
    }
}

/// An ID as docker shows it: 12 hex digits, or `sha256:` and all of them with
/// `--no-trunc`.
fn show_id(id: &str, full: bool) -> String {
    let id = clean(id);
    if full {
        return id;
    }
    let hex = id.strip_prefix("sha256:").unwrap_or(&id);
    hex.chars().take(12).collect()
}

/// docker images' table (REPOSITORY TAG IMAGE ID CREATED SIZE, columns padded as
/// docker's tabwriter does: at least 10 wide, 3 spaces apart), newest first; or the
/// IDs alone with `quiet`, each once. `now`: seconds since the epoch.
pub(crate) fn images_table(rows: &[ImageRow], quiet: bool, full: bool, now: i64) -> String {
    let mut rows: Vec<&ImageRow> = rows.iter().collect();
    rows.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then(a.reference.cmp(&b.reference))
    });
    if quiet {
        let mut seen = std::collections::HashSet::new();
        return rows
            .iter()
            .map(|r| show_id(&r.id, full))
            .filter(|id| seen.insert(id.clone()))
            .map(|id| format!("{id}\n"))
            .collect();
    }
    let mut table = vec![[
        "REPOSITORY".to_string(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
    ]];
    for r in rows {
        let (repo, tag) = split_reference(&r.reference);
        table.push([
            repo,
            tag,
            show_id(&r.id, full),
            created(now - r.created),
            human_size(r.size, 3),
        ]);
    }
    columns(&table)
}

/// `urun images --registry`: what you pushed, as `docker images --digests` shows
/// digests (REPOSITORY DIGEST IMAGE ID CREATED), in urund's order; or the digest
/// references alone with `quiet` (what a run host is given).
pub(crate) fn registry_table(rows: &[ImageRow], quiet: bool, full: bool, now: i64) -> String {
    if quiet {
        return rows
            .iter()
            .map(|r| format!("{}\n", clean(&r.reference)))
            .collect();
    }
    let mut table = vec![[
        "REPOSITORY".to_string(),
        "DIGEST".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
    ]];
    for r in rows {
        let repo = r
            .reference
            .rsplit_once('@')
            .map_or(&r.reference[..], |(n, _)| n);
        table.push([
            clean(repo),
            clean(r.digest.as_deref().unwrap_or("<none>")),
            show_id(&r.id, full),
            created(now - r.created),
        ]);
    }
    columns(&table)
}

/// docker's table layout: every column but the last padded to its widest cell plus
/// three spaces (at least 10), the last as it is, trailing spaces trimmed.
fn columns<const N: usize>(table: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| {
            let w = table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0);
            (w + 3).max(10)
        })
        .collect();
    let mut t = String::new();
    for row in table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c == N - 1 {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[c]));
            }
        }
        t.push_str(line.trim_end());
        t.push('\n');
    }
    t
}

/// docker's CREATED column: `units.HumanDuration` and " ago".
fn created(age: i64) -> String {
    if age < 0 {
        return "Less than a second ago".into();
    }
    format!("{} ago", human_duration(age as u64))
}

/// docker's `units.HumanDuration` for `secs` seconds.
pub(crate) fn human_duration(secs: u64) -> String {
    let minutes = secs / 60;
    let hours = (secs as f64 / 3600.0 + 0.5) as u64;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_table_shows_what_was_pushed_by_digest() {
        let d = format!("sha256:{}", "1".repeat(64));
        let r = ImageRow {
            reference: format!("reg:5000/urun/alice/app@{d}"),
            id: format!("sha256:{}", "a".repeat(64)),
            created: 100,
            size: 0,
            own: true,
            digest: Some(d.clone()),
        };
        let t = registry_table(std::slice::from_ref(&r), false, false, 160);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("REPOSITORY") && lines[0].contains("DIGEST"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("reg:5000/urun/alice/app") && lines[1].contains(&d),
            "{t}"
        );
        assert!(
            lines[1].contains("aaaaaaaaaaaa ") && lines[1].ends_with("About a minute ago"),
            "{t}"
        );
        assert_eq!(
            registry_table(std::slice::from_ref(&r), true, false, 160),
            format!("{}\n", r.reference)
        );
    }

    fn row(reference: &str, id: &str, created: i64, size: u64) -> ImageRow {
        ImageRow {
            reference: reference.into(),
            id: id.into(),
            created,
            size,
            own: true,
            digest: None,
        }
    }

    const ID: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_table_is_dockers() {
        let now = 1_000_000;
        let t = images_table(
            &[
                row("busybox:latest", ID, now - 3 * 86400 * 7, 1_240_000),
                row("urun/alice/app:1", ID, now - 90, 72_800_000),
                row("<none>:<none>", ID, now - 7200, 5),
            ],
            false,
            false,
            now,
        );
        let want = "\
REPOSITORY         TAG       IMAGE ID       CREATED         SIZE
urun/alice/app     1         0123456789ab   About a minute ago   72.8MB
";
        // Columns are aligned on the widest cell: check the structure, not the
        // exact spacing of this hand-written line.
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("REPOSITORY   "), "{t}");
        let words = |l: &str| {
            l.split("   ")
                .filter(|w| !w.trim().is_empty())
                .map(|w| w.trim().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            words(lines[0]),
            ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
        );
        assert_eq!(
            words(lines[1]),
            [
                "urun/alice/app",
                "1",
                "0123456789ab",
                "About a minute ago",
                "72.8MB"
            ]
        );
        assert_eq!(
            words(lines[2]),
            ["<none>", "<none>", "0123456789ab", "2 hours ago", "5B"]
        );
        assert_eq!(
            words(lines[3]),
            ["busybox", "latest", "0123456789ab", "3 weeks ago", "1.24MB"]
        );
        // every column starts at the same place on every line
        let col = |l: &str, w: &str| l.find(w).unwrap();
        assert_eq!(col(lines[0], "IMAGE ID"), col(lines[1], "0123456789ab"));
        assert_eq!(col(lines[0], "SIZE"), col(lines[2], "5B"));
        let _ = want;
    }

    #[test]
    fn quiet_lists_each_id_once_and_no_trunc_the_full_id() {
        let rows = [row("a:1", ID, 2, 1), row("a:2", ID, 1, 1)];
        assert_eq!(images_table(&rows, true, false, 3), "0123456789ab\n");
        assert_eq!(images_table(&rows, true, true, 3), format!("{ID}\n"));
        assert_eq!(images_table(&[], true, false, 3), "");
        assert_eq!(images_table(&[], false, false, 3).lines().count(), 1);
    }

    #[test]
    fn references_split_like_dockers_and_lose_control_characters() {
        assert_eq!(
            split_reference("localhost:5000/a/b:1"),
            ("localhost:5000/a/b".into(), "1".into())
        );
        assert_eq!(
            split_reference("localhost:5000/a"),
            ("localhost:5000/a".into(), "<none>".into())
        );
        assert_eq!(
            split_reference("<none>:<none>"),
            ("<none>".into(), "<none>".into())
        );
        assert_eq!(split_reference("a\x1b[2J:1"), ("a[2J".into(), "1".into()));
    }

    #[test]
    fn durations_are_dockers() {
        for (s, want) in [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (3599, "59 minutes"),
            (3600, "About an hour"),
            (5399, "About an hour"),
            (5400, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (14 * 86400, "2 weeks"),
            (60 * 86400, "2 months"),
            (730 * 86400, "2 years"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn a_repository_argument_filters_as_docker_images_does() {
        assert!(matches_filter("urun/alice/app:1", "urun/alice/app"));
        assert!(matches_filter("urun/alice/app:1", "urun/alice/app:1"));
        assert!(!matches_filter("urun/alice/app:1", "urun/alice/app:2"));
        assert!(!matches_filter("urun/alice/app:1", "app"));
        assert!(!matches_filter("urun/alice/app2:1", "urun/alice/app"));
    }

    #[test]
    fn rmi_lines_are_dockers() {
        assert_eq!(
            removed_lines(&["urun/alice/app:1".into()], &[ID.into()]),
            format!("Untagged: urun/alice/app:1\nDeleted: {ID}\n")
        );
    }
}

//! Generates urun's man pages and shell completions from the same clap definitions the
//! programs use (src/cli.rs), so they cannot drift apart:
//!
//!     cargo run --example gen-docs -- OUTDIR
//!
//! writes OUTDIR/urun.1, OUTDIR/urun-build.1, OUTDIR/urun-images.1, OUTDIR/urun-rmi.1,
//! OUTDIR/urun-push.1, OUTDIR/urund.8 and OUTDIR/completions/{urun.bash, _urun,
//! urun.fish} (the completions know urun's commands and each one's flags). The
//! generators are dev-dependencies: the installed binaries do not carry them.

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

/// A man page section: title and (tag, text) rows.
type Section<'a> = (&'a str, &'a [(&'a str, &'a str)]);

/// Writes every generated file under `out`; returns their paths.
pub fn generate(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    std::fs::create_dir_all(out.join("completions"))?;
    use urun::client::cli;
    let urun_sections = [
        ("COMMANDS", cli::COMMANDS),
        ("FORCED SETTINGS", urun::policy::forced::FORCED),
        ("EXIT STATUS", cli::EXIT_STATUSES),
        (
            "SEE ALSO",
            &[
                ("urund(8)", "the helper daemon; docker-run(1)"),
                (
                    "urun-build(1), urun-images(1), urun-rmi(1), urun-push(1)",
                    "urun's other commands",
                ),
            ][..],
        ),
    ];
    let build_sections = [
        ("EXIT STATUS", cli::BUILD_EXIT_STATUSES),
        (
            "SEE ALSO",
            &[("urun(1), urun-images(1), urun-rmi(1)", "docker-build(1)")][..],
        ),
    ];
    let other_sections = [(
        "SEE ALSO",
        &[("urun(1), urun-build(1)", "the client and its commands")][..],
    )];
    let urund_sections = [
        (
            "OPERATION",
            &[("", urun::daemon::cli::URUND_AFTER_HELP)][..],
        ),
        ("POLICY FILE", &[("", urun::daemon::cli::POLICY_HELP)][..]),
        ("SEE ALSO", &[("urun(1)", "the client")][..]),
    ];
    let pages: [(clap::Command, &str, &str, &[Section]); 6] = [
        (cli::urun_command(), "urun.1", "1", &urun_sections),
        (cli::build_command(), "urun-build.1", "1", &build_sections),
        (cli::images_command(), "urun-images.1", "1", &other_sections),
        (cli::rmi_command(), "urun-rmi.1", "1", &other_sections),
        (cli::push_command(), "urun-push.1", "1", &other_sections),
        (
            urun::daemon::cli::Urund::command(),
            "urund.8",
            "8",
            &urund_sections,
        ),
    ];
    for (cmd, file, section, extra) in pages {
        let man = clap_mangen::Man::new(cmd).section(section);
        let mut buf = Vec::new();
        man.render_title(&mut buf)?;
        man.render_name_section(&mut buf)?;
        man.render_synopsis_section(&mut buf)?;
        man.render_description_section(&mut buf)?;
        man.render_options_section(&mut buf)?;
        for (title, rows) in extra {
            buf.extend(section_roff(title, rows).as_bytes());
        }
        man.render_version_section(&mut buf)?;
        let path = out.join(file);
        std::fs::write(&path, buf)?;
        written.push(path);
    }
    for (shell, file) in [
        (Shell::Bash, "urun.bash"),
        (Shell::Zsh, "_urun"),
        (Shell::Fish, "urun.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cli::completion_command(), "urun", &mut buf);
        let path = out.join("completions").join(file);
        std::fs::write(&path, buf)?;
        written.push(path);
    }
    Ok(written)
}

/// A man page section of tagged paragraphs (an empty tag: a plain paragraph).
fn section_roff(title: &str, rows: &[(&str, &str)]) -> String {
    use clap_mangen::roff::{bold, roman, Roff};
    let mut r = Roff::new();
    r.control("SH", [title]);
    for (tag, text) in rows {
        if tag.is_empty() && text.contains('\n') {
            // Aligned text (a table in words): kept as it is.
            r.control("PP", []).control("nf", []);
            for line in text.lines() {
                r.text([roman(line)]);
            }
            r.control("fi", []);
        } else if tag.is_empty() {
            r.control("PP", []).text([roman(*text)]);
        } else {
            r.control("TP", []).text([bold(*tag)]).text([roman(*text)]);
        }
    }
    r.to_roff()
}

#[allow(dead_code)]
fn main() {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: cargo run --example gen-docs -- OUTDIR");
        std::process::exit(2);
    };
    match generate(Path::new(&out)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
        }
        Err(e) => {
            eprintln!("gen-docs: writing to {}: {e}", Path::new(&out).display());
            std::process::exit(1);
        }
    }
}

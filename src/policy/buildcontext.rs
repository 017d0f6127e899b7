//! The build context as urund receives it: a tar archive from an untrusted client,
//! checked before the build engine sees a byte of it. Pure over any [`Read`].
//!
//! Accepted: regular files, directories, symbolic links (their targets are data: the
//! builder copies links as links) and hard links to an earlier regular file of the
//! archive; PAX and GNU long-name records as the `tar` crate reads them. Refused: any
//! other type (devices, FIFOs, sockets, sparse or unknown entries), a name that is
//! absolute, has a `..` component, is empty, not UTF-8 or longer than [`MAX_NAME`], a
//! name that appears twice (after `./` and a trailing `/` are taken off), more than
//! [`MAX_ENTRIES`] entries. A directory entry for the context's root itself (`./`, as
//! `tar -C dir -c .` writes first) is accepted once, as Docker does, and is only that:
//! never a file, a link, or a second time. The Dockerfile the request names must be a regular file of
//! the archive, at most [`MAX_DOCKERFILE`] bytes; its bytes are returned for the check.
//!
//! What the builder is sent is not the archive as received but [`Context::sent`]: its
//! entries as urund read them, up to where urund stopped reading (nothing after the
//! end of the archive, nothing urund did not parse), the Dockerfile's entry taken out,
//! and a regular file of exactly the checked bytes under the Dockerfile's name added
//! last, where an extractor writes it over anything of that name. Whatever a path
//! trick or a disagreement between tar readers could make the builder's extractor do,
//! the Dockerfile it opens holds the bytes urund checked.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::io::Read;

/// Most entries in one context.
pub const MAX_ENTRIES: usize = 200_000;
/// Longest entry name (Linux's PATH_MAX).
pub const MAX_NAME: usize = 4096;
/// Largest Dockerfile (the client's own limit too).
pub const MAX_DOCKERFILE: u64 = 4 << 20;

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub entries: usize,
    /// The Dockerfile's bytes.
    pub dockerfile: Vec<u8>,
    /// The Dockerfile's name as the builder is to open it (`./` and trailing `/` off).
    pub dockerfile_name: String,
    /// What the builder is sent, in order (see the module comment).
    pub sent: Vec<Piece>,
}

/// A piece of the archive the builder is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes `start..end` of the archive as received.
    Archive { start: u64, end: u64 },
    /// Bytes urund made: the checked Dockerfile's entry and the end of the archive.
    Made(Vec<u8>),
}

/// The size of a tar block.
const BLOCK: u64 = 512;

/// An entry name as Docker will see it, or why it is refused. Pure.
pub fn clean_name(raw: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(raw).map_err(|_| "a name that is not UTF-8".to_string())?;
    if s.len() > MAX_NAME {
        return Err(format!("a name longer than {MAX_NAME} bytes"));
    }
    if s.starts_with('/') {
        return Err(format!("absolute name {s:?}"));
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("name {s:?} goes up with \"..\"")),
            c if c.contains('\0') => return Err("a name with NUL".into()),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(format!("empty name {s:?}"));
    }
    Ok(parts.join("/"))
}

/// Checks the archive and returns its Dockerfile (`dockerfile`, a name inside it).
pub fn check(archive: impl Read, dockerfile: &str) -> Result<Context, String> {
    let wanted = clean_name(dockerfile.as_bytes()).map_err(|e| format!("Dockerfile: {e}"))?;
    let mut ar = tar::Archive::new(archive);
    // name → whether it is a regular file
    let mut seen: HashMap<String, bool> = HashMap::new();
    let mut found: Option<Vec<u8>> = None;
    // Names that are not directories, and every proper prefix of every name: no entry
    // may lie below a symlink or a file, in either order (see `below_no_leaf`).
    let mut leaves: HashSet<String> = HashSet::new();
    let mut parents: HashSet<String> = HashSet::new();
    // Where the next entry starts (its extension records included): each entry spans
    // from the end of the one before to the end of its data, in whole blocks.
    let mut next: u64 = 0;
    // The Dockerfile entry's span and header.
    let mut cut: Option<(u64, u64, tar::Header)> = None;
    let entries = ar
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for e in entries {
        let mut e = e.map_err(|e| format!("malformed archive: {e}"))?;
        if seen.len() >= MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        let start = next;
        next = e
            .size()
            .checked_add(BLOCK - 1)
            .map(|n| n & !(BLOCK - 1))
            .and_then(|n| e.raw_file_position().checked_add(n))
            .ok_or_else(|| "malformed archive: an entry's size overflows".to_string())?;
        let kind = e.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        if is_root(&e.path_bytes()) {
            // The root directory: nothing to extract, nothing may lie below it but
            // what lies below the context anyway.
            if kind != tar::EntryType::Directory {
                return Err(format!(
                    "{:?} names the context's root but is not a directory",
                    String::from_utf8_lossy(&e.path_bytes())
                ));
            }
            if seen.insert(ROOT.into(), false).is_some() {
                return Err("the context's root directory appears twice".into());
            }
            continue;
        }
        let name = clean_name(&e.path_bytes())?;
        let regular = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => true,
            tar::EntryType::Directory | tar::EntryType::Symlink => false,
            tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| format!("hard link {name:?} without a target"))?;
                let target = clean_name(&target)?;
                if seen.get(&target) != Some(&true) {
                    return Err(format!(
                        "hard link {name:?} to {target:?}, which is not an earlier regular file"
                    ));
                }
                false
            }
            tar::EntryType::GNUSparse => unreachable_sparse(&name)?,
            other => {
                return Err(format!(
                    "{name:?} is a {} entry; only files, directories and links are sent",
                    kind_name(other)
                ))
            }
        };
        if kind == tar::EntryType::Symlink {
            let t = e.link_name_bytes().unwrap_or_default();
            if t.is_empty() || t.len() > MAX_NAME || t.contains(&0) {
                return Err(format!("symbolic link {name:?} with a bad target"));
            }
        }
        if seen.insert(name.clone(), regular).is_some() {
            return Err(format!("{name:?} appears twice"));
        }
        below_no_leaf(
            &name,
            kind == tar::EntryType::Directory,
            &mut leaves,
            &mut parents,
        )?;
        if name == wanted {
            if !regular {
                return Err(format!("the Dockerfile {name:?} is not a regular file"));
            }
            if e.size() > MAX_DOCKERFILE {
                return Err(format!(
                    "the Dockerfile {name:?} is larger than {} MiB",
                    MAX_DOCKERFILE >> 20
                ));
            }
            let mut text = Vec::new();
            e.by_ref()
                .take(MAX_DOCKERFILE)
                .read_to_end(&mut text)
                .map_err(|e| format!("malformed archive: {e}"))?;
            found = Some(text);
            cut = Some((start, next, e.header().clone()));
        }
    }
    let dockerfile = found.ok_or_else(|| format!("the context has no Dockerfile {wanted:?}"))?;
    let Some((from, to, header)) = cut else {
        return Err(format!("the context has no Dockerfile {wanted:?}"));
    };
    let mut sent = Vec::new();
    for (start, end) in [(0, from), (to, next)] {
        if start < end {
            sent.push(Piece::Archive { start, end });
        }
    }
    sent.push(Piece::Made(dockerfile_entry(
        &wanted,
        &header,
        &dockerfile,
    )?));
    Ok(Context {
        entries: seen.len(),
        dockerfile,
        dockerfile_name: wanted,
        sent,
    })
}

/// The checked Dockerfile as a regular file entry named `name`, with the mode, owner
/// and time of the entry it came in (`like`), then the end of the archive. Pure.
fn dockerfile_entry(name: &str, like: &tar::Header, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(like.mode().unwrap_or(0o644) & 0o7777);
    h.set_uid(like.uid().unwrap_or(0));
    h.set_gid(like.gid().unwrap_or(0));
    h.set_mtime(like.mtime().unwrap_or(0));
    h.set_size(bytes.len() as u64);
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut h, name, bytes)
        .map_err(|e| format!("the Dockerfile {name:?}: {e}"))?;
    b.into_inner()
        .map_err(|e| format!("the Dockerfile {name:?}: {e}"))
}

/// The archive the builder is sent, from the archive as received (tests). Pure.
#[cfg(test)]
pub fn assemble(archive: &[u8], sent: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in sent {
        match p {
            Piece::Archive { start, end } => {
                out.extend_from_slice(&archive[*start as usize..*end as usize])
            }
            Piece::Made(b) => out.extend_from_slice(b),
        }
    }
    out
}

/// The key of the root directory entry in `seen` (no clean name is `.`).
const ROOT: &str = ".";

/// Whether a raw entry name is the context's root directory: `.`, `./`, `.//.`, …
/// (`.` components and slashes only, at least one `.`, not absolute). Pure.
fn is_root(raw: &[u8]) -> bool {
    raw.first() == Some(&b'.') && raw.split(|b| *b == b'/').all(|c| c.is_empty() || c == b".")
}

/// Refuses an entry below a symlink or a file, whichever comes first in the archive.
/// Docker's extractor writes `d/Dockerfile` *through* a symlink `d -> e` (and replaces
/// an implicit directory by a later symlink), and the builder opens the Dockerfile
/// following symlinks: a name that lies below a non-directory means the file urund
/// checks is not the file the builder reads. Directories only ever lead to entries;
/// everything else is a leaf.
fn below_no_leaf(
    name: &str,
    dir: bool,
    leaves: &mut HashSet<String>,
    parents: &mut HashSet<String>,
) -> Result<(), String> {
    for (i, _) in name.match_indices('/') {
        let prefix = &name[..i];
        if leaves.contains(prefix) {
            return Err(format!(
                "{name:?} lies below {prefix:?}, which is not a directory (a symlink or a file)"
            ));
        }
        parents.insert(prefix.to_string());
    }
    if !dir {
        if parents.contains(name) {
            return Err(format!(
                "{name:?} is not a directory (a symlink or a file), but earlier entries lie below it"
            ));
        }
        leaves.insert(name.to_string());
    }
    Ok(())
}

fn unreachable_sparse(name: &str) -> Result<bool, String> {
    Err(format!(
        "{name:?} is a sparse file entry; only files, directories and links are sent"
    ))
}

fn kind_name(k: tar::EntryType) -> &'static str {
    match k {
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        _ => "special",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            {
                // Raw name bytes: the tar crate's own setters refuse what a hostile
                // client would send.
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                if let Some(l) = link {
                    gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
                }
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType as T;

    #[test]
    fn an_entry_below_a_symlink_or_a_file_is_refused_in_either_order() {
        let benign: &[u8] = b"FROM scratch\nUSER 1000\n";
        let hostile: &[u8] = b"FROM scratch\nADD http://127.0.0.1/x /x\nUSER 1000\n";
        // The review's B1: the builder reads e/Dockerfile through d -> e.
        let through = [
            ("d", T::Symlink, &b""[..], Some("e")),
            ("e/", T::Directory, &b""[..], None),
            ("d/Dockerfile", T::Regular, benign, None),
            ("e/Dockerfile", T::Regular, hostile, None),
        ];
        let e = check(&tar_of(&through)[..], "d/Dockerfile").unwrap_err();
        assert!(e.contains("\"d/Dockerfile\" lies below \"d\""), "{e}");
        // The symlink after the entries below it replaces the implicit directory.
        let after = [
            ("d/Dockerfile", T::Regular, benign, None),
            ("d", T::Symlink, &b""[..], Some("e")),
            ("e/Dockerfile", T::Regular, hostile, None),
        ];
        let e = check(&tar_of(&after)[..], "d/Dockerfile").unwrap_err();
        assert!(e.contains("\"d\" is not a directory"), "{e}");
        // Below a regular file or a hard link, too.
        for kind in [T::Regular, T::Link] {
            let t = tar_of(&[
                ("f", T::Regular, &b"x"[..], None),
                ("g", kind, &b""[..], (kind == T::Link).then_some("f")),
                ("g/Dockerfile", T::Regular, benign, None),
            ]);
            assert!(check(&t[..], "g/Dockerfile").is_err());
        }
        // Directories, explicit or implicit, in any order, are fine.
        let t = tar_of(&[
            ("d/Dockerfile", T::Regular, benign, None),
            ("d/", T::Directory, &b""[..], None),
            ("d/e/f", T::Regular, &b""[..], None),
        ]);
        assert!(check(&t[..], "d/Dockerfile").is_ok());
    }

    /// (name, type, data) of each entry of an archive, in order.
    fn listing(archive: &[u8]) -> Vec<(String, tar::EntryType, Vec<u8>)> {
        let mut ar = tar::Archive::new(archive);
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let kind = e.header().entry_type();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, kind, data)
            })
            .collect()
    }

    #[test]
    fn the_builder_is_sent_the_checked_dockerfile_last_and_nothing_urund_did_not_read() {
        let df: &[u8] = b"FROM scratch\nUSER 1000\n";
        let t = tar_of(&[
            ("src/", T::Directory, b"", None),
            ("./Dockerfile", T::Regular, df, None),
            ("src/a", T::Regular, b"aaaa", None),
        ]);
        let c = check(&t[..], "./Dockerfile").unwrap();
        assert_eq!(c.dockerfile_name, "Dockerfile");
        let sent = assemble(&t, &c.sent);
        let l = listing(&sent);
        let names: Vec<&str> = l.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["src/", "src/a", "Dockerfile"]);
        assert_eq!(l[2].1, T::Regular);
        assert_eq!(l[2].2, df);
        // The other entries are the archive's own bytes.
        assert!(matches!(c.sent[0], Piece::Archive { start: 0, end: 512 }));
        assert_eq!(&sent[..512], &t[..512]);
        // What the builder gets checks the same.
        let again = check(&sent[..], "Dockerfile").unwrap();
        assert_eq!((again.entries, again.dockerfile), (c.entries, c.dockerfile));
        // Entries after the end of the archive as urund read it (a zero block) never
        // reach the builder, whatever a reader that skips zero blocks would make of them.
        let hostile = tar_of(&[(
            "Dockerfile",
            T::Regular,
            b"FROM scratch\nADD http://x /\n",
            None,
        )]);
        let mut t = tar_of(&[("Dockerfile", T::Regular, df, None)]);
        t.truncate(t.len() - 1024);
        t.extend_from_slice(&[0; 512]);
        t.extend_from_slice(&hostile);
        let c = check(&t[..], "Dockerfile").unwrap();
        assert_eq!(c.dockerfile, df);
        let sent = assemble(&t, &c.sent);
        assert!(!sent.windows(3).any(|w| w == b"ADD"));
        assert_eq!(listing(&sent).len(), 1);
        // A long name goes as the tar crate writes one (a GNU long-name record).
        let long = format!("{}/Dockerfile", "d".repeat(150));
        let t = tar_of(&[("x", T::Regular, b"x", None)]);
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(df.len() as u64);
        h.set_mode(0o600);
        b.append_data(&mut h, &long, df).unwrap();
        let mut t2 = t[..t.len() - 1024].to_vec();
        t2.extend_from_slice(&b.into_inner().unwrap());
        let c = check(&t2[..], &long).unwrap();
        let l = listing(&assemble(&t2, &c.sent));
        assert_eq!(l.len(), 2);
        assert_eq!((l[1].0.as_str(), l[1].2.as_slice()), (long.as_str(), df));
    }

    #[test]
    fn a_root_directory_entry_first_is_accepted_as_docker_does() {
        // `tar -C dir -c .`: "./" first, then "./Dockerfile", "./src/", ...
        let t = tar_of(&[
            ("./", T::Directory, b"", None),
            ("./Dockerfile", T::Regular, b"FROM scratch\n", None),
            ("./src/", T::Directory, b"", None),
            ("./src/a", T::Regular, b"x", None),
        ]);
        let c = check(&t[..], "Dockerfile").unwrap();
        assert_eq!(c.dockerfile, b"FROM scratch\n");
        for root in [".", "./", ".//./"] {
            let t = tar_of(&[
                (root, T::Directory, b"", None),
                ("Dockerfile", T::Regular, b"FROM scratch\n", None),
            ]);
            assert!(check(&t[..], "Dockerfile").is_ok(), "{root}");
        }
        // Only a directory, only once, and never below anything or as a link target.
        let df = ("Dockerfile", T::Regular, &b"FROM scratch\n"[..], None);
        for (bad, want) in [
            (
                vec![("./", T::Symlink, &b""[..], Some("/etc")), df],
                "not a directory",
            ),
            (
                vec![("./", T::Regular, &b"x"[..], None), df],
                "not a directory",
            ),
            (
                vec![(".", T::Link, &b""[..], Some("Dockerfile")), df],
                "not a directory",
            ),
            (
                vec![
                    ("./", T::Directory, &b""[..], None),
                    ("./", T::Directory, &b""[..], None),
                    df,
                ],
                "twice",
            ),
            (vec![df, ("h", T::Link, &b""[..], Some("./"))], "empty name"),
            (vec![("/./", T::Directory, &b""[..], None), df], "absolute"),
            (vec![("./..", T::Directory, &b""[..], None), df], ".."),
        ] {
            let e = check(&tar_of(&bad)[..], "Dockerfile").expect_err(want);
            assert!(e.contains(want), "{want}: {e}");
        }
        assert!(check(&tar_of(&[("./", T::Directory, b"", None), df])[..], "./").is_err());
    }

    #[test]
    fn a_plain_context_gives_its_dockerfile() {
        let t = tar_of(&[
            ("Dockerfile", T::Regular, b"FROM scratch\n", None),
            ("src/", T::Directory, b"", None),
            ("./src/a", T::Regular, b"x", None),
            ("src/l", T::Symlink, b"", Some("/etc/shadow")),
            ("src/h", T::Link, b"", Some("src/a")),
        ]);
        let c = check(&t[..], "Dockerfile").unwrap();
        assert_eq!(c.dockerfile, b"FROM scratch\n");
        assert_eq!(c.entries, 5);
    }

    #[test]
    fn hostile_archives_are_refused_with_the_reason() {
        let df = ("Dockerfile", T::Regular, &b"FROM scratch\n"[..], None);
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (
                tar_of(&[df, ("/etc/x", T::Regular, b"", None)]),
                "Dockerfile",
                "absolute",
            ),
            (
                tar_of(&[df, ("a/../../x", T::Regular, b"", None)]),
                "Dockerfile",
                "..",
            ),
            (
                tar_of(&[df, ("./Dockerfile", T::Regular, b"", None)]),
                "Dockerfile",
                "twice",
            ),
            (
                tar_of(&[df, ("d", T::Fifo, b"", None)]),
                "Dockerfile",
                "FIFO",
            ),
            (
                tar_of(&[df, ("d", T::Char, b"", None)]),
                "Dockerfile",
                "character device",
            ),
            (
                tar_of(&[df, ("h", T::Link, b"", Some("/etc/shadow"))]),
                "Dockerfile",
                "absolute",
            ),
            (
                tar_of(&[df, ("h", T::Link, b"", Some("later"))]),
                "Dockerfile",
                "earlier",
            ),
            (
                tar_of(&[("Dockerfile", T::Symlink, b"", Some("x"))]),
                "Dockerfile",
                "not a regular file",
            ),
            (tar_of(&[df]), "Other", "no Dockerfile"),
            (tar_of(&[df]), "../Dockerfile", ".."),
            (
                b"garbage that is not a tar archive at all, well past one block? no".to_vec(),
                "Dockerfile",
                "",
            ),
        ];
        for (t, name, want) in cases {
            let e = check(&t[..], name).expect_err(want);
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = check(&b[..], "Dockerfile");
        }

        #[test]
        fn what_the_builder_is_sent_holds_the_checked_dockerfile_last(
            names in proptest::collection::vec("[a-c]{1,2}(/[a-c]{1,2}){0,2}", 0..6),
            at in 0usize..6,
            body in proptest::collection::vec(any::<u8>(), 0..700),
        ) {
            let mut entries: Vec<(&str, tar::EntryType, &[u8], Option<&str>)> =
                names.iter().map(|n| (n.as_str(), T::Regular, &b"data"[..], None)).collect();
            entries.insert(at.min(entries.len()), ("Dockerfile", T::Regular, &body[..], None));
            let t = tar_of(&entries);
            if let Ok(c) = check(&t[..], "Dockerfile") {
                let sent = assemble(&t, &c.sent);
                let again = check(&sent[..], "Dockerfile").unwrap();
                prop_assert_eq!(&again.dockerfile, &body);
                prop_assert_eq!(again.entries, c.entries);
                let l = listing(&sent);
                prop_assert_eq!(l.last().map(|e| e.0.as_str()), Some("Dockerfile"));
                prop_assert_eq!(l.iter().filter(|e| e.0 == "Dockerfile").count(), 1);
            }
        }

        #[test]
        fn a_root_name_is_never_a_clean_name(s in "[./a-z]{0,12}") {
            // Either the root, or a name that stays inside it: never both.
            prop_assert!(!(is_root(s.as_bytes()) && clean_name(s.as_bytes()).is_ok()));
            if is_root(s.as_bytes()) {
                prop_assert!(!s.contains(".."));
                prop_assert!(!s.starts_with('/'));
            }
        }

        #[test]
        fn a_clean_name_never_goes_up_or_starts_at_root(s in "[./a-z]{0,24}") {
            if let Ok(n) = clean_name(s.as_bytes()) {
                prop_assert!(!n.starts_with('/') && !n.split('/').any(|c| c == ".." || c.is_empty() || c == "."));
            }
        }
    }
}

//! The build context as urund receives it: a tar archive from an untrusted client,
//! checked before the build engine sees a byte of it. Pure over any [`Read`].
//!
//! Accepted: regular files, directories, symbolic links (their targets are data: the
//! builder copies links as links) and hard links to an earlier regular file of the
//! archive; PAX and GNU long-name records as the `tar` crate reads them. Refused: any
//! other type (devices, FIFOs, sockets, sparse or unknown entries), a name that is
//! absolute, has a `..` component, is empty, not UTF-8 or longer than [`MAX_NAME`], a
//! name that appears twice (after `./` and a trailing `/` are taken off), more than
//! [`MAX_ENTRIES`] entries. The Dockerfile the request names must be a regular file of
//! the archive, at most [`MAX_DOCKERFILE`] bytes; its bytes are returned for the check.
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
}

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
    let entries = ar
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for e in entries {
        let mut e = e.map_err(|e| format!("malformed archive: {e}"))?;
        if seen.len() >= MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        let kind = e.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
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
        }
    }
    let dockerfile = found.ok_or_else(|| format!("the context has no Dockerfile {wanted:?}"))?;
    Ok(Context {
        entries: seen.len(),
        dockerfile,
    })
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
        fn a_clean_name_never_goes_up_or_starts_at_root(s in "[./a-z]{0,24}") {
            if let Ok(n) = clean_name(s.as_bytes()) {
                prop_assert!(!n.starts_with('/') && !n.split('/').any(|c| c == ".." || c.is_empty() || c == "."));
            }
        }
    }
}

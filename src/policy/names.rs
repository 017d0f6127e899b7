//! The one validator of names urun passes on or writes into files: container names,
//! user and group names. Each is 1 to `max` bytes of ASCII letters, digits and `_ . -`,
//! with some first bytes refused. Pure.
#![forbid(unsafe_code)]

/// Whether `n` is 1 to `max` bytes of `[A-Za-z0-9_.-]` not starting with a byte in
/// `bad_first`.
pub fn valid(n: &str, max: usize, bad_first: &[u8]) -> bool {
    let b = n.as_bytes();
    (1..=max).contains(&b.len())
        && !bad_first.contains(&b[0])
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// A `--name` as the user types it (urund adds its own prefix): docker's charset,
/// starting with a letter or digit, at most 64 bytes.
pub fn container_name(n: &str) -> bool {
    valid(n, 64, b"_.-")
}

/// A user or group name that can go into a passwd/group line as is: no `:`, no
/// newline, not option-like, not hidden, at most 32 bytes.
pub fn file_name(n: &str) -> bool {
    valid(n, 32, b"-.")
}

/// A group name in the policy, as the user database would accept it.
pub fn group_name(n: &str) -> bool {
    valid(n, 32, b"-")
}

/// A user name that can be a directory name under `/home`.
pub fn home_name(n: &str) -> bool {
    valid(n, 32, b".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_kind() {
        for ok in ["web", "a.b-c_1", "9"] {
            assert!(container_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "_x",
            ".x",
            "a/b",
            "a b",
            "a:b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!container_name(bad), "{bad}");
        }
        assert!(file_name("alice") && !file_name(".x") && !file_name("-x"));
        assert!(group_name(".x") && !group_name("-x") && !group_name(&"g".repeat(33)));
        assert!(home_name("-x") && !home_name(".x") && !home_name("a/b"));
        assert!(!file_name("a\nb") && !file_name("a:b"));
    }
}

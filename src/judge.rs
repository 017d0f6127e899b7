//! The policy judge: one pure function from (caller, policy, request) to a decision.
//! It reads nothing and changes nothing; `urund` acts on what it returns.
#![forbid(unsafe_code)]

use crate::policy::Policy;
use crate::protocol::Request;
use crate::system::Caller;

/// Why a request was refused: the policy rule (as named in the policy file or in
/// SECURITY.md) and a one-line message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub message: String,
}

#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Refuse(Refusal),
}

fn refuse(rule: &'static str, message: String) -> Decision {
    Decision::Refuse(Refusal { rule, message })
}

/// Decides whether `caller` may make `req` under `policy`. `group_gid` is the gid of
/// `policy.access.group`, resolved by the caller of this function.
pub fn judge(caller: &Caller, policy: &Policy, group_gid: u32, req: &Request) -> Decision {
    if caller.uid == 0 && !policy.access.allow_root {
        return refuse(
            "access.allow_root",
            "root may not run containers through urun (policy access.allow_root = false); \
             root can use docker directly"
                .into(),
        );
    }
    let allowed_root = caller.uid == 0 && policy.access.allow_root;
    if !(caller.in_group(group_gid) || allowed_root) {
        return refuse(
            "access.group",
            format!(
                "you ({} uid {}) are not a member of group {:?} (policy access.group); \
                 ask your administrator to add you, then log in again",
                caller.display_name(),
                caller.uid,
                policy.access.group.0
            ),
        );
    }
    if !valid_reference(&req.image) {
        return refuse(
            "images.reference",
            format!(
                "{:?} is not a valid image reference (letters, digits and . _ - / : @ only)",
                req.image
            ),
        );
    }
    Decision::Allow
}

/// Docker image reference syntax, conservatively: no option-like or path-like names.
fn valid_reference(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && r.as_bytes()[0].is_ascii_alphanumeric()
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
        && !r.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gid: u32, groups: Vec<u32>) -> Caller {
        Caller {
            uid,
            gid,
            pid: 99,
            groups,
            name: Some("alice".into()),
        }
    }

    fn req(image: &str) -> Request {
        Request::new(image.into(), vec!["id".into()])
    }

    #[test]
    fn member_is_allowed() {
        let p = Policy::default();
        assert_eq!(
            judge(&caller(1001, 1001, vec![500]), &p, 500, &req("busybox")),
            Decision::Allow
        );
        // primary group counts too
        assert_eq!(
            judge(&caller(1001, 500, vec![]), &p, 500, &req("busybox")),
            Decision::Allow
        );
    }

    #[test]
    fn non_member_is_refused_naming_the_rule() {
        let d = judge(
            &caller(1001, 1001, vec![27]),
            &Policy::default(),
            500,
            &req("busybox"),
        );
        match d {
            Decision::Refuse(r) => {
                assert_eq!(r.rule, "access.group");
                assert!(
                    r.message.contains("\"urun\"") && r.message.contains("1001"),
                    "{}",
                    r.message
                );
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn root_is_refused_unless_allowed() {
        let mut p = Policy::default();
        let root = caller(0, 0, vec![0, 500]);
        assert!(matches!(
            judge(&root, &p, 500, &req("busybox")),
            Decision::Refuse(Refusal {
                rule: "access.allow_root",
                ..
            })
        ));
        p.access.allow_root = true;
        assert_eq!(judge(&root, &p, 500, &req("busybox")), Decision::Allow);
        // an allowed root need not be in the group
        assert_eq!(
            judge(&caller(0, 0, vec![]), &p, 500, &req("busybox")),
            Decision::Allow
        );
    }

    #[test]
    fn references() {
        for ok in [
            "busybox",
            "debian:12",
            "registry.example.org/team/x:1",
            "sha256:abc",
            "a@sha256:0f",
        ] {
            assert!(valid_reference(ok), "{ok}");
        }
        for bad in ["", "-v", "/etc", "a b", "a\nb", "x/../y", "--privileged"] {
            assert!(!valid_reference(bad), "{bad}");
        }
    }
}

//! urund's answers to a `Manage` request: `urun images` and `urun rmi` (`urun push`
//! is [`super::push`]).
//!
//! What is "own" comes only from the build records ([`super::builds`]), never from an
//! image's labels (a pulled image can carry any): `urun images` lists the caller's
//! recorded builds still on the engine, then the images `images.allow` admits (the
//! judge's own rule, so the list is what `urun IMAGE` would accept); `urun rmi` removes
//! only the caller's recorded builds. Every name of an `rmi` is resolved before
//! anything is removed: one that is not the caller's refuses the whole request with
//! one line (125) and nothing is touched. The connection's audit record (written by
//! [`Helper::serve`]) names the request, what was removed, and the refusal's rule.

use super::audit::Record;
use super::builds::{with_tag, BuildRecord};
use super::outbox::Outbox;
use super::serve::{daemon_error, End};
use super::Helper;
use crate::engine::{ImageRemoval, ImageSummary};
use crate::policy::admission;
use crate::policy::build::Build;
use crate::policy::judge;
use crate::policy::rule::{Refusal, Rule};
use crate::policy::Policy;
use crate::system::Caller;
use crate::wire::{ImageRow, Kind, Manage, Op, Outcome, MAX_FRAME};

/// The rule an `rmi` of something that is not the caller's build names.
pub(super) const NOT_OWN: Rule = Rule::ImagesAllow;

impl Helper {
    /// A `Manage` connection: who may ask (the access rules of a run), then the
    /// operation, then its `Result` frame.
    pub(super) async fn manage(
        &self,
        caller: &Caller,
        rec: &mut Record,
        m: Manage,
        out: &Outbox,
    ) -> End {
        if let Err(r) = admission::admit_query(caller, &self.policy, self.group_gid) {
            return End::Refused(r);
        }
        let outcome = match m.op {
            Op::Images { registry } => {
                rec.argv = vec!["images".into()];
                if registry {
                    rec.argv.push("--registry".into());
                    self.records(caller.uid).map(|r| Outcome::Images {
                        images: promoted_rows(&r),
                    })
                } else {
                    self.images(caller).await
                }
            }
            Op::Rmi { images } => {
                rec.argv = std::iter::once("rmi".to_string())
                    .chain(images.iter().cloned())
                    .collect();
                self.rmi(caller, rec, &images).await
            }
            Op::Push { image } => {
                rec.argv = vec!["push".into(), image.clone()];
                self.push(caller, rec, &image, out).await
            }
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(end) => return end,
        };
        rec.bytes_out = outcome.encode().len() as u64;
        if out.frame(Kind::Result, outcome.encode()).await.is_err() {
            return End::ClientGone;
        }
        End::Exit(0)
    }

    /// `urun images`: own builds, then what the policy admits.
    async fn images(&self, caller: &Caller) -> Result<Outcome, End> {
        let records = self.records(caller.uid)?;
        let engine = self
            .engine
            .list_images()
            .await
            .map_err(|e| End::Failed(daemon_error(e)))?;
        Ok(Outcome::Images {
            images: image_rows(caller, &records, &engine, &self.policy),
        })
    }

    /// The caller's build records.
    pub(super) fn records(&self, uid: u32) -> Result<Vec<BuildRecord>, End> {
        self.builds.list(uid).map_err(|e| {
            eprintln!("urund: reading the build records of uid {uid}: {e:#}");
            End::Failed(crate::engine::RunError {
                status: crate::wire::status::REFUSED,
                message: "urund cannot read its build records (its log says why)".into(),
            })
        })
    }

    /// `urun rmi NAME...`: every name resolved to one of the caller's builds first;
    /// then their tags removed, and each image whose last tag went (and that nobody
    /// else has on record) deleted, with its record.
    async fn rmi(
        &self,
        caller: &Caller,
        rec: &mut Record,
        names: &[String],
    ) -> Result<Outcome, End> {
        let records = self.records(caller.uid)?;
        let targets = names
            .iter()
            .map(|n| {
                let user = crate::policy::build::namespace_user(caller);
                resolve(n, Some(&user), &self.policy.build, &records)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(End::Refused)?;
        let mut done = ImageRemoval::default();
        let own = own_prefixes(&self.policy.build, caller);
        for t in &targets {
            rec.image_id = Some(t.record.image_id.clone());
            let r = self.remove_target(caller.uid, &own, t, &mut done).await;
            rec.message = Some(removed_message(&done));
            r.map_err(|e| End::Failed(daemon_error(e)))?;
        }
        Ok(Outcome::Removed {
            untagged: done.untagged,
            deleted: done.deleted,
        })
    }

    /// Removes one resolved name: its tags (one, or all of the record's for an ID),
    /// then the image once it has no tag left and nobody else's record holds it, then
    /// the record.
    async fn remove_target(
        &self,
        uid: u32,
        own: &[String],
        t: &Target,
        done: &mut ImageRemoval,
    ) -> anyhow::Result<()> {
        let id = &t.record.image_id;
        for tag in &t.tags {
            // Only a tag that still names this image (a later build may have taken it).
            let here = self.engine.inspect_image(tag).await?;
            if here.is_some_and(|f| &f.id == id) {
                let r = self.engine.remove_image(tag).await?;
                done.untagged.extend(r.untagged);
                done.deleted.extend(r.deleted);
            }
            self.builds.untag(uid, id, tag)?;
        }
        if done.deleted.contains(id) {
            self.builds.forget(uid, id)?;
            return Ok(());
        }
        let left = self.builds.get(uid, id)?.map_or(0, |r| r.tags.len());
        if left > 0 {
            return Ok(());
        }
        let others = self.builds.holders(id)?.into_iter().any(|u| u != uid);
        match self.engine.inspect_image(id).await? {
            // Untagged, known by no digest but the caller's own pushes, and nobody
            // else's: deleted (docker refuses one a container uses; then the record
            // stays, so it can be removed later). A build can have the very ID of a
            // system image (`FROM busybox` and nothing else), which a host that pulls
            // by digest keeps untagged: that one stays.
            Some(f) if f.repo_tags.is_empty() && only_own(&f.repo_digests, own) && !others => {
                let r = self.engine.remove_image(id).await?;
                done.untagged.extend(r.untagged);
                done.deleted.extend(r.deleted);
            }
            // Still tagged elsewhere, someone else's too, or gone: only the record goes.
            _ => {}
        }
        self.builds.forget(uid, id)?;
        Ok(())
    }
}

/// The name prefixes that are the caller's own: their builds' repository
/// (`<namespace>/<user>/`) and, with a registry, where `urun push` puts them.
fn own_prefixes(build: &Build, caller: &Caller) -> Vec<String> {
    let user = crate::policy::build::namespace_user(caller);
    let mine = build.user_prefix(&user);
    let mut v = vec![mine.clone()];
    if let Some(r) = &build.registry {
        v.push(format!("{r}/{mine}"));
    }
    v
}

/// Whether every one of an image's repository digests is under one of `own`. Pure.
fn only_own(digests: &[String], own: &[String]) -> bool {
    digests
        .iter()
        .all(|d| own.iter().any(|p| d.starts_with(p.as_str())))
}

/// One `rmi` name, resolved: the record and which of its tags to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub record: BuildRecord,
    pub tags: Vec<String>,
}

/// Resolves an `rmi` name against the caller's records: one of their tags (as typed
/// with the namespace, `urun/alice/app:1`, or without, `app:1`; no tag means
/// `:latest`), else the start of one of their images' IDs (at least 4 hex digits,
/// naming exactly one). Pure.
pub(super) fn resolve(
    name: &str,
    user: Option<&str>,
    build: &Build,
    records: &[BuildRecord],
) -> Result<Target, Refusal> {
    let mut candidates = vec![with_tag(name)];
    if let Some(u) = user {
        if !name.starts_with(&build.user_prefix(u)) {
            candidates.push(with_tag(&build.repository(u, name)));
        }
    }
    for c in &candidates {
        if let Some(r) = records.iter().find(|r| r.tags.contains(c)) {
            return Ok(Target {
                record: r.clone(),
                tags: vec![c.clone()],
            });
        }
    }
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if hex.len() >= 4 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hex = hex.to_ascii_lowercase();
        let found: Vec<&BuildRecord> = records
            .iter()
            .filter(|r| r.image_id["sha256:".len()..].starts_with(&hex))
            .collect();
        match found[..] {
            [r] => {
                return Ok(Target {
                    record: r.clone(),
                    tags: r.tags.clone(),
                })
            }
            [] => {}
            _ => {
                return Err(Refusal::new(
                    NOT_OWN,
                    format!(
                        "{name}: the start of more than one of your images' IDs; give more of it"
                    ),
                ))
            }
        }
    }
    Err(Refusal::new(
        NOT_OWN,
        format!(
            "{name}: not one of your builds; urun rmi removes only images you built with \
             urun build (urun images lists them); nothing was removed"
        ),
    ))
}

/// `urun images`' rows: the caller's builds still on the engine (each tag that still
/// names the recorded image, or one `<none>:<none>` row for a build without one), then
/// every other image tag (or, with `images.require_digest`, repository digest) the
/// policy's `images.allow` admits. Bounded so the `Result` fits one frame. Pure.
pub(super) fn image_rows(
    caller: &Caller,
    records: &[BuildRecord],
    engine: &[ImageSummary],
    policy: &Policy,
) -> Vec<ImageRow> {
    let mut rows: Vec<ImageRow> = Vec::new();
    let row = |reference: &str, i: &ImageSummary, own: bool| ImageRow {
        reference: reference.to_string(),
        id: i.id.clone(),
        created: i.created,
        size: i.size,
        own,
        digest: None,
    };
    for r in records {
        let Some(i) = engine.iter().find(|i| i.id == r.image_id) else {
            continue;
        };
        let tags: Vec<&String> = r.tags.iter().filter(|t| i.repo_tags.contains(t)).collect();
        if tags.is_empty() {
            rows.push(row("<none>:<none>", i, true));
        }
        for t in tags {
            rows.push(row(t, i, true));
        }
    }
    for i in engine {
        let names = match policy.images.require_digest {
            true => &i.repo_digests,
            false => &i.repo_tags,
        };
        for n in names {
            let listed = rows.iter().any(|r| &r.reference == n);
            if !listed && judge::judge_image(policy, caller, n).is_ok() {
                rows.push(row(n, i, false));
            }
        }
    }
    // One Result frame: well under MAX_FRAME with room for the envelope.
    let mut size = 0;
    rows.into_iter()
        .take_while(|r| {
            size += serde_json::to_vec(r).map_or(MAX_FRAME, |v| v.len() + 1);
            size < MAX_FRAME - 4096
        })
        .collect()
}

/// `urun images --registry`: what the caller pushed, one row per digest reference
/// (`host/urun/alice/app@sha256:…`) with the build's ID and time, newest first, as
/// urund's build records have them (the registry is not asked). Pure.
pub(super) fn promoted_rows(records: &[BuildRecord]) -> Vec<ImageRow> {
    let mut rows: Vec<ImageRow> = records
        .iter()
        .flat_map(|r| {
            r.digests.iter().map(|d| ImageRow {
                reference: d.clone(),
                id: r.image_id.clone(),
                created: i64::try_from(r.created).unwrap_or(i64::MAX),
                size: 0,
                own: true,
                digest: d.rsplit_once('@').map(|(_, d)| d.to_string()),
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then(a.reference.cmp(&b.reference))
    });
    rows
}

/// The audit message of an `rmi`.
fn removed_message(r: &ImageRemoval) -> String {
    format!(
        "untagged {}; deleted {}",
        list_or_none(&r.untagged),
        list_or_none(&r.deleted)
    )
}

fn list_or_none(v: &[String]) -> String {
    match v.is_empty() {
        true => "none".into(),
        false => v.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn id(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn record(c: char, tags: &[&str]) -> BuildRecord {
        BuildRecord::for_test(1001, "alice", id(c), tags)
    }

    fn image(c: char, tags: &[&str]) -> ImageSummary {
        ImageSummary {
            id: id(c),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: tags
                .iter()
                .map(|t| format!("{}@sha256:{}", t.split(':').next().unwrap(), "d".repeat(64)))
                .collect(),
            created: 10,
            size: 100,
        }
    }

    fn policy(text: &str) -> Policy {
        Policy::parse(text, Path::new("/p")).unwrap()
    }

    fn alice() -> Caller {
        Caller::example()
    }

    #[test]
    fn images_are_own_builds_then_what_the_policy_admits() {
        let p = policy("[images]\nallow = [\"busybox*\", \"urun/*\"]\n");
        let records = [
            record('a', &["urun/alice/app:1", "urun/alice/app:old"]),
            record('b', &[]),
            record('c', &["urun/alice/gone:1"]),
        ];
        let engine = [
            // app:old was taken by a later build of someone else's doing: not listed as own
            image('a', &["urun/alice/app:1"]),
            image('b', &[]),
            image('e', &["busybox:latest", "debian:12"]),
            image('f', &["urun/bob/tool:1"]),
        ];
        let rows = image_rows(&alice(), &records, &engine, &p);
        let got: Vec<(&str, bool)> = rows.iter().map(|r| (r.reference.as_str(), r.own)).collect();
        assert_eq!(
            got,
            [
                ("urun/alice/app:1", true),
                ("<none>:<none>", true),
                ("busybox:latest", false),
                ("urun/bob/tool:1", false),
            ]
        );
        assert_eq!(rows[0].id, id('a'));
        assert_eq!((rows[0].size, rows[0].created), (100, 10));
        // A closed policy: only own builds.
        let closed = policy("[images]\nallow = []\n");
        let rows = image_rows(&alice(), &records, &engine, &closed);
        assert!(rows.iter().all(|r| r.own), "{rows:?}");
        // require_digest: the admitted images by digest.
        let pinned = policy("[images]\nallow = [\"busybox*\"]\nrequire_digest = true\n");
        let rows = image_rows(&alice(), &[], &engine, &pinned);
        assert_eq!(rows.len(), 1);
        assert!(rows[0].reference.starts_with("busybox@sha256:"), "{rows:?}");
    }

    #[test]
    fn images_admitted_by_an_owner_pattern_are_the_callers_own_only() {
        let p = policy("[images]\nallow = [\"r:5000/urun/{user}/*\"]\n");
        let engine = [
            image('a', &["r:5000/urun/alice/app:1"]),
            image('b', &["r:5000/urun/bob/app:1"]),
        ];
        let rows = image_rows(&alice(), &[], &engine, &p);
        let got: Vec<&str> = rows.iter().map(|r| r.reference.as_str()).collect();
        assert_eq!(got, ["r:5000/urun/alice/app:1"]);
    }

    #[test]
    fn the_list_fits_one_frame() {
        let p = policy("");
        let engine: Vec<ImageSummary> = (0..20_000)
            .map(|n| ImageSummary {
                id: id('a'),
                repo_tags: vec![format!("{}:{n}", "r".repeat(200))],
                ..Default::default()
            })
            .collect();
        let rows = image_rows(&alice(), &[], &engine, &p);
        assert!(rows.len() > 1000 && rows.len() < 20_000);
        let o = Outcome::Images { images: rows };
        assert!(o.encode().len() <= MAX_FRAME);
    }

    #[test]
    fn rmi_names_resolve_to_own_builds_only() {
        let b = policy("").build;
        let records = [
            record('a', &["urun/alice/app:1", "urun/alice/app:latest"]),
            record('b', &[]),
        ];
        let r = |n: &str| resolve(n, Some("alice"), &b, &records);
        for (name, tag) in [
            ("app:1", "urun/alice/app:1"),
            ("app", "urun/alice/app:latest"),
            ("urun/alice/app:1", "urun/alice/app:1"),
            ("urun/alice/app", "urun/alice/app:latest"),
        ] {
            let t = r(name).unwrap();
            assert_eq!(t.tags, [tag], "{name}");
            assert_eq!(t.record.image_id, id('a'));
        }
        // By ID (or its start): all of the record's tags.
        let t = r("aaaaaaaaaaaa").unwrap();
        assert_eq!(t.tags.len(), 2);
        let t = r(&id('b')).unwrap();
        assert_eq!((t.record.image_id, t.tags), (id('b'), vec![]));
        // Others' builds, system images, unknown names, too short an ID: refused.
        for name in [
            "urun/bob/app:1",
            "busybox",
            "busybox:latest",
            "app:2",
            "aaa",
            "cccc",
        ] {
            let e = r(name).unwrap_err();
            assert_eq!(e.rule, NOT_OWN);
            assert!(
                e.message
                    .starts_with(&format!("{name}: not one of your builds")),
                "{}",
                e.message
            );
        }
        // Without a user name, only the full forms and IDs.
        assert!(resolve("app:1", None, &b, &records).is_err());
        assert!(resolve("urun/alice/app:1", None, &b, &records).is_ok());
    }

    #[test]
    fn promoted_rows_are_the_records_digests() {
        let mut a = record('a', &["urun/alice/app:1"]);
        a.digests = vec![format!("reg:5000/urun/alice/app@sha256:{}", "1".repeat(64))];
        a.created = 5;
        let b = record('b', &[]);
        let rows = promoted_rows(&[a.clone(), b]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].reference, a.digests[0]);
        assert_eq!(rows[0].digest, Some(format!("sha256:{}", "1".repeat(64))));
        assert_eq!(
            (rows[0].id.as_str(), rows[0].created),
            (id('a').as_str(), 5)
        );
    }

    #[test]
    fn an_image_known_by_a_digest_not_the_callers_own_is_not_one_to_delete() {
        let own = vec![
            "urun/alice/".to_string(),
            "reg:5000/urun/alice/".to_string(),
        ];
        assert!(only_own(&[], &own));
        assert!(only_own(
            &[format!("reg:5000/urun/alice/app@sha256:{}", "1".repeat(64))],
            &own
        ));
        // A system image pulled by digest (same ID as a build `FROM` it and nothing else).
        assert!(!only_own(
            &[format!("busybox@sha256:{}", "1".repeat(64))],
            &own
        ));
        // Another member's push of the same image.
        assert!(!only_own(
            &[format!(
                "reg:5000/urun/alice2/app@sha256:{}",
                "1".repeat(64)
            )],
            &own
        ));
    }

    #[test]
    fn an_ambiguous_id_prefix_is_refused() {
        let b = policy("").build;
        let mut r1 = record('a', &[]);
        let mut r2 = record('a', &[]);
        r1.image_id = format!("sha256:abcd{}", "0".repeat(60));
        r2.image_id = format!("sha256:abcd{}", "1".repeat(60));
        let e = resolve("abcd", Some("alice"), &b, &[r1, r2]).unwrap_err();
        assert!(e.message.contains("more than one"), "{}", e.message);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Any name a client sends: no panic, and a hit is always one of the records.
        #[test]
        fn resolving_any_name_never_panics_and_finds_only_records(name in "\\PC{0,80}|[0-9a-f:sha]{0,70}") {
            let b = policy("").build;
            let records = [record('a', &["urun/alice/app:1"]), record('b', &[])];
            if let Ok(t) = resolve(&name, Some("alice"), &b, &records) {
                proptest::prop_assert!(records.contains(&t.record));
                proptest::prop_assert!(t.tags.iter().all(|x| t.record.tags.contains(x)));
            }
        }
    }
}

//! The only code that talks to the Docker daemon, as a closed set of operations.
//!
//! [`Engine`] lists every operation urund performs on the daemon, and nothing else:
//! a reviewer who wants to know what urund can make Docker do reads this trait.
//! [`docker::DockerEngine`] implements it over bollard (plus one hijacked connection for
//! attach); the recording fake in `fake` implements it for the daemon's unit tests.
//! Types here turn Docker's answers into what urund needs (an image ID, an exit
//! status, a docker-compatible error status).

pub mod config;
pub mod docker;
#[cfg(test)]
pub mod fake;

pub use docker::{DockerEngine, DEFAULT_HOST};

use crate::policy::build::RegistryAuth;
use crate::policy::forced::BuildSettings;
use crate::policy::reference::{ImageFacts, Reference};
use crate::wire::{status, Progress, Signal, WinSize};
use anyhow::{bail, Result};
use bollard::models::ContainerCreateBody;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use std::collections::HashMap;
use std::pin::Pin;
use tokio::io::AsyncWrite;

/// One engine call: a boxed future, so that the trait can be used as `dyn Engine`.
pub type Call<'a, T> = BoxFuture<'a, Result<T>>;

/// Everything urund asks of the Docker daemon. Each method says which step of the
/// serve path (see [`crate::daemon`]) or of the clean-up uses it.
pub trait Engine: Send + Sync + 'static {
    /// The API version spoken with the daemon (for urund's start-up line).
    fn api_version(&self) -> String;

    /// Start-up and `urund check`: the names of the OCI runtimes registered with the
    /// daemon (`docker info` `Runtimes`), so that every runtime the policy names is
    /// known to exist before anyone is served.
    fn runtimes(&self) -> Call<'_, Vec<String>>;

    /// Step 4: what the daemon resolves a reference to, locally only (`Ok(None)`: not
    /// present).
    fn inspect_image<'a>(&'a self, reference: &'a str) -> Call<'a, Option<ImageFacts>>;

    /// Step 4: pulls `reference` (tag or digest always explicit), reporting each event
    /// the daemon sends to `progress`.
    fn pull<'a>(
        &'a self,
        reference: &'a Reference,
        progress: Box<dyn FnMut(Progress) + Send + 'a>,
    ) -> Call<'a, ()>;

    /// Start-up and step 5: the isolated bridge network exists, is ours and has
    /// inter-container communication off (created if missing).
    fn ensure_isolated_network<'a>(&'a self, name: &'a str) -> Call<'a, ()>;

    /// Steps 5 and 6: creates a container (the probe of an image's identity files, or
    /// the run's, from the forced configuration); returns its ID.
    fn create(&self, body: ContainerCreateBody) -> Call<'_, String>;

    /// Step 5: small files read from a created, never started probe container
    /// (`None`: missing or not a regular file).
    fn read_files<'a>(
        &'a self,
        id: &'a str,
        paths: &'a [&'a str],
    ) -> Call<'a, Vec<Option<Vec<u8>>>>;

    /// Step 6: the container's output and stdin.
    fn attach<'a>(&'a self, id: &'a str, stdin: bool, tty: bool) -> Call<'a, Attached>;

    /// Step 6: starts the container; a failure carries docker run's status.
    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, std::result::Result<(), RunError>>;

    /// Step 6: the container's terminal size.
    fn resize<'a>(&'a self, id: &'a str, size: WinSize) -> Call<'a, ()>;

    /// Step 6: delivers one of the signals [`Signal`] lists (a gone container is not an
    /// error).
    fn signal<'a>(&'a self, id: &'a str, signal: Signal) -> Call<'a, ()>;

    /// Step 6: waits until the container is not running; its exit status.
    fn wait<'a>(&'a self, id: &'a str) -> Call<'a, i64>;

    /// Every ending: kills and removes a container urund created (or proved its own),
    /// with its anonymous volumes; a missing one is not an error.
    fn remove<'a>(&'a self, id: &'a str) -> Call<'a, ()>;

    /// Clean-up: all containers carrying every one of `labels` (`key=value`).
    fn labelled<'a>(&'a self, labels: &'a [(&'a str, &'a str)]) -> Call<'a, Vec<Listed>>;

    /// Clean-up: an image's own labels (`None` if the image is gone).
    fn image_labels<'a>(&'a self, image_id: &'a str) -> Call<'a, Option<HashMap<String, String>>>;

    /// `urun images`: the daemon's images (not intermediate ones), as `docker images`
    /// lists them.
    fn list_images(&self) -> Call<'_, Vec<ImageSummary>>;

    /// `urun rmi`: removes one reference as `docker rmi` does without `--force`: a tag
    /// is untagged, and its image deleted with its last tag unless a container uses
    /// it; an ID deletes an untagged image. Docker refuses (an error) an image a
    /// container uses or an ID that still has tags.
    fn remove_image<'a>(&'a self, reference: &'a str) -> Call<'a, ImageRemoval>;

    /// Build step 4 (a base copied to the build engine by its ID gets the name it
    /// was checked under), step 7 (the caller's tags, on the run engine) and
    /// `urun push`: gives the image `image_id` the name `repo:tag` too (`docker tag`).
    fn tag<'a>(&'a self, image_id: &'a str, repo: &'a str, tag: &'a str) -> Call<'a, ()>;

    /// `urun push`: pushes `repo:tag` (a name [`Engine::tag`] gave, `host[:port]/path`)
    /// to its registry with `auth` (none: anonymously), reporting each event to
    /// `progress`; returns the pushed manifest's digest (`sha256:<64 hex>`). A registry
    /// that refuses or does not answer is an error with the daemon's message.
    fn push<'a>(
        &'a self,
        repo: &'a str,
        tag: &'a str,
        auth: Option<&'a RegistryAuth>,
        progress: Box<dyn FnMut(Progress) + Send + 'a>,
    ) -> Call<'a, String>;

    // The build path (see `crate::daemon::build`), on the build engine unless said.

    /// Build, step 3: a base image's ID and what the Dockerfile check needs of it
    /// (`Ok(None)`: not present on this engine).
    fn base_image<'a>(&'a self, reference: &'a str) -> Call<'a, Option<BaseFacts>>;

    /// Build, step 5: builds the context archive with exactly `settings` (the legacy
    /// builder, no tag): the builder's events as they come, ending after
    /// [`BuildEvent::Failed`] or when the builder is done; the last
    /// [`BuildEvent::Image`] is the build's (the legacy builder reports one at the end
    /// of every stage). Dropping the stream closes the connection, which cancels the
    /// build.
    fn build<'a>(
        &'a self,
        settings: &'a BuildSettings,
        context: BoxStream<'static, std::io::Result<Bytes>>,
    ) -> BoxStream<'a, Result<BuildEvent>>;

    /// Build, steps 4, 6 and 7: an image, by its full ID (never a name: a name that
    /// is no tag is an ID prefix to Docker), as a `docker save` archive.
    fn save(&self, image: &str) -> BoxStream<'static, std::io::Result<Bytes>>;

    /// Build, steps 4 and 7 (on the run engine, or the build engine for a base):
    /// loads a `docker save` archive.
    fn load(&self, archive: BoxStream<'static, std::io::Result<Bytes>>) -> Call<'_, ()>;

    /// Build, clean-up: deletes an image by full ID (or a prefix of 12 or more hex
    /// digits, as the builder prints them) if it has no tag (never a tagged image: a
    /// removal by ID would untag it) and was created at or after `since`
    /// (seconds since the epoch). That image only: its parents stay (no pruning: a
    /// parent may be another build's, reused through the shared layer cache).
    /// `Ok(false)`: left alone (tagged, older, in use, has children, or gone).
    fn delete_untagged<'a>(&'a self, image_id: &'a str, since: i64) -> Call<'a, bool>;

    /// Build, clean-up: what the engine says about an image the build's output named
    /// (by full ID or a prefix of 12 or more hex digits): the facts
    /// [`own_images`] judges by (`Ok(None)`: gone, or not such an ID).
    fn image_record<'a>(&'a self, image_id: &'a str) -> Call<'a, Option<ImageRecord>>;

    /// Build, clean-up: of these container IDs (or unique prefixes), taken from the
    /// builder's text output, those that still exist AND are verifiably build-step
    /// containers of this build ([`BuildShape`]: no `io.urun.` label, the build's
    /// memory limit and network mode, and its own `/dev/shm` size), by full ID. The IDs
    /// come from text a RUN step can print, so nothing else is ever returned (and so
    /// never removed): not a run's or a probe's container, not another build's step,
    /// not a container another program made.
    fn existing_containers<'a>(
        &'a self,
        ids: &'a [String],
        shape: &'a BuildShape,
    ) -> Call<'a, Vec<String>>;
}

/// What every step container of one build has in common, set by urund's forced build
/// settings: the only way a container named in the builder's output is told apart
/// from someone else's. The `/dev/shm` size carries the build's mark, which no other
/// build in progress has (review B2: the rest is the same for every build).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildShape {
    pub memory: i64,
    pub network: String,
    pub shm_size: i64,
}

impl BuildShape {
    /// Whether a container with these labels, memory limit, network mode and
    /// `/dev/shm` size can be a step container of this build. Pure.
    pub fn admits<'a>(
        &self,
        mut labels: impl Iterator<Item = &'a String>,
        memory: Option<i64>,
        network: Option<&str>,
        shm_size: Option<i64>,
    ) -> bool {
        !labels.any(|k| k.starts_with(crate::policy::build::RESERVED_LABEL_PREFIX))
            && memory == Some(self.memory)
            && network == Some(self.network.as_str())
            && self.shm_size > 0
            && shm_size == Some(self.shm_size)
    }
}

/// An image as the build engine describes it: the facts the clean-up of a build
/// judges by (see [`own_images`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageRecord {
    /// `sha256:<64 hex>`.
    pub id: String,
    /// The image it was made on (`sha256:…`), empty if none.
    pub parent: String,
    /// Seconds since the epoch.
    pub created: i64,
    pub tagged: bool,
    /// The container it was committed from (64 hex), empty for an image no container
    /// made (a `COPY`/`ADD` step's, a pulled or loaded one).
    pub container: String,
}

/// Review S1: which of the images a build's output named are verifiably that build's
/// own, so that its clean-up may delete them. The output is untrusted (a `RUN` step
/// prints what it likes, including another build's image IDs, and a cache hit names
/// an image another build made), so a name is only a candidate; an image is this
/// build's only if the engine says so:
///
/// - it has no tag and was created at or after `since` (when the builder started);
/// - it was committed from a container the build's output named as its step
///   (` ---> Running in <id>`, in `containers`: a container ID, 256 random bits, is
///   printed only to the build that ran it; SECURITY.md says what a host user who
///   reads a running step's ID in `/proc` can still do), or
/// - no container made it (`COPY`/`ADD`) and it was made on top of an image judged
///   this build's here, or of one of `anchors` (the build's base and stage images).
///
/// A cache hit (another build's image) is never this build's: its container is not
/// one this build ran. The result comes children first (the reverse of the output's
/// order), the order in which the engine lets them go. Pure.
pub fn own_images(
    records: &[ImageRecord],
    containers: &[String],
    anchors: &[String],
    since: i64,
) -> Vec<String> {
    let ran = |c: &str| {
        c.len() == 64
            && containers
                .iter()
                .any(|p| p.len() >= 12 && c.starts_with(p.as_str()))
    };
    let candidate = |r: &ImageRecord| {
        crate::policy::build::is_image_id(&r.id) && !r.tagged && r.created >= since
    };
    let mut own: Vec<bool> = records
        .iter()
        .map(|r| candidate(r) && !r.container.is_empty() && ran(&r.container))
        .collect();
    // COPY/ADD images on top of own images, however deep: one pass per level.
    loop {
        let mut grew = false;
        for (i, r) in records.iter().enumerate() {
            if own[i] || !candidate(r) || !r.container.is_empty() || r.parent.is_empty() {
                continue;
            }
            let on_own = records
                .iter()
                .zip(&own)
                .any(|(p, o)| *o && p.id == r.parent);
            if on_own || anchors.contains(&r.parent) {
                own[i] = true;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let mut out: Vec<String> = Vec::new();
    for (r, o) in records.iter().zip(own).rev() {
        if o && !out.contains(&r.id) {
            out.push(r.id.clone());
        }
    }
    out
}

/// A base image on the build engine: its ID and what the Dockerfile check uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseFacts {
    pub id: String,
    pub base: crate::policy::dockerfile::BaseImage,
    /// Its layers (`RootFS.Layers`): the built image's lowest layers that are not the
    /// build's own.
    pub layers: usize,
}

/// One event of a build, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// The builder's text (its own lines and the RUN steps' output, mixed: nothing in
    /// it can be trusted to be the builder's).
    Output(String),
    /// An image the build produced (`sha256:…`; the API's `aux` record, which no step
    /// can print): a stage ended; the last one is the build's.
    Image(String),
    /// The builder's error (a failed RUN step, a missing file, …).
    Failed(String),
}

/// One local image, as `docker images` has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSummary {
    /// `sha256:<64 hex>`.
    pub id: String,
    /// Its tags, in Docker's familiar form (`urun/alice/app:1`).
    pub repo_tags: Vec<String>,
    /// Its repository digests (`debian@sha256:...`).
    pub repo_digests: Vec<String>,
    /// Seconds since the epoch.
    pub created: i64,
    pub size: u64,
}

/// What removing an image reference did: `docker rmi`'s `Untagged:` and `Deleted:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRemoval {
    pub untagged: Vec<String>,
    pub deleted: Vec<String>,
}

/// The digest in the daemon's last push event (`<tag>: digest: sha256:<64 hex> size:
/// <n>`). Pure.
pub fn pushed_digest(status: &str) -> Option<String> {
    let at = status.find("digest: sha256:")? + "digest: ".len();
    let d = status.get(at..at + 71)?;
    let hex = &d[7..];
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| d.to_string())
}

/// bollard 0.19 encodes the `X-Registry-Auth` (and `-Config`) header with base64's
/// standard alphabet; dockerd 20.10 decodes it with the URL-safe one, and when that
/// fails it goes on silently without credentials. The two differ only in `+`/`-` and
/// `/`/`_`, so re-encoding is a character map. Pure.
pub fn url_safe_base64(standard: &str) -> String {
    standard
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect()
}

/// What a running container prints.
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// The two directions of an attached container.
pub struct Attached {
    pub output: BoxStream<'static, std::io::Result<Output>>,
    pub input: Pin<Box<dyn Input>>,
}

/// The container's stdin: written to, or, where the engine's connection is a socket
/// of urund's own, spliced into ([`Input::socket`]).
pub trait Input: AsyncWrite + Send {
    /// The connection's sending side, non-blocking, for `splice` from urund's own
    /// pipe (a passed stdin without copies: src/daemon/stdin.rs). Writes and splices
    /// are never mixed on one input. `None`: only writes.
    fn socket(&self) -> Option<std::sync::Arc<std::os::fd::OwnedFd>> {
        None
    }
}

impl Input for tokio::io::DuplexStream {}

/// A failure the user should see with a specific exit status (docker's conventions).
#[derive(Debug)]
pub struct RunError {
    pub status: u8,
    pub message: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RunError {}

/// The daemon did not answer: its socket is gone or refuses connections, or a
/// connection broke mid-answer (dockerd stopped or restarted). Callers tell the user
/// in one line and leave clean-up to the [`crate::daemon::janitor`], which retries.
#[derive(Debug)]
pub struct Unreachable {
    /// What urund was doing ("removing container …").
    pub doing: String,
    /// The transport's own words, for urund's log.
    pub cause: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the Docker daemon is not answering ({})",
            self.doing, self.cause
        )
    }
}

impl std::error::Error for Unreachable {}

/// Whether `e` (or one of its causes) is an [`Unreachable`] daemon.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Unreachable>())
}

/// A container urund may clean up, as the daemon lists it.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    pub id: String,
    /// The ID of its image (whose own labels the clean-up also checks).
    pub image_id: String,
    /// Its labels: the image's, merged with those set at create.
    pub labels: HashMap<String, String>,
}

/// What a user is told when the daemon does not answer at admission.
pub const NOT_ANSWERING: &str =
    "the Docker daemon is not answering; urund keeps serving and retries: try again in a moment";

/// The bridge driver option that turns inter-container communication on or off.
pub const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";
/// The label that marks a network as created by urund.
pub const NETWORK_LABEL: &str = "io.urun.network";

/// Checks that an existing network is ours and isolated. Pure.
pub fn check_isolated_network(
    name: &str,
    driver: Option<&str>,
    labels: &HashMap<String, String>,
    options: &HashMap<String, String>,
) -> Result<()> {
    if labels.get(NETWORK_LABEL).map(String::as_str) != Some("isolated") {
        bail!(
            "network {name} exists but was not created by urund (no label {NETWORK_LABEL}=isolated): \
             remove it (docker network rm {name}) and urund will create it"
        );
    }
    if driver != Some("bridge") || options.get(ICC_OPTION).map(String::as_str) != Some("false") {
        bail!(
            "network {name} lets containers reach each other ({ICC_OPTION} is not false) or is \
             not a bridge: remove it (docker network rm {name}) and urund will recreate it"
        );
    }
    Ok(())
}

/// docker run's mapping of a failed start to an exit status: 127 when the command
/// does not exist, 126 when it cannot be executed, 125 otherwise.
pub fn start_error_status(message: &str) -> u8 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        status::NOT_FOUND
    } else if message.contains("permission denied") || message.contains("is a directory") {
        status::NOT_EXECUTABLE
    } else {
        status::REFUSED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pushed_digest_is_read_from_the_daemons_last_event() {
        let d = format!("sha256:{}", "0a".repeat(32));
        assert_eq!(
            pushed_digest(&format!("1: digest: {d} size: 527")),
            Some(d.clone())
        );
        assert_eq!(pushed_digest("Pushed"), None);
        assert_eq!(pushed_digest("1: digest: sha256:abc size: 5"), None);
        assert_eq!(
            pushed_digest(&format!("1: digest: {} size: 5", d.to_uppercase())),
            None
        );
    }

    #[test]
    fn registry_headers_are_re_encoded_in_the_url_safe_alphabet() {
        assert_eq!(url_safe_base64("ab+c/d=="), "ab-c_d==");
        assert_eq!(url_safe_base64("e30="), "e30=");
    }

    #[test]
    fn only_a_container_of_the_builds_shape_without_urun_labels_counts_as_a_build_step() {
        let shape = BuildShape {
            memory: 512 << 20,
            network: "none".into(),
            shm_size: (64 << 20) + 7 * 4096,
        };
        let shm = Some(shape.shm_size);
        let none: Vec<String> = vec![];
        let urun = ["io.urun.uid".to_string()];
        let other = ["com.example".to_string()];
        let m = Some(512 << 20);
        assert!(shape.admits(none.iter(), m, Some("none"), shm));
        assert!(shape.admits(other.iter(), m, Some("none"), shm));
        assert!(!shape.admits(urun.iter(), m, Some("none"), shm));
        assert!(!shape.admits(none.iter(), Some(0), Some("none"), shm));
        assert!(!shape.admits(none.iter(), None, Some("none"), shm));
        assert!(!shape.admits(none.iter(), m, Some("default"), shm));
        assert!(!shape.admits(none.iter(), m, None, shm));
        // Review B2: another build in progress has everything but the mark.
        assert!(!shape.admits(none.iter(), m, Some("none"), Some((64 << 20) + 8 * 4096)));
        assert!(!shape.admits(none.iter(), m, Some("none"), None));
        // A shape without a mark (a build never started) admits nothing.
        let unmarked = BuildShape {
            shm_size: 0,
            ..shape
        };
        assert!(!unmarked.admits(none.iter(), m, Some("none"), Some(0)));
    }

    fn rec(id: u8, parent: Option<u8>, container: Option<u8>) -> ImageRecord {
        let id_of = |b: u8| format!("sha256:{}", format!("{b:02x}").repeat(32));
        ImageRecord {
            id: id_of(id),
            parent: parent.map(id_of).unwrap_or_default(),
            created: 100,
            tagged: false,
            container: container
                .map(|c| format!("{c:02x}").repeat(32))
                .unwrap_or_default(),
        }
    }

    #[test]
    fn only_images_this_builds_steps_made_are_its_own() {
        let base = format!("sha256:{}", "0b".repeat(32));
        let ran = vec!["c1".repeat(6), "c2".repeat(6), "c3".repeat(6)];
        let mut on_base = rec(0x11, None, Some(0xc1));
        on_base.parent = base.clone();
        let records = vec![
            // RUN step on the base, committed from a container this build ran.
            on_base,
            // COPY on it: no container, made on an own image.
            rec(0x12, Some(0x11), None),
            // RUN on the COPY.
            rec(0x13, Some(0x12), Some(0xc2)),
            // Another build's image a RUN step printed (or a cache hit): its container
            // is not one this build ran, whatever its parent.
            rec(0x21, Some(0x11), Some(0xd1)),
            // A COPY on top of that other build's image.
            rec(0x22, Some(0x21), None),
            // A COPY of someone else's made on a foreign parent.
            rec(0x23, Some(0x99), None),
            // Tagged, or older than the build: never.
            ImageRecord {
                tagged: true,
                ..rec(0x31, Some(0x13), Some(0xc3))
            },
            ImageRecord {
                created: 99,
                ..rec(0x32, Some(0x13), Some(0xc3))
            },
        ];
        let own = own_images(&records, &ran, &[], 100);
        let ids = |v: &[u8]| -> Vec<String> {
            v.iter()
                .map(|b| format!("sha256:{}", format!("{b:02x}").repeat(32)))
                .collect()
        };
        // Children first.
        assert_eq!(own, ids(&[0x13, 0x12, 0x11]));
        // A COPY on the base counts once the base is an anchor.
        let mut copy_on_base = rec(0x14, None, None);
        copy_on_base.parent = base.clone();
        let mut with = records.clone();
        with.push(copy_on_base);
        let own = own_images(&with, &ran, std::slice::from_ref(&base), 100);
        assert_eq!(own, ids(&[0x14, 0x13, 0x12, 0x11]));
        // A container named by fewer than 12 digits proves nothing.
        assert!(own_images(&records, &["c1c1c1".into()], &[], 100).is_empty());
        // Nothing named, nothing own.
        assert!(own_images(&records, &[], &[base], 100).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn an_own_image_is_always_untagged_new_and_made_by_a_step_of_the_build(
            raw in proptest::collection::vec(
                (0u8..8, proptest::option::of(0u8..8), proptest::option::of(0u8..4), proptest::bool::ANY, 98i64..102),
                0..16,
            ),
            ran in proptest::collection::vec(0u8..4, 0..3),
        ) {
            let mut records: Vec<ImageRecord> = Vec::new();
            for (i, p, c, t, at) in &raw {
                let r = ImageRecord { tagged: *t, created: *at, ..rec(*i, *p, *c) };
                if !records.iter().any(|x| x.id == r.id) {
                    records.push(r);
                }
            }
            let ran: Vec<String> = ran.iter().map(|c| format!("{c:02x}").repeat(6)).collect();
            let own = own_images(&records, &ran, &[], 100);
            for id in &own {
                let r = records.iter().find(|r| &r.id == id && !r.tagged && r.created >= 100);
                proptest::prop_assert!(r.is_some());
                let r = r.unwrap();
                if r.container.is_empty() {
                    proptest::prop_assert!(own.contains(&r.parent));
                } else {
                    proptest::prop_assert!(ran.iter().any(|c| r.container.starts_with(c.as_str())));
                }
            }
        }
    }

    #[test]
    fn start_errors_map_like_docker_run() {
        assert_eq!(start_error_status("OCI runtime create failed: exec: \"nosuch\": executable file not found in $PATH: unknown"), 127);
        assert_eq!(
            start_error_status("exec: \"/etc/passwd\": permission denied: unknown"),
            126
        );
        assert_eq!(start_error_status("cgroup setup failed"), 125);
    }

    #[test]
    fn isolated_network_must_be_ours_and_without_icc() {
        let ours = HashMap::from([(NETWORK_LABEL.to_string(), "isolated".to_string())]);
        let no_icc = HashMap::from([(ICC_OPTION.to_string(), "false".to_string())]);
        let icc = HashMap::from([(ICC_OPTION.to_string(), "true".to_string())]);
        assert!(check_isolated_network("n", Some("bridge"), &ours, &no_icc).is_ok());
        assert!(check_isolated_network("n", Some("bridge"), &ours, &icc).is_err());
        assert!(check_isolated_network("n", Some("bridge"), &ours, &HashMap::new()).is_err());
        assert!(check_isolated_network("n", Some("bridge"), &HashMap::new(), &no_icc).is_err());
        assert!(check_isolated_network("n", Some("macvlan"), &ours, &no_icc).is_err());
    }
}

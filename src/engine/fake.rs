//! A recording [`Engine`] for unit tests: every call is recorded in order, and a
//! [`Script`] says what the "daemon" answers (an image present or not, an operation
//! that fails, output, an exit status, a container that runs until killed, a wait
//! that never returns). One container at a time runs; creating a probe is recorded
//! like any creation.

use super::{
    Attached, BaseFacts, BuildEvent, Call, Engine, ImageRecord, ImageRemoval, ImageSummary, Listed,
    Output, RunError, Unreachable,
};
use crate::policy::build::RegistryAuth;
use crate::policy::forced::BuildSettings;
use crate::policy::reference::{ImageFacts, Reference};
use crate::wire::{Progress, Signal, WinSize};
use bollard::models::ContainerCreateBody;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    InspectImage(String),
    Pull(String),
    EnsureNetwork(String),
    /// The image of the created container and the ID given to it.
    Create {
        image: String,
        id: String,
    },
    ReadFiles(String),
    Attach {
        id: String,
        stdin: bool,
        tty: bool,
    },
    Start(String),
    Resize(String, u16, u16),
    Signal(String, &'static str),
    Wait(String),
    Remove(String),
    Labelled,
    ImageLabels(String),
    ListImages,
    RemoveImage(String),
    BaseImage(String),
    /// The settings of a build and the context bytes it was sent.
    Build(Box<BuildSettings>, usize),
    Save(String),
    Load(usize),
    DeleteUntagged(String),
    ExistingContainers(Vec<String>),
    /// The image and the name it was given.
    Tag(String, String),
    /// The name pushed, and the user name of the credentials it was pushed with.
    Push(String, Option<String>),
}

/// An operation, to script a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    InspectImage,
    Pull,
    EnsureNetwork,
    Create,
    ReadFiles,
    Attach,
    Start,
    Wait,
    Remove,
    Build,
    Load,
    Tag,
    Push,
}

/// What the fake daemon answers.
#[derive(Clone)]
pub struct Script {
    /// What `inspect_image` finds (`None`: the image is missing until pulled).
    pub image: Option<ImageFacts>,
    /// What a pull makes present (and the progress it reports).
    pub pulled: Option<ImageFacts>,
    /// Operations that fail, from their Nth call on (0: every call).
    pub fail: BTreeMap<Op, usize>,
    /// Failures are a daemon that does not answer (else: a daemon that refuses).
    pub unreachable: bool,
    /// The image's `/etc/passwd`, `/etc/group`, `/etc/shells`.
    pub files: [Option<&'static str>; 3],
    /// What the container prints on stdout.
    pub output: Vec<&'static [u8]>,
    /// Its exit status; `None`: it runs until killed (or removed).
    pub exit: Option<i64>,
    /// `wait` never returns, even once the container is killed.
    pub wait_hangs: bool,
    /// The runtimes registered with the "daemon".
    pub runtimes: Vec<String>,
    /// What `list_images` lists; `remove_image` takes tags (and images) off it.
    pub images: Vec<ImageSummary>,
    /// What `base_image` finds for any reference (`None`: missing).
    pub base: Option<BaseFacts>,
    /// What a build prints, and how it ends (`None`: it runs until dropped).
    pub build_output: Vec<&'static str>,
    pub build_end: Option<BuildEvent>,
    /// What `save` streams.
    pub saved: Vec<u8>,
    /// What a successful `load` makes `inspect_image` find (`None`: no change).
    pub loaded: Option<ImageFacts>,
    /// What `image_record` says of an image (by ID or prefix); any other image is
    /// untagged, new, and committed from [`STEP_CONTAINER`] (a step of the build).
    pub records: Vec<(String, Option<ImageRecord>)>,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            image: Some(image("busybox:latest")),
            pulled: None,
            fail: BTreeMap::new(),
            unreachable: false,
            files: [
                Some("root:x:0:0:root:/root:/bin/sh\n"),
                Some("root:x:0:\n"),
                Some("/bin/sh\n"),
            ],
            output: vec![],
            exit: Some(0),
            wait_hangs: false,
            runtimes: vec!["io.containerd.runc.v2".into(), "runc".into()],
            images: vec![],
            base: Some(BaseFacts {
                id: format!("sha256:{}", "ab".repeat(32)),
                base: Default::default(),
                layers: 1,
            }),
            build_output: vec![
                "Step 1/2 : FROM busybox\n",
                "Step 2/2 : USER 1000\n",
                " ---> Running in 5e5e5e5e5e5e\n",
            ],
            build_end: Some(BuildEvent::Image(format!("sha256:{}", "cd".repeat(32)))),
            saved: b"saved image".to_vec(),
            loaded: None,
            records: vec![],
        }
    }
}

/// The step container of the default script's build (its output names it).
pub const STEP_CONTAINER: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

/// What the fake's pushes report.
pub const PUSHED_DIGEST: &str =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The facts of a local image named `tag`.
pub fn image(tag: &str) -> ImageFacts {
    ImageFacts {
        id: format!("sha256:{}", "ab".repeat(32)),
        repo_tags: vec![tag.to_string()],
        repo_digests: vec![],
        volumes: vec![],
        working_dir: None,
    }
}

struct State {
    script: Script,
    calls: Vec<Recorded>,
    /// Calls so far per operation.
    counts: BTreeMap<Op, usize>,
    /// The runtime each creation asked for (`None`: the daemon's default), in order.
    runtimes: Vec<Option<String>>,
    /// Containers created (successfully), in order, with their configuration, and
    /// those not removed.
    made: Vec<String>,
    bodies: Vec<ContainerCreateBody>,
    live: BTreeSet<String>,
    next: u64,
    /// What the container read on its stdin.
    stdin: Arc<Mutex<Vec<u8>>>,
    /// The context archive each build was sent.
    contexts: Vec<Vec<u8>>,
}

/// The recording fake. Clones share their state.
#[derive(Clone)]
pub struct Fake {
    state: Arc<Mutex<State>>,
    /// Per container: `true` once it is killed or removed.
    stopped: Arc<Mutex<HashMap<String, tokio::sync::watch::Sender<bool>>>>,
}

impl Fake {
    pub fn new(script: Script) -> Fake {
        Fake {
            state: Arc::new(Mutex::new(State {
                script,
                calls: vec![],
                counts: BTreeMap::new(),
                runtimes: vec![],
                made: vec![],
                bodies: vec![],
                live: BTreeSet::new(),
                next: 0,
                stdin: Arc::default(),
                contexts: vec![],
            })),
            stopped: Arc::default(),
        }
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The context archive each build was sent, in order.
    pub fn contexts(&self) -> Vec<Vec<u8>> {
        self.state.lock().unwrap().contexts.clone()
    }

    /// Containers created and not (yet) removed.
    pub fn live(&self) -> BTreeSet<String> {
        self.state.lock().unwrap().live.clone()
    }

    /// The IDs of the containers created (a failed create made none), in order.
    pub fn created(&self) -> Vec<String> {
        self.state.lock().unwrap().made.clone()
    }

    /// The configurations of the containers created, in order.
    pub fn bodies(&self) -> Vec<ContainerCreateBody> {
        self.state.lock().unwrap().bodies.clone()
    }

    /// The runtime each creation (probe or run) asked for, in order.
    pub fn create_runtimes(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().runtimes.clone()
    }

    /// What the container read on its stdin so far.
    pub fn stdin(&self) -> Vec<u8> {
        self.state.lock().unwrap().stdin.lock().unwrap().clone()
    }

    /// Changes the script from now on.
    pub fn script(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.state.lock().unwrap().script)
    }

    /// Records `call`; the scripted failure of `op`, if any.
    fn record(&self, call: Recorded, op: Option<Op>) -> anyhow::Result<()> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(call.clone());
        let Some(op) = op else { return Ok(()) };
        let n = s.counts.entry(op).or_default();
        *n += 1;
        let nth = *n - 1;
        match s.script.fail.get(&op) {
            Some(from) if nth >= *from && s.script.unreachable => {
                Err(anyhow::Error::new(Unreachable {
                    doing: format!("{call:?}"),
                    cause: "scripted: connection refused".into(),
                }))
            }
            Some(from) if nth >= *from => Err(anyhow::anyhow!("{call:?}: scripted failure")),
            _ => Ok(()),
        }
    }

    fn stop(&self, id: &str) {
        if let Some(tx) = self.stopped.lock().unwrap().get(id) {
            tx.send_replace(true);
        }
    }

    /// Resolves once container `id` is stopped (never for an unknown one).
    fn until_stopped(&self, id: &str) -> impl std::future::Future<Output = ()> + Send + 'static {
        let rx = self
            .stopped
            .lock()
            .unwrap()
            .get(id)
            .map(|tx| tx.subscribe());
        async move {
            match rx {
                Some(mut rx) => {
                    let _ = rx.wait_for(|s| *s).await;
                }
                None => std::future::pending().await,
            }
        }
    }
}

impl Engine for Fake {
    fn api_version(&self) -> String {
        "fake".into()
    }

    fn runtimes(&self) -> Call<'_, Vec<String>> {
        let r = self.state.lock().unwrap().script.runtimes.clone();
        Box::pin(async move { Ok(r) })
    }

    fn inspect_image<'a>(&'a self, reference: &'a str) -> Call<'a, Option<ImageFacts>> {
        let r = self.record(
            Recorded::InspectImage(reference.into()),
            Some(Op::InspectImage),
        );
        let image = self.state.lock().unwrap().script.image.clone();
        Box::pin(async move { r.map(|()| image) })
    }

    fn pull<'a>(
        &'a self,
        reference: &'a Reference,
        mut progress: Box<dyn FnMut(Progress) + Send + 'a>,
    ) -> Call<'a, ()> {
        let r = self.record(Recorded::Pull(reference.to_string()), Some(Op::Pull));
        Box::pin(async move {
            r?;
            for status in ["Pulling fs layer", "Downloading", "Pull complete"] {
                progress(Progress {
                    image: reference.familiar(),
                    id: "layer".into(),
                    status: status.into(),
                    current: None,
                    total: None,
                });
            }
            let mut s = self.state.lock().unwrap();
            s.script.image = s.script.pulled.clone();
            Ok(())
        })
    }

    fn ensure_isolated_network<'a>(&'a self, name: &'a str) -> Call<'a, ()> {
        let r = self.record(
            Recorded::EnsureNetwork(name.into()),
            Some(Op::EnsureNetwork),
        );
        Box::pin(async move { r })
    }

    fn create(&self, body: ContainerCreateBody) -> Call<'_, String> {
        let id = {
            let mut s = self.state.lock().unwrap();
            s.next += 1;
            format!("{:064x}", 0xc0ffee00 + s.next)
        };
        let runtime = body.host_config.as_ref().and_then(|h| h.runtime.clone());
        self.state.lock().unwrap().runtimes.push(runtime);
        let image = body.image.clone().unwrap_or_default();
        let r = self.record(
            Recorded::Create {
                image,
                id: id.clone(),
            },
            Some(Op::Create),
        );
        if r.is_ok() {
            let mut s = self.state.lock().unwrap();
            s.made.push(id.clone());
            s.bodies.push(body);
            s.live.insert(id.clone());
            let (tx, _) = tokio::sync::watch::channel(false);
            self.stopped.lock().unwrap().insert(id.clone(), tx);
        }
        Box::pin(async move { r.map(|()| id) })
    }

    fn read_files<'a>(
        &'a self,
        id: &'a str,
        paths: &'a [&'a str],
    ) -> Call<'a, Vec<Option<Vec<u8>>>> {
        let r = self.record(Recorded::ReadFiles(id.into()), Some(Op::ReadFiles));
        let files = self.state.lock().unwrap().script.files;
        let got = paths
            .iter()
            .enumerate()
            .map(|(i, _)| {
                files
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|t| t.as_bytes().to_vec())
            })
            .collect();
        Box::pin(async move { r.map(|()| got) })
    }

    /// Output: the scripted chunks, then the end of the stream once the container
    /// exits (at once if it has an exit status, else when it is stopped). Stdin: kept.
    fn attach<'a>(&'a self, id: &'a str, stdin: bool, tty: bool) -> Call<'a, Attached> {
        let r = self.record(
            Recorded::Attach {
                id: id.into(),
                stdin,
                tty,
            },
            Some(Op::Attach),
        );
        let (script, kept) = {
            let s = self.state.lock().unwrap();
            (s.script.clone(), s.stdin.clone())
        };
        let stopped = self.until_stopped(id);
        Box::pin(async move {
            r?;
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let mut ours = ours;
                let mut buf = [0u8; 4096];
                while let Ok(n) = ours.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    kept.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            let chunks = futures_util::stream::iter(
                script
                    .output
                    .into_iter()
                    .map(|b| Ok(Output::Stdout(Bytes::from_static(b)))),
            );
            let end = futures_util::stream::once(async move {
                if script.exit.is_none() {
                    stopped.await;
                }
            })
            .filter_map(|()| async { None });
            Ok(Attached {
                output: chunks.chain(end).boxed(),
                input: Box::pin(theirs),
            })
        })
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RunError>> {
        let r = self.record(Recorded::Start(id.into()), Some(Op::Start));
        Box::pin(async move {
            r.map_err(|e| RunError {
                status: 125,
                message: format!("cannot start container: {e}"),
            })
        })
    }

    fn resize<'a>(&'a self, id: &'a str, size: WinSize) -> Call<'a, ()> {
        let r = self.record(Recorded::Resize(id.into(), size.rows, size.cols), None);
        Box::pin(async move { r })
    }

    fn signal<'a>(&'a self, id: &'a str, signal: Signal) -> Call<'a, ()> {
        let r = self.record(Recorded::Signal(id.into(), signal.name()), None);
        if signal == Signal::Kill {
            self.stop(id);
        }
        Box::pin(async move { r })
    }

    fn wait<'a>(&'a self, id: &'a str) -> Call<'a, i64> {
        let r = self.record(Recorded::Wait(id.into()), Some(Op::Wait));
        let script = self.state.lock().unwrap().script.clone();
        let stopped = self.until_stopped(id);
        Box::pin(async move {
            r?;
            if script.wait_hangs {
                std::future::pending::<()>().await;
            }
            match script.exit {
                Some(code) => Ok(code),
                None => {
                    stopped.await;
                    Ok(137)
                }
            }
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> Call<'a, ()> {
        let r = self.record(Recorded::Remove(id.into()), Some(Op::Remove));
        if r.is_ok() {
            self.state.lock().unwrap().live.remove(id);
            self.stop(id);
        }
        Box::pin(async move { r })
    }

    fn labelled<'a>(&'a self, _labels: &'a [(&'a str, &'a str)]) -> Call<'a, Vec<Listed>> {
        let r = self.record(Recorded::Labelled, None);
        Box::pin(async move { r.map(|()| vec![]) })
    }

    fn image_labels<'a>(&'a self, image_id: &'a str) -> Call<'a, Option<HashMap<String, String>>> {
        let r = self.record(Recorded::ImageLabels(image_id.into()), None);
        Box::pin(async move { r.map(|()| Some(HashMap::new())) })
    }

    fn list_images(&self) -> Call<'_, Vec<ImageSummary>> {
        let r = self.record(Recorded::ListImages, None);
        let images = self.state.lock().unwrap().script.images.clone();
        Box::pin(async move { r.map(|()| images) })
    }

    /// As docker: a tag is untagged (the image deleted with its last tag), an ID
    /// deletes an untagged image; an unknown reference or an ID with tags is an error.
    fn remove_image<'a>(&'a self, reference: &'a str) -> Call<'a, ImageRemoval> {
        let r = self.record(Recorded::RemoveImage(reference.into()), None);
        let mut st = self.state.lock().unwrap();
        let images = &mut st.script.images;
        let result = (|| {
            r?;
            let mut out = ImageRemoval::default();
            if let Some(i) = images.iter().position(|m| m.id == reference) {
                if !images[i].repo_tags.is_empty() {
                    anyhow::bail!("conflict: unable to delete {reference} (must be forced)");
                }
                out.deleted.push(images.remove(i).id);
                return Ok(out);
            }
            let Some(i) = images
                .iter()
                .position(|m| m.repo_tags.iter().any(|t| t == reference))
            else {
                anyhow::bail!("No such image: {reference}");
            };
            images[i].repo_tags.retain(|t| t != reference);
            out.untagged.push(reference.to_string());
            if images[i].repo_tags.is_empty() {
                out.deleted.push(images.remove(i).id);
            }
            Ok(out)
        })();
        Box::pin(async move { result })
    }

    fn base_image<'a>(&'a self, reference: &'a str) -> Call<'a, Option<BaseFacts>> {
        let r = self.record(Recorded::BaseImage(reference.into()), None);
        let base = self.state.lock().unwrap().script.base.clone();
        Box::pin(async move { r.map(|()| base) })
    }

    /// Reads the whole context, reports the scripted output, then ends as scripted
    /// (or never).
    fn build<'a>(
        &'a self,
        settings: &'a BuildSettings,
        mut context: BoxStream<'static, std::io::Result<Bytes>>,
    ) -> BoxStream<'a, anyhow::Result<BuildEvent>> {
        let fake = self.clone();
        let settings = settings.clone();
        futures_util::stream::once(async move {
            let mut sent = Vec::new();
            while let Some(chunk) = context.next().await {
                match chunk {
                    Ok(c) => sent.extend_from_slice(&c),
                    Err(e) => return futures_util::stream::iter(vec![Err(e.into())]).boxed(),
                }
            }
            let n = sent.len();
            fake.state.lock().unwrap().contexts.push(sent);
            if let Err(e) = fake.record(Recorded::Build(Box::new(settings), n), Some(Op::Build)) {
                return futures_util::stream::iter(vec![Err(e)]).boxed();
            }
            let script = fake.state.lock().unwrap().script.clone();
            let lines = script
                .build_output
                .into_iter()
                .map(|l| Ok(BuildEvent::Output(l.to_string())));
            let end: BoxStream<'static, anyhow::Result<BuildEvent>> = match script.build_end {
                Some(ev) => futures_util::stream::iter([Ok(ev)]).boxed(),
                None => futures_util::stream::pending().boxed(),
            };
            futures_util::stream::iter(lines).chain(end).boxed()
        })
        .flatten()
        .boxed()
    }

    fn save(&self, image_id: &str) -> BoxStream<'static, std::io::Result<Bytes>> {
        let _ = self.record(Recorded::Save(image_id.into()), None);
        let saved = self.state.lock().unwrap().script.saved.clone();
        futures_util::stream::iter([Ok(Bytes::from(saved))]).boxed()
    }

    fn load(&self, mut archive: BoxStream<'static, std::io::Result<Bytes>>) -> Call<'_, ()> {
        Box::pin(async move {
            let mut n = 0;
            while let Some(chunk) = archive.next().await {
                n += chunk?.len();
            }
            self.record(Recorded::Load(n), Some(Op::Load))?;
            let mut s = self.state.lock().unwrap();
            if let Some(i) = s.script.loaded.clone() {
                s.script.image = Some(i);
            }
            Ok(())
        })
    }

    fn tag<'a>(&'a self, image_id: &'a str, repo: &'a str, tag: &'a str) -> Call<'a, ()> {
        let r = self.record(
            Recorded::Tag(image_id.into(), format!("{repo}:{tag}")),
            Some(Op::Tag),
        );
        Box::pin(async move { r })
    }

    fn delete_untagged<'a>(&'a self, image_id: &'a str, _since: i64) -> Call<'a, bool> {
        let r = self.record(Recorded::DeleteUntagged(image_id.into()), None);
        Box::pin(async move { r.map(|()| true) })
    }

    fn image_record<'a>(&'a self, image_id: &'a str) -> Call<'a, Option<ImageRecord>> {
        let script = self.state.lock().unwrap().script.clone();
        let hex = image_id
            .strip_prefix("sha256:")
            .unwrap_or(image_id)
            .to_string();
        let found = script
            .records
            .iter()
            .find(|(id, _)| id.strip_prefix("sha256:").unwrap_or(id).starts_with(&hex))
            .map(|(_, r)| r.clone());
        let r = found.unwrap_or_else(|| {
            Some(ImageRecord {
                id: format!("sha256:{hex}"),
                parent: script
                    .base
                    .as_ref()
                    .map(|b| b.id.clone())
                    .unwrap_or_default(),
                created: i64::MAX,
                tagged: false,
                container: STEP_CONTAINER.into(),
            })
        });
        Box::pin(async move { Ok(r) })
    }

    fn existing_containers<'a>(
        &'a self,
        ids: &'a [String],
        _shape: &'a super::BuildShape,
    ) -> Call<'a, Vec<String>> {
        let r = self.record(Recorded::ExistingContainers(ids.to_vec()), None);
        Box::pin(async move { r.map(|()| vec![]) })
    }

    /// Reports two events and the digest [`PUSHED_DIGEST`].
    fn push<'a>(
        &'a self,
        repo: &'a str,
        tag: &'a str,
        auth: Option<&'a RegistryAuth>,
        mut progress: Box<dyn FnMut(Progress) + Send + 'a>,
    ) -> Call<'a, String> {
        let image = format!("{repo}:{tag}");
        let r = self.record(
            Recorded::Push(image.clone(), auth.map(|a| a.username.clone())),
            Some(Op::Push),
        );
        Box::pin(async move {
            r?;
            for status in [
                "Pushed".to_string(),
                format!("{tag}: digest: {PUSHED_DIGEST} size: 527"),
            ] {
                progress(Progress {
                    image: image.clone(),
                    id: "layer".into(),
                    status,
                    current: None,
                    total: None,
                });
            }
            Ok(PUSHED_DIGEST.to_string())
        })
    }
}

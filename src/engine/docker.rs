//! [`Engine`] over bollard: the only code that talks to the Docker daemon. Each
//! operation turns Docker's answer into what urund needs.

use super::{
    check_isolated_network, start_error_status, Attached, BaseFacts, BuildEvent, Call, Engine,
    ImageRemoval, ImageSummary, Listed, Output, RunError, Unreachable, ICC_OPTION, NETWORK_LABEL,
    NOT_ANSWERING,
};
use crate::policy::build::RegistryAuth;
use crate::policy::dockerfile::BaseImage;
use crate::policy::forced::BuildSettings;
use crate::policy::reference::{ImageFacts, Reference};
use crate::system;
use crate::wire::{Progress, Signal, WinSize};
use anyhow::{bail, Context, Result};
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    PushImageOptionsBuilder, RemoveContainerOptionsBuilder, ResizeContainerTTYOptionsBuilder,
    TagImageOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::ready;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};

pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

#[derive(Clone)]
pub struct DockerEngine {
    docker: Docker,
    /// The daemon's socket, for the one call bollard cannot make right (TTY attach).
    socket: PathBuf,
}

/// Errors that mean the daemon is not there (no answer at all), as opposed to an
/// answer that refuses or fails the operation.
fn transport_failure(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::IOError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::HyperLegacyError { .. }
            | DockerError::SocketNotFoundError(_)
            | DockerError::RequestTimeoutError
    )
}

/// A bollard error as an `anyhow::Error` saying what failed: [`Unreachable`] when the
/// daemon did not answer, else `doing: <the daemon's message>`.
fn failed(e: DockerError, doing: impl Into<String>) -> anyhow::Error {
    let doing = doing.into();
    if transport_failure(&e) {
        anyhow::Error::new(Unreachable {
            doing,
            cause: e.to_string(),
        })
    } else {
        anyhow::anyhow!("{doing}: {}", docker_message(&e))
    }
}

/// An I/O error on urund's own connection to the daemon (the attach stream).
fn io_failed(e: std::io::Error, doing: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Unreachable {
        doing: doing.into(),
        cause: e.to_string(),
    })
}

impl DockerEngine {
    /// Connects to the daemon at `uri` (only `unix://` paths: urun never talks to a
    /// TCP daemon) and negotiates the API version down to what the daemon speaks.
    pub async fn connect(uri: &str) -> Result<DockerEngine> {
        let Some(path) = uri.strip_prefix("unix://") else {
            bail!("docker host {uri:?}: only unix:// sockets are supported");
        };
        let docker = Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
            .with_context(|| format!("docker host {uri}"))?
            .negotiate_version()
            .await
            .with_context(|| format!("docker daemon at {uri} is unreachable"))?;
        Ok(DockerEngine {
            docker,
            socket: PathBuf::from(path),
        })
    }

    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    /// What the daemon resolves a reference to, locally only: the image's ID, its
    /// names and its declared volumes. `Ok(None)` if not present.
    pub async fn inspect_image(&self, reference: &str) -> Result<Option<ImageFacts>> {
        let img = match self.docker.inspect_image(reference).await {
            Ok(img) => img,
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(failed(e, "inspecting image")),
        };
        let Some(id) = img.id else {
            bail!("inspecting image {reference}: the daemon gave no image ID");
        };
        let config = img.config.unwrap_or_default();
        let mut volumes: Vec<String> = config
            .volumes
            .map(|v| v.into_keys().collect())
            .unwrap_or_default();
        volumes.sort();
        Ok(Some(ImageFacts {
            id,
            repo_tags: img.repo_tags.unwrap_or_default(),
            repo_digests: img.repo_digests.unwrap_or_default(),
            volumes,
            working_dir: config.working_dir.filter(|w| !w.is_empty()),
        }))
    }

    /// Creates a container. It gets no name from urund, only Docker's random one:
    /// Docker's DNS on a user-defined network resolves names a user gave, for anyone
    /// on that network.
    pub async fn create(&self, body: ContainerCreateBody) -> Result<String> {
        let r = self
            .docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await
            .map_err(|e| failed(e, "creating container"))?;
        Ok(r.id)
    }

    /// Attaches to a created container's streams over a plain hijacked connection
    /// (`POST /containers/{id}/attach` upgraded to a raw byte stream, what the docker
    /// CLI does), read in large chunks into one buffer that frames are cut from
    /// without copying. bollard's attach is not used: it reads 8 KiB at a time, and
    /// its decoder takes raw TTY output that starts with byte 0, 1 or 2 for a
    /// multiplexing header (a program printing `\x01...` would lose 8 bytes and stall
    /// the stream). `id` is the ID the daemon returned at create: hex only.
    pub async fn attach(&self, id: &str, stdin: bool, tty: bool) -> Result<Attached> {
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("attaching to container: unexpected container id {id:?}");
        }
        let mut s = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| io_failed(e, "attaching to container"))?;
        let req = format!(
            "POST /v{}/containers/{id}/attach?stream=1&stdin={}&stdout=1&stderr=1 HTTP/1.1\r\n\
             Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n",
            self.api_version(),
            u8::from(stdin)
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| io_failed(e, "attaching to container"))?;
        // The response head, byte by byte so nothing of the stream after it is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let b = s
                .read_u8()
                .await
                .map_err(|e| io_failed(e, "attaching to container"))?;
            head.push(b);
            if head.len() > MAX_HEAD {
                bail!("attaching to container: response head too large");
            }
        }
        attach_status(&head)?;
        // Out of tokio's hands (which would keep it registered with epoll for good),
        // and duplicated: reader and writer each wait on their own descriptor.
        let rd = OwnedFd::from(
            s.into_std()
                .map_err(|e| io_failed(e, "attaching to container"))?,
        );
        let wr = rd
            .try_clone()
            .map_err(|e| io_failed(e, "attaching to container"))?;
        if stdin {
            // Room for a whole chunk of stdin (urund writes at most 256 KiB at once):
            // one write and no wait for the daemon per chunk.
            let _ = system::set_send_buffer(wr.as_fd(), ATTACH_SEND_BUFFER);
        }
        // Non-blocking for good (tokio's already is; `splice` into it waits only if
        // the descriptor itself says so): urund's own connection, nobody else's.
        system::set_nonblocking(wr.as_fd()).map_err(|e| io_failed(e, "attaching to container"))?;
        Ok(Attached {
            output: output_stream(Arc::new(rd), tty),
            input: Box::pin(AttachInput {
                sock: Arc::new(wr),
                waiting: None,
            }),
        })
    }

    /// Sets the container's terminal size.
    pub async fn resize(&self, id: &str, size: WinSize) -> Result<()> {
        let opts = ResizeContainerTTYOptionsBuilder::default()
            .h(size.rows.into())
            .w(size.cols.into())
            .build();
        self.docker
            .resize_container_tty(id, opts)
            .await
            .map_err(|e| failed(e, "resizing the container's terminal"))
    }

    /// Starts the container; a failure carries docker run's status (126/127/125).
    pub async fn start(&self, id: &str) -> std::result::Result<(), RunError> {
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|e| {
                if transport_failure(&e) {
                    return RunError {
                        status: crate::wire::status::REFUSED,
                        message: NOT_ANSWERING.into(),
                    };
                }
                let message = format!("cannot start container: {}", docker_message(&e));
                RunError {
                    status: start_error_status(&message),
                    message,
                }
            })
    }

    /// Waits until the container is not running; returns its exit status (0..=255;
    /// docker reports 128+N for a process killed by signal N).
    pub async fn wait(&self, id: &str) -> Result<i64> {
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut s = self.docker.wait_container(id, Some(opts));
        match s.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(failed(e, "waiting for container")),
            None => Err(anyhow::Error::new(Unreachable {
                doing: "waiting for container".into(),
                cause: "the answer ended without a status".into(),
            })),
        }
    }

    pub async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        let opts = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        match self.docker.kill_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(failed(e, "signalling container")),
        }
    }

    /// Kills (if running) and removes a container with its anonymous volumes; a
    /// missing one is not an error. Only for containers urund created (or proved its
    /// own, see [`crate::daemon::janitor`]): never for a container someone else made.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            // "removal already in progress": someone else's removal is not ours done;
            // only a container that is gone counts as removed.
            Err(e) if is_status(&e, 409) => self.until_gone(id).await,
            Err(e) => Err(failed(e, format!("removing container {id}"))),
        }
    }

    /// Waits (bounded) for a removal already in progress to finish: `Ok` once the
    /// container no longer exists, an error (the janitor retries) if it still does.
    async fn until_gone(&self, id: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + REMOVAL_IN_PROGRESS_WAIT;
        loop {
            match self
                .docker
                .inspect_container(
                    id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
            {
                Err(e) if is_status(&e, 404) => return Ok(()),
                Err(e) => return Err(failed(e, format!("inspecting container {id}"))),
                Ok(_) if tokio::time::Instant::now() >= deadline => {
                    bail!("container {id}: a removal already in progress did not finish")
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Pulls `reference` (tag or digest always explicit, so docker never pulls every
    /// tag of a repository), calling `progress` for each event the daemon reports.
    pub async fn pull(
        &self,
        reference: &Reference,
        mut progress: impl FnMut(Progress),
    ) -> Result<()> {
        let image = reference.familiar();
        let Some((name, tag)) = reference.pull_parts() else {
            bail!("{reference} is an image ID: it cannot be pulled");
        };
        let opts = CreateImageOptionsBuilder::default()
            .from_image(&name)
            .tag(&tag)
            .build();
        let mut s = self.docker.create_image(Some(opts), None, None);
        while let Some(ev) = s.next().await {
            let ev = ev.map_err(|e| failed(e, format!("pulling {reference}")))?;
            let (current, total) = ev
                .progress_detail
                .map_or((None, None), |d| (d.current, d.total));
            progress(Progress {
                image: image.clone(),
                id: ev.id.unwrap_or_default(),
                status: ev.status.unwrap_or_default(),
                current: current.and_then(|v| u64::try_from(v).ok()),
                total: total.and_then(|v| u64::try_from(v).ok()),
            });
        }
        Ok(())
    }

    /// Gives `image_id` the name `repo:tag` too.
    pub async fn tag(&self, image_id: &str, repo: &str, tag: &str) -> Result<()> {
        let opts = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        self.docker
            .tag_image(image_id, Some(opts))
            .await
            .map_err(|e| failed(e, format!("naming {image_id} {repo}:{tag}")))
    }

    /// Pushes `repo:tag` with `auth` (or anonymously: dockerd wants the header even
    /// then), through [`DockerEngine::registry_client`]; the pushed digest.
    pub async fn push(
        &self,
        repo: &str,
        tag: &str,
        auth: Option<&RegistryAuth>,
        mut progress: impl FnMut(Progress),
    ) -> Result<String> {
        let image = format!("{repo}:{tag}");
        let credentials = bollard::auth::DockerCredentials {
            username: auth.map(|a| a.username.clone()),
            password: auth.map(|a| a.password.clone()),
            ..Default::default()
        };
        let docker = self.registry_client()?;
        let opts = PushImageOptionsBuilder::default().tag(tag).build();
        let mut s = docker.push_image(repo, Some(opts), Some(credentials));
        let mut digest = None;
        while let Some(ev) = s.next().await {
            let ev = ev.map_err(|e| failed(e, format!("pushing {image}")))?;
            let status = ev.status.unwrap_or_default();
            if let Some(d) = super::pushed_digest(&status) {
                digest = Some(d);
            }
            let (current, total) = ev
                .progress_detail
                .map_or((None, None), |d| (d.current, d.total));
            progress(Progress {
                image: image.clone(),
                id: String::new(), // bollard 0.19 drops the layer id of push events
                status,
                current: current.and_then(|v| u64::try_from(v).ok()),
                total: total.and_then(|v| u64::try_from(v).ok()),
            });
        }
        digest.with_context(|| format!("pushing {image}: the daemon did not report a digest"))
    }

    /// A client on the same socket for the calls that carry registry credentials: its
    /// transport re-encodes `X-Registry-Auth`/`-Config` in the URL-safe alphabet
    /// dockerd decodes them with ([`super::url_safe_base64`]); bollard's standard
    /// alphabet makes dockerd drop credentials whose encoding has a `+` or `/`.
    fn registry_client(&self) -> Result<Docker> {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyperlocal::UnixConnector);
        let transport = move |mut req: bollard::BollardRequest| {
            let client = client.clone();
            async move {
                for name in ["x-registry-auth", "x-registry-config"] {
                    let fixed = req
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(super::url_safe_base64);
                    if let Some(v) = fixed.and_then(|v| v.parse().ok()) {
                        req.headers_mut().insert(name, v);
                    }
                }
                client.request(req).await.map_err(DockerError::from)
            }
        };
        let host: String = self
            .socket
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Docker::connect_with_custom_transport(
            transport,
            Some(format!("unix://{host}")),
            120,
            &self.docker.client_version(),
        )
        .context("a client for the registry calls")
    }

    /// Makes sure the helper's isolated bridge network exists with inter-container
    /// communication off and our label: creates it if missing, refuses one that is
    /// not ours or lets containers talk to each other.
    pub async fn ensure_isolated_network(&self, name: &str) -> Result<()> {
        match self.network(name).await? {
            Some(n) => {
                let labels = n.labels.unwrap_or_default();
                let opts = n.options.unwrap_or_default();
                check_isolated_network(name, n.driver.as_deref(), &labels, &opts)
            }
            None => {
                let req = NetworkCreateRequest {
                    name: name.to_string(),
                    driver: Some("bridge".into()),
                    internal: Some(false),
                    attachable: Some(false),
                    options: Some(HashMap::from([(
                        ICC_OPTION.to_string(),
                        "false".to_string(),
                    )])),
                    labels: Some(HashMap::from([(
                        NETWORK_LABEL.to_string(),
                        "isolated".to_string(),
                    )])),
                    ..Default::default()
                };
                self.docker
                    .create_network(req)
                    .await
                    .map_err(|e| failed(e, format!("creating network {name}")))?;
                Ok(())
            }
        }
    }

    /// The daemon's `docker info`.
    pub async fn info(&self) -> Result<bollard::models::SystemInfo> {
        self.docker.info().await.context("docker info")
    }

    /// The names of the runtimes registered with the daemon (`docker info`).
    pub async fn runtimes(&self) -> Result<Vec<String>> {
        let info = self.info().await?;
        let mut names: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        names.sort();
        Ok(names)
    }

    /// The daemon's `docker version`.
    pub async fn version(&self) -> Result<bollard::models::SystemVersion> {
        self.docker.version().await.context("docker version")
    }

    /// The options of a network (e.g. the default `bridge`), if it exists.
    pub async fn network_options(&self, name: &str) -> Result<Option<HashMap<String, String>>> {
        Ok(self
            .network(name)
            .await?
            .map(|n| n.options.unwrap_or_default()))
    }

    /// A network by name; `None` if it does not exist.
    async fn network(&self, name: &str) -> Result<Option<bollard::models::Network>> {
        match self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(n) => Ok(Some(n)),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(failed(e, format!("inspecting network {name}"))),
        }
    }

    /// Reads small files from a created container that is never started (a probe
    /// for an image's files): each path through the archive endpoint. A missing path
    /// (or one that is not a regular file) is `None`; a file larger than
    /// `identity::MAX_FILE` is an error. The caller removes the container.
    pub async fn read_files(&self, id: &str, paths: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::new();
        for p in paths {
            out.push(self.archive(id, p).await?);
        }
        Ok(out)
    }

    async fn archive(&self, id: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let opts = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut s = self.docker.download_from_container(id, Some(opts));
        let mut tar = Vec::new();
        while let Some(chunk) = s.next().await {
            match chunk {
                Ok(b) => {
                    tar.extend_from_slice(&b);
                    if tar.len() > crate::policy::identity::MAX_FILE + 64 * 1024 {
                        bail!("reading {path} from the image: larger than 1 MiB");
                    }
                }
                Err(e) if is_status(&e, 404) => return Ok(None),
                Err(e) => return Err(failed(e, format!("reading {path} from the image"))),
            }
        }
        Ok(crate::policy::identity::untar_first_file(&tar))
    }

    /// All containers (any state) carrying every one of `labels` (`key=value`), with
    /// their image ID and labels.
    pub async fn labelled(&self, labels: &[(&str, &str)]) -> Result<Vec<Listed>> {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let filters = HashMap::from([("label".to_string(), wanted)]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| failed(e, "listing containers"))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                Some(Listed {
                    id: c.id?,
                    image_id: c.image_id.unwrap_or_default(),
                    labels: c.labels.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// An image's own labels (`Config.Labels`); `None` if the image is gone.
    pub async fn image_labels(&self, image_id: &str) -> Result<Option<HashMap<String, String>>> {
        match self.docker.inspect_image(image_id).await {
            Ok(img) => Ok(Some(img.config.and_then(|c| c.labels).unwrap_or_default())),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(failed(e, format!("inspecting image {image_id}"))),
        }
    }
}

impl DockerEngine {
    /// The daemon's images (`docker images`: top-level ones only).
    pub async fn list_images(&self) -> Result<Vec<ImageSummary>> {
        let opts = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .all(false)
            .build();
        let list = self
            .docker
            .list_images(Some(opts))
            .await
            .map_err(|e| failed(e, "listing images"))?;
        Ok(list
            .into_iter()
            .map(|i| ImageSummary {
                id: i.id,
                // Docker 20.10 lists an untagged image's tags as ["<none>:<none>"].
                repo_tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                repo_digests: i
                    .repo_digests
                    .into_iter()
                    .filter(|d| d != "<none>@<none>")
                    .collect(),
                created: i.created,
                size: i.size.max(0) as u64,
            })
            .collect())
    }

    /// `docker rmi REFERENCE` (no force, parents pruned as docker does).
    pub async fn remove_image(&self, reference: &str) -> Result<ImageRemoval> {
        let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .force(false)
            .noprune(false)
            .build();
        let items = self
            .docker
            .remove_image(reference, Some(opts), None)
            .await
            .map_err(|e| failed(e, format!("removing image {reference}")))?;
        let mut out = ImageRemoval::default();
        for i in items {
            out.untagged.extend(i.untagged);
            out.deleted.extend(i.deleted);
        }
        Ok(out)
    }
}

/// The build path's operations (see [`Engine`]).
impl DockerEngine {
    pub async fn base_image(&self, reference: &str) -> Result<Option<BaseFacts>> {
        let img = match self.docker.inspect_image(reference).await {
            Ok(img) => img,
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(failed(e, format!("inspecting base image {reference}"))),
        };
        let Some(id) = img.id else {
            bail!("inspecting image {reference}: the daemon gave no image ID");
        };
        let layers = img.root_fs.and_then(|r| r.layers).map_or(0, |l| l.len());
        let config = img.config.unwrap_or_default();
        let healthcheck = config
            .healthcheck
            .and_then(|h| h.test)
            .is_some_and(|t| t.first().is_some_and(|w| w != "NONE"));
        Ok(Some(BaseFacts {
            id,
            base: BaseImage {
                env: config.env.unwrap_or_default(),
                onbuild: config.on_build.unwrap_or_default(),
                healthcheck,
            },
            layers,
        }))
    }

    /// The legacy builder (API `version=1`) with every field of `settings` and
    /// nothing else: no tag, no pull, no extra hosts, no cache-from, no platform.
    pub fn build<'a>(
        &'a self,
        settings: &BuildSettings,
        context: BoxStream<'static, std::io::Result<Bytes>>,
    ) -> BoxStream<'a, Result<BuildEvent>> {
        let opts = build_options(settings);
        let body = bollard::body_try_stream(context);
        let s = self.docker.build_image(opts, None, Some(body));
        // After a failure, nothing more. The legacy builder reports an image at the
        // end of every stage: the last one is the build's.
        let mut over = false;
        s.flat_map(move |ev| {
            let mut out: Vec<Result<BuildEvent>> = Vec::new();
            if over {
                return futures_util::stream::iter(out);
            }
            match ev {
                Err(DockerError::DockerStreamError { error }) => {
                    out.push(Ok(BuildEvent::Failed(error)));
                }
                Err(e) => out.push(Err(failed(e, "building"))),
                Ok(ev) => {
                    if let Some(text) = ev.stream.filter(|t| !t.is_empty()) {
                        out.push(Ok(BuildEvent::Output(text)));
                    }
                    let error = ev
                        .error_detail
                        .and_then(|d| d.message)
                        .or(ev.error)
                        .filter(|m| !m.is_empty());
                    if let Some(m) = error {
                        out.push(Ok(BuildEvent::Failed(m)));
                    } else if let Some(id) = ev.aux.and_then(|a| a.id) {
                        out.push(match crate::policy::build::is_image_id(&id) {
                            true => Ok(BuildEvent::Image(id)),
                            false => Err(anyhow::anyhow!(
                                "building: the daemon reported image ID {id:?}"
                            )),
                        });
                    }
                }
            }
            over = out
                .iter()
                .any(|e| matches!(e, Err(_) | Ok(BuildEvent::Failed(_))));
            futures_util::stream::iter(out)
        })
        .boxed()
    }

    pub fn save(&self, image: &str) -> BoxStream<'static, std::io::Result<Bytes>> {
        let docker = self.docker.clone();
        let id = image.to_string();
        futures_util::stream::once(async move {
            docker
                .export_image(&id)
                .map(|r| r.map_err(|e| std::io::Error::other(format!("saving image: {e}"))))
        })
        .flatten()
        .boxed()
    }

    pub async fn load(&self, archive: BoxStream<'static, std::io::Result<Bytes>>) -> Result<()> {
        let opts = bollard::query_parameters::ImportImageOptionsBuilder::default()
            .quiet(true)
            .build();
        let mut s = self
            .docker
            .import_image(opts, bollard::body_try_stream(archive), None);
        while let Some(ev) = s.next().await {
            let ev = ev.map_err(|e| failed(e, "loading image"))?;
            if let Some(m) = ev.error_detail.and_then(|d| d.message).or(ev.error) {
                bail!("loading image: {m}");
            }
        }
        Ok(())
    }

    pub async fn delete_untagged(&self, image_id: &str, since: i64) -> Result<bool> {
        let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
        let plain = hex.len() >= 12
            && hex.len() <= 64
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !plain {
            return Ok(false);
        }
        let img = match self.docker.inspect_image(image_id).await {
            Ok(img) => img,
            Err(e) if is_status(&e, 404) => return Ok(false),
            Err(e) => return Err(failed(e, format!("inspecting image {image_id}"))),
        };
        let tagged = img.repo_tags.as_ref().is_some_and(|t| !t.is_empty());
        let created = img
            .created
            .as_deref()
            .and_then(created_seconds)
            .unwrap_or(i64::MIN);
        let Some(full) = img.id.filter(|id| {
            crate::policy::build::is_image_id(id) && id["sha256:".len()..].starts_with(hex)
        }) else {
            return Ok(false);
        };
        if tagged || created < since {
            return Ok(false);
        }
        // That image only: its untagged parents may be another build's (the layer
        // cache is shared), and the build's clean-up deletes its own one by one.
        let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .force(false)
            .noprune(true)
            .build();
        match self.docker.remove_image(&full, Some(opts), None).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(false),
            Err(e) => Err(failed(e, format!("removing image {full}"))),
        }
    }

    /// `GET /images/{id}/json` read by hand: bollard's model of the answer has no
    /// `Container` (the field newer APIs dropped; Engine API 1.41 has it).
    pub async fn image_record(&self, image_id: &str) -> Result<Option<super::ImageRecord>> {
        let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
        let plain = hex.len() >= 12
            && hex.len() <= 64
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !plain {
            return Ok(None);
        }
        let doing = format!("inspecting image {image_id}");
        let path = format!("/v{}/images/{image_id}/json", self.api_version());
        let Some(body) = self.raw_get(&path, &doing).await? else {
            return Ok(None);
        };
        let r = image_record_of(&body).with_context(|| doing.clone())?;
        // The daemon resolves a prefix: the answer must be the image asked for.
        Ok(r.filter(|r| r.id["sha256:".len()..].starts_with(hex)))
    }

    /// One `GET` over the daemon's socket as HTTP/1.0 (no chunking: the body is
    /// everything up to the end of the connection, at most [`MAX_RAW_BODY`]).
    /// `Ok(None)`: 404.
    async fn raw_get(&self, path: &str, doing: &str) -> Result<Option<Vec<u8>>> {
        let mut s = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| io_failed(e, doing))?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| io_failed(e, doing))?;
        let mut all = Vec::new();
        (&mut s)
            .take(MAX_RAW_BODY as u64 + MAX_HEAD as u64 + 1)
            .read_to_end(&mut all)
            .await
            .map_err(|e| io_failed(e, doing))?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(&all) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => bail!("{doing}: malformed response"),
        };
        if all.len() - n > MAX_RAW_BODY {
            bail!("{doing}: the answer is larger than {MAX_RAW_BODY} bytes");
        }
        match resp.code {
            Some(200) => Ok(Some(all[n..].to_vec())),
            Some(404) => Ok(None),
            code => bail!(
                "{doing}: {} {}",
                code.map_or("no status".to_string(), |c| c.to_string()),
                String::from_utf8_lossy(&all[n..]).trim()
            ),
        }
    }

    pub async fn existing_containers(
        &self,
        ids: &[String],
        shape: &super::BuildShape,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for id in ids {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            match self
                .docker
                .inspect_container(
                    id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
            {
                Ok(c) => {
                    let labels = c.config.as_ref().and_then(|c| c.labels.as_ref());
                    let host = c.host_config.as_ref();
                    let ours = shape.admits(
                        labels.into_iter().flat_map(|l| l.keys()),
                        host.and_then(|h| h.memory),
                        host.and_then(|h| h.network_mode.as_deref()),
                        host.and_then(|h| h.shm_size),
                    );
                    if ours {
                        out.extend(c.id);
                    } else {
                        eprintln!(
                            "urund: container {id}, named in a build's output, is not a \
                             step of that build; left alone"
                        );
                    }
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(failed(e, format!("inspecting container {id}"))),
            }
        }
        Ok(out)
    }
}

/// The API's build query from the settings, field by field. Pure.
pub fn build_options(s: &BuildSettings) -> bollard::query_parameters::BuildImageOptions {
    let clamp = |v: i64| i32::try_from(v).unwrap_or(i32::MAX);
    bollard::query_parameters::BuildImageOptions {
        dockerfile: s.dockerfile.clone(),
        t: None,
        extrahosts: None,
        remote: None,
        q: false,
        nocache: s.nocache,
        cachefrom: None,
        pull: s.pull.then(|| "1".to_string()),
        rm: s.rm,
        forcerm: s.forcerm,
        memory: Some(clamp(s.memory)),
        memswap: Some(clamp(s.memswap)),
        cpushares: None,
        cpusetcpus: None,
        cpuperiod: Some(clamp(s.cpu_period)),
        cpuquota: Some(clamp(s.cpu_quota)),
        buildargs: Some(s.buildargs.clone()),
        shmsize: Some(clamp(s.shm_size)),
        squash: None,
        labels: Some(s.labels.clone()),
        networkmode: Some(s.network.to_string()),
        platform: String::new(),
        target: s.target.clone().unwrap_or_default(),
        version: if s.legacy_builder {
            bollard::query_parameters::BuilderVersion::BuilderV1
        } else {
            bollard::query_parameters::BuilderVersion::BuilderBuildKit
        },
    }
}

/// Largest answer [`DockerEngine::raw_get`] reads (an image's inspect is a few KiB).
const MAX_RAW_BODY: usize = 1 << 20;

/// The facts of an image from its inspect JSON (`None`: no valid `Id`). Pure.
fn image_record_of(body: &[u8]) -> Result<Option<super::ImageRecord>> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Inspect {
        id: Option<String>,
        parent: Option<String>,
        created: Option<String>,
        repo_tags: Option<Vec<String>>,
        container: Option<String>,
    }
    let i: Inspect = serde_json::from_slice(body).context("the daemon's answer")?;
    let Some(id) = i.id.filter(|id| crate::policy::build::is_image_id(id)) else {
        return Ok(None);
    };
    let hex64 = |c: &String| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit());
    Ok(Some(super::ImageRecord {
        id,
        parent: i
            .parent
            .filter(|p| crate::policy::build::is_image_id(p))
            .unwrap_or_default(),
        created: i
            .created
            .as_deref()
            .and_then(created_seconds)
            .unwrap_or(i64::MIN),
        tagged: i
            .repo_tags
            .is_some_and(|t| t.iter().any(|t| t != "<none>:<none>")),
        container: i.container.filter(hex64).unwrap_or_default(),
    }))
}

/// An RFC 3339 time as Docker writes `Created` → seconds since the epoch. Pure.
fn created_seconds(t: &str) -> Option<i64> {
    // 2026-12-02T06:18:13.123456789Z: only the date and time to the second are used.
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, s) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !t.ends_with('Z') {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + s)
}

/// The daemon's operations are [`DockerEngine`]'s own methods; this only boxes them.
impl Engine for DockerEngine {
    fn api_version(&self) -> String {
        DockerEngine::api_version(self)
    }
    fn runtimes(&self) -> Call<'_, Vec<String>> {
        Box::pin(DockerEngine::runtimes(self))
    }
    fn inspect_image<'a>(&'a self, reference: &'a str) -> Call<'a, Option<ImageFacts>> {
        Box::pin(DockerEngine::inspect_image(self, reference))
    }
    fn pull<'a>(
        &'a self,
        reference: &'a Reference,
        progress: Box<dyn FnMut(Progress) + Send + 'a>,
    ) -> Call<'a, ()> {
        Box::pin(DockerEngine::pull(self, reference, progress))
    }
    fn ensure_isolated_network<'a>(&'a self, name: &'a str) -> Call<'a, ()> {
        Box::pin(DockerEngine::ensure_isolated_network(self, name))
    }
    fn tag<'a>(&'a self, image_id: &'a str, repo: &'a str, tag: &'a str) -> Call<'a, ()> {
        Box::pin(DockerEngine::tag(self, image_id, repo, tag))
    }
    fn push<'a>(
        &'a self,
        repo: &'a str,
        tag: &'a str,
        auth: Option<&'a RegistryAuth>,
        progress: Box<dyn FnMut(Progress) + Send + 'a>,
    ) -> Call<'a, String> {
        Box::pin(DockerEngine::push(self, repo, tag, auth, progress))
    }
    fn create(&self, body: ContainerCreateBody) -> Call<'_, String> {
        Box::pin(DockerEngine::create(self, body))
    }
    fn read_files<'a>(
        &'a self,
        id: &'a str,
        paths: &'a [&'a str],
    ) -> Call<'a, Vec<Option<Vec<u8>>>> {
        Box::pin(DockerEngine::read_files(self, id, paths))
    }
    fn attach<'a>(&'a self, id: &'a str, stdin: bool, tty: bool) -> Call<'a, Attached> {
        Box::pin(DockerEngine::attach(self, id, stdin, tty))
    }
    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, std::result::Result<(), RunError>> {
        Box::pin(DockerEngine::start(self, id))
    }
    fn resize<'a>(&'a self, id: &'a str, size: WinSize) -> Call<'a, ()> {
        Box::pin(DockerEngine::resize(self, id, size))
    }
    fn signal<'a>(&'a self, id: &'a str, signal: Signal) -> Call<'a, ()> {
        Box::pin(DockerEngine::kill(self, id, signal.name()))
    }
    fn wait<'a>(&'a self, id: &'a str) -> Call<'a, i64> {
        Box::pin(DockerEngine::wait(self, id))
    }
    fn remove<'a>(&'a self, id: &'a str) -> Call<'a, ()> {
        Box::pin(DockerEngine::remove(self, id))
    }
    fn labelled<'a>(&'a self, labels: &'a [(&'a str, &'a str)]) -> Call<'a, Vec<Listed>> {
        Box::pin(DockerEngine::labelled(self, labels))
    }
    fn image_labels<'a>(&'a self, image_id: &'a str) -> Call<'a, Option<HashMap<String, String>>> {
        Box::pin(DockerEngine::image_labels(self, image_id))
    }
    fn list_images(&self) -> Call<'_, Vec<ImageSummary>> {
        Box::pin(DockerEngine::list_images(self))
    }
    fn remove_image<'a>(&'a self, reference: &'a str) -> Call<'a, ImageRemoval> {
        Box::pin(DockerEngine::remove_image(self, reference))
    }
    fn base_image<'a>(&'a self, reference: &'a str) -> Call<'a, Option<BaseFacts>> {
        Box::pin(DockerEngine::base_image(self, reference))
    }
    fn build<'a>(
        &'a self,
        settings: &'a BuildSettings,
        context: BoxStream<'static, std::io::Result<Bytes>>,
    ) -> BoxStream<'a, Result<BuildEvent>> {
        DockerEngine::build(self, settings, context)
    }
    fn save(&self, image_id: &str) -> BoxStream<'static, std::io::Result<Bytes>> {
        DockerEngine::save(self, image_id)
    }
    fn load(&self, archive: BoxStream<'static, std::io::Result<Bytes>>) -> Call<'_, ()> {
        Box::pin(DockerEngine::load(self, archive))
    }
    fn delete_untagged<'a>(&'a self, image_id: &'a str, since: i64) -> Call<'a, bool> {
        Box::pin(DockerEngine::delete_untagged(self, image_id, since))
    }
    fn image_record<'a>(&'a self, image_id: &'a str) -> Call<'a, Option<super::ImageRecord>> {
        Box::pin(DockerEngine::image_record(self, image_id))
    }
    fn existing_containers<'a>(
        &'a self,
        ids: &'a [String],
        shape: &'a super::BuildShape,
    ) -> Call<'a, Vec<String>> {
        Box::pin(DockerEngine::existing_containers(self, ids, shape))
    }
}

/// The container's output from the attach connection: read in large chunks into one
/// buffer, pieces cut from it without copying ([`cut_output`]). Without a TTY, each
/// read that found something is followed by a pause of [`ATTACH_PAUSE`] with the
/// connection out of epoll: the daemon's small frames pile up meanwhile without waking
/// urund, and the next read takes them all (bench/NOTES.md).
fn output_stream(sock: Arc<OwnedFd>, tty: bool) -> BoxStream<'static, std::io::Result<Output>> {
    let state = (
        sock,
        BytesMut::with_capacity(ATTACH_BUFFER),
        None::<system::PauseTimer>,
    );
    futures_util::stream::unfold(state, move |(sock, mut buf, mut pause)| async move {
        loop {
            match cut_output(&mut buf, tty) {
                Ok(Some(o)) => return Some((Ok(o), (sock, buf, pause))),
                Ok(None) => {}
                Err(e) => return Some((Err(e), (sock, buf, pause))),
            }
            if let Some(timer) = &pause {
                let _ = timer.sleep(ATTACH_PAUSE).await;
            }
            if buf.capacity() - buf.len() < ATTACH_BUFFER / 4 {
                buf.reserve(ATTACH_BUFFER);
            }
            match read_attach(&sock, &mut buf).await {
                Ok(0) if buf.is_empty() => return None,
                Ok(0) => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "attach stream ended inside a frame",
                    );
                    buf.clear();
                    return Some((Err(e), (sock, buf, pause)));
                }
                // A timer of its own once there is output (none for a TTY, or if
                // the kernel has no timer to give: then no pause).
                Ok(_) if pause.is_none() && !tty => pause = system::PauseTimer::new().ok(),
                Ok(_) => {}
                Err(e) => return Some((Err(e), (sock, buf, pause))),
            }
        }
    })
    .boxed()
}

/// One read of the attach connection: what is there now, else what comes first.
async fn read_attach(sock: &Arc<OwnedFd>, buf: &mut BytesMut) -> std::io::Result<usize> {
    loop {
        match system::recv_nowait(sock.as_fd(), buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                system::wait_ready(sock.clone(), Interest::READABLE).await?
            }
            r => return r,
        }
    }
}

/// The container's stdin: the attach connection's sending side, registered with
/// epoll only while a write waits for room ([`system::wait_ready`]). Dropped, it
/// shuts that side down (as tokio's write half does).
struct AttachInput {
    sock: Arc<OwnedFd>,
    waiting: Option<BoxFuture<'static, std::io::Result<()>>>,
}

impl AsyncWrite for AttachInput {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            if let Some(w) = self.waiting.as_mut() {
                let r = ready!(w.as_mut().poll(cx));
                self.waiting = None;
                r?;
            }
            match system::send_nowait(self.sock.as_fd(), data) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let wait = system::wait_ready(self.sock.clone(), Interest::WRITABLE);
                    self.waiting = Some(Box::pin(wait));
                }
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(system::shutdown_write(self.sock.as_fd()))
    }
}

impl super::Input for AttachInput {
    fn socket(&self) -> Option<Arc<OwnedFd>> {
        Some(self.sock.clone())
    }
}

impl Drop for AttachInput {
    fn drop(&mut self) {
        let _ = system::shutdown_write(self.sock.as_fd());
    }
}

/// How long the container's output is left to pile up after a read that found some
/// (without a TTY). Docker sends a frame per write of the container (4 KiB for many
/// programs, `cat` and `head` among them); the daemon's side of the connection holds
/// about 280 KiB of such frames, so this pause caps a stream at about 250 MiB/s while
/// it cuts urund's wake-ups (and its client's) to one per pause (bench/NOTES.md).
const ATTACH_PAUSE: Duration = Duration::from_millis(1);

/// Largest response head accepted for the attach upgrade.
/// How long a removal finds another removal of the same container in progress before
/// it gives up (and the janitor retries).
const REMOVAL_IN_PROGRESS_WAIT: Duration = Duration::from_secs(30);

const MAX_HEAD: usize = 16 * 1024;

/// Checks the response head of the attach upgrade (`head` ends with the blank line):
/// a well-formed HTTP/1.1 response, status 101 (switching protocols) or 200 (older
/// daemons). Anything else is the daemon's refusal, reported by its status line. Pure.
fn attach_status(head: &[u8]) -> Result<()> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => bail!("attaching to container: incomplete response head"),
        Err(e) => bail!("attaching to container: malformed response head ({e})"),
    }
    match resp.code {
        Some(101 | 200) => Ok(()),
        code => bail!(
            "attaching to container: {} {}",
            code.map_or("no status".to_string(), |c| c.to_string()),
            resp.reason.unwrap_or("")
        ),
    }
}

/// The kernel's send buffer of an attach connection with stdin (doubled by the kernel
/// for its overhead).
const ATTACH_SEND_BUFFER: usize = 512 * 1024;
/// Read size of an attach stream (and most of a pipe's worth of container output).
const ATTACH_BUFFER: usize = 256 * 1024;
/// Largest frame accepted from the daemon's multiplexed stream (it writes ≤ 32 KiB).
const MAX_DOCKER_FRAME: usize = 16 << 20;

/// Cuts the next piece of container output from `buf`. A TTY stream is raw bytes;
/// otherwise docker multiplexes it as frames `[stream u8][0 0 0][len u32 BE][data]`
/// (stream 1 stdout, 2 stderr). `Ok(None)`: more bytes are needed. Pure.
fn cut_output(buf: &mut BytesMut, tty: bool) -> std::io::Result<Option<Output>> {
    if tty {
        return Ok((!buf.is_empty()).then(|| Output::Stdout(buf.split().freeze())));
    }
    let bad = |m: String| Err(std::io::Error::new(std::io::ErrorKind::InvalidData, m));
    loop {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        if len > MAX_DOCKER_FRAME {
            return bad(format!("attach stream: frame of {len} bytes"));
        }
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        let stream = buf[0];
        let _ = buf.split_to(8);
        let data = buf.split_to(len).freeze();
        match stream {
            1 => return Ok(Some(Output::Stdout(data))),
            2 => return Ok(Some(Output::Stderr(data))),
            // stdin is not echoed on attach; skip it if it ever is.
            0 => continue,
            s => return bad(format!("attach stream: unknown stream {s}")),
        }
    }
}

fn is_status(e: &DockerError, code: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// The daemon's own message for an error, without bollard's wrapping.
pub fn docker_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    fn out(o: Option<Output>) -> (u8, Vec<u8>) {
        match o.expect("a frame") {
            Output::Stdout(b) => (1, b.to_vec()),
            Output::Stderr(b) => (2, b.to_vec()),
        }
    }

    /// Bytes no pattern could fake (xorshift).
    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[tokio::test]
    async fn output_read_in_batches_between_pauses_is_byte_exact_and_ends_at_eof() {
        let (daemon, ours) = std::os::unix::net::UnixStream::pair().unwrap();
        let data = noise(8 << 20, 7);
        let sent = data.clone();
        // The daemon's side: 4 KiB frames, stdout and stderr alternating, sometimes
        // with a pause longer than urund's between them.
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut daemon = daemon;
            for (i, chunk) in sent.chunks(4096).enumerate() {
                daemon.write_all(&frame(1 + (i % 2) as u8, chunk)).unwrap();
                if i % 500 == 0 {
                    std::thread::sleep(Duration::from_millis(3));
                }
            }
        });
        let mut output = output_stream(Arc::new(OwnedFd::from(ours)), false);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(o) = output.next().await {
            match o.unwrap() {
                Output::Stdout(b) => out.extend_from_slice(&b),
                Output::Stderr(b) => err.extend_from_slice(&b),
            }
        }
        writer.join().unwrap();
        let (want_out, want_err): (Vec<_>, Vec<_>) =
            data.chunks(4096).enumerate().partition(|(i, _)| i % 2 == 0);
        assert!(
            out == want_out
                .into_iter()
                .flat_map(|(_, c)| c.to_vec())
                .collect::<Vec<_>>()
        );
        assert!(
            err == want_err
                .into_iter()
                .flat_map(|(_, c)| c.to_vec())
                .collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn input_waits_for_room_then_shuts_down_its_side() {
        use tokio::io::AsyncWriteExt;
        let (daemon, ours) = std::os::unix::net::UnixStream::pair().unwrap();
        // More than the socket holds: the writes wait for the reader.
        let data = noise(4 << 20, 11);
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut got = Vec::new();
            let mut daemon = daemon;
            daemon.read_to_end(&mut got).unwrap();
            got
        });
        let mut input = AttachInput {
            sock: Arc::new(OwnedFd::from(ours)),
            waiting: None,
        };
        input.write_all(&data).await.unwrap();
        input.shutdown().await.unwrap();
        assert!(reader.join().unwrap() == data, "what the daemon read");
    }

    #[test]
    fn multiplexed_stream_is_cut_into_frames_byte_exact() {
        let mut bytes = frame(1, b"\x01\x02binary\x00");
        bytes.extend(frame(0, b"ignored stdin"));
        bytes.extend(frame(2, b"err"));
        bytes.extend(frame(1, b""));
        // Fed one byte at a time, as the daemon may deliver it.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in bytes {
            buf.extend_from_slice(&[b]);
            while let Some(o) = cut_output(&mut buf, false).unwrap() {
                got.push(out(Some(o)));
            }
        }
        assert_eq!(
            got,
            vec![
                (1, b"\x01\x02binary\x00".to_vec()),
                (2, b"err".to_vec()),
                (1, vec![])
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn tty_stream_is_passed_raw_even_when_it_looks_like_a_header() {
        let mut buf = BytesMut::from(&b"\x01\x00\x00\x00\x00\x00\x00\x05hello"[..]);
        assert_eq!(
            out(cut_output(&mut buf, true).unwrap()),
            (1, b"\x01\x00\x00\x00\x00\x00\x00\x05hello".to_vec())
        );
        assert!(cut_output(&mut buf, true).unwrap().is_none());
    }

    #[test]
    fn bad_multiplexed_frames_are_errors() {
        let mut buf = BytesMut::from(&frame(7, b"x")[..]);
        assert!(cut_output(&mut buf, false).is_err());
        let mut buf = BytesMut::from(&[1u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(cut_output(&mut buf, false).is_err());
    }

    use super::*;

    #[test]
    fn docker_creation_times_are_read_to_the_second() {
        assert_eq!(created_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            created_seconds("2026-12-02T06:18:13.123456789Z"),
            Some(1_796_192_293)
        );
        assert_eq!(created_seconds("2026-12-02 06:18:13"), None);
        assert_eq!(created_seconds(""), None);
    }

    #[test]
    fn the_build_query_is_the_settings_and_nothing_else() {
        let caller = crate::policy::Caller::example();
        let req = crate::wire::BuildRequest {
            version: crate::wire::VERSION,
            dockerfile: "Dockerfile".into(),
            target: Some("final".into()),
            ..Default::default()
        };
        let s = crate::policy::forced::build_settings(
            &crate::policy::Build::default(),
            &caller,
            &req,
            &Default::default(),
            5,
        );
        let o = build_options(&s);
        assert_eq!(o.networkmode.as_deref(), Some("none"));
        assert_eq!(o.shmsize, Some((64 << 20) + 6 * 4096));
        assert_eq!((o.memory, o.memswap), (Some(i32::MAX), Some(i32::MAX)));
        assert_eq!((o.cpuperiod, o.cpuquota), (Some(100_000), Some(100_000)));
        assert!(o.rm && o.forcerm && o.pull.is_none() && o.t.is_none());
        assert!(o.extrahosts.is_none() && o.cachefrom.is_none() && o.remote.is_none());
        assert_eq!(o.target, "final");
        assert_eq!(
            o.version,
            bollard::query_parameters::BuilderVersion::BuilderV1
        );
    }

    #[test]
    fn attach_answer_is_accepted_only_as_a_well_formed_upgrade() {
        assert!(attach_status(
            b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        )
        .is_ok());
        assert!(attach_status(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n"
        )
        .is_ok());
        let refused = attach_status(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert!(format!("{:#}", refused.unwrap_err()).contains("404 Not Found"));
        // Not HTTP, a status hidden in a header, a head with a bad header line.
        assert!(attach_status(b"SSH-2.0 101\r\n\r\n").is_err());
        assert!(attach_status(b"HTTP/1.1 500 x\r\nX: HTTP/1.1 101\r\n\r\n").is_err());
        assert!(attach_status(b"HTTP/1.1 101 UPGRADED\r\nbad header\r\n\r\n").is_err());
    }
}

//! The wire messages of building and managing images: `urun build`, `urun images`,
//! `urun rmi`, `urun push`. Pure, like the rest of [`crate::wire`].
//!
//! A build connection: the client sends one `Build` frame (a JSON [`BuildRequest`]),
//! then the context as a tar archive in `Context` frames, ended by one empty
//! `ContextEnd` frame; it may send `Signal` frames (an interrupt cancels the build).
//! urund answers with `Stdout` (the builder's output), `Stderr` (check findings and
//! notices) and `Progress` frames, a `Result` frame ([`Outcome::Built`]) when an image
//! was built and tagged, and ends with one `Exit` or `Error` frame. urund counts the
//! context bytes itself against the policy's limit; nothing the client says about
//! the size is trusted.
//!
//! A management connection: one `Manage` frame (a JSON [`Manage`]), answered by
//! `Stdout`/`Stderr`/`Progress` frames, a `Result` frame and `Exit` or `Error`.
#![forbid(unsafe_code)]

use super::{ProtocolError, VERSION};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest number of tags, build arguments or labels in one build request.
pub const MAX_BUILD_ITEMS: usize = 64;

/// What a client asks to build. Everything is a wish; urund decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    pub version: u32,
    /// `-t NAME[:TAG]` as typed, without urund's namespace; urund puts every tag
    /// under `<namespace>/<user>/`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The Dockerfile's name inside the context archive.
    pub dockerfile: String,
    /// `--build-arg NAME=VALUE` (a name alone takes the client's environment value,
    /// resolved by the client).
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// `--target STAGE`.
    #[serde(default)]
    pub target: Option<String>,
    /// `--no-cache`.
    #[serde(default)]
    pub no_cache: bool,
    /// `--pull never`: fail rather than pull a missing base image (the default,
    /// `missing`, pulls only where the policy's pull rules allow).
    #[serde(default)]
    pub never_pull: bool,
    /// `--label KEY=VALUE`; keys under `io.urun.` are refused.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `-q`: no builder output, only the image ID at the end.
    #[serde(default)]
    pub quiet: bool,
}

impl BuildRequest {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a BuildRequest always serialises")
    }

    /// Decodes and bounds-checks a `Build` payload. Pure.
    pub fn decode(payload: &[u8]) -> Result<BuildRequest, ProtocolError> {
        let r: BuildRequest = serde_json::from_slice(payload)
            .map_err(|e| ProtocolError::BadRequest(e.to_string()))?;
        if r.version != VERSION {
            return Err(ProtocolError::Version(r.version));
        }
        let bad = |m: String| Err(ProtocolError::BadRequest(m));
        if r.tags.len() > MAX_BUILD_ITEMS
            || r.build_args.len() > MAX_BUILD_ITEMS
            || r.labels.len() > MAX_BUILD_ITEMS
        {
            return bad(format!(
                "more than {MAX_BUILD_ITEMS} tags, build arguments or labels"
            ));
        }
        let strings = r
            .tags
            .iter()
            .chain(r.build_args.iter().flat_map(|(k, v)| [k, v]))
            .chain(r.labels.iter().flat_map(|(k, v)| [k, v]))
            .chain(r.target.iter())
            .chain(std::iter::once(&r.dockerfile));
        for s in strings {
            if s.len() > super::MAX_STRING || s.contains('\0') {
                return bad("a string is too long or contains NUL".into());
            }
        }
        if r.dockerfile.is_empty() {
            return bad("no Dockerfile name".into());
        }
        Ok(r)
    }
}

/// A management request: one operation on the caller's images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manage {
    pub version: u32,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase", tag = "kind")]
pub enum Op {
    /// `urun images`: what the caller may run; with `registry`, what they promoted.
    Images {
        #[serde(default)]
        registry: bool,
    },
    /// `urun rmi NAME...`: remove the caller's own builds (names as typed).
    Rmi { images: Vec<String> },
    /// `urun push NAME[:TAG]`: promote one of the caller's checked builds.
    Push { image: String },
}

impl Manage {
    pub fn new(op: Op) -> Manage {
        Manage {
            version: VERSION,
            op,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Manage always serialises")
    }

    pub fn decode(payload: &[u8]) -> Result<Manage, ProtocolError> {
        let m: Manage = serde_json::from_slice(payload)
            .map_err(|e| ProtocolError::BadRequest(e.to_string()))?;
        if m.version != VERSION {
            return Err(ProtocolError::Version(m.version));
        }
        let names: &[String] = match &m.op {
            Op::Images { .. } => &[],
            Op::Rmi { images } => images,
            Op::Push { image } => std::slice::from_ref(image),
        };
        if names.len() > MAX_BUILD_ITEMS
            || names
                .iter()
                .any(|s| s.is_empty() || s.len() > super::MAX_STRING || s.contains('\0'))
        {
            return Err(ProtocolError::BadRequest("bad image names".into()));
        }
        Ok(m)
    }
}

/// Helper→client `Result` payload: what a build or management request produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Outcome {
    /// A build: the image ID (`sha256:…`) and its full tags.
    Built { image_id: String, tags: Vec<String> },
    /// `urun images`.
    Images { images: Vec<ImageRow> },
    /// `urun rmi`: the references untagged and the image IDs deleted.
    Removed {
        untagged: Vec<String>,
        deleted: Vec<String>,
    },
    /// `urun push`: the reference pushed and its manifest digest.
    Pushed { reference: String, digest: String },
}

impl Outcome {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an Outcome always serialises")
    }

    pub fn decode(payload: &[u8]) -> Result<Outcome, ProtocolError> {
        serde_json::from_slice(payload).map_err(|e| ProtocolError::BadRequest(e.to_string()))
    }
}

/// One line of `urun images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRow {
    /// `repository:tag`, or `<none>:<none>`.
    pub reference: String,
    pub id: String,
    /// Seconds since the epoch.
    pub created: i64,
    pub size: u64,
    /// Built by the caller through urun (else admitted by `images.allow`).
    pub own: bool,
    /// For `--registry`: the pushed digest.
    #[serde(default)]
    pub digest: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_build_request_round_trips_and_refuses_unknown_fields() {
        let r = BuildRequest {
            version: VERSION,
            tags: vec!["app:1".into()],
            dockerfile: "Dockerfile".into(),
            ..Default::default()
        };
        assert_eq!(BuildRequest::decode(&r.encode()).unwrap(), r);
        let mut v: serde_json::Value = serde_json::from_slice(&r.encode()).unwrap();
        v["uid"] = 0.into();
        assert!(BuildRequest::decode(&serde_json::to_vec(&v).unwrap()).is_err());
        let many = BuildRequest {
            tags: (0..=MAX_BUILD_ITEMS).map(|i| format!("t{i}")).collect(),
            ..r.clone()
        };
        assert!(BuildRequest::decode(&many.encode()).is_err());
    }

    #[test]
    fn a_manage_request_round_trips() {
        for op in [
            Op::Images { registry: true },
            Op::Rmi {
                images: vec!["app:1".into()],
            },
            Op::Push {
                image: "app".into(),
            },
        ] {
            let m = Manage::new(op);
            assert_eq!(Manage::decode(&m.encode()).unwrap(), m);
        }
        assert!(Manage::decode(&Manage::new(Op::Rmi { images: vec![] }).encode()).is_ok());
        assert!(Manage::decode(br#"{"version":1,"op":{"kind":"rmi","images":[""]}}"#).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn decoding_arbitrary_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = BuildRequest::decode(&b);
            let _ = Manage::decode(&b);
            let _ = Outcome::decode(&b);
        }
    }
}

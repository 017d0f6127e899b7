//! urun: run Docker containers as yourself on a shared host, without the
//! root-equivalent `docker` group.
//!
//! The folders are the architecture (see README's "Layout"):
//! - [`wire`]: the protocol between urun and urund (pure);
//! - [`policy`]: the decision core: the policy file's model, the judge, the
//!   forced-settings table, identity files, mount rules, image references, the
//!   Dockerfile checks (pure: no I/O, no `unsafe`);
//! - [`system`]: the OS boundary (peer credentials, sockets, descriptor passing, the
//!   pinned mounts, the user database): the only `unsafe`;
//! - [`engine`]: the only code that talks to Docker;
//! - [`daemon`]: urund (serving, relaying, audit, clean-up, `urund check`);
//! - [`client`]: urun (CLI, terminal, signals, the build context); never touches
//!   Docker.

// `unsafe` only at the OS boundary, and every block says why it is sound.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod client;
pub mod daemon;
pub mod engine;
pub mod policy;
#[allow(unsafe_code)]
pub mod system;
pub mod wire;

/// Where urund listens and urun connects unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/urun/urun.sock";

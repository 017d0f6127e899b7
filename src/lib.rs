//! urun: run Docker containers as yourself on a shared host, without the
//! root-equivalent `docker` group.
//!
//! Module names follow the trust boundary:
//! - pure, no I/O: [`protocol`] (wire format), [`policy`] (admin file), [`judge`]
//!   (decision), [`forced`] (the forced-settings table → container config),
//!   [`audit`] (record format), [`identity`] (passwd/group inside, groups passed),
//!   [`mounts`] (the working-directory mount's rules), [`image`] (image references
//!   and what an image resolved to), [`connections`] (which connections urund takes
//!   at `accept`);
//! - OS boundary: [`system`] (kernel identity, user database, socket; the only
//!   `unsafe`), [`engine`] (the only code that talks to Docker);
//! - what urund may clean up: [`instance`] (its lock, its marked runtime directory,
//!   the secret that labels its containers), [`janitor`] (removals retried until they
//!   succeed, and the reconcile pass);
//! - programs: [`server`] (urund), [`client`] (urun, never touches Docker), [`cli`],
//!   [`check`] (`urund check`: policy and host audit).

pub mod audit;
pub mod check;
pub mod cli;
pub mod client;
pub mod connections;
pub mod context;
pub mod dockerfile;
pub mod engine;
pub mod forced;
pub mod identity;
pub mod image;
pub mod instance;
pub mod janitor;
pub mod judge;
pub mod mounts;
pub mod policy;
pub mod protocol;
pub mod server;
pub mod system;

/// Where urund listens and urun connects unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/urun/urun.sock";

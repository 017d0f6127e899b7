//! The decision core, pure: what the administrator's policy says ([`model`]), whether a
//! request may run ([`judge`]), the container configuration every run gets whatever
//! the request says ([`forced`]), who the caller is inside ([`identity`]), the rules of
//! the working-directory mount ([`mounts`]), image references ([`reference`]) and the
//! static checks of a Dockerfile ([`dockerfile`]). Nothing here reads or writes
//! anything: urund gathers the facts and carries out the decisions.
#![forbid(unsafe_code)]

pub mod admission;
pub mod build;
pub mod buildcontext;
pub mod caller;
pub mod dockerfile;
pub mod forced;
pub mod identity;
pub mod imagecheck;
pub mod imagepattern;
pub mod judge;
pub mod model;
pub mod mounts;
pub mod names;
pub mod reference;
pub mod rule;
pub mod runtime;
pub mod units;

pub use caller::Caller;
pub use model::*;

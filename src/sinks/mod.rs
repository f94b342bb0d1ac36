//! The sinks: where routed messages leave Relais (GP notification, MSSanté mail, DMP feed).
//!
//! Building blocks, each usable and tested on its own:
//!
//! - [`retry`]: the outcome of an attempt, classification (transient / permanent) and the retry policy.
//! - [`ebrim`]: XDS metadata as an ebRIM `SubmitObjectsRequest` (shared by XDM and ITI-41).
//! - [`xdm`]: the `IHE_XDM.ZIP` package for MSSanté mail.

pub mod directory;
pub mod ebrim;
pub mod iti41;
pub mod ledger;
pub mod mail;
pub mod notify;
pub mod retry;
pub mod tls;
pub mod xdm;

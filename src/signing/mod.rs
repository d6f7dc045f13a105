//! Signed senders (CONTRACT §8): checking a delivery's signature, naming its event type and
//! delivery id, filtering by event type, and keeping pipelines' secrets sealed at rest.
//!
//! Many senders sign each delivery with a secret they share with the receiver, name what
//! happened, and deliver again when unsure. The edge checks signatures to answer 401 early, the
//! writer checks them again before anything reaches `events`, and `rejected replay` checks them a
//! third time; all three call this one pure module, so they cannot disagree.
//!
//! Invariants:
//! - MACs are compared in constant time, as bytes, after decoding the sender's signature.
//! - Time windows are measured from the moment the gateway *accepted* the request (kept in the
//!   log), never from "now": a check repeated later gives the same answer.
//! - No secret, signature or key appears in `Debug` output or in an error message.
//! - Nothing here panics on input; the only I/O is reading the secrets key file.

pub(crate) mod codec;
pub mod describe;
pub mod filter;
pub mod scheme;
pub mod secrets;
pub mod verify;

pub use describe::{describe, slack_challenge, Described};
pub use filter::{EventFilter, FilterError};
pub use scheme::{Algorithm, Encoding, HmacOptions, Locator, Scheme, SchemeError};
pub use secrets::{KeyError, SecretsKey};
pub use verify::{sign_standard, verify, Secret, SignatureError};

//! The edge's checks, turning untrusted query parameters and bodies into typed values.
//!
//! Parse, don't validate: once a request has become a [`Credentials`] and a checked body, nothing
//! downstream looks at the raw strings again. The order of the checks is the contract's
//! (CONTRACT §1) and lives in one place, [`params::parse_query`] then [`body::check_body_as`].
//! [`encoding`] removes a body's `Content-Encoding` before it is checked.

pub mod body;
pub mod encoding;
pub mod headers;
pub mod params;
pub mod request;

pub use body::{check_body, check_body_as, stored_body, BodyError, BodyForm};
pub use encoding::{BodyDecoder, ContentCoding, DecodeError, UnsupportedEncoding};
pub use headers::Headers;
pub use params::{parse_query, Credentials, Key, ParamError, PipelineId, Token, TokenHash};
pub use request::{AcceptedAt, RequestId};

//! Every answer the edge gives, with its status and error code in one table (CONTRACT §1).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

use crate::events;
use crate::ingest::params::Param;
use crate::ingest::{AcceptedAt, BodyError, ParamError, RequestId};

/// Why a request was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Params(ParamError),
    Body(BodyError),
    MethodNotAllowed,
    PayloadTooLarge,
    /// A `Content-Encoding` other than gzip, deflate or identity, or several (CONTRACT §8).
    UnsupportedEncoding,
    /// The request's headers, as the log keeps them, are over `wal::record::MAX_HEADERS_LEN`.
    HeadersTooLarge,
    /// The pipeline verifies its sender's signatures, and this request's is missing, wrong or
    /// outside its time window (CONTRACT §8).
    InvalidSignature,
    /// The body did not arrive within `HOOKHOUSE_BODY_TIMEOUT_SECS`.
    BodyTimeout,
    RateLimited {
        retry_after_secs: u64,
    },
    /// Over the disk budget, a failing disk, too many requests in flight, or shutting down.
    Unavailable {
        retry_after_secs: u64,
    },
    NotFound,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Params(_) | Refusal::Body(_) => StatusCode::BAD_REQUEST,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::InvalidSignature => StatusCode::UNAUTHORIZED,
            Refusal::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// The `error` field of the answer.
    pub fn code(self) -> &'static str {
        use ParamError::*;
        match self {
            Refusal::Params(NoParameters) => "NO_PARAMETERS_PROVIDED",
            Refusal::Params(Missing(Param::PipelineId)) => "MISSING_PARAMETER: pipeline_id",
            Refusal::Params(Missing(Param::Key)) => "MISSING_PARAMETER: key",
            Refusal::Params(Missing(Param::Token)) => "MISSING_PARAMETER: token",
            Refusal::Params(Invalid(Param::PipelineId)) => "INVALID_PARAMETER: pipeline_id",
            Refusal::Params(Invalid(Param::Key)) => "INVALID_PARAMETER: key",
            Refusal::Params(Invalid(Param::Token)) => "INVALID_PARAMETER: token",
            Refusal::Body(BodyError::Empty) => "NO_BODY_PROVIDED",
            Refusal::Body(BodyError::Invalid) => "INVALID_BODY",
            Refusal::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Refusal::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Refusal::UnsupportedEncoding => "UNSUPPORTED_ENCODING",
            Refusal::InvalidSignature => "INVALID_SIGNATURE",
            Refusal::HeadersTooLarge => "HEADERS_TOO_LARGE",
            Refusal::BodyTimeout => "REQUEST_TIMEOUT",
            Refusal::RateLimited { .. } => "RATE_LIMITED",
            Refusal::Unavailable { .. } => "SERVICE_UNAVAILABLE",
            Refusal::NotFound => "NOT_FOUND",
        }
    }

    pub fn response(self) -> HttpResponse {
        events::http::answered(self.status().as_u16(), Some(self.code()));
        let mut builder = HttpResponse::build(self.status());
        match self {
            Refusal::MethodNotAllowed => {
                builder.insert_header((header::ALLOW, HeaderValue::from_static("POST")));
            }
            Refusal::RateLimited { retry_after_secs }
            | Refusal::Unavailable { retry_after_secs } => {
                builder.insert_header((header::RETRY_AFTER, retry_after_secs.max(1)));
            }
            // The rest of a slow or oversized body, or of one refused unread, is not worth
            // waiting for.
            Refusal::BodyTimeout
            | Refusal::PayloadTooLarge
            | Refusal::UnsupportedEncoding
            | Refusal::HeadersTooLarge => {
                builder.force_close();
            }
            _ => {}
        }
        builder.json(Failure {
            success: false,
            error: self.code(),
        })
    }
}

#[derive(Serialize)]
struct Failure {
    success: bool,
    error: &'static str,
}

#[derive(Serialize)]
struct Success<'a> {
    success: bool,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    __kdd_request_id: &'a str,
    __kdd_request_unix_timestamp: f64,
}

/// The 200 answer: Kondado's shape, with the id and timestamp the row will carry.
pub fn accepted(request_id: &RequestId, accepted_at: AcceptedAt) -> HttpResponse {
    events::http::answered(200, None);
    HttpResponse::Ok().json(Success {
        success: true,
        data: Data {
            __kdd_request_id: request_id.as_str(),
            __kdd_request_unix_timestamp: accepted_at.secs(),
        },
    })
}

/// Slack's `url_verification`: its challenge, echoed (CONTRACT §8).
pub fn challenge(challenge: &str) -> HttpResponse {
    events::http::answered(200, None);
    HttpResponse::Ok().json(serde_json::json!({ "challenge": challenge }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_contracts() {
        assert_eq!(
            Refusal::Params(ParamError::Missing(Param::Key)).code(),
            "MISSING_PARAMETER: key"
        );
        assert_eq!(
            Refusal::Params(ParamError::Invalid(Param::Token)).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(Refusal::MethodNotAllowed.status().as_u16(), 405);
        assert_eq!(Refusal::PayloadTooLarge.status().as_u16(), 413);
        assert_eq!(
            (
                Refusal::UnsupportedEncoding.status().as_u16(),
                Refusal::UnsupportedEncoding.code()
            ),
            (415, "UNSUPPORTED_ENCODING")
        );
        assert_eq!(
            (
                Refusal::HeadersTooLarge.status().as_u16(),
                Refusal::HeadersTooLarge.code()
            ),
            (431, "HEADERS_TOO_LARGE")
        );
        assert_eq!(
            Refusal::RateLimited {
                retry_after_secs: 1
            }
            .status()
            .as_u16(),
            429
        );
        assert_eq!(
            Refusal::Unavailable {
                retry_after_secs: 1
            }
            .status()
            .as_u16(),
            503
        );
    }
}

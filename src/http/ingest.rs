//! `POST /?pipeline_id=…&key=…&token=…`: check, log durably, answer.
//!
//! The order is the contract's: a declared length over the limit may be refused first; then the
//! parameters; then the request's headers and `Content-Encoding`; then the body, read (and
//! decoded) with a size cap on the decoded bytes and a deadline; then, for a pipeline whose
//! signing settings the gateway has loaded, the signature (401); and only a request that passed
//! every check is appended to the log. The 200 is sent after the log says the record is durable.

use actix_web::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use super::answer::{self, Refusal};
use super::AppState;
use crate::credentials::Signing;
use crate::events;
use crate::ingest::body::is_form_content_type;
use crate::ingest::stored_body;
use crate::ingest::{
    check_body_as, parse_query, AcceptedAt, BodyDecoder, BodyError, ContentCoding, Credentials,
    DecodeError, Headers, RequestId, TokenHash,
};
use crate::signing::{self, Scheme};
use crate::wal::record::MAX_HEADERS_LEN;
use crate::wal::{AppendError, NewRecord};

/// What a client is told to wait before trying again after a 503.
const RETRY_AFTER_SECS: u64 = 1;

pub async fn ingest(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    match accept(&req, &mut payload, &state).await {
        Ok(Accepted::Logged(request_id, accepted_at)) => answer::accepted(&request_id, accepted_at),
        Ok(Accepted::Challenge(challenge)) => answer::challenge(&challenge),
        Err(refusal) => refusal.response(),
    }
}

pub async fn method_not_allowed() -> HttpResponse {
    Refusal::MethodNotAllowed.response()
}

pub async fn not_found() -> HttpResponse {
    Refusal::NotFound.response()
}

/// What became of a request that was not refused.
enum Accepted {
    /// In the log, durably.
    Logged(RequestId, AcceptedAt),
    /// Slack's URL check, correctly signed: answered with its challenge, and not logged.
    Challenge(String),
}

async fn accept(
    req: &HttpRequest,
    payload: &mut web::Payload,
    state: &AppState,
) -> Result<Accepted, Refusal> {
    let unavailable = Refusal::Unavailable {
        retry_after_secs: RETRY_AFTER_SECS,
    };
    if state.health.is_shutting_down() {
        return Err(unavailable);
    }
    let Head {
        credentials,
        token_hash,
        parsed_headers,
        headers,
        coding,
    } = check_head(req, state)?;
    // Held until the log has answered: bound the requests, and the body bytes, in flight.
    let permit = state
        .inflight
        .clone()
        .try_acquire_owned()
        .map_err(|_| unavailable)?;
    let (body, bytes_permit) = read_body(payload, state, coding).await?;
    events::http::body_received(body.len());
    let form = check_body_as(&body, declared_form(req)).map_err(Refusal::Body)?;
    let accepted_at = AcceptedAt::now();
    let view = state.credentials.current();
    if let Some(Signing::On(verification)) = view
        .pipeline(credentials.pipeline_id.get())
        .map(|pipeline| &pipeline.signing)
    {
        // Over the body as sent (decoded, before a form is unwrapped: what senders sign), at
        // the acceptance time the record keeps, so the writer's check agrees with this one.
        let (scheme, pipeline) = (&verification.scheme, credentials.pipeline_id.get());
        if let Err(why) = signing::verify(
            scheme,
            &verification.secrets,
            &parsed_headers,
            &body,
            accepted_at.secs(),
        ) {
            events::http::signature_refused(pipeline, scheme.name(), &why);
            return Err(Refusal::InvalidSignature);
        }
        if *scheme == Scheme::Slack {
            if let Some(challenge) = signing::slack_challenge(&stored_body(&body, form)) {
                events::http::challenge_answered(pipeline);
                return Ok(Accepted::Challenge(challenge));
            }
        }
    }
    let record = NewRecord {
        accepted_at,
        request_id: RequestId::generate(),
        pipeline_id: credentials.pipeline_id,
        key: credentials.key,
        token_hash,
        headers,
        form,
        body,
    };
    let (request_id, accepted_at, body_len) =
        (record.request_id, record.accepted_at, record.body.len());
    // The permits go with the record: they are released once it has left the log's queue, not
    // when this handler ends (a sender that hangs up must not free memory still held there).
    let held: crate::wal::Held = Some(Box::new((permit, bytes_permit)));
    match state.wal.append_holding(record, held).await {
        Ok(_seq) => {
            events::http::accepted(request_id.as_str(), credentials.pipeline_id.get(), body_len);
            Ok(Accepted::Logged(request_id, accepted_at))
        }
        Err(error) => {
            events::http::append_failed(request_id.as_str(), &error);
            let retry_after_secs = match error {
                AppendError::OverBudget => 5,
                AppendError::Io | AppendError::Closed => RETRY_AFTER_SECS,
            };
            Err(Refusal::Unavailable { retry_after_secs })
        }
    }
}

/// What the request says before its body: checked, and refused, before a body byte is read.
struct Head {
    credentials: Credentials,
    token_hash: TokenHash,
    /// The headers, for checking a signature.
    parsed_headers: Headers,
    /// The headers as the log keeps them ([`Headers::to_json`]).
    headers: String,
    coding: ContentCoding,
}

fn check_head(req: &HttpRequest, state: &AppState) -> Result<Head, Refusal> {
    // Without a coding, the declared length is the decoded length: refuse it unread. With one,
    // only the decoded bytes count, and they are counted as they come.
    let coding = content_coding(req);
    let declared = declared_length(req);
    if coding == Ok(ContentCoding::Identity)
        && declared.is_some_and(|len| len > state.max_body_bytes as u64)
    {
        return Err(Refusal::PayloadTooLarge);
    }
    let credentials = parse_query(req.query_string()).map_err(Refusal::Params)?;
    let token_hash = credentials.token.hash();
    if let Some(limiter) = &state.rate_limiter {
        let verdict = state.credentials.verdict(&credentials.key, &token_hash);
        limiter.check(&credentials.key, verdict)?;
    }
    // Refused rather than trimmed: a signature or event header cut off would fail later and
    // less clearly, and no sender needs 64 KiB of headers.
    let parsed_headers = Headers::from_http(req.headers());
    let headers = parsed_headers.to_json();
    if headers.len() > MAX_HEADERS_LEN {
        return Err(Refusal::HeadersTooLarge);
    }
    let coding = coding.map_err(|_| Refusal::UnsupportedEncoding)?;
    Ok(Head {
        credentials,
        token_hash,
        parsed_headers,
        headers,
        coding,
    })
}

fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The body's coding; an unknown or stacked one is refused (415) once the parameters passed.
fn content_coding(req: &HttpRequest) -> Result<ContentCoding, crate::ingest::UnsupportedEncoding> {
    ContentCoding::from_header_values(
        req.headers()
            .get_all(CONTENT_ENCODING)
            .map(|value| value.as_bytes()),
    )
}

/// Whether the sender called the body a form: only then may a non-JSON body be one.
fn declared_form(req: &HttpRequest) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| is_form_content_type(value.as_bytes()))
}

/// Reads the whole body, decoding its `coding`, refusing it as soon as it passes
/// `max_body_bytes` (decoded) or the body timeout passes, or as soon as it would take the bytes
/// held by all requests in flight past their budget (503 at once: memory stays bounded however
/// many senders upload at the same time).
///
/// Memory is taken as bytes arrive, never from the declared `Content-Length`: a sender that
/// declares 10 MiB and sends nothing holds nothing.
async fn read_body(
    payload: &mut web::Payload,
    state: &AppState,
    coding: ContentCoding,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Refusal> {
    let read = async {
        match BodyDecoder::new(coding, state.max_body_bytes) {
            None => read_plain(payload, state).await,
            Some(decoder) => read_decoded(payload, state, decoder).await,
        }
    };
    tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| Refusal::BodyTimeout)?
}

/// A body without a coding, the common case: its chunks are gathered as they are.
async fn read_plain(
    payload: &mut web::Payload,
    state: &AppState,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Refusal> {
    let limit = state.max_body_bytes;
    let mut body = BytesMut::new();
    let mut held = InflightBytes::new(state);
    while let Some(chunk) = payload.next().await {
        // A broken or truncated stream: the body as sent is not a JSON text we have.
        let chunk = chunk.map_err(|_| Refusal::Body(BodyError::Invalid))?;
        if body.len() + chunk.len() > limit {
            return Err(Refusal::PayloadTooLarge);
        }
        if !held.take(chunk.len()) {
            return Err(held.exhausted());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), held.permit))
}

/// A body with a coding: each chunk is decoded as it arrives into a buffer that never passes
/// the limit, paid for from the budget before it grows (see [`crate::ingest::encoding`]).
async fn read_decoded(
    payload: &mut web::Payload,
    state: &AppState,
    mut decoder: BodyDecoder,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Refusal> {
    let mut held = InflightBytes::new(state);
    let refusal = |error: DecodeError, held: &InflightBytes| match error {
        DecodeError::TooLarge => Refusal::PayloadTooLarge,
        DecodeError::Invalid => Refusal::Body(BodyError::Invalid),
        DecodeError::OverBudget => held.exhausted(),
    };
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| Refusal::Body(BodyError::Invalid))?;
        decoder
            .feed(&chunk, &mut |n| held.take(n))
            .map_err(|error| refusal(error, &held))?;
    }
    let body = decoder
        .finish(&mut |n| held.take(n))
        .map_err(|error| refusal(error, &held))?;
    Ok((Bytes::from(body), held.permit))
}

/// The permits for the body bytes one request holds, taken as they are needed.
struct InflightBytes<'a> {
    state: &'a AppState,
    permit: Option<OwnedSemaphorePermit>,
}

impl<'a> InflightBytes<'a> {
    fn new(state: &'a AppState) -> Self {
        InflightBytes {
            state,
            permit: None,
        }
    }

    /// Takes `n` more bytes of the budget; `false` if the budget has not that many left.
    fn take(&mut self, n: usize) -> bool {
        let Ok(n) = u32::try_from(n) else {
            return false;
        };
        let Ok(more) = self.state.inflight_bytes.clone().try_acquire_many_owned(n) else {
            return false;
        };
        match &mut self.permit {
            Some(permit) => permit.merge(more),
            None => self.permit = Some(more),
        }
        true
    }

    fn exhausted(&self) -> Refusal {
        events::http::inflight_bytes_exhausted();
        Refusal::Unavailable {
            retry_after_secs: RETRY_AFTER_SECS,
        }
    }
}

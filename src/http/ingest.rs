//! `POST /?pipeline_id=…&key=…&token=…`: check, log durably, answer.
//!
//! The order is the contract's: a declared length over the limit may be refused first; then the
//! parameters; then the body, read with a size cap and a deadline; and only a request that passed
//! every check is appended to the log. The 200 is sent after the log says the record is durable.

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use super::answer::{self, Refusal};
use super::AppState;
use crate::events;
use crate::ingest::{check_body, parse_query, AcceptedAt, RequestId};
use crate::wal::{AppendError, NewRecord};

/// What a client is told to wait before trying again after a 503.
const RETRY_AFTER_SECS: u64 = 1;

pub async fn ingest(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    match accept(&req, &mut payload, &state).await {
        Ok((request_id, accepted_at)) => answer::accepted(&request_id, accepted_at),
        Err(refusal) => refusal.response(),
    }
}

pub async fn method_not_allowed() -> HttpResponse {
    Refusal::MethodNotAllowed.response()
}

pub async fn not_found() -> HttpResponse {
    Refusal::NotFound.response()
}

async fn accept(
    req: &HttpRequest,
    payload: &mut web::Payload,
    state: &AppState,
) -> Result<(RequestId, AcceptedAt), Refusal> {
    let unavailable = Refusal::Unavailable {
        retry_after_secs: RETRY_AFTER_SECS,
    };
    if state.health.is_shutting_down() {
        return Err(unavailable);
    }
    let declared = declared_length(req);
    if declared.is_some_and(|len| len > state.max_body_bytes as u64) {
        return Err(Refusal::PayloadTooLarge);
    }
    let credentials = parse_query(req.query_string()).map_err(Refusal::Params)?;
    let token_hash = credentials.token.hash();
    if let Some(limiter) = &state.rate_limiter {
        let verdict = state.credentials.verdict(&credentials.key, &token_hash);
        limiter.check(&credentials.key, verdict)?;
    }
    // Held until the log has answered: bound the requests, and the body bytes, in flight.
    let permit = state
        .inflight
        .clone()
        .try_acquire_owned()
        .map_err(|_| unavailable)?;
    let (body, bytes_permit) = read_body(payload, state).await?;
    events::http::body_received(body.len());
    check_body(&body).map_err(Refusal::Body)?;
    let record = NewRecord {
        accepted_at: AcceptedAt::now(),
        request_id: RequestId::generate(),
        pipeline_id: credentials.pipeline_id,
        key: credentials.key,
        token_hash,
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
            Ok((request_id, accepted_at))
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

fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads the whole body, refusing it as soon as it passes `max_body_bytes` or the body timeout
/// passes, or as soon as it would take the bytes held by all requests in flight past their
/// budget (503 at once: memory stays bounded however many senders upload at the same time).
///
/// Memory is taken as bytes arrive, never from the declared `Content-Length`: a sender that
/// declares 10 MiB and sends nothing holds nothing.
async fn read_body(
    payload: &mut web::Payload,
    state: &AppState,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Refusal> {
    let limit = state.max_body_bytes;
    let read = async {
        let mut body = BytesMut::new();
        let mut held: Option<OwnedSemaphorePermit> = None;
        while let Some(chunk) = payload.next().await {
            // A broken or truncated stream: the body as sent is not a JSON text we have.
            let chunk = chunk.map_err(|_| Refusal::Body(crate::ingest::BodyError::Invalid))?;
            if body.len() + chunk.len() > limit {
                return Err(Refusal::PayloadTooLarge);
            }
            let more = state
                .inflight_bytes
                .clone()
                .try_acquire_many_owned(chunk.len() as u32)
                .map_err(|_| {
                    events::http::inflight_bytes_exhausted();
                    Refusal::Unavailable {
                        retry_after_secs: RETRY_AFTER_SECS,
                    }
                })?;
            match &mut held {
                Some(permit) => permit.merge(more),
                None => held = Some(more),
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body.freeze(), held))
    };
    tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| Refusal::BodyTimeout)?
}

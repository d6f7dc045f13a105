//! `bare`: the benchmark baseline, an actix-web endpoint that answers and does nothing else.
//!
//! `bench/run.sh` drives this and the gateway with the same load and reports the gateway's
//! throughput as a ratio of this one's. To keep that ratio honest, everything the gateway does
//! that is not its job (the durable path: validate, log, fsync) is done here the same way:
//! the same HTTP server and worker count (one per core), the whole body read from the stream, and
//! a 200 of the same shape, size and `Content-Type`, serialized with serde_json per request.
//! What it leaves out is exactly what is measured: parameter and JSON checks, the write-ahead
//! log and its group commit, and the metrics.
//!
//! Every POST to any path is answered 200, whatever its query or body; other methods get 405.
//! It listens on `--listen ADDR`, else `HOOKHOUSE_BARE_LISTEN`, else `127.0.0.1:8090`.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::Method;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::BytesMut;
use clap::Parser;
use futures_util::StreamExt;
use serde::Serialize;

/// The gateway's default body limit (`HOOKHOUSE_MAX_BODY_BYTES`): a baseline must not buffer
/// without bound either.
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// A stand-in for the gateway's random `__kdd_request_id`: 20 lowercase letters, so the answer
/// has the same size.
const REQUEST_ID: &str = "benchbaselinerequest";

#[derive(Parser)]
#[command(about = "Benchmark baseline: answers every POST like hookhouse and does nothing else")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "HOOKHOUSE_BARE_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
}

#[derive(Serialize)]
struct Success {
    success: bool,
    data: Data,
}

#[derive(Serialize)]
struct Data {
    __kdd_request_id: &'static str,
    __kdd_request_unix_timestamp: f64,
}

#[derive(Serialize)]
struct Failure {
    success: bool,
    error: &'static str,
}

async fn answer(req: HttpRequest, mut payload: web::Payload) -> HttpResponse {
    if req.method() != Method::POST {
        return HttpResponse::MethodNotAllowed()
            .insert_header(("Allow", "POST"))
            .json(Failure {
                success: false,
                error: "METHOD_NOT_ALLOWED",
            });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return HttpResponse::BadRequest().json(Failure {
                success: false,
                error: "INVALID_BODY",
            });
        };
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return HttpResponse::PayloadTooLarge().json(Failure {
                success: false,
                error: "PAYLOAD_TOO_LARGE",
            });
        }
        body.extend_from_slice(&chunk);
    }
    // Same clock read and precision as the gateway's `AcceptedAt::now()`.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    HttpResponse::Ok().json(Success {
        success: true,
        data: Data {
            __kdd_request_id: REQUEST_ID,
            __kdd_request_unix_timestamp: now.as_nanos() as f64 / 1e9,
        },
    })
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    // The gateway's worker count, so both get the same share of the machine.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    eprintln!("bare: listening on {} with {workers} workers", args.listen);
    HttpServer::new(|| App::new().default_service(web::to(answer)))
        .workers(workers)
        .bind(args.listen)?
        .run()
        .await
}

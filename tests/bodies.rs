//! Bodies at the edge (CONTRACT §8, "Bodies"), against a real ClickHouse and a gateway on
//! port 0: `Content-Encoding` removed before every check, with the size limit on the decoded
//! bytes; GitHub's form-encoded delivery stored as its JSON; headers kept in the log, never the
//! credential ones.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;
const FORM: &str = "application/x-www-form-urlencoded";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("compress");
    encoder.finish().expect("compress")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("compress");
    encoder.finish().expect("compress")
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("compress");
    encoder.finish().expect("compress")
}

/// A valid gzip body of `mib` MiB of zeros without compressing them all: one MiB compressed
/// with a full flush (no history carried over), repeated, a final empty block, and a trailer
/// whose CRC is combined rather than computed.
fn gzip_zeros(mib: usize) -> Vec<u8> {
    use flate2::{Compress, Crc, FlushCompress};
    let zeros = vec![0u8; MIB];
    let mut compress = Compress::new(Compression::best(), false);
    let mut piece = Vec::with_capacity(64 * 1024);
    compress
        .compress_vec(&zeros, &mut piece, FlushCompress::Full)
        .expect("compress");
    assert_eq!(compress.total_in(), MIB as u64);
    let mut one = Crc::new();
    one.update(&zeros);
    let mut crc = Crc::new();
    let mut wire = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for _ in 0..mib {
        wire.extend_from_slice(&piece);
        crc.combine(&one);
    }
    wire.extend_from_slice(&[0x03, 0x00]);
    wire.extend_from_slice(&crc.sum().to_le_bytes());
    wire.extend_from_slice(&((mib * MIB) as u32).to_le_bytes());
    wire
}

/// Posts `body` with `headers`.
async fn send(url: &str, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> Answer {
    let mut request = reqwest::Client::new().post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request.send().await.expect("gateway answers")).await
}

/// Posts over a plain socket, writing the body while reading the answer: a gateway that
/// refuses a body half-way answers and closes, and an HTTP client still uploading would see
/// the reset rather than the answer. Returns the status and the answer's body.
async fn send_raw(
    port: u16,
    query: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let mut head = format!(
        "POST /{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let upload = tokio::spawn(async move {
        // The gateway may stop reading and close: errors here are expected.
        if write.write_all(head.as_bytes()).await.is_ok() {
            let _ = write.write_all(&body).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        if complete_response(&answer) {
            break;
        }
    }
    upload.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// Whether `answer` holds a whole response with a `content-length` body.
fn complete_response(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .is_some_and(|len| body.len() >= len)
}

/// The stored body of `request_id` in `events`, once it has landed.
async fn landed_body(ch: &ClickhouseServer, request_id: &str) -> Vec<u8> {
    let sql = format!(
        "SELECT hex(__kdd_request_body) FROM hookhouse.events \
         WHERE __kdd_request_id = '{request_id}' FORMAT TabSeparated"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut found = ch.query(&sql).await;
    while found.trim().is_empty() {
        assert!(Instant::now() < deadline, "{request_id} did not land");
        tokio::time::sleep(Duration::from_millis(50)).await;
        found = ch.query(&sql).await;
    }
    let rows: Vec<&str> = found.lines().collect();
    assert_eq!(rows.len(), 1, "{request_id} landed {} times", rows.len());
    hex::decode(rows[0]).expect("hex from ClickHouse")
}

async fn count_events(ch: &ClickhouseServer) -> u64 {
    ch.count("SELECT count() FROM hookhouse.events").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_bodies_land_decoded_byte_for_byte() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "encoded").await;
    let gw = Gateway::start(&ch, |_| {}).await;
    let url = gw.url(&creds.query());
    let json = "{\"emoji\":\"😀\",\"accents\":\"ção\",\"list\":[1, 2.5, null],\"s\":\"a\\nb\"}";
    let big = format!("[\"{}\"]", "abc".repeat(300_000)); // ~900 KiB, a few KiB gzipped
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("gzip", gzip(json.as_bytes()), json),
        ("x-gzip", gzip(json.as_bytes()), json),
        ("GZip", gzip(big.as_bytes()), &big),
        ("deflate", zlib(json.as_bytes()), json),
        ("deflate", raw_deflate(json.as_bytes()), json),
        ("deflate", zlib(big.as_bytes()), &big),
        ("identity", json.as_bytes().to_vec(), json),
    ];
    for (coding, wire, sent) in cases {
        let answer = send(&url, &[("content-encoding", coding)], wire).await;
        assert_eq!(answer.status, 200, "{coding}: {answer:?}");
        let stored = landed_body(&ch, answer.request_id()).await;
        assert!(stored == sent.as_bytes(), "{coding}: stored body differs");
    }
}

/// actix decodes bodies for its `Bytes`/`Json` extractors, not for `web::Payload`: the gateway
/// decodes once, itself. A body gzipped twice but declared once is gzip inside: not JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_is_decoded_exactly_once() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "once").await;
    let gw = Gateway::start(&ch, |_| {}).await;
    let url = gw.url(&creds.query());
    let twice = gzip(&gzip(b"{\"a\":1}"));
    let answer = send(&url, &[("content-encoding", "gzip")], twice).await;
    assert_eq!((answer.status, answer.error()), (400, "INVALID_BODY"));
    // And a JSON body declared gzip is not taken as JSON.
    let answer = send(&url, &[("content-encoding", "gzip")], "{\"a\":1}").await;
    assert_eq!((answer.status, answer.error()), (400, "INVALID_BODY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_is_413_without_holding_more_than_the_limit() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "bomb").await;
    let limit = 10 * MIB;
    // A budget of the limit and one byte: any request that held more than that would be
    // refused 503 instead of 413.
    let gw = Gateway::start(&ch, |s| {
        s.max_body_bytes = limit as u64;
        s.max_inflight_bytes = limit as u64 + 1;
    })
    .await;
    let query = creds.query();
    let bomb = gzip(&vec![0u8; limit + 1]);
    assert!(bomb.len() < 32 * 1024, "{} bytes on the wire", bomb.len());
    let started = Instant::now();
    let gz = [("content-encoding", "gzip")];
    let (status, body) = send_raw(gw.port, &query, &gz, bomb).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body, r#"{"success":false,"error":"PAYLOAD_TOO_LARGE"}"#);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered quickly"
    );
    // A declared length far over the limit is not refused for a compressed body: only the
    // decoded bytes count. Exactly the limit, decoded, is accepted.
    let at_limit = format!("\"{}\"", "a".repeat(limit - 2));
    let answer = send(&gw.url(&query), &gz, gzip(at_limit.as_bytes())).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let stored = landed_body(&ch, answer.request_id()).await;
    assert_eq!(stored.len(), limit);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count_events(&ch).await, 1, "nothing of the bomb landed");
    assert_eq!(ch.count("SELECT count() FROM hookhouse.rejected").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_bomb_is_refused_in_bounded_time() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "gigabomb").await;
    let gw = Gateway::start(&ch, |_| {}).await; // the default 10 MiB limit
    let bomb = gzip_zeros(1024);
    assert!(bomb.len() < 2 * MIB, "{} bytes on the wire", bomb.len());
    for coding in ["gzip", "x-gzip"] {
        let started = Instant::now();
        let (status, body) = send_raw(
            gw.port,
            &creds.query(),
            &[("content-encoding", coding)],
            bomb.clone(),
        )
        .await;
        assert_eq!(
            (status, body.contains("PAYLOAD_TOO_LARGE")),
            (413, true),
            "{body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    }
    let answer = send(&gw.url(&creds.query()), &[], "{\"after\":\"bomb\"}").await;
    assert_eq!(answer.status, 200, "the gateway serves on");
    landed_body(&ch, answer.request_id()).await;
    assert_eq!(count_events(&ch).await, 1, "nothing of the bombs landed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_encodings_get_415() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "encodings").await;
    let gw = Gateway::start(&ch, |_| {}).await;
    let query = creds.query();
    let body = gzip(b"{}");
    for headers in [
        &[("content-encoding", "br")][..],
        &[("content-encoding", "compress")],
        &[("content-encoding", "zstd")],
        &[("content-encoding", "gzip, deflate")],
        &[("content-encoding", "gzip"), ("content-encoding", "gzip")],
    ] {
        let (status, answer) = send_raw(gw.port, &query, headers, body.clone()).await;
        assert_eq!(status, 415, "{headers:?}");
        assert_eq!(
            answer,
            r#"{"success":false,"error":"UNSUPPORTED_ENCODING"}"#
        );
    }
    // The parameters are checked first, as for every body check.
    let answer = send(&gw.url(""), &[("content-encoding", "br")], "{}").await;
    assert_eq!(answer.error(), "NO_PARAMETERS_PROVIDED");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count_events(&ch).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_streams_get_400_invalid_body() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "broken").await;
    let gw = Gateway::start(&ch, |_| {}).await;
    let url = gw.url(&creds.query());
    let json = br#"{"event":"cut short"}"#;
    let gz = gzip(json);
    let mut bad_crc = gz.clone();
    let at = bad_crc.len() - 8;
    bad_crc[at] ^= 0xff;
    let z = zlib(json);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("gzip", gz[..gz.len() - 4].to_vec()),
        ("gzip", gz[..gz.len() / 2].to_vec()),
        ("gzip", bad_crc),
        ("gzip", [&gz[..], b"trailing"].concat()),
        ("gzip", b"not gzip at all".to_vec()),
        ("deflate", z[..z.len() - 2].to_vec()),
        ("deflate", b"\xff\xff\xff".to_vec()),
    ];
    for (coding, wire) in cases {
        let answer = send(&url, &[("content-encoding", coding)], wire).await;
        assert_eq!(
            (answer.status, answer.error()),
            (400, "INVALID_BODY"),
            "{coding}"
        );
    }
    // Nothing at all, whatever the coding, is no body.
    let answer = send(&url, &[("content-encoding", "gzip")], Vec::new()).await;
    assert_eq!(answer.error(), "NO_BODY_PROVIDED");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count_events(&ch).await, 0);
}

/// GitHub's default: `payload=<the JSON, form-encoded>` with a form Content-Type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn githubs_form_delivery_lands_as_its_json() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "github-form").await;
    let gw = Gateway::start(&ch, |_| {}).await;
    let url = gw.url(&creds.query());
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/payloads/github/push.payload.json");
    let json = std::fs::read_to_string(shared).unwrap_or_else(|_| {
        r#"{"ref":"refs/heads/main","head_commit":{"message":"a+b & c=d 100% ção 😀"}}"#.into()
    });
    let encoded: String = form_urlencoded::byte_serialize(json.as_bytes()).collect();
    let form = format!("payload={encoded}");
    for (headers, wire) in [
        (vec![("content-type", FORM)], form.clone().into_bytes()),
        (
            vec![(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
            form.clone().into_bytes(),
        ),
        (
            vec![("content-type", FORM), ("content-encoding", "gzip")],
            gzip(form.as_bytes()),
        ),
    ] {
        let answer = send(&url, &headers, wire).await;
        assert_eq!(answer.status, 200, "{headers:?}: {answer:?}");
        let stored = landed_body(&ch, answer.request_id()).await;
        assert!(stored == json.as_bytes(), "{headers:?}: the JSON is stored");
    }
    // Without the form Content-Type, a form is not JSON.
    let answer = send(&url, &[], form).await;
    assert_eq!((answer.status, answer.error()), (400, "INVALID_BODY"));
    // A form without a JSON payload is refused as before.
    for body in ["payload=%7Bnope", "other=1", "payload=1&payload=2"] {
        let answer = send(&url, &[("content-type", FORM)], body).await;
        assert_eq!(
            (answer.status, answer.error()),
            (400, "INVALID_BODY"),
            "{body}"
        );
    }
}

/// CONTRACT §1: Content-Type is not checked. A JSON body is JSON whatever it says, even a JSON
/// body that looks like a form field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_sent_as_a_form_lands_as_is() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "json-as-form").await;
    let gw = Gateway::start(&ch, |_| {}).await;
    let url = gw.url(&creds.query());
    for body in [
        r#"{"payload":"{\"a\":1}"}"#,
        "  [1, 2]\n",
        "\"payload=%7B%7D\"",
    ] {
        let answer = send(&url, &[("content-type", FORM)], body).await;
        assert_eq!(answer.status, 200, "{body}: {answer:?}");
        let stored = landed_body(&ch, answer.request_id()).await;
        assert_eq!(String::from_utf8_lossy(&stored), body);
    }
}

/// A gateway whose ClickHouse never answers: what it accepts stays in its log, to be read.
async fn gateway_without_clickhouse(
) -> (u16, tempfile::TempDir, hookhouse::shutdown::ShutdownTrigger) {
    let data = tempfile::Builder::new()
        .prefix("hookhouse-headers-")
        .tempdir()
        .expect("temp dir");
    let settings = hookhouse::Settings {
        listen: "127.0.0.1:0".into(),
        clickhouse_url: format!("http://127.0.0.1:{}", free_port()),
        data_dir: data.path().to_path_buf(),
        shutdown_grace_secs: 1,
        ..hookhouse::Settings::default()
    };
    settings.validate().expect("valid settings");
    let app = hookhouse::Application::build(settings)
        .await
        .expect("gateway starts");
    let port = app.port();
    let (trigger, mut stop) = hookhouse::shutdown::channel();
    tokio::spawn(app.run(async move { stop.triggered().await }));
    (port, data, trigger)
}

/// Every file under `dir`, read whole and concatenated.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("read the data folder")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            bytes.extend(all_bytes(&path));
        } else {
            bytes.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_reach_the_log_but_credentials_never_do() {
    let (port, data, stop) = gateway_without_clickhouse().await;
    let url = format!("http://127.0.0.1:{port}/?pipeline_id=3&key={KEY_SHAPE}&token=abcdefgh1234");
    let headers = [
        ("x-github-event", "push"),
        ("x-trace", "visible-marker-7f3a"),
        ("x-trace", "second"),
        ("authorization", "Bearer secret-marker-authorization"),
        ("cookie", "session=secret-marker-cookie"),
        ("proxy-authorization", "Basic secret-marker-proxy"),
    ];
    let answer = send(&url, &headers, "{\"a\":1}").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let id = hookhouse::ingest::RequestId::from_bytes(answer.request_id().as_bytes())
        .expect("a request id");
    let record = hookhouse::wal::lookup::find_pending(data.path(), &id)
        .expect("read the log")
        .expect("the record waits in the log");
    let kept = hookhouse::ingest::Headers::from_json(&record.headers).expect("a JSON object");
    assert_eq!(kept.get("x-github-event"), Some("push"));
    assert_eq!(kept.get("x-trace"), Some("visible-marker-7f3a, second"));
    assert!(kept.get("content-length").is_some());
    for dropped in ["authorization", "cookie", "proxy-authorization"] {
        assert_eq!(kept.get(dropped), None, "{dropped}");
    }
    let bytes = all_bytes(data.path());
    let find = |marker: &str| bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
    assert!(find("visible-marker-7f3a"), "the search itself works");
    for marker in [
        "secret-marker-authorization",
        "secret-marker-cookie",
        "secret-marker-proxy",
    ] {
        assert!(!find(marker), "{marker} reached the data folder");
    }
    stop.trigger();
}

/// Headers over what a log record keeps (64 KiB as JSON) are refused, not trimmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let (port, data, stop) = gateway_without_clickhouse().await;
    let query = format!("?pipeline_id=3&key={KEY_SHAPE}&token=abcdefgh1234");
    let value = "v".repeat(2000);
    let names: Vec<String> = (0..40).map(|i| format!("x-filler-{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), value.as_str())).collect();
    let (status, body) = send_raw(port, &query, &headers, b"{}".to_vec()).await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(body, r#"{"success":false,"error":"HEADERS_TOO_LARGE"}"#);
    // Half of them fit.
    let (status, body) = send_raw(port, &query, &headers[..20], b"{}".to_vec()).await;
    assert_eq!(status, 200, "{body}");
    let bytes = all_bytes(data.path());
    assert!(bytes.windows(value.len()).any(|w| w == value.as_bytes()));
    stop.trigger();
}

//! The load generator: a closed loop of `concurrency` clients, each with its own HTTP/1.1
//! keep-alive connection, each sending its next request as soon as the previous answer has been
//! read in full. The number of requests in flight is therefore fixed, which is what "concurrency
//! C" means in the report.
//!
//! The HTTP is written by hand, as wrk does: the request's bytes are built once, and an answer is
//! parsed only as far as its status and framing (`Content-Length` or chunked). On a 2-core machine
//! the client shares the cores with the server, so every microsecond it spends per request is
//! taken from the server under test (hyper's client cost ~30 µs of CPU per request here).
//!
//! Only answers that complete inside the measured window count (the warm-up's do not), for
//! throughput and latency alike. When the window closes, clients stop sending and wait for their
//! last answer, so the next case starts on a quiet server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One case's load.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub address: SocketAddr,
    /// e.g. `/predictions/digits`.
    pub path: String,
    /// A POST with this body, or a GET when there is none.
    pub body: Option<Bytes>,
    pub concurrency: usize,
}

/// What the clients saw inside the window.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Latencies of the 200 answers.
    pub latencies: Vec<Duration>,
    /// Answers other than 200, and requests that got no answer at all.
    pub errors: u64,
    /// The first error, to show what went wrong.
    pub first_error: Option<String>,
}

impl LoadOutcome {
    pub(crate) fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }

    pub(crate) fn merge(&mut self, other: LoadOutcome) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// The measured window of a case, shared by the clients and the samplers beside them.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: Instant,
    pub to: Instant,
}

impl Window {
    /// Starts now with `warmup`, then lasts `duration`.
    pub fn after(warmup: Duration, duration: Duration) -> Window {
        let from = Instant::now() + warmup;
        Window {
            from,
            to: from + duration,
        }
    }

    pub(crate) fn contains(&self, instant: Instant) -> bool {
        instant >= self.from && instant <= self.to
    }
}

/// Drives the load until the window closes and returns what happened inside it. Must be called
/// inside a Tokio runtime (the harness uses a single-threaded one, to leave the cores to the server).
pub async fn drive(spec: LoadSpec, window: Window) -> LoadOutcome {
    let request = Arc::new(request_bytes(&spec));
    let spec = Arc::new(spec);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..spec.concurrency {
        clients.spawn(client_loop(Arc::clone(&spec), Arc::clone(&request), window));
    }
    let mut outcome = LoadOutcome::default();
    while let Some(joined) = clients.join_next().await {
        match joined {
            Ok(client) => outcome.merge(client),
            Err(error) => outcome.error(format!("a client task failed: {error}")),
        }
    }
    outcome
}

/// The request every client sends, as bytes on the wire.
fn request_bytes(spec: &LoadSpec) -> Vec<u8> {
    let Some(body) = &spec.body else {
        return format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            spec.path, spec.address
        )
        .into_bytes();
    };
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        spec.path,
        spec.address,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// One keep-alive connection and its read buffer.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// One client: connect once, then request after request on the same connection; reconnect only
/// after a transport error or when the server closes the connection.
async fn client_loop(spec: Arc<LoadSpec>, request: Arc<Vec<u8>>, window: Window) -> LoadOutcome {
    let mut outcome = LoadOutcome::default();
    let mut connection: Option<Connection> = None;
    loop {
        let started = Instant::now();
        if started >= window.to {
            return outcome;
        }
        if connection.is_none() {
            match connect(spec.address).await {
                Ok(stream) => {
                    connection = Some(Connection {
                        stream,
                        buffer: Vec::with_capacity(16 * 1024),
                    })
                }
                Err(error) => {
                    if window.contains(Instant::now()) {
                        outcome.error(format!("cannot connect: {error}"));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(open) = connection.as_mut() else {
            continue;
        };
        let result = exchange(open, &request).await;
        let finished = Instant::now();
        let status = match result {
            Ok(Answer { status, keep_alive }) => {
                if !keep_alive {
                    connection = None;
                }
                Ok(status)
            }
            Err(error) => {
                connection = None;
                Err(error)
            }
        };
        if !window.contains(finished) {
            continue;
        }
        match status {
            Ok(200) => outcome.latencies.push(finished - started),
            Ok(status) => outcome.error(format!("HTTP {status}")),
            Err(error) => outcome.error(error),
        }
    }
}

async fn connect(address: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|error| error.to_string())?;
    // Small requests and answers: do not let Nagle's algorithm hold them back.
    stream
        .set_nodelay(true)
        .map_err(|error| error.to_string())?;
    Ok(stream)
}

/// What the client needs of an answer.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    keep_alive: bool,
}

/// Sends the request and reads the whole answer.
async fn exchange(connection: &mut Connection, request: &[u8]) -> Result<Answer, String> {
    connection
        .stream
        .write_all(request)
        .await
        .map_err(|error| format!("connection lost: {error}"))?;
    connection.buffer.clear();
    loop {
        match parse_answer(&connection.buffer)? {
            Parsed::Complete(answer) => return Ok(answer),
            Parsed::Partial => {}
        }
        if connection.buffer.capacity() - connection.buffer.len() < 4096 {
            connection
                .buffer
                .reserve(connection.buffer.capacity().max(4096));
        }
        let read = connection
            .stream
            .read_buf(&mut connection.buffer)
            .await
            .map_err(|error| format!("answer cut short: {error}"))?;
        if read == 0 {
            return Err("the server closed the connection mid-answer".into());
        }
    }
}

enum Parsed {
    Complete(Answer),
    Partial,
}

/// Parses `bytes` as one HTTP/1.1 answer: `Partial` until its head and body are all there.
fn parse_answer(bytes: &[u8]) -> Result<Parsed, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(error) => return Err(format!("malformed answer: {error}")),
    };
    let status = response.code.unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    let mut keep_alive = response.version == Some(1);
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("").trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if header.name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    let body = &bytes[head..];
    let complete = if chunked {
        chunked_body_ends(body)?
    } else {
        body.len() >= length.unwrap_or(0)
    };
    Ok(if complete {
        Parsed::Complete(Answer { status, keep_alive })
    } else {
        Parsed::Partial
    })
}

/// Whether a chunked body is complete (its last, empty chunk and the final CRLF are there).
fn chunked_body_ends(mut body: &[u8]) -> Result<bool, String> {
    loop {
        let Some(line_end) = body.windows(2).position(|pair| pair == b"\r\n") else {
            return Ok(false);
        };
        let size_text = std::str::from_utf8(&body[..line_end]).unwrap_or("");
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        let rest = &body[line_end + 2..];
        if size == 0 {
            // No trailers are sent by the server under test: the body ends with one more CRLF.
            return Ok(rest.starts_with(b"\r\n"));
        }
        if rest.len() < size + 2 {
            return Ok(false);
        }
        body = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8]) -> Option<Answer> {
        match parse_answer(bytes).expect("well-formed") {
            Parsed::Complete(answer) => Some(answer),
            Parsed::Partial => None,
        }
    }

    /// Every prefix of `answer` is partial; the whole of it parses to `expected`.
    fn complete_only_at_its_end(answer: &[u8], expected: Answer) {
        for cut in 0..answer.len() {
            assert_eq!(parsed(&answer[..cut]), None, "cut at {cut}");
        }
        assert_eq!(parsed(answer), Some(expected));
    }

    #[test]
    fn an_answer_is_complete_once_its_content_length_is_there() {
        complete_only_at_its_end(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            Answer {
                status: 200,
                keep_alive: true,
            },
        );
    }

    #[test]
    fn a_chunked_answer_is_complete_after_its_last_chunk() {
        complete_only_at_its_end(
            b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n",
            Answer {
                status: 503,
                keep_alive: false,
            },
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_answer(b"NOT HTTP\r\n\r\n").is_err());
    }
}

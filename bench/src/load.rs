//! The load generator: a closed loop of `concurrency` clients, each with its own HTTP/1.1
//! keep-alive connection (hyper's connection-level client: no pool, no extra layers), each sending
//! its next request as soon as the previous answer has been read in full. The number of requests
//! in flight is therefore fixed, which is what "concurrency C" means in the report.
//!
//! Only answers that complete inside the measured window count (the warm-up's do not), for
//! throughput and latency alike. When the window closes, clients stop sending and wait for their
//! last answer, so the next case starts on a quiet server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One case's load.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub address: SocketAddr,
    /// e.g. `/predictions/digits`.
    pub path: String,
    pub body: Bytes,
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
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }

    fn merge(&mut self, other: LoadOutcome) {
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

    fn contains(&self, instant: Instant) -> bool {
        instant >= self.from && instant <= self.to
    }
}

/// Drives the load until the window closes and returns what happened inside it. Must be called
/// inside a Tokio runtime (the harness uses a single-threaded one, to leave the cores to the server).
pub async fn drive(spec: LoadSpec, window: Window) -> LoadOutcome {
    let spec = Arc::new(spec);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..spec.concurrency {
        clients.spawn(client_loop(Arc::clone(&spec), window));
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

/// One client: connect once, then request after request on the same connection; reconnect only
/// after a transport error.
async fn client_loop(spec: Arc<LoadSpec>, window: Window) -> LoadOutcome {
    let mut outcome = LoadOutcome::default();
    let mut connection: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        let started = Instant::now();
        if started >= window.to {
            return outcome;
        }
        if connection.is_none() {
            match connect(spec.address).await {
                Ok(sender) => connection = Some(sender),
                Err(error) => {
                    if window.contains(Instant::now()) {
                        outcome.error(format!("cannot connect: {error}"));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(sender) = connection.as_mut() else {
            continue;
        };
        let result = send(sender, &spec).await;
        let finished = Instant::now();
        if result.is_err() {
            connection = None;
        }
        if !window.contains(finished) {
            continue;
        }
        match result {
            Ok(200) => outcome.latencies.push(finished - started),
            Ok(status) => outcome.error(format!("HTTP {status}")),
            Err(error) => outcome.error(error),
        }
    }
}

async fn connect(address: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|error| error.to_string())?;
    // Small requests and answers: do not let Nagle's algorithm hold them back.
    stream
        .set_nodelay(true)
        .map_err(|error| error.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    // Drives the socket; ends when the sender is dropped or the server closes.
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends the case's request and reads the whole answer; returns its status.
async fn send(sender: &mut SendRequest<Full<Bytes>>, spec: &LoadSpec) -> Result<u16, String> {
    sender
        .ready()
        .await
        .map_err(|error| format!("connection lost: {error}"))?;
    let request = Request::post(spec.path.as_str())
        .header(HOST, spec.address.to_string())
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(spec.body.clone()))
        .map_err(|error| error.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| format!("no answer: {error}"))?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(|error| format!("answer cut short: {error}"))?;
    Ok(status)
}

//! Starting one listener as an actix-web server: its routes, the middleware every listener wears,
//! and the connection hygiene a public-facing server needs, all from actix-web's own settings.
//!
//! actix-http fixes two limits as constants: a request's head (request line plus headers) may
//! be at most 128 KiB ([`MAX_HEAD_BYTES`]) and carry at most 96 header fields
//! ([`MAX_HEADERS`]); past either the connection is answered 431 or closed.

use std::future::Future;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::KeepAlive;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use super::{middleware, State};
use crate::auth::{self, Api};

/// The largest request head actix-http reads (its `MAX_BUFFER_SIZE`).
pub const MAX_HEAD_BYTES: usize = 128 * 1024;
/// The most header fields actix-http parses in one request (its `MAX_HEADERS`).
pub const MAX_HEADERS: usize = 96;

/// Connection settings of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Time a client has to send its request line and headers (slow-loris guard; 408).
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection stays open.
    pub keep_alive: Duration,
    /// Time a client has to close its side once the server has closed its own.
    pub disconnect_timeout: Duration,
    /// Pending connections the kernel queues before the server accepts them.
    pub backlog: u32,
    /// Connections a worker may be setting up at once (TLS handshakes).
    pub max_connection_rate: usize,
    /// How long a stop waits for accepted requests to be answered.
    pub shutdown_timeout: Duration,
    /// actix worker threads (each runs its own event loop).
    pub workers: usize,
}

impl Settings {
    /// The settings from the server config, for a listener with `workers` threads.
    pub fn of(config: &crate::config::Config, workers: usize) -> Settings {
        Settings {
            header_timeout: config.request_header_timeout,
            keep_alive: Duration::from_secs(60),
            disconnect_timeout: Duration::from_secs(1),
            backlog: 1024,
            max_connection_rate: 256,
            // An accepted request may wait up to its model's response timeout.
            shutdown_timeout: config.default_response_timeout,
            workers: workers.max(1),
        }
    }
}

/// Which routes a listener serves, which key its requests need (none for metrics), and its TLS
/// (for an `https://` address).
pub struct Listener {
    pub routes: fn(&mut web::ServiceConfig),
    pub key: Option<Api>,
    pub tls: Option<rustls::ServerConfig>,
}

/// Starts serving `listener` on its own worker threads until `shutdown` resolves; then it stops
/// accepting, answers what was accepted (up to the shutdown timeout), and the returned server
/// future completes.
pub fn serve(
    socket: std::net::TcpListener,
    state: State,
    listener: Listener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Server> {
    let Listener { routes, key, tls } = listener;
    let auth = web::Data::from(std::sync::Arc::clone(&state.auth));
    let server = HttpServer::new(move || {
        // Runs once on each worker thread as it starts.
        if let Err(error) = oxserve_sys::defer_to_workers() {
            tracing::debug!("cannot set the HTTP thread's scheduling policy: {error}");
        }
        App::new()
            .app_data(state.clone())
            .app_data(auth.clone())
            .app_data(auth::Guard(key))
            .configure(routes)
            .default_service(web::to(super::not_found))
            .wrap(from_fn(auth::authorize))
            .wrap(from_fn(middleware::access_log))
            .wrap(from_fn(middleware::request_id))
    })
    .workers(settings.workers)
    // Answers are small and latency matters: no Nagle delay.
    .tcp_nodelay(true)
    .backlog(settings.backlog)
    .max_connection_rate(settings.max_connection_rate)
    .keep_alive(KeepAlive::Timeout(settings.keep_alive))
    .client_request_timeout(settings.header_timeout)
    .client_disconnect_timeout(settings.disconnect_timeout)
    .shutdown_timeout(settings.shutdown_timeout.as_secs())
    .disable_signals()
    .shutdown_signal(shutdown);
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(socket, tls)?,
        None => server.listen(socket)?,
    };
    Ok(server.run())
}

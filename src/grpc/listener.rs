//! Serving gRPC services on a bound socket: TLS (`enable_grpc_ssl`, the REST listeners' key and
//! certificate), the token check of TorchServe's `GRPCInterceptor` (the `authorization: Bearer`
//! metadata with the listener's key, PERMISSION_DENIED otherwise, slowed down by the same
//! throttle as REST), oversized messages answered RESOURCE_EXHAUSTED with REST's 413 message (as
//! grpc-java does; tonic says OUT_OF_RANGE), and a graceful stop: in-flight calls finish once
//! `signal` resolves.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::service::Routes;
use tonic::transport::server::{TcpConnectInfo, TcpIncoming};

use crate::auth::{Api, TokenAuth};
use crate::error::ServeError;

/// What a gRPC listener needs besides its services.
pub struct Settings {
    /// Which key calls must carry.
    pub api: Api,
    pub auth: Arc<TokenAuth>,
    /// The PEM certificate chain and key, when `enable_grpc_ssl=true`.
    pub tls: Option<crate::config::TlsSettings>,
    /// The services' inbound message limit, named in the oversized-message answer.
    pub max_request_size: usize,
}

/// The message limits of TorchServe's gRPC servers: `max_request_size` inbound (its
/// `maxInboundMessageSize`), `max_response_size` outbound. Each service applies them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub decoding: usize,
    pub encoding: usize,
}

impl Limits {
    pub fn of(config: &crate::config::Config) -> Self {
        Limits {
            decoding: config.max_request_size,
            encoding: config.max_response_size,
        }
    }
}

/// The runtime the gRPC listeners run on: worker threads under the HTTP threads' scheduling
/// policy ([`oxserve_sys::defer_to_workers`]), so that gRPC and REST requests compete with the
/// model workers alike, apart from the server's control runtime. Dropping it stops its threads
/// without waiting, which is allowed on an async thread (dropping a `Runtime` there is not).
pub struct GrpcRuntime(Option<tokio::runtime::Runtime>);

impl GrpcRuntime {
    /// Starts `threads` worker threads.
    pub fn start(threads: usize) -> std::io::Result<GrpcRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("oxserve-grpc")
            .on_thread_start(|| {
                if let Err(error) = oxserve_sys::defer_to_workers() {
                    tracing::debug!("cannot set the gRPC thread's scheduling policy: {error}");
                }
            })
            .enable_all()
            .build()?;
        Ok(GrpcRuntime(Some(runtime)))
    }

    /// Runs `task` on the runtime's threads.
    pub fn spawn<F>(&self, task: F) -> Option<tokio::task::JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.as_ref().map(|runtime| runtime.spawn(task))
    }
}

impl Drop for GrpcRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Serves `routes` on `listener` until `signal` resolves and in-flight calls are done.
/// Runs on the runtime that spawned it, which registers the socket with its own reactor.
pub async fn serve(
    listener: std::net::TcpListener,
    routes: Routes,
    settings: Settings,
    signal: impl Future<Output = ()>,
) -> Result<(), String> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &settings.tls {
        builder = builder
            .tls_config(tls_config(tls)?)
            .map_err(|error| format!("gRPC TLS: {error}"))?;
    }
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|error| format!("gRPC listener: {error}"))?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let layer = AuthLayer {
        api: settings.api,
        auth: settings.auth,
        max_request_size: settings.max_request_size,
    };
    builder
        .layer(layer)
        .serve_with_incoming_shutdown(routes.prepare(), incoming, signal)
        .await
        .map_err(|error| format!("gRPC listener: {error}"))
}

/// The same PEM files as the REST listeners (read at startup, so a bad file stops it).
fn tls_config(
    settings: &crate::config::TlsSettings,
) -> Result<tonic::transport::ServerTlsConfig, String> {
    let read = |path: &std::path::Path, key: &str| {
        std::fs::read(path).map_err(|error| format!("{key} {}: {error}", path.display()))
    };
    let certificate = read(&settings.certificate_file, "certificate_file")?;
    let key = read(&settings.private_key_file, "private_key_file")?;
    // The same checks as REST's, so both refuse the same files with the same words.
    crate::http::tls::server_config(settings)?;
    let identity = tonic::transport::Identity::from_pem(certificate, key);
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}

/// Wraps every call in the token check.
#[derive(Clone)]
struct AuthLayer {
    api: Api,
    auth: Arc<TokenAuth>,
    max_request_size: usize,
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            api: self.api,
            auth: Arc::clone(&self.auth),
            max_request_size: self.max_request_size,
        }
    }
}

/// The token check in front of a listener's services.
#[derive(Clone)]
struct AuthService<S> {
    inner: S,
    api: Api,
    auth: Arc<TokenAuth>,
    max_request_size: usize,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower_service::Service<http::Request<Body>> for AuthService<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let limit = self.max_request_size;
        if !self.auth.is_enabled() {
            let answer = self.inner.call(request);
            return Box::pin(async move { answer.await.map(|answer| too_large(answer, limit)) });
        }
        let peer = peer_ip(&request);
        let header = request
            .headers()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        match self.auth.check(self.api, header) {
            Ok(()) => {
                self.auth.accepted(peer);
                let answer = self.inner.call(request);
                Box::pin(async move { answer.await.map(|answer| too_large(answer, limit)) })
            }
            Err(error) => {
                let delay = self.auth.refused(peer);
                Box::pin(async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let status: tonic::Status = error.into();
                    Ok(status.into_http())
                })
            }
        }
    }
}

/// tonic's answer to a request message over the limit (OUT_OF_RANGE, before the message is read)
/// as TorchServe's: RESOURCE_EXHAUSTED, here with REST's 413 message. Also used for the
/// messages of a request stream.
pub(super) fn oversized(status: tonic::Status, limit: usize) -> tonic::Status {
    let too_large = status.code() == tonic::Code::OutOfRange
        && status
            .message()
            .starts_with("Error, decoded message length too large");
    match too_large {
        true => ServeError::PayloadTooLarge { limit }.into(),
        false => status,
    }
}

/// [`oversized`] for a whole answer (a refused request message makes a trailers-only answer).
fn too_large(answer: http::Response<Body>, limit: usize) -> http::Response<Body> {
    if answer
        .headers()
        .get("grpc-status")
        .map(|code| code.as_bytes())
        != Some(b"11")
    {
        return answer;
    }
    match tonic::Status::from_header_map(answer.headers()) {
        Some(status) => oversized(status, limit).into_http(),
        None => answer,
    }
}

/// The caller's address, over plain TCP or TLS.
fn peer_ip(request: &http::Request<Body>) -> Option<std::net::IpAddr> {
    let extensions = request.extensions();
    let tcp = extensions.get::<TcpConnectInfo>().or_else(|| {
        extensions
            .get::<tonic::transport::server::TlsConnectInfo<TcpConnectInfo>>()
            .map(|info| info.get_ref())
    });
    tcp.and_then(TcpConnectInfo::remote_addr)
        .map(|address| address.ip())
}

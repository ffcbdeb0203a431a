//! Starting and stopping the server: load ONNX Runtime, bind the three HTTP listeners (the
//! metrics one only with `enable_metrics_api`, as TorchServe) and the two gRPC ones, start the
//! host-metrics sampler, load the
//! startup models (off the async runtime), serve until the shutdown future resolves, then let
//! in-flight requests finish and stop every worker.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::ServeError;
use crate::metrics::Metrics;
use crate::model::{LoadRequest, ModelSettings, ModelVersion};
use crate::registry::Registry;

use crate::auth::{Api, TokenAuth};
use crate::http::listener::{self, Listener, Settings};
use crate::snapshot::SnapshotKind;
use crate::state::AppState;
use crate::{http, snapshotter, store};

/// The bound listeners (port 0 in tests gives free ports).
pub struct Listeners {
    pub inference: TcpListener,
    pub management: TcpListener,
    /// Absent when `enable_metrics_api=false`.
    pub metrics: Option<TcpListener>,
    pub grpc_inference: TcpListener,
    pub grpc_management: TcpListener,
}

/// Where a running server listens.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub inference: SocketAddr,
    pub management: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub grpc_inference: SocketAddr,
    pub grpc_management: SocketAddr,
}

impl Listeners {
    /// Binds the configured addresses; a port in use is reported with the key to change.
    pub async fn bind(config: &Config) -> Result<Listeners, String> {
        let bind = |key: &'static str, address: SocketAddr| async move {
            if !address.ip().is_loopback() {
                tracing::warn!("{key} = {address}: this API is reachable from other machines, not only this one");
            }
            TcpListener::bind(address)
                .await
                .map_err(|error| format!("cannot listen on {address} ({key}): {error}"))
        };
        Ok(Listeners {
            inference: bind("inference_address", config.inference_address).await?,
            management: bind("management_address", config.management_address).await?,
            metrics: match config.enable_metrics_api {
                true => Some(bind("metrics_address", config.metrics_address).await?),
                false => None,
            },
            grpc_inference: bind("grpc_inference_address", config.grpc_inference_address).await?,
            grpc_management: bind("grpc_management_address", config.grpc_management_address)
                .await?,
        })
    }

    pub fn addresses(&self) -> std::io::Result<Addresses> {
        Ok(Addresses {
            inference: self.inference.local_addr()?,
            management: self.management.local_addr()?,
            metrics: self
                .metrics
                .as_ref()
                .map(TcpListener::local_addr)
                .transpose()?,
            grpc_inference: self.grpc_inference.local_addr()?,
            grpc_management: self.grpc_management.local_addr()?,
        })
    }
}

/// Loads the models `--models`/`load_models` name. A model that fails is logged and skipped,
/// as TorchServe does; the server still starts.
async fn load_startup_models(state: &Arc<AppState>) -> Result<(), String> {
    let entries = store::startup_models(
        state.config.model_store.as_deref(),
        &state.config.load_models,
    )
    .map_err(|error| error.to_string())?;
    for entry in entries {
        let located = crate::download::locate(
            &entry.url,
            &state.config.url_policy,
            state.config.model_store.as_deref(),
        )
        .await;
        let archive = match located {
            Ok(located) => located.path,
            Err(error) => {
                tracing::error!("cannot load {}: {error}", entry.url);
                continue;
            }
        };
        let request = LoadRequest {
            archive,
            downloaded: None,
            name: entry.name.clone(),
            url: entry.url.clone(),
            settings: ModelSettings::defaults(&state.config),
            apply_model_config: true,
            models_config: Some(Arc::new(state.config.models.clone())),
            overrides: Default::default(),
            loaded_at_startup: true,
            metrics: Arc::clone(&state.metrics),
        };
        let loaded = tokio::task::spawn_blocking(move || {
            let model = ModelVersion::load(request)?;
            model.start_workers()?;
            Ok(model)
        })
        .await
        .unwrap_or_else(|_| Err(ServeError::Internal("model loading panicked".into())));
        match loaded {
            Ok(model) => {
                tracing::info!(model = %model.name, version = %model.version, workers = model.live_workers(), "model loaded from {}", entry.url);
                if state.registry.add(Arc::clone(&model)).is_err() {
                    tracing::error!(
                        "{}: version {} of {} is already loaded",
                        entry.url,
                        model.version,
                        model.name
                    );
                    tokio::task::spawn_blocking(move || model.shutdown());
                }
            }
            Err(error) => tracing::error!("cannot load {}: {error}", entry.url),
        }
    }
    for (name, versions) in &state.config.models {
        for (version, entry) in versions {
            if entry.default_version {
                if let Err(error) = state.registry.set_default(name, version) {
                    tracing::warn!("models: cannot make {version} the default of {name}: {error}");
                }
            }
        }
    }
    Ok(())
}

/// The inference listener's threads (`number_of_netty_threads`, TorchServe's key): by default
/// half the cores, 1 to 4; the cores belong to the model workers, the threads only parse, route
/// and answer.
pub fn io_threads(config: &Config) -> usize {
    match config.io_threads {
        0 => (Config::cores() / 2).clamp(1, 4),
        threads => threads,
    }
}

/// Runs the server on bound listeners until `shutdown` resolves. Returns once every listener has
/// finished its in-flight requests and every worker has stopped.
pub async fn run(
    mut config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let loaded =
        crate::backend::init(config.ort_library.as_deref()).map_err(|error| error.to_string())?;
    // What a server killed with `kill -9` left unpacked.
    let removed = tokio::task::spawn_blocking(crate::model::unpacked::remove_stale)
        .await
        .unwrap_or(0);
    if removed > 0 {
        tracing::info!("removed {removed} unpacked model folder(s) left by stopped servers");
    }
    tracing::info!(
        "ONNX Runtime loaded from {} ({:?})",
        loaded.path.display(),
        loaded.source
    );
    // May start a Python process to find pip's CUDA libraries: off the reactor.
    let number_of_gpu = config.number_of_gpu;
    config.gpus = tokio::task::spawn_blocking(move || crate::gpu::usable(number_of_gpu, &loaded))
        .await
        .map_err(|error| format!("the GPU check failed: {error}"))?;
    let auth = if config.disable_token_authorization {
        TokenAuth::disabled()
    } else {
        let auth = TokenAuth::create(&config.key_file_dir, config.token_expiration)
            .map_err(|error| error.to_string())?;
        if let Some(path) = auth.key_file() {
            tracing::info!("token authorization is on: keys are in {}", path.display());
        }
        auth
    };
    // Read before any model loads, so that a bad key or certificate stops startup at once.
    let tls = match &config.tls {
        Some(settings) => Some((http::tls::server_config(settings)?, settings.clone())),
        None => None,
    };
    let restored = config.restored_snapshot.clone();
    let metrics = Arc::new(Metrics::new(config.metrics_mode, Metrics::local_hostname()));
    let state = Arc::new(AppState {
        config,
        registry: Registry::default(),
        auth: Arc::new(auth),
        snapshot_lock: Default::default(),
        metrics,
    });
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let sampler = match state.config.disable_system_metrics {
        true => None,
        false => Some(
            crate::metrics::system::start_sampler(
                Arc::clone(&state.metrics),
                state.config.metric_time_interval,
                state.config.gpus,
                stop.clone(),
            )
            .await,
        ),
    };
    match &restored {
        Some(snapshot) => {
            tracing::info!(
                "restoring {} model version(s) from snapshot {}",
                snapshot.model_count(),
                snapshot.name
            );
            snapshotter::restore(&state, snapshot).await;
        }
        None => load_startup_models(&state).await?,
    }
    snapshotter::save(&state, SnapshotKind::Startup).await;
    let addresses = listeners.addresses().map_err(|error| error.to_string())?;
    let scheme = |https: fn(&crate::config::TlsSettings) -> bool| match &tls {
        Some((_, settings)) if https(settings) => "https",
        _ => "http",
    };
    let metrics_at = addresses
        .metrics
        .map(|address| format!("{}://{address}", scheme(|tls| tls.metrics)))
        .unwrap_or_else(|| "off (enable_metrics_api=false)".into());
    tracing::info!(
        "inference API on {}://{}, management API on {}://{}, metrics {metrics_at}",
        scheme(|tls| tls.inference),
        addresses.inference,
        scheme(|tls| tls.management),
        addresses.management,
    );
    let grpc_scheme = match &tls {
        Some((_, settings)) if settings.grpc => " (TLS)",
        _ => "",
    };
    tracing::info!(
        "gRPC inference API on {}{grpc_scheme}, gRPC management API on {}{grpc_scheme}",
        addresses.grpc_inference,
        addresses.grpc_management,
    );
    let inference_workers = io_threads(&state.config);
    let data = actix_web::web::Data::from(Arc::clone(&state));
    let mut servers = Vec::new();
    let mut grpc_servers = Vec::new();
    let tls_for = |wanted: fn(&crate::config::TlsSettings) -> bool| {
        tls.as_ref()
            .filter(|(_, settings)| wanted(settings))
            .map(|(config, _)| config.clone())
    };
    let mut sockets = vec![
        (
            listeners.inference,
            inference_workers,
            Listener {
                routes: http::inference::routes,
                key: Some(Api::Inference),
                tls: tls_for(|settings| settings.inference),
            },
        ),
        (
            listeners.management,
            1,
            Listener {
                routes: http::management::routes,
                key: Some(Api::Management),
                tls: tls_for(|settings| settings.management),
            },
        ),
    ];
    if let Some(socket) = listeners.metrics {
        let routes = Listener {
            routes: http::metrics::routes,
            key: None,
            tls: tls_for(|settings| settings.metrics),
        };
        sockets.push((socket, 1, routes));
    }
    for (socket, workers, routes) in sockets {
        let mut stop = stop.clone();
        let signal = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        let socket = socket.into_std().map_err(|error| error.to_string())?;
        let settings = Settings::of(&state.config, workers);
        let server = listener::serve(socket, data.clone(), routes, settings, signal)
            .map_err(|error| format!("cannot start a listener: {error}"))?;
        servers.push(tokio::spawn(server));
    }
    let grpc_listeners = [
        (
            listeners.grpc_inference,
            Api::Inference,
            tonic::service::Routes::new(crate::grpc::inference::service(Arc::clone(&state)))
                .add_service(crate::grpc::open_inference::kserve(Arc::clone(&state)))
                .add_service(crate::grpc::open_inference::torchserve(Arc::clone(&state))),
        ),
        (
            listeners.grpc_management,
            Api::Management,
            tonic::service::Routes::new(crate::grpc::management::service(Arc::clone(&state))),
        ),
    ];
    // The inference listener's thread count, as for REST.
    let grpc_runtime = crate::grpc::listener::GrpcRuntime::start(inference_workers)
        .map_err(|error| format!("cannot start the gRPC runtime: {error}"))?;
    for (socket, api, routes) in grpc_listeners {
        let mut stop = stop.clone();
        let signal = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        let settings = crate::grpc::listener::Settings {
            api,
            auth: Arc::clone(&state.auth),
            tls: tls
                .as_ref()
                .filter(|(_, settings)| settings.grpc)
                .map(|(_, settings)| settings.clone()),
            max_request_size: state.config.max_request_size,
        };
        let socket = socket.into_std().map_err(|error| error.to_string())?;
        let server = crate::grpc::listener::serve(socket, routes, settings, signal);
        grpc_servers.extend(grpc_runtime.spawn(async move {
            if let Err(error) = server.await {
                tracing::error!("{error}");
            }
        }));
    }
    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_sender.send(true);
    for server in servers {
        let _ = server.await;
    }
    for server in grpc_servers {
        let _ = server.await;
    }
    drop(grpc_runtime);
    snapshotter::save(&state, SnapshotKind::Shutdown).await;
    state.auth.remove_key_file();
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    let models = state.registry.drain();
    let _ =
        tokio::task::spawn_blocking(move || models.iter().for_each(|model| model.shutdown())).await;
    tracing::info!("oxserve stopped");
    Ok(())
}

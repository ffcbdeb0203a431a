//! Configuration, read once at startup into one typed [`Config`]: TorchServe's command-line flags,
//! its `config.properties` keys (same names, same defaults) and, when `enable_envvars_config=true`,
//! `TS_<KEY>` environment variables. Precedence is TorchServe's: env > CLI > file. The file is
//! `TS_CONFIG_FILE`, else `--ts-config`, else `./config.properties`. Unknown keys are warned about;
//! a malformed value stops startup with a message naming the key. `LOG_LOCATION` and
//! `METRICS_LOCATION` name the log folders, as for TorchServe. No other module reads the
//! environment.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::metrics::MetricsMode;

/// Command line, as `torchserve`'s (`ts/arg_parser.py`), plus oxserve's own flags.
#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "oxserve",
    about = "A TorchServe-compatible model server on ONNX Runtime",
    disable_version_flag = true
)]
pub struct Cli {
    /// Print the version and exit.
    #[arg(short = 'v', long = "version", group = "action")]
    pub version: bool,
    /// Start the server in the background; returns once it answers /ping.
    #[arg(long, group = "action")]
    pub start: bool,
    /// Stop the server started with --start.
    #[arg(long, group = "action")]
    pub stop: bool,
    /// Run in the foreground (logs to the terminal; Ctrl-C stops).
    #[arg(long)]
    pub foreground: bool,
    /// config.properties file (TorchServe format).
    #[arg(long = "ts-config")]
    pub ts_config: Option<PathBuf>,
    /// Folder holding model archives (.mar, .tar.gz or unpacked folders).
    #[arg(long = "model-store")]
    pub model_store: Option<PathBuf>,
    /// Workflow store (accepted for compatibility; workflows are not supported).
    #[arg(long = "workflow-store")]
    pub workflow_store: Option<PathBuf>,
    /// Models to load at startup: `all`, `a.mar b.mar`, or `name=path.mar`.
    #[arg(long, num_args = 1..)]
    pub models: Vec<String>,
    /// Log configuration: a tracing filter such as `info,oxserve=debug`, or a file holding one.
    #[arg(long = "log-config")]
    pub log_config: Option<String>,
    /// Accepted for compatibility; oxserve has no C++ backend.
    #[arg(long = "cpp-log-config", hide = true)]
    pub cpp_log_config: Option<String>,
    /// Do not write or restore config snapshots.
    #[arg(long = "no-config-snapshots", visible_alias = "ncs")]
    pub ncs: bool,
    /// Accepted for compatibility; oxserve has no Java plugins.
    #[arg(long = "plugins-path", visible_alias = "ppath", hide = true)]
    pub plugins_path: Option<PathBuf>,
    /// Turn token authorization off.
    #[arg(long = "disable-token-auth", visible_alias = "dt")]
    pub disable_token_auth: bool,
    /// Allow registering and unregistering models through the management API.
    #[arg(long = "enable-model-api")]
    pub enable_model_api: bool,
    /// libonnxruntime.so to load (else ORT_DYLIB_PATH, ./.onnxruntime, next to the binary, Python's).
    #[arg(long = "ort-library")]
    pub ort_library: Option<PathBuf>,
    /// Where --start records the server's process id (and --stop reads it).
    #[arg(long = "pid-file", hide = true)]
    pub pid_file: Option<PathBuf>,
}

/// One entry of TorchServe's `models` key (and of a snapshot's `model_snapshot`): settings for a
/// model version, at config.properties priority.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelEntry {
    #[serde(default)]
    pub default_version: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mar_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_workers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_delay: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_timeout: Option<u64>,
}

/// `models`: model name → version → settings.
pub type ModelsConfig = BTreeMap<String, BTreeMap<String, ModelEntry>>;

/// Everything the server needs, merged and validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub inference_address: SocketAddr,
    pub management_address: SocketAddr,
    pub metrics_address: SocketAddr,
    /// The gRPC inference API (`grpc_inference_address`, `grpc_inference_port`).
    pub grpc_inference_address: SocketAddr,
    /// The gRPC management API (`grpc_management_address`, `grpc_management_port`).
    pub grpc_management_address: SocketAddr,
    /// The PEM key and certificate chain (`private_key_file`, `certificate_file`) when any of
    /// the three addresses is `https://` or `enable_grpc_ssl=true`, with which listeners use them.
    pub tls: Option<TlsSettings>,
    pub model_store: Option<PathBuf>,
    /// Startup models (`--models` or `load_models`): `all`, file names, or `name=file`.
    pub load_models: Vec<String>,
    /// Per-model settings (`models` key), applied under model-config.yaml.
    pub models: ModelsConfig,
    /// Per-model queue capacity; a full queue answers 503 at once.
    pub job_queue_size: usize,
    pub max_request_size: usize,
    pub max_response_size: usize,
    /// Time a client has to send a request's headers (slow-loris guard).
    pub request_header_timeout: Duration,
    /// Time a client has to send a request's body.
    pub request_body_timeout: Duration,
    /// Most inputs (multipart parts or form fields) one inference request may carry: each is a
    /// model input, so one small body must not turn into unbounded work.
    pub max_request_parts: usize,
    pub default_response_timeout: Duration,
    pub default_startup_timeout: Duration,
    /// Workers per model when neither the archive nor the API says; 0 = automatic (1 per model,
    /// with all cores as ONNX Runtime intra-op threads: several sessions on few cores only
    /// oversubscribe them).
    pub default_workers_per_model: usize,
    /// ONNX Runtime intra-op threads per session; 0 = cores / workers.
    pub intra_op_threads: usize,
    /// TorchServe's `number_of_gpu`: at most this many GPUs are used (unset: all).
    pub number_of_gpu: Option<usize>,
    /// The GPUs models may use, `min(usable GPUs, number_of_gpu)`: settled by
    /// [`crate::gpu::usable`] once ONNX Runtime is loaded (0 until then).
    pub gpus: usize,
    /// Reject images above PIL's pixel cap (TorchServe's `limit_max_image_pixels`).
    pub limit_max_image_pixels: bool,
    pub enable_model_api: bool,
    pub disable_token_authorization: bool,
    pub ncs: bool,
    pub log_config: Option<String>,
    /// Folder of `ts_log.log`, `access_log.log`, `model_log.log` (`LOG_LOCATION`, else `logs`).
    pub log_location: PathBuf,
    /// Folder of `ts_metrics.log`, `model_metrics.log` (`METRICS_LOCATION`, else `logs`).
    pub metrics_location: PathBuf,
    /// `log` (TorchServe's default: metrics go to the metrics logs), `prometheus` or `legacy`.
    pub metrics_mode: MetricsMode,
    /// Whether the metrics listener runs at all (TorchServe's `enable_metrics_api`).
    pub enable_metrics_api: bool,
    /// How often host metrics are sampled (`metric_time_interval`, seconds).
    pub metric_time_interval: Duration,
    pub disable_system_metrics: bool,
    pub ort_library: Option<PathBuf>,
    /// Threads of the async runtime serving HTTP (`number_of_netty_threads`); 0 = cores.
    pub io_threads: usize,
    /// Which model URLs may be registered, and download limits.
    pub url_policy: crate::download::UrlPolicy,
    /// Lifetime of inference and management keys (`token_expiration_min`).
    pub token_expiration: Duration,
    /// Where `key_file.json` is written (oxserve's `key_file_dir`; TorchServe: the working folder).
    pub key_file_dir: PathBuf,
    /// The snapshot this configuration was restored from, with the models to load.
    pub restored_snapshot: Option<crate::snapshot::Snapshot>,
    /// Every key read, for snapshots.
    pub properties: BTreeMap<String, String>,
}

/// Keys oxserve understands (TorchServe's, plus `intra_op_threads` and `ort_library`).
const KNOWN_KEYS: &[&str] = &[
    "inference_address",
    "management_address",
    "metrics_address",
    "model_store",
    "load_models",
    "job_queue_size",
    "max_request_size",
    "max_response_size",
    "default_response_timeout",
    "default_workers_per_model",
    "limit_max_image_pixels",
    "enable_model_api",
    "disable_token_authorization",
    "enable_envvars_config",
    "number_of_netty_threads",
    "intra_op_threads",
    "number_of_gpu",
    "ort_library",
    "key_file_dir",
    "log_location",
    "request_header_timeout_ms",
    "request_body_timeout_ms",
    "max_request_parts",
    "private_key_file",
    "certificate_file",
    "grpc_inference_address",
    "grpc_management_address",
    "grpc_inference_port",
    "grpc_management_port",
    "enable_grpc_ssl",
    // Accepted and not (yet) acted on; listed so they are not reported as unknown.
    "models",
    "workflow_store",
    "netty_client_threads",
    "default_startup_timeout",
    "unregister_model_timeout",
    "decode_input_request",
    "allowed_urls",
    "use_env_allowed_urls",
    "blacklist_env_vars",
    "install_py_dep_per_model",
    "metrics_mode",
    "metrics_config",
    "model_metrics_auto_detect",
    "disable_system_metrics",
    "enable_metrics_api",
    "token_expiration_min",
    "cors_allowed_origin",
    "cors_allowed_methods",
    "cors_allowed_headers",
    "keystore",
    "keystore_pass",
    "keystore_type",
    "initial_worker_port",
    "async_logging",
    "prefer_direct_buffer",
    "service_envelope",
    "ts_open_inference_protocol",
    "vmargs",
    "plugins_path",
    "system_metrics_cmd",
    "ipex_enable",
    "cpu_launcher_enable",
    "metric_time_interval",
    "model_snapshot",
    "tsConfigFile",
    "version",
];

/// A configuration problem that stops startup.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Merges file, CLI and (optionally) environment, in TorchServe's precedence.
    pub fn load(cli: &Cli) -> Result<(Config, Vec<String>), ConfigError> {
        let environment: BTreeMap<String, String> = std::env::vars().collect();
        let log_location = environment
            .get("LOG_LOCATION")
            .filter(|value| !value.is_empty())
            .map(PathBuf::from);
        // TorchServe's order: TS_CONFIG_FILE, --ts-config, the newest snapshot, ./config.properties.
        let explicit = environment
            .get("TS_CONFIG_FILE")
            .filter(|path| !path.is_empty())
            .map(PathBuf::from)
            .or_else(|| cli.ts_config.clone());
        let snapshot = match (&explicit, cli.ncs) {
            (None, false) => {
                crate::snapshot::latest(&crate::snapshot::default_dir(log_location.as_deref()))
                    .map_err(|error| {
                        ConfigError(format!("cannot read config snapshots: {error}"))
                    })?
            }
            _ => None,
        };
        let mut properties = match (&explicit, &snapshot) {
            (Some(path), _) => read_properties_file(path)?,
            (None, Some(snapshot)) => snapshot.properties.clone(),
            (None, None) => {
                let local = Path::new("config.properties");
                if local.is_file() {
                    read_properties_file(local)?
                } else {
                    BTreeMap::new()
                }
            }
        };
        let mut warnings: Vec<String> = properties
            .keys()
            .filter(|key| !KNOWN_KEYS.contains(&key.as_str()))
            .map(|key| format!("config.properties: unknown key {key:?} is ignored"))
            .collect();
        apply_cli(cli, &mut properties);
        if properties.get("enable_envvars_config").map(String::as_str) == Some("true") {
            for (name, value) in &environment {
                if let Some(key) = name.strip_prefix("TS_") {
                    let key = key.to_ascii_lowercase();
                    // allowed_urls only with use_env_allowed_urls=true (TorchServe's guard).
                    let guarded = key == "allowed_urls"
                        && properties.get("use_env_allowed_urls").map(String::as_str)
                            != Some("true");
                    if KNOWN_KEYS.contains(&key.as_str()) && !guarded {
                        properties.insert(key, value.clone());
                    }
                }
            }
        }
        let mut config = Self::from_properties(properties, cli)?;
        let folder = |name: &str| {
            environment
                .get(name)
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        };
        if let Some(folder) = folder("LOG_LOCATION") {
            config.log_location = folder;
        }
        if let Some(folder) = folder("METRICS_LOCATION") {
            config.metrics_location = folder;
        }
        if let Some(snapshot) = snapshot {
            // A restored snapshot decides which models load; --models is ignored, as in TorchServe.
            config.load_models.clear();
            config.restored_snapshot = Some(snapshot);
        }
        if config.ort_library.is_none() && environment.contains_key("OXSERVE_ORT_LIBRARY") {
            warnings.push("OXSERVE_ORT_LIBRARY is not read by the server: use --ort-library or ORT_DYLIB_PATH".into());
        }
        Ok((config, warnings))
    }

    /// Builds a config from already-merged keys (also used by tests).
    pub fn from_properties(
        properties: BTreeMap<String, String>,
        cli: &Cli,
    ) -> Result<Config, ConfigError> {
        let reader = Reader(&properties);
        let tls = TlsSettings::from_properties(&properties)?;
        Ok(Config {
            inference_address: reader.address("inference_address", "http://127.0.0.1:8080")?,
            management_address: reader.address("management_address", "http://127.0.0.1:8081")?,
            metrics_address: reader.address("metrics_address", "http://127.0.0.1:8082")?,
            grpc_inference_address: reader.grpc_address(
                "grpc_inference_address",
                "grpc_inference_port",
                7070,
            )?,
            grpc_management_address: reader.grpc_address(
                "grpc_management_address",
                "grpc_management_port",
                7071,
            )?,
            tls,
            model_store: properties.get("model_store").map(PathBuf::from),
            load_models: properties
                .get("load_models")
                .map(|value| split_models(value))
                .unwrap_or_default(),
            models: match properties
                .get("models")
                .map(|text| text.trim())
                .filter(|text| !text.is_empty())
            {
                None => ModelsConfig::new(),
                Some(text) => serde_json::from_str(text).map_err(|error| {
                    ConfigError(format!(
                        "config key models: not valid JSON model settings: {error}"
                    ))
                })?,
            },
            job_queue_size: reader.number("job_queue_size", 100)?.max(1),
            max_request_size: reader.number("max_request_size", 6_553_500)?,
            max_response_size: reader.number("max_response_size", 6_553_500)?,
            request_header_timeout: Duration::from_millis(
                reader.number("request_header_timeout_ms", 30_000)? as u64,
            ),
            request_body_timeout: Duration::from_millis(
                reader.number("request_body_timeout_ms", 60_000)? as u64,
            ),
            max_request_parts: reader.number("max_request_parts", 64)?.max(1),
            default_response_timeout: Duration::from_secs(
                reader.number("default_response_timeout", 120)? as u64,
            ),
            default_startup_timeout: Duration::from_secs(
                reader.number("default_startup_timeout", 120)? as u64,
            ),
            default_workers_per_model: reader.number("default_workers_per_model", 0)?,
            intra_op_threads: reader.number("intra_op_threads", 0)?,
            number_of_gpu: reader.optional_number("number_of_gpu")?,
            gpus: 0,
            limit_max_image_pixels: reader.boolean("limit_max_image_pixels", true)?,
            enable_model_api: reader.boolean("enable_model_api", false)?,
            disable_token_authorization: reader.boolean("disable_token_authorization", false)?,
            ncs: cli.ncs,
            log_config: cli.log_config.clone(),
            // `LOG_LOCATION` overrides this in `load`; the `log_location` key is oxserve's.
            log_location: PathBuf::from(
                properties
                    .get("log_location")
                    .map(String::as_str)
                    .unwrap_or("logs"),
            ),
            metrics_location: PathBuf::from("logs"),
            metrics_mode: match properties.get("metrics_mode") {
                None => MetricsMode::default(),
                Some(value) => value
                    .parse()
                    .map_err(|reason| ConfigError(format!("config key metrics_mode: {reason}")))?,
            },
            enable_metrics_api: reader.boolean("enable_metrics_api", true)?,
            metric_time_interval: Duration::from_secs(
                reader.number("metric_time_interval", 60)?.max(1) as u64,
            ),
            disable_system_metrics: reader.boolean("disable_system_metrics", false)?,
            ort_library: properties.get("ort_library").map(PathBuf::from),
            io_threads: reader.number("number_of_netty_threads", 0)?,
            url_policy: crate::download::UrlPolicy::from_config(
                properties.get("allowed_urls").map(String::as_str),
                crate::download::DEFAULT_MAX_BYTES,
                crate::download::DEFAULT_TIMEOUT,
                crate::download::DEFAULT_MAX_REDIRECTS,
            )
            .map_err(ConfigError)?,
            token_expiration: crate::auth::expiration_from_config(
                properties.get("token_expiration_min").map(String::as_str),
            ),
            key_file_dir: PathBuf::from(
                properties
                    .get("key_file_dir")
                    .map(String::as_str)
                    .unwrap_or("."),
            ),
            restored_snapshot: None,
            properties,
        })
    }

    /// What logging reads from the config.
    pub fn log_settings(&self) -> crate::logging::LogSettings<'_> {
        crate::logging::LogSettings {
            log_config: self.log_config.as_deref(),
            log_location: &self.log_location,
            metrics_location: &self.metrics_location,
        }
    }

    /// The number of cores this process may use.
    pub fn cores() -> usize {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    }
}

fn read_properties_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError(format!(
            "cannot read config file {}: {error}",
            path.display()
        ))
    })?;
    crate::properties::load(&text)
        .map_err(|error| ConfigError(format!("config file {}: {error}", path.display())))
}

/// CLI flags override the file's keys.
fn apply_cli(cli: &Cli, properties: &mut BTreeMap<String, String>) {
    if let Some(store) = &cli.model_store {
        properties.insert("model_store".into(), store.display().to_string());
    }
    if !cli.models.is_empty() {
        properties.insert("load_models".into(), cli.models.join(","));
    }
    if cli.enable_model_api {
        properties.insert("enable_model_api".into(), "true".into());
    }
    if cli.disable_token_auth {
        properties.insert("disable_token_authorization".into(), "true".into());
    }
    if let Some(library) = &cli.ort_library {
        properties.insert("ort_library".into(), library.display().to_string());
    }
}

/// `all`, `a.mar,b.mar` or `a.mar b.mar`, `name=path`.
fn split_models(value: &str) -> Vec<String> {
    value
        .split([',', ' '])
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// Typed reads with errors that name the key.
struct Reader<'p>(&'p BTreeMap<String, String>);

impl Reader<'_> {
    fn number(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        match self.0.get(key) {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|_| {
                ConfigError(format!(
                    "config key {key}: {value:?} is not a non-negative integer"
                ))
            }),
        }
    }

    fn optional_number(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.0.contains_key(key) {
            true => self.number(key, 0).map(Some),
            false => Ok(None),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self
            .0
            .get(key)
            .map(|value| value.trim().to_ascii_lowercase())
        {
            None => Ok(default),
            Some(value) if value == "true" => Ok(true),
            Some(value) if value == "false" => Ok(false),
            Some(value) => Err(ConfigError(format!(
                "config key {key}: {value:?} is not true or false"
            ))),
        }
    }

    /// TorchServe's gRPC keys: a host (`127.0.0.1` when absent) and a port, kept apart.
    fn grpc_address(
        &self,
        host_key: &str,
        port_key: &str,
        default_port: u16,
    ) -> Result<SocketAddr, ConfigError> {
        let host = self
            .0
            .get(host_key)
            .map(|host| host.trim())
            .unwrap_or("127.0.0.1");
        let port = match self.0.get(port_key) {
            None => default_port,
            Some(port) => port.trim().parse().map_err(|_| {
                ConfigError(format!("config key {port_key}: {port:?} is not a port"))
            })?,
        };
        // An IPv6 literal is bracketed to be followed by a port.
        let host = match host.contains(':') && !host.starts_with('[') {
            true => format!("[{host}]"),
            false => host.to_string(),
        };
        parse_address(&format!("{host}:{port}"))
            .map_err(|reason| ConfigError(format!("config key {host_key}: {reason}")))
    }

    fn address(&self, key: &str, default: &str) -> Result<SocketAddr, ConfigError> {
        let value = self.0.get(key).map(String::as_str).unwrap_or(default);
        parse_address(value).map_err(|reason| ConfigError(format!("config key {key}: {reason}")))
    }
}

/// TLS for the listeners whose address is `https://`, and for both gRPC listeners with
/// `enable_grpc_ssl=true` (TorchServe's keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub private_key_file: PathBuf,
    pub certificate_file: PathBuf,
    pub inference: bool,
    pub management: bool,
    pub metrics: bool,
    pub grpc: bool,
}

impl TlsSettings {
    fn from_properties(properties: &BTreeMap<String, String>) -> Result<Option<Self>, ConfigError> {
        let https = |key: &str| {
            properties
                .get(key)
                .is_some_and(|value| value.trim().starts_with("https://"))
        };
        let (inference, management, metrics) = (
            https("inference_address"),
            https("management_address"),
            https("metrics_address"),
        );
        let grpc = Reader(properties).boolean("enable_grpc_ssl", false)?;
        let first = match (inference, management, metrics, grpc) {
            (true, _, _, _) => "inference_address is https://",
            (_, true, _, _) => "management_address is https://",
            (_, _, true, _) => "metrics_address is https://",
            (_, _, _, true) => "enable_grpc_ssl is true",
            _ => return Ok(None),
        };
        let file = |key: &str| {
            properties
                .get(key)
                .map(PathBuf::from)
                .ok_or_else(|| ConfigError(format!("{first}, which needs {key} (a PEM file)")))
        };
        Ok(Some(TlsSettings {
            private_key_file: file("private_key_file")?,
            certificate_file: file("certificate_file")?,
            inference,
            management,
            metrics,
            grpc,
        }))
    }
}

/// `http://host:port` or `https://host:port` (TorchServe's forms) or a bare `host:port`.
pub fn parse_address(value: &str) -> Result<SocketAddr, String> {
    let value = value.trim();
    host_port(value)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| format!("{value:?} is not an address like http://127.0.0.1:8080"))
}

/// The `host:port` of an address, without its scheme or trailing slash.
pub fn host_port(address: &str) -> &str {
    let address = address.trim();
    address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or(address)
        .trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_like_java() {
        let text = "# comment\ninference_address=http://0.0.0.0:9080\nmanagement_address: http://127.0.0.1:9081\njob_queue_size 5\nload_models=a.mar,\\\n  b.mar\n";
        let properties = crate::properties::load(text).expect("valid properties");
        assert_eq!(properties["inference_address"], "http://0.0.0.0:9080");
        assert_eq!(properties["management_address"], "http://127.0.0.1:9081");
        assert_eq!(properties["job_queue_size"], "5");
        assert_eq!(properties["load_models"], "a.mar,b.mar");
    }

    #[test]
    fn defaults_are_torchserve_defaults_on_loopback() {
        let config = Config::from_properties(BTreeMap::new(), &Cli::default()).expect("defaults");
        assert_eq!(config.inference_address.to_string(), "127.0.0.1:8080");
        assert_eq!(config.management_address.to_string(), "127.0.0.1:8081");
        assert_eq!(config.metrics_address.to_string(), "127.0.0.1:8082");
        assert_eq!(config.grpc_inference_address.to_string(), "127.0.0.1:7070");
        assert_eq!(config.grpc_management_address.to_string(), "127.0.0.1:7071");
        assert!(config.tls.is_none());
        assert_eq!(config.max_response_size, 6_553_500);
        assert_eq!(config.job_queue_size, 100);
        assert_eq!(config.max_request_size, 6_553_500);
        assert_eq!(config.default_response_timeout, Duration::from_secs(120));
        assert!(!config.enable_model_api);
        assert_eq!(config.metrics_mode, MetricsMode::Log);
        assert!(config.enable_metrics_api);
        assert_eq!(config.metric_time_interval, Duration::from_secs(60));
        assert_eq!(config.log_location, PathBuf::from("logs"));
    }

    #[test]
    fn malformed_values_name_their_key() {
        for (key, value) in [
            ("job_queue_size", "many"),
            ("enable_model_api", "yes"),
            ("metrics_mode", "statsd"),
            ("enable_metrics_api", "maybe"),
            ("inference_address", "https://127.0.0.1:1"),
            ("grpc_inference_port", "seventy"),
            ("grpc_management_address", "not a host"),
            ("enable_grpc_ssl", "yes"),
        ] {
            let properties = BTreeMap::from([(key.to_string(), value.to_string())]);
            let error = Config::from_properties(properties, &Cli::default()).expect_err(key);
            assert!(error.0.contains(key), "{error}");
        }
    }

    #[test]
    fn grpc_keys_are_host_and_port_apart() {
        let properties = BTreeMap::from([
            ("grpc_inference_address".to_string(), "0.0.0.0".to_string()),
            ("grpc_inference_port".to_string(), "9070".to_string()),
            ("grpc_management_address".to_string(), "::1".to_string()),
        ]);
        let config = Config::from_properties(properties, &Cli::default()).expect("config");
        assert_eq!(config.grpc_inference_address.to_string(), "0.0.0.0:9070");
        assert_eq!(config.grpc_management_address.to_string(), "[::1]:7071");
        let properties = BTreeMap::from([("enable_grpc_ssl".to_string(), "true".to_string())]);
        let error = Config::from_properties(properties, &Cli::default()).expect_err("no key");
        assert!(error.0.contains("enable_grpc_ssl"), "{error}");
    }

    #[test]
    fn cli_overrides_file_and_models_split() {
        let cli = Cli::try_parse_from([
            "oxserve",
            "--model-store",
            "store",
            "--models",
            "a.mar",
            "n=b.mar",
        ])
        .expect("parses");
        let mut properties = BTreeMap::from([("model_store".to_string(), "elsewhere".to_string())]);
        apply_cli(&cli, &mut properties);
        let config = Config::from_properties(properties, &cli).expect("config");
        assert_eq!(config.model_store, Some(PathBuf::from("store")));
        assert_eq!(config.load_models, vec!["a.mar", "n=b.mar"]);
    }

    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

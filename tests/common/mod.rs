//! Shared by the integration tests: starting the real server on free ports (port 0) over a
//! temporary model store filled with archives packed from the committed fixtures, with real
//! ONNX Runtime, and helpers to talk to it over real HTTP.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oxserve::config::{Cli, Config};
use oxserve::server::{self, Addresses, Listeners};
use oxserve_archiver::pack::{pack, ArchiveFormat, PackRequest};

/// Path of a committed fixture.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Path of a file of the digits example.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/digits")
        .join(name)
}

/// An archive to put in the test store.
pub struct ArchiveSpec<'a> {
    pub name: &'a str,
    pub graph: PathBuf,
    /// Built-in handler name or a handler config file.
    pub handler: String,
    /// model-config.yaml text, if any.
    pub model_config: Option<&'a str>,
    pub extra_files: Vec<PathBuf>,
    /// Model version in the manifest.
    pub version: &'a str,
    /// File name in the store; `<name>.mar` when absent.
    pub file_name: Option<&'a str>,
}

impl<'a> ArchiveSpec<'a> {
    pub fn new(name: &'a str, graph: PathBuf, handler: &str) -> Self {
        ArchiveSpec {
            name,
            graph,
            handler: handler.to_string(),
            model_config: None,
            extra_files: Vec::new(),
            version: "1.0",
            file_name: None,
        }
    }

    pub fn with_config(mut self, yaml: &'a str) -> Self {
        self.model_config = Some(yaml);
        self
    }

    /// Another version, stored under another file name.
    pub fn versioned(mut self, version: &'a str, file_name: &'a str) -> Self {
        self.version = version;
        self.file_name = Some(file_name);
        self
    }
}

/// Packs an archive into `store` with the archiver library (as oxserve-archiver would).
pub fn pack_into(store: &Path, spec: &ArchiveSpec) -> PathBuf {
    let config_file = spec.model_config.map(|yaml| {
        let dir = store.join(format!(".{}-config", spec.name));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model-config.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    });
    let staging = store.join(format!(".{}-{}-staging", spec.name, spec.version));
    let outcome = pack(&PackRequest {
        model_name: spec.name.to_string(),
        version: spec.version.into(),
        serialized_file: Some(spec.graph.clone()),
        model_file: None,
        handler: spec.handler.clone(),
        extra_files: spec
            .extra_files
            .iter()
            .map(|path| path.display().to_string())
            .collect(),
        runtime: "python".into(),
        export_path: staging.clone(),
        archive_format: ArchiveFormat::Default,
        force: true,
        requirements_file: None,
        config_file,
        ort_library: None,
        convert: Default::default(),
        carried_files: Vec::new(),
    })
    .unwrap();
    let target = store.join(
        spec.file_name
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}.mar", spec.name)),
    );
    std::fs::rename(&outcome.path, &target).unwrap();
    std::fs::remove_dir_all(&staging).unwrap();
    target
}

/// A server running in this test process.
pub struct TestServer {
    pub addresses: Addresses,
    /// `http` or `https`, per listener: inference, management, metrics.
    pub schemes: [&'static str; 3],
    pub store: tempfile::TempDir,
    /// LOG_LOCATION of this server: snapshots go to `config/` inside, key_file.json beside.
    pub logs: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl TestServer {
    /// Packs `archives` into a fresh store and starts a server loading all of them, with extra
    /// config.properties keys.
    pub async fn start(archives: &[ArchiveSpec<'_>], properties: &[(&str, &str)]) -> TestServer {
        Self::start_with(archives, properties, reqwest::Client::new()).await
    }

    /// As [`Self::start`], checking health with `client` (one that trusts a test CA, for TLS).
    pub async fn start_with(
        archives: &[ArchiveSpec<'_>],
        properties: &[(&str, &str)],
        client: reqwest::Client,
    ) -> TestServer {
        let store = tempfile::tempdir().unwrap();
        for spec in archives {
            pack_into(store.path(), spec);
        }
        let mut keys: BTreeMap<String, String> = [
            ("inference_address", "http://127.0.0.1:0"),
            ("management_address", "http://127.0.0.1:0"),
            ("metrics_address", "http://127.0.0.1:0"),
            ("grpc_inference_port", "0"),
            ("grpc_management_port", "0"),
            ("load_models", "all"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
        keys.insert("model_store".into(), store.path().display().to_string());
        // Token auth is on by default; tests of other surfaces turn it off, tests/security.rs on.
        keys.insert("disable_token_authorization".into(), "true".into());
        let logs = tempfile::tempdir().unwrap();
        keys.insert("log_location".into(), logs.path().display().to_string());
        keys.insert("key_file_dir".into(), logs.path().display().to_string());
        for (key, value) in properties {
            keys.insert(key.to_string(), value.to_string());
        }
        let config = Config::from_properties(keys, &Cli::default()).unwrap();
        let scheme = |https: fn(&oxserve::config::TlsSettings) -> bool| match &config.tls {
            Some(tls) if https(tls) => "https",
            _ => "http",
        };
        let schemes = [
            scheme(|tls| tls.inference),
            scheme(|tls| tls.management),
            scheme(|tls| tls.metrics),
        ];
        let listeners = Listeners::bind(&config).await.unwrap();
        let addresses = listeners.addresses().unwrap();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::run(config, listeners, async move {
            let _ = stopped.await;
        }));
        let server = TestServer {
            addresses,
            schemes,
            store,
            logs,
            shutdown: Some(shutdown),
            task: Some(task),
        };
        server.wait_until_healthy(&client).await;
        server
    }

    async fn wait_until_healthy(&self, client: &reqwest::Client) {
        for _ in 0..500 {
            // /ping needs no key, even with token authorization on (auth::KEYLESS_HEALTH_PATHS).
            let ping = client.get(self.url("/ping"));
            if let Ok(response) = ping.send().await {
                if response.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the server did not become healthy");
    }

    /// A URL on the inference listener.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.schemes[0], self.addresses.inference)
    }

    /// A URL on the management listener.
    pub fn management(&self, path: &str) -> String {
        format!("{}://{}{path}", self.schemes[1], self.addresses.management)
    }

    /// A URL on the metrics listener (which runs unless `enable_metrics_api=false`).
    pub fn metrics(&self, path: &str) -> String {
        let address = self.addresses.metrics.expect("the metrics API is enabled");
        format!("{}://{address}{path}", self.schemes[2])
    }

    /// The metrics API's Prometheus text.
    pub async fn metrics_text(&self) -> String {
        reqwest::Client::new()
            .get(self.metrics("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stops the server and waits until it has finished.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// Polls how many of `model`'s requests workers have taken (`oxserve_queue_seconds_count`, on
/// the metrics API) and how many wait in its queue (`pendingRequests`, describe API) until `done`
/// holds: tests wait for the server's own account, not for a fixed time that a loaded machine
/// may overrun.
pub async fn wait_for_queue(
    server: &TestServer,
    model: &str,
    what: &str,
    done: impl Fn(f64, u64) -> bool,
) {
    let client = reqwest::Client::new();
    let series = format!("oxserve_queue_seconds_count{{model_name=\"{model}\"");
    for _ in 0..500 {
        let text = server.metrics_text().await;
        let taken = if text.contains(&series) {
            metric(&text, "oxserve_queue_seconds_count", model)
        } else {
            0.0
        };
        let described: serde_json::Value = client
            .get(server.management(&format!("/models/{model}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let pending = described[0]["jobQueueStatus"]["pendingRequests"]
            .as_u64()
            .unwrap_or_else(|| panic!("no pendingRequests in {described}"));
        if done(taken, pending) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("waited 10 s for {what}");
}

/// Reads one metric's value from Prometheus text.
pub fn metric(text: &str, name: &str, model: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name) && line.contains(&format!("model_name=\"{model}\"")))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} for {model} in:\n{text}"))
}

/// Parses a float32 little-endian file.
pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        .collect()
}

/// A loopback port free now, for a server run as a separate process that must be told its ports.
/// It is drawn at random below the kernel's ephemeral range, so that no client's outgoing
/// connection and no listener on port 0 can take it before that server binds it.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let floor = low.saturating_sub(16384).max(1024);
    if low > floor {
        for _ in 0..1000 {
            let port = floor + (getrandom::u64().unwrap() % u64::from(low - floor)) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    // No room below the ephemeral range: any free port.
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops a server started in the background (`oxserve --start`, or `--foreground` as a child) when
/// the test ends, also when it fails part-way: no server outlives its test. The server must use
/// `<dir>/oxserve.pid` as its pid file.
pub struct StopOnDrop {
    dir: PathBuf,
}

impl StopOnDrop {
    pub fn new(dir: &Path) -> Self {
        StopOnDrop {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_oxserve"))
            .args(["--stop", "--pid-file"])
            .arg(self.dir.join("oxserve.pid"))
            .current_dir(&self.dir)
            .output();
    }
}

/// Posts one of the example digit PNGs to `path` on the inference listener and returns the
/// answer's text.
pub async fn digit_answer(server: &TestServer, path: &str, digit: u32) -> String {
    reqwest::Client::new()
        .post(server.url(path))
        .body(std::fs::read(example(&format!("digit_{digit}.png"))).unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A throw-away CA and a server certificate it signed for 127.0.0.1, as PEM files in `dir`:
/// (CA certificate PEM, certificate file, key file).
pub fn test_certificates(dir: &Path) -> (String, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let certificate = dir.join("server.pem");
    let key = dir.join("server.key");
    std::fs::write(&certificate, server.pem()).unwrap();
    std::fs::write(&key, server_key.serialize_pem()).unwrap();
    (ca.pem(), certificate, key)
}

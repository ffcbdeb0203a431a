//! The server under test as a separate process: the release `oxserve --foreground` binary on free
//! ports, with its own config.properties, pid file and log in a temporary folder, so that its RSS
//! and CPU are its own (not the harness's) and nothing touches the default ports or
//! `/tmp/.oxserve.pid` another oxserve on the machine may be using. Also the few /proc readings
//! and the tiny blocking HTTP calls (ping, metrics, one-off requests) the harness needs beside the
//! load generator.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Where to find the binaries and ONNX Runtime.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `target/release/oxserve`.
    pub oxserve: PathBuf,
    /// libonnxruntime.so, passed to the server with `--ort-library` so that it loads the same
    /// library as the bare runs whatever its working directory.
    pub ort_library: PathBuf,
}

/// A running `oxserve --foreground`. Dropping it kills the process (so an error in the harness
/// never leaves a server behind); [`ServerProcess::stop`] stops it the polite way.
pub struct ServerProcess {
    child: Child,
    pub inference: SocketAddr,
    /// The gRPC inference API (TorchServe's `InferenceAPIsService`).
    pub grpc_inference: SocketAddr,
    pub metrics: SocketAddr,
    log: PathBuf,
    /// Holds config.properties, the pid file and the log; removed with the server.
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts the server on `store` with every archive in it loaded, plus extra config.properties
    /// lines, and waits until `/ping` answers 200 (models loaded, workers ready).
    pub fn start(binaries: &Binaries, store: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("oxserve-bench-server-")
            .tempdir()?;
        let [inference, management, metrics, grpc_inference] = free_ports()?;
        let mut properties = format!(
            "inference_address=http://{inference}\nmanagement_address=http://{management}\nmetrics_address=http://{metrics}\ngrpc_inference_port={}\ngrpc_management_port=0\nmodel_store={}\nload_models=all\ndisable_token_authorization=true\n",
            grpc_inference.port(),
            store.display()
        );
        for line in extra {
            properties.push_str(line);
            properties.push('\n');
        }
        let config = dir.path().join("config.properties");
        std::fs::write(&config, properties)?;
        let log = dir.path().join("oxserve.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(&binaries.oxserve)
            .arg("--foreground")
            .arg("--ncs")
            .arg("--ts-config")
            .arg(&config)
            .arg("--ort-library")
            .arg(&binaries.ort_library)
            .arg("--pid-file")
            .arg(dir.path().join("oxserve.pid"))
            .current_dir(dir.path())
            // Plain log lines (no colour codes) in the log file.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", binaries.oxserve.display()))?;
        let mut server = ServerProcess {
            child,
            inference,
            grpc_inference,
            metrics,
            log,
            _dir: dir,
        };
        server.wait_until_healthy(Duration::from_secs(120))?;
        Ok(server)
    }

    fn wait_until_healthy(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "oxserve exited while starting ({status}):\n{}",
                    self.log_tail()
                );
            }
            if matches!(http_call(self.inference, "GET", "/ping", &[]), Ok((200, _))) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "oxserve was not healthy after {limit:?}:\n{}",
            self.log_tail()
        )
    }

    /// Fails (with the log's tail) when the server has exited, e.g. crashed under load.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("oxserve exited ({status}):\n{}", self.log_tail()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Counts of ERROR/WARN lines in the server's log (the access log is at INFO).
    pub fn log_problems(&self) -> (usize, usize) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let count = |level: &str| text.lines().filter(|line| line.contains(level)).count();
        (count("ERROR"), count("WARN"))
    }

    /// `(batches, rows, seconds)` the server's workers have run for `model` (seconds: inside
    /// ONNX Runtime's runs), from its metrics listener.
    pub fn batch_counters(&self, model: &str) -> anyhow::Result<(f64, f64, f64)> {
        let (_, text) = http_call(self.metrics, "GET", "/metrics", &[])?;
        let read = |name: &str| {
            text.lines()
                .find(|line| {
                    line.starts_with(name) && line.contains(&format!("model_name=\"{model}\""))
                })
                .and_then(|line| line.rsplit(' ').next())
                .and_then(|value| value.parse::<f64>().ok())
                .with_context(|| format!("no {name} for {model} in the server's metrics"))
        };
        Ok((
            read("oxserve_batches_total")?,
            read("oxserve_batch_rows_total")?,
            read("oxserve_inference_seconds_sum")?,
        ))
    }

    /// SIGTERM, then wait for the graceful shutdown (SIGKILL after 30 s).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32)
            .context("the server has no pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .context("signalling the server")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("oxserve did not stop within 30 s of SIGTERM")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Three ports the kernel says are free. They are released before the server binds them, so
/// another program could take one in between; the server would then fail to start and say so.
pub fn free_ports<const N: usize>() -> anyhow::Result<[SocketAddr; N]> {
    // All bound at once, so that they differ; released before the server binds them.
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let mut addresses = [SocketAddr::from(([127, 0, 0, 1], 0)); N];
    for (address, listener) in addresses.iter_mut().zip(&listeners) {
        *address = listener.local_addr()?;
    }
    Ok(addresses)
}

/// Resident memory of a process (VmRSS), in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(kib / 1024.0)
}

/// CPU time (user + system, all threads) a process has used so far, in seconds. `/proc` counts
/// in clock ticks; Linux's USER_HZ is 100 on every mainstream architecture.
pub fn cpu_seconds(pid: Option<u32>) -> anyhow::Result<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path)?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the state field's index 0.
    let ticks = |index: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(index)
            .context("short /proc/<pid>/stat")?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// The machine's load average (1, 5, 15 min): printed with the results, since figures taken on a
/// busy machine are not final.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); returns status and body.
/// For pings, metrics and a handful of requests, where a client library would be overkill.
pub fn http_call(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .context("not an HTTP/1.1 answer")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

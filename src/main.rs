//! `oxserve`: TorchServe's command line. `--start` runs the server in the background and returns
//! once it answers `/ping`; `--stop` stops it; `--foreground` (or no action flag) runs it here.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use oxserve::config::{Cli, Config};
use oxserve::server::{self, Listeners};

fn main() -> ExitCode {
    // Two arenas per core: enough for the threads that allocate at once (see oxserve_sys).
    oxserve_sys::limit_malloc_arenas(2 * oxserve::config::Config::cores());
    let cli = Cli::parse();
    let result = if cli.version {
        println!("oxserve {}", env!("CARGO_PKG_VERSION"));
        Ok(())
    } else if cli.stop {
        stop(&cli)
    } else if cli.start && !cli.foreground {
        start_in_background(&cli)
    } else {
        run_in_foreground(&cli)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("oxserve: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn pid_file(cli: &Cli) -> PathBuf {
    cli.pid_file
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(".oxserve.pid"))
}

fn run_in_foreground(cli: &Cli) -> anyhow::Result<()> {
    let (config, warnings) = Config::load(cli)?;
    let _log_writers = oxserve::logging::init(&config.log_settings());
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    // Starting, stopping, loading and snapshots; the listeners run on their own actix workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("oxserve-io")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let pid_path = pid_file(cli);
    let own = std::process::id() as i32;
    if let Some(pid) = running_pid(&pid_path).filter(|&pid| pid != own) {
        bail!(
            "another oxserve (pid {pid}) holds {}; stop it first, or give this one its own --pid-file",
            pid_path.display()
        );
    }
    runtime.block_on(async move {
        let listeners = Listeners::bind(&config).await.map_err(anyhow::Error::msg)?;
        std::fs::write(&pid_path, own.to_string())
            .with_context(|| format!("cannot write {}", pid_path.display()))?;
        let result = server::run(config, listeners, shutdown_signal()).await;
        // Only our own: another server may have taken the file over since.
        if recorded_pid(&pid_path) == Some(own) {
            let _ = std::fs::remove_file(&pid_path);
        }
        result.map_err(anyhow::Error::msg)
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Re-runs this program with `--foreground` as a detached process, its console output going to
/// `oxserve.log` in the log folder (`LOG_LOCATION`, else `logs/`), and returns once it answers
/// `/ping` (or exits).
fn start_in_background(cli: &Cli) -> anyhow::Result<()> {
    let (config, _) = Config::load(cli)?;
    let pid_path = pid_file(cli);
    if let Some(pid) = running_pid(&pid_path) {
        bail!("oxserve is already running (pid {pid}); stop it with `oxserve --stop`");
    }
    let log_dir = config.log_location.clone();
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    let log_path = log_dir.join("oxserve.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--start")
        .collect();
    args.push("--foreground".into());
    if cli.pid_file.is_none() {
        args.push("--pid-file".into());
        args.push(pid_path.display().to_string());
    }
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(std::env::current_exe().context("cannot find this program")?)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start the server process")?
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let probe = Probe::new(&config)?;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the server exited ({status}) while starting; see {}",
                log_path.display()
            );
        }
        if probe.healthy() {
            println!(
                "oxserve started (pid {}), logging to {}",
                child.id(),
                log_path.display()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "the server did not become healthy within 120 s; see {}",
        log_path.display()
    )
}

/// `GET /ping` on the inference listener, to tell when a server started in the background serves.
struct Probe {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    url: String,
    tls: bool,
}

impl Probe {
    fn new(config: &Config) -> anyhow::Result<Probe> {
        let tls = config.tls.as_ref().is_some_and(|tls| tls.inference);
        let scheme = if tls { "https" } else { "http" };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start an async runtime")?;
        let _entered = runtime.enter();
        // Over TLS the probe need not know whom it talks to: any answer means the server serves
        // (it loads its startup models before it does).
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .danger_accept_invalid_certs(tls)
            .build()
            .context("cannot make an HTTP client")?;
        Ok(Probe {
            runtime,
            client,
            url: format!("{scheme}://{}/ping", config.inference_address),
            tls,
        })
    }

    /// Over plain HTTP: 200 `Healthy` (`/ping` needs no key, even with token authorization on).
    fn healthy(&self) -> bool {
        let request = self.client.get(&self.url);
        match self.runtime.block_on(async { request.send().await }) {
            Ok(response) => self.tls || response.status() == 200,
            Err(_) => false,
        }
    }
}

fn recorded_pid(pid_path: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_path).ok()?.trim().parse().ok()
}

/// The pid in the pid file, if it names a live oxserve process: after a `kill -9` the file can
/// name a process that is gone, a zombie, or an unrelated program that reused the pid.
fn running_pid(pid_path: &Path) -> Option<i32> {
    let pid = recorded_pid(pid_path)?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: the state follows the last `)`.
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let program = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = program.file_name()?.to_string_lossy();
    name.starts_with("oxserve").then_some(pid)
}

/// What a process was started with, for messages.
fn command_line(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|&byte| byte == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn stop(cli: &Cli) -> anyhow::Result<()> {
    let pid_path = pid_file(cli);
    let Some(pid) = running_pid(&pid_path) else {
        let _ = std::fs::remove_file(&pid_path);
        println!("oxserve is not running");
        return Ok(());
    };
    println!("stopping oxserve (pid {pid}: {})", command_line(pid));
    let process = rustix::process::Pid::from_raw(pid).context("invalid pid")?;
    rustix::process::kill_process(process, rustix::process::Signal::TERM)
        .context("cannot signal the server")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        // A zombie (exited, not yet reaped by its parent) counts as stopped.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&pid_path);
    println!("oxserve has stopped.");
    Ok(())
}

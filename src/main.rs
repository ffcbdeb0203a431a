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
    let _log_writers = oxserve::logging::init(&config);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    // Starting, stopping, loading and snapshots; the listeners run on their own actix workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("oxserve-io")
        .on_thread_start(oxserve::cores::defer_to_workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let pid_path = pid_file(cli);
    runtime.block_on(async move {
        let listeners = Listeners::bind(&config).await.map_err(anyhow::Error::msg)?;
        std::fs::write(&pid_path, std::process::id().to_string())
            .with_context(|| format!("cannot write {}", pid_path.display()))?;
        let result = server::run(config, listeners, shutdown_signal()).await;
        let _ = std::fs::remove_file(&pid_path);
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
    let ping = format!("{}", config.inference_address);
    let key_file = config.key_file_dir.join(oxserve::auth::KEY_FILE_NAME);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the server exited ({status}) while starting; see {}",
                log_path.display()
            );
        }
        if ping_healthy(&ping, inference_key(&key_file).as_deref()) {
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

/// The inference key from key_file.json, once the server has written it (TorchServe's `/ping`
/// needs it when token authorization is on).
fn inference_key(key_file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(key_file).ok()?;
    let keys: serde_json::Value = serde_json::from_str(&text).ok()?;
    keys["inference"]["key"].as_str().map(str::to_string)
}

/// A minimal HTTP/1.1 `GET /ping` (the CLI needs no HTTP client library for this).
fn ping_healthy(address: &str, key: Option<&str>) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let authorization = key
        .map(|key| format!("Authorization: Bearer {key}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /ping HTTP/1.1\r\nHost: localhost\r\n{authorization}Connection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

fn running_pid(pid_path: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_path)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn stop(cli: &Cli) -> anyhow::Result<()> {
    let pid_path = pid_file(cli);
    let Some(pid) = running_pid(&pid_path) else {
        let _ = std::fs::remove_file(&pid_path);
        println!("oxserve is not running");
        return Ok(());
    };
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

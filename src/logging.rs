//! The process's tracing subscriber, installed once by `main`: the console plus the files
//! TorchServe's `log4j2.xml` writes, with its names and line shapes:
//!
//! | file | folder | what | line |
//! |---|---|---|---|
//! | `ts_log.log` | `LOG_LOCATION` | everything the `--log-config` filter lets through | `2024-05-30T21:46:03,123 [INFO ] thread target - message fields` |
//! | `access_log.log` | `LOG_LOCATION` | target `ACCESS_LOG` | `2024-05-30T21:46:03,123 - /127.0.0.1:53514 "POST /predictions/m HTTP/1.1" 200 17` |
//! | `model_log.log` | `LOG_LOCATION` | workers, handlers, ONNX Runtime (filtered as the console) | as `ts_log.log` |
//! | `ts_metrics.log` | `METRICS_LOCATION` | target `TS_METRICS` (`log`/`legacy` mode) | `… - Requests2XX.Count:1.0\|#Level:Host\|#hostname:h,timestamp:1717105563` |
//! | `model_metrics.log` | `METRICS_LOCATION` | target `MODEL_METRICS` | `… - HandlerTime.ms:1.2\|#ModelName:m,Level:Model\|#hostname:h,requestID:id,timestamp:…` |
//!
//! As in log4j, the named logs are also seen by the console and `ts_log.log` when the filter
//! allows (TorchServe's console shows `TS_METRICS` lines too). Every file is created at startup,
//! whatever the mode, and written in batches by a thread per file ([`buffered`]), so logging
//! never blocks the async threads nor wakes a thread per line; a folder that cannot be written is
//! reported and skipped. Files are not rotated (use logrotate with `copytruncate`).

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{self, FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::Config;

pub mod buffered;

/// The filter when `--log-config` gives none. Per-request lines (access log, metrics) go to their
/// own files only: TorchServe also echoes them to the console and ts_log.log, which costs a
/// formatted write per request on the hot path; `--log-config info` brings the echo back.
const DEFAULT_FILTER: &str = "info,ort=warn,ACCESS_LOG=warn,TS_METRICS=warn,MODEL_METRICS=warn";

/// Targets whose events also go to `model_log.log` (TorchServe's backend worker output).
const MODEL_TARGETS: &[&str] = &["oxserve::worker", "oxserve::handler", "ort"];

/// Keeps the background writers alive; dropping it flushes what they hold.
#[must_use = "dropping the guards stops the log writers"]
pub struct LogGuards {
    _console: WorkerGuard,
    _files: Vec<buffered::FlushGuard>,
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the subscriber. Problems (an unreadable folder, a bad filter) are reported on
/// stderr and logging goes on without that part.
pub fn init(config: &Config) -> LogGuards {
    let directives = filter_directives(config.log_config.as_deref());
    let user_filter = || {
        EnvFilter::try_new(&directives).unwrap_or_else(|error| {
            eprintln!("oxserve: log filter {directives:?} is invalid ({error}); using info");
            EnvFilter::new("info")
        })
    };
    let only = |target: &str| Targets::new().with_target(target, Level::TRACE);
    let model_targets = MODEL_TARGETS
        .iter()
        .fold(Targets::new(), |targets, target| {
            targets.with_target(*target, Level::TRACE)
        });
    let mut guards = Vec::new();
    let (stdout, console_guard) = tracing_appender::non_blocking(std::io::stdout());
    let mut layers: Vec<BoxedLayer> = vec![fmt::layer()
        .with_ansi(false)
        .event_format(Log4jFormat::FULL)
        .with_writer(stdout)
        .with_filter(user_filter())
        .boxed()];
    let files: [(&Path, &str, Log4jFormat, BoxedFilter); 5] = [
        (
            &config.log_location,
            "ts_log.log",
            Log4jFormat::FULL,
            Box::new(user_filter()),
        ),
        (
            &config.log_location,
            "access_log.log",
            Log4jFormat::MESSAGE,
            Box::new(only("ACCESS_LOG")),
        ),
        (
            &config.log_location,
            "model_log.log",
            Log4jFormat::FULL,
            Box::new(user_filter().and(model_targets)),
        ),
        (
            &config.metrics_location,
            "ts_metrics.log",
            Log4jFormat::MESSAGE,
            Box::new(only("TS_METRICS")),
        ),
        (
            &config.metrics_location,
            "model_metrics.log",
            Log4jFormat::MESSAGE,
            Box::new(only("MODEL_METRICS")),
        ),
    ];
    for (folder, name, format, filter) in files {
        let file = std::fs::create_dir_all(folder)
            .and_then(|()| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(folder.join(name))
            })
            .and_then(|file| buffered::BufferedFile::new(file, name));
        match file {
            Ok((writer, guard)) => {
                guards.push(guard);
                layers.push(
                    fmt::layer()
                        .with_ansi(false)
                        .event_format(format)
                        .with_writer(writer)
                        .with_filter(filter)
                        .boxed(),
                );
            }
            Err(error) => eprintln!(
                "oxserve: cannot write {}: {error}; that log is off",
                folder.join(name).display()
            ),
        }
    }
    if tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_err()
    {
        eprintln!("oxserve: a tracing subscriber was already installed");
    }
    LogGuards {
        _console: console_guard,
        _files: guards,
    }
}

type BoxedFilter = Box<dyn tracing_subscriber::layer::Filter<Registry> + Send + Sync>;

/// `--log-config`: a tracing filter (`info,oxserve=debug`), a file holding one, or TorchServe's
/// log4j2.xml, of which the `<Root level="…">` is used.
pub fn filter_directives(log_config: Option<&str>) -> String {
    let Some(value) = log_config else {
        return DEFAULT_FILTER.to_string();
    };
    let text = if Path::new(value).is_file() {
        std::fs::read_to_string(value).unwrap_or_default()
    } else {
        value.to_string()
    };
    let text = text.trim();
    if !text.starts_with('<') {
        return if text.is_empty() {
            DEFAULT_FILTER.to_string()
        } else {
            text.to_string()
        };
    }
    let level = text
        .find("<Root")
        .map(|start| &text[start..])
        .and_then(|root| root.split("level=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .map(str::to_ascii_lowercase);
    let level = match level.as_deref() {
        Some("all") => "trace",
        Some("fatal") => "error",
        Some(level @ ("trace" | "debug" | "info" | "warn" | "error" | "off")) => level,
        _ => "info",
    };
    format!("{level},ort=warn")
}

/// log4j's `%d{ISO8601} [%-5p] %t %c - %m%n` (full) or `%d{ISO8601} - %m%n` (message only).
#[derive(Debug, Clone, Copy)]
struct Log4jFormat {
    message_only: bool,
}

impl Log4jFormat {
    const FULL: Log4jFormat = Log4jFormat {
        message_only: false,
    };
    const MESSAGE: Log4jFormat = Log4jFormat { message_only: true };
}

/// log4j's `yyyy-MM-dd'T'HH:mm:ss,SSS`, written field by field: `format("%Y-…")` parses its
/// pattern again on every line, a visible cost when every request logs.
struct Stamp(chrono::DateTime<chrono::Local>);

impl std::fmt::Display for Stamp {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use chrono::{Datelike, Timelike};
        let time = &self.0;
        write!(
            formatter,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02},{:03}",
            time.year(),
            time.month(),
            time.day(),
            time.hour(),
            time.minute(),
            time.second(),
            time.timestamp_subsec_millis().min(999)
        )
    }
}

impl<S, N> FormatEvent<S, N> for Log4jFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let now = Stamp(chrono::Local::now());
        if self.message_only {
            let mut message = MessageOnly(String::new());
            event.record(&mut message);
            return writeln!(writer, "{now} - {}", message.0);
        }
        let metadata = event.metadata();
        let thread = std::thread::current();
        write!(
            writer,
            "{now} [{:<5}] {} {} - ",
            metadata.level().as_str(),
            thread.name().unwrap_or("unnamed"),
            metadata.target()
        )?;
        context.format_fields(writer.by_ref(), event)?;
        if let Some(scope) = context.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(writer, " {}{{{fields}}}", span.name())?;
                    }
                }
            }
        }
        writeln!(writer)
    }
}

/// Collects an event's message and nothing else.
struct MessageOnly(String);

impl Visit for MessageOnly {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_log4j_shaped_and_equal_chronos_own_formatting() {
        use chrono::TimeZone;
        let time = chrono::Local
            .with_ymd_and_hms(2024, 5, 3, 7, 6, 9)
            .single()
            .expect("a local time")
            + chrono::Duration::milliseconds(45);
        assert_eq!(Stamp(time).to_string(), "2024-05-03T07:06:09,045");
        let now = chrono::Local::now();
        assert_eq!(
            Stamp(now).to_string(),
            now.format("%Y-%m-%dT%H:%M:%S,%3f").to_string()
        );
    }

    #[test]
    fn log_config_takes_filters_files_and_log4j_xml() {
        assert_eq!(filter_directives(None), DEFAULT_FILTER);
        assert_eq!(filter_directives(Some("debug")), "debug");
        let dir = tempfile::tempdir().expect("temp dir");
        let xml = dir.path().join("log4j2.xml");
        std::fs::write(
            &xml,
            "<Configuration><Loggers><Logger name=\"x\" level=\"trace\"/><Root level=\"WARN\"><AppenderRef ref=\"STDOUT\"/></Root></Loggers></Configuration>",
        )
        .expect("write");
        assert_eq!(
            filter_directives(xml.to_str()),
            "warn,ort=warn",
            "the Root level, not another logger's"
        );
        let plain = dir.path().join("filter");
        std::fs::write(&plain, "oxserve=debug\n").expect("write");
        assert_eq!(filter_directives(plain.to_str()), "oxserve=debug");
    }
}

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
//!
//! The three logs that take lines on every request (access, `ts_metrics`, `model_metrics`) are
//! written by [`write_line`], not through tracing: a tracing event visits every layer and its
//! filter and is formatted twice (message, then line): 0.6–1 µs a line in a warm loop, twice that
//! written here, and more in place, five to seven lines per prediction. Their events are still emitted for the console and
//! `ts_log.log`, and cost nothing while the filter keeps them off (the default).

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{self, FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

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

/// The logs written a line per request by [`write_line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineLog {
    /// `access_log.log` (target `ACCESS_LOG`).
    Access,
    /// `ts_metrics.log` (target `TS_METRICS`).
    TsMetrics,
    /// `model_metrics.log` (target `MODEL_METRICS`).
    ModelMetrics,
}

impl LineLog {
    const ALL: [LineLog; 3] = [LineLog::Access, LineLog::TsMetrics, LineLog::ModelMetrics];

    fn file_name(self) -> &'static str {
        match self {
            LineLog::Access => "access_log.log",
            LineLog::TsMetrics => "ts_metrics.log",
            LineLog::ModelMetrics => "model_metrics.log",
        }
    }
}

/// The files of [`LineLog::ALL`], in that order, set once by [`init`].
static LINE_LOGS: OnceLock<[Option<buffered::BufferedFile>; 3]> = OnceLock::new();

/// Appends `{stamp} - {message}` (log4j's `%d{ISO8601} - %m%n`) to `log`'s file: one format
/// into a reused buffer and one short lock. Nothing happens before [`init`] or when the file
/// could not be opened.
pub fn write_line(log: LineLog, message: impl std::fmt::Display) {
    thread_local! {
        static LINE: RefCell<String> = RefCell::new(String::with_capacity(256));
    }
    let Some(file) = LINE_LOGS
        .get()
        .and_then(|files| files[log as usize].as_ref())
    else {
        return;
    };
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return;
        };
        line.clear();
        let _ = writeln!(line, "{} - {message}", stamp());
        file.append(line.as_bytes());
    });
}

/// The current local time as log4j's `yyyy-MM-dd'T'HH:mm:ss,SSS`, formatted once per
/// millisecond per thread (the time zone lookup and the field formatting are most of a line's
/// cost otherwise).
fn stamp() -> StampText {
    thread_local! {
        static LAST: Cell<(u128, StampText)> = const { Cell::new((u128::MAX, StampText([b'0'; 23]))) };
    }
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis())
        .unwrap_or(0);
    LAST.with(|last| {
        let (cached, text) = last.get();
        if cached == millis {
            return text;
        }
        let time = i64::try_from(millis)
            .ok()
            .and_then(|millis| {
                chrono::TimeZone::timestamp_millis_opt(&chrono::Local, millis).single()
            })
            .unwrap_or_else(chrono::Local::now);
        // Always 23 bytes before the year 10000.
        let text = StampText(
            <[u8; 23]>::try_from(Stamp(time).to_string().as_bytes()).unwrap_or([b'0'; 23]),
        );
        last.set((millis, text));
        text
    })
}

/// A formatted [`Stamp`], kept as bytes so that it can be cached in a `Cell`.
#[derive(Debug, Clone, Copy)]
struct StampText([u8; 23]);

impl std::fmt::Display for StampText {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(std::str::from_utf8(&self.0).unwrap_or("0000-00-00T00:00:00,000"))
    }
}

/// What to log and where: the parts of the server's config logging reads
/// ([`crate::config::Config::log_settings`]).
pub struct LogSettings<'a> {
    /// `--log-config` (see [`filter_directives`]).
    pub log_config: Option<&'a str>,
    /// `LOG_LOCATION`: event logs and the access log.
    pub log_location: &'a Path,
    /// `METRICS_LOCATION`: the metric line logs.
    pub metrics_location: &'a Path,
}

/// Installs the subscriber. Problems (an unreadable folder, a bad filter) are reported on
/// stderr and logging goes on without that part.
pub fn init(config: &LogSettings<'_>) -> LogGuards {
    let directives = filter_directives(config.log_config);
    let user_filter = || {
        EnvFilter::try_new(&directives).unwrap_or_else(|error| {
            eprintln!("oxserve: log filter {directives:?} is invalid ({error}); using info");
            EnvFilter::new("info")
        })
    };
    let model_targets = MODEL_TARGETS
        .iter()
        .fold(Targets::new(), |targets, target| {
            targets.with_target(*target, Level::TRACE)
        });
    let mut guards = Vec::new();
    let (stdout, console_guard) = tracing_appender::non_blocking(std::io::stdout());
    let mut layers: Vec<BoxedLayer> = vec![fmt::layer()
        .with_ansi(false)
        .event_format(Log4jFormat)
        .with_writer(stdout)
        .with_filter(user_filter())
        .boxed()];
    let mut open = |folder: &Path, name: &str| {
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
                Some(writer)
            }
            Err(error) => {
                eprintln!(
                    "oxserve: cannot write {}: {error}; that log is off",
                    folder.join(name).display()
                );
                None
            }
        }
    };
    let event_files: [(&str, BoxedFilter); 2] = [
        ("ts_log.log", Box::new(user_filter())),
        ("model_log.log", Box::new(user_filter().and(model_targets))),
    ];
    for (name, filter) in event_files {
        if let Some(writer) = open(config.log_location, name) {
            layers.push(
                fmt::layer()
                    .with_ansi(false)
                    .event_format(Log4jFormat)
                    .with_writer(writer)
                    .with_filter(filter)
                    .boxed(),
            );
        }
    }
    let line_files = LineLog::ALL.map(|log| {
        let folder = match log {
            LineLog::Access => config.log_location,
            LineLog::TsMetrics | LineLog::ModelMetrics => config.metrics_location,
        };
        open(folder, log.file_name())
    });
    if LINE_LOGS.set(line_files).is_err() {
        eprintln!("oxserve: the request logs were already open");
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

/// log4j's `%d{ISO8601} [%-5p] %t %c - %m%n`, then the fields of the event's spans.
#[derive(Debug, Clone, Copy)]
struct Log4jFormat;

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
        let now = stamp();
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
    fn cached_stamps_are_the_current_time() {
        let before = chrono::Local::now()
            .format("%Y-%m-%dT%H:%M:%S,%3f")
            .to_string();
        let first = stamp().to_string();
        let again = stamp().to_string();
        let after = chrono::Local::now()
            .format("%Y-%m-%dT%H:%M:%S,%3f")
            .to_string();
        for text in [&first, &again] {
            assert!(
                before <= *text && *text <= after,
                "{before} <= {text} <= {after}"
            );
        }
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

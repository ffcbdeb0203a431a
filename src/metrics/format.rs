//! The text shapes TorchServe's users parse, reproduced byte for byte:
//! - Prometheus exposition as the Java `simpleclient` 0.9 writes it (TorchServe's frontend):
//!   `# HELP`/`# TYPE` per family, even one without samples; a comma after every label, inside
//!   the braces; values as Java's `Double.toString` (`3.0`, `290371.129`, `1.0E-4`).
//! - `log` mode lines as TorchServe's `LogMetric` builds them (`ts_metrics.log`,
//!   `model_metrics.log`).
//!
//! Pure functions of their inputs; what is recorded, and when, is [`super::Metrics`]'s job.

use std::fmt::Write;

use super::catalog::Spec;
use super::registry::HistogramSnapshot;

/// Writes `value` as Java's `Double.toString` does (and Prometheus' `+Inf`, `-Inf`, `NaN`):
/// plain decimal with at least one fractional digit for magnitudes in [1e-3, 1e7), otherwise
/// `d.dddE±n`, always the shortest digits that read back as the same double.
pub fn write_java_double(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value == 0.0 {
        out.push_str(if value.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        });
    } else if (1e-3..1e7).contains(&value.abs()) {
        let start = out.len();
        let _ = write!(out, "{value}");
        if !out[start..].contains('.') {
            out.push_str(".0");
        }
    } else {
        let text = format!("{value:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        out.push_str(mantissa);
        if !mantissa.contains('.') {
            out.push_str(".0");
        }
        out.push('E');
        out.push_str(exponent);
    }
}

/// [`write_java_double`] into a new string.
pub fn java_double(value: f64) -> String {
    let mut out = String::new();
    write_java_double(&mut out, value);
    out
}

/// `# HELP` and `# TYPE` of one family.
pub fn write_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape(help, false));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// TorchServe's HELP text for its metrics.
pub fn torchserve_help(spec: &Spec) -> String {
    format!(
        "Torchserve prometheus {} metric with unit: {}",
        spec.kind.as_str(),
        spec.unit
    )
}

/// One sample line: `name{a="x",b="y",} value` (no braces when there are no labels).
pub fn write_sample<'a>(
    out: &mut String,
    name: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    value: f64,
) {
    out.push_str(name);
    let mut labels = labels.into_iter().peekable();
    if labels.peek().is_some() {
        out.push('{');
        for (label, label_value) in labels {
            let _ = write!(out, "{label}=\"{}\",", escape(label_value, true));
        }
        out.push('}');
    }
    out.push(' ');
    write_java_double(out, value);
    out.push('\n');
}

/// A histogram's `_bucket` (with `le`), `_count` and `_sum` lines, in simpleclient's order.
pub fn write_histogram(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    snapshot: &HistogramSnapshot,
) {
    let bucket_name = format!("{name}_bucket");
    for (bound, count) in &snapshot.buckets {
        let le = java_double(*bound);
        let with_le = labels.iter().copied().chain([("le", le.as_str())]);
        write_sample(out, &bucket_name, with_le, *count as f64);
    }
    write_sample(
        out,
        &format!("{name}_count"),
        labels.iter().copied(),
        snapshot.count as f64,
    );
    write_sample(
        out,
        &format!("{name}_sum"),
        labels.iter().copied(),
        snapshot.sum,
    );
}

/// Label values escape `\`, `"` and newlines; HELP texts only `\` and newlines.
fn escape(text: &str, quotes: bool) -> std::borrow::Cow<'_, str> {
    if !text.contains(['\\', '\n', '"']) {
        return text.into();
    }
    let mut escaped = String::with_capacity(text.len() + 2);
    for character in text.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '"' if quotes => escaped.push_str("\\\""),
            other => escaped.push(other),
        }
    }
    escaped.into()
}

/// A `log`-mode line, as TorchServe's `LogMetric`:
/// `Name.Unit:value|#Dim1:v1,Dim2:v2|#hostname:h[,requestID:ids],timestamp:seconds`.
/// `values` are the dimension values without the host name.
pub fn log_line(
    spec: &Spec,
    values: &[&str],
    hostname: &str,
    value: f64,
    request_ids: Option<&str>,
    timestamp: u64,
) -> String {
    let mut line = String::with_capacity(96);
    let _ = write!(line, "{}.{}:", spec.name, spec.unit);
    write_java_double(&mut line, value);
    line.push_str("|#");
    for (index, (name, value)) in spec.labels.iter().zip(values).enumerate() {
        if index > 0 {
            line.push(',');
        }
        let _ = write!(line, "{name}:{value}");
    }
    let _ = write!(line, "|#hostname:{hostname}");
    if let Some(ids) = request_ids {
        let _ = write!(line, ",requestID:{ids}");
    }
    let _ = write!(line, ",timestamp:{timestamp}");
    line
}

/// `?name[]=a&name[]=b`: which families to list (all when none is named), as simpleclient's
/// `filteredMetricFamilySamples`. A histogram is named by its family name or any of its sample
/// names (`_bucket`, `_count`, `_sum`).
#[derive(Debug, Clone, Default)]
pub struct NameFilter {
    names: Vec<String>,
}

impl NameFilter {
    pub fn new(names: Vec<String>) -> Self {
        NameFilter { names }
    }

    pub fn includes(&self, family: &str) -> bool {
        self.names.is_empty() || self.names.iter().any(|name| name == family)
    }

    pub fn includes_histogram(&self, family: &str) -> bool {
        self.includes(family)
            || self.names.iter().any(|name| {
                name.strip_prefix(family)
                    .is_some_and(|suffix| matches!(suffix, "_bucket" | "_count" | "_sum"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::super::catalog;
    use super::*;

    #[test]
    fn doubles_print_as_java_does() {
        for (value, text) in [
            (3.0, "3.0"),
            (0.0, "0.0"),
            (290371.129, "290371.129"),
            (20.054508209228516, "20.054508209228516"),
            (0.001, "0.001"),
            (0.0001, "1.0E-4"),
            (0.00025, "2.5E-4"),
            (1e7, "1.0E7"),
            (12345678.0, "1.2345678E7"),
            (9999999.0, "9999999.0"),
            (-2.5, "-2.5"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(java_double(value), text, "{value}");
        }
    }

    #[test]
    fn samples_have_the_java_clients_trailing_comma() {
        let mut out = String::new();
        write_header(
            &mut out,
            "ts_inference_requests_total",
            &torchserve_help(&catalog::INFERENCE_REQUESTS_TOTAL),
            "counter",
        );
        write_sample(
            &mut out,
            "ts_inference_requests_total",
            [
                ("model_name", "resnet18"),
                ("model_version", "default"),
                ("hostname", "h"),
            ],
            3.0,
        );
        write_sample(&mut out, "bare", [], 1.5);
        assert_eq!(
            out,
            "# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: Count\n\
             # TYPE ts_inference_requests_total counter\n\
             ts_inference_requests_total{model_name=\"resnet18\",model_version=\"default\",hostname=\"h\",} 3.0\n\
             bare 1.5\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = String::new();
        write_header(&mut out, "m", "a \\ b\nc \"q\"", "gauge");
        write_sample(&mut out, "m", [("l", "x\"y\\z\nw")], 1.0);
        assert_eq!(
            out,
            "# HELP m a \\\\ b\\nc \"q\"\n# TYPE m gauge\nm{l=\"x\\\"y\\\\z\\nw\",} 1.0\n"
        );
    }

    #[test]
    fn histograms_list_buckets_count_and_sum() {
        let snapshot = HistogramSnapshot {
            buckets: vec![(0.5, 1), (1.0, 2), (f64::INFINITY, 3)],
            count: 3,
            sum: 4.25,
        };
        let mut out = String::new();
        write_histogram(&mut out, "h", &[("model_name", "m")], &snapshot);
        assert_eq!(
            out,
            "h_bucket{model_name=\"m\",le=\"0.5\",} 1.0\n\
             h_bucket{model_name=\"m\",le=\"1.0\",} 2.0\n\
             h_bucket{model_name=\"m\",le=\"+Inf\",} 3.0\n\
             h_count{model_name=\"m\",} 3.0\n\
             h_sum{model_name=\"m\",} 4.25\n"
        );
    }

    #[test]
    fn log_lines_are_torchserves() {
        assert_eq!(
            log_line(
                &catalog::REQUESTS_4XX,
                &["Host"],
                "h",
                1.0,
                None,
                1717105563
            ),
            "Requests4XX.Count:1.0|#Level:Host|#hostname:h,timestamp:1717105563"
        );
        assert_eq!(
            log_line(
                &catalog::INFERENCE_LATENCY,
                &["m", "default"],
                "h",
                1234.5,
                None,
                7
            ),
            "ts_inference_latency_microseconds.Microseconds:1234.5|#model_name:m,model_version:default|#hostname:h,timestamp:7"
        );
        assert_eq!(
            log_line(
                &catalog::HANDLER_TIME,
                &["m", "Model"],
                "h",
                82.93,
                Some("a,b"),
                7
            ),
            "HandlerTime.ms:82.93|#ModelName:m,Level:Model|#hostname:h,requestID:a,b,timestamp:7"
        );
    }

    #[test]
    fn name_filters_match_families_and_histogram_samples() {
        let all = NameFilter::default();
        assert!(all.includes("anything"));
        let some = NameFilter::new(vec![
            "QueueTime".into(),
            "oxserve_queue_seconds_count".into(),
        ]);
        assert!(some.includes("QueueTime"));
        assert!(!some.includes("Requests2XX"));
        assert!(some.includes_histogram("oxserve_queue_seconds"));
        assert!(!some.includes_histogram("oxserve_inference_seconds"));
    }
}

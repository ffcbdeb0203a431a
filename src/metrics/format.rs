//! The `log` mode lines as TorchServe's `LogMetric` builds them (`ts_metrics.log`,
//! `model_metrics.log`), values printed as Java's `Double.toString`. A pure function of its
//! inputs; what is recorded, and when, is [`super::Metrics`]'s job. (`/metrics` text is the
//! exporter's.)

use std::fmt::Write;

use super::catalog::Spec;

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
}

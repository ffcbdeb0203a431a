//! Test support: `/metrics` text must be the standard Prometheus text format (0.0.4), line by
//! line, and read whole by a standard parser (`prometheus-parse`).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use regex::Regex;

/// Panics unless `text` is well-formed exposition: per family a HELP line, its TYPE line, then
/// only that family's samples (a histogram's `_bucket` with `le`, `_sum`, `_count`); label sets
/// without a trailing comma; Go-parsable values; every family once; and the parser reads every
/// sample line.
pub fn exposition(text: &str) {
    let name = r"[a-zA-Z_:][a-zA-Z0-9_:]*";
    let help = Regex::new(&format!(r"^# HELP ({name}) (?:[^\\\n]|\\[\\n])*$")).unwrap();
    let kind = Regex::new(&format!(
        r"^# TYPE ({name}) (counter|gauge|histogram|summary|untyped)$"
    ))
    .unwrap();
    let label = r#"[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*""#;
    let sample = Regex::new(&format!(
        r"^({name})(?:\{{((?:{label})(?:,{label})*)?\}})? (\S+)$"
    ))
    .unwrap();
    let number =
        Regex::new(r"^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)$").unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "no final newline");
    let mut helped: Option<String> = None;
    let mut family: Option<(String, String)> = None;
    let mut seen = HashSet::new();
    let mut sample_lines = 0;
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(captures) = help.captures(line) {
            assert!(helped.is_none(), "two HELP lines: {line}");
            helped = Some(captures[1].to_string());
            continue;
        }
        if let Some(captures) = kind.captures(line) {
            assert_eq!(helped.take().as_deref(), Some(&captures[1]), "{line}");
            assert!(seen.insert(captures[1].to_string()), "{line} twice");
            family = Some((captures[1].to_string(), captures[2].to_string()));
            continue;
        }
        assert!(helped.is_none(), "HELP without TYPE before {line}");
        let captures = sample
            .captures(line)
            .unwrap_or_else(|| panic!("not an exposition line: {line:?}"));
        let (family_name, family_kind) = family.as_ref().expect("a sample before any TYPE");
        let sample_name = &captures[1];
        let labels = captures.get(2).map_or("", |labels| labels.as_str());
        match family_kind.as_str() {
            "histogram" => {
                let suffix = sample_name.strip_prefix(family_name.as_str());
                assert!(
                    matches!(suffix, Some("_bucket" | "_count" | "_sum")),
                    "{line}"
                );
                let has_le = labels.starts_with("le=\"") || labels.contains(",le=\"");
                assert_eq!(suffix == Some("_bucket"), has_le, "{line}");
            }
            _ => assert_eq!(sample_name, family_name, "{line}"),
        }
        assert!(number.is_match(&captures[3]), "{line}");
        sample_lines += 1;
    }
    assert!(helped.is_none(), "a HELP line at the end");
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).unwrap();
    let parsed: usize = scrape
        .samples
        .iter()
        .map(|sample| match &sample.value {
            // Its buckets, `_sum` and `_count` (the last two are samples of their own).
            prometheus_parse::Value::Histogram(buckets) => buckets.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(parsed, sample_lines, "the parser read every sample line");
}

#[test]
fn the_check_fails_on_java_quirks_and_stray_lines() {
    let good = "# HELP a A.\n# TYPE a counter\na{l=\"x\",m=\"y\"} 1\n\n\
                # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
                h_sum 3.25\nh_count 2\n";
    exposition(good);
    for bad in [
        "# HELP a A.\n# TYPE a counter\na{l=\"x\",} 1\n",
        "# HELP a A.\n# TYPE a counter\na 1.0E-4x\n",
        "# HELP a A.\n# TYPE a counter\nb 1\n",
        "# HELP a A.\n# TYPE a counter\na 1\n# HELP a A.\n# TYPE a counter\n",
        "a 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket 1\n",
        "# HELP a A.\n# TYPE a counter\na 1",
    ] {
        let failed = std::panic::catch_unwind(|| exposition(bad)).is_err();
        assert!(failed, "accepted {bad:?}");
    }
}

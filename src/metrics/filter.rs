//! Choosing what `/metrics` lists from the exporter's text: `?name[]=` ([`NameFilter`]) and the
//! split of that text into families ([`families`]), so that whole families (HELP, TYPE and
//! samples) can be kept, dropped or ordered. The text is the exporter's own: one HELP and one
//! TYPE line per family, then its samples, blank lines between families.

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

    /// Whether `family` is listed.
    pub fn includes_family(&self, family: &Family<'_>) -> bool {
        match family.kind {
            "histogram" => self.includes_histogram(family.name),
            _ => self.includes(family.name),
        }
    }
}

/// One family of the exporter's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Family<'a> {
    pub name: &'a str,
    /// The TYPE line's type (`counter`, `gauge`, `histogram`, ...).
    pub kind: &'a str,
    /// Its `#` lines (HELP, TYPE), in order.
    pub header: Vec<&'a str>,
    /// Its sample lines, in order.
    pub samples: Vec<&'a str>,
}

impl Family<'_> {
    /// Appends the family's lines to `out`, each ending in a newline.
    pub fn write_to(&self, out: &mut String) {
        for line in self.header.iter().chain(&self.samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
}

/// The families of `text`, in its order; blank lines are dropped. A `# HELP` or `# TYPE` line
/// of another name starts a family.
pub fn families(text: &str) -> Vec<Family<'_>> {
    let mut families: Vec<Family<'_>> = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let comment = line
            .strip_prefix("# HELP ")
            .map(|rest| (rest, false))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| (rest, true)));
        match comment {
            Some((rest, is_type)) => {
                let mut words = rest.splitn(2, ' ');
                let name = words.next().unwrap_or_default();
                if families.last().is_none_or(|family| family.name != name) {
                    families.push(Family {
                        name,
                        kind: "untyped",
                        header: Vec::new(),
                        samples: Vec::new(),
                    });
                }
                if let Some(family) = families.last_mut() {
                    if is_type {
                        family.kind = words.next().unwrap_or("untyped").trim();
                    }
                    family.header.push(line);
                }
            }
            None => match families.last_mut() {
                Some(family) => family.samples.push(line),
                None => families.push(Family {
                    name: line.split(['{', ' ']).next().unwrap_or_default(),
                    kind: "untyped",
                    header: Vec::new(),
                    samples: vec![line],
                }),
            },
        }
    }
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_total A.\n# TYPE a_total counter\na_total{l=\"x\"} 1\n\n\
                        # HELP h_seconds H.\n# TYPE h_seconds histogram\n\
                        h_seconds_bucket{le=\"1\"} 1\nh_seconds_bucket{le=\"+Inf\"} 1\n\
                        h_seconds_sum 0.5\nh_seconds_count 1\n\n";

    #[test]
    fn text_splits_into_families_with_their_lines() {
        let split = families(TEXT);
        assert_eq!(split.len(), 2);
        assert_eq!((split[0].name, split[0].kind), ("a_total", "counter"));
        assert_eq!(
            split[0].header,
            ["# HELP a_total A.", "# TYPE a_total counter"]
        );
        assert_eq!(split[0].samples, ["a_total{l=\"x\"} 1"]);
        assert_eq!((split[1].name, split[1].kind), ("h_seconds", "histogram"));
        assert_eq!(split[1].samples.len(), 4);
        let mut out = String::new();
        split[1].write_to(&mut out);
        assert!(out.starts_with("# HELP h_seconds H.\n# TYPE h_seconds histogram\n"));
        assert!(out.ends_with("h_seconds_count 1\n"));
    }

    #[test]
    fn name_filters_match_families_and_histogram_samples() {
        let all = NameFilter::default();
        assert!(all.includes("anything"));
        let some = NameFilter::new(vec!["QueueTime".into(), "h_seconds_count".into()]);
        assert!(some.includes("QueueTime"));
        assert!(!some.includes("Requests2XX"));
        assert!(some.includes_histogram("h_seconds"));
        assert!(!some.includes_histogram("oxserve_inference_seconds"));
        let split = families(TEXT);
        assert!(!some.includes_family(&split[0]));
        assert!(some.includes_family(&split[1]));
        // A sample name only names a histogram.
        let by_sample = NameFilter::new(vec!["a_total_count".into()]);
        assert!(!by_sample.includes_family(&split[0]));
    }
}

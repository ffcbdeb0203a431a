//! One server's Prometheus recorder: a `metrics-exporter-prometheus` recorder of its own (never
//! the process-wide one, so that servers sharing a process keep separate counts), set up with
//! every family's HELP text and the oxserve histograms' buckets, and kept drained by an upkeep
//! thread. Series handles come from it through the `metrics::Recorder` trait.

use std::sync::{Arc, Weak};
use std::time::Duration;

use ::metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use super::{catalog, model};

/// How often recorded histogram samples are folded into their buckets between scrapes (the
/// exporter keeps each sample until then).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// What every series is registered with (the exporter does not use it).
const METADATA: Metadata<'static> = Metadata::new("oxserve::metrics", Level::INFO, None);

/// A server's recorder and the handle that renders it.
#[derive(Debug)]
pub struct Exporter {
    recorder: PrometheusRecorder,
    /// Shared with the upkeep thread as a `Weak`: the thread ends once the exporter is dropped.
    handle: Arc<PrometheusHandle>,
}

impl Exporter {
    pub fn new() -> Self {
        // Only empty buckets fail, and every family has some (a test checks).
        let builder = model::HISTOGRAMS
            .iter()
            .try_fold(PrometheusBuilder::new(), |builder, family| {
                builder.set_buckets_for_metric(Matcher::Full(family.name.into()), family.buckets)
            })
            .unwrap_or_else(|error| {
                tracing::error!(
                    "histogram buckets rejected ({error}); histograms render as summaries"
                );
                PrometheusBuilder::new()
            });
        let recorder = builder.build_recorder();
        for spec in catalog::ALL {
            let help = spec.help().into();
            match spec.kind {
                catalog::Kind::Counter => recorder.describe_counter(spec.name.into(), None, help),
                catalog::Kind::Gauge => recorder.describe_gauge(spec.name.into(), None, help),
            }
        }
        for family in model::HISTOGRAMS {
            recorder.describe_histogram(family.name.into(), None, family.help.into());
        }
        for (name, help) in model::COUNTERS {
            recorder.describe_counter((*name).into(), None, (*help).into());
        }
        for (name, help) in model::GAUGES {
            recorder.describe_gauge((*name).into(), None, (*help).into());
        }
        let handle = Arc::new(recorder.handle());
        spawn_upkeep(Arc::downgrade(&handle));
        Exporter { recorder, handle }
    }

    pub fn counter<'a>(
        &self,
        name: &'static str,
        labels: impl IntoIterator<Item = (&'static str, &'a str)>,
    ) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    pub fn gauge<'a>(
        &self,
        name: &'static str,
        labels: impl IntoIterator<Item = (&'static str, &'a str)>,
    ) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    pub fn histogram<'a>(
        &self,
        name: &'static str,
        labels: impl IntoIterator<Item = (&'static str, &'a str)>,
    ) -> Histogram {
        self.recorder
            .register_histogram(&key(name, labels), &METADATA)
    }

    /// Every series, as the exporter writes Prometheus text (families in no particular order).
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

impl Default for Exporter {
    fn default() -> Self {
        Exporter::new()
    }
}

/// The series key: labels in the order given (the order they are rendered in).
fn key<'a>(name: &'static str, labels: impl IntoIterator<Item = (&'static str, &'a str)>) -> Key {
    let labels: Vec<Label> = labels
        .into_iter()
        .map(|(label, value)| Label::new(label, value.to_string()))
        .collect();
    Key::from_parts(name, labels)
}

/// Runs the exporter's upkeep every [`UPKEEP_EVERY`] until the handle is gone.
fn spawn_upkeep(handle: Weak<PrometheusHandle>) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            match handle.upgrade() {
                Some(handle) => handle.run_upkeep(),
                None => return,
            }
        });
    if let Err(error) = spawned {
        tracing::warn!("cannot start the metrics upkeep thread ({error}); histograms are folded at each scrape only");
    }
}

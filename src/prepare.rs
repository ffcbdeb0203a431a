//! Where a request's items are pre-processed. Small items (a 28×28 PNG, a JSON tensor) are
//! pre-processed by the worker that runs them: a thread hop would cost more than the work. Large
//! ones (photos) are decoded on tokio's blocking pool as their requests arrive, at most one per
//! core at a time, so that decoding overlaps the model's runs instead of leaving ONNX Runtime's
//! threads idle between batches; the worker then only stacks and runs them.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ::metrics::Histogram;
use tokio::sync::Semaphore;

use crate::error::ServeError;
use crate::handler::{Handler, ItemInput, Prepared, RequestItem};

/// Items at least this large are pre-processed ahead of the worker.
pub const AHEAD_BYTES: usize = 16 * 1024;

/// A queued item: as received, already turned into graph inputs by the handler, or graph inputs
/// the request sent as tensors (answered with the raw output tensors, no post-processing).
#[derive(Debug)]
pub enum Payload {
    Raw(RequestItem),
    Ready(Prepared),
    Tensors(Prepared),
}

impl From<ItemInput> for Payload {
    fn from(item: ItemInput) -> Self {
        match item {
            ItemInput::Bytes(item) => Payload::Raw(item),
            ItemInput::Tensors(prepared) => Payload::Tensors(prepared),
        }
    }
}

/// Whether any of the request's items is pre-processed ahead.
pub fn goes_ahead(items: &[ItemInput]) -> bool {
    items.iter().any(|item| match item {
        ItemInput::Bytes(item) => item.bytes.len() >= AHEAD_BYTES,
        ItemInput::Tensors(_) => false,
    })
}

/// Pre-processes the request's large items on the blocking pool (call it when [`goes_ahead`]);
/// small ones stay raw. A bad item fails the request here (400), before it is queued. Returns the
/// payloads and the pre-processing time spent here.
pub async fn ahead(
    handler: &Arc<Handler>,
    items: Vec<ItemInput>,
    histogram: &Histogram,
) -> Result<(Vec<Payload>, Duration), ServeError> {
    let mut payloads = Vec::with_capacity(items.len());
    let mut spent = Duration::ZERO;
    for item in items {
        let item: RequestItem = match item {
            ItemInput::Bytes(item) if item.bytes.len() >= AHEAD_BYTES => item,
            small_or_tensors => {
                payloads.push(small_or_tensors.into());
                continue;
            }
        };
        let _permit = permits()
            .acquire()
            .await
            .map_err(|_| ServeError::Internal("the pre-processing pool is closed".into()))?;
        let handler = Arc::clone(handler);
        let span = tracing::Span::current();
        let (prepared, took) = tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let started = Instant::now();
            let prepared = handler.preprocess(&item);
            (prepared, started.elapsed())
        })
        .await
        .map_err(|_| ServeError::Internal("pre-processing panicked".into()))?;
        spent += took;
        histogram.record(took.as_secs_f64());
        payloads.push(Payload::Ready(prepared?));
    }
    Ok((payloads, spent))
}

/// One permit per core: more decodes at once would only take turns on the cores.
fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| Semaphore::new(crate::config::Config::cores()))
}

//! Stopping a run from another thread. The worker makes one [`CancelToken`] per run and gives a
//! clone to every request in it; a request that times out (or whose client went away) cancels
//! it, ONNX Runtime stops at its next check, and the run fails with
//! [`super::BackendError::Cancelled`]. Holders need not know ONNX Runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ort::session::RunOptions;

use super::BackendError;

/// A handle on one run's options; clones share them.
#[derive(Clone)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

struct Inner {
    options: RunOptions,
    /// Set by [`CancelToken::cancel`]: tells a failed run's cause without reading ORT's message.
    cancelled: AtomicBool,
}

impl CancelToken {
    /// A token for one run.
    pub fn new() -> Result<CancelToken, BackendError> {
        let options = RunOptions::new()
            .map_err(|error| BackendError::setup("cannot create run options", error))?;
        Ok(CancelToken {
            inner: Arc::new(Inner {
                options,
                cancelled: AtomicBool::new(false),
            }),
        })
    }

    /// Asks ONNX Runtime to stop the run (or not to start it).
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
        let _ = self.inner.options.terminate();
    }

    /// Whether [`Self::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    pub(super) fn options(&self) -> &RunOptions {
        &self.inner.options
    }
}

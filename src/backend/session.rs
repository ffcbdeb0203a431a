//! One worker's session: named host tensors in, named host tensors out, cancellable.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use ort::session::builder::PrepackedWeights;
use ort::session::SessionInputValue;

use super::convert::{from_ort, into_ort};
use super::{BackendError, CancelToken};
use crate::tensor::HostTensor;

/// A session and the shared buffers it reads its weights from. `Session::run` takes `&mut self`
/// in ort (concurrent runs on one session are not safe), so each worker owns one. Fields drop in
/// order: the session before the bytes and the pre-packed container it points into.
pub struct Session {
    session: ort::session::Session,
    _shared: Option<(Arc<[u8]>, PrepackedWeights)>,
}

impl Session {
    pub(super) fn new(
        session: ort::session::Session,
        shared: Option<(Arc<[u8]>, PrepackedWeights)>,
    ) -> Session {
        Session {
            session,
            _shared: shared,
        }
    }

    /// Runs the graph on `inputs` (moved in, not copied) and copies every output out. Blocking:
    /// call it on a worker thread. `cancel` stops the run from another thread.
    pub fn run(
        &mut self,
        inputs: BTreeMap<String, HostTensor>,
        cancel: &CancelToken,
    ) -> Result<BTreeMap<String, HostTensor>, BackendError> {
        let mut values: Vec<(Cow<'static, str>, SessionInputValue<'static>)> =
            Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            values.push((Cow::Owned(name), SessionInputValue::from(into_ort(tensor)?)));
        }
        let outputs = self
            .session
            .run_with_options(values, cancel.options())
            .map_err(|error| BackendError::from_run(&error, cancel.is_cancelled()))?;
        let mut host = BTreeMap::new();
        for (name, value) in outputs.iter() {
            host.insert(name.to_string(), from_ort(&value)?);
        }
        Ok(host)
    }

    /// The graph's input names, in its order.
    pub fn input_names(&self) -> Vec<String> {
        let inputs = self.session.inputs();
        inputs
            .iter()
            .map(|input| input.name().to_string())
            .collect()
    }

    /// The ort session itself, for callers that measure or check ONNX Runtime without the
    /// server's tensors (the benchmark's bare runs, tests comparing sessions).
    pub fn ort_mut(&mut self) -> &mut ort::session::Session {
        &mut self.session
    }
}

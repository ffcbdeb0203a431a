//! What every request handler can reach: the server's config, its models, token authorization,
//! snapshots and metrics. Built once by [`crate::server`], shared by the transports.

use std::sync::Arc;

use crate::auth::TokenAuth;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::Registry;
use std::sync::Mutex;

/// What every request handler can reach.
pub struct AppState {
    pub config: Config,
    pub registry: Registry,
    /// Token authorization (TorchServe's key_file.json), or disabled.
    pub auth: Arc<TokenAuth>,
    /// Serialises snapshot writes ([`crate::snapshotter`]): concurrent management calls must not
    /// interleave files. Held on a blocking thread while one is captured and written, never
    /// across an await.
    pub snapshot_lock: Mutex<()>,
    /// TorchServe's metrics, shared with every model's workers.
    pub metrics: Arc<Metrics>,
}

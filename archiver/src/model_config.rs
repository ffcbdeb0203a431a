//! TorchServe's `model-config.yaml` (`--config-file`): the frontend keys TorchServe reads
//! (`frontend/archive/.../ModelConfig.java`), typed and validated; every other top-level key is a
//! backend setting the handler may read and is kept as is. Values here sit between
//! config.properties and management-API parameters in precedence; the server applies them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ArchiveError, Result};

/// The frontend keys of model-config.yaml. Absent keys leave the server's defaults in place.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelConfig {
    pub min_workers: Option<u32>,
    pub max_workers: Option<u32>,
    pub batch_size: Option<u32>,
    /// Milliseconds to wait for a batch to fill after its first request.
    pub max_batch_delay: Option<u64>,
    /// Seconds a request may take before it is failed.
    pub response_timeout: Option<u64>,
    pub startup_timeout: Option<u64>,
    /// `cpu`, `gpu` or `neuron` (the server runs neuron models on the CPU, as TorchServe runs
    /// any type but gpu).
    pub device_type: Option<String>,
    /// GPUs the workers are spread over, round robin.
    pub device_ids: Option<Vec<u32>>,
    pub parallel_type: Option<String>,
    pub parallel_level: Option<u32>,
    pub max_retry_timeout_in_sec: Option<u64>,
    pub client_timeout_in_mills: Option<u64>,
    pub job_queue_size: Option<u32>,
    pub use_job_ticket: Option<bool>,
    pub continuous_batching: Option<bool>,
    pub use_venv: Option<bool>,
    pub sequence_max_idle_m_sec: Option<u64>,
    pub sequence_timeout_m_sec: Option<u64>,
    pub max_num_sequence: Option<u32>,
    pub max_sequence_job_queue_size: Option<u32>,
    /// Everything else: backend settings, as TorchServe passes them to the handler.
    #[serde(flatten)]
    pub backend: BTreeMap<String, serde_yaml::Value>,
}

impl ModelConfig {
    /// Parses and validates the YAML text; `source_name` appears in error messages.
    pub fn parse(source_name: &str, bytes: &[u8]) -> Result<Self> {
        let invalid = |reason: String| ArchiveError::InvalidModelConfig {
            path: source_name.to_string(),
            reason,
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ModelConfig::default());
        }
        let config: ModelConfig =
            serde_yaml::from_slice(bytes).map_err(|error| invalid(error.to_string()))?;
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// Checks the values TorchServe would reject or that cannot work.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if let (Some(min), Some(max)) = (self.min_workers, self.max_workers) {
            if max < min {
                return Err(format!(
                    "maxWorkers ({max}) cannot be less than minWorkers ({min})"
                ));
            }
        }
        if self.batch_size == Some(0) {
            return Err("batchSize must be at least 1".to_string());
        }
        if self.job_queue_size == Some(0) {
            return Err("jobQueueSize must be at least 1".to_string());
        }
        if let Some(device) = &self.device_type {
            if !matches!(device.as_str(), "cpu" | "gpu" | "neuron") {
                return Err(format!(
                    "deviceType {device:?} is not one of cpu, gpu, neuron"
                ));
            }
        }
        if let Some(parallel) = &self.parallel_type {
            if !matches!(parallel.as_str(), "pp" | "tp" | "pptp" | "custom" | "") {
                return Err(format!(
                    "parallelType {parallel:?} is not one of pp, tp, pptp, custom"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchserve_keys_are_typed_and_backend_keys_kept() {
        let yaml = b"minWorkers: 1\nmaxWorkers: 2\nbatchSize: 8\nmaxBatchDelay: 50\nresponseTimeout: 120\ndeviceType: cpu\nhandler:\n  threshold: 0.3\n";
        let config = ModelConfig::parse("model-config.yaml", yaml).expect("parses");
        assert_eq!(config.batch_size, Some(8));
        assert_eq!(config.max_batch_delay, Some(50));
        assert!(config.backend.contains_key("handler"));
    }

    #[test]
    fn bad_values_name_the_key() {
        let error = ModelConfig::parse("c.yaml", b"batchSize: eight\n").expect_err("type");
        assert!(error.to_string().contains("batchSize"), "{error}");
        let error =
            ModelConfig::parse("c.yaml", b"minWorkers: 3\nmaxWorkers: 1\n").expect_err("order");
        assert!(error.to_string().contains("maxWorkers"), "{error}");
        let error = ModelConfig::parse("c.yaml", b"deviceType: tpu\n").expect_err("device");
        assert!(error.to_string().contains("deviceType"), "{error}");
    }
}

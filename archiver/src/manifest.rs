//! `MAR-INF/MANIFEST.json`: the one definition of the manifest, shared by the archiver (writes it)
//! and the server (reads it). TorchServe's fields keep their names and meaning so TorchServe's own
//! readers still parse our archives; everything oxserve adds lives under the extra `oxserve` key,
//! which those readers ignore.

use serde::{Deserialize, Serialize};

use crate::error::{ArchiveError, Result};
use crate::signature::Signature;

/// Path of the manifest inside an archive.
pub const MANIFEST_PATH: &str = "MAR-INF/MANIFEST.json";
/// Path of the resolved handler config inside an archive.
pub const HANDLER_CONFIG_PATH: &str = "MAR-INF/handler.json";
/// Version of the `oxserve` section; bumped when its meaning changes.
pub const FORMAT_VERSION: u32 = 1;

/// The whole manifest, in TorchServe's field order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// `dd/mm/YYYY HH:MM:SS` in local time, as torch-model-archiver writes it.
    pub created_on: String,
    /// TorchServe's runtime type (`python`, `python3`, `LSP`); oxserve always runs ONNX Runtime.
    pub runtime: String,
    pub model: ModelSection,
    pub archiver_version: String,
    /// oxserve's additions. Absent in archives made by torch-model-archiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oxserve: Option<OxserveSection>,
}

/// TorchServe's `model` object. Optional keys are omitted when unset, as TorchServe does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSection {
    pub model_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serialized_file: Option<String>,
    pub handler: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_file: Option<String>,
    pub model_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
}

/// What oxserve needs to serve the archive without guessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OxserveSection {
    pub format_version: u32,
    /// Archive path of the resolved handler config (normally [`HANDLER_CONFIG_PATH`]).
    pub handler_config: String,
    /// Inputs and outputs of the serialized ONNX graph, read with ONNX Runtime at packing time.
    pub signature: Signature,
    /// How the graph was made from a PyTorch model, when the archiver converted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<Conversion>,
}

/// A record of the archiver's PyTorch-to-ONNX conversion and of the check that accepted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conversion {
    /// The file converted (the `.pth` state_dict or TorchScript `.pt`).
    pub source_file: String,
    /// `eager` (model file + state_dict) or `torchscript`.
    pub source_kind: String,
    /// `torchscript` (TorchScript-based `torch.onnx.export`) or `dynamo`.
    pub exporter: String,
    pub opset: u32,
    pub torch_version: String,
    /// Largest absolute difference between ONNX Runtime's and PyTorch's outputs on the check input.
    pub max_abs_diff: f64,
    /// Largest relative difference (|diff| / |PyTorch's value|, over non-zero values).
    pub max_rel_diff: f64,
}

/// TorchServe's runtime types (`frontend/archive/.../Manifest.java`).
pub const RUNTIMES: [&str; 3] = ["python", "python3", "LSP"];

/// Checks a model name against TorchServe's pattern `^[A-Za-z0-9][A-Za-z0-9_\-.]*$`.
pub fn validate_model_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = match chars.next() {
        Some(first) if first.is_ascii_alphanumeric() => {
            chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(ArchiveError::InvalidArgument(format!(
            "model name {name:?} is invalid: it must start with a letter or digit and contain only letters, digits, '_', '-' and '.'"
        )))
    }
}

/// Checks a model version: TorchServe accepts any string, but a version ends up in URLs
/// (`/predictions/m/1.0`) and file names, so we require the same character set as names.
pub fn validate_model_version(version: &str) -> Result<()> {
    let valid = !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && version != "."
        && version != "..";
    if valid {
        Ok(())
    } else {
        Err(ArchiveError::InvalidArgument(format!(
            "model version {version:?} is invalid: use letters, digits, '_', '-' and '.' (e.g. 1.0)"
        )))
    }
}

impl Manifest {
    /// Parses a manifest read from an archive.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|error| {
            ArchiveError::MalformedArchive(format!(
                "{MANIFEST_PATH} is not a valid manifest: {error}"
            ))
        })?;
        validate_model_name(&manifest.model.model_name)?;
        validate_model_version(&manifest.model.model_version)?;
        Ok(manifest)
    }

    /// Serialises with two-space indentation, as torch-model-archiver does.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs of strings cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// The time format torch-model-archiver writes into `createdOn`.
pub fn created_on_now() -> String {
    chrono::Local::now().format("%d/%m/%Y %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_torchserve_pattern() {
        for good in ["mnist", "resnet-18", "a.b_c", "0abc"] {
            assert!(validate_model_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a/b", "a b", "../x", "ü"] {
            assert!(validate_model_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_are_path_safe() {
        assert!(validate_model_version("1.0").is_ok());
        for bad in ["", "..", ".", "1/0", "1 0"] {
            assert!(validate_model_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn torchserve_manifest_parses_without_oxserve_section() {
        let json = br#"{"createdOn":"17/03/2025 11:20:57","runtime":"python",
            "model":{"modelName":"densenet161","serializedFile":"model.pt","handler":"image_classifier",
            "modelFile":"model.py","modelVersion":"1.0"},"archiverVersion":"0.12.0","description":"x"}"#;
        let manifest = Manifest::from_json(json).expect("parses");
        assert_eq!(manifest.model.model_name, "densenet161");
        assert!(manifest.oxserve.is_none());
        let text = String::from_utf8(manifest.to_json()).expect("utf8");
        assert!(
            !text.contains("requirementsFile"),
            "unset keys are omitted: {text}"
        );
    }
}

//! NVIDIA GPUs and ONNX Runtime's CUDA execution provider: how many GPUs the server may use,
//! and getting the CUDA libraries the provider needs into the process.
//!
//! TorchServe counts GPUs with `nvidia-smi` (narrowed by `CUDA_VISIBLE_DEVICES`) and uses
//! `min(that, number_of_gpu)`; models then default to the GPU whenever the count is above zero.
//! oxserve counts the same way (the driver's `/proc/driver/nvidia/gpus` first: no process to
//! start) and then makes sure the GPUs can really be used, because unlike PyTorch, ONNX
//! Runtime's CUDA support is a separate build and a separate set of libraries:
//! 1. the loaded `libonnxruntime.so` must list the CUDA provider (the `onnxruntime-gpu` wheel's
//!    build, installed by `scripts/install-onnxruntime.sh --gpu`);
//! 2. CUDA's runtime and cuDNN must be loadable. They are found on the loader's usual path
//!    (`LD_LIBRARY_PATH`, `ldconfig`) or, as PyTorch finds them, in the `nvidia-*` pip packages
//!    of the local Python (`nvidia/*/lib`), which this module pre-loads.
//!
//! When either is missing, the server says what to install and serves on the CPU, as TorchServe
//! does on a machine without usable GPUs: never half-configured sessions that fail per request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::backend::{cuda, LoadedRuntime};

/// What to tell a user whose ONNX Runtime has no CUDA provider.
const PROVIDER_HINT: &str = "install the GPU build with `scripts/install-onnxruntime.sh --gpu` (the onnxruntime-gpu wheel's libraries, CUDA 13), or point ORT_DYLIB_PATH at an onnxruntime-gpu libonnxruntime.so";
/// What to tell a user whose machine lacks CUDA's or cuDNN's libraries.
const CUDA_HINT: &str = "install CUDA 13 and cuDNN 9 (for example `pip install nvidia-cuda-runtime nvidia-cublas nvidia-curand nvidia-cufft nvidia-cuda-nvrtc nvidia-cudnn-cu13`, which oxserve finds by itself), or add their lib folders to LD_LIBRARY_PATH";

/// The GPUs models may use: `min(visible NVIDIA GPUs, number_of_gpu)`, or 0 (with a warning
/// that says what to install) when ONNX Runtime cannot run on them here.
pub fn usable(number_of_gpu: Option<usize>, runtime: &LoadedRuntime) -> usize {
    let visible = visible_gpus(std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref());
    let count = visible.min(number_of_gpu.unwrap_or(usize::MAX));
    if count == 0 {
        return 0;
    }
    match cuda_ready(runtime) {
        Ok(()) => {
            tracing::info!("{count} NVIDIA GPU(s) in use through ONNX Runtime's CUDA provider");
            count
        }
        Err(reason) => {
            tracing::warn!("{visible} NVIDIA GPU(s) found, but models run on the CPU: {reason}");
            0
        }
    }
}

/// One GPU's load, as `nvidia-smi` reads it from NVML (what PyTorch's `torch.cuda.utilization`,
/// `memory_usage` and `mem_get_info` give TorchServe).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuReading {
    /// Percent of the last sample period a kernel ran.
    pub utilization: f64,
    /// Percent of the last sample period device memory was read or written.
    pub memory_utilization: f64,
    pub memory_used_mib: f64,
}

impl GpuReading {
    /// TorchServe's `gpuUsage` text for the describe API.
    pub fn describe(&self, device: u32) -> String {
        format!(
            "gpuId::{device} utilization.gpu::{} % utilization.memory::{} % memory.used::{} MiB",
            self.utilization, self.memory_utilization, self.memory_used_mib
        )
    }
}

/// Each GPU's load by CUDA device number; empty when `nvidia-smi` cannot answer. Blocking:
/// starts a process.
pub fn readings() -> BTreeMap<u32, GpuReading> {
    let output = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,utilization.gpu,utilization.memory,memory.used",
            "--format=csv,noheader,nounits",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    let Some(output) = output.ok().filter(|output| output.status.success()) else {
        return BTreeMap::new();
    };
    let by_index = parse_readings(&String::from_utf8_lossy(&output.stdout));
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    device_numbers(visible.as_deref(), by_index.len())
        .into_iter()
        .enumerate()
        .filter_map(|(device, index)| Some((device as u32, *by_index.get(&index)?)))
        .collect()
}

/// `nvidia-smi --format=csv,noheader,nounits` lines, by `nvidia-smi`'s own (physical) index. A
/// field NVML cannot read (`[N/A]`, as on MIG slices) reads as 0.
fn parse_readings(csv: &str) -> BTreeMap<u32, GpuReading> {
    csv.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [index, gpu, memory, used] = fields[..] else {
                return None;
            };
            let number = |field: &str| field.parse::<f64>().unwrap_or(0.0);
            Some((
                index.parse().ok()?,
                GpuReading {
                    utilization: number(gpu),
                    memory_utilization: number(memory),
                    memory_used_mib: number(used),
                },
            ))
        })
        .collect()
}

/// The `nvidia-smi` index of each CUDA device number: CUDA numbers the GPUs that
/// `CUDA_VISIBLE_DEVICES` lists in its order (a list of UUIDs is not resolved: the driver's
/// order is assumed).
fn device_numbers(cuda_visible_devices: Option<&str>, installed: usize) -> Vec<u32> {
    let listed: Option<Vec<u32>> = cuda_visible_devices.map(|list| {
        list.split(',')
            .map(str::trim)
            .map_while(|entry| entry.parse::<u32>().ok())
            .collect()
    });
    match listed {
        Some(indices) if !indices.is_empty() => indices,
        _ => (0..installed as u32).collect(),
    }
}

/// NVIDIA GPUs on this machine that CUDA would show this process.
fn visible_gpus(cuda_visible_devices: Option<&str>) -> usize {
    let installed = installed_gpus();
    match cuda_visible_devices {
        None => installed,
        Some(list) => narrowed_by(list).min(installed),
    }
}

/// GPUs the NVIDIA driver reports: one folder each under `/proc/driver/nvidia/gpus`, else one
/// `nvidia-smi -L` line each (containers that hide `/proc/driver`), else none.
fn installed_gpus() -> usize {
    if let Ok(entries) = std::fs::read_dir("/proc/driver/nvidia/gpus") {
        return entries.filter_map(Result::ok).count();
    }
    Command::new("nvidia-smi")
        .arg("-L")
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter(|line| line.starts_with("GPU "))
                .count()
        })
        .unwrap_or(0)
}

/// How many devices a `CUDA_VISIBLE_DEVICES` value leaves: CUDA stops at the first entry that
/// names no device (`-1` is the usual way to hide them all).
fn narrowed_by(list: &str) -> usize {
    list.split(',')
        .map(str::trim)
        .take_while(|entry| {
            !entry.is_empty()
                && (entry.starts_with("GPU-")
                    || entry.starts_with("MIG-")
                    || entry.parse::<u32>().is_ok())
        })
        .count()
}

/// The CUDA provider is in the loaded build and its libraries load.
fn cuda_ready(runtime: &LoadedRuntime) -> Result<(), String> {
    let listed = cuda::provider_listed().map_err(|error| error.to_string())?;
    if !listed {
        return Err(format!(
            "the ONNX Runtime at {} has no CUDA provider; {PROVIDER_HINT}",
            runtime.path.display()
        ));
    }
    for folder in nvidia_library_folders(&runtime.path) {
        preload_from(&folder);
    }
    for library in ["libcudart.so.13", "libcublas.so.13", "libcudnn.so.9"] {
        cuda::preload(Path::new(library))
            .map_err(|error| format!("{library} cannot be loaded ({error}); {CUDA_HINT}"))?;
    }
    Ok(())
}

/// Loads, from one folder, every CUDA and cuDNN library the provider needs that is there, in
/// dependency order. Once loaded, the provider's own lookups by name find them.
fn preload_from(folder: &Path) {
    for name in cuda::library_names() {
        let path = folder.join(name);
        if path.is_file() {
            if let Err(error) = cuda::preload(&path) {
                tracing::debug!("cannot pre-load {}: {error}", path.display());
            }
        }
    }
}

/// The `lib` folders of the `nvidia-*` pip packages: beside the loaded library when it came
/// from a Python `onnxruntime-gpu` package, else in the local Python's `nvidia` namespace.
fn nvidia_library_folders(runtime_library: &Path) -> Vec<PathBuf> {
    // …/site-packages/onnxruntime/capi/libonnxruntime.so → …/site-packages/nvidia
    let beside = runtime_library
        .ancestors()
        .nth(3)
        .map(|site| site.join("nvidia"))
        .filter(|nvidia| nvidia.is_dir());
    let roots: Vec<PathBuf> = match beside {
        Some(root) => vec![root],
        None => python_nvidia_roots(),
    };
    let mut folders = Vec::new();
    for root in roots {
        let Ok(packages) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut found: Vec<PathBuf> = packages
            .filter_map(Result::ok)
            .map(|package| package.path().join("lib"))
            .filter(|lib| lib.is_dir())
            .collect();
        found.sort();
        folders.extend(found);
    }
    folders
}

/// Where the local Python keeps the `nvidia` namespace package, if it has one.
fn python_nvidia_roots() -> Vec<PathBuf> {
    for python in ["python3", "python"] {
        let output = Command::new(python)
            .args(["-c", "import nvidia; print('\\n'.join(nvidia.__path__))"])
            .stderr(std::process::Stdio::null())
            .output();
        let Ok(output) = output else { continue };
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(PathBuf::from)
                .collect();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_visible_devices_narrows_as_cuda_does() {
        assert_eq!(narrowed_by("0,1"), 2);
        assert_eq!(narrowed_by("1"), 1);
        assert_eq!(narrowed_by(""), 0);
        assert_eq!(narrowed_by("-1"), 0);
        assert_eq!(
            narrowed_by("0,-1,1"),
            1,
            "CUDA stops at the first invalid entry"
        );
        assert_eq!(narrowed_by("GPU-8f2c,GPU-11aa"), 2);
    }

    #[test]
    fn nvidia_smi_lines_are_read_and_odd_ones_skipped() {
        let csv = "0, 37, 12, 1534\n1, [N/A], [N/A], 80\nGPU lost\n";
        let readings = parse_readings(csv);
        assert_eq!(readings.len(), 2);
        assert_eq!(
            readings[&0].describe(0),
            "gpuId::0 utilization.gpu::37 % utilization.memory::12 % memory.used::1534 MiB"
        );
        assert_eq!(readings[&1].utilization, 0.0);
        assert_eq!(readings[&1].memory_used_mib, 80.0);
    }

    #[test]
    fn cuda_device_numbers_follow_the_visible_list() {
        assert_eq!(device_numbers(None, 2), vec![0, 1]);
        assert_eq!(device_numbers(Some("1"), 2), vec![1]);
        assert_eq!(device_numbers(Some("1,0"), 2), vec![1, 0]);
        assert_eq!(device_numbers(Some("GPU-8f2c"), 1), vec![0]);
    }

    #[test]
    fn visible_never_exceeds_installed() {
        let installed = installed_gpus();
        assert_eq!(visible_gpus(Some("0,1,2,3,4,5,6,7,8,9")), installed.min(10));
        assert_eq!(visible_gpus(Some("-1")), 0);
    }
}

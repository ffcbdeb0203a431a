//! Where archives are unpacked: `<temp>/oxserve-model-<pid>-XXXXXX`, named after the process that
//! owns it. A server killed with `kill -9` cannot remove its folders; the next start removes every
//! folder whose process is gone.

use std::path::Path;

use crate::error::ServeError;

const PREFIX: &str = "oxserve-model-";

/// A fresh private folder for one archive, removed when dropped.
pub fn folder() -> Result<tempfile::TempDir, ServeError> {
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|error| {
            ServeError::Internal(format!("cannot create a folder to unpack into: {error}"))
        })
}

/// Removes the unpacked folders of processes that no longer run; returns how many.
pub fn remove_stale() -> usize {
    remove_stale_in(&std::env::temp_dir())
}

fn remove_stale_in(temp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        // Not following links: a folder we made is a plain directory.
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        if is_dir && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether `pid` is a running (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_of_dead_processes_go_and_live_ones_stay() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dead = temp.path().join(format!("{PREFIX}999999999-abc"));
        let live = temp
            .path()
            .join(format!("{PREFIX}{}-abc", std::process::id()));
        let other = temp.path().join("oxserve-model-notapid");
        for folder in [&dead, &live, &other] {
            std::fs::create_dir_all(folder.join("archive")).expect("mkdir");
        }
        assert_eq!(remove_stale_in(temp.path()), 1);
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
        let owned = folder().expect("folder");
        let name = owned
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(&format!("{PREFIX}{}-", std::process::id())));
    }
}

//! Which model `url`s `POST /models` may name, and where they lead (TorchServe's
//! `ModelArchive.downloadModel`, `ArchiveUtils.validateURL`, `HttpUtils.copyURLToFile`, with the
//! same messages and status codes), made safe:
//!
//! - a plain name or a `file://` URL must name an entry directly inside the model store: no `..`
//!   (plain or percent-encoded), no subfolders, no symlinks leading out ([`resolve_local`]);
//! - `allowed_urls` regexes must match the whole URL, case-insensitively ([`UrlPolicy`]). Unlike
//!   TorchServe (whose default allows every `http(s)://` and `file://` URL), oxserve's default is
//!   `file://.*`: nothing is fetched from the network until `allowed_urls` says so;
//! - http(s) downloads refuse userinfo and non-canonical hosts, re-check every redirect hop, cap
//!   the size and the time, and leave no partial file ([`download`], in `remote.rs`).
//!
//! The management API calls [`locate`] with the request's `url`; startup (`--models`) keeps using
//! [`crate::store`].

mod remote;

use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::{Regex, RegexBuilder};

pub use remote::download;

use crate::error::ServeError;

/// `allowed_urls` when the key is absent: local archives only.
pub const DEFAULT_ALLOWED_URLS: &str = "file://.*";
/// Largest archive a download may produce.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;
/// Longest a whole download (all hops and the body) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Redirects followed before giving up.
pub const DEFAULT_MAX_REDIRECTS: usize = 5;

/// What a model `url` may name and how much a download may take.
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    allowed: Vec<Regex>,
    max_bytes: u64,
    timeout: Duration,
    max_redirects: usize,
}

/// Where a `url` led.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The archive (or unpacked model folder) inside the model store.
    pub path: PathBuf,
    /// Whether this call downloaded it. TorchServe deletes URL-registered archives from the store
    /// on unregister (`ModelManager.unregisterModel`); do so only when this is true: a `file://`
    /// URL names the store's own archive here, not a copy as in TorchServe.
    pub downloaded: bool,
}

impl UrlPolicy {
    /// `allowed_urls` as TorchServe reads it: comma-separated regexes, each matching a whole URL,
    /// case-insensitively; absent means [`DEFAULT_ALLOWED_URLS`]. A pattern that does not compile
    /// (Rust `regex` syntax: no look-around or back-references) stops startup.
    pub fn from_config(
        allowed_urls: Option<&str>,
        max_bytes: u64,
        timeout: Duration,
        max_redirects: usize,
    ) -> Result<UrlPolicy, String> {
        let allowed = allowed_urls
            .unwrap_or(DEFAULT_ALLOWED_URLS)
            .split(',')
            .map(str::trim)
            .filter(|pattern| !pattern.is_empty())
            .map(|pattern| {
                RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .case_insensitive(true)
                    .build()
                    .map_err(|error| format!("config key allowed_urls: {pattern:?}: {error}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UrlPolicy {
            allowed,
            max_bytes,
            timeout,
            max_redirects,
        })
    }

    /// Whether some allowed pattern matches the whole of `url`.
    pub fn allows(&self, url: &str) -> bool {
        self.allowed.iter().any(|pattern| pattern.is_match(url))
    }

    /// [`UrlPolicy::allows`], or TorchServe's 404 for a URL outside the allow-list.
    fn require(&self, url: &str) -> Result<(), ServeError> {
        if self.allows(url) {
            Ok(())
        } else {
            Err(not_allowed(url))
        }
    }
}

/// Resolves a `POST /models` `url` to an archive in `store`, downloading http(s) URLs the policy
/// allows. TorchServe's order and answers: no store, empty, `..`, allow-list, then the source.
pub async fn locate(
    url: &str,
    policy: &UrlPolicy,
    store: Option<&Path>,
) -> Result<Located, ServeError> {
    let store = store.ok_or_else(|| {
        ServeError::ArchiveNotFound("Model store has not been configured.".into())
    })?;
    check_common(url)?;
    if looks_like_url(url) {
        policy.require(url)?;
        if is_http(url) {
            let path = download(url, policy, store).await?;
            return Ok(Located {
                path,
                downloaded: true,
            });
        }
    }
    let path = resolve_local(store, url)?;
    Ok(Located {
        path,
        downloaded: false,
    })
}

/// A plain name of an entry directly in `store`, or a `file://` URL of one (the allow-list is
/// [`locate`]'s business; this checks confinement only). Returns the real path.
pub fn resolve_local(store: &Path, url: &str) -> Result<PathBuf, ServeError> {
    check_common(url)?;
    let (candidate, refusal): (PathBuf, fn(&str) -> ServeError) =
        match strip_prefix_ignore_case(url, "file://") {
            Some(rest) => {
                let rest = strip_prefix_ignore_case(rest, "localhost").unwrap_or(rest);
                if !rest.starts_with('/') {
                    return Err(not_allowed(url));
                }
                let decoded = String::from_utf8(percent_decode(rest.as_bytes()))
                    .map_err(|_| not_allowed(url))?;
                (PathBuf::from(decoded), not_allowed)
            }
            None if url.contains(['/', '\\']) => return Err(not_found_at(url)),
            None => (store.join(url), not_found_at),
        };
    let real_store = store.canonicalize().map_err(|_| not_found_at(url))?;
    let real = candidate.canonicalize().map_err(|_| refusal(url))?;
    if real.parent() != Some(real_store.as_path()) {
        return Err(refusal(url));
    }
    Ok(real)
}

/// TorchServe's first two refusals, plus percent-encoded (even repeatedly) `..`.
fn check_common(url: &str) -> Result<(), ServeError> {
    if url.is_empty() {
        return Err(ServeError::ArchiveNotFound("empty url".into()));
    }
    let mut text = url.as_bytes().to_vec();
    for _ in 0..4 {
        if text.windows(2).any(|pair| pair == b"..") {
            return Err(ServeError::ArchiveNotFound(format!(
                "Relative path is not allowed in url: {url}"
            )));
        }
        let decoded = percent_decode(&text);
        if decoded == text {
            break;
        }
        text = decoded;
    }
    Ok(())
}

/// TorchServe's message when nothing in the store answers to a name (404).
fn not_found_at(url: &str) -> ServeError {
    ServeError::ArchiveNotFound(format!("Model not found at: {url}"))
}

/// TorchServe's message for a URL outside the allow-list (404).
fn not_allowed(url: &str) -> ServeError {
    ServeError::ArchiveNotFound(format!("Given URL {url} does not match any allowed URL(s)"))
}

/// TorchServe's `file?://.*|http(s)?://.*` (case-insensitive): what is checked against the
/// allow-list rather than looked up in the store.
fn looks_like_url(url: &str) -> bool {
    ["file://", "fil://", "http://", "https://"]
        .iter()
        .any(|scheme| strip_prefix_ignore_case(url, scheme).is_some())
}

fn is_http(url: &str) -> bool {
    ["http://", "https://"]
        .iter()
        .any(|scheme| strip_prefix_ignore_case(url, scheme).is_some())
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `%XX` → byte; anything else (including malformed `%`) is kept.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut index = 0;
    while index < input.len() {
        if input[index] == b'%' && index + 2 < input.len() {
            if let (Some(high), Some(low)) = (hex(input[index + 1]), hex(input[index + 2])) {
                out.push((high * 16 + low) as u8);
                index += 3;
                continue;
            }
        }
        out.push(input[index]);
        index += 1;
    }
    out
}

#[cfg(test)]
mod tests;

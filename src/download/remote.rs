//! The http(s) half of [`crate::download`]: validating a URL and every redirect hop, and
//! streaming the archive into the model store under a cap on size and time.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt as _;
use url::Url;

use super::{check_common, not_allowed, UrlPolicy};
use crate::error::ServeError;

/// Downloads go to `.download-<random>.part` in the store, then are renamed into place.
const TEMP_PREFIX: &str = ".download-";
const TEMP_SUFFIX: &str = ".part";

/// Downloads an http(s) `url` that `policy` allows into `store`, named after the URL's last path
/// segment (a plain `.mar` or `.tar.gz` file name). Refuses userinfo, hosts not written in their
/// canonical form (`http://2130706433/`, `0x7f.1`, `%31...`), and redirects leaving the
/// allow-list; enforces `max_bytes`, `max_redirects` and `timeout`. On any failure nothing is
/// left in the store. Answers: outside the allow-list 404 "Given URL … does not match any allowed
/// URL(s)"; already in the store 500 "Model file already exists …"; anything else 400 "Failed to
/// download archive from: …".
pub async fn download(url: &str, policy: &UrlPolicy, store: &Path) -> Result<PathBuf, ServeError> {
    check_common(url)?;
    let first = validate(url, policy)?;
    let name = archive_name(&first).ok_or_else(|| {
        failed(
            url,
            "the URL does not end in a plain .mar or .tar.gz file name",
        )
    })?;
    let target = store.join(&name);
    if target.symlink_metadata().is_ok() {
        return Err(ServeError::ModelFileExists(name));
    }
    let temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(store)
        .map_err(|error| {
            failed(
                url,
                &format!("cannot create a file in the model store: {error}"),
            )
        })?;
    let file = temp
        .as_file()
        .try_clone()
        .map_err(|error| failed(url, &error.to_string()))?;
    let mut file = tokio::fs::File::from_std(file);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .referer(false)
        .connect_timeout(policy.timeout)
        .user_agent(concat!("oxserve/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| ServeError::Internal(format!("http client: {error}")))?;
    let fetched = tokio::time::timeout(
        policy.timeout,
        fetch(&client, first, policy, url, &mut file),
    );
    match fetched.await {
        Ok(result) => result?,
        Err(_) => {
            return Err(failed(
                url,
                &format!("not done within {:?}", policy.timeout),
            ))
        }
    }
    drop(file);
    // `temp` is deleted on every early return above; from here it becomes the archive.
    temp.persist_noclobber(&target).map_err(|error| {
        if error.error.kind() == std::io::ErrorKind::AlreadyExists {
            ServeError::ModelFileExists(name.clone())
        } else {
            failed(
                url,
                &format!("cannot save {}: {}", target.display(), error.error),
            )
        }
    })?;
    tracing::info!("downloaded {url} to {}", target.display());
    Ok(target)
}

/// Follows redirects by hand (each hop re-validated), then streams the body into `file`.
async fn fetch(
    client: &reqwest::Client,
    first: Url,
    policy: &UrlPolicy,
    original: &str,
    file: &mut tokio::fs::File,
) -> Result<(), ServeError> {
    let mut current = first;
    let mut redirects = 0;
    let mut response = loop {
        let response = client
            .get(current.clone())
            .send()
            .await
            .map_err(|error| failed(original, &error.to_string()))?;
        if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
            break response;
        }
        if redirects == policy.max_redirects {
            return Err(failed(original, "too many redirects"));
        }
        redirects += 1;
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| failed(original, "a redirect without a usable Location"))?;
        let next = current
            .join(location)
            .map_err(|error| failed(original, &format!("redirect to {location:?}: {error}")))?;
        if Url::parse(location).is_ok() {
            validate(location, policy)?;
        }
        current = validate(next.as_str(), policy)?;
    };
    if !response.status().is_success() {
        return Err(failed(original, &format!("HTTP {}", response.status())));
    }
    let too_large = || failed(original, &format!("larger than {} bytes", policy.max_bytes));
    if response
        .content_length()
        .is_some_and(|length| length > policy.max_bytes)
    {
        return Err(too_large());
    }
    let mut written: u64 = 0;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| failed(original, &error.to_string()))?
    {
        written = written.saturating_add(chunk.len() as u64);
        if written > policy.max_bytes {
            return Err(too_large());
        }
        file.write_all(&chunk)
            .await
            .map_err(|error| failed(original, &error.to_string()))?;
    }
    file.flush()
        .await
        .and(file.sync_all().await)
        .map_err(|error| failed(original, &error.to_string()))
}

/// The checks every URL fetched passes: no whitespace or control characters, the allow-list on
/// the text as written and as it will be fetched, http(s) only, no userinfo, a canonical host.
fn validate(raw: &str, policy: &UrlPolicy) -> Result<Url, ServeError> {
    let refuse = |why: &str| {
        tracing::warn!("refusing model URL {raw:?}: {why}");
        not_allowed(raw)
    };
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse("whitespace or control characters"));
    }
    policy.require(raw)?;
    let url = Url::parse(raw).map_err(|error| failed(raw, &error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(failed(raw, "only http and https URLs are downloaded"));
    }
    let authority = authority(raw);
    if authority.contains('@') || !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("user information in the URL"));
    }
    if host_of(authority).to_ascii_lowercase() != url.host_str().unwrap_or_default() {
        return Err(refuse("the host is not written in canonical form"));
    }
    if !policy.allows(url.as_str()) {
        return Err(refuse(&format!(
            "it is fetched as {url}, which is not allowed"
        )));
    }
    Ok(url)
}

/// The authority as written: after `://`, up to the first `/`, `?`, `#` or `\`.
fn authority(raw: &str) -> &str {
    let Some((_, rest)) = raw.split_once("://") else {
        return "";
    };
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    &rest[..end]
}

/// The host part of an authority without userinfo: `[v6]` or the text before `:port`.
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

/// The URL's last path segment when it is a safe archive file name.
fn archive_name(url: &Url) -> Option<String> {
    let name = url.path_segments()?.next_back()?;
    let safe = name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    let archive = [".mar", ".tar.gz"]
        .iter()
        .any(|suffix| name.len() > suffix.len() && name.ends_with(suffix));
    (safe && archive).then(|| name.to_string())
}

/// TorchServe's 400 for a download that did not work; the reason is logged, not sent.
fn failed(url: &str, why: &str) -> ServeError {
    tracing::warn!("Failed to download archive from: {url}: {why}");
    ServeError::DownloadFailed(url.to_string())
}

#[cfg(test)]
mod tests;

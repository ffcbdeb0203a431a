//! TorchServe's token authorization (`TokenAuthorization.java`, `TokenAuthorizationHandler.java`,
//! `docs/token_authorization_api.md`): three random keys written to `key_file.json` (mode 0600),
//! `Authorization: Bearer <key>` checked in constant time on every inference and management
//! request, and `GET /token?type=management|inference` (with the API key) to rotate a key.
//!
//! The server creates one [`TokenAuth`] at startup (or [`TokenAuth::disabled`] for
//! `disable_token_authorization`) and removes its key file at shutdown; the HTTP listeners wrap
//! apps in [`authorize`], told which key each needs by a [`Guard`].
//!
//! One departure from TorchServe, which checks the key on `/ping` too: the health probes in
//! [`KEYLESS_HEALTH_PATHS`] answer without a key, because Docker's `HEALTHCHECK` and Kubernetes'
//! probes cannot send one. They say only whether the server serves; everything else still
//! needs its key.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::error::ServeError;

mod middleware;
mod throttle;
pub use middleware::{authorize, Guard};

/// The key file's name; TorchServe writes it in the working directory.
pub const KEY_FILE_NAME: &str = "key_file.json";

/// Minutes a management or inference key lives when `token_expiration_min` is not set.
pub const DEFAULT_EXPIRATION_MINUTES: f64 = 60.0;

/// The only requests answered without a key (when token authorization is on): a `GET` of one of
/// these exact paths on the inference listener. Server health only; a model's own readiness
/// (`/v2/models/{m}/ready`) names a model and stays behind the key.
pub const KEYLESS_HEALTH_PATHS: &[&str] = &["/ping", "/v2/health/live", "/v2/health/ready"];

/// Whether a request to `api`'s listener is a health probe that needs no key: `GET` of exactly
/// a [`KEYLESS_HEALTH_PATHS`] path on the inference listener (the raw path, so no spelling of
/// another route can match).
pub fn is_keyless_health_probe(api: Api, method: &str, path: &str) -> bool {
    api == Api::Inference && method == "GET" && KEYLESS_HEALTH_PATHS.contains(&path)
}

/// Which key a request must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Inference,
    Management,
}

/// The keys and where they are written; or nothing when token authorization is disabled.
pub struct TokenAuth {
    enabled: Option<Enabled>,
    /// Peers sending wrong keys are answered more and more slowly.
    throttle: throttle::Throttle,
}

struct Enabled {
    key_file: PathBuf,
    lifetime: TimeDelta,
    keys: RwLock<Keys>,
}

#[derive(Clone)]
struct Keys {
    management: ExpiringKey,
    inference: ExpiringKey,
    /// The key of the token API; it never expires and is never rotated.
    api: String,
}

#[derive(Clone)]
struct ExpiringKey {
    key: String,
    expires: DateTime<Utc>,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        formatter
            .debug_struct("TokenAuth")
            .field("key_file", &self.key_file())
            .finish_non_exhaustive()
    }
}

impl TokenAuth {
    /// Generates the three keys and writes `dir/key_file.json`; management and inference keys
    /// expire after `expiration`.
    pub fn create(dir: &Path, expiration: Duration) -> Result<TokenAuth, ServeError> {
        let lifetime = TimeDelta::from_std(expiration).map_err(|_| {
            ServeError::Internal(format!("token expiration {expiration:?} is too large"))
        })?;
        let keys = Keys {
            management: ExpiringKey::generate(lifetime)?,
            inference: ExpiringKey::generate(lifetime)?,
            api: generate_key()?,
        };
        let key_file = dir.join(KEY_FILE_NAME);
        write_key_file(&key_file, &keys)?;
        tracing::info!(
            "Token authorization enabled: keys are in {}; see TorchServe's token_authorization_api.md",
            key_file.display()
        );
        Ok(TokenAuth {
            enabled: Some(Enabled {
                key_file,
                lifetime,
                keys: RwLock::new(keys),
            }),
            throttle: Default::default(),
        })
    }

    /// Token authorization turned off: every request passes and `/token` is not a route.
    pub fn disabled() -> TokenAuth {
        TokenAuth {
            enabled: None,
            throttle: Default::default(),
        }
    }

    /// A wrong key from `peer`: how long to wait before refusing it (see [`throttle`]).
    pub fn refused(&self, peer: Option<std::net::IpAddr>) -> Duration {
        peer.map_or(Duration::ZERO, |peer| self.throttle.failed(peer))
    }

    /// A right key from `peer`.
    pub fn accepted(&self, peer: Option<std::net::IpAddr>) {
        if let Some(peer) = peer {
            self.throttle.succeeded(peer);
        }
    }

    /// Whether keys are checked.
    pub fn is_enabled(&self) -> bool {
        self.enabled.is_some()
    }

    /// Where the keys were written, when enabled.
    pub fn key_file(&self) -> Option<&Path> {
        self.enabled
            .as_ref()
            .map(|enabled| enabled.key_file.as_path())
    }

    /// Accepts `Bearer <key>` (TorchServe's `^Bearer\s+(\S+)$`) carrying `api`'s unexpired key;
    /// anything else is 400 InvalidKeyException.
    pub fn check(&self, api: Api, authorization_header: Option<&str>) -> Result<(), ServeError> {
        let Some(enabled) = &self.enabled else {
            return Ok(());
        };
        let token = authorization_header
            .and_then(parse_bearer)
            .ok_or(ServeError::InvalidToken)?;
        let keys = enabled
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = match api {
            Api::Management => &keys.management,
            Api::Inference => &keys.inference,
        };
        if constant_time_eq(token.as_bytes(), key.key.as_bytes()) && Utc::now() < key.expires {
            Ok(())
        } else {
            Err(ServeError::InvalidToken)
        }
    }

    /// `GET /token?type=<kind>` with the API key: replaces the management or inference key (and
    /// its expiration) and rewrites the key file. On success TorchServe answers 200 with
    /// `Content-Type: application/json` and the body `"\n"` (an empty payload). Every failure
    /// (wrong key, `type` other than exactly `management`/`inference`, write error) is 400
    /// InvalidKeyException "Token Authentication failed…"; when disabled, `/token` is 404.
    pub fn rotate(&self, kind: &str, authorization_header: Option<&str>) -> Result<(), ServeError> {
        let Some(enabled) = &self.enabled else {
            return Err(ServeError::ResourceNotFound);
        };
        let token = authorization_header
            .and_then(parse_bearer)
            .ok_or(ServeError::TokenApiFailed)?;
        let mut keys = enabled
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !constant_time_eq(token.as_bytes(), keys.api.as_bytes()) {
            return Err(ServeError::TokenApiFailed);
        }
        let mut next = keys.clone();
        match kind {
            "management" => next.management = ExpiringKey::generate(enabled.lifetime)?,
            "inference" => next.inference = ExpiringKey::generate(enabled.lifetime)?,
            _ => return Err(ServeError::TokenApiFailed),
        }
        // The new key is live only once it is on disk: a failed write changes nothing.
        write_key_file(&enabled.key_file, &next).map_err(|error| {
            tracing::error!("Failed to update key file: {error}");
            ServeError::TokenApiFailed
        })?;
        *keys = next;
        Ok(())
    }

    /// Deletes the key file (TorchServe does at shutdown). Missing already is fine.
    pub fn remove_key_file(&self) {
        let Some(path) = self.key_file() else {
            return;
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!("cannot remove {}: {error}", path.display()),
        }
    }
}

/// `token_expiration_min` as TorchServe reads it (a decimal number of minutes, 60 when absent or
/// malformed); negative values count as zero.
pub fn expiration_from_config(token_expiration_min: Option<&str>) -> Duration {
    let minutes = match token_expiration_min.map(|value| value.trim().parse::<f64>()) {
        None => DEFAULT_EXPIRATION_MINUTES,
        Some(Ok(minutes)) if minutes.is_finite() => minutes.max(0.0),
        Some(_) => {
            tracing::error!("Token expiration not a valid integer");
            DEFAULT_EXPIRATION_MINUTES
        }
    };
    // TorchServe truncates to whole seconds.
    Duration::from_secs((minutes * 60.0).min(u32::MAX as f64) as u64)
}

impl ExpiringKey {
    fn generate(lifetime: TimeDelta) -> Result<ExpiringKey, ServeError> {
        let expires = Utc::now()
            .checked_add_signed(lifetime)
            .ok_or_else(|| ServeError::Internal("token expiration out of range".into()))?;
        Ok(ExpiringKey {
            key: generate_key()?,
            expires,
        })
    }

    /// Java's `Instant.toString()`: UTC, fraction in groups of 3 digits as needed, `Z`.
    fn expiration_text(&self) -> String {
        self.expires.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }
}

/// 128 bits from the OS CSPRNG, URL-safe base64 without padding (22 characters). TorchServe's
/// keys are 6 bytes; the file format and the header are the same.
fn generate_key() -> Result<String, ServeError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|error| ServeError::Internal(format!("no randomness for token keys: {error}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The key file in TorchServe's layout (Gson pretty printing), written to a 0600 temp file in the
/// same folder and renamed over the old one, so readers never see a partial file.
fn write_key_file(path: &Path, keys: &Keys) -> Result<(), ServeError> {
    let json = serde_json::json!({
        "management": {"key": keys.management.key, "expiration time": keys.management.expiration_text()},
        "inference": {"key": keys.inference.key, "expiration time": keys.inference.expiration_text()},
        "API": {"key": keys.api},
    });
    let text = serde_json::to_string_pretty(&json)
        .map_err(|error| ServeError::Internal(format!("key file: {error}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(".{KEY_FILE_NAME}.{}.tmp", generate_key()?));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path));
    written.map_err(|error| {
        let _ = std::fs::remove_file(&temp);
        ServeError::Internal(format!("cannot write {}: {error}", path.display()))
    })
}

/// The token of `^Bearer\s+(\S+)$` (Java's `\s`: space, tab, newline, vertical tab, form feed,
/// carriage return).
fn parse_bearer(header: &str) -> Option<&str> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r');
    let rest = header.strip_prefix("Bearer")?;
    let token = rest.trim_start_matches(is_space);
    let valid = token.len() < rest.len() && !token.is_empty() && !token.contains(is_space);
    valid.then_some(token)
}

/// Equality whose running time depends only on the lengths (keys are always 22 characters).
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests;

use std::os::unix::fs::PermissionsExt as _;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn read_key_file(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(KEY_FILE_NAME)).expect("key file");
    serde_json::from_str(&text).expect("json")
}

fn key(file: &serde_json::Value, section: &str) -> String {
    file[section]["key"].as_str().expect("key").to_string()
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[test]
fn key_file_has_torchserve_layout_and_mode_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = TokenAuth::create(dir.path(), HOUR).expect("create");
    let path = dir.path().join(KEY_FILE_NAME);
    assert_eq!(auth.key_file(), Some(path.as_path()));
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let text = std::fs::read_to_string(&path).expect("read");
    // Gson's pretty layout, sections in TorchServe's order.
    assert!(
        text.starts_with("{\n  \"management\": {\n    \"key\": \""),
        "{text}"
    );
    let order: Vec<usize> = ["\"management\"", "\"inference\"", "\"API\""]
        .iter()
        .map(|name| text.find(name).expect(name))
        .collect();
    assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{text}");

    let file = read_key_file(dir.path());
    let keys = [
        key(&file, "management"),
        key(&file, "inference"),
        key(&file, "API"),
    ];
    for key in &keys {
        assert_eq!(key.len(), 22, "{key}");
        assert!(key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
    assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
    assert!(file["API"].get("expiration time").is_none());
    for section in ["management", "inference"] {
        let expiration = file[section]["expiration time"].as_str().expect("time");
        assert!(expiration.ends_with('Z'), "{expiration}");
        let expires = DateTime::parse_from_rfc3339(expiration).expect("rfc3339");
        let left = expires.with_timezone(&Utc) - Utc::now();
        assert!(
            left > TimeDelta::minutes(59) && left <= TimeDelta::minutes(60),
            "{left}"
        );
    }
    // Nothing but the key file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
}

#[test]
fn each_api_accepts_only_its_own_bearer_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = TokenAuth::create(dir.path(), HOUR).expect("create");
    let file = read_key_file(dir.path());
    let (management, inference, api) = (
        key(&file, "management"),
        key(&file, "inference"),
        key(&file, "API"),
    );

    assert!(auth
        .check(Api::Management, Some(&bearer(&management)))
        .is_ok());
    assert!(auth
        .check(Api::Inference, Some(&bearer(&inference)))
        .is_ok());
    assert!(auth
        .check(Api::Inference, Some(&format!("Bearer \t {inference}")))
        .is_ok());

    let refused = [
        (Api::Management, None),
        (Api::Management, Some(bearer(&inference))),
        (Api::Management, Some(bearer(&api))),
        (Api::Inference, Some(bearer(&management))),
        (Api::Inference, Some(inference.clone())),
        (Api::Inference, Some(format!("bearer {inference}"))),
        (Api::Inference, Some(format!("Bearer{inference}"))),
        (Api::Inference, Some(format!("Bearer {inference} x"))),
        (Api::Inference, Some(format!("Bearer {inference}x"))),
        (Api::Inference, Some(format!("Basic {inference}"))),
        (Api::Inference, Some("Bearer ".to_string())),
        (Api::Inference, Some("Bearer abcd1234".to_string())),
    ];
    for (api, header) in refused {
        let error = auth
            .check(api, header.as_deref())
            .expect_err(&format!("{header:?}"));
        let body = error.body();
        assert_eq!((body.code, body.kind), (400, "InvalidKeyException"));
        assert_eq!(
            body.message,
            "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
        );
    }
}

#[test]
fn expired_keys_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = TokenAuth::create(dir.path(), Duration::ZERO).expect("create");
    let file = read_key_file(dir.path());
    let management = key(&file, "management");
    let result = auth.check(Api::Management, Some(&bearer(&management)));
    assert!(matches!(result, Err(ServeError::InvalidToken)));
    // The API key never expires.
    assert!(auth
        .rotate("management", Some(&bearer(&key(&file, "API"))))
        .is_ok());
}

#[test]
fn rotation_replaces_one_key_and_rewrites_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = TokenAuth::create(dir.path(), HOUR).expect("create");
    let before = read_key_file(dir.path());
    let api = bearer(&key(&before, "API"));

    auth.rotate("inference", Some(&api)).expect("rotates");
    let after = read_key_file(dir.path());
    assert_ne!(key(&before, "inference"), key(&after, "inference"));
    assert_eq!(key(&before, "management"), key(&after, "management"));
    assert_eq!(before["management"], after["management"]);
    assert_eq!(key(&before, "API"), key(&after, "API"));
    assert!(auth
        .check(Api::Inference, Some(&bearer(&key(&before, "inference"))))
        .is_err());
    assert!(auth
        .check(Api::Inference, Some(&bearer(&key(&after, "inference"))))
        .is_ok());
    let mode = std::fs::metadata(dir.path().join(KEY_FILE_NAME))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    auth.rotate("management", Some(&api)).expect("rotates");
    let last = read_key_file(dir.path());
    assert_ne!(key(&after, "management"), key(&last, "management"));
    assert!(auth
        .check(Api::Management, Some(&bearer(&key(&last, "management"))))
        .is_ok());
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
}

#[test]
fn rotation_failures_are_torchserve_token_api_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = TokenAuth::create(dir.path(), HOUR).expect("create");
    let before = read_key_file(dir.path());
    let api = bearer(&key(&before, "API"));
    let management = bearer(&key(&before, "management"));
    for (kind, header) in [
        ("inference", Some(management.as_str())),
        ("inference", None),
        ("API", Some(api.as_str())),
        ("Management", Some(api.as_str())),
        ("", Some(api.as_str())),
    ] {
        let error = auth.rotate(kind, header).expect_err(kind);
        let body = error.body();
        assert_eq!((body.code, body.kind), (400, "InvalidKeyException"));
        assert_eq!(
            body.message,
            "Token Authentication failed. Token either incorrect, expired, or not provided correctly"
        );
    }
    assert_eq!(read_key_file(dir.path()), before);
}

#[test]
fn disabled_lets_everything_through_and_has_no_token_route() {
    let auth = TokenAuth::disabled();
    assert!(!auth.is_enabled());
    assert!(auth.check(Api::Management, None).is_ok());
    assert!(auth.check(Api::Inference, Some("garbage")).is_ok());
    assert!(matches!(
        auth.rotate("inference", None),
        Err(ServeError::ResourceNotFound)
    ));
    auth.remove_key_file();
}

#[test]
fn key_file_is_removed_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = TokenAuth::create(dir.path(), HOUR).expect("create");
    auth.remove_key_file();
    assert!(!dir.path().join(KEY_FILE_NAME).exists());
    auth.remove_key_file();
}

#[test]
fn keys_differ_between_servers() {
    let one = tempfile::tempdir().expect("tempdir");
    let two = tempfile::tempdir().expect("tempdir");
    TokenAuth::create(one.path(), HOUR).expect("create");
    TokenAuth::create(two.path(), HOUR).expect("create");
    assert_ne!(read_key_file(one.path()), read_key_file(two.path()));
}

#[test]
fn helpers_follow_java() {
    assert_eq!(expiration_from_config(None), HOUR);
    assert_eq!(
        expiration_from_config(Some("30")),
        Duration::from_secs(1800)
    );
    assert_eq!(expiration_from_config(Some("0.5")), Duration::from_secs(30));
    assert_eq!(expiration_from_config(Some("soon")), HOUR);
    assert_eq!(expiration_from_config(Some("-3")), Duration::ZERO);
    assert!(constant_time_eq(b"abcdefgh", b"abcdefgh"));
    assert!(!constant_time_eq(b"abcdefgh", b"abcdefgX"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = TokenAuth::create(dir.path(), HOUR).expect("create");
    assert!(!format!("{auth:?}").contains(&key(&read_key_file(dir.path()), "API")));
}

use super::*;

const MAX_BYTES: u64 = 4096;

fn message(error: ServeError) -> (u16, String) {
    (error.status(), error.to_string())
}

#[test]
fn local_names_stay_inside_the_store() {
    let root = tempfile::tempdir().expect("tempdir");
    let store = root.path().join("store");
    std::fs::create_dir_all(store.join("sub")).expect("mkdir");
    std::fs::create_dir_all(store.join("unpacked")).expect("mkdir");
    std::fs::write(store.join("a.mar"), b"a").expect("write");
    std::fs::write(store.join("sub/b.mar"), b"b").expect("write");
    std::fs::write(root.path().join("outside.mar"), b"o").expect("write");
    std::os::unix::fs::symlink(root.path().join("outside.mar"), store.join("escape.mar"))
        .expect("link");
    std::os::unix::fs::symlink(store.join("a.mar"), store.join("alias.mar")).expect("link");
    let real_store = store.canonicalize().expect("canonical");
    let s = store.display();
    let r = root.path().display();

    assert_eq!(
        resolve_local(&store, "a.mar").expect("plain"),
        real_store.join("a.mar")
    );
    assert_eq!(
        resolve_local(&store, "unpacked").expect("dir"),
        real_store.join("unpacked")
    );
    assert_eq!(
        resolve_local(&store, "alias.mar").expect("alias"),
        real_store.join("a.mar")
    );
    let file_url = format!("file://{s}/a.mar");
    assert_eq!(
        resolve_local(&store, &file_url).expect("file"),
        real_store.join("a.mar")
    );
    let localhost = format!("FILE://localhost{s}/a.mar");
    assert_eq!(
        resolve_local(&store, &localhost).expect("localhost"),
        real_store.join("a.mar")
    );

    let relative = |url: &str| (404, format!("Relative path is not allowed in url: {url}"));
    let not_found = |url: &str| (404, format!("Model not found at: {url}"));
    let not_allowed = |url: &str| {
        (
            404,
            format!("Given URL {url} does not match any allowed URL(s)"),
        )
    };
    let cases: Vec<(String, (u16, String))> = vec![
        (String::new(), (404, "empty url".into())),
        ("../fake.mar".into(), relative("../fake.mar")),
        ("%2e%2e/fake.mar".into(), relative("%2e%2e/fake.mar")),
        ("%2E%2E%2Ffake.mar".into(), relative("%2E%2E%2Ffake.mar")),
        (
            "%252e%252e%252fouter.mar".into(),
            relative("%252e%252e%252fouter.mar"),
        ),
        (
            format!("file://{s}/%2e%2e/outside.mar"),
            relative(&format!("file://{s}/%2e%2e/outside.mar")),
        ),
        ("sub/b.mar".into(), not_found("sub/b.mar")),
        ("sub\\b.mar".into(), not_found("sub\\b.mar")),
        (format!("{s}/a.mar"), not_found(&format!("{s}/a.mar"))),
        ("missing.mar".into(), not_found("missing.mar")),
        ("escape.mar".into(), not_found("escape.mar")),
        (
            format!("file://{s}/sub/b.mar"),
            not_allowed(&format!("file://{s}/sub/b.mar")),
        ),
        (
            format!("file://{s}/escape.mar"),
            not_allowed(&format!("file://{s}/escape.mar")),
        ),
        (
            format!("file://{r}/outside.mar"),
            not_allowed(&format!("file://{r}/outside.mar")),
        ),
        (
            "file:///etc/passwd".into(),
            not_allowed("file:///etc/passwd"),
        ),
        (
            "file://evil.example/a.mar".into(),
            not_allowed("file://evil.example/a.mar"),
        ),
    ];
    for (url, expected) in cases {
        let error = resolve_local(&store, &url).expect_err(&url);
        assert_eq!(error.kind(), "ModelNotFoundException");
        assert_eq!(message(error), expected, "{url}");
    }
}

#[tokio::test]
async fn locate_applies_torchserve_order_and_default_policy() {
    let store = tempfile::tempdir().expect("tempdir");
    std::fs::write(store.path().join("a.mar"), b"a").expect("write");
    let s = store.path().display();
    let default = UrlPolicy::from_config(None, MAX_BYTES, DEFAULT_TIMEOUT, DEFAULT_MAX_REDIRECTS)
        .expect("policy");
    let error = locate("a.mar", &default, None).await.expect_err("no store");
    assert_eq!(
        message(error),
        (404, "Model store has not been configured.".into())
    );

    let local = locate("a.mar", &default, Some(store.path()))
        .await
        .expect("plain");
    assert!(!local.downloaded && local.path.ends_with("a.mar"));
    let file = locate(&format!("file://{s}/a.mar"), &default, Some(store.path())).await;
    assert!(file.expect("file url").path.ends_with("a.mar"));

    let url = "https://example.com/models/a.mar";
    let error = locate(url, &default, Some(store.path()))
        .await
        .expect_err("default refuses http");
    assert_eq!(
        message(error),
        (
            404,
            format!("Given URL {url} does not match any allowed URL(s)")
        )
    );

    let http_only = UrlPolicy::from_config(
        Some(" https://example\\.com/.* , http://localhost/.*"),
        MAX_BYTES,
        DEFAULT_TIMEOUT,
        DEFAULT_MAX_REDIRECTS,
    )
    .expect("policy");
    assert!(http_only.allows("HTTPS://EXAMPLE.COM/x.mar"));
    assert!(!http_only.allows("https://example.com.evil/x.mar"));
    let file_url = format!("file://{s}/a.mar");
    let error = locate(&file_url, &http_only, Some(store.path()))
        .await
        .expect_err("file refused");
    assert_eq!(error.status(), 404);
    assert!(UrlPolicy::from_config(Some("(unclosed"), 1, DEFAULT_TIMEOUT, 1).is_err());
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, App, HttpResponse, HttpServer};

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::download::UrlPolicy;

const ARCHIVE: &[u8] = &[7u8; 1000];
const MAX_BYTES: u64 = 4096;

/// A local HTTP server counting the requests it gets.
struct TestServer {
    base: String,
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl TestServer {
    async fn start() -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let server = HttpServer::new(move || {
            let counter = counter.clone();
            let redirect = |to: String| {
                web::get().to(move || {
                    let to = to.clone();
                    async move {
                        HttpResponse::Found()
                            .insert_header((header::LOCATION, to))
                            .finish()
                    }
                })
            };
            let archive = || web::get().to(|| async { HttpResponse::Ok().body(ARCHIVE) });
            App::new()
                .route("/models/ok.mar", archive())
                .route("/models/ok.tar.gz", archive())
                .route("/models/ok.zip", archive())
                .route(
                    "/models/missing.mar",
                    web::get().to(|| async { HttpResponse::NotFound().finish() }),
                )
                .route(
                    "/models/big.mar",
                    web::get().to(|| async {
                        HttpResponse::Ok().body(vec![1u8; MAX_BYTES as usize + 1])
                    }),
                )
                .route(
                    "/models/chunked.mar",
                    web::get().to(|| async { chunked(64, 1024, 0) }),
                )
                .route(
                    "/models/slow.mar",
                    web::get().to(|| async { chunked(10, 10, 300) }),
                )
                .route("/hop/ok.mar", redirect("/models/ok.mar".into()))
                .route(
                    "/twice/ok.mar",
                    redirect(format!("http://127.0.0.1:{port}/hop/ok.mar")),
                )
                .route("/loop/ok.mar", redirect("/loop/ok.mar".into()))
                .route(
                    "/away/ok.mar",
                    redirect(format!("http://127.0.0.2:{port}/models/ok.mar")),
                )
                .route(
                    "/decimal/ok.mar",
                    redirect(format!("http://2130706433:{port}/models/ok.mar")),
                )
                .route(
                    "/userinfo/ok.mar",
                    redirect(format!("http://u:p@127.0.0.1:{port}/models/ok.mar")),
                )
                .route("/file/ok.mar", redirect("file:///etc/passwd".into()))
                .wrap_fn(move |request, service| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    actix_web::dev::Service::call(service, request)
                })
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        tokio::spawn(server);
        TestServer {
            base: format!("http://127.0.0.1:{port}"),
            port,
            hits,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Everything on this server allowed.
    fn policy(&self) -> UrlPolicy {
        let pattern = format!("http://127\\.0\\.0\\.1:{}/.*", self.port);
        UrlPolicy::from_config(Some(&pattern), MAX_BYTES, Duration::from_secs(5), 3)
            .expect("policy")
    }
}

/// `count` chunks of `size` bytes, `delay_ms` apart, without Content-Length.
fn chunked(count: usize, size: usize, delay_ms: u64) -> HttpResponse {
    let stream = futures_util::stream::unfold(0, move |sent| async move {
        if sent == count {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let chunk = bytes::Bytes::from(vec![3u8; size]);
        Some((Ok::<_, std::io::Error>(chunk), sent + 1))
    });
    HttpResponse::Ok().streaming(stream)
}

fn listing(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .collect();
    names.sort();
    names
}

fn message(error: ServeError) -> (u16, String) {
    (error.status(), error.to_string())
}

#[tokio::test]
async fn allowed_downloads_land_in_the_store() {
    let server = TestServer::start().await;
    let store = tempfile::tempdir().expect("tempdir");
    let policy = server.policy();
    let url = format!("{}/models/ok.mar", server.base);
    let path = download(&url, &policy, store.path())
        .await
        .expect("downloads");
    assert_eq!(path, store.path().join("ok.mar"));
    assert_eq!(std::fs::read(&path).expect("read"), ARCHIVE);

    // Redirects inside the allow-list are followed (relative and absolute).
    for (route, name) in [("hop", "ok.mar"), ("twice", "ok.mar")] {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("{}/{route}/{name}", server.base);
        download(&url, &policy, dir.path()).await.expect(route);
        assert_eq!(listing(dir.path()), [name]);
    }
    let url = format!("HTTP://127.0.0.1:{}/models/ok.tar.gz", server.port);
    download(&url, &policy, store.path())
        .await
        .expect("tar.gz, case-insensitive match");

    // The same file again: TorchServe's 500, and no request is made.
    let before = server.hits();
    let error = download(
        &format!("{}/models/ok.mar", server.base),
        &policy,
        store.path(),
    )
    .await;
    assert_eq!(
        message(error.expect_err("exists")),
        (500, "Model file already exists ok.mar".into())
    );
    assert_eq!(server.hits(), before);
    assert_eq!(listing(store.path()), ["ok.mar", "ok.tar.gz"]);
}

#[tokio::test]
async fn refused_urls_never_reach_the_network() {
    let server = TestServer::start().await;
    let store = tempfile::tempdir().expect("tempdir");
    let port = server.port;
    let only_models = format!("http://127\\.0\\.0\\.1:{port}/models/.*");
    let narrow = UrlPolicy::from_config(Some(&only_models), MAX_BYTES, Duration::from_secs(5), 3)
        .expect("policy");
    let anything =
        UrlPolicy::from_config(Some("http(s)?://.*"), MAX_BYTES, Duration::from_secs(5), 3)
            .expect("policy");
    let default =
        UrlPolicy::from_config(None, MAX_BYTES, Duration::from_secs(5), 3).expect("policy");
    let cases = [
        (&default, format!("http://127.0.0.1:{port}/models/ok.mar")),
        (&narrow, format!("http://127.0.0.1:{port}/hop/ok.mar")),
        (
            &anything,
            format!("http://user@127.0.0.1:{port}/models/ok.mar"),
        ),
        (
            &anything,
            format!("http://u:p@127.0.0.1:{port}/models/ok.mar"),
        ),
        (
            &anything,
            format!("http://127.0.0.1:{port}@127.0.0.1:{port}/models/ok.mar"),
        ),
        (&anything, format!("http://2130706433:{port}/models/ok.mar")),
        (&anything, format!("http://0x7f000001:{port}/models/ok.mar")),
        (&anything, format!("http://0177.0.0.1:{port}/models/ok.mar")),
        (&anything, format!("http://127.1:{port}/models/ok.mar")),
        (
            &anything,
            format!("http://%31%32%37.0.0.1:{port}/models/ok.mar"),
        ),
        (&anything, format!("http://[0:0::1]:{port}/models/ok.mar")),
        (
            &anything,
            format!("http:\\\\127.0.0.1:{port}/models/ok.mar"),
        ),
        (
            &anything,
            format!("http://127.0.0.1:{port}/models/ok.mar\n"),
        ),
    ];
    for (policy, url) in &cases {
        let (status, text) = message(download(url, policy, store.path()).await.expect_err(url));
        assert_eq!(status, 404, "{url}: {text}");
        assert_eq!(
            text,
            format!("Given URL {url} does not match any allowed URL(s)")
        );
    }
    for (url, expected) in [
        (String::new(), "empty url".to_string()),
        (
            format!("http://127.0.0.1:{port}/models/../ok.mar"),
            format!(
                "Relative path is not allowed in url: http://127.0.0.1:{port}/models/../ok.mar"
            ),
        ),
        (
            format!("http://127.0.0.1:{port}/models/%2E%2e/ok.mar"),
            format!(
                "Relative path is not allowed in url: http://127.0.0.1:{port}/models/%2E%2e/ok.mar"
            ),
        ),
    ] {
        assert_eq!(
            message(
                download(&url, &anything, store.path())
                    .await
                    .expect_err(&url)
            ),
            (404, expected)
        );
    }
    // Names that are not plain archive names are download failures (400), still without a request.
    for path in [
        "models/ok.zip",
        "models/",
        "models/.mar",
        "models/a%20b.mar",
    ] {
        let url = format!("http://127.0.0.1:{port}/{path}");
        let (status, text) = message(
            download(&url, &anything, store.path())
                .await
                .expect_err(path),
        );
        assert_eq!(
            (status, text),
            (400, format!("Failed to download archive from: {url}"))
        );
    }
    assert_eq!(server.hits(), 0);
    assert!(listing(store.path()).is_empty());
}

#[tokio::test]
async fn redirects_out_of_the_allow_list_are_refused() {
    let server = TestServer::start().await;
    let store = tempfile::tempdir().expect("tempdir");
    let policy = server.policy();
    let port = server.port;
    for (route, hop) in [
        ("away", format!("http://127.0.0.2:{port}/models/ok.mar")),
        ("decimal", format!("http://2130706433:{port}/models/ok.mar")),
        (
            "userinfo",
            format!("http://u:p@127.0.0.1:{port}/models/ok.mar"),
        ),
        ("file", "file:///etc/passwd".to_string()),
    ] {
        let url = format!("{}/{route}/ok.mar", server.base);
        let before = server.hits();
        let (status, text) = message(
            download(&url, &policy, store.path())
                .await
                .expect_err(route),
        );
        assert_eq!(status, 404, "{route}: {text}");
        assert_eq!(
            text,
            format!("Given URL {hop} does not match any allowed URL(s)"),
            "{route}"
        );
        assert_eq!(
            server.hits(),
            before + 1,
            "{route}: only the first hop is requested"
        );
    }
    let url = format!("{}/loop/ok.mar", server.base);
    let (status, _) = message(
        download(&url, &policy, store.path())
            .await
            .expect_err("loop"),
    );
    assert_eq!(status, 400);
    assert!(listing(store.path()).is_empty());
}

#[tokio::test]
async fn failed_downloads_leave_nothing_behind() {
    let server = TestServer::start().await;
    let store = tempfile::tempdir().expect("tempdir");
    let quick = UrlPolicy::from_config(
        Some(&format!("http://127\\.0\\.0\\.1:{}/.*", server.port)),
        MAX_BYTES,
        Duration::from_millis(500),
        3,
    )
    .expect("policy");
    for route in ["big.mar", "chunked.mar", "missing.mar", "slow.mar"] {
        let url = format!("{}/models/{route}", server.base);
        let error = download(&url, &quick, store.path()).await.expect_err(route);
        let body = error.body();
        assert_eq!(
            (body.code, body.kind),
            (400, "DownloadArchiveException"),
            "{route}"
        );
        assert_eq!(
            body.message,
            format!("Failed to download archive from: {url}")
        );
        assert!(
            listing(store.path()).is_empty(),
            "{route}: {:?}",
            listing(store.path())
        );
    }
    // Nothing listening: a network failure is the same 400.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let anything = UrlPolicy::from_config(Some("http://.*"), MAX_BYTES, Duration::from_secs(5), 3)
        .expect("policy");
    let url = format!("http://127.0.0.1:{closed_port}/ok.mar");
    let error = download(&url, &anything, store.path())
        .await
        .expect_err("refused");
    assert_eq!(error.status(), 400);
    assert!(listing(store.path()).is_empty());
}

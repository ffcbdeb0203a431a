use std::os::unix::fs::PermissionsExt as _;

use super::*;

/// A snapshot in the exact form TorchServe's `FSSnapshotSerializer` writes (compare
/// `frontend/server/src/test/resources/snapshots/snapshot9.cfg`): `Properties.store` escapes,
/// Gson-pretty JSON with `\n` and `\:` escapes, `model_snapshot` in the middle, Java's odd
/// indentation kept.
const TORCHSERVE_SNAPSHOT: &str = r#"#Saving snapshot
#Tue Mar 31 06:24:29 UTC 2020
inference_address=https\://127.0.0.1\:8443
load_models=noop.mar
model_store=../archive/src/test/resources/models
model_snapshot={\n  "name"\: "20200331062429525-snapshot.cfg",\n  "modelCount"\: 3,\n  "created"\: 1585635869526,\n  "models"\: {\n    "noop"\: {\n      "1.11"\: {\n        "defaultVersion"\: true,\n        "marName"\: "noop.mar",\n        "minWorkers"\: 1,\n        "maxWorkers"\: 1,\n        "batchSize"\: 1,\n        "maxBatchDelay"\: 100,\n        "responseTimeout"\: 120,\n        "startupTimeout"\: 120,\n        "runtimeType"\: "python"\n     }\n    },\n    "noopversioned"\: {\n      "1.2.1"\: {\n        "defaultVersion"\: true,\n        "marName"\: "noop_v2.mar",\n        "minWorkers"\: 2,\n        "maxWorkers"\: 3,\n        "batchSize"\: 4,\n        "maxBatchDelay"\: 50,\n        "responseTimeout"\: 60,\n        "startupTimeout"\: 90,\n        "runtimeType"\: "python"\n      },\n      "1.11"\: {\n        "defaultVersion"\: false,\n        "marName"\: "noop.mar",\n        "minWorkers"\: 1,\n        "maxWorkers"\: 1,\n        "batchSize"\: 1,\n        "maxBatchDelay"\: 100,\n        "responseTimeout"\: 120,\n        "startupTimeout"\: 120,\n        "runtimeType"\: "python"\n      }\n    }\n  }\n}
tsConfigFile=src/test/resources/config.properties
management_address=https\://127.0.0.1\:8444
enable_model_api=true
"#;

fn model(mar: &str, default_version: bool, workers: u32) -> SnapshotModel {
    SnapshotModel {
        default_version,
        mar_name: mar.into(),
        min_workers: workers,
        max_workers: workers,
        batch_size: 1,
        max_batch_delay: 100,
        response_timeout: Some(120),
        startup_timeout: Some(120),
        runtime_type: "python".into(),
        parallel_level: None,
    }
}

fn sample(name: &str, created: i64) -> Snapshot {
    let properties = BTreeMap::from([
        (
            "inference_address".to_string(),
            "http://127.0.0.1:8080".to_string(),
        ),
        ("model_store".to_string(), "/srv/model store".to_string()),
        ("note".to_string(), "a=b:c #!\\ é".to_string()),
    ]);
    let models = BTreeMap::from([
        (
            "noop".to_string(),
            BTreeMap::from([("1.0".to_string(), model("noop.mar", true, 4))]),
        ),
        (
            "resnet".to_string(),
            BTreeMap::from([
                ("1.0".to_string(), model("resnet.mar", false, 1)),
                ("2.0".to_string(), model("resnet_v2.mar", true, 2)),
            ]),
        ),
    ]);
    Snapshot {
        properties,
        models,
        created,
        name: name.to_string(),
    }
}

#[test]
fn write_then_read_round_trips() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("logs/config");
    let snapshot = Snapshot::new(
        SnapshotKind::Startup,
        sample("x", 0).properties,
        sample("x", 0).models,
    );
    assert!(is_snapshot_name(&snapshot.name), "{}", snapshot.name);
    assert!(snapshot.name.ends_with("-startup.cfg"));
    assert_eq!(snapshot.model_count(), 3);

    let path = write(&dir, &snapshot).expect("writes");
    assert_eq!(path, dir.join(&snapshot.name));
    assert_eq!(read(&path).expect("reads"), snapshot);
    assert_eq!(latest(&dir).expect("lists"), Some(snapshot.clone()));

    let text = std::fs::read_to_string(&path).expect("text");
    assert!(text.starts_with("#Saving snapshot\n#"), "{text}");
    assert!(
        text.contains("inference_address=http\\://127.0.0.1\\:8080\n"),
        "{text}"
    );
    let last = text.lines().last().expect("lines");
    assert!(
        last.starts_with("model_snapshot={\\n  \"name\"\\: \""),
        "{last}"
    );
    assert!(
        last.contains("\\n  \"modelCount\"\\: 3,\\n  \"created\"\\: "),
        "{last}"
    );
    assert!(
        last.contains("\"defaultVersion\"\\: true,\\n        \"marName\"\\: \"noop.mar\""),
        "{last}"
    );
    assert!(!last.contains("parallelLevel"));
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Only the snapshot is left: no temp file.
    assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 1);
    // Never overwritten.
    assert!(write(&dir, &snapshot).is_err());
    assert!(write(&dir, &sample("../evil.cfg", 0)).is_err());
}

#[test]
fn torchserve_written_snapshot_parses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("20200331062429525-snapshot.cfg");
    std::fs::write(&path, TORCHSERVE_SNAPSHOT).expect("write");
    let snapshot = read(&path).expect("parses");
    assert_eq!(snapshot.name, "20200331062429525-snapshot.cfg");
    assert_eq!(snapshot.created, 1_585_635_869_526);
    assert_eq!(
        snapshot.properties["inference_address"],
        "https://127.0.0.1:8443"
    );
    assert_eq!(
        snapshot.properties["tsConfigFile"],
        "src/test/resources/config.properties"
    );
    assert!(!snapshot.properties.contains_key(MODEL_SNAPSHOT_KEY));
    assert_eq!(snapshot.model_count(), 3);
    assert_eq!(snapshot.models["noop"]["1.11"], model("noop.mar", true, 1));
    let versioned = &snapshot.models["noopversioned"];
    assert!(!versioned["1.11"].default_version);
    let v2 = &versioned["1.2.1"];
    assert_eq!(
        (v2.mar_name.as_str(), v2.min_workers, v2.max_workers),
        ("noop_v2.mar", 2, 3)
    );
    assert_eq!((v2.batch_size, v2.max_batch_delay), (4, 50));
    assert_eq!(
        (v2.response_timeout, v2.startup_timeout),
        (Some(60), Some(90))
    );
    assert_eq!(latest(dir.path()).expect("lists"), Some(snapshot));
}

#[test]
fn older_snapshots_without_optional_fields_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("20200101000000000-shutdown.cfg");
    let json = r#"{\n"name"\:"20200101000000000-shutdown.cfg","created"\:1,"models"\:{"m"\:{"1.0"\:{"defaultVersion"\:true,"marName"\:"m.mar","minWorkers"\:1,"maxWorkers"\:1,"batchSize"\:1,"maxBatchDelay"\:100,"parallelLevel"\:2}}}}"#;
    std::fs::write(&path, format!("model_snapshot={json}\n")).expect("write");
    let model = &read(&path).expect("parses").models["m"]["1.0"];
    assert_eq!(
        (model.response_timeout, model.startup_timeout),
        (None, None)
    );
    assert_eq!(
        (model.runtime_type.as_str(), model.parallel_level),
        ("python", Some(2))
    );
}

#[test]
fn newest_snapshot_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, created) in [
        ("20240101000000000-startup.cfg", 1),
        ("20240301000000000-snapshot.cfg", 3),
        ("20240201000000000-shutdown.cfg", 2),
    ] {
        write(dir.path(), &sample(name, created)).expect("writes");
    }
    let newest = latest(dir.path()).expect("lists").expect("some");
    assert_eq!(
        (newest.name.as_str(), newest.created),
        ("20240301000000000-snapshot.cfg", 3)
    );
}

#[test]
fn broken_newer_files_are_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = sample("20240101000000000-snapshot.cfg", 1);
    let path = write(dir.path(), &good).expect("writes");
    let text = std::fs::read_to_string(&path).expect("text");
    // A newer file cut short (torn write), garbage, an empty file, a bad escape, a folder.
    std::fs::write(
        dir.path().join("20240102000000000-snapshot.cfg"),
        &text[..text.len() - 40],
    )
    .expect("write");
    std::fs::write(
        dir.path().join("20240103000000000-snapshot.cfg"),
        [0xff, 0x00, 0x13, 0x37],
    )
    .expect("write");
    std::fs::write(dir.path().join("20240104000000000-snapshot.cfg"), "").expect("write");
    std::fs::write(
        dir.path().join("20240105000000000-snapshot.cfg"),
        "model_snapshot=\\u12",
    )
    .expect("write");
    std::fs::create_dir(dir.path().join("20240106000000000-snapshot.cfg")).expect("mkdir");
    // Temp files and other names are never read, however new and valid they look.
    let newer = sample("20990101000000000-snapshot.cfg", 9);
    let newer_text = render(&newer).expect("renders");
    std::fs::write(dir.path().join(".snapshot-abc123.tmp"), &newer_text).expect("write");
    std::fs::write(
        dir.path().join("99999999999999999-snapshot.cfg.tmp"),
        &newer_text,
    )
    .expect("write");
    std::fs::write(dir.path().join("latest.cfg"), &newer_text).expect("write");

    assert_eq!(latest(dir.path()).expect("lists"), Some(good));
}

#[test]
fn missing_or_empty_folders_have_no_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(latest(&dir.path().join("absent")).expect("lists"), None);
    assert_eq!(latest(dir.path()).expect("lists"), None);
    assert_eq!(default_dir(None), Path::new("logs/config"));
    assert_eq!(
        default_dir(Some(Path::new("/var/log/ts"))),
        Path::new("/var/log/ts/config")
    );
}

#[test]
fn prune_keeps_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    for day in 1..=5 {
        write(
            dir.path(),
            &sample(&format!("2024010{day}000000000-snapshot.cfg"), day),
        )
        .expect("writes");
    }
    let fresh_temp = dir.path().join(".snapshot-inflight.tmp");
    std::fs::write(&fresh_temp, "partial").expect("write");
    assert_eq!(prune(dir.path(), 2).expect("prunes"), 3);
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            ".snapshot-inflight.tmp",
            "20240104000000000-snapshot.cfg",
            "20240105000000000-snapshot.cfg"
        ]
    );
}

#[test]
fn snapshot_names_are_checked() {
    for good in [
        "20200329045334828-startup.cfg",
        "20200329045334828-snapshot.cfg",
    ] {
        assert!(is_snapshot_name(good), "{good}");
    }
    for bad in [
        "2020032904533482-startup.cfg",
        "20200329045334828-.cfg",
        "20200329045334828-Startup.cfg",
        "20200329045334828-startup.cfg.tmp",
        "x20200329045334828-startup.cfg",
        "../20200329045334828-startup.cfg",
    ] {
        assert!(!is_snapshot_name(bad), "{bad}");
    }
}

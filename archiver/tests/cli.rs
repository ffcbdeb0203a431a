//! The `oxserve-archiver` binary end to end: torch-model-archiver's command lines, real ONNX
//! Runtime, real archives read back with the `zip`/`tar` crates. Each test works in a fresh
//! temporary folder; refusals must print one `oxserve-archiver: error:` line and leave nothing.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use oxserve_archiver::unpack::{extract, Limits};
use oxserve_archiver::{HandlerConfig, HandlerKind};
use serde_json::Value;
use zip::CompressionMethod;

const BIN: &str = env!("CARGO_BIN_EXE_oxserve-archiver");

const INDEX_TO_NAME: &str = r#"{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"], "2": ["n01484850", "great_white_shark"]}"#;

fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures")).join(name)
}

fn digits(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/digits")).join(name)
}

fn archiver(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir);
    command
}

fn run(dir: &Path, args: &[&str]) -> Output {
    archiver(dir).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs and requires success; returns stderr (warnings).
fn run_ok(dir: &Path, args: &[&str]) -> String {
    let output = run(dir, args);
    assert!(
        output.status.success(),
        "{args:?} failed: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stderr)
}

/// Every file and folder under `dir` (relative paths) with file contents, to prove a failed run
/// changed nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let metadata = fs::symlink_metadata(&path).unwrap();
            if metadata.is_dir() {
                into.insert(relative, None);
                walk(root, &path, into);
            } else {
                into.insert(relative, Some(fs::read(&path).unwrap_or_default()));
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn zip_names(archive: &Path) -> Vec<String> {
    let zip = zip::ZipArchive::new(fs::File::open(archive).unwrap()).unwrap();
    let mut names: Vec<String> = zip
        .file_names()
        .map(|name| name.unwrap().into_owned())
        .collect();
    names.sort();
    names
}

fn zip_read(archive: &Path, name: &str) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(fs::File::open(archive).unwrap()).unwrap();
    let mut entry = zip.by_name(name).unwrap();
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).unwrap();
    bytes
}

fn zip_manifest(archive: &Path) -> Value {
    serde_json::from_slice(&zip_read(archive, "MAR-INF/MANIFEST.json")).unwrap()
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    names.sort();
    names
}

/// A temp folder with a copy of tiny_mlp.onnx (`model_store/` does not exist yet).
fn scene() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    fs::copy(fixture("tiny_mlp.onnx"), tmp.path().join("tiny_mlp.onnx")).unwrap();
    tmp
}

/// The usual arguments for packing tiny_mlp.onnx with the tensor handler into model_store/.
fn tiny_mlp_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--model-name",
        "tiny_mlp",
        "--version",
        "1.0",
        "--serialized-file",
        "tiny_mlp.onnx",
        "--handler",
        "tensor",
        "--export-path",
        "model_store",
    ];
    args.extend_from_slice(extra);
    args
}

/// Runs a command that must be refused: non-zero exit, a single `oxserve-archiver: error:` line
/// on stderr, and the temp folder exactly as before. It runs twice: with no `model_store/` (it
/// must not be created) and with an empty one (it must stay empty: no temp files, no partial
/// archive). Returns the error line.
fn refused(dir: &Path, command: &mut Command) -> String {
    let store = dir.join("model_store");
    let mut line = String::new();
    for store_exists in [false, true] {
        if store_exists {
            fs::create_dir_all(&store).unwrap();
        } else if store.exists() {
            fs::remove_dir_all(&store).unwrap();
        }
        let before = snapshot(dir);
        let output = command.output().unwrap();
        let stderr = text(&output.stderr);
        assert!(
            !output.status.success(),
            "expected a refusal, got success: {stderr}"
        );
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {stderr:?}");
        assert!(
            lines[0].starts_with("oxserve-archiver: error: "),
            "{stderr:?}"
        );
        assert_eq!(
            snapshot(dir),
            before,
            "a refused run must leave nothing behind ({stderr})"
        );
        if store_exists {
            assert_eq!(list(&store), Vec::<String>::new(), "{stderr}");
        } else {
            assert!(
                !store.exists(),
                "model_store created by a refused run ({stderr})"
            );
        }
        line = lines[0].to_string();
    }
    line
}

fn refused_args(dir: &Path, args: &[&str]) -> String {
    refused(dir, archiver(dir).args(args))
}

// ---------------------------------------------------------------- TorchServe's command line

#[test]
fn torchserve_densenet_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::copy(fixture("tiny_resnet.onnx"), dir.join("densenet161.onnx")).unwrap();
    fs::write(dir.join("index_to_name.json"), INDEX_TO_NAME).unwrap();
    assert!(!dir.join("model_store").exists());

    let output = run(
        dir,
        &[
            "--model-name",
            "densenet161",
            "--version",
            "1.0",
            "--serialized-file",
            "densenet161.onnx",
            "--handler",
            "image_classifier",
            "--extra-files",
            "index_to_name.json",
            "--export-path",
            "model_store",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stderr),
        "",
        "no warnings for a plain ONNX archive"
    );
    assert_eq!(text(&output.stdout).trim(), "model_store/densenet161.mar");

    // The relative export path was created and holds the archive alone (no staging files).
    assert_eq!(list(&dir.join("model_store")), ["densenet161.mar"]);
    let mar = dir.join("model_store/densenet161.mar");
    assert_eq!(
        zip_names(&mar),
        sorted(&[
            "densenet161.onnx",
            "index_to_name.json",
            "MAR-INF/handler.json",
            "MAR-INF/MANIFEST.json"
        ])
    );
    assert_eq!(
        zip_read(&mar, "densenet161.onnx"),
        fs::read(fixture("tiny_resnet.onnx")).unwrap()
    );
    assert_eq!(
        zip_read(&mar, "index_to_name.json"),
        INDEX_TO_NAME.as_bytes()
    );
    // The default format deflates.
    let mut zip = zip::ZipArchive::new(fs::File::open(&mar).unwrap()).unwrap();
    assert_eq!(
        zip.by_name("densenet161.onnx").unwrap().compression(),
        CompressionMethod::Deflated
    );

    let manifest = zip_manifest(&mar);
    let created_on = manifest["createdOn"].as_str().unwrap();
    chrono::NaiveDateTime::parse_from_str(created_on, "%d/%m/%Y %H:%M:%S").unwrap_or_else(
        |error| panic!("createdOn {created_on:?} is not dd/mm/YYYY HH:MM:SS: {error}"),
    );
    assert_eq!(manifest["runtime"], "python");
    assert_eq!(manifest["model"]["modelName"], "densenet161");
    assert_eq!(manifest["model"]["serializedFile"], "densenet161.onnx");
    assert_eq!(manifest["model"]["handler"], "image_classifier");
    assert_eq!(manifest["model"]["modelVersion"], "1.0");
    assert!(manifest["archiverVersion"]
        .as_str()
        .is_some_and(|version| !version.is_empty()));
    let model = manifest["model"].as_object().unwrap();
    for absent in ["modelFile", "requirementsFile", "configFile"] {
        assert!(
            !model.contains_key(absent),
            "{absent} must be omitted: {manifest}"
        );
    }
    let signature = &manifest["oxserve"]["signature"];
    assert_eq!(
        signature["inputs"][0]["shape"],
        serde_json::json!(["batch", 3, 224, 224])
    );
    assert_eq!(signature["inputs"][0]["dtype"], "float32");
    assert_eq!(
        signature["outputs"][0]["shape"],
        serde_json::json!(["batch", 10])
    );
    assert_eq!(manifest["oxserve"]["handlerConfig"], "MAR-INF/handler.json");

    let handler: Value = serde_json::from_slice(&zip_read(&mar, "MAR-INF/handler.json")).unwrap();
    assert_eq!(handler["handler"], "image_classifier");
    assert_eq!(handler["image"]["center_crop"], 224);
}

// ---------------------------------------------------------------- archive formats

#[test]
fn zip_store_format_stores_uncompressed() {
    let tmp = scene();
    run_ok(
        tmp.path(),
        &tiny_mlp_args(&["--archive-format", "zip-store"]),
    );
    assert_eq!(list(&tmp.path().join("model_store")), ["tiny_mlp.mar"]);
    let mar = tmp.path().join("model_store/tiny_mlp.mar");
    let mut zip = zip::ZipArchive::new(fs::File::open(&mar).unwrap()).unwrap();
    assert_eq!(zip.len(), 3);
    for index in 0..zip.len() {
        let entry = zip.by_index(index).unwrap();
        assert_eq!(
            entry.compression(),
            CompressionMethod::Stored,
            "{}",
            entry.name().unwrap()
        );
    }
    drop(zip);
    assert_eq!(
        zip_read(&mar, "tiny_mlp.onnx"),
        fs::read(fixture("tiny_mlp.onnx")).unwrap()
    );
    assert_eq!(
        zip_manifest(&mar)["model"]["serializedFile"],
        "tiny_mlp.onnx"
    );
}

#[test]
fn tgz_format_has_a_root_folder() {
    let tmp = scene();
    run_ok(tmp.path(), &tiny_mlp_args(&["--archive-format", "tgz"]));
    assert_eq!(list(&tmp.path().join("model_store")), ["tiny_mlp.tar.gz"]);
    let file = fs::File::open(tmp.path().join("model_store/tiny_mlp.tar.gz")).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut contents = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        assert!(entry.header().entry_type().is_file());
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        contents.insert(name, bytes);
    }
    let names: Vec<&str> = contents.keys().map(String::as_str).collect();
    assert!(
        names.iter().all(|name| name.starts_with("tiny_mlp/")),
        "{names:?}"
    );
    assert_eq!(
        names,
        [
            "tiny_mlp/MAR-INF/MANIFEST.json",
            "tiny_mlp/MAR-INF/handler.json",
            "tiny_mlp/tiny_mlp.onnx"
        ]
    );
    let manifest: Value =
        serde_json::from_slice(&contents["tiny_mlp/MAR-INF/MANIFEST.json"]).unwrap();
    assert_eq!(manifest["model"]["modelName"], "tiny_mlp");
    assert_eq!(
        contents["tiny_mlp/tiny_mlp.onnx"],
        fs::read(fixture("tiny_mlp.onnx")).unwrap()
    );
}

#[test]
fn no_archive_format_is_a_folder() {
    let tmp = scene();
    run_ok(
        tmp.path(),
        &tiny_mlp_args(&["--archive-format", "no-archive"]),
    );
    assert_eq!(
        list(&tmp.path().join("model_store")),
        ["tiny_mlp"],
        "no staging folder left"
    );
    let folder = tmp.path().join("model_store/tiny_mlp");
    assert_eq!(list(&folder), ["MAR-INF", "tiny_mlp.onnx"]);
    assert_eq!(
        list(&folder.join("MAR-INF")),
        ["MANIFEST.json", "handler.json"]
    );
    let manifest: Value =
        serde_json::from_slice(&fs::read(folder.join("MAR-INF/MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"]["serializedFile"], "tiny_mlp.onnx");
    assert_eq!(
        manifest["oxserve"]["signature"]["inputs"][0]["shape"],
        serde_json::json!(["batch", 4])
    );
}

#[test]
fn unknown_archive_format_is_refused() {
    let tmp = scene();
    let error = refused_args(tmp.path(), &tiny_mlp_args(&["--archive-format", "rar"]));
    assert!(
        error.contains("rar") && error.contains("zip-store"),
        "{error}"
    );
}

// ---------------------------------------------------------------- extra, config and requirements files

#[test]
fn extra_files_take_folders_and_patterns() {
    let tmp = scene();
    let dir = tmp.path();
    for (path, contents) in [
        ("extras/a.txt", "a"),
        ("extras/sub/b.txt", "b"),
        ("extras/sub/deeper/c.txt", "c"),
        ("extras/__pycache__/x.cpython-311.pyc", "compiled"),
        ("extras/.hidden/secret.txt", "secret"),
        ("labels/x.json", "{}"),
        ("labels/y.json", "[]"),
        ("labels/notes.txt", "not matched"),
    ] {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }
    std::os::unix::fs::symlink("/etc/hostname", dir.join("extras/link.txt")).unwrap();

    run_ok(
        dir,
        &tiny_mlp_args(&["--extra-files", "extras,labels/*.json"]),
    );
    let mar = dir.join("model_store/tiny_mlp.mar");
    assert_eq!(
        zip_names(&mar),
        sorted(&[
            "MAR-INF/MANIFEST.json",
            "MAR-INF/handler.json",
            "tiny_mlp.onnx",
            "a.txt",
            "sub/b.txt",
            "sub/deeper/c.txt",
            "x.json",
            "y.json",
        ]),
        "__pycache__, dot-folders, symlinks and unmatched files stay out"
    );
    assert_eq!(zip_read(&mar, "sub/deeper/c.txt"), b"c");
    assert_eq!(zip_read(&mar, "y.json"), b"[]");
}

#[test]
fn extra_file_that_does_not_exist_is_refused() {
    let tmp = scene();
    let error = refused_args(
        tmp.path(),
        &tiny_mlp_args(&["--extra-files", "missing.json"]),
    );
    assert!(error.contains("missing.json"), "{error}");
    let error = refused_args(
        tmp.path(),
        &tiny_mlp_args(&["--extra-files", "labels/*.json"]),
    );
    assert!(error.contains("labels"), "{error}");
}

#[test]
fn config_requirements_and_model_files_are_carried() {
    let tmp = scene();
    let dir = tmp.path();
    let config =
        "minWorkers: 1\nmaxWorkers: 2\nbatchSize: 4\nmaxBatchDelay: 50\nresponseTimeout: 120\n";
    fs::write(dir.join("model-config.yaml"), config).unwrap();
    fs::write(dir.join("requirements.txt"), "torchvision==0.20.0\n").unwrap();
    fs::write(dir.join("model.py"), "class Net: pass\n").unwrap();

    let stderr = run_ok(
        dir,
        &tiny_mlp_args(&[
            "--config-file",
            "model-config.yaml",
            "--requirements-file",
            "requirements.txt",
            "--model-file",
            "model.py",
        ]),
    );
    let warnings: Vec<&str> = stderr.lines().collect();
    assert!(
        warnings
            .iter()
            .any(|line| line.starts_with("oxserve-archiver: warning: ")
                && line.contains("requirements.txt")
                && line.contains("never installed")),
        "{stderr}"
    );
    assert!(
        warnings.iter().any(|line| line.contains("model.py")),
        "{stderr}"
    );

    let mar = dir.join("model_store/tiny_mlp.mar");
    assert_eq!(
        zip_names(&mar),
        sorted(&[
            "MAR-INF/MANIFEST.json",
            "MAR-INF/handler.json",
            "tiny_mlp.onnx",
            "model-config.yaml",
            "requirements.txt",
            "model.py",
        ])
    );
    assert_eq!(zip_read(&mar, "model-config.yaml"), config.as_bytes());
    let manifest = zip_manifest(&mar);
    assert_eq!(manifest["model"]["configFile"], "model-config.yaml");
    assert_eq!(manifest["model"]["requirementsFile"], "requirements.txt");
    assert_eq!(manifest["model"]["modelFile"], "model.py");

    // The server-side reader finds the typed config.
    let extracted = extract(&mar, &dir.join("unpacked"), &Limits::default()).unwrap();
    let model_config = extracted.model_config.unwrap();
    assert_eq!(model_config.batch_size, Some(4));
    assert_eq!(model_config.max_batch_delay, Some(50));
    assert_eq!(model_config.max_workers, Some(2));
}

/// Packs tiny_mlp with `yaml` as its model-config.yaml; the archiver must refuse it. Returns its
/// error line.
fn refused_model_config(yaml: &str) -> String {
    let tmp = scene();
    fs::write(tmp.path().join("model-config.yaml"), yaml).unwrap();
    refused_args(
        tmp.path(),
        &tiny_mlp_args(&["--config-file", "model-config.yaml"]),
    )
}

#[test]
fn model_config_with_a_wrongly_typed_value_is_refused() {
    let error = refused_model_config("minWorkers: 1\nbatchSize: eight\n");
    assert!(
        error.contains("batchSize") && error.contains("model-config.yaml"),
        "{error}"
    );
}

#[test]
fn model_config_with_max_workers_below_min_workers_is_refused() {
    let error = refused_model_config("minWorkers: 3\nmaxWorkers: 1\n");
    assert!(
        error.contains("maxWorkers") && error.contains("minWorkers"),
        "{error}"
    );
}

// ---------------------------------------------------------------- -f/--force

#[test]
fn existing_archive_is_kept_without_force_and_replaced_with_it() {
    let tmp = scene();
    let dir = tmp.path();
    run_ok(dir, &tiny_mlp_args(&[]));
    let mar = dir.join("model_store/tiny_mlp.mar");
    let first = fs::read(&mar).unwrap();

    // Same command, new version, no -f: refused, archive untouched, nothing else written.
    let mut second = tiny_mlp_args(&[]);
    second[3] = "2.0";
    let error = refused_command_keeping(dir, &second);
    assert!(
        error.contains("already exists") && error.contains("--force"),
        "{error}"
    );
    assert_eq!(fs::read(&mar).unwrap(), first);

    // Short flags as torch-model-archiver has them: -f overwrites.
    run_ok(
        dir,
        &[
            "-n",
            "tiny_mlp",
            "-v",
            "2.0",
            "-s",
            "tiny_mlp.onnx",
            "--handler",
            "tensor",
            "--export-path",
            "model_store",
            "-f",
        ],
    );
    assert_eq!(list(&dir.join("model_store")), ["tiny_mlp.mar"]);
    assert_eq!(zip_manifest(&mar)["model"]["modelVersion"], "2.0");
    run_ok(dir, &tiny_mlp_args(&["--force"]));
    assert_eq!(zip_manifest(&mar)["model"]["modelVersion"], "1.0");
}

#[test]
fn existing_folder_is_kept_without_force_and_replaced_with_it() {
    let tmp = scene();
    let dir = tmp.path();
    run_ok(dir, &tiny_mlp_args(&["--archive-format", "no-archive"]));
    let folder = dir.join("model_store/tiny_mlp");
    fs::write(folder.join("stale.txt"), "old").unwrap();
    let error = refused_command_keeping(dir, &tiny_mlp_args(&["--archive-format", "no-archive"]));
    assert!(
        error.contains("already exists") && error.contains("--force"),
        "{error}"
    );
    assert!(folder.join("stale.txt").exists());
    run_ok(
        dir,
        &tiny_mlp_args(&["--archive-format", "no-archive", "-f"]),
    );
    assert_eq!(list(&dir.join("model_store")), ["tiny_mlp"]);
    assert_eq!(
        list(&folder),
        ["MAR-INF", "tiny_mlp.onnx"],
        "the old folder was replaced, not merged"
    );
}

/// Like [`refused`], for a model store that already holds an archive: the whole folder must be
/// byte-for-byte unchanged.
fn refused_command_keeping(dir: &Path, args: &[&str]) -> String {
    let before = snapshot(dir);
    let output = run(dir, args);
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with("oxserve-archiver: error: "),
        "{stderr:?}"
    );
    assert_eq!(snapshot(dir), before, "{stderr}");
    stderr.trim_end().to_string()
}

// ---------------------------------------------------------------- refused inputs

#[test]
fn missing_serialized_file_is_refused() {
    let tmp = scene();
    let mut args = tiny_mlp_args(&[]);
    args[5] = "nope.onnx";
    let error = refused_args(tmp.path(), &args);
    assert!(error.contains("nope.onnx"), "{error}");
}

#[test]
fn png_as_serialized_file_is_refused() {
    let tmp = scene();
    let png = digits("digit_0.png");
    let mut args = tiny_mlp_args(&[]);
    args[5] = png.to_str().unwrap();
    let error = refused_args(tmp.path(), &args);
    assert!(
        error.contains("ONNX Runtime cannot load digit_0.png"),
        "{error}"
    );
}

/// A TorchScript `.pt` is a zip archive; so is a state_dict saved by torch.save.
fn torchscript_scene() -> tempfile::TempDir {
    let tmp = scene();
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer
        .start_file("model/data.pkl", zip::write::SimpleFileOptions::default())
        .unwrap();
    writer.write_all(b"\x80\x02}q\x00.").unwrap();
    fs::write(
        tmp.path().join("model.pt"),
        writer.finish().unwrap().into_inner(),
    )
    .unwrap();
    tmp
}

#[test]
fn pytorch_model_without_torch_is_refused_with_one_line_naming_what_to_install() {
    let tmp = torchscript_scene();
    let missing = tmp.path().join("no-such-python");
    let mut args = tiny_mlp_args(&["--input-shape", "1,4", "--python"]);
    args[5] = "model.pt";
    args.push(missing.to_str().unwrap());
    let error = refused_args(tmp.path(), &args);
    assert!(
        error.contains("needs PyTorch")
            && error.contains("pip install torch")
            && error.contains("model.pt"),
        "{error}"
    );
    // OXSERVE_PYTHON names the Python when --python does not.
    let mut args = tiny_mlp_args(&["--input-shape", "1,4"]);
    args[5] = "model.pt";
    let error = refused(
        tmp.path(),
        archiver(tmp.path())
            .args(&args)
            .env("OXSERVE_PYTHON", &missing),
    );
    assert!(
        error.contains("needs PyTorch") && error.contains("no-such-python"),
        "{error}"
    );
}

#[test]
fn pytorch_model_for_the_tensor_handler_needs_its_input_shape() {
    let tmp = torchscript_scene();
    let mut args = tiny_mlp_args(&[]);
    args[5] = "model.pt";
    let error = refused_args(tmp.path(), &args);
    assert!(
        error.contains("--input-shape") && error.contains("tensor"),
        "{error}"
    );
}

#[test]
fn graph_onnx_runtime_refuses_is_refused() {
    let tmp = scene();
    let invalid = fixture("invalid_op.onnx");
    let mut args = tiny_mlp_args(&[]);
    args[5] = invalid.to_str().unwrap();
    let error = refused_args(tmp.path(), &args);
    assert!(
        error.contains("ONNX Runtime cannot load invalid_op.onnx"),
        "{error}"
    );
    assert!(
        error.contains("NoSuchOp"),
        "ONNX Runtime's reason is kept: {error}"
    );
}

#[test]
fn bad_model_names_are_refused() {
    for name in ["-bad", "a/b", "../up", ""] {
        let tmp = scene();
        let flag = format!("--model-name={name}");
        let mut args = tiny_mlp_args(&[]);
        args.drain(0..2);
        args.push(&flag);
        let error = refused_args(tmp.path(), &args);
        assert!(
            error.contains("model name") && error.contains("invalid"),
            "{name}: {error}"
        );
    }
}

#[test]
fn bad_version_is_refused() {
    for version in ["..", "1/0"] {
        let tmp = scene();
        let mut args = tiny_mlp_args(&[]);
        args[3] = version;
        let error = refused_args(tmp.path(), &args);
        assert!(error.contains("model version"), "{version}: {error}");
    }
}

#[test]
fn unknown_handler_is_refused() {
    let tmp = scene();
    let mut args = tiny_mlp_args(&[]);
    args[7] = "my_fancy_handler";
    let error = refused_args(tmp.path(), &args);
    assert!(
        error.contains("unknown handler") && error.contains("image_classifier"),
        "{error}"
    );
}

#[test]
fn python_handler_is_refused() {
    let tmp = scene();
    fs::write(
        tmp.path().join("my_handler.py"),
        "from ts.torch_handler.base_handler import BaseHandler\n",
    )
    .unwrap();
    for handler in ["my_handler.py", "my_handler.py:handle"] {
        let mut args = tiny_mlp_args(&[]);
        args[7] = handler;
        let error = refused_args(tmp.path(), &args);
        assert!(
            error.contains("Python") && error.contains("never runs"),
            "{handler}: {error}"
        );
    }
}

#[test]
fn image_classifier_on_a_non_image_graph_is_refused() {
    let tmp = scene();
    let mut args = tiny_mlp_args(&[]);
    args[7] = "image_classifier";
    let error = refused_args(tmp.path(), &args);
    assert!(
        error.contains("does not fit tiny_mlp.onnx") && error.contains("[batch, 4]"),
        "{error}"
    );
}

#[test]
fn handler_config_with_an_unknown_field_is_refused() {
    let tmp = scene();
    let mut config: Value =
        serde_json::from_slice(&fs::read(digits("mnist_handler.json")).unwrap()).unwrap();
    config["image"]["colour"] = Value::from("grey");
    fs::write(
        tmp.path().join("bad_handler.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let mut args = tiny_mlp_args(&[]);
    args[7] = "bad_handler.json";
    let error = refused_args(tmp.path(), &args);
    assert!(
        error.contains("bad_handler.json") && error.contains("unknown field"),
        "{error}"
    );
}

#[test]
fn unwritable_export_path_is_refused() {
    let tmp = scene();
    fs::write(tmp.path().join("file.txt"), "a regular file").unwrap();
    let mut args = tiny_mlp_args(&[]);
    args[9] = "file.txt/sub";
    let error = refused_args(tmp.path(), &args);
    assert!(error.contains("file.txt/sub"), "{error}");
}

#[test]
fn missing_onnx_runtime_says_how_to_install_it() {
    let tmp = scene();
    let args = tiny_mlp_args(&[]);
    let error = refused(
        tmp.path(),
        archiver(tmp.path())
            .args(&args)
            .env("ORT_DYLIB_PATH", "/nonexistent")
            .env_remove("OXSERVE_ORT_LIBRARY"),
    );
    assert!(
        error.contains("install-onnxruntime.sh") && error.contains("/nonexistent"),
        "{error}"
    );

    let error = refused(
        tmp.path(),
        archiver(tmp.path())
            .args(&args)
            .args(["--ort-library", "/nonexistent/lib"]),
    );
    assert!(error.contains("install-onnxruntime.sh"), "{error}");
}

#[test]
fn a_file_that_is_not_onnx_runtime_says_how_to_install_it() {
    let tmp = scene();
    let fake = tmp.path().join("fake-ort");
    fs::create_dir(&fake).unwrap();
    fs::write(fake.join("libonnxruntime.so"), "not a shared library").unwrap();
    let error = refused(
        tmp.path(),
        archiver(tmp.path())
            .args(tiny_mlp_args(&[]))
            .env("ORT_DYLIB_PATH", &fake)
            .env_remove("OXSERVE_ORT_LIBRARY"),
    );
    assert!(
        error.contains("cannot load ONNX Runtime") && error.contains("install-onnxruntime.sh"),
        "{error}"
    );
}

// ---------------------------------------------------------------- inspect

/// Packs tiny_resnet.onnx as densenet161 with image_classifier into `dir/model_store`.
fn pack_densenet(dir: &Path, format: &str) -> PathBuf {
    fs::copy(fixture("tiny_resnet.onnx"), dir.join("densenet161.onnx")).unwrap();
    fs::write(dir.join("index_to_name.json"), INDEX_TO_NAME).unwrap();
    let output = run(
        dir,
        &[
            "--model-name",
            "densenet161",
            "--version",
            "1.0",
            "--serialized-file",
            "densenet161.onnx",
            "--handler",
            "image_classifier",
            "--extra-files",
            "index_to_name.json",
            "--export-path",
            "model_store",
            "--archive-format",
            format,
            "-f",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    PathBuf::from(text(&output.stdout).trim())
}

fn inspect(dir: &Path, archive: &Path) -> String {
    let output = run(dir, &["inspect", archive.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

#[test]
fn inspect_prints_manifest_handler_and_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let mar = pack_densenet(tmp.path(), "default");
    let stdout = inspect(tmp.path(), &mar);

    // The manifest block is the archive's manifest, verbatim JSON.
    let manifest_text = stdout
        .strip_prefix("MAR-INF/MANIFEST.json:\n")
        .and_then(|rest| rest.split("\n\nhandler config:\n").next())
        .unwrap_or_else(|| panic!("no manifest block in {stdout}"));
    let printed: Value = serde_json::from_str(manifest_text).unwrap();
    assert_eq!(printed, zip_manifest(&tmp.path().join(&mar)));

    assert!(stdout.contains("handler config:\n{"), "{stdout}");
    assert!(
        stdout.contains(r#""handler": "image_classifier""#),
        "{stdout}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"graph signature:"), "{stdout}");
    assert!(
        lines.contains(&"  input  input: float32[batch, 3, 224, 224]"),
        "{stdout}"
    );
    assert!(
        lines.contains(&"  output output: float32[batch, 10]"),
        "{stdout}"
    );
}

#[test]
fn inspect_reads_tgz_and_folder_archives() {
    let tmp = tempfile::tempdir().unwrap();
    for format in ["tgz", "no-archive"] {
        let archive = pack_densenet(tmp.path(), format);
        let stdout = inspect(tmp.path(), &archive);
        assert!(
            stdout.contains(r#""modelName": "densenet161""#),
            "{format}: {stdout}"
        );
        assert!(
            stdout.contains("input  input: float32[batch, 3, 224, 224]"),
            "{format}: {stdout}"
        );
    }
}

#[test]
fn inspect_reads_the_graph_of_a_torchserve_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let options = zip::write::SimpleFileOptions::default();
    let write_mar = |path: &Path, serialized: &str, graph: &[u8]| {
        let manifest = format!(
            r#"{{"createdOn": "17/03/2025 11:20:57", "runtime": "python",
                "model": {{"modelName": "ts", "serializedFile": "{serialized}", "handler": "image_classifier",
                          "modelFile": "model.py", "modelVersion": "1.0"}},
                "archiverVersion": "0.12.0"}}"#
        );
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes) in [
            ("MAR-INF/MANIFEST.json", manifest.as_bytes()),
            (serialized, graph),
            ("model.py", b"class Net: pass\n".as_slice()),
        ] {
            writer.start_file(name, options).unwrap();
            writer.write_all(bytes).unwrap();
        }
        fs::write(path, writer.finish().unwrap().into_inner()).unwrap();
    };
    let onnx = tmp.path().join("onnx.mar");
    write_mar(
        &onnx,
        "model.onnx",
        &fs::read(fixture("tiny_mlp.onnx")).unwrap(),
    );
    let stdout = inspect(tmp.path(), &onnx);
    assert!(stdout.contains("handler config: none"), "{stdout}");
    assert!(
        stdout.contains("  input  input: float32[batch, 4]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  output output: float32[batch, 3]"),
        "{stdout}"
    );

    let torchscript = tmp.path().join("torchscript.mar");
    write_mar(&torchscript, "model.pt", b"PK\x03\x04 not really");
    let stdout = inspect(tmp.path(), &torchscript);
    assert!(stdout.contains("graph signature: unknown"), "{stdout}");
}

#[test]
fn inspect_refuses_a_hostile_archive_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer
        .start_file(
            "MAR-INF/MANIFEST.json",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
    writer.write_all(b"{}").unwrap();
    writer
        .start_file(
            "../../escaped.txt",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
    writer.write_all(b"pwned").unwrap();
    fs::write(
        tmp.path().join("evil.mar"),
        writer.finish().unwrap().into_inner(),
    )
    .unwrap();

    // inspect unpacks into a temporary folder: point TMPDIR into the sandbox to see that it is
    // cleaned up and that nothing lands beside it.
    let error = refused(
        tmp.path(),
        archiver(tmp.path())
            .args(["inspect", "evil.mar"])
            .env("TMPDIR", &scratch),
    );
    assert!(error.contains("unsafe archive"), "{error}");
    assert_eq!(list(&scratch), Vec::<String>::new());
}

// ---------------------------------------------------------------- user handler configs

#[test]
fn yaml_handler_config_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let json = fs::read(digits("mnist_handler.json")).unwrap();
    let value: Value = serde_json::from_slice(&json).unwrap();
    let yaml = serde_yaml::to_string(&value).unwrap();
    fs::create_dir(dir.join("configs")).unwrap();
    fs::write(dir.join("configs/mnist_handler.yaml"), &yaml).unwrap();
    let mnist = digits("mnist.onnx");

    run_ok(
        dir,
        &[
            "--model-name",
            "mnist",
            "--version",
            "1.0",
            "--serialized-file",
            mnist.to_str().unwrap(),
            "--handler",
            "configs/mnist_handler.yaml",
            "--export-path",
            "model_store",
        ],
    );
    let mar = dir.join("model_store/mnist.mar");
    assert_eq!(
        zip_names(&mar),
        sorted(&[
            "MAR-INF/MANIFEST.json",
            "MAR-INF/handler.json",
            "mnist.onnx",
            "mnist_handler.yaml"
        ])
    );
    assert_eq!(zip_read(&mar, "mnist_handler.yaml"), yaml.as_bytes());
    let manifest = zip_manifest(&mar);
    assert_eq!(manifest["model"]["handler"], "mnist_handler.yaml");
    assert_eq!(
        manifest["oxserve"]["signature"]["inputs"][0]["shape"],
        serde_json::json!(["batch", 1, 28, 28])
    );

    // MAR-INF/handler.json is the resolved config, the same as the JSON original.
    let resolved = HandlerConfig::parse(
        "handler.json",
        &zip_read(&mar, "MAR-INF/handler.json"),
        false,
    )
    .unwrap();
    assert_eq!(
        resolved,
        HandlerConfig::parse("mnist_handler.json", &json, false).unwrap()
    );
    assert_eq!(resolved.handler, HandlerKind::ImageClassifier);
}

// ---------------------------------------------------------------- convert

/// Writes an archive in torch-model-archiver's layout (files at the root, a manifest without an
/// `oxserve` section) holding `members` plus the manifest made of `model`.
fn torchserve_mar(path: &Path, model: Value, members: &[(&str, &[u8])]) {
    let manifest = serde_json::json!({
        "createdOn": "07/12/2026 12:00:00", "runtime": "python", "model": model,
        "archiverVersion": "0.12.0"
    });
    let mut zip = zip::ZipWriter::new(fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("MAR-INF/MANIFEST.json", options).unwrap();
    zip.write_all(manifest.to_string().as_bytes()).unwrap();
    for (name, bytes) in members {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn convert_keeps_name_version_extra_files_and_config_and_says_what_it_drops() {
    let tmp = scene();
    let graph = fs::read(fixture("tiny_mlp.onnx")).unwrap();
    torchserve_mar(
        &tmp.path().join("old.mar"),
        serde_json::json!({"modelName": "mlp", "serializedFile": "tiny_mlp.onnx",
            "handler": "base_handler", "modelVersion": "2.1",
            "requirementsFile": "requirements.txt", "configFile": "model-config.yaml"}),
        &[
            ("tiny_mlp.onnx", &graph),
            ("requirements.txt", b"numpy\n"),
            ("model-config.yaml", b"batchSize: 4\nmaxBatchDelay: 10\n"),
            ("assets/vocab.txt", b"a\nb\n"),
            ("index_to_name.json", INDEX_TO_NAME.as_bytes()),
            ("helpers.py", b"X = 1\n"),
        ],
    );
    let stderr = run_ok(
        tmp.path(),
        &["convert", "old.mar", "--export-path", "model_store"],
    );
    assert!(
        stderr.contains("not carried: requirements.txt")
            && stderr.contains("not carried: helpers.py"),
        "{stderr}"
    );
    let archive = tmp.path().join("model_store/mlp.mar");
    assert_eq!(
        zip_names(&archive),
        sorted(&[
            "MAR-INF/MANIFEST.json",
            "MAR-INF/handler.json",
            "assets/vocab.txt",
            "index_to_name.json",
            "model-config.yaml",
            "tiny_mlp.onnx",
        ])
    );
    let manifest = zip_manifest(&archive);
    assert_eq!(manifest["model"]["modelName"], "mlp");
    assert_eq!(manifest["model"]["modelVersion"], "2.1");
    assert_eq!(manifest["model"]["handler"], "base_handler");
    assert_eq!(manifest["model"]["configFile"], "model-config.yaml");
    assert!(manifest["oxserve"]["signature"].is_object(), "{manifest}");
    assert_eq!(
        zip_read(&archive, "assets/vocab.txt"),
        b"a\nb\n",
        "extra files keep their folders"
    );
    // The new archive is an oxserve archive: converting it again is refused.
    fs::rename(&archive, tmp.path().join("mlp.mar")).unwrap();
    let error = refused_args(
        tmp.path(),
        &["convert", "mlp.mar", "--export-path", "model_store"],
    );
    assert!(error.contains("already an oxserve archive"), "{error}");
}

#[test]
fn convert_refuses_a_custom_python_handler_with_what_to_use_instead() {
    let tmp = scene();
    torchserve_mar(
        &tmp.path().join("mnist.mar"),
        serde_json::json!({"modelName": "mnist", "serializedFile": "mnist_cnn.pt",
            "handler": "mnist_handler.py", "modelFile": "mnist.py", "modelVersion": "1.0"}),
        &[
            ("mnist_cnn.pt", b"PK\x03\x04 a state_dict"),
            ("mnist.py", b"class Net: pass\n"),
            (
                "mnist_handler.py",
                b"from ts.torch_handler.image_classifier import ImageClassifier\nclass MNISTDigitClassifier(ImageClassifier):\n    pass\n",
            ),
        ],
    );
    let error = refused_args(
        tmp.path(),
        &["convert", "mnist.mar", "--export-path", "model_store"],
    );
    assert!(
        error.contains("mnist_handler.py is custom Python code")
            && error.contains("--handler image_classifier")
            && error.contains("--handler my_handler.json"),
        "{error}"
    );
    // With --handler, the conversion goes ahead: here it stops at the missing torch, having
    // said that the Python handler is not carried.
    let missing = tmp.path().join("no-such-python");
    let output = run(
        tmp.path(),
        &[
            "convert",
            "mnist.mar",
            "--handler",
            "image_classifier",
            "--export-path",
            "model_store",
            "--python",
            missing.to_str().unwrap(),
        ],
    );
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("not carried: mnist_handler.py") && stderr.contains("needs PyTorch"),
        "{stderr}"
    );
    assert_eq!(list(&tmp.path().join("model_store")), Vec::<String>::new());
}

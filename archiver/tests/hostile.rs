//! The archive reader against hostile input. `unpack::extract` must refuse path escapes, links,
//! duplicates, zip bombs and oversized archives, write nothing outside `dest`, and remove `dest`
//! again when it refuses. Every hostile archive here is otherwise valid (it carries a manifest),
//! so accepting the hostile part would make extraction succeed and the test fail.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oxserve_archiver::pack::{pack, ArchiveFormat, PackRequest};
use oxserve_archiver::unpack::{extract, ExtractedArchive, Limits};
use oxserve_archiver::{ArchiveError, HandlerKind};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

/// A TorchServe manifest (no oxserve section, no serialized file), so an archive holding only it
/// extracts successfully.
const MANIFEST: &[u8] = br#"{
  "createdOn": "01/02/2025 10:20:30",
  "runtime": "python",
  "model": {"modelName": "m", "handler": "tensor", "modelVersion": "1.0"},
  "archiverVersion": "0.12.0"
}"#;

fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures")).join(name)
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A temp folder holding `archive.bin` and an empty `sandbox/`; `dest` is `sandbox/dest`.
struct Scene {
    tmp: tempfile::TempDir,
}

impl Scene {
    fn new(archive: &[u8]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("archive.bin"), archive).unwrap();
        fs::create_dir(tmp.path().join("sandbox")).unwrap();
        Scene { tmp }
    }
    fn archive(&self) -> PathBuf {
        self.tmp.path().join("archive.bin")
    }
    fn sandbox(&self) -> PathBuf {
        self.tmp.path().join("sandbox")
    }
    fn dest(&self) -> PathBuf {
        self.sandbox().join("dest")
    }
    fn extract(&self, limits: &Limits) -> Result<ExtractedArchive, ArchiveError> {
        extract(&self.archive(), &self.dest(), limits)
    }

    /// Extracts, expects an error, and checks that nothing was left anywhere: `dest` is gone, the
    /// sandbox and the temp folder hold what they held before, no `escaped.txt` appeared.
    fn refuse(&self, limits: &Limits) -> ArchiveError {
        let error = match self.extract(limits) {
            Ok(extracted) => panic!("hostile archive accepted: {extracted:?}"),
            Err(error) => error,
        };
        assert!(
            !self.dest().exists(),
            "dest must be removed on error ({error})"
        );
        assert_eq!(
            list(&self.sandbox()),
            Vec::<String>::new(),
            "sandbox must stay empty ({error})"
        );
        assert_eq!(
            list(self.tmp.path()),
            ["archive.bin", "sandbox"],
            "nothing escapes ({error})"
        );
        let message = error.to_string();
        assert!(!message.contains('\n'), "one-line message: {message}");
        error
    }
}

fn assert_unsafe(error: &ArchiveError, needle: &str) {
    assert!(
        matches!(error, ArchiveError::UnsafeArchive(_)),
        "expected UnsafeArchive, got {error:?}"
    );
    assert!(
        error.to_string().contains(needle),
        "{error} should mention {needle:?}"
    );
}

fn assert_malformed(error: &ArchiveError) {
    assert!(
        matches!(error, ArchiveError::MalformedArchive(_)),
        "expected MalformedArchive, got {error:?}"
    );
}

fn deflated() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

/// A zip with the manifest first, then `entries` in order.
fn zip_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer
        .start_file("MAR-INF/MANIFEST.json", deflated())
        .unwrap();
    writer.write_all(MANIFEST).unwrap();
    for (name, data) in entries {
        writer.start_file(*name, deflated()).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// Replaces every occurrence of `from` with `to` (same length), in local and central headers.
fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut count = 0;
    let mut at = 0;
    while at + from.len() <= bytes.len() {
        if &bytes[at..at + from.len()] == from {
            bytes[at..at + from.len()].copy_from_slice(to);
            count += 1;
            at += from.len();
        } else {
            at += 1;
        }
    }
    count
}

// ---------------------------------------------------------------- baseline

#[test]
fn the_benign_baseline_extracts() {
    // The same construction as the hostile archives, without the hostile entry: it must pass, so
    // that each refusal below is caused by the hostile entry alone.
    let scene = Scene::new(&zip_with(&[
        ("weights.bin", b"0123456789"),
        ("dir/extra.txt", b"x"),
    ]));
    let extracted = scene.extract(&Limits::default()).unwrap();
    assert_eq!(extracted.root, scene.dest());
    assert_eq!(extracted.manifest.model.model_name, "m");
    assert!(extracted.handler.is_none());
    assert_eq!(fs::read(scene.dest().join("dir/extra.txt")).unwrap(), b"x");
    assert_eq!(list(&scene.sandbox()), ["dest"]);
}

// ---------------------------------------------------------------- zip path escapes

#[test]
fn zip_parent_dir_entry_is_refused() {
    let scene = Scene::new(&zip_with(&[
        ("ok.txt", b"fine"),
        ("../escaped.txt", b"pwned"),
    ]));
    let error = scene.refuse(&Limits::default());
    assert_unsafe(&error, "..");
    assert!(!scene.tmp.path().join("escaped.txt").exists());
}

#[test]
fn zip_nested_parent_dir_entry_is_refused() {
    let scene = Scene::new(&zip_with(&[
        ("ok.txt", b"fine"),
        ("a/../../escaped.txt", b"pwned"),
    ]));
    let error = scene.refuse(&Limits::default());
    assert_unsafe(&error, "..");
    assert!(!scene.sandbox().join("escaped.txt").exists());
}

#[test]
fn zip_absolute_entry_is_refused() {
    let absolute = format!("/tmp/oxserve-abs-{}.txt", std::process::id());
    let _ = fs::remove_file(&absolute);
    let scene = Scene::new(&zip_with(&[
        ("ok.txt", b"fine"),
        (absolute.as_str(), b"pwned"),
    ]));
    let error = scene.refuse(&Limits::default());
    assert_unsafe(&error, "absolute");
    assert!(!Path::new(&absolute).exists(), "{absolute} was written");
}

#[test]
fn zip_backslash_entry_is_refused() {
    let scene = Scene::new(&zip_with(&[("..\\escaped.txt", b"pwned")]));
    assert_unsafe(&scene.refuse(&Limits::default()), "backslash");
}

#[test]
fn zip_symlink_entry_is_refused() {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer
        .start_file("MAR-INF/MANIFEST.json", deflated())
        .unwrap();
    writer.write_all(MANIFEST).unwrap();
    writer
        .add_symlink("passwd", "/etc/passwd", SimpleFileOptions::default())
        .unwrap();
    // A second entry that would write through the link if it had been created.
    writer
        .start_file("passwd/../escaped.txt", deflated())
        .unwrap();
    writer.write_all(b"pwned").unwrap();
    let bytes = writer.finish().unwrap().into_inner();
    let scene = Scene::new(&bytes);
    assert_unsafe(&scene.refuse(&Limits::default()), "symbolic link");
}

#[test]
fn zip_special_file_mode_is_refused() {
    // A FIFO (S_IFIFO, 0o010000) in the Unix mode half of the external attributes
    // (`unix_permissions` would mask the file type away).
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer
        .start_file("MAR-INF/MANIFEST.json", deflated())
        .unwrap();
    writer.write_all(MANIFEST).unwrap();
    writer
        .start_file("fifo", deflated().external_attributes(0o010_644 << 16))
        .unwrap();
    writer.write_all(b"x").unwrap();
    let bytes = writer.finish().unwrap().into_inner();
    let scene = Scene::new(&bytes);
    assert_unsafe(&scene.refuse(&Limits::default()), "not a regular file");
}

// ---------------------------------------------------------------- duplicates

#[test]
fn zip_duplicate_entry_names_are_refused() {
    // ZipWriter refuses duplicates, so write two names of equal length and rename one in place
    // (names are not covered by the CRC).
    let mut bytes = zip_with(&[("model.onnx", b"first"), ("model.onnY", b"second")]);
    assert_eq!(
        patch(&mut bytes, b"model.onnY", b"model.onnx"),
        2,
        "local + central header"
    );
    let scene = Scene::new(&bytes);
    assert_unsafe(&scene.refuse(&Limits::default()), "twice");
}

#[test]
fn zip_duplicate_manifest_is_refused() {
    // Two manifests: different readers would pick different ones.
    let mut bytes = zip_with(&[("MAR-INF/MANIFEST.jsoX", MANIFEST)]);
    assert_eq!(
        patch(
            &mut bytes,
            b"MAR-INF/MANIFEST.jsoX",
            b"MAR-INF/MANIFEST.json"
        ),
        2
    );
    let scene = Scene::new(&bytes);
    assert_unsafe(&scene.refuse(&Limits::default()), "twice");
}

#[test]
fn zip_names_that_normalise_to_the_same_path_are_refused() {
    let scene = Scene::new(&zip_with(&[
        ("a/model.onnx", b"first"),
        ("./a/model.onnx", b"second"),
    ]));
    assert_unsafe(&scene.refuse(&Limits::default()), "twice");
}

// ---------------------------------------------------------------- zip bombs and caps

/// One entry of a zip written byte by byte (see [`raw_zip`]).
struct RawEntry<'a> {
    name: &'a str,
    /// 0 = Stored, 8 = Deflated.
    method: u16,
    crc: u32,
    size: u32,
    data: &'a [u8],
    /// The compressed size the headers claim; the real one when `None`.
    claimed_packed: Option<u32>,
}

/// A plain (non-zip64) zip with Unix regular-file entries. `ZipWriter` would compress and CRC a
/// 1 GiB entry itself, which takes half a minute in a debug build; this takes milliseconds.
fn raw_zip(entries: &[RawEntry<'_>]) -> Vec<u8> {
    fn u16le(out: &mut Vec<u8>, value: u16) {
        out.extend_from_slice(&value.to_le_bytes());
    }
    fn u32le(out: &mut Vec<u8>, value: u32) {
        out.extend_from_slice(&value.to_le_bytes());
    }
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for entry in entries {
        let offset = u32::try_from(out.len()).unwrap();
        let packed = entry
            .claimed_packed
            .unwrap_or(u32::try_from(entry.data.len()).unwrap());
        let name_len = u16::try_from(entry.name.len()).unwrap();
        out.extend_from_slice(b"PK\x03\x04");
        for value in [20, 0, entry.method, 0, 0x21] {
            u16le(&mut out, value); // version needed, flags, method, time, date (1980-01-01)
        }
        for value in [entry.crc, packed, entry.size] {
            u32le(&mut out, value);
        }
        u16le(&mut out, name_len);
        u16le(&mut out, 0);
        out.extend_from_slice(entry.name.as_bytes());
        out.extend_from_slice(entry.data);

        central.extend_from_slice(b"PK\x01\x02");
        for value in [(3 << 8) | 20, 20, 0, entry.method, 0, 0x21] {
            u16le(&mut central, value); // made by Unix, version needed, flags, method, time, date
        }
        for value in [entry.crc, packed, entry.size] {
            u32le(&mut central, value);
        }
        for value in [name_len, 0, 0, 0, 0] {
            u16le(&mut central, value); // name, extra, comment lengths, disk, internal attributes
        }
        u32le(&mut central, 0o100_644 << 16);
        u32le(&mut central, offset);
        central.extend_from_slice(entry.name.as_bytes());
    }
    let directory_offset = u32::try_from(out.len()).unwrap();
    let directory_size = u32::try_from(central.len()).unwrap();
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    let count = u16::try_from(entries.len()).unwrap();
    for value in [0, 0, count, count] {
        u16le(&mut out, value);
    }
    u32le(&mut out, directory_size);
    u32le(&mut out, directory_offset);
    u16le(&mut out, 0);
    out
}

fn crc_of(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// A raw deflate stream of `mib` MiB of zeros and its CRC-32. One MiB is compressed once with a
/// full flush (byte-aligned, no back-reference before its start), repeated, and closed with an
/// empty final block; the CRC is combined the same way.
fn deflated_zeros(mib: u32) -> (Vec<u8>, u32) {
    let chunk = vec![0u8; 1 << 20];
    let mut compress = flate2::Compress::new(flate2::Compression::default(), false);
    let mut block = Vec::with_capacity(1 << 16);
    compress
        .compress_vec(&chunk, &mut block, flate2::FlushCompress::Full)
        .unwrap();
    assert_eq!(
        compress.total_in(),
        1 << 20,
        "the whole MiB went into one flushed block"
    );
    let mut finish = flate2::Compress::new(flate2::Compression::default(), false);
    let mut tail = Vec::with_capacity(64);
    finish
        .compress_vec(&[], &mut tail, flate2::FlushCompress::Finish)
        .unwrap();

    let mut stream = Vec::with_capacity(block.len() * mib as usize + tail.len());
    let mut crc = flate2::Crc::new();
    let mut chunk_crc = flate2::Crc::new();
    chunk_crc.update(&chunk);
    for _ in 0..mib {
        stream.extend_from_slice(&block);
        crc.combine(&chunk_crc);
    }
    stream.extend_from_slice(&tail);
    (stream, crc.sum())
}

/// A zip holding the manifest and `weights.bin`, `mib` MiB of zeros Deflated (~1000×).
fn zip_of_zeros(mib: u32, claimed_packed: Option<u32>) -> Vec<u8> {
    let (stream, crc) = deflated_zeros(mib);
    raw_zip(&[
        RawEntry {
            name: "MAR-INF/MANIFEST.json",
            method: 0,
            crc: crc_of(MANIFEST),
            size: u32::try_from(MANIFEST.len()).unwrap(),
            data: MANIFEST,
            claimed_packed: None,
        },
        RawEntry {
            name: "weights.bin",
            method: 8,
            crc,
            size: mib << 20,
            data: &stream,
            claimed_packed,
        },
    ])
}

#[test]
fn the_hand_built_zeros_zip_is_a_valid_zip() {
    // Without the ratio cap the same construction unpacks completely, CRC checked: the bomb tests
    // below are refused for their expansion, not for a broken archive.
    let bytes = zip_of_zeros(16, None);
    let limits = Limits {
        max_ratio: 1 << 20,
        ..Limits::default()
    };
    let scene = Scene::new(&bytes);
    let extracted = scene.extract(&limits).unwrap();
    let weights = fs::read(extracted.root.join("weights.bin")).unwrap();
    assert_eq!(weights.len(), 16 << 20);
    assert!(weights.iter().all(|&byte| byte == 0));
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes.as_slice())).unwrap();
    let entry = zip.by_name("weights.bin").unwrap();
    assert_eq!(entry.compression(), CompressionMethod::Deflated);
    assert!(
        entry.size() / entry.compressed_size() > 500,
        "ratio {}",
        entry.size() / entry.compressed_size()
    );
}

#[test]
fn zip_bomb_is_refused_early() {
    let bomb = zip_of_zeros(1024, None);
    assert!(
        bomb.len() < 2 << 20,
        "1 GiB of zeros deflates to {} bytes",
        bomb.len()
    );
    let scene = Scene::new(&bomb);
    let started = Instant::now();
    let error = scene.refuse(&Limits::default());
    let elapsed = started.elapsed();
    assert_unsafe(&error, "zip bomb");
    // The ratio cap (200×) trips after ~200 MiB of the 1 GiB (under a second here); unpacking all
    // of it would take several times longer. The partially written weights.bin went away with
    // dest (checked by `refuse`).
    assert!(
        elapsed < Duration::from_secs(30),
        "refusal took {elapsed:?}"
    );
}

#[test]
fn zip_bomb_under_the_floor_passes_but_over_the_ratio_does_not() {
    // 1 MiB of zeros is within ratio_floor_bytes and extracts; 16 MiB expands ~1000× and is
    // refused even though it is far below the 4 GiB total cap.
    Scene::new(&zip_of_zeros(1, None))
        .extract(&Limits::default())
        .unwrap();
    let scene = Scene::new(&zip_of_zeros(16, None));
    assert_unsafe(&scene.refuse(&Limits::default()), "zip bomb");
}

#[test]
fn zip_bomb_with_a_lying_compressed_size_is_refused() {
    // 64 MiB of zeros (~64 KiB packed) whose headers claim a compressed size near 2 GiB, more
    // than the whole archive, so that a ratio computed from the header alone looks harmless.
    let bytes = zip_of_zeros(64, Some(0x7fff_0000));
    let scene = Scene::new(&bytes);
    assert_unsafe(&scene.refuse(&Limits::default()), "zip bomb");
}

#[test]
fn total_size_cap_is_enforced_on_stored_entries() {
    // Stored entries have a ratio of 1; only the total cap can stop them.
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer
        .start_file("MAR-INF/MANIFEST.json", deflated())
        .unwrap();
    writer.write_all(MANIFEST).unwrap();
    for name in ["a.bin", "b.bin"] {
        writer
            .start_file(
                name,
                SimpleFileOptions::default().compression_method(CompressionMethod::Stored),
            )
            .unwrap();
        writer.write_all(&vec![7u8; 600 << 10]).unwrap();
    }
    let bytes = writer.finish().unwrap().into_inner();
    let limits = Limits {
        max_total_bytes: 1 << 20,
        ..Limits::default()
    };
    let scene = Scene::new(&bytes);
    assert_unsafe(&scene.refuse(&limits), "more than 1048576 bytes");
    // The same archive under the default limits is fine.
    Scene::new(&bytes).extract(&Limits::default()).unwrap();
}

#[test]
fn zip_with_too_many_entries_is_refused() {
    let names: Vec<String> = (0..6).map(|index| format!("file{index}.txt")).collect();
    let entries: Vec<(&str, &[u8])> = names
        .iter()
        .map(|name| (name.as_str(), b"x".as_slice()))
        .collect();
    let bytes = zip_with(&entries);
    let limits = Limits {
        max_entries: 5,
        ..Limits::default()
    };
    assert_unsafe(&Scene::new(&bytes).refuse(&limits), "more than 5 entries");
    // Four extra entries plus the manifest are exactly five: accepted.
    let bytes = zip_with(&entries[..4]);
    Scene::new(&bytes).extract(&limits).unwrap();
}

// ---------------------------------------------------------------- tar.gz

/// A GNU header for `name` written raw, bypassing `tar`'s own path checks.
fn raw_header(name: &[u8], kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(kind);
    header.set_cksum();
    header
}

/// A tar.gz holding `m/MAR-INF/MANIFEST.json`, `m/ok.txt`, then whatever `hostile` appends.
fn tgz_with(hostile: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>)) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    for (name, data) in [
        ("m/MAR-INF/MANIFEST.json", MANIFEST),
        ("m/ok.txt", b"fine".as_slice()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, data).unwrap();
    }
    hostile(&mut builder);
    builder.into_inner().unwrap().finish().unwrap()
}

#[test]
fn tgz_baseline_extracts_into_its_root_folder() {
    let scene = Scene::new(&tgz_with(|_| {}));
    let extracted = scene.extract(&Limits::default()).unwrap();
    assert_eq!(extracted.root, scene.dest().join("m"));
    assert_eq!(fs::read(extracted.root.join("ok.txt")).unwrap(), b"fine");
}

#[test]
fn tgz_parent_dir_entry_is_refused() {
    let scene = Scene::new(&tgz_with(|builder| {
        let data = b"pwned";
        let header = raw_header(
            b"../escaped.txt",
            tar::EntryType::Regular,
            data.len() as u64,
        );
        builder.append(&header, data.as_slice()).unwrap();
    }));
    assert_unsafe(&scene.refuse(&Limits::default()), "..");
    assert!(!scene.sandbox().join("escaped.txt").exists());
}

#[test]
fn tgz_absolute_entry_is_refused() {
    let absolute = format!("/tmp/oxserve-abs-tgz-{}.txt", std::process::id());
    let _ = fs::remove_file(&absolute);
    let scene = Scene::new(&tgz_with(|builder| {
        let data = b"pwned";
        let header = raw_header(
            absolute.as_bytes(),
            tar::EntryType::Regular,
            data.len() as u64,
        );
        builder.append(&header, data.as_slice()).unwrap();
    }));
    assert_unsafe(&scene.refuse(&Limits::default()), "absolute");
    assert!(!Path::new(&absolute).exists());
}

#[test]
fn tgz_gnu_long_name_escape_is_refused() {
    // The escaping path hides in a GNU long-name record; the header itself names a harmless file.
    let long = format!("../{}/../../escaped.txt", "d".repeat(120));
    assert!(long.len() > 100);
    let scene = Scene::new(&tgz_with(|builder| {
        let mut record = long.clone().into_bytes();
        record.push(0);
        let name_header = raw_header(
            b"././@LongLink",
            tar::EntryType::GNULongName,
            record.len() as u64,
        );
        builder.append(&name_header, record.as_slice()).unwrap();
        let data = b"pwned";
        let header = raw_header(b"harmless.txt", tar::EntryType::Regular, data.len() as u64);
        builder.append(&header, data.as_slice()).unwrap();
    }));
    assert_unsafe(&scene.refuse(&Limits::default()), "..");
}

/// A .tar.gz whose one entry, `m/passwd`, is a link of `kind` to /etc/passwd.
fn tgz_link_to_passwd(kind: tar::EntryType) -> Vec<u8> {
    tgz_with(|builder| {
        let mut header = raw_header(b"m/passwd", kind, 0);
        header.set_link_name_literal("/etc/passwd").unwrap();
        header.set_cksum();
        builder.append(&header, std::io::empty()).unwrap();
    })
}

#[test]
fn tgz_symlink_entry_is_refused() {
    let scene = Scene::new(&tgz_link_to_passwd(tar::EntryType::Symlink));
    assert_unsafe(&scene.refuse(&Limits::default()), "link");
}

#[test]
fn tgz_hardlink_entry_is_refused() {
    let scene = Scene::new(&tgz_link_to_passwd(tar::EntryType::Link));
    assert_unsafe(&scene.refuse(&Limits::default()), "link");
}

#[test]
fn tgz_duplicate_entry_is_refused() {
    let scene = Scene::new(&tgz_with(|builder| {
        let data = b"again";
        let header = raw_header(b"m/ok.txt", tar::EntryType::Regular, data.len() as u64);
        builder.append(&header, data.as_slice()).unwrap();
    }));
    assert_unsafe(&scene.refuse(&Limits::default()), "twice");
}

#[test]
fn tgz_bomb_is_refused() {
    // 64 MiB of zeros gzip to ~64 KiB: the 200× cap (against the whole archive, since gzip has
    // one stream) trips after ~13 MiB.
    let scene = Scene::new(&tgz_with(|builder| {
        let size: u64 = 64 << 20;
        let header = raw_header(b"m/weights.bin", tar::EntryType::Regular, size);
        builder
            .append(&header, std::io::repeat(0).take(size))
            .unwrap();
    }));
    assert_unsafe(&scene.refuse(&Limits::default()), "zip bomb");
}

#[test]
fn tgz_with_too_many_entries_is_refused() {
    let scene = Scene::new(&tgz_with(|builder| {
        for index in 0..4 {
            let name = format!("m/file{index}.txt");
            let header = raw_header(name.as_bytes(), tar::EntryType::Regular, 1);
            builder.append(&header, b"x".as_slice()).unwrap();
        }
    }));
    let limits = Limits {
        max_entries: 5,
        ..Limits::default()
    };
    assert_unsafe(&scene.refuse(&limits), "more than 5 entries");
}

// ---------------------------------------------------------------- malformed input

#[test]
fn neither_zip_nor_gzip_is_malformed() {
    let scene = Scene::new(b"this is a plain text file, not an archive\n");
    assert_malformed(&scene.refuse(&Limits::default()));
    let scene = Scene::new(b"");
    assert_malformed(&scene.refuse(&Limits::default()));
}

#[test]
fn truncated_zip_is_malformed() {
    let bytes = zip_with(&[("ok.txt", b"fine")]);
    let scene = Scene::new(&bytes[..bytes.len() / 2]);
    assert_malformed(&scene.refuse(&Limits::default()));
}

#[test]
fn gzip_that_is_not_a_tar_is_malformed() {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(b"hello, not a tar").unwrap();
    let scene = Scene::new(&encoder.finish().unwrap());
    assert_malformed(&scene.refuse(&Limits::default()));
}

#[test]
fn zip_without_manifest_is_malformed() {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("model.onnx", deflated()).unwrap();
    writer
        .write_all(&fs::read(fixture("tiny_mlp.onnx")).unwrap())
        .unwrap();
    let scene = Scene::new(&writer.finish().unwrap().into_inner());
    let error = scene.refuse(&Limits::default());
    assert_malformed(&error);
    assert!(error.to_string().contains("MANIFEST.json"), "{error}");
}

#[test]
fn manifest_naming_a_file_outside_the_archive_is_refused() {
    let manifest = String::from_utf8(MANIFEST.to_vec()).unwrap().replace(
        r#""handler": "tensor""#,
        r#""handler": "tensor", "serializedFile": "../../escaped.txt""#,
    );
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer
        .start_file("MAR-INF/MANIFEST.json", deflated())
        .unwrap();
    writer.write_all(manifest.as_bytes()).unwrap();
    let scene = Scene::new(&writer.finish().unwrap().into_inner());
    // Plant the file the manifest points at: it must not be accepted as the model.
    fs::write(scene.tmp.path().join("escaped.txt"), b"outside").unwrap();
    let error = match scene.extract(&Limits::default()) {
        Ok(extracted) => panic!("accepted: {extracted:?}"),
        Err(error) => error,
    };
    assert_unsafe(&error, "..");
    assert!(!scene.dest().exists());
}

#[test]
fn existing_dest_is_refused_and_left_alone() {
    let scene = Scene::new(&zip_with(&[]));
    fs::create_dir(scene.dest()).unwrap();
    fs::write(scene.dest().join("keep.txt"), b"mine").unwrap();
    assert!(scene.extract(&Limits::default()).is_err());
    assert_eq!(fs::read(scene.dest().join("keep.txt")).unwrap(), b"mine");
}

// ---------------------------------------------------------------- archives made by pack

fn pack_tiny_mlp(export: &Path, format: ArchiveFormat) -> oxserve_archiver::pack::PackOutcome {
    pack(&PackRequest {
        model_name: "tiny_mlp".to_string(),
        version: "1.0".to_string(),
        serialized_file: Some(fixture("tiny_mlp.onnx")),
        model_file: None,
        handler: "tensor".to_string(),
        extra_files: Vec::new(),
        runtime: "python".to_string(),
        export_path: export.to_path_buf(),
        archive_format: format,
        force: false,
        requirements_file: None,
        config_file: None,
        ort_library: None,
        convert: Default::default(),
        carried_files: Vec::new(),
    })
    .unwrap()
}

#[test]
fn packed_archives_extract_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let graph = fs::read(fixture("tiny_mlp.onnx")).unwrap();
    for (index, format) in [
        ArchiveFormat::Default,
        ArchiveFormat::ZipStore,
        ArchiveFormat::Tgz,
        ArchiveFormat::NoArchive,
    ]
    .into_iter()
    .enumerate()
    {
        let export = tmp.path().join(format!("store{index}"));
        let outcome = pack_tiny_mlp(&export, format);
        let dest = tmp.path().join(format!("dest{index}"));
        let extracted = extract(&outcome.path, &dest, &Limits::default()).unwrap();
        assert_eq!(
            extracted.manifest, outcome.manifest,
            "{format:?}: the manifest round-trips"
        );
        let handler = extracted.handler.as_ref().unwrap();
        assert_eq!(handler.handler, HandlerKind::Tensor, "{format:?}");
        assert!(extracted.model_config.is_none());
        let section = extracted.manifest.oxserve.as_ref().unwrap();
        assert_eq!(
            section.signature.inputs[0].to_string(),
            "input: float32[batch, 4]"
        );
        assert_eq!(
            section.signature.outputs[0].to_string(),
            "output: float32[batch, 3]"
        );
        assert_eq!(
            fs::read(extracted.root.join("tiny_mlp.onnx")).unwrap(),
            graph,
            "{format:?}"
        );
        match format {
            // A folder is read in place; nothing is copied.
            ArchiveFormat::NoArchive => {
                assert_eq!(extracted.root, outcome.path);
                assert!(!dest.exists());
            }
            ArchiveFormat::Tgz => assert_eq!(extracted.root, dest.join("tiny_mlp")),
            _ => assert_eq!(extracted.root, dest),
        }
    }
}

#[test]
fn packed_archive_read_manifest_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let outcome = pack_tiny_mlp(tmp.path(), ArchiveFormat::Default);
    let manifest = oxserve_archiver::unpack::read_manifest(&outcome.path).unwrap();
    assert_eq!(manifest, outcome.manifest);
    assert_eq!(manifest.model.handler, "tensor");
    assert_eq!(
        manifest.model.serialized_file.as_deref(),
        Some("tiny_mlp.onnx")
    );
}

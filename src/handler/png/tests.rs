//! The PNG decoder against the general decoder (the `image` crate, which was the only path
//! before): every colour type, filter and compression its encoder writes, and zlib streams from
//! flate2 at every level, must give the same pixels; anything odd must be refused, never
//! mis-decoded, and never panic.

use std::io::Write;

use ::image::codecs::png::{CompressionType, FilterType, PngEncoder};
use ::image::{ExtendedColorType, ImageEncoder};
use oxserve_archiver::handler_config::ColorMode;

use super::inflate::{inflate, Corrupt};
use super::{decode, Unsupported};
use crate::handler::image::{convert, Pixels};

/// Deterministic bytes with runs, gradients and noise, so that the encoders use literals,
/// short and long back-references.
fn picture(width: usize, height: usize, channels: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut data = Vec::with_capacity(width * height * channels);
    for y in 0..height {
        for x in 0..width {
            for c in 0..channels {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let value = match (x / 7 + y / 5 + c) % 3 {
                    0 => 0,
                    1 => (x * 9 + y * 3 + c * 40) as u8 as u32,
                    _ => state & 0xFF,
                };
                data.push(value as u8);
            }
        }
    }
    data
}

fn encode(
    data: &[u8],
    (width, height): (usize, usize),
    colour: ExtendedColorType,
    compression: CompressionType,
    filter: FilterType,
) -> Vec<u8> {
    let mut file = Vec::new();
    PngEncoder::new_with_quality(&mut file, compression, filter)
        .write_image(data, width as u32, height as u32, colour)
        .expect("encodes");
    file
}

/// What the general decoder gives, converted as the handler converts.
fn reference(file: &[u8], color: ColorMode) -> Pixels {
    convert(::image::load_from_memory(file).expect("decodes"), color)
}

fn assert_same(file: &[u8], what: &str) {
    for color in [ColorMode::Gray, ColorMode::Rgb] {
        let ours = decode(file, color).unwrap_or_else(|_| panic!("{what}: not taken"));
        let theirs = reference(file, color);
        assert_eq!(
            (ours.width, ours.height, ours.channels),
            (theirs.width, theirs.height, theirs.channels),
            "{what}"
        );
        assert!(
            ours.data == theirs.data,
            "{what} ({color:?}): pixels differ"
        );
    }
}

#[test]
fn the_example_digits_decode_as_the_general_decoder_does() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits");
    for digit in 0..10 {
        let file = std::fs::read(root.join(format!("digit_{digit}.png"))).expect("example");
        assert_same(&file, &format!("digit_{digit}.png"));
    }
}

#[test]
fn every_colour_type_filter_and_compression_decodes_as_the_general_decoder_does() {
    let colours = [
        (ExtendedColorType::L8, 1),
        (ExtendedColorType::La8, 2),
        (ExtendedColorType::Rgb8, 3),
        (ExtendedColorType::Rgba8, 4),
    ];
    let compressions = [
        CompressionType::Uncompressed,
        CompressionType::Fast,
        CompressionType::Default,
        CompressionType::Best,
    ];
    let filters = [
        FilterType::NoFilter,
        FilterType::Sub,
        FilterType::Up,
        FilterType::Avg,
        FilterType::Paeth,
        FilterType::Adaptive,
    ];
    let sizes = [(1, 1), (3, 5), (28, 28), (97, 61)];
    for (colour, channels) in colours {
        for (seed, &size) in sizes.iter().enumerate() {
            let data = picture(size.0, size.1, channels, seed as u32);
            for compression in compressions {
                for filter in filters {
                    let file = encode(&data, size, colour, compression, filter);
                    let what = format!("{colour:?} {size:?} {compression:?} {filter:?}");
                    assert_same(&file, &what);
                }
            }
        }
    }
}

/// A PNG assembled by hand: `raw` rows (each behind its filter byte) deflated by flate2 at
/// `level`, split into `parts` IDAT chunks, with `extra` chunks before the data.
fn assemble(
    (width, height): (u32, u32),
    header: (u8, u8, u8),
    raw: &[u8],
    level: u32,
    parts: usize,
    extra: &[(&[u8; 4], &[u8])],
) -> Vec<u8> {
    fn put(file: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        file.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = file.len();
        file.extend_from_slice(kind);
        file.extend_from_slice(data);
        let crc = crc32fast::hash(&file[start..]);
        file.extend_from_slice(&crc.to_be_bytes());
    }
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
    zlib.write_all(raw).expect("compresses");
    let stream = zlib.finish().expect("compresses");
    let mut file = super::SIGNATURE.to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[header.0, header.1, 0, 0, header.2]);
    put(&mut file, b"IHDR", &ihdr);
    for (kind, data) in extra {
        put(&mut file, kind, data);
    }
    for part in stream.chunks(stream.len().div_ceil(parts)) {
        put(&mut file, b"IDAT", part);
    }
    put(&mut file, b"IEND", &[]);
    file
}

/// Rows of an 8-bit grey image, each behind filter type `filter`.
fn grey_rows(width: usize, height: usize, filter: u8) -> Vec<u8> {
    let pixels = picture(width, height, 1, 7);
    pixels
        .chunks(width)
        .flat_map(|row| std::iter::once(filter).chain(row.iter().copied()))
        .collect()
}

#[test]
fn flate2_streams_at_every_level_and_split_data_chunks_decode_alike() {
    for level in 0..=9 {
        for parts in [1, 3] {
            for filter in 0..=4 {
                let raw = grey_rows(40, 30, filter);
                let file = assemble((40, 30), (8, 0, 0), &raw, level, parts, &[]);
                assert_same(
                    &file,
                    &format!("level {level}, {parts} parts, filter {filter}"),
                );
            }
        }
    }
}

#[test]
fn ancillary_chunks_are_skipped() {
    let raw = grey_rows(9, 4, 4);
    let extra: [(&[u8; 4], &[u8]); 2] = [(b"gAMA", &[0, 0, 177, 143]), (b"tEXt", b"a\0b")];
    let file = assemble((9, 4), (8, 0, 0), &raw, 6, 1, &extra);
    assert_same(&file, "gAMA and tEXt");
}

#[test]
fn what_this_decoder_does_not_take_is_left_to_the_general_one() {
    let raw = grey_rows(9, 4, 0);
    let unsupported = [
        ("16 bits", assemble((9, 4), (16, 0, 0), &raw, 6, 1, &[])),
        ("palette", assemble((9, 4), (8, 3, 0), &raw, 6, 1, &[])),
        ("interlaced", assemble((9, 4), (8, 0, 1), &raw, 6, 1, &[])),
        (
            "tRNS",
            assemble((9, 4), (8, 0, 0), &raw, 6, 1, &[(b"tRNS", &[0, 0])]),
        ),
        (
            "unknown critical chunk",
            assemble((9, 4), (8, 0, 0), &raw, 6, 1, &[(b"ABCD", &[])]),
        ),
        ("short rows", assemble((10, 4), (8, 0, 0), &raw, 6, 1, &[])),
        (
            "a header promising more than the stream can hold",
            assemble((60_000, 60_000), (8, 0, 0), &raw, 6, 1, &[]),
        ),
        ("bad filter type", {
            let mut raw = raw.clone();
            raw[10] = 5;
            assemble((9, 4), (8, 0, 0), &raw, 6, 1, &[])
        }),
    ];
    for (what, file) in unsupported {
        assert_eq!(
            decode(&file, ColorMode::Gray).err(),
            Some(Unsupported),
            "{what}"
        );
    }
    // A flipped bit anywhere in a digit: its chunk's CRC no longer matches.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits");
    let digit = std::fs::read(root.join("digit_3.png")).expect("example");
    for at in 8..digit.len() {
        let mut flipped = digit.clone();
        flipped[at] ^= 0x10;
        assert!(
            decode(&flipped, ColorMode::Gray).is_err(),
            "byte {at} flipped"
        );
    }
    // Every truncation is refused.
    for end in 0..digit.len() - 12 {
        assert!(
            decode(&digit[..end], ColorMode::Gray).is_err(),
            "cut at {end}"
        );
    }
}

fn deflate(data: &[u8], level: u32) -> Vec<u8> {
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
    encoder.write_all(data).expect("compresses");
    encoder.finish().expect("compresses")
}

#[test]
fn inflate_gives_back_what_flate2_compressed_in_stored_fixed_and_dynamic_blocks() {
    let text = b"the quick brown fox jumps over the lazy dog; ".repeat(300);
    let noise = picture(200, 150, 1, 3);
    let run = vec![42u8; 70_000];
    let inputs: [&[u8]; 5] = [b"", b"a", b"abcabcabcabcabc", &text, &noise];
    let mut block_types = std::collections::BTreeSet::new();
    for data in inputs.iter().copied().chain([&run[..]]) {
        for level in [0, 1, 6, 9] {
            let stream = deflate(data, level);
            block_types.insert(stream[0] >> 1 & 3);
            assert_eq!(inflate(&stream, data.len()).as_deref(), Ok(data));
            // One byte more or less than the stream holds is corrupt.
            assert_eq!(inflate(&stream, data.len() + 1), Err(Corrupt));
            if !data.is_empty() {
                assert_eq!(inflate(&stream, data.len() - 1), Err(Corrupt));
            }
        }
    }
    assert_eq!(
        block_types.len(),
        3,
        "stored, fixed and dynamic blocks were all tried"
    );
}

#[test]
fn corrupt_streams_are_refused_without_panicking() {
    let data = picture(60, 40, 1, 5);
    let stream = deflate(&data, 9);
    for end in 0..stream.len() {
        assert_eq!(
            inflate(&stream[..end], data.len()),
            Err(Corrupt),
            "cut at {end}"
        );
    }
    for at in 0..stream.len() {
        for bit in 0..8 {
            let mut flipped = stream.clone();
            flipped[at] ^= 1 << bit;
            // Either refused or the expected number of bytes: never more, never a panic.
            if let Ok(out) = inflate(&flipped, data.len()) {
                assert_eq!(out.len(), data.len());
            }
        }
    }
}

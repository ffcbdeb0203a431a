//! The decoder against Pillow's pixels (tests/fixtures/jpeg, made by
//! scripts/export/make_jpeg_fixtures.py), regions against the whole image, and hostile bytes.
#![allow(clippy::unwrap_used)]

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jpeg")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Pillow's decode of `<name>.jpg`: its width, height and interleaved pixels.
fn pillow(name: &str) -> (usize, usize, Vec<u8>) {
    let png = image::load_from_memory(&fixture(&format!("{name}.png"))).unwrap();
    let (width, height) = (png.width() as usize, png.height() as usize);
    let data = match png {
        image::DynamicImage::ImageLuma8(grey) => grey.into_raw(),
        other => other.into_rgb8().into_raw(),
    };
    (width, height, data)
}

const BASELINE: [&str; 11] = [
    "ycc444_37x23",
    "ycc422_37x23",
    "ycc420_37x23",
    "ycc420_5x9",
    "ycc420_120x80_q50",
    "grey_33x17",
    "restart_blocks_64x48",
    "restart_rows_51x39",
    "optimised_45x30",
    "noise444_43x29_q100",
    "noise420_43x29_q100",
];

fn whole(width: usize, height: usize) -> Region {
    Region {
        x0: 0,
        x1: width,
        y0: 0,
        y1: height,
    }
}

#[test]
fn every_layout_decodes_to_pillows_exact_pixels() {
    for name in BASELINE {
        let (width, height, expected) = pillow(name);
        let decoded = decode(&fixture(&format!("{name}.jpg")), whole(width, height))
            .unwrap_or_else(|error| panic!("{name}: {error:?}"));
        assert_eq!((decoded.width, decoded.height), (width, height), "{name}");
        assert_eq!(decoded.channels * width * height, expected.len(), "{name}");
        let differing = decoded
            .data
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differing, 0,
            "{name}: {differing} values differ from Pillow's"
        );
    }
}

#[test]
fn a_region_is_the_same_pixels_as_in_the_whole_image() {
    for name in BASELINE {
        let bytes = fixture(&format!("{name}.jpg"));
        let (width, height, channels) = dimensions(&bytes).unwrap();
        let full = decode(&bytes, whole(width, height)).unwrap();
        // Edges, single rows and columns, and regions that start or end inside a block or MCU.
        for (x0, x1, y0, y1) in [
            (0, 1, 0, 1),
            (width - 1, width, height - 1, height),
            (1, width - 1, 1, height - 1),
            (width / 3, width / 2 + 1, height / 4, height - height / 5),
            (width / 2, width, 0, height / 2 + 1),
            (0, width / 2, height / 2, height),
        ] {
            let region = Region { x0, x1, y0, y1 };
            let part = decode(&bytes, region).unwrap();
            assert_eq!(part.region, region);
            let columns = (x1 - x0) * channels;
            for (row, y) in (y0..y1).enumerate() {
                let expected = &full.data[(y * width + x0) * channels..][..columns];
                let got = &part.data[row * columns..][..columns];
                assert_eq!(got, expected, "{name}: row {y} of {region:?}");
            }
        }
    }
}

#[test]
fn other_codings_are_left_to_the_general_decoder() {
    let bytes = fixture("progressive_45x30.jpg");
    assert!(matches!(
        decode(&bytes, whole(45, 30)),
        Err(Fallback::Unsupported(_))
    ));
    assert!(decode(b"\xFF\xD8\xFF\xD9", whole(1, 1)).is_err());
    assert!(decode(b"not a jpeg", whole(1, 1)).is_err());
}

/// Truncations and flipped bytes anywhere (markers, tables, scan) give an answer or a fallback,
/// never a panic, and stay within the region's size.
#[test]
fn hostile_bytes_never_panic() {
    for name in [
        "ycc420_37x23",
        "restart_rows_51x39",
        "grey_33x17",
        "noise444_43x29_q100",
    ] {
        let bytes = fixture(&format!("{name}.jpg"));
        let region = whole(64, 64);
        for cut in (0..bytes.len()).step_by(7) {
            let _ = decode(&bytes[..cut], region);
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut mutated = bytes.clone();
            let at = (state as usize) % mutated.len();
            mutated[at] ^= (state >> 32) as u8 | 1;
            if let Ok(decoded) = decode(&mutated, region) {
                let region = decoded.region;
                assert_eq!(
                    decoded.data.len(),
                    (region.x1 - region.x0) * (region.y1 - region.y0) * decoded.channels
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_vector_idct_equals_the_reference() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return;
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000 {
        let mut block = [0i16; 64];
        // Sparse blocks like real ones, dense ones, and extreme values.
        let (count, range) = match round % 4 {
            0 => (3, 64),
            1 => (16, 512),
            2 => (64, 2048),
            _ => (64, 32768),
        };
        for _ in 0..count {
            let index = (next() % 64) as usize;
            block[index] = ((next() % (2 * range)) as i64 - range as i64) as i16;
        }
        let quant: [i32; 64] = std::array::from_fn(|_| 1 + (next() % 100) as i32);
        let (mut scalar, mut vector) = ([0u8; 64], [0u8; 64]);
        idct::scalar(&block, &quant, &mut scalar, 8);
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe {
            idct::avx2::idct(&block, &quant, &mut vector, 8)
        };
        assert_eq!(scalar, vector, "block {block:?}");
    }
}

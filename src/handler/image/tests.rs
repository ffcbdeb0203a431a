//! The pipeline against Pillow + torchvision (tests/fixtures/photos, made by
//! scripts/export/make_photo_fixtures.py), and hostile bytes.
#![allow(clippy::unwrap_used)]

use super::*;
use oxserve_archiver::handler_config::ColorMode;

fn fixture(path: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn imagenet() -> ImagePreprocess {
    oxserve_archiver::HandlerConfig::builtin("image_classifier")
        .and_then(|config| config.image)
        .unwrap()
}

/// The fixtures' transforms: Resize(64) + CenterCrop(56), ImageNet's mean and std.
fn small() -> ImagePreprocess {
    ImagePreprocess {
        resize: Some(64),
        center_crop: Some(56),
        ..imagenet()
    }
}

/// torchvision's ToTensor + Normalize of Pillow's 8-bit Resize + CenterCrop output.
fn reference(name: &str, settings: &ImagePreprocess) -> Vec<f32> {
    let image = ::image::load_from_memory(&fixture(&format!("photos/{name}.ref.png")))
        .unwrap()
        .into_rgb8();
    let plane = (image.width() * image.height()) as usize;
    let mut data = vec![0f32; 3 * plane];
    for (index, pixel) in image.pixels().enumerate() {
        for channel in 0..3 {
            data[channel * plane + index] = (f32::from(pixel.0[channel]) * settings.scale
                - settings.mean[channel])
                / settings.std[channel];
        }
    }
    data
}

fn mean_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let sum: f64 = a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).sum();
    (sum / a.len() as f64) as f32
}

const PHOTOS: [&str; 11] = [
    "ycc420.jpg",
    "ycc422.jpg",
    "ycc444.jpg",
    "grey.jpg",
    "progressive.jpg",
    "cmyk.jpg",
    "tall420.jpg",
    "exif_rotated.jpg",
    "alpha.png",
    "palette.png",
    "grey8.png",
];

#[test]
fn every_layout_is_within_a_hundredth_of_torchvision_on_pillow() {
    let settings = small();
    for name in PHOTOS {
        let (ours, height, width, channels) =
            prepare(&fixture(&format!("photos/{name}")), &settings, true).unwrap();
        assert_eq!((height, width, channels), (56, 56, 3), "{name}");
        let stem = name.rsplit_once('.').unwrap().0;
        let difference = mean_abs_difference(&ours, &reference(stem, &settings));
        println!("{name}: mean abs difference to Pillow + torchvision {difference:.5}");
        assert!(difference <= 0.01, "{name}: {difference}");
    }
}

#[test]
fn grey_mode_is_pillows_luma() {
    let settings = ImagePreprocess {
        color: ColorMode::Gray,
        mean: Vec::new(),
        std: Vec::new(),
        ..small()
    };
    let (grey, ..) = prepare(&fixture("photos/grey8.png"), &settings, true).unwrap();
    let (rgb, ..) = prepare(&fixture("photos/grey8.png"), &small(), true).unwrap();
    assert_eq!(grey.len(), 56 * 56);
    // A grey image's luma is its grey: the red plane before normalisation.
    let (mean, std) = (imagenet().mean[0], imagenet().std[0]);
    for (luma, red) in grey.iter().zip(&rgb) {
        assert!((luma - (red * std + mean)).abs() < 1e-5);
    }
}

#[test]
fn no_resize_and_no_crop_keep_the_image() {
    let settings = ImagePreprocess {
        resize: None,
        center_crop: None,
        mean: Vec::new(),
        std: Vec::new(),
        ..imagenet()
    };
    let bytes = fixture("photos/grey8.png");
    let pixels = decode(&bytes, &settings, true).unwrap();
    let (data, height, width) = preprocess(&pixels, &settings).unwrap();
    assert_eq!((width, height), (120, 80));
    for (value, byte) in data.iter().zip(pixels.data.iter().step_by(3)) {
        assert_eq!(*value, f32::from(*byte) * settings.scale);
    }
}

#[test]
fn a_crop_larger_than_the_image_pads_with_normalised_zero() {
    let settings = ImagePreprocess {
        resize: None,
        center_crop: Some(130),
        ..imagenet()
    };
    let (data, height, width, _) = prepare(&fixture("photos/grey8.png"), &settings, true).unwrap();
    assert_eq!((width, height), (130, 130));
    let zero = -settings.mean[0] / settings.std[0];
    // Rows 0..25 are padding ((130 - 80) // 2), columns 0..5 ((130 - 120) // 2).
    assert_eq!(data[0], zero);
    assert_eq!(data[24 * 130 + 60], zero);
    assert_eq!(data[60 * 130 + 4], zero);
    assert_ne!(data[60 * 130 + 60], zero);
}

#[test]
fn garbage_and_empty_bodies_are_bad_requests() {
    let settings = imagenet();
    for body in [&b""[..], b"hello world", b"\x89PNG\r\n\x1a\nbroken"] {
        let error = decode(body, &settings, true).expect_err("refused");
        assert_eq!(error.status(), 400, "{error}");
    }
}

#[test]
fn base64_bodies_decode_as_the_bytes() {
    use base64::Engine;
    let bytes = fixture("photos/ycc420.jpg");
    let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let settings = small();
    let direct = prepare(&bytes, &settings, true).unwrap();
    for body in [
        text.clone(),
        format!("\"{text}\""),
        format!("{{\"data\": \"data:image/jpeg;base64,{text}\"}}"),
    ] {
        assert_eq!(prepare(body.as_bytes(), &settings, true).unwrap(), direct);
    }
}

/// A deterministic byte-flipper (xorshift), so failures reproduce.
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn mutate(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut mutated = bytes.to_vec();
        match self.next() % 4 {
            // Truncated.
            0 => mutated.truncate((self.next() as usize) % bytes.len()),
            // A few bytes anywhere, the header most often.
            _ => {
                for _ in 0..1 + self.next() % 4 {
                    let reach = if self.next().is_multiple_of(2) {
                        200
                    } else {
                        bytes.len()
                    };
                    let at = (self.next() as usize) % reach.min(bytes.len());
                    mutated[at] = self.next() as u8;
                }
            }
        }
        mutated
    }
}

/// Flipped and cut bytes of every format give an answer or a 400, never a panic or a 5xx, and
/// never take long.
#[test]
fn mutated_images_are_answered_or_refused_with_400() {
    let settings = imagenet();
    let mut mutator = Mutator(0x9E37_79B9_7F4A_7C15);
    let mut refused = 0;
    for name in PHOTOS {
        let bytes = fixture(&format!("photos/{name}"));
        for _ in 0..40 {
            let mutated = mutator.mutate(&bytes);
            let started = std::time::Instant::now();
            if let Err(error) = prepare(&mutated, &settings, true) {
                assert_eq!(error.status(), 400, "{name}: {error}");
                refused += 1;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "{name}: {:?}",
                started.elapsed()
            );
        }
    }
    println!("{refused} of {} mutations refused", PHOTOS.len() * 40);
}

/// zune-jpeg against libjpeg-turbo (Pillow's decode, tests/fixtures/jpeg, made by
/// scripts/export/make_jpeg_fixtures.py) in every layout: restart markers, optimised tables,
/// noise at quality 100, sizes that are not multiples of the MCU. Not bit-exact (the chroma
/// upsampling differs), within a level on average.
#[test]
fn jpeg_layouts_decode_within_a_level_of_pillow() {
    let settings = imagenet();
    for name in [
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
        "progressive_45x30",
    ] {
        let pixels = decode(&fixture(&format!("jpeg/{name}.jpg")), &settings, true).unwrap();
        let pillow = ::image::load_from_memory(&fixture(&format!("jpeg/{name}.png")))
            .unwrap()
            .into_rgb8();
        assert_eq!((pixels.width, pixels.height), pillow.dimensions(), "{name}");
        let sum: f64 = pixels
            .data
            .iter()
            .zip(pillow.as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum();
        let mean = sum / pixels.data.len() as f64;
        println!("{name}: mean abs difference to Pillow's decode {mean:.3} levels");
        assert!(mean <= 1.0, "{name}: {mean}");
    }
}

//! The two-thread split gives the sequential decoder's blocks wherever the tail starts.
#![allow(clippy::unwrap_used)]

use super::super::{Jpeg, Region};
use super::*;

/// A photo-sized JPEG (4:4:4, as the image crate writes them) made from the committed photo.
fn photo() -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = image::open(root.join("tests/fixtures/chelsea.png")).unwrap();
    let resized = source
        .resize_exact(320, 240, image::imageops::FilterType::Triangle)
        .into_rgb8();
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::Cursor::new(&mut bytes), 90)
        .encode_image(&resized)
        .unwrap();
    bytes
}

fn chelsea_jpg() -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read(root.join("tests/fixtures/chelsea.jpg")).unwrap()
}

#[test]
fn every_tail_start_gives_the_sequential_blocks() {
    for bytes in [photo(), chelsea_jpg()] {
        let jpeg = Jpeg::open(&bytes).unwrap();
        let region = Region {
            x0: 0,
            x1: jpeg.width(),
            y0: 0,
            y1: jpeg.height() * 9 / 10,
        };
        let needed = jpeg.needed_blocks(region);
        let reference = serial(&jpeg, needed).unwrap();
        let bytes_in_scan = jpeg.scan.intervals[1];
        let mut met = 0;
        for start in (0..bytes_in_scan + 40).step_by(bytes_in_scan / 61 + 1) {
            // Side by side, as in a request: whether the head meets the tail depends on timing
            // (it goes on alone when the tail is late), the blocks never do.
            let split = Split::at(&jpeg, needed, start).unwrap();
            let (head_part, tail_part) = std::thread::scope(|scope| {
                let tail = scope.spawn(|| tail(&jpeg, &split));
                let head = head(&jpeg, needed, Some(&split)).unwrap();
                (head, tail.join().unwrap())
            });
            check(&jpeg, &split, &head_part, &tail_part, &reference, start);
            // The tail first, then the head: every record is there when the head looks for it,
            // so where they meet depends on the file alone.
            let split = Split::at(&jpeg, needed, start).unwrap();
            let tail_part = tail(&jpeg, &split);
            let head_part = head(&jpeg, needed, Some(&split)).unwrap();
            met += usize::from(check(
                &jpeg, &split, &head_part, &tail_part, &reference, start,
            ));
        }
        // Most starts are inside the scan, where the tail finds its step.
        assert!(met >= 40, "the head met the tail {met} times");
    }
}

/// Joins the two parts, asserts they give the sequential blocks, and says whether they met.
fn check(
    jpeg: &Jpeg,
    split: &Split,
    head: &Part,
    tail: &Part,
    reference: &Part,
    start: usize,
) -> bool {
    let per_mcu = jpeg.layout.slots.len();
    let joined = join(jpeg, split, head, || tail).unwrap();
    for index in 0..reference.blocks.len() {
        let slot = index % per_mcu;
        let (block, last, offset) = joined.block(index, slot).unwrap();
        let mut block = *block;
        block[0] = block[0].wrapping_add(offset);
        assert_eq!(
            block, reference.blocks[index],
            "start {start}, block {index}"
        );
        assert_eq!(last, reference.last[index], "start {start}, block {index}");
    }
    joined.tail.is_some()
}

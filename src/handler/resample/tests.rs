use super::*;

/// The window's pixels without the padding byte, `channels` per pixel.
fn compact(resized: Resized, channels: usize) -> Vec<u8> {
    resized
        .data
        .chunks_exact(resized.pixel_bytes)
        .flat_map(|pixel| pixel[..channels].to_vec())
        .collect()
}

/// The window covering the whole resized image.
fn whole(out_width: usize, out_height: usize) -> Window {
    Window {
        x0: 0,
        x1: out_width,
        y0: 0,
        y1: out_height,
    }
}

/// The whole image resized, without the padding byte.
fn resize_whole(
    image: &[u8],
    (width, height, channels): (usize, usize, usize),
    (out_width, out_height): (usize, usize),
) -> Vec<u8> {
    compact(
        resize_window(
            image,
            (width, height, channels),
            (out_width, out_height),
            whole(out_width, out_height),
        ),
        channels,
    )
}

/// Resizes the whole image and checks it against the pixel-by-pixel reference; returns the
/// reference for further comparisons.
fn assert_equals_reference(
    image: &[u8],
    (width, height, channels): (usize, usize, usize),
    (out_width, out_height): (usize, usize),
) -> Vec<u8> {
    let ours = resize_whole(image, (width, height, channels), (out_width, out_height));
    let reference = reference_resize(image, (width, height, channels), (out_width, out_height));
    assert!(
        ours == reference,
        "{width}x{height}x{channels} -> {out_width}x{out_height} differs"
    );
    reference
}

#[test]
fn identity_and_flat_images_are_preserved() {
    let flat = vec![77u8; 40 * 30 * 3];
    let out = resize_whole(&flat, (40, 30, 3), (13, 10));
    assert!(out.iter().all(|&value| value == 77));
    let gradient: Vec<u8> = (0..16u8).collect();
    let same = resize_window(
        &gradient,
        (4, 4, 1),
        (4, 4),
        Window {
            x0: 1,
            x1: 3,
            y0: 1,
            y1: 3,
        },
    );
    assert_eq!(compact(same, 1), vec![5, 6, 9, 10]);
}

/// Pillow's two passes written pixel by pixel, as its C code reads: the reference the blocked,
/// vectorised passes must match byte for byte.
fn reference_resize(
    data: &[u8],
    (width, height, channels): (usize, usize, usize),
    (out_width, out_height): (usize, usize),
) -> Vec<u8> {
    let horizontal = coefficients(width, out_width);
    let mut temp = vec![0u8; height * out_width * channels];
    for y in 0..height {
        for x in 0..out_width {
            let (start, count) = horizontal.bounds[x];
            for channel in 0..channels {
                let mut sum = 1i32 << (PRECISION_BITS - 1);
                for tap in 0..count {
                    let value = data[(y * width + start + tap) * channels + channel];
                    sum += i32::from(value) * horizontal.weights[x * horizontal.stride + tap];
                }
                temp[(y * out_width + x) * channels + channel] = clip8(sum);
            }
        }
    }
    let vertical = coefficients(height, out_height);
    let mut out = vec![0u8; out_height * out_width * channels];
    for y in 0..out_height {
        let (start, count) = vertical.bounds[y];
        for x in 0..out_width * channels {
            let mut sum = 1i32 << (PRECISION_BITS - 1);
            for tap in 0..count {
                let value = temp[(start + tap) * out_width * channels + x];
                sum += i32::from(value) * vertical.weights[y * vertical.stride + tap];
            }
            out[y * out_width * channels + x] = clip8(sum);
        }
    }
    out
}

#[test]
fn blocked_passes_equal_the_pixel_by_pixel_reference() {
    // Sizes that leave partial row blocks, shrink and enlarge, one and three channels.
    for (width, height, out_width, out_height) in [
        (37, 23, 15, 9),
        (64, 61, 64, 20),
        (50, 50, 17, 33),
        (13, 11, 29, 27),
        (720, 540, 256, 192),
    ] {
        for channels in [1, 3] {
            let image: Vec<u8> = (0..width * height * channels)
                .map(|index| ((index * 7919 + index / 13) % 256) as u8)
                .collect();
            let reference =
                assert_equals_reference(&image, (width, height, channels), (out_width, out_height));
            // The portable code too, which CPUs without AVX2 run.
            let portable = compact(
                portable(
                    &image,
                    (width, height, channels),
                    (out_width, out_height),
                    whole(out_width, out_height),
                ),
                channels,
            );
            assert!(
                portable == reference,
                "{width}x{height}x{channels} -> {out_width}x{out_height} differs without AVX2"
            );
        }
    }
}

/// The split weights' sums (see `SplitWeights`) stay exact where they are largest: extreme
/// pixel values, and shrinks so strong that hundreds of taps add up, on either axis.
#[test]
fn extreme_pixels_and_long_filters_equal_the_reference() {
    for (width, height, out_width, out_height) in [
        (2000, 24, 3, 24),
        (24, 2000, 24, 3),
        (1601, 17, 8, 5),
        (64, 64, 9, 7),
    ] {
        let channels = 3;
        let image: Vec<u8> = (0..width * height * channels)
            .map(|index| match (index / channels) % 5 {
                0 | 1 | 3 => 255,
                2 => 0,
                _ => (index % 256) as u8,
            })
            .collect();
        assert_equals_reference(&image, (width, height, channels), (out_width, out_height));
        let white = vec![255u8; width * height * channels];
        let resized = resize_whole(&white, (width, height, channels), (out_width, out_height));
        assert!(
            resized.iter().all(|&value| value == 255),
            "white stays white"
        );
    }
}

#[test]
fn a_window_equals_the_same_part_of_the_full_resize() {
    let image: Vec<u8> = (0..37 * 23 * 3)
        .map(|index| (index * 7 % 251) as u8)
        .collect();
    let full = resize_whole(&image, (37, 23, 3), (15, 9));
    let part = compact(
        resize_window(
            &image,
            (37, 23, 3),
            (15, 9),
            Window {
                x0: 4,
                x1: 11,
                y0: 2,
                y1: 7,
            },
        ),
        3,
    );
    for row in 0..5 {
        assert_eq!(
            &part[row * 21..(row + 1) * 21],
            &full[((row + 2) * 15 + 4) * 3..((row + 2) * 15 + 11) * 3]
        );
    }
}

/// The crop the vision handlers ask for (Resize(256) + CenterCrop(224) of a 720×540 photo), where
/// the AVX2 transposition starts mid-row and leaves a remainder, against the reference.
#[test]
fn a_centre_crop_equals_the_reference() {
    let (width, height, out_width, out_height) = (720, 540, 341, 256);
    let image: Vec<u8> = (0..width * height * 3)
        .map(|index| ((index * 31 + index / 720) % 253) as u8)
        .collect();
    let window = Window {
        x0: 58,
        x1: 282,
        y0: 16,
        y1: 240,
    };
    let reference = reference_resize(&image, (width, height, 3), (out_width, out_height));
    let expected: Vec<u8> = (window.y0..window.y1)
        .flat_map(|row| {
            reference[(row * out_width + window.x0) * 3..(row * out_width + window.x1) * 3].to_vec()
        })
        .collect();
    let ours = resize_window(&image, (width, height, 3), (out_width, out_height), window);
    assert!(compact(ours, 3) == expected, "the AVX2 path differs");
    let portable = portable(&image, (width, height, 3), (out_width, out_height), window);
    assert!(
        compact(portable, 3) == expected,
        "the portable path differs"
    );
}

/// The portable (non-AVX2) resize of a whole image.
fn portable(
    data: &[u8],
    (width, height, channels): (usize, usize, usize),
    resized: (usize, usize),
    window: Window,
) -> Resized {
    let source = Source {
        data,
        width,
        height,
        channels,
        x0: 0,
        y0: 0,
        stride: width,
    };
    resize::<false>(source, resized, window)
}

/// A view holding only the pixels the window reads gives the same bytes as the whole image.
#[test]
fn a_view_of_the_read_pixels_resizes_like_the_whole_image() {
    for channels in [1, 3] {
        let (width, height) = (97, 61);
        let image: Vec<u8> = (0..width * height * channels)
            .map(|index| (index * 37 % 251) as u8)
            .collect();
        for (resized, window) in [
            (
                (40, 25),
                Window {
                    x0: 3,
                    x1: 37,
                    y0: 2,
                    y1: 23,
                },
            ),
            (
                (97, 30),
                Window {
                    x0: 10,
                    x1: 90,
                    y0: 0,
                    y1: 30,
                },
            ),
            (
                (50, 61),
                Window {
                    x0: 0,
                    x1: 50,
                    y0: 5,
                    y1: 40,
                },
            ),
        ] {
            // The padding byte of RGB pixels has no meaning: compare the channels.
            let whole = compact(
                resize_window(&image, (width, height, channels), resized, window),
                channels,
            );
            let (x0, x1) = source_span(width, resized.0, window.x0, window.x1);
            let (y0, y1) = source_span(height, resized.1, window.y0, window.y1);
            let part: Vec<u8> = (y0..y1)
                .flat_map(|y| {
                    image[(y * width + x0) * channels..(y * width + x1) * channels].to_vec()
                })
                .collect();
            let view = Source {
                data: &part,
                width,
                height,
                channels,
                x0,
                y0,
                stride: x1 - x0,
            };
            let view_resized = compact(resize_view(view, resized, window), channels);
            assert!(view_resized == whole, "{channels} channels, {window:?}");
            let portable = compact(resize::<false>(view, resized, window), channels);
            assert!(
                portable == whole,
                "portable, {channels} channels, {window:?}"
            );
        }
    }
}

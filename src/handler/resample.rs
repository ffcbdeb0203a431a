//! Antialiased bilinear resizing that gives Pillow's exact bytes, which is what torchvision's
//! `Resize` does to PIL images and therefore what every TorchServe vision model was trained and
//! served with. Same arithmetic as Pillow's convolution resampler: triangle filter widened by the
//! scale factor when shrinking, weights normalised in double precision and rounded to 22-bit fixed
//! point, a horizontal pass rounded to 8 bits, then a vertical pass.
//!
//! The crop that follows a resize is fused in: only the output pixels inside the crop window are
//! computed (and only the source rows they need), so `Resize(256) + CenterCrop(224)` costs the
//! 224×224 pixels it keeps, not the whole resized image.
//!
//! Speed: the horizontal pass (most of the work) runs 8 source rows at a time over a transposed
//! block, so that every tap is one wide multiply-add; the whole resize is compiled a second time
//! for AVX2 (its RGB inner loop with intrinsics) and picked at run time.

/// Pillow's fixed-point precision for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Filter taps of every output position along one axis.
struct Coefficients {
    /// Taps per output position (the row stride of `weights`).
    stride: usize,
    /// For each output position: first source index and tap count.
    bounds: Vec<(usize, usize)>,
    /// Fixed-point weights, `stride` per output position.
    weights: Vec<i32>,
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a full-range box.
fn coefficients(in_size: usize, out_size: usize) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the bilinear filter's support is 1
    let stride = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * stride];
    let mut taps = vec![0f64; stride];
    for out in 0..out_size {
        let center = (out as f64 + 0.5) * scale;
        let inverse = 1.0 / filter_scale;
        // `(int)` in C truncates towards zero; negative starts are clamped to 0 anyway.
        let min = ((center - support + 0.5) as i64).max(0) as usize;
        let max = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = max.saturating_sub(min).min(stride);
        let mut total = 0.0;
        for (tap, slot) in taps.iter_mut().enumerate().take(count) {
            let weight = triangle((tap as f64 + min as f64 - center + 0.5) * inverse);
            *slot = weight;
            total += weight;
        }
        for (tap, &weight) in taps.iter().enumerate().take(count) {
            let normalised = if total != 0.0 { weight / total } else { weight };
            let fixed = normalised * f64::from(1u32 << PRECISION_BITS);
            weights[out * stride + tap] = if fixed < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((min, count));
    }
    Coefficients {
        stride,
        bounds,
        weights,
    }
}

/// Pillow's `clip8` (255 from 2^30 up, 0 at or below 0, else the top byte of the sum), in a
/// branch-free form that vectorises: sums ≥ 2^30 shift to ≥ 256 and sums ≤ 0 to ≤ 0.
#[inline(always)]
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Source rows the horizontal pass handles at once.
const BLOCK_ROWS: usize = 8;

/// The horizontal pass, `BLOCK_ROWS` rows at a time: the block is first transposed so that each
/// source column holds its `BLOCK_ROWS` pixels contiguously, `P` bytes each (`L = BLOCK_ROWS × P`
/// of them); every output pixel is then `L`-wide multiply-adds of one column per tap, which
/// compile to SIMD. RGB pixels are padded to `P = 4` bytes: the lanes then fill whole vector
/// registers (with 24 lanes the compiler left a third of the work scalar), and the transpose moves
/// a pixel with one 4-byte copy instead of three byte stores. Same integer arithmetic as Pillow,
/// so the same bytes; the padding lane's sums are never read.
#[inline(always)]
fn horizontal_pass<const C: usize, const P: usize, const L: usize, const AVX2: bool>(
    source_rows: &[u8],
    temp: &mut [u8],
    width: usize,
    coefficients: &Coefficients,
    window: Window,
) {
    debug_assert!(C <= P && L == BLOCK_ROWS * P);
    let first_column = coefficients.bounds[window.x0].0;
    let last_column = {
        let (start, count) = coefficients.bounds[window.x1 - 1];
        start + count
    };
    let columns = last_column - first_column;
    let out_row_len = (window.x1 - window.x0) * C;
    let rows = source_rows.len() / (width * C);
    let mut block = vec![0u8; columns * L];
    for block_start in (0..rows).step_by(BLOCK_ROWS) {
        let block_rows = BLOCK_ROWS.min(rows - block_start);
        for row in 0..block_rows {
            let source = &source_rows[(block_start + row) * width * C..][..width * C];
            transpose_row::<C, P, L>(&source[first_column * C..], &mut block, columns, row);
        }
        for (index, out) in (window.x0..window.x1).enumerate() {
            let (start, count) = coefficients.bounds[out];
            let taps =
                &coefficients.weights[out * coefficients.stride..out * coefficients.stride + count];
            let columns = &block[(start - first_column) * L..(start - first_column + count) * L];
            let sums = weighted_sums::<L, AVX2>(taps, columns);
            for row in 0..block_rows {
                let target = &mut temp[(block_start + row) * out_row_len + index * C..][..C];
                for (slot, &sum) in target.iter_mut().zip(&sums[row * P..row * P + C]) {
                    *slot = clip8(sum);
                }
            }
        }
    }
}

/// Copies the first `columns` pixels of one source row into lane `row` of each column of the
/// block. With `P > C` a pixel moves as one `P`-byte copy (the byte past it lands in the padding
/// lane); only the row's last pixel, which has no byte after it, is copied byte by byte.
#[inline(always)]
fn transpose_row<const C: usize, const P: usize, const L: usize>(
    source: &[u8],
    block: &mut [u8],
    columns: usize,
    row: usize,
) {
    let source = &source[..columns * C];
    let whole = if P > C {
        (source.len().saturating_sub(P - C)) / C
    } else {
        columns
    };
    let lane = row * P;
    assert!(lane + P <= L, "row {row} is inside the block");
    for (target, pixel) in block
        .chunks_exact_mut(L)
        .zip(source.windows(P).step_by(C))
        .take(whole)
    {
        target[lane..lane + P].copy_from_slice(pixel);
    }
    for column in whole..columns {
        let target = &mut block[column * L + lane..][..C];
        target.copy_from_slice(&source[column * C..column * C + C]);
    }
}

/// `Σ tap × column` over the taps, lane by lane, plus Pillow's rounding half. `columns` holds
/// `taps.len()` columns of `L` bytes.
#[inline(always)]
fn weighted_sums<const L: usize, const AVX2: bool>(taps: &[i32], columns: &[u8]) -> [i32; L] {
    #[cfg(target_arch = "x86_64")]
    if AVX2 && L == 32 {
        #[allow(unsafe_code)]
        // SAFETY: `AVX2` is only set on the path `resize_window` takes after checking that the
        // CPU has AVX2.
        let sums = unsafe { avx2::weighted_sums_32(taps, columns) };
        let mut out = [0i32; L];
        out.copy_from_slice(&sums);
        return out;
    }
    let mut sums = [1i32 << (PRECISION_BITS - 1); L];
    for (&weight, column) in taps.iter().zip(columns.chunks_exact(L)) {
        for (sum, &value) in sums.iter_mut().zip(column) {
            *sum += i32::from(value) * weight;
        }
    }
    sums
}

/// The horizontal pass's inner loop for 32 lanes (8 RGB rows padded to 4 bytes) written with
/// AVX2 intrinsics: four 8-lane accumulators that stay in registers. The compiler's own
/// vectorisation of the same loop came out scalar (fully unrolled, spilled to the stack) at 32
/// lanes, and two-thirds vector at 24.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi32, _mm256_castsi256_si128, _mm256_cvtepu8_epi32,
        _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_mullo_epi32, _mm256_set1_epi32,
        _mm256_storeu_si256, _mm_srli_si128,
    };

    use super::PRECISION_BITS;

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub unsafe fn weighted_sums_32(taps: &[i32], columns: &[u8]) -> [i32; 32] {
        assert!(columns.len() >= taps.len() * 32, "a column per tap");
        let mut sums = [_mm256_set1_epi32(1 << (PRECISION_BITS - 1)); 4];
        for (tap, &weight) in taps.iter().enumerate() {
            let weight = _mm256_set1_epi32(weight);
            // SAFETY: bytes tap*32 .. tap*32+32 are inside `columns` (asserted above).
            let bytes =
                unsafe { _mm256_loadu_si256(columns.as_ptr().add(tap * 32).cast::<__m256i>()) };
            let low = _mm256_castsi256_si128(bytes);
            let high = _mm256_extracti128_si256::<1>(bytes);
            let quarters = [
                low,
                _mm_srli_si128::<8>(low),
                high,
                _mm_srli_si128::<8>(high),
            ];
            for (sum, quarter) in sums.iter_mut().zip(quarters) {
                let product = _mm256_mullo_epi32(_mm256_cvtepu8_epi32(quarter), weight);
                *sum = _mm256_add_epi32(*sum, product);
            }
        }
        let mut out = [0i32; 32];
        for (chunk, sum) in out.chunks_exact_mut(8).zip(sums) {
            // SAFETY: each chunk is 8 i32s, the 32 bytes the store writes.
            unsafe { _mm256_storeu_si256(chunk.as_mut_ptr().cast::<__m256i>(), sum) };
        }
        out
    }
}

/// A rectangle of the resized image, `x0..x1` × `y0..y1`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub x0: usize,
    pub x1: usize,
    pub y0: usize,
    pub y1: usize,
}

/// Resizes interleaved 8-bit pixels (`channels` per pixel) from `width`×`height` to
/// `out_width`×`out_height` and returns only the `window` of the result, row-major.
pub fn resize_window(
    data: &[u8],
    source: (usize, usize, usize),
    resized: (usize, usize),
    window: Window,
) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        /// The same code, compiled with AVX2 instructions.
        #[allow(unsafe_code)]
        #[target_feature(enable = "avx2")]
        unsafe fn with_avx2(
            data: &[u8],
            source: (usize, usize, usize),
            resized: (usize, usize),
            window: Window,
        ) -> Vec<u8> {
            resize::<true>(data, source, resized, window)
        }
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 (checked above); the function is otherwise safe Rust.
        return unsafe { with_avx2(data, source, resized, window) };
    }
    resize::<false>(data, source, resized, window)
}

/// `AVX2`: called from the AVX2-compiled copy, so AVX2 intrinsics may run.
#[inline(always)]
fn resize<const AVX2: bool>(
    data: &[u8],
    (width, height, channels): (usize, usize, usize),
    (out_width, out_height): (usize, usize),
    window: Window,
) -> Vec<u8> {
    let window_width = window.x1 - window.x0;
    let need_horizontal = out_width != width;
    let need_vertical = out_height != height;
    let vertical = need_vertical.then(|| coefficients(height, out_height));
    // Source rows the window needs: all the vertical taps of its rows, or its rows themselves.
    let (first_row, last_row) = match &vertical {
        Some(coefficients) => {
            let first = coefficients.bounds[window.y0].0;
            let (start, count) = coefficients.bounds[window.y1 - 1];
            (first, start + count)
        }
        None => (window.y0, window.y1),
    };
    // Horizontal pass over the needed rows and the window's columns.
    let rows = last_row - first_row;
    let row_len = window_width * channels;
    let mut temp = vec![0u8; rows * row_len];
    if need_horizontal {
        let horizontal = coefficients(width, out_width);
        let source_rows = &data[first_row * width * channels..last_row * width * channels];
        match channels {
            3 => horizontal_pass::<3, 4, { 4 * BLOCK_ROWS }, AVX2>(
                source_rows,
                &mut temp,
                width,
                &horizontal,
                window,
            ),
            1 => horizontal_pass::<1, 1, BLOCK_ROWS, AVX2>(
                source_rows,
                &mut temp,
                width,
                &horizontal,
                window,
            ),
            _ => unreachable!("images are decoded to 1 or 3 channels"),
        }
    } else {
        for row in 0..rows {
            let source_start = ((first_row + row) * width + window.x0) * channels;
            temp[row * row_len..(row + 1) * row_len]
                .copy_from_slice(&data[source_start..source_start + row_len]);
        }
    }
    let Some(vertical) = vertical else {
        return temp;
    };
    // Vertical pass over the window's rows, a whole row at a time: each tap adds one contiguous
    // source row into the accumulators, which the compiler vectorises.
    let mut out = vec![0u8; (window.y1 - window.y0) * row_len];
    let mut sums = vec![0i32; row_len];
    for (row, out_row) in (window.y0..window.y1).enumerate() {
        let (start, count) = vertical.bounds[out_row];
        let taps = &vertical.weights[out_row * vertical.stride..out_row * vertical.stride + count];
        sums.fill(1 << (PRECISION_BITS - 1));
        for (tap, &weight) in taps.iter().enumerate() {
            let source_row = start - first_row + tap;
            let source = &temp[source_row * row_len..(source_row + 1) * row_len];
            for (sum, &value) in sums.iter_mut().zip(source) {
                *sum += i32::from(value) * weight;
            }
        }
        for (slot, &sum) in out[row * row_len..(row + 1) * row_len]
            .iter_mut()
            .zip(&sums)
        {
            *slot = clip8(sum);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_flat_images_are_preserved() {
        let flat = vec![77u8; 40 * 30 * 3];
        let window = Window {
            x0: 0,
            x1: 13,
            y0: 0,
            y1: 10,
        };
        let out = resize_window(&flat, (40, 30, 3), (13, 10), window);
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
        assert_eq!(same, vec![5, 6, 9, 10]);
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
                let window = Window {
                    x0: 0,
                    x1: out_width,
                    y0: 0,
                    y1: out_height,
                };
                let ours = resize_window(
                    &image,
                    (width, height, channels),
                    (out_width, out_height),
                    window,
                );
                let reference =
                    reference_resize(&image, (width, height, channels), (out_width, out_height));
                assert!(
                    ours == reference,
                    "{width}x{height}x{channels} -> {out_width}x{out_height} differs"
                );
                // The portable code too, which CPUs without AVX2 run.
                let portable = resize::<false>(
                    &image,
                    (width, height, channels),
                    (out_width, out_height),
                    window,
                );
                assert!(
                    portable == reference,
                    "{width}x{height}x{channels} -> {out_width}x{out_height} differs without AVX2"
                );
            }
        }
    }

    #[test]
    fn a_window_equals_the_same_part_of_the_full_resize() {
        let image: Vec<u8> = (0..37 * 23 * 3)
            .map(|index| (index * 7 % 251) as u8)
            .collect();
        let full = resize_window(
            &image,
            (37, 23, 3),
            (15, 9),
            Window {
                x0: 0,
                x1: 15,
                y0: 0,
                y1: 9,
            },
        );
        let part = resize_window(
            &image,
            (37, 23, 3),
            (15, 9),
            Window {
                x0: 4,
                x1: 11,
                y0: 2,
                y1: 7,
            },
        );
        for row in 0..5 {
            assert_eq!(
                &part[row * 21..(row + 1) * 21],
                &full[((row + 2) * 15 + 4) * 3..((row + 2) * 15 + 11) * 3]
            );
        }
    }
}

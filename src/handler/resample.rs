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
//! for AVX2 and picked at run time. With AVX2 the RGB transposition and both passes' inner loops
//! are intrinsics (`avx2.rs`): the weights are split into two 16-bit parts, so that `pmaddwd`
//! does two taps per instruction where a 32-bit multiply did one in two micro-ops, exactly (see
//! [`SplitWeights`]), and the horizontal pass transposes its outputs back into rows 8 pixels at
//! a time instead of storing them one by one (which had become most of its time).

use std::sync::{Arc, Mutex, OnceLock};

use super::scratch;

/// Pillow's fixed-point precision for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Filter taps of every output position along one axis.
struct Coefficients {
    /// The weights split for the AVX2 loops, made when first needed.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    split: OnceLock<SplitWeights>,
    /// Taps per output position (the row stride of `weights`).
    stride: usize,
    /// For each output position: first source index and tap count.
    bounds: Vec<(usize, usize)>,
    /// Fixed-point weights, `stride` per output position.
    weights: Vec<i32>,
}

impl Coefficients {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn split(&self) -> &SplitWeights {
        self.split.get_or_init(|| SplitWeights::new(self))
    }

    /// The source positions that output positions `from..to` read: `first..last`.
    fn span(&self, from: usize, to: usize) -> (usize, usize) {
        let (start, count) = self.bounds[to - 1];
        (self.bounds[from].0, start + count)
    }
}

/// The source positions (along an axis of `in_size` resized to `out_size`) that output
/// positions `from..to` read: what a decoder must produce for them.
pub fn source_span(in_size: usize, out_size: usize, from: usize, to: usize) -> (usize, usize) {
    if in_size == out_size || from >= to {
        return (from, to);
    }
    coefficients(in_size, out_size).span(from, to)
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Sizes whose coefficients are kept: a model's photos mostly come in a few sizes, and each
/// image needs them several times (where to decode, then each thread's two passes).
const KEPT_SIZES: usize = 8;

/// [`compute_coefficients`], computed once per size pair while it stays among the last
/// [`KEPT_SIZES`] used: with the divisions of every weight it took 2 % of a photo's time.
fn coefficients(in_size: usize, out_size: usize) -> Arc<Coefficients> {
    static KEPT: Mutex<Vec<(usize, usize, Arc<Coefficients>)>> = Mutex::new(Vec::new());
    let lock = || KEPT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((.., found)) = lock()
        .iter()
        .find(|(input, output, _)| (*input, *output) == (in_size, out_size))
    {
        return Arc::clone(found);
    }
    let computed = Arc::new(compute_coefficients(in_size, out_size));
    let mut kept = lock();
    if kept.len() >= KEPT_SIZES {
        kept.remove(0);
    }
    kept.push((in_size, out_size, Arc::clone(&computed)));
    computed
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a full-range box.
fn compute_coefficients(in_size: usize, out_size: usize) -> Coefficients {
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
        split: OnceLock::new(),
        stride,
        bounds,
        weights,
    }
}

/// A pass's weights as `pmaddwd` (16-bit × 16-bit, adjacent products summed) takes them, for
/// the AVX2 loops: each 22-bit weight `w` split into `w >> 11` and `w & 2047`, both of which fit
/// 16 bits, taps paired, each pair's two halves in one 32-bit word (the first tap low). An odd
/// count's last pair has a zero second weight. The sums of the two parts' products, the first
/// shifted left by 11, give Pillow's sum exactly: modulo 2^32 every step is exact, and Pillow's
/// own 32-bit sum holds the result.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct SplitWeights {
    /// Pairs per output position (the row stride of `high` and `low`).
    stride: usize,
    high: Vec<i32>,
    low: Vec<i32>,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl SplitWeights {
    /// Bits in the low part.
    const LOW_BITS: u32 = 11;

    fn new(coefficients: &Coefficients) -> SplitWeights {
        let stride = coefficients.stride.div_ceil(2);
        let outputs = coefficients.bounds.len();
        let (mut high, mut low) = (vec![0; outputs * stride], vec![0; outputs * stride]);
        // Two's complement 16-bit halves: the high part of a negative weight is negative.
        let split = |weight: i32| {
            (
                (weight >> Self::LOW_BITS) as u16,
                (weight & ((1 << Self::LOW_BITS) - 1)) as u16,
            )
        };
        for (out, &(_, count)) in coefficients.bounds.iter().enumerate() {
            let taps = &coefficients.weights[out * coefficients.stride..][..count];
            for (pair, weights) in taps.chunks(2).enumerate() {
                let first = split(weights[0]);
                let second = weights.get(1).map_or((0, 0), |&weight| split(weight));
                let word = |a: u16, b: u16| (u32::from(a) | u32::from(b) << 16) as i32;
                high[out * stride + pair] = word(first.0, second.0);
                low[out * stride + pair] = word(first.1, second.1);
            }
        }
        SplitWeights { stride, high, low }
    }

    /// Output position `out`'s pairs: high parts, low parts.
    fn of(&self, out: usize, count: usize) -> (&[i32], &[i32]) {
        let range = out * self.stride..out * self.stride + count.div_ceil(2);
        (&self.high[range.clone()], &self.low[range])
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

/// Bytes per pixel in the passes' buffers for `channels`-byte pixels: RGB is padded to 4 (see
/// `horizontal_pass`).
const fn padded(channels: usize) -> usize {
    if channels == 3 {
        4
    } else {
        channels
    }
}

/// The horizontal pass, `BLOCK_ROWS` rows at a time: the block is first transposed so that each
/// source column holds its `BLOCK_ROWS` pixels contiguously, `P` bytes each (`L = BLOCK_ROWS × P`
/// of them); every output pixel is then `L`-wide multiply-adds of one column per tap, which
/// compile to SIMD. RGB pixels are padded to `P = 4` bytes, in the block and in `temp`: the lanes
/// then fill whole vector registers (with 24 lanes the compiler left a third of the work scalar),
/// and a pixel moves as one 4-byte word. Same integer arithmetic as Pillow, so the same bytes; the
/// padding byte's value is never read.
#[inline(always)]
fn horizontal_pass<const C: usize, const P: usize, const L: usize, const AVX2: bool>(
    source_rows: &[u8],
    temp: &mut [u8],
    (width, origin_x): (usize, usize),
    coefficients: &Coefficients,
    window: Window,
) {
    debug_assert!(C <= P && L == BLOCK_ROWS * P);
    let (first_column, last_column) = coefficients.span(window.x0, window.x1);
    let columns = last_column - first_column;
    // `source_rows` hold `width` pixels a row from column `origin_x` on.
    let first_stored = first_column - origin_x;
    let out_row_len = (window.x1 - window.x0) * P;
    let rows = source_rows.len() / (width * C);
    let mut block = vec![0u8; columns * L];
    let split = (AVX2 && P == 4 && L == 32).then(|| coefficients.split());
    for block_start in (0..rows).step_by(BLOCK_ROWS) {
        let block_rows = BLOCK_ROWS.min(rows - block_start);
        let block_source = &source_rows[block_start * width * C..];
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if AVX2 && C == 3 && P == 4 && block_rows == BLOCK_ROWS {
            #[allow(unsafe_code)]
            // SAFETY: `AVX2` is only set on the path `resize_window` takes after checking that
            // the CPU has AVX2.
            {
                done =
                    unsafe { avx2::transpose_rgb(block_source, width, first_stored, &mut block) };
            }
        }
        for row in 0..block_rows {
            let source = &block_source[row * width * C..][..width * C];
            let skip = (first_stored + done) * C;
            let rest = &mut block[done * L..];
            transpose_row::<C, P, L>(&source[skip..], rest, columns - done, row);
        }
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if let (Some(split), BLOCK_ROWS) = (&split, block_rows) {
            #[allow(unsafe_code)]
            // SAFETY: `split` is only made on the path `resize_window` takes after checking that
            // the CPU has AVX2.
            {
                done = unsafe {
                    avx2::horizontal_block_split(
                        split,
                        &coefficients.bounds,
                        (first_column, window.x0..window.x1),
                        &block,
                        &mut temp[block_start * out_row_len..],
                        out_row_len,
                    )
                };
            }
        }
        for (index, out) in (window.x0..window.x1).enumerate().skip(done) {
            let (start, count) = coefficients.bounds[out];
            let taps =
                &coefficients.weights[out * coefficients.stride..out * coefficients.stride + count];
            let columns = &block[(start - first_column) * L..(start - first_column + count) * L];
            let halves = split.map(|split| split.of(out, count));
            let pixels = weighted_pixels::<P, L>(taps, halves, columns);
            for (row, pixel) in pixels.iter().enumerate().take(block_rows) {
                temp[(block_start + row) * out_row_len + index * P..][..P].copy_from_slice(pixel);
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

/// One output pixel for each of the block's rows: `Σ tap × column` over the taps, lane by lane,
/// plus Pillow's rounding half, clipped to 8 bits. `columns` holds `taps.len()` columns of `L`
/// bytes. With the taps' split weights (RGB blocks on the AVX2 path), the AVX2 sums.
#[inline(always)]
fn weighted_pixels<const P: usize, const L: usize>(
    taps: &[i32],
    split: Option<(&[i32], &[i32])>,
    columns: &[u8],
) -> [[u8; P]; BLOCK_ROWS] {
    let mut pixels = [[0u8; P]; BLOCK_ROWS];
    #[cfg(target_arch = "x86_64")]
    if let Some((high, low)) = split {
        #[allow(unsafe_code)]
        // SAFETY: split weights are only made on the path `resize_window` takes after checking
        // that the CPU has AVX2, for 32-byte columns.
        let words = unsafe { avx2::split_words(high, low, columns) };
        for (pixel, word) in pixels.iter_mut().zip(words) {
            pixel.copy_from_slice(&word.to_le_bytes()[..P]);
        }
        return pixels;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = split;
    let mut sums = [1i32 << (PRECISION_BITS - 1); L];
    for (&weight, column) in taps.iter().zip(columns.chunks_exact(L)) {
        for (sum, &value) in sums.iter_mut().zip(column) {
            *sum += i32::from(value) * weight;
        }
    }
    for (pixel, sums) in pixels.iter_mut().zip(sums.chunks_exact(P)) {
        for (slot, &sum) in pixel.iter_mut().zip(sums) {
            *slot = clip8(sum);
        }
    }
    pixels
}

/// A rectangle of the resized image, `x0..x1` × `y0..y1`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub x0: usize,
    pub x1: usize,
    pub y0: usize,
    pub y1: usize,
}

/// The resized window, row-major, `pixel_bytes` per pixel: the image's channels first, then (for
/// RGB, padded to 4 bytes) one byte of no meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resized {
    pub data: Vec<u8>,
    pub pixel_bytes: usize,
}

/// Interleaved 8-bit pixels of a `width`×`height` image, or of the part of it from column `x0`
/// and row `y0` on, `stride` pixels a row: all the resize reads must be inside.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub x0: usize,
    pub y0: usize,
    pub stride: usize,
}

/// Resizes interleaved 8-bit pixels (`channels` per pixel) from `width`×`height` to
/// `out_width`×`out_height` and returns only the `window` of the result.
#[cfg(test)]
pub fn resize_window(
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
    resize_view(source, resized, window)
}

/// [`resize_window`] of the part of an image that `source` holds.
pub fn resize_view(source: Source<'_>, resized: (usize, usize), window: Window) -> Resized {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        /// The same code, compiled with AVX2 instructions.
        #[allow(unsafe_code)]
        #[target_feature(enable = "avx2")]
        unsafe fn with_avx2(
            source: Source<'_>,
            resized: (usize, usize),
            window: Window,
        ) -> Resized {
            resize::<true>(source, resized, window)
        }
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 (checked above); the function is otherwise safe Rust.
        return unsafe { with_avx2(source, resized, window) };
    }
    resize::<false>(source, resized, window)
}

/// `AVX2`: called from the AVX2-compiled copy, so AVX2 intrinsics may run.
#[inline(always)]
fn resize<const AVX2: bool>(
    source: Source<'_>,
    (out_width, out_height): (usize, usize),
    window: Window,
) -> Resized {
    let Source {
        data,
        width,
        height,
        channels,
        x0: origin_x,
        y0: origin_y,
        stride,
    } = source;
    let window_width = window.x1 - window.x0;
    let need_horizontal = out_width != width;
    let need_vertical = out_height != height;
    let vertical = need_vertical.then(|| coefficients(height, out_height));
    // Source rows the window needs: all the vertical taps of its rows, or its rows themselves.
    let (first_row, last_row) = match &vertical {
        Some(coefficients) => coefficients.span(window.y0, window.y1),
        None => (window.y0, window.y1),
    };
    // Horizontal pass over the needed rows and the window's columns.
    let rows = last_row - first_row;
    let pixel_bytes = if need_horizontal {
        padded(channels)
    } else {
        channels
    };
    let row_len = window_width * pixel_bytes;
    // Both passes write every byte they later read; their buffers are the pool's ([`scratch`]).
    let mut temp = scratch::bytes(rows * row_len);
    if need_horizontal {
        let horizontal = coefficients(width, out_width);
        let source_rows = &data
            [(first_row - origin_y) * stride * channels..(last_row - origin_y) * stride * channels];
        match channels {
            3 => horizontal_pass::<3, 4, { 4 * BLOCK_ROWS }, AVX2>(
                source_rows,
                &mut temp,
                (stride, origin_x),
                &horizontal,
                window,
            ),
            1 => horizontal_pass::<1, 1, BLOCK_ROWS, AVX2>(
                source_rows,
                &mut temp,
                (stride, origin_x),
                &horizontal,
                window,
            ),
            _ => unreachable!("images are decoded to 1 or 3 channels"),
        }
    } else {
        for row in 0..rows {
            let source_start =
                ((first_row - origin_y + row) * stride + window.x0 - origin_x) * channels;
            temp[row * row_len..(row + 1) * row_len]
                .copy_from_slice(&data[source_start..source_start + row_len]);
        }
    }
    let Some(vertical) = vertical else {
        return Resized {
            data: temp,
            pixel_bytes,
        };
    };
    // Vertical pass over the window's rows, a whole row at a time: each tap adds one contiguous
    // source row into the accumulators, which the compiler vectorises. With AVX2, 32 bytes of
    // the row at a time over all the taps, the sums kept in registers; the rest as before.
    let mut out = scratch::bytes((window.y1 - window.y0) * row_len);
    let mut sums = vec![0i32; row_len];
    #[cfg(target_arch = "x86_64")]
    let (split, mut rows) = (
        AVX2.then(|| vertical.split()),
        Vec::with_capacity(vertical.stride),
    );
    for (row, out_row) in (window.y0..window.y1).enumerate() {
        let (start, count) = vertical.bounds[out_row];
        let taps = &vertical.weights[out_row * vertical.stride..out_row * vertical.stride + count];
        let source_row = |tap: usize| {
            let index = start - first_row + tap;
            &temp[index * row_len..(index + 1) * row_len]
        };
        let out = &mut out[row * row_len..(row + 1) * row_len];
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if let Some(split) = &split {
            rows.clear();
            rows.extend((0..count).map(source_row));
            #[allow(unsafe_code)]
            // SAFETY: `split` is only made on the path `resize_window` takes after checking that
            // the CPU has AVX2.
            {
                done = unsafe { avx2::vertical_row_split(&rows, split.of(out_row, count), out) };
            }
        }
        let sums = &mut sums[done..];
        sums.fill(1 << (PRECISION_BITS - 1));
        for (tap, &weight) in taps.iter().enumerate() {
            for (sum, &value) in sums.iter_mut().zip(&source_row(tap)[done..]) {
                *sum += i32::from(value) * weight;
            }
        }
        for (slot, &sum) in out[done..].iter_mut().zip(sums.iter()) {
            *slot = clip8(sum);
        }
    }
    #[cfg(target_arch = "x86_64")]
    drop(rows);
    scratch::give_bytes(temp);
    Resized {
        data: out,
        pixel_bytes,
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(test)]
mod tests;

//! The resize's hot loops in AVX2 intrinsics: the RGB horizontal pass's transposition and sums,
//! and the vertical pass's. The compiler's own code for them was the bottleneck (perf annotate):
//! the transposition moved one 4-byte pixel per iteration of a bounds-checked loop (a third of the
//! resize), the inner loop at 32 lanes came out fully unrolled and spilled to the stack, and the
//! clip to 8 bits stayed scalar. The sums use the split weights (`SplitWeights`) with `pmaddwd`.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_packs_epi32,
    _mm256_packus_epi16, _mm256_permutevar8x32_epi32, _mm256_set1_epi32, _mm256_setr_epi32,
    _mm256_setr_epi8, _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_slli_epi32,
    _mm256_srai_epi32, _mm256_storeu_si256, _mm256_unpackhi_epi8, _mm256_unpacklo_epi8,
};

use super::{SplitWeights, BLOCK_ROWS, PRECISION_BITS};
use crate::handler::avx2::transpose_8x8_epi32;

/// Bytes of one block column: 8 rows of 4-byte pixels.
const LANES: usize = 32;

/// Transposes 8 RGB rows into the block (column `c` at `c × 32`, row `r`'s pixel at `r × 4` in
/// it, padded to 4 bytes), 8 columns at a time, from column `first_column` of each row (rows are
/// `width` pixels apart in `rows`). Stops where a 32-byte load would leave a row, or the block
/// ends, and returns how many columns it did; the caller copies the rest.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn transpose_rgb(
    rows: &[u8],
    width: usize,
    first_column: usize,
    block: &mut [u8],
) -> usize {
    let row_len = width * 3;
    assert!(rows.len() >= BLOCK_ROWS * row_len, "the block's 8 rows");
    let columns = block.len() / LANES;
    // Lane 0 takes bytes 0..16 of the 32 loaded, lane 1 bytes 12..28: pixels 0-3 and 4-7, each
    // at the start of its lane; the shuffle then spreads every lane's 4 pixels to 4 bytes each.
    let spread = _mm256_setr_epi32(0, 1, 2, 3, 3, 4, 5, 6);
    #[rustfmt::skip]
    let pad = _mm256_setr_epi8(
        0, 1, 2, -128, 3, 4, 5, -128, 6, 7, 8, -128, 9, 10, 11, -128,
        0, 1, 2, -128, 3, 4, 5, -128, 6, 7, 8, -128, 9, 10, 11, -128,
    );
    let mut done = 0;
    while done + 8 <= columns && (first_column + done) * 3 + 32 <= row_len {
        let mut pixels = [_mm256_set1_epi32(0); BLOCK_ROWS];
        for (row, slot) in pixels.iter_mut().enumerate() {
            let start = row * row_len + (first_column + done) * 3;
            // SAFETY: start + 32 <= (row + 1) * row_len <= rows.len() (loop condition, assert).
            let bytes = unsafe { _mm256_loadu_si256(rows.as_ptr().add(start).cast::<__m256i>()) };
            *slot = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(bytes, spread), pad);
        }
        // Rows of pixels become columns.
        let columns_out = transpose_8x8_epi32(pixels);
        let target = &mut block[done * LANES..(done + 8) * LANES];
        for (chunk, column) in target.chunks_exact_mut(LANES).zip(columns_out) {
            // SAFETY: each chunk is the 32 bytes the store writes.
            unsafe { _mm256_storeu_si256(chunk.as_mut_ptr().cast::<__m256i>(), column) };
        }
        done += 8;
    }
    done
}

/// The 32 byte lanes of `a` and `b` as the 16-bit pairs `(a[i], b[i])` that `pmaddwd` multiplies
/// by a pair of weights, in four registers of eight pairs: bytes 0-3 and 16-19 in the first,
/// 4-7 and 20-23 in the second, then 8-11 and 24-27, 12-15 and 28-31 (the unpacks work per
/// 128-bit half). [`clip_split`] packs sums in that order back into bytes 0..32.
#[inline(always)]
unsafe fn paired(a: __m256i, b: __m256i) -> [__m256i; 4] {
    let zero = _mm256_setzero_si256();
    let (low, high) = (_mm256_unpacklo_epi8(a, b), _mm256_unpackhi_epi8(a, b));
    [
        _mm256_unpacklo_epi8(low, zero),
        _mm256_unpackhi_epi8(low, zero),
        _mm256_unpacklo_epi8(high, zero),
        _mm256_unpackhi_epi8(high, zero),
    ]
}

/// Adds one pair of taps to the sums: `pairs` (from [`paired`]) by the pair's high and low
/// weight parts.
#[inline(always)]
unsafe fn add_pair(
    sums: &mut ([__m256i; 4], [__m256i; 4]),
    pairs: [__m256i; 4],
    (high, low): (i32, i32),
) {
    let (high, low) = (_mm256_set1_epi32(high), _mm256_set1_epi32(low));
    for (index, pair) in pairs.into_iter().enumerate() {
        sums.0[index] = _mm256_add_epi32(sums.0[index], _mm256_madd_epi16(pair, high));
        sums.1[index] = _mm256_add_epi32(sums.1[index], _mm256_madd_epi16(pair, low));
    }
}

/// Sums of high parts and of low parts (the latter starting at Pillow's rounding half), in
/// [`paired`]'s order: the 32 bytes, `clip8` of `(high << 11) + low` each.
#[inline(always)]
unsafe fn clip_split((high, low): ([__m256i; 4], [__m256i; 4])) -> __m256i {
    const SHIFT: i32 = PRECISION_BITS as i32;
    const LOW_BITS: i32 = SplitWeights::LOW_BITS as i32;
    let sum = |index: usize| {
        let whole = _mm256_add_epi32(_mm256_slli_epi32::<LOW_BITS>(high[index]), low[index]);
        _mm256_srai_epi32::<SHIFT>(whole)
    };
    // The shift leaves -512..=511, which the 16-bit packs keep and the unsigned 8-bit packs
    // clamp to 0..=255 (Pillow's `clip8`). Per 128-bit half they put back the bytes `paired`
    // spread.
    _mm256_packus_epi16(
        _mm256_packs_epi32(sum(0), sum(1)),
        _mm256_packs_epi32(sum(2), sum(3)),
    )
}

/// Fresh sums for [`add_pair`]: zero, and Pillow's rounding half in the low parts.
#[inline(always)]
unsafe fn split_sums() -> ([__m256i; 4], [__m256i; 4]) {
    (
        [_mm256_setzero_si256(); 4],
        [_mm256_set1_epi32(1 << (PRECISION_BITS - 1)); 4],
    )
}

/// One output pixel of each of the block's 8 rows, as a 4-byte word per row: `Σ tap × column`
/// with the weights split for `pmaddwd` (see `SplitWeights`). `high` and `low` hold a pair of
/// taps each, `columns` a 32-byte column per tap.
#[inline(always)]
unsafe fn split_pixels(high: &[i32], low: &[i32], columns: &[u8]) -> __m256i {
    let taps = columns.len() / LANES;
    assert!(
        high.len() == taps.div_ceil(2) && low.len() == high.len(),
        "a pair per two taps"
    );
    let column = |tap: usize| {
        if tap < taps {
            // SAFETY: bytes tap*32 .. tap*32+32 are inside `columns`.
            unsafe { _mm256_loadu_si256(columns.as_ptr().add(tap * LANES).cast::<__m256i>()) }
        } else {
            _mm256_setzero_si256()
        }
    };
    let mut sums = split_sums();
    for (pair, weights) in high.iter().zip(low).enumerate() {
        let pairs = paired(column(2 * pair), column(2 * pair + 1));
        add_pair(&mut sums, pairs, (*weights.0, *weights.1));
    }
    clip_split(sums)
}

/// The horizontal pass over one full block (8 rows, transposed as `transpose_rgb` leaves it, from
/// source column `first_column` on), for output positions `outputs`, 8 at a time: the 8 output
/// pixels of each row are transposed back into a row and written with one store, into `temp`
/// (the block's 8 output rows, `row_len` bytes apart, from `outputs.start`'s pixel). Returns how
/// many positions it did; the caller does the rest, fewer than 8.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn horizontal_block_split(
    split: &SplitWeights,
    bounds: &[(usize, usize)],
    (first_column, outputs): (usize, std::ops::Range<usize>),
    block: &[u8],
    temp: &mut [u8],
    row_len: usize,
) -> usize {
    let positions = outputs.len();
    assert!(
        temp.len() >= (BLOCK_ROWS - 1) * row_len + positions * 4,
        "the block's output rows"
    );
    let mut done = 0;
    while done + 8 <= positions {
        let pixels = std::array::from_fn(|index| {
            let out = outputs.start + done + index;
            let (start, count) = bounds[out];
            let (high, low) = split.of(out, count);
            let columns =
                &block[(start - first_column) * LANES..(start - first_column + count) * LANES];
            // SAFETY: AVX2, as this function's caller guarantees.
            unsafe { split_pixels(high, low, columns) }
        });
        for (row, pixels) in transpose_8x8_epi32(pixels).into_iter().enumerate() {
            let at = row * row_len + done * 4;
            // SAFETY: at + 32 <= 7 * row_len + positions * 4 <= temp.len() (asserted above).
            unsafe { _mm256_storeu_si256(temp.as_mut_ptr().add(at).cast::<__m256i>(), pixels) };
        }
        done += 8;
    }
    done
}

/// One output row of the vertical pass, 32 bytes at a time, from `rows` (the taps' source rows,
/// in order) and the split weights of the row's taps; returns how many bytes it wrote (the
/// caller does the rest, fewer than 32).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
#[inline]
pub unsafe fn vertical_row_split(
    rows: &[&[u8]],
    (high, low): (&[i32], &[i32]),
    out: &mut [u8],
) -> usize {
    assert!(
        high.len() == rows.len().div_ceil(2) && low.len() == high.len(),
        "a pair per two taps"
    );
    assert!(
        rows.iter().all(|row| row.len() >= out.len()),
        "whole source rows"
    );
    let mut done = 0;
    while done + LANES <= out.len() {
        let load = |tap: usize| match rows.get(tap) {
            // SAFETY: done + 32 <= out.len() <= row.len() (loop condition, assert).
            Some(row) => unsafe { _mm256_loadu_si256(row.as_ptr().add(done).cast::<__m256i>()) },
            None => _mm256_setzero_si256(),
        };
        let mut sums = split_sums();
        for (pair, weights) in high.iter().zip(low).enumerate() {
            add_pair(
                &mut sums,
                paired(load(2 * pair), load(2 * pair + 1)),
                (*weights.0, *weights.1),
            );
        }
        // SAFETY: done + 32 <= out.len().
        unsafe {
            _mm256_storeu_si256(
                out.as_mut_ptr().add(done).cast::<__m256i>(),
                clip_split(sums),
            )
        };
        done += LANES;
    }
    done
}

/// [`split_pixels`] as one little-endian word per row: for the output positions that do not
/// make a group of 8 (and blocks of fewer than 8 rows).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn split_words(high: &[i32], low: &[i32], columns: &[u8]) -> [u32; BLOCK_ROWS] {
    let mut words = [0u32; BLOCK_ROWS];
    // SAFETY: `words` is the 32 bytes the store writes.
    unsafe {
        _mm256_storeu_si256(
            words.as_mut_ptr().cast::<__m256i>(),
            split_pixels(high, low, columns),
        )
    };
    words
}

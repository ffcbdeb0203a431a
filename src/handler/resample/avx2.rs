//! The RGB horizontal pass's two hot loops in AVX2 intrinsics. The compiler's own code for them
//! was the bottleneck (perf annotate): the transposition moved one 4-byte pixel per iteration of a
//! bounds-checked loop (a third of the resize), the inner loop at 32 lanes came out fully unrolled
//! and spilled to the stack, and the clip to 8 bits stayed scalar.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_castsi256_si128, _mm256_cvtepu8_epi32,
    _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_mullo_epi32, _mm256_packs_epi32,
    _mm256_packus_epi16, _mm256_permute2x128_si256, _mm256_permutevar8x32_epi32, _mm256_set1_epi32,
    _mm256_setr_epi32, _mm256_setr_epi8, _mm256_shuffle_epi8, _mm256_srai_epi32,
    _mm256_storeu_si256, _mm256_unpackhi_epi32, _mm256_unpackhi_epi64, _mm256_unpacklo_epi32,
    _mm256_unpacklo_epi64, _mm_srli_si128,
};

use super::{BLOCK_ROWS, PRECISION_BITS};

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
        // The classic 8×8 transposition of 32-bit words: rows of pixels become columns.
        let [r0, r1, r2, r3, r4, r5, r6, r7] = pixels;
        let (t0, t1) = (_mm256_unpacklo_epi32(r0, r1), _mm256_unpackhi_epi32(r0, r1));
        let (t2, t3) = (_mm256_unpacklo_epi32(r2, r3), _mm256_unpackhi_epi32(r2, r3));
        let (t4, t5) = (_mm256_unpacklo_epi32(r4, r5), _mm256_unpackhi_epi32(r4, r5));
        let (t6, t7) = (_mm256_unpacklo_epi32(r6, r7), _mm256_unpackhi_epi32(r6, r7));
        let (u0, u1) = (_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2));
        let (u2, u3) = (_mm256_unpacklo_epi64(t1, t3), _mm256_unpackhi_epi64(t1, t3));
        let (u4, u5) = (_mm256_unpacklo_epi64(t4, t6), _mm256_unpackhi_epi64(t4, t6));
        let (u6, u7) = (_mm256_unpacklo_epi64(t5, t7), _mm256_unpackhi_epi64(t5, t7));
        let columns_out = [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ];
        let target = &mut block[done * LANES..(done + 8) * LANES];
        for (chunk, column) in target.chunks_exact_mut(LANES).zip(columns_out) {
            // SAFETY: each chunk is the 32 bytes the store writes.
            unsafe { _mm256_storeu_si256(chunk.as_mut_ptr().cast::<__m256i>(), column) };
        }
        done += 8;
    }
    done
}

/// `Σ tap × column` over the taps for the 32 lanes (8 rows × 4 bytes), plus Pillow's rounding
/// half, clipped to 8 bits: one 4-byte pixel per row, as a little-endian word. Four 8-lane
/// accumulators stay in registers.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
#[inline]
pub unsafe fn weighted_pixels_32(taps: &[i32], columns: &[u8]) -> [u32; BLOCK_ROWS] {
    assert!(columns.len() >= taps.len() * LANES, "a column per tap");
    let mut sums = [_mm256_set1_epi32(1 << (PRECISION_BITS - 1)); 4];
    for (tap, &weight) in taps.iter().enumerate() {
        let weight = _mm256_set1_epi32(weight);
        // SAFETY: bytes tap*32 .. tap*32+32 are inside `columns` (asserted above).
        let bytes =
            unsafe { _mm256_loadu_si256(columns.as_ptr().add(tap * LANES).cast::<__m256i>()) };
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
    // `clip8` on 32 lanes: the shift leaves -512..=511, which the 16-bit pack keeps and the
    // unsigned 8-bit pack clamps to 0..=255. `sums[i]` holds rows 2i and 2i+1; the packs, which
    // work per 128-bit half, leave the rows' words in the order 0 2 4 6 1 3 5 7.
    const SHIFT: i32 = PRECISION_BITS as i32;
    let [s0, s1, s2, s3] = sums;
    let (s0, s1) = (
        _mm256_srai_epi32::<SHIFT>(s0),
        _mm256_srai_epi32::<SHIFT>(s1),
    );
    let (s2, s3) = (
        _mm256_srai_epi32::<SHIFT>(s2),
        _mm256_srai_epi32::<SHIFT>(s3),
    );
    let bytes = _mm256_packus_epi16(_mm256_packs_epi32(s0, s1), _mm256_packs_epi32(s2, s3));
    let ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    let mut words = [0u32; BLOCK_ROWS];
    // SAFETY: `words` is the 32 bytes the store writes.
    unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast::<__m256i>(), ordered) };
    words
}

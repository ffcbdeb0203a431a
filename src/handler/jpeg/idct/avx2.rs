//! The islow IDCT on AVX2 registers: [`super::butterfly`] runs on eight 32-bit lanes, the columns
//! in the first pass and, after a transposition, the rows in the second.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m128i, __m256i, _mm256_add_epi32, _mm256_and_si256, _mm256_castsi256_si128,
    _mm256_cvtepi16_epi32, _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_mullo_epi32,
    _mm256_or_si256, _mm256_packs_epi32, _mm256_packus_epi16, _mm256_set1_epi32, _mm256_set_m128i,
    _mm256_setr_epi16, _mm256_setr_epi8, _mm256_shuffle_epi8, _mm256_slli_epi32, _mm256_srai_epi32,
    _mm256_sub_epi32, _mm256_testz_si256, _mm256_unpackhi_epi32, _mm256_unpackhi_epi64,
    _mm256_unpacklo_epi32, _mm256_unpacklo_epi64, _mm_add_epi32, _mm_castsi128_pd,
    _mm_cvtepi16_epi32, _mm_loadl_epi64, _mm_loadu_si128, _mm_mullo_epi32, _mm_set1_epi32,
    _mm_slli_epi32, _mm_srai_epi32, _mm_storeh_pd, _mm_storel_epi64, _mm_sub_epi32,
};

use super::{butterfly, butterfly4, Lane, CONST_BITS, PASS1_SHIFT, PASS2_SHIFT};
use crate::handler::avx2::transpose_8x8_epi32;

#[derive(Clone, Copy)]
struct V(__m256i);

// SAFETY (every method): only called from `idct`, which has AVX2 enabled; inlined into it.
impl Lane for V {
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        V(unsafe { _mm256_add_epi32(self.0, other.0) })
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        V(unsafe { _mm256_sub_epi32(self.0, other.0) })
    }
    #[inline(always)]
    fn mul(self, constant: i32) -> Self {
        V(unsafe { _mm256_mullo_epi32(self.0, _mm256_set1_epi32(constant)) })
    }
    #[inline(always)]
    fn shl_const(self) -> Self {
        V(unsafe { _mm256_slli_epi32::<{ CONST_BITS as i32 }>(self.0) })
    }
}

/// Four 32-bit lanes: the sparse first pass, over the four columns that hold coefficients.
#[derive(Clone, Copy)]
struct V4(__m128i);

// SAFETY (every method): as for `V`.
impl Lane for V4 {
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        V4(unsafe { _mm_add_epi32(self.0, other.0) })
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        V4(unsafe { _mm_sub_epi32(self.0, other.0) })
    }
    #[inline(always)]
    fn mul(self, constant: i32) -> Self {
        V4(unsafe { _mm_mullo_epi32(self.0, _mm_set1_epi32(constant)) })
    }
    #[inline(always)]
    fn shl_const(self) -> Self {
        V4(unsafe { _mm_slli_epi32::<{ CONST_BITS as i32 }>(self.0) })
    }
}

/// The 8×8 transposition of 32-bit words.
#[inline(always)]
unsafe fn transpose(rows: [V; 8]) -> [V; 8] {
    transpose_8x8_epi32(rows.map(|row| row.0)).map(V)
}

#[inline(always)]
unsafe fn descale<const BITS: i32>(value: V) -> V {
    V(_mm256_srai_epi32::<BITS>(_mm256_add_epi32(
        value.0,
        _mm256_set1_epi32(1 << (BITS - 1)),
    )))
}

/// [`super::scalar`] on AVX2: the same integers for every block a valid file holds (the
/// products wrap at 32 bits where the reference's wrap too).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn idct(block: &[i16; 64], quant: &[i32; 64], out: &mut [u8], stride: usize) {
    assert!(out.len() >= 7 * stride + 8, "room for the 8x8 block");
    // Rows 4-7, and columns 4-7 of rows 0-3, all zero: the sparse passes.
    let load = |at: usize| unsafe { _mm256_loadu_si256(block.as_ptr().add(at).cast()) };
    let bottom = _mm256_or_si256(load(32), load(48));
    let right = _mm256_setr_epi16(0, 0, 0, 0, -1, -1, -1, -1, 0, 0, 0, 0, -1, -1, -1, -1);
    let top_right = _mm256_and_si256(_mm256_or_si256(load(0), load(16)), right);
    let columns = if _mm256_testz_si256(
        _mm256_or_si256(bottom, top_right),
        _mm256_or_si256(bottom, top_right),
    ) == 1
    {
        sparse_columns(block, quant)
    } else {
        dense_columns(block, quant)
    };
    store(columns, out, stride);
}

/// Both passes of a block with coefficients anywhere: the row pass's outputs, one vector per
/// column (lanes are rows).
#[inline(always)]
unsafe fn dense_columns(block: &[i16; 64], quant: &[i32; 64]) -> [V; 8] {
    let rows: [V; 8] = std::array::from_fn(|row| {
        // SAFETY: row * 8 + 8 <= 64 for both arrays.
        unsafe {
            let coefficients =
                _mm256_cvtepi16_epi32(_mm_loadu_si128(block.as_ptr().add(row * 8).cast()));
            let steps = _mm256_loadu_si256(quant.as_ptr().add(row * 8).cast());
            V(_mm256_mullo_epi32(coefficients, steps))
        }
    });
    let workspace =
        butterfly(rows).map(|value| unsafe { descale::<{ PASS1_SHIFT as i32 }>(value) });
    butterfly(transpose(workspace))
}

/// Both passes of a block whose coefficients are all in its top-left 4×4: the first pass over
/// four columns (128-bit lanes), the second with four inputs.
#[inline(always)]
unsafe fn sparse_columns(block: &[i16; 64], quant: &[i32; 64]) -> [V; 8] {
    let rows: [V4; 4] = std::array::from_fn(|row| {
        // SAFETY: row * 8 + 4 <= 64 for both arrays.
        unsafe {
            let coefficients =
                _mm_cvtepi16_epi32(_mm_loadl_epi64(block.as_ptr().add(row * 8).cast()));
            let steps = _mm_loadu_si128(quant.as_ptr().add(row * 8).cast());
            V4(_mm_mullo_epi32(coefficients, steps))
        }
    });
    let workspace = butterfly4(rows).map(|value| {
        // SAFETY: AVX2 (and so SSE2) is enabled in this function's callers.
        unsafe {
            V4(_mm_srai_epi32::<{ PASS1_SHIFT as i32 }>(_mm_add_epi32(
                value.0,
                _mm_set1_epi32(1 << (PASS1_SHIFT - 1)),
            )))
        }
    });
    // Rows r and r + 4 side by side, then a 4×4 transposition in each half: the four columns,
    // all eight rows each.
    let [w0, w1, w2, w3, w4, w5, w6, w7] = workspace.map(|value| value.0);
    let (a, b, c, d) = (
        _mm256_set_m128i(w4, w0),
        _mm256_set_m128i(w5, w1),
        _mm256_set_m128i(w6, w2),
        _mm256_set_m128i(w7, w3),
    );
    let (t0, t1) = (_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
    let (t2, t3) = (_mm256_unpacklo_epi32(c, d), _mm256_unpackhi_epi32(c, d));
    butterfly4([
        V(_mm256_unpacklo_epi64(t0, t2)),
        V(_mm256_unpackhi_epi64(t0, t2)),
        V(_mm256_unpacklo_epi64(t1, t3)),
        V(_mm256_unpackhi_epi64(t1, t3)),
    ])
}

/// Descales the row pass's outputs, range-limits them and writes the 8×8 pixels. The outputs
/// are columns (lanes are rows): they are packed to bytes first and transposed as bytes, which
/// takes 10 shuffles where transposing 32-bit words and then packing took 32.
#[inline(always)]
unsafe fn store(columns: [V; 8], out: &mut [u8], stride: usize) {
    assert!(out.len() >= 7 * stride + 8, "room for the 8x8 block");
    let [c0, c1, c2, c3, c4, c5, c6, c7] = columns.map(|value| {
        let value = descale::<{ PASS2_SHIFT as i32 }>(value).0;
        // libjpeg's range limit: the value modulo 1024 as a signed 10-bit number, plus 128;
        // the packs below clamp it to 0..=255.
        let wrapped = _mm256_srai_epi32::<22>(_mm256_slli_epi32::<22>(value));
        _mm256_add_epi32(wrapped, _mm256_set1_epi32(128))
    });
    // Per 128-bit half (rows 0-3, then rows 4-7): bytes `4 × column + row`, columns 0-3 in the
    // first register and 4-7 in the second.
    let left = _mm256_packus_epi16(_mm256_packs_epi32(c0, c1), _mm256_packs_epi32(c2, c3));
    let right = _mm256_packus_epi16(_mm256_packs_epi32(c4, c5), _mm256_packs_epi32(c6, c7));
    // Each half's 4×4 transposed: bytes `4 × row + column`.
    #[rustfmt::skip]
    let transpose = _mm256_setr_epi8(
        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
    );
    let (left, right) = (
        _mm256_shuffle_epi8(left, transpose),
        _mm256_shuffle_epi8(right, transpose),
    );
    // A row's 4 left bytes, then its 4 right ones: rows 0, 1 | 4, 5 and rows 2, 3 | 6, 7.
    let rows = [
        _mm256_unpacklo_epi32(left, right),
        _mm256_unpackhi_epi32(left, right),
    ];
    for (pair, rows) in rows.into_iter().enumerate() {
        let halves = [
            _mm256_castsi256_si128(rows),
            _mm256_extracti128_si256::<1>(rows),
        ];
        for (half, two_rows) in halves.into_iter().enumerate() {
            let row = half * 4 + pair * 2;
            // SAFETY: rows `row` and `row + 1` (at most 7) are 8 bytes inside `out` (asserted).
            unsafe {
                let at = out.as_mut_ptr().add(row * stride);
                _mm_storel_epi64(at.cast(), two_rows);
                _mm_storeh_pd(at.add(stride).cast(), _mm_castsi128_pd(two_rows));
            }
        }
    }
}

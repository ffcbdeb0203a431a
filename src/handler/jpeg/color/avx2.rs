//! YCbCr → RGB for 16 pixels at a time, with the same integers as the scalar code. libjpeg's
//! factors need 17 bits, so each is split into a multiple of 65536 (applied as a plain add) and
//! a 16-bit rest, and `(a × 65536 + b) >> 16 = a + (b >> 16)` keeps the result exact: the rests
//! and the rounding half go through one `madd` (two 16-bit products summed in 32 bits).
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m128i, __m256i, _mm256_add_epi16, _mm256_add_epi32, _mm256_castsi256_si128,
    _mm256_cvtepu8_epi16, _mm256_extracti128_si256, _mm256_madd_epi16, _mm256_packs_epi32,
    _mm256_packus_epi16, _mm256_permute4x64_epi64, _mm256_set1_epi16, _mm256_set1_epi32,
    _mm256_setr_epi16, _mm256_srai_epi32, _mm256_sub_epi16, _mm256_unpackhi_epi16,
    _mm256_unpacklo_epi16, _mm_loadu_si128, _mm_or_si128, _mm_shuffle_epi8, _mm_storeu_si128,
};

/// `(pairs · factors) >> 16` per pixel, where `pairs` interleaves two 16-lane vectors and the
/// result comes back as 16 lanes in pixel order.
#[inline(always)]
unsafe fn madd_shift(first: __m256i, second: __m256i, factors: __m256i, add: __m256i) -> __m256i {
    let low = _mm256_madd_epi16(_mm256_unpacklo_epi16(first, second), factors);
    let high = _mm256_madd_epi16(_mm256_unpackhi_epi16(first, second), factors);
    _mm256_packs_epi32(
        _mm256_srai_epi32::<16>(_mm256_add_epi32(low, add)),
        _mm256_srai_epi32::<16>(_mm256_add_epi32(high, add)),
    )
}

/// Shuffle masks that place 16 bytes of one channel at every third byte of 48.
const fn interleave_masks() -> [[[i8; 16]; 3]; 3] {
    let mut masks = [[[-128i8; 16]; 3]; 3];
    let mut chunk = 0;
    while chunk < 3 {
        let mut byte = 0;
        while byte < 16 {
            let at = chunk * 16 + byte;
            masks[chunk][at % 3][byte] = (at / 3) as i8;
            byte += 1;
        }
        chunk += 1;
    }
    masks
}

const MASKS: [[[i8; 16]; 3]; 3] = interleave_masks();

/// Converts the first `16 × n` pixels and returns how many it did; the caller does the rest.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn ycc_to_rgb(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) -> usize {
    let pixels = y.len().min(cb.len()).min(cr.len()).min(out.len() / 3);
    let centre = _mm256_set1_epi16(128);
    let zero32 = _mm256_set1_epi32(0);
    let half32 = _mm256_set1_epi32(1 << 15);
    // 1.40200 = 1 + 26345 / 65536; 1.77200 = 2 - 14942 / 65536; the rounding half as 1 × 32768
    // would not fit a 16-bit factor, so it is added after.
    let red_factors = _mm256_setr_epi16(
        26345, 0, 26345, 0, 26345, 0, 26345, 0, 26345, 0, 26345, 0, 26345, 0, 26345, 0,
    );
    let blue_factors = _mm256_setr_epi16(
        -14942, 0, -14942, 0, -14942, 0, -14942, 0, -14942, 0, -14942, 0, -14942, 0, -14942, 0,
    );
    // -0.71414 cr - 0.34414 cb = -cr + (18734 cr - 22554 cb) / 65536.
    let green_factors = _mm256_setr_epi16(
        18734, -22554, 18734, -22554, 18734, -22554, 18734, -22554, 18734, -22554, 18734, -22554,
        18734, -22554, 18734, -22554,
    );
    let masks = MASKS.map(|chunk| chunk.map(|mask| _mm_loadu_si128(mask.as_ptr().cast())));
    let mut done = 0;
    while done + 16 <= pixels {
        let load =
            |row: &[u8]| _mm256_cvtepu8_epi16(_mm_loadu_si128(row.as_ptr().add(done).cast()));
        let (luma, blue_diff, red_diff) = (
            load(y),
            _mm256_sub_epi16(load(cb), centre),
            _mm256_sub_epi16(load(cr), centre),
        );
        let red = _mm256_add_epi16(
            _mm256_add_epi16(luma, red_diff),
            madd_shift(red_diff, zero32, red_factors, half32),
        );
        let blue = _mm256_add_epi16(
            _mm256_add_epi16(luma, _mm256_add_epi16(blue_diff, blue_diff)),
            madd_shift(blue_diff, zero32, blue_factors, half32),
        );
        let green = _mm256_add_epi16(
            _mm256_sub_epi16(luma, red_diff),
            madd_shift(red_diff, blue_diff, green_factors, half32),
        );
        // Saturating packs: the clamp to 0..=255. Each 128-bit half packs 8 of the 16 pixels.
        let red_green = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(red, green));
        let blue_blue = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(blue, blue));
        let channels: [__m128i; 3] = [
            _mm256_castsi256_si128(red_green),
            _mm256_extracti128_si256::<1>(red_green),
            _mm256_castsi256_si128(blue_blue),
        ];
        for (chunk, masks) in masks.iter().enumerate() {
            let bytes = _mm_or_si128(
                _mm_or_si128(
                    _mm_shuffle_epi8(channels[0], masks[0]),
                    _mm_shuffle_epi8(channels[1], masks[1]),
                ),
                _mm_shuffle_epi8(channels[2], masks[2]),
            );
            _mm_storeu_si128(out.as_mut_ptr().add(done * 3 + chunk * 16).cast(), bytes);
        }
        done += 16;
    }
    done
}

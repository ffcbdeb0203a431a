//! From component planes to RGB rows as libjpeg makes them by default: "fancy" (triangle)
//! upsampling of 4:2:2 and 4:2:0 chroma, with its rounding and edge rules, then YCbCr → RGB with
//! its 16-bit fixed-point factors and rounding.

/// libjpeg's `FIX(x)` for 16 fractional bits.
const CR_R: i32 = 91881; // 1.40200
const CB_B: i32 = 116130; // 1.77200
const CR_G: i32 = 46802; // 0.71414
const CB_G: i32 = 22554; // 0.34414
const HALF: i32 = 1 << 15;

/// YCbCr → RGB for one row of pixels; `out` holds 3 bytes per pixel.
pub fn ycc_to_rgb(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 (checked above).
        {
            done = unsafe { avx2::ycc_to_rgb(y, cb, cr, out) };
        }
    }
    ycc_to_rgb_scalar(
        &y[done.min(y.len())..],
        &cb[done.min(cb.len())..],
        &cr[done.min(cr.len())..],
        &mut out[done * 3..],
    );
}

/// The reference for [`avx2::ycc_to_rgb`].
fn ycc_to_rgb_scalar(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    for (((pixel, &y), &cb), &cr) in out.chunks_exact_mut(3).zip(y).zip(cb).zip(cr) {
        let (y, cb, cr) = (i32::from(y), i32::from(cb) - 128, i32::from(cr) - 128);
        let red = y + ((CR_R * cr + HALF) >> 16);
        let green = y + ((-CR_G * cr - CB_G * cb + HALF) >> 16);
        let blue = y + ((CB_B * cb + HALF) >> 16);
        pixel[0] = red.clamp(0, 255) as u8;
        pixel[1] = green.clamp(0, 255) as u8;
        pixel[2] = blue.clamp(0, 255) as u8;
    }
}

/// Horizontal fancy upsampling (libjpeg's `h2v1_fancy_upsample`) of a chroma row of `samples`
/// real values, for output columns `start..start + out.len()`.
pub fn h2v1(row: &[u8], samples: usize, start: usize, out: &mut [u8]) {
    for (index, slot) in out.iter_mut().enumerate() {
        let x = start + index;
        let c = x / 2;
        let this = u32::from(row[c]) * 3;
        *slot = if x.is_multiple_of(2) {
            if c == 0 {
                row[0]
            } else {
                ((this + u32::from(row[c - 1]) + 1) >> 2) as u8
            }
        } else if c + 1 >= samples {
            row[c]
        } else {
            ((this + u32::from(row[c + 1]) + 2) >> 2) as u8
        };
    }
}

/// Horizontal and vertical fancy upsampling (libjpeg's `h2v2_fancy_upsample`) for one output
/// row: `near` is the chroma row it lies in, `far` the neighbouring one on its side (the same
/// row at the image's edges), both of `samples` real values.
pub fn h2v2(near: &[u8], far: &[u8], samples: usize, start: usize, out: &mut [u8]) {
    let sum = |c: usize| u32::from(near[c]) * 3 + u32::from(far[c]);
    for (index, slot) in out.iter_mut().enumerate() {
        let x = start + index;
        let c = x / 2;
        let this = sum(c);
        *slot = if x.is_multiple_of(2) {
            if c == 0 {
                ((this * 4 + 8) >> 4) as u8
            } else {
                ((this * 3 + sum(c - 1) + 8) >> 4) as u8
            }
        } else if c + 1 >= samples {
            ((this * 4 + 7) >> 4) as u8
        } else {
            ((this * 3 + sum(c + 1) + 7) >> 4) as u8
        };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(test)]
mod tests {
    /// Every (cb, cr) pair over a few lumas, on both paths.
    #[test]
    fn vector_conversion_equals_scalar() {
        for luma in [0u8, 1, 17, 128, 200, 254, 255] {
            let cb: Vec<u8> = (0..=255u8)
                .flat_map(|cb| std::iter::repeat_n(cb, 256))
                .collect();
            let cr: Vec<u8> = (0..256 * 256).map(|index| (index % 256) as u8).collect();
            let y = vec![luma; cb.len()];
            let mut fast = vec![0u8; cb.len() * 3];
            let mut reference = fast.clone();
            super::ycc_to_rgb(&y, &cb, &cr, &mut fast);
            super::ycc_to_rgb_scalar(&y, &cb, &cr, &mut reference);
            assert!(fast == reference, "luma {luma}");
        }
    }
}

//! Dequantisation and the inverse DCT of one block, with libjpeg's "islow" arithmetic (its
//! default, and what Pillow decodes with): 13-bit fixed-point constants, two fractional bits
//! between the column and the row pass, and its range limiting (the result is taken modulo 1024,
//! as a signed 10-bit value, then clamped to 0..=255). Same integers, so the same pixels.
//!
//! The AVX2 version does both passes on eight 32-bit lanes (columns, then rows after a
//! transposition) and is chosen at run time; the scalar one is the reference it is tested
//! against. A block with only its DC coefficient is a flat square either way.

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;

const FIX_0_298631336: i32 = 2446;
const FIX_0_390180644: i32 = 3196;
const FIX_0_541196100: i32 = 4433;
const FIX_0_765366865: i32 = 6270;
const FIX_0_899976223: i32 = 7373;
const FIX_1_175875602: i32 = 9633;
const FIX_1_501321110: i32 = 12299;
const FIX_1_847759065: i32 = 15137;
const FIX_1_961570560: i32 = 16069;
const FIX_2_053119869: i32 = 16819;
const FIX_2_562915447: i32 = 20995;
const FIX_3_072711026: i32 = 25172;

/// libjpeg's `range_limit[x & RANGE_MASK]` after adding the centre sample.
#[inline(always)]
fn range_limit(value: i32) -> u8 {
    let wrapped = value.wrapping_shl(22) >> 22;
    (wrapped + 128).clamp(0, 255) as u8
}

/// What a pass computes with: one `i32` (wrapping, for the scalar reference: a hostile file
/// gives garbage, not a panic) or eight (an AVX2 register).
pub trait Lane: Copy {
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    fn mul(self, constant: i32) -> Self;
    fn shl_const(self) -> Self;
}

impl Lane for i32 {
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        self.wrapping_sub(other)
    }
    #[inline(always)]
    fn mul(self, constant: i32) -> Self {
        self.wrapping_mul(constant)
    }
    #[inline(always)]
    fn shl_const(self) -> Self {
        self.wrapping_shl(CONST_BITS)
    }
}

/// One 1-D pass over 8 inputs (jidctint's even and odd parts), before descaling.
#[inline(always)]
pub fn butterfly<T: Lane>(x: [T; 8]) -> [T; 8] {
    let z1 = x[2].add(x[6]).mul(FIX_0_541196100);
    let tmp2 = z1.add(x[6].mul(-FIX_1_847759065));
    let tmp3 = z1.add(x[2].mul(FIX_0_765366865));
    let tmp0 = x[0].add(x[4]).shl_const();
    let tmp1 = x[0].sub(x[4]).shl_const();
    let (tmp10, tmp13) = (tmp0.add(tmp3), tmp0.sub(tmp3));
    let (tmp11, tmp12) = (tmp1.add(tmp2), tmp1.sub(tmp2));
    let (o0, o1, o2, o3) = (x[7], x[5], x[3], x[1]);
    let z1 = o0.add(o3);
    let z2 = o1.add(o2);
    let z3 = o0.add(o2);
    let z4 = o1.add(o3);
    let z5 = z3.add(z4).mul(FIX_1_175875602);
    let z1 = z1.mul(-FIX_0_899976223);
    let z2 = z2.mul(-FIX_2_562915447);
    let z3 = z3.mul(-FIX_1_961570560).add(z5);
    let z4 = z4.mul(-FIX_0_390180644).add(z5);
    let o0 = o0.mul(FIX_0_298631336).add(z1).add(z3);
    let o1 = o1.mul(FIX_2_053119869).add(z2).add(z4);
    let o2 = o2.mul(FIX_3_072711026).add(z2).add(z3);
    let o3 = o3.mul(FIX_1_501321110).add(z1).add(z4);
    outputs([tmp10, tmp11, tmp12, tmp13], [o0, o1, o2, o3])
}

/// [`butterfly`] of `[x0, x1, x2, x3, 0, 0, 0, 0]`, with the products of the zeros left out:
/// the same integers (the terms dropped are zero; the rest is regrouped exactly, in wrapping
/// arithmetic too). Most blocks of a photo have no coefficient outside their top-left 4×4.
#[inline(always)]
pub fn butterfly4<T: Lane>(x: [T; 4]) -> [T; 8] {
    let tmp2 = x[2].mul(FIX_0_541196100);
    let tmp3 = x[2].mul(FIX_0_541196100 + FIX_0_765366865);
    let tmp0 = x[0].shl_const();
    let (tmp10, tmp13) = (tmp0.add(tmp3), tmp0.sub(tmp3));
    let (tmp11, tmp12) = (tmp0.add(tmp2), tmp0.sub(tmp2));
    let (o2, o3) = (x[3], x[1]);
    let z5 = o2.add(o3).mul(FIX_1_175875602);
    let z1 = o3.mul(-FIX_0_899976223);
    let z2 = o2.mul(-FIX_2_562915447);
    let z3 = o2.mul(-FIX_1_961570560).add(z5);
    let z4 = o3.mul(-FIX_0_390180644).add(z5);
    let o0 = z1.add(z3);
    let o1 = z2.add(z4);
    let o2 = o2.mul(FIX_3_072711026).add(z2).add(z3);
    let o3 = o3.mul(FIX_1_501321110).add(z1).add(z4);
    outputs([tmp10, tmp11, tmp12, tmp13], [o0, o1, o2, o3])
}

/// jidctint's final butterfly: the even part's sums `tmp10..tmp13` with the odd part's `o0..o3`.
#[inline(always)]
fn outputs<T: Lane>([tmp10, tmp11, tmp12, tmp13]: [T; 4], [o0, o1, o2, o3]: [T; 4]) -> [T; 8] {
    [
        tmp10.add(o3),
        tmp11.add(o2),
        tmp12.add(o1),
        tmp13.add(o0),
        tmp13.sub(o0),
        tmp12.sub(o1),
        tmp11.sub(o2),
        tmp10.sub(o3),
    ]
}

/// Fractional bits dropped after the column pass, with rounding.
pub const PASS1_SHIFT: u32 = CONST_BITS - PASS1_BITS;
/// Fractional bits dropped after the row pass (the extra 3: the 2-D DCT's scale of 8).
pub const PASS2_SHIFT: u32 = CONST_BITS + PASS1_BITS + 3;

#[inline(always)]
fn descale(value: i32, bits: u32) -> i32 {
    value.wrapping_add(1 << (bits - 1)) >> bits
}

/// The reference: `block` in natural order, `quant` its dequantisation table, the 8×8 result
/// written to `out` rows `stride` bytes apart.
pub fn scalar(block: &[i16; 64], quant: &[i32; 64], out: &mut [u8], stride: usize) {
    let mut workspace = [0i32; 64];
    for column in 0..8 {
        let input: [i32; 8] = std::array::from_fn(|row| {
            i32::from(block[row * 8 + column]).wrapping_mul(quant[row * 8 + column])
        });
        for (row, value) in butterfly(input).into_iter().enumerate() {
            workspace[row * 8 + column] = descale(value, PASS1_SHIFT);
        }
    }
    for row in 0..8 {
        let input: [i32; 8] = std::array::from_fn(|column| workspace[row * 8 + column]);
        for (column, value) in butterfly(input).into_iter().enumerate() {
            out[row * stride + column] = range_limit(descale(value, PASS2_SHIFT));
        }
    }
}

/// A block with only a DC coefficient: every pixel is the same (what both passes give then).
#[inline(always)]
pub fn flat(dc: i16, quant0: i32, out: &mut [u8], stride: usize) {
    let value = i32::from(dc).wrapping_mul(quant0).wrapping_shl(PASS1_BITS);
    let pixel = range_limit(descale(value, PASS1_BITS + 3));
    for row in 0..8 {
        out[row * stride..row * stride + 8].fill(pixel);
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sparse_butterfly_is_the_full_one_with_zeros() {
        let mut state = 0x1234_5678_9abc_def1u64;
        for _ in 0..100_000 {
            let x: [i32; 4] = std::array::from_fn(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Small values like real blocks', and any value (wrapping) now and then.
                if state.is_multiple_of(8) {
                    state as i32
                } else {
                    (state % 8192) as i32 - 4096
                }
            });
            let full = butterfly([x[0], x[1], x[2], x[3], 0, 0, 0, 0]);
            assert_eq!(butterfly4(x), full, "{x:?}");
        }
    }
}

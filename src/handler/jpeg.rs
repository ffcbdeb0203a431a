//! A baseline JPEG decoder that gives libjpeg-turbo's exact pixels (what Pillow, and so
//! TorchServe, decodes), and only the pixels the pre-processing will read.
//!
//! Why not the general decoder: its IDCT rounds differently from libjpeg's (one 8-bit level on
//! ~1 % of the values), and it decodes the whole image when `Resize(256) + CenterCrop(224)` of
//! a photo reads ~77 % of it. Here the blocks outside the needed region are entropy-decoded
//! (the bit stream has to be walked) but not transformed, and decoding stops after the last
//! needed row of blocks.
//!
//! What it takes: 8-bit sequential Huffman JPEGs, grey or YCbCr (4:4:4, 4:2:2, 4:2:0), one
//! interleaved scan, restart markers or not: what cameras, phones and Pillow write. Anything else
//! (progressive, arithmetic, CMYK, Adobe RGB, odd sampling) and any corrupt scan is left to the
//! general decoder ([`Fallback`]).

pub mod coefficients;
mod color;
mod entropy;
mod header;
mod idct;
#[cfg(test)]
mod tests;

use super::scratch;
pub use coefficients::{Coefficients, Part, Split};
use entropy::{Corrupt, HuffmanTable};
use header::{Header, Unsupported};

/// A rectangle of the image, in pixels: columns `x0..x1`, rows `y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x0: usize,
    pub x1: usize,
    pub y0: usize,
    pub y1: usize,
}

/// Why this decoder did not decode a file: the general decoder should.
#[derive(Debug)]
pub enum Fallback {
    Unsupported(&'static str),
    Corrupt,
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fallback::Unsupported(what) => write!(formatter, "not decoded here: {what}"),
            Fallback::Corrupt => write!(formatter, "corrupt scan"),
        }
    }
}

impl From<Unsupported> for Fallback {
    fn from(reason: Unsupported) -> Fallback {
        Fallback::Unsupported(reason.0)
    }
}

impl From<Corrupt> for Fallback {
    fn from(_: Corrupt) -> Fallback {
        Fallback::Corrupt
    }
}

/// The image's width, height and component count, from its header.
pub fn dimensions(bytes: &[u8]) -> Result<(usize, usize, usize), Fallback> {
    let header = header::parse(bytes)?;
    Ok((header.width, header.height, header.components.len()))
}

/// Decoded pixels of `region` of a `width × height` image, interleaved (3 bytes for YCbCr
/// files, 1 for grey), row after row.
pub struct Decoded {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub region: Region,
    pub data: Vec<u8>,
}

/// One component's samples for the blocks the region needs, from block column `bx0` and block
/// row `by0` on.
struct Plane {
    data: Vec<u8>,
    stride: usize,
    bx0: usize,
    bx1: usize,
    by0: usize,
    by1: usize,
    /// Real (not padding) samples across and down (libjpeg's `downsampled_width/height`).
    samples_x: usize,
    samples_y: usize,
}

impl Drop for Plane {
    fn drop(&mut self) {
        scratch::give_bytes(std::mem::take(&mut self.data));
    }
}

impl Plane {
    fn row(&self, y: usize) -> &[u8] {
        let start = (y - self.by0 * 8) * self.stride;
        &self.data[start..start + self.stride]
    }

    /// The row `y` from column `x` on (both in the component's samples).
    fn row_from(&self, y: usize, x: usize) -> &[u8] {
        &self.row(y)[x - self.bx0 * 8..]
    }
}

/// The slot of a block in an MCU: its component and its position in that component's blocks.
#[derive(Debug, Clone, Copy)]
struct Slot {
    component: usize,
}

/// The MCU structure of the scan.
struct Layout {
    mcus_x: usize,
    mcus_y: usize,
    /// The blocks of one MCU, in scan order.
    slots: Vec<Slot>,
    /// Each component's first slot.
    first_slot: Vec<usize>,
}

/// A JPEG the fast decoder takes, parsed and with its scan unstuffed.
pub struct Jpeg {
    header: Header,
    scan: entropy::Scan,
    layout: Layout,
    /// Each component's dequantisation steps.
    steps: Vec<[i32; 64]>,
}

impl Jpeg {
    pub fn open(bytes: &[u8]) -> Result<Jpeg, Fallback> {
        let header = header::parse(bytes)?;
        let scan = entropy::unstuff(&bytes[header.scan_start..]);
        let (max_h, max_v) = (header.max_h(), header.max_v());
        let mut slots = Vec::new();
        let mut first_slot = Vec::new();
        for (component, info) in header.components.iter().enumerate() {
            first_slot.push(slots.len());
            slots.extend(std::iter::repeat_n(Slot { component }, info.h * info.v));
        }
        let layout = Layout {
            mcus_x: header.width.div_ceil(8 * max_h),
            mcus_y: header.height.div_ceil(8 * max_v),
            slots,
            first_slot,
        };
        let steps = header
            .components
            .iter()
            .map(|component| header.quant[component.quant].map(i32::from))
            .collect();
        Ok(Jpeg {
            header,
            scan,
            layout,
            steps,
        })
    }

    pub fn width(&self) -> usize {
        self.header.width
    }

    pub fn height(&self) -> usize {
        self.header.height
    }

    pub fn channels(&self) -> usize {
        self.header.components.len()
    }

    fn tables(&self, component: usize) -> (&HuffmanTable, &HuffmanTable) {
        let info = &self.header.components[component];
        match (
            &self.header.dc_tables[info.dc_table],
            &self.header.ac_tables[info.ac_table],
        ) {
            (Some(dc), Some(ac)) => (dc, ac),
            // `header::parse` refuses scans whose tables are missing.
            _ => unreachable!("a component without its Huffman tables"),
        }
    }

    /// `region` clamped to the image.
    pub fn clamp(&self, region: Region) -> Region {
        let (width, height) = (self.header.width, self.header.height);
        Region {
            x0: region.x0.min(width),
            x1: region.x1.min(width),
            y0: region.y0.min(height),
            y1: region.y1.min(height),
        }
    }

    /// Blocks of the scan, from the start, that hold every block `region` needs.
    pub fn needed_blocks(&self, region: Region) -> usize {
        let planes = plan(&self.header, self.clamp(region));
        let mcu_rows = self
            .header
            .components
            .iter()
            .zip(&planes)
            .map(|(component, plane)| plane.by1.div_ceil(component.v))
            .max()
            .unwrap_or(0);
        mcu_rows * self.layout.mcus_x * self.layout.slots.len()
    }

    /// The scan's length in bits, scaled to `blocks` of its blocks.
    pub fn bits_for(&self, blocks: usize) -> usize {
        let total = self.layout.mcus_x * self.layout.mcus_y * self.layout.slots.len();
        let bits = (self.scan.intervals[self.scan.intervals.len() - 1]) * 8;
        (bits as u128 * blocks as u128 / total.max(1) as u128) as usize
    }

    /// Transforms and converts `region` (clamped to the image) from decoded coefficients.
    pub fn render(
        &self,
        coefficients: &Coefficients<'_>,
        region: Region,
    ) -> Result<Decoded, Fallback> {
        let header = &self.header;
        let region = self.clamp(region);
        let channels = header.components.len();
        let columns = region.x1.saturating_sub(region.x0);
        // Every byte is written below.
        let mut data = scratch::bytes(columns * region.y1.saturating_sub(region.y0) * channels);
        if !data.is_empty() {
            let mut planes = plan(header, region);
            self.transform(coefficients, &mut planes)?;
            convert(header, &planes, region, &mut data);
        }
        Ok(Decoded {
            width: header.width,
            height: header.height,
            channels,
            region,
            data,
        })
    }

    /// The inverse DCT of every block inside the planes, a row of MCUs at a time: the row's
    /// coefficients (tens of KB, interleaved by component) are read from memory once and stay in
    /// cache for the other components' blocks (component by component over the whole image, the
    /// chroma passes read megabytes again from further away). Blocks are also prefetched a
    /// little ahead: with both, the loads of the blocks went from a quarter of the transform's
    /// perf samples to under a twentieth.
    fn transform(
        &self,
        coefficients: &Coefficients<'_>,
        planes: &mut [Plane],
    ) -> Result<(), Fallback> {
        let avx2 = has_avx2();
        let components = &self.header.components;
        let mcu_rows = |(component, plane): (&header::Component, &Plane)| {
            (plane.by0 / component.v, plane.by1.div_ceil(component.v))
        };
        let pairs = || components.iter().zip(planes.iter());
        let first = pairs().map(mcu_rows).map(|rows| rows.0).min().unwrap_or(0);
        let last = pairs().map(mcu_rows).map(|rows| rows.1).max().unwrap_or(0);
        for mcu_row in first..last {
            for (index, plane) in planes.iter_mut().enumerate() {
                let v = components[index].v;
                for by in (mcu_row * v).max(plane.by0)..((mcu_row + 1) * v).min(plane.by1) {
                    self.transform_row(coefficients, (index, plane), by, avx2)?;
                }
            }
        }
        Ok(())
    }

    /// The inverse DCT of block row `by` of component `index`'s plane.
    fn transform_row(
        &self,
        coefficients: &Coefficients<'_>,
        (index, plane): (usize, &mut Plane),
        by: usize,
        avx2: bool,
    ) -> Result<(), Fallback> {
        let component = &self.header.components[index];
        let steps = &self.steps[index];
        let per_mcu = self.layout.slots.len();
        let mcus_x = self.layout.mcus_x;
        let (mcu_y, v) = (by / component.v, by % component.v);
        // Stepped, not divided for each block (a division costs more than the rest here).
        let (mut mcu_x, mut h) = (plane.bx0 / component.h, plane.bx0 % component.h);
        for bx in plane.bx0..plane.bx1 {
            let slot = self.layout.first_slot[index] + v * component.h + h;
            let at = (mcu_y * mcus_x + mcu_x) * per_mcu + slot;
            coefficients.prefetch(at + PREFETCH_MCUS * per_mcu);
            let (block, last, dc_offset) = coefficients.block(at, slot).ok_or(Fallback::Corrupt)?;
            let start = (by - plane.by0) * 8 * plane.stride + (bx - plane.bx0) * 8;
            let out = &mut plane.data[start..];
            if dc_offset == 0 {
                transform(block, usize::from(last), steps, out, plane.stride, avx2);
            } else {
                let mut shifted = *block;
                shifted[0] = shifted[0].wrapping_add(dc_offset);
                transform(&shifted, usize::from(last), steps, out, plane.stride, avx2);
            }
            h += 1;
            if h == component.h {
                (mcu_x, h) = (mcu_x + 1, 0);
            }
        }
        Ok(())
    }
}

/// Decodes `region` (clamped to the image) of a JPEG on this thread.
pub fn decode(bytes: &[u8], region: Region) -> Result<Decoded, Fallback> {
    let jpeg = Jpeg::open(bytes)?;
    let part = coefficients::serial(&jpeg, jpeg.needed_blocks(region))?;
    jpeg.render(&coefficients::whole(&part), region)
}

/// The blocks of each component that `region` needs: its own, plus one sample around for
/// subsampled chroma (fancy upsampling reads each neighbour).
fn plan(header: &Header, region: Region) -> Vec<Plane> {
    let (max_h, max_v) = (header.max_h(), header.max_v());
    let (mcus_x, mcus_y) = (
        header.width.div_ceil(8 * max_h),
        header.height.div_ceil(8 * max_v),
    );
    header
        .components
        .iter()
        .map(|component| {
            let (h, v) = (component.h, component.v);
            let span = |low: usize, high: usize, factor: usize, max: usize, blocks: usize| {
                if low >= high {
                    return (0, 0);
                }
                let margin = usize::from(factor < max);
                let first = (low * factor / max).saturating_sub(margin) / 8;
                let last = ((high * factor).div_ceil(max) + margin).div_ceil(8);
                (first.min(blocks), last.min(blocks))
            };
            let (bx0, bx1) = span(region.x0, region.x1, h, max_h, mcus_x * h);
            let (by0, by1) = span(region.y0, region.y1, v, max_v, mcus_y * v);
            let stride = (bx1 - bx0) * 8;
            Plane {
                // Every block of the plane is transformed into it.
                data: scratch::bytes(stride * (by1 - by0) * 8),
                stride,
                bx0,
                bx1,
                by0,
                by1,
                samples_x: (header.width * h).div_ceil(max_h),
                samples_y: (header.height * v).div_ceil(max_v),
            }
        })
        .collect()
}

/// How far ahead of the transform its blocks are prefetched, in MCUs along the row.
const PREFETCH_MCUS: usize = 2;

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[inline(always)]
fn transform(
    coefficients: &[i16; 64],
    last: usize,
    steps: &[i32; 64],
    out: &mut [u8],
    stride: usize,
    avx2: bool,
) {
    if last == 0 {
        return idct::flat(coefficients[0], steps[0], out, stride);
    }
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        #[allow(unsafe_code)]
        // SAFETY: `avx2` is only true on CPUs that have it (`has_avx2`).
        unsafe {
            idct::avx2::idct(coefficients, steps, out, stride)
        };
        return;
    }
    let _ = avx2;
    idct::scalar(coefficients, steps, out, stride);
}

/// Planes → interleaved pixels of the region.
#[inline(never)]
fn convert(header: &Header, planes: &[Plane], region: Region, data: &mut [u8]) {
    let columns = region.x1 - region.x0;
    if planes.len() == 1 {
        let plane = &planes[0];
        for (y, out) in (region.y0..region.y1).zip(data.chunks_exact_mut(columns)) {
            out.copy_from_slice(&plane.row_from(y, region.x0)[..columns]);
        }
        return;
    }
    let (luma, cb, cr) = (&planes[0], &planes[1], &planes[2]);
    let (max_h, max_v) = (header.max_h(), header.max_v());
    let mut chroma = [vec![0u8; columns], vec![0u8; columns]];
    for (y, out) in (region.y0..region.y1).zip(data.chunks_exact_mut(columns * 3)) {
        let luma_row = luma.row_from(y, region.x0);
        match (max_h, max_v) {
            (1, 1) => ycc_row(
                luma_row,
                cb.row_from(y, region.x0),
                cr.row_from(y, region.x0),
                out,
            ),
            (2, 1) => {
                for (plane, target) in [cb, cr].into_iter().zip(chroma.iter_mut()) {
                    let start = plane.bx0 * 8;
                    color::h2v1(
                        plane.row(y),
                        plane.samples_x - start,
                        region.x0 - 2 * start,
                        target,
                    );
                }
                ycc_row(luma_row, &chroma[0], &chroma[1], out);
            }
            _ => {
                for (plane, target) in [cb, cr].into_iter().zip(chroma.iter_mut()) {
                    let near = y / 2;
                    let far = if y % 2 == 0 {
                        near.saturating_sub(1)
                    } else {
                        (near + 1).min(plane.samples_y - 1)
                    };
                    let start = plane.bx0 * 8;
                    color::h2v2(
                        plane.row(near),
                        plane.row(far),
                        plane.samples_x - start,
                        region.x0 - 2 * start,
                        target,
                    );
                }
                ycc_row(luma_row, &chroma[0], &chroma[1], out);
            }
        }
    }
}

fn ycc_row(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    color::ycc_to_rgb(y, cb, cr, out);
}

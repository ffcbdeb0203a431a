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

mod color;
mod entropy;
mod header;
mod idct;
#[cfg(test)]
mod tests;

use entropy::{BitReader, Corrupt, HuffmanTable};
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

/// Decodes `region` (clamped to the image) of a JPEG.
pub fn decode(bytes: &[u8], region: Region) -> Result<Decoded, Fallback> {
    let header = header::parse(bytes)?;
    let (width, height) = (header.width, header.height);
    let region = Region {
        x0: region.x0.min(width),
        x1: region.x1.min(width),
        y0: region.y0.min(height),
        y1: region.y1.min(height),
    };
    let channels = header.components.len();
    let mut data = vec![0u8; region.x1.saturating_sub(region.x0) * region.y1.saturating_sub(region.y0) * channels];
    if data.is_empty() {
        return Ok(Decoded {
            width,
            height,
            channels,
            region,
            data,
        });
    }
    let mut planes = plan(&header, region);
    let scan = entropy::unstuff(&bytes[header.scan_start..]);
    decode_scan(&header, &scan, &mut planes)?;
    convert(&header, &planes, region, &mut data);
    Ok(Decoded {
        width,
        height,
        channels,
        region,
        data,
    })
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
                let margin = usize::from(factor < max);
                let first = (low * factor / max).saturating_sub(margin) / 8;
                let last = ((high * factor).div_ceil(max) + margin).div_ceil(8);
                (first.min(blocks), last.min(blocks))
            };
            let (bx0, bx1) = span(region.x0, region.x1, h, max_h, mcus_x * h);
            let (by0, by1) = span(region.y0, region.y1, v, max_v, mcus_y * v);
            let stride = (bx1 - bx0) * 8;
            Plane {
                data: vec![0u8; stride * (by1 - by0) * 8],
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

/// Dequantisation steps as the IDCT multiplies by them.
fn steps(table: &[u16; 64]) -> [i32; 64] {
    table.map(i32::from)
}

/// Walks the scan up to the last MCU row any plane needs, transforming the blocks inside the
/// planes.
#[inline(never)]
fn decode_scan(
    header: &Header,
    scan: &entropy::Scan,
    planes: &mut [Plane],
) -> Result<(), Fallback> {
    let mcus_x = header.width.div_ceil(8 * header.max_h());
    let last_row = header
        .components
        .iter()
        .zip(planes.iter())
        .map(|(component, plane)| plane.by1.div_ceil(component.v))
        .max()
        .unwrap_or(0);
    let mut tables: Vec<(&HuffmanTable, &HuffmanTable, [i32; 64])> = Vec::new();
    for component in &header.components {
        // `parse` checked that every table a component names exists.
        let dc = header.dc_tables[component.dc_table].as_ref().ok_or(Corrupt)?;
        let ac = header.ac_tables[component.ac_table].as_ref().ok_or(Corrupt)?;
        tables.push((dc, ac, steps(&header.quant[component.quant])));
    }
    let avx2 = has_avx2();
    let mut predictions = [0i32; 3];
    let mut interval = 0;
    let mut reader = BitReader::new(&scan.data, scan.intervals[0]);
    let mut coefficients = [0i16; 64];
    let mut mcu = 0;
    for mcu_y in 0..last_row {
        for mcu_x in 0..mcus_x {
            if header.restart_interval > 0 && mcu > 0 && mcu % header.restart_interval == 0 {
                // The interval must end where its bytes do, and the last entry of `intervals`
                // is the scan's end, not an interval's start.
                if reader.bit_position() > scan.intervals[interval + 1] * 8
                    || interval + 2 >= scan.intervals.len()
                {
                    return Err(Fallback::Corrupt);
                }
                interval += 1;
                reader = BitReader::new(&scan.data, scan.intervals[interval]);
                predictions = [0; 3];
            }
            mcu += 1;
            for (index, component) in header.components.iter().enumerate() {
                let (dc, ac, steps) = &tables[index];
                let plane = &mut planes[index];
                for v in 0..component.v {
                    for h in 0..component.h {
                        let last = reader.block(
                            dc,
                            ac,
                            &mut predictions[index],
                            &mut coefficients,
                        )?;
                        let (bx, by) = (mcu_x * component.h + h, mcu_y * component.v + v);
                        if (plane.bx0..plane.bx1).contains(&bx)
                            && (plane.by0..plane.by1).contains(&by)
                        {
                            let start =
                                (by - plane.by0) * 8 * plane.stride + (bx - plane.bx0) * 8;
                            let out = &mut plane.data[start..];
                            transform(&coefficients, last, steps, out, plane.stride, avx2);
                        }
                        coefficients = [0; 64];
                    }
                }
            }
        }
    }
    if reader.bit_position() > (scan.intervals[interval + 1]) * 8 {
        // Read past the end of the interval's bytes: the file lacks data libjpeg would have
        // padded with zeros, with a warning.
        return Err(Fallback::Corrupt);
    }
    Ok(())
}

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
            (1, 1) => ycc_row(luma_row, cb.row_from(y, region.x0), cr.row_from(y, region.x0), out),
            (2, 1) => {
                for (plane, target) in [cb, cr].into_iter().zip(chroma.iter_mut()) {
                    let start = plane.bx0 * 8;
                    color::h2v1(plane.row(y), plane.samples_x - start, region.x0 - 2 * start, target);
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

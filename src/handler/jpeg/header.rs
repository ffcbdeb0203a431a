//! The markers before the scan: the frame (size, components, sampling), quantisation and Huffman
//! tables, the restart interval and the one scan's components. Only what the fast path decodes is
//! accepted ([`Unsupported`] for the rest, which goes to the general decoder): 8-bit sequential
//! Huffman frames (SOF0/SOF1) of 1 or 3 components in one interleaved scan, as YCbCr or grey,
//! with 4:4:4, 4:2:2 or 4:2:0 chroma.

use super::entropy::HuffmanTable;

/// Why the fast path leaves a JPEG to the general decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub &'static str);

/// One colour component of the frame.
#[derive(Debug, Clone, Copy)]
pub struct Component {
    pub id: u8,
    /// Horizontal and vertical sampling factors.
    pub h: usize,
    pub v: usize,
    /// Quantisation table slot.
    pub quant: usize,
    /// Huffman table slots (DC, AC) from the scan header.
    pub dc_table: usize,
    pub ac_table: usize,
}

/// Everything needed to decode the scan.
#[derive(Debug, Clone)]
pub struct Header {
    pub width: usize,
    pub height: usize,
    /// In scan order, which for the accepted layouts is also the frame's order.
    pub components: Vec<Component>,
    /// Quantisation tables in natural (row-major) order.
    pub quant: [[u16; 64]; 4],
    pub dc_tables: [Option<HuffmanTable>; 4],
    pub ac_tables: [Option<HuffmanTable>; 4],
    /// MCUs between restart markers (0: none).
    pub restart_interval: usize,
    /// Offset of the first entropy-coded byte.
    pub scan_start: usize,
}

impl Header {
    pub fn max_h(&self) -> usize {
        self.components.iter().map(|c| c.h).max().unwrap_or(1)
    }

    pub fn max_v(&self) -> usize {
        self.components.iter().map(|c| c.v).max().unwrap_or(1)
    }
}

/// The zigzag order: `ZIGZAG[k]` is the natural index of the k-th coefficient in the stream.
/// Padded with 63s, as libjpeg's `jpeg_natural_order` is, so that a corrupt run past the end
/// lands on the last coefficient instead of out of bounds, and far enough for the entropy
/// decoder's end-of-block run (see `entropy`).
pub const ZIGZAG: [u8; 64 + 96 + 16] = zigzag();

const fn zigzag() -> [u8; 64 + 96 + 16] {
    const ORDER: [u8; 64] = [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
        20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
        58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    ];
    let mut table = [63u8; 64 + 96 + 16];
    let mut index = 0;
    while index < 64 {
        table[index] = ORDER[index];
        index += 1;
    }
    table
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, Unsupported> {
        let value = *self
            .bytes
            .get(self.at)
            .ok_or(Unsupported("truncated header"))?;
        self.at += 1;
        Ok(value)
    }

    fn u16(&mut self) -> Result<u16, Unsupported> {
        Ok(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }

    fn take(&mut self, len: usize) -> Result<&[u8], Unsupported> {
        let end = self
            .at
            .checked_add(len)
            .ok_or(Unsupported("truncated header"))?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(Unsupported("truncated header"))?;
        self.at = end;
        Ok(slice)
    }
}

/// Reads the markers up to the start of the scan.
pub fn parse(bytes: &[u8]) -> Result<Header, Unsupported> {
    let mut reader = Reader { bytes, at: 0 };
    if reader.u16()? != 0xFFD8 {
        return Err(Unsupported("not a JPEG"));
    }
    let mut frame: Option<(usize, usize, Vec<Component>)> = None;
    let mut header = Header {
        width: 0,
        height: 0,
        components: Vec::new(),
        quant: [[0; 64]; 4],
        dc_tables: [None, None, None, None],
        ac_tables: [None, None, None, None],
        restart_interval: 0,
        scan_start: 0,
    };
    let mut seen_quant = [false; 4];
    loop {
        let mut marker = reader.u8()?;
        if marker != 0xFF {
            return Err(Unsupported("garbage between markers"));
        }
        while marker == 0xFF {
            marker = reader.u8()?;
        }
        let length = usize::from(reader.u16()?)
            .checked_sub(2)
            .ok_or(Unsupported("bad marker length"))?;
        let segment = reader.take(length)?;
        match marker {
            0xC0 | 0xC1 => frame = Some(parse_frame(segment)?),
            0xC2..=0xCF if marker != 0xC4 && marker != 0xC8 && marker != 0xCC => {
                return Err(Unsupported("progressive, lossless or arithmetic-coded"))
            }
            0xC4 => parse_huffman(segment, &mut header)?,
            0xDB => parse_quant(segment, &mut header.quant, &mut seen_quant)?,
            0xDD => {
                let value = segment.get(..2).ok_or(Unsupported("bad DRI"))?;
                header.restart_interval = usize::from(u16::from_be_bytes([value[0], value[1]]));
            }
            // Adobe's marker may say the components are RGB or CMYK, not YCbCr.
            0xEE if segment.starts_with(b"Adobe") => {
                return Err(Unsupported("Adobe colour transform"))
            }
            0xDA => {
                let (width, height, mut components) =
                    frame.take().ok_or(Unsupported("scan before frame"))?;
                parse_scan(segment, &mut components)?;
                for component in &components {
                    if !seen_quant[component.quant] {
                        return Err(Unsupported("missing quantisation table"));
                    }
                    if header.dc_tables[component.dc_table].is_none()
                        || header.ac_tables[component.ac_table].is_none()
                    {
                        return Err(Unsupported("missing Huffman table"));
                    }
                }
                header.width = width;
                header.height = height;
                header.components = components;
                header.scan_start = reader.at;
                return Ok(header);
            }
            0xD9 => return Err(Unsupported("no scan")),
            _ => {}
        }
    }
}

fn parse_frame(segment: &[u8]) -> Result<(usize, usize, Vec<Component>), Unsupported> {
    let mut reader = Reader {
        bytes: segment,
        at: 0,
    };
    if reader.u8()? != 8 {
        return Err(Unsupported("not 8-bit"));
    }
    let height = usize::from(reader.u16()?);
    let width = usize::from(reader.u16()?);
    if width == 0 || height == 0 {
        return Err(Unsupported("height from DNL"));
    }
    let count = usize::from(reader.u8()?);
    let mut components = Vec::with_capacity(count);
    for _ in 0..count {
        let id = reader.u8()?;
        let sampling = reader.u8()?;
        let quant = usize::from(reader.u8()?);
        if quant > 3 {
            return Err(Unsupported("bad quantisation slot"));
        }
        components.push(Component {
            id,
            h: usize::from(sampling >> 4),
            v: usize::from(sampling & 15),
            quant,
            dc_table: 0,
            ac_table: 0,
        });
    }
    match components.as_slice() {
        [_] => {
            // One component is one block per MCU whatever its factors say.
            components[0].h = 1;
            components[0].v = 1;
        }
        [luma, cb, cr] => {
            if (cb.h, cb.v, cr.h, cr.v) != (1, 1, 1, 1)
                || !matches!((luma.h, luma.v), (1, 1) | (2, 1) | (2, 2))
            {
                return Err(Unsupported(
                    "chroma sampling other than 4:4:4, 4:2:2, 4:2:0",
                ));
            }
            // libjpeg reads these component ids as RGB, not YCbCr.
            if [luma.id, cb.id, cr.id] == [b'R', b'G', b'B'] {
                return Err(Unsupported("RGB components"));
            }
        }
        _ => return Err(Unsupported("neither grey nor YCbCr")),
    }
    Ok((width, height, components))
}

fn parse_scan(segment: &[u8], components: &mut [Component]) -> Result<(), Unsupported> {
    let mut reader = Reader {
        bytes: segment,
        at: 0,
    };
    let count = usize::from(reader.u8()?);
    if count != components.len() {
        return Err(Unsupported("more than one scan"));
    }
    for component in components.iter_mut() {
        // The accepted layouts list the scan's components in the frame's order.
        if reader.u8()? != component.id {
            return Err(Unsupported("scan order differs from the frame's"));
        }
        let tables = reader.u8()?;
        component.dc_table = usize::from(tables >> 4);
        component.ac_table = usize::from(tables & 15);
        if component.dc_table > 3 || component.ac_table > 3 {
            return Err(Unsupported("bad Huffman slot"));
        }
    }
    let (start, end, approximation) = (reader.u8()?, reader.u8()?, reader.u8()?);
    if (start, end, approximation) != (0, 63, 0) {
        return Err(Unsupported("not a sequential scan"));
    }
    Ok(())
}

fn parse_quant(
    segment: &[u8],
    quant: &mut [[u16; 64]; 4],
    seen: &mut [bool; 4],
) -> Result<(), Unsupported> {
    let mut reader = Reader {
        bytes: segment,
        at: 0,
    };
    while reader.at < segment.len() {
        let info = reader.u8()?;
        let slot = usize::from(info & 15);
        if slot > 3 {
            return Err(Unsupported("bad quantisation slot"));
        }
        for &natural in &ZIGZAG[..64] {
            quant[slot][usize::from(natural)] = if info >> 4 == 0 {
                u16::from(reader.u8()?)
            } else {
                reader.u16()?
            };
        }
        seen[slot] = true;
    }
    Ok(())
}

fn parse_huffman(segment: &[u8], header: &mut Header) -> Result<(), Unsupported> {
    let mut reader = Reader {
        bytes: segment,
        at: 0,
    };
    while reader.at < segment.len() {
        let info = reader.u8()?;
        let (class, slot) = (info >> 4, usize::from(info & 15));
        if class > 1 || slot > 3 {
            return Err(Unsupported("bad Huffman slot"));
        }
        let mut counts = [0u8; 16];
        counts.copy_from_slice(reader.take(16)?);
        let total: usize = counts.iter().map(|&count| usize::from(count)).sum();
        let symbols = reader.take(total)?;
        let table = HuffmanTable::new(&counts, symbols, class == 0)
            .ok_or(Unsupported("bad Huffman table"))?;
        if class == 0 {
            header.dc_tables[slot] = Some(table);
        } else {
            header.ac_tables[slot] = Some(table);
        }
    }
    Ok(())
}

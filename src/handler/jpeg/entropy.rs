//! The entropy-coded scan: byte unstuffing, a bit reader and baseline Huffman decoding of one
//! 8×8 block, with libjpeg's semantics (the DC prediction per component, runs past the last
//! coefficient landing on it, sizes up to 15 bits).
//!
//! Speed: the scan is first copied without its stuffed zero bytes and split at its restart
//! markers, so that the bit reader refills with one unaligned big-endian load and no marker
//! checks; codes of up to [`FAST_BITS`] bits are one table lookup, and for AC codes whose value
//! bits fit in the same lookahead the lookup gives run, value and length at once.

use super::header::ZIGZAG;

/// Lookahead bits of the lookup tables.
const FAST_BITS: u32 = 9;

/// The run an end of block takes: past any coefficient index, so that `k` tells after the loop
/// that the block ended there (`k - END_RUN - 1` is then the index before the end).
const END_RUN: u32 = 96;

/// A Huffman table with its lookup tables.
#[derive(Debug, Clone)]
pub struct HuffmanTable {
    /// By the next `FAST_BITS` bits: `length << 8 | symbol`, or 0 for longer codes.
    lookup: [u16; 1 << FAST_BITS],
    /// AC tables only, by the next `FAST_BITS` bits: `value << 16 | run << 8 | bits used` for a
    /// code plus its value bits that fit in the lookahead (0 otherwise). The end of block is a
    /// run of [`END_RUN`] (out of the block) and sixteen zeros a run of 15 then a zero: both
    /// store a zero where no coefficient has been written yet, so one path takes them all.
    fast_ac: [i32; 1 << FAST_BITS],
    /// The largest code of each length (index 1..=16), -1 where there is none.
    max_code: [i32; 18],
    /// Added to a code of each length to index `symbols`.
    offset: [i32; 17],
    symbols: Vec<u8>,
}

impl HuffmanTable {
    /// Builds the canonical codes of a DHT table; `None` when the counts overflow the code space.
    pub fn new(counts: &[u8; 16], symbols: &[u8], dc: bool) -> Option<HuffmanTable> {
        let mut lookup = [0u16; 1 << FAST_BITS];
        let mut max_code = [-1i32; 18];
        let mut offset = [0i32; 17];
        let mut code: i32 = 0;
        let mut index: i32 = 0;
        let mut codes = Vec::with_capacity(symbols.len());
        for length in 1..=16u32 {
            let count = i32::from(counts[length as usize - 1]);
            offset[length as usize] = index - code;
            for _ in 0..count {
                codes.push((code, length));
                code += 1;
            }
            index += count;
            if count > 0 {
                max_code[length as usize] = code - 1;
            }
            if code > 1 << length {
                return None;
            }
            code <<= 1;
        }
        max_code[17] = i32::MAX;
        for (&(code, length), &symbol) in codes.iter().zip(symbols) {
            if length <= FAST_BITS {
                let shift = FAST_BITS - length;
                let first = (code as usize) << shift;
                for slot in &mut lookup[first..first + (1 << shift)] {
                    *slot = (length as u16) << 8 | u16::from(symbol);
                }
            }
        }
        let mut fast_ac = [0i32; 1 << FAST_BITS];
        if !dc {
            for (peek, slot) in fast_ac.iter_mut().enumerate() {
                let entry = lookup[peek];
                if entry == 0 {
                    continue;
                }
                let length = u32::from(entry >> 8);
                let (run, size) = (u32::from(entry & 0xFF) >> 4, u32::from(entry & 15));
                *slot = match (run, size) {
                    (0, 0) => (END_RUN << 8 | length) as i32,
                    (15, 0) => (15 << 8 | length) as i32,
                    (_, 0) => continue,
                    _ if length + size > FAST_BITS => continue,
                    _ => {
                        let raw =
                            ((peek as u32) >> (FAST_BITS - length - size)) & ((1 << size) - 1);
                        extend(raw, size) << 16 | (run << 8 | (length + size)) as i32
                    }
                };
            }
        }
        Some(HuffmanTable {
            lookup,
            fast_ac,
            max_code,
            offset,
            symbols: symbols.to_vec(),
        })
    }
}

/// JPEG's sign extension of a `size`-bit value.
#[inline(always)]
fn extend(raw: u32, size: u32) -> i32 {
    let raw = raw as i32;
    if raw < 1 << (size - 1) {
        raw - (1 << size) + 1
    } else {
        raw
    }
}

/// The scan without stuffing: one slice per restart interval, zero-padded at the end.
pub struct Scan {
    pub data: Vec<u8>,
    /// Start of each restart interval in `data`, plus the end of the last one.
    pub intervals: Vec<usize>,
}

/// Bytes of zeros after the scan: the bit reader loads 8 at a time.
const PADDING: usize = 16;

/// Copies the entropy-coded bytes from `bytes` (the first byte after the SOS header) up to the
/// marker that ends the scan, dropping the stuffed zeros and splitting at restart markers.
pub fn unstuff(bytes: &[u8]) -> Scan {
    let mut data = Vec::with_capacity(bytes.len() + PADDING);
    let mut intervals = vec![0];
    let mut at = 0;
    while let Some(found) = memchr::memchr(0xFF, &bytes[at..]) {
        data.extend_from_slice(&bytes[at..at + found]);
        at += found;
        // Fill bytes (extra 0xFF) may precede a marker.
        let mut next = at + 1;
        while bytes.get(next) == Some(&0xFF) {
            next += 1;
        }
        match bytes.get(next) {
            Some(0x00) => {
                data.push(0xFF);
                at = next + 1;
            }
            Some(0xD0..=0xD7) => {
                intervals.push(data.len());
                at = next + 1;
            }
            _ => break,
        }
    }
    if memchr::memchr(0xFF, &bytes[at..]).is_none() {
        // No marker ended the scan: the caller's truncation check refuses such files first.
        data.extend_from_slice(&bytes[at..]);
    }
    intervals.push(data.len());
    data.resize(data.len() + PADDING, 0);
    Scan { data, intervals }
}

/// The entropy decoder ran into data a valid scan does not have.
#[derive(Debug)]
pub struct Corrupt;

/// MSB-first bit reader over unstuffed bytes.
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Bytes loaded into `bits`.
    position: usize,
    /// Valid bits, left-aligned; the bits below them are zero.
    bits: u64,
    count: u32,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8], start: usize) -> BitReader<'a> {
        let mut reader = BitReader {
            data,
            position: start,
            bits: 0,
            count: 0,
        };
        reader.refill();
        reader
    }

    /// Bits consumed since the start of `data`.
    pub fn bit_position(&self) -> usize {
        self.position * 8 - self.count as usize
    }

    /// Tops the buffer up to at least 56 bits with one load. The partial byte a load brings
    /// below them is ORed in again by the next load, harmlessly: the same bits.
    #[inline(always)]
    fn refill(&mut self) {
        if let Some(word) = self.data.get(self.position..self.position + 8) {
            let word = u64::from_be_bytes(word.try_into().unwrap_or([0; 8]));
            self.bits |= word >> self.count;
            let loaded = (63 - self.count) >> 3;
            self.position += loaded as usize;
            self.count += loaded * 8;
        } else {
            // Past the padding: only a corrupt scan reads this far; zeros from here on.
            self.count = 63;
        }
    }

    #[inline(always)]
    fn consume(&mut self, bits: u32) {
        self.bits <<= bits;
        self.count -= bits;
    }

    #[inline(always)]
    fn take(&mut self, bits: u32) -> u32 {
        let value = (self.bits >> (64 - bits)) as u32;
        self.consume(bits);
        value
    }

    #[inline(always)]
    fn symbol(&mut self, table: &HuffmanTable) -> Result<u8, Corrupt> {
        let entry = table.lookup[(self.bits >> (64 - FAST_BITS)) as usize];
        if entry != 0 {
            self.consume(u32::from(entry >> 8));
            return Ok(entry as u8);
        }
        let code16 = (self.bits >> 48) as i32;
        for length in FAST_BITS + 1..=16 {
            let code = code16 >> (16 - length);
            if code <= table.max_code[length as usize] {
                self.consume(length);
                let index = code + table.offset[length as usize];
                return table.symbols.get(index as usize).copied().ok_or(Corrupt);
            }
        }
        Err(Corrupt)
    }

    /// Decodes one block into `block` (natural order, zeroed by the caller) and returns an
    /// index at or past its highest nonzero zigzag index (0: only the DC coefficient).
    #[inline(always)]
    pub fn block(
        &mut self,
        dc: &HuffmanTable,
        ac: &HuffmanTable,
        prediction: &mut i32,
        block: &mut [i16; 64],
    ) -> Result<usize, Corrupt> {
        if self.count < 32 {
            self.refill();
        }
        let size = u32::from(self.symbol(dc)?);
        if size > 15 {
            return Err(Corrupt);
        }
        if size > 0 {
            let raw = self.take(size);
            *prediction = prediction.wrapping_add(extend(raw, size));
        }
        block[0] = *prediction as i16;
        let mut k = 1;
        while k < 64 {
            if self.count < 32 {
                self.refill();
            }
            let fast = ac.fast_ac[(self.bits >> (64 - FAST_BITS)) as usize];
            let (run, value) = if fast != 0 {
                self.consume((fast & 0xFF) as u32);
                (((fast >> 8) & 0xFF) as usize, (fast >> 16) as i16)
            } else {
                let symbol = self.symbol(ac)?;
                let (run, size) = (usize::from(symbol >> 4), u32::from(symbol & 15));
                match (run, size) {
                    (15, 0) => (15, 0),
                    // libjpeg ends the block on any other run without a value.
                    (_, 0) => (END_RUN as usize, 0),
                    _ => (run, extend(self.take(size), size) as i16),
                }
            };
            k += run;
            block[usize::from(ZIGZAG[k])] = value;
            k += 1;
        }
        Ok(if k > END_RUN as usize {
            k - END_RUN as usize - 2
        } else {
            63
        })
    }
}

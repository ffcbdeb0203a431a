//! A DEFLATE decoder (RFC 1951) for the small streams of request-sized PNGs, written from the
//! RFC. Why not the general one: a digit's 460-byte stream takes the general decoder longer to
//! set up (its tables are built for megabytes: 4,096-entry lookups, filled for every dynamic
//! block) than to decode. Here a code's table has 512 entries (9 bits), codes longer than that
//! are decoded canonically, bit by bit, and the output is written into one buffer of the size
//! the PNG header promises, never more.

/// The stream is not valid DEFLATE, or does not give exactly the bytes expected.
#[derive(Debug, PartialEq, Eq)]
pub struct Corrupt;

/// Bits a table looks up at once; longer codes take the canonical path.
const FAST_BITS: u32 = 9;
const FAST_SIZE: usize = 1 << FAST_BITS;
const MAX_BITS: usize = 15;

/// Lengths 257..=285: base and extra bits (RFC 1951 §3.2.5).
const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Distances 0..=29.
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order in which a dynamic block sends its code-length code's lengths.
const CODE_LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Inflates a whole DEFLATE stream, which must produce exactly `expected` bytes.
pub fn inflate(stream: &[u8], expected: usize) -> Result<Vec<u8>, Corrupt> {
    let mut bits = Bits::new(stream);
    let mut out = Vec::with_capacity(expected);
    loop {
        let last = bits.take(1)? == 1;
        match bits.take(2)? {
            0 => stored(&mut bits, &mut out, expected)?,
            1 => {
                let (literals, distances) = fixed_codes();
                codes(&mut bits, &mut out, expected, &literals, &distances)?;
            }
            2 => {
                let (literals, distances) = dynamic_codes(&mut bits)?;
                codes(&mut bits, &mut out, expected, &literals, &distances)?;
            }
            _ => return Err(Corrupt),
        }
        if last {
            break;
        }
    }
    if out.len() != expected {
        return Err(Corrupt);
    }
    Ok(out)
}

/// The stream's bits, least significant first. Past the end it reads zeros, and counts them:
/// any zero it actually consumed makes the stream [`Corrupt`].
struct Bits<'a> {
    data: &'a [u8],
    next: usize,
    buffer: u64,
    count: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            next: 0,
            buffer: 0,
            count: 0,
        }
    }

    /// At least 32 bits in the buffer (zeros past the end).
    #[inline(always)]
    fn refill(&mut self) {
        while self.count <= 56 {
            let byte = self.data.get(self.next).copied().unwrap_or(0);
            self.buffer |= u64::from(byte) << self.count;
            self.next += 1;
            self.count += 8;
        }
    }

    /// Whether more bits were consumed than the stream has.
    #[inline(always)]
    fn overrun(&self) -> bool {
        self.next * 8 - self.count as usize > self.data.len() * 8
    }

    #[inline(always)]
    fn peek(&mut self, count: u32) -> u32 {
        if self.count < count {
            self.refill();
        }
        (self.buffer & ((1u64 << count) - 1)) as u32
    }

    #[inline(always)]
    fn drop_bits(&mut self, count: u32) {
        self.buffer >>= count;
        self.count -= count;
    }

    #[inline(always)]
    fn take(&mut self, count: u32) -> Result<u32, Corrupt> {
        let value = self.peek(count);
        self.drop_bits(count);
        if self.overrun() {
            return Err(Corrupt);
        }
        Ok(value)
    }

    /// [`take`](Self::take) without the overrun check, for the hot loop (see `codes`).
    #[inline(always)]
    fn unchecked(&mut self, count: u8) -> u32 {
        let value = self.peek(u32::from(count));
        self.drop_bits(u32::from(count));
        value
    }

    /// Drops the bits up to the next byte boundary (before a stored block).
    fn align(&mut self) {
        let partial = self.count % 8;
        self.drop_bits(partial);
    }
}

/// A canonical Huffman code: a lookup of up to 9 bits for the short codes, and the counts and
/// sorted symbols for decoding the long ones (RFC 1951 §3.2.2).
struct Code {
    /// `symbol << 4 | length`, indexed by the next `bits` bits; 0 where no short code matches.
    fast: [u16; FAST_SIZE],
    /// The lookup's width: the longest code, at most [`FAST_BITS`] (a distance code's few
    /// symbols fill a few dozen entries, not 512).
    bits: u32,
    /// Codes of each length.
    counts: [u16; MAX_BITS + 1],
    /// Symbols in code order (the first `counts` sum of them).
    symbols: [u16; 288],
}

impl Code {
    /// From each symbol's code length (0: unused). Over-subscribed lengths are corrupt;
    /// incomplete ones are allowed (a code that is never matched fails when it is met).
    fn new(lengths: &[u8]) -> Result<Code, Corrupt> {
        let mut counts = [0u16; MAX_BITS + 1];
        for &length in lengths {
            counts[usize::from(length)] += 1;
        }
        counts[0] = 0;
        let mut left: i32 = 1;
        for &count in &counts[1..] {
            left = left * 2 - i32::from(count);
            if left < 0 {
                return Err(Corrupt);
            }
        }
        let mut offsets = [0u16; MAX_BITS + 2];
        for length in 1..=MAX_BITS {
            offsets[length + 1] = offsets[length] + counts[length];
        }
        let mut symbols = [0u16; 288];
        let mut fast = [0u16; FAST_SIZE];
        let longest = (1..=MAX_BITS).rev().find(|&length| counts[length] > 0);
        let bits = longest.map_or(1, |length| (length as u32).min(FAST_BITS));
        let size = 1usize << bits;
        // The first code of each length, then the next to give (RFC 1951's `next_code`).
        let mut next_code = [0u32; MAX_BITS + 1];
        let mut code = 0u32;
        for length in 1..=MAX_BITS {
            code = (code + u32::from(counts[length - 1])) << 1;
            next_code[length] = code;
        }
        for (symbol, &length) in lengths.iter().enumerate() {
            let length = usize::from(length);
            if length == 0 {
                continue;
            }
            symbols[usize::from(offsets[length])] = symbol as u16;
            offsets[length] += 1;
            if length as u32 <= FAST_BITS {
                // Codes are sent most significant bit first; the reader sees them reversed.
                let reversed = reverse(next_code[length], length as u32) as usize;
                let entry = (symbol as u16) << 4 | length as u16;
                let mut index = reversed;
                while index < size {
                    fast[index] = entry;
                    index += 1 << length;
                }
            }
            next_code[length] += 1;
        }
        Ok(Code {
            fast,
            bits,
            counts,
            symbols,
        })
    }

    #[inline(always)]
    fn decode(&self, bits: &mut Bits<'_>) -> Result<u16, Corrupt> {
        let entry = self.fast[bits.peek(self.bits) as usize];
        if entry != 0 {
            bits.drop_bits(u32::from(entry & 15));
            return Ok(entry >> 4);
        }
        self.decode_slowly(bits)
    }

    /// Bit by bit: at each length, the codes of that length are the `count` after `first`.
    fn decode_slowly(&self, bits: &mut Bits<'_>) -> Result<u16, Corrupt> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for length in 1..=MAX_BITS {
            code |= bits.take(1)? as i32;
            let count = i32::from(self.counts[length]);
            if code - first < count {
                return Ok(self.symbols[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err(Corrupt)
    }
}

fn reverse(code: u32, length: u32) -> u32 {
    code.reverse_bits() >> (32 - length)
}

/// A stored block: its bytes as they are.
fn stored(bits: &mut Bits<'_>, out: &mut Vec<u8>, expected: usize) -> Result<(), Corrupt> {
    bits.align();
    let length = bits.take(16)? as usize;
    let complement = bits.take(16)? as usize;
    if length != !complement & 0xFFFF || out.len() + length > expected {
        return Err(Corrupt);
    }
    for _ in 0..length {
        out.push(bits.take(8)? as u8);
    }
    Ok(())
}

/// The fixed codes of RFC 1951 §3.2.6.
fn fixed_codes() -> (Code, Code) {
    let mut lengths = [0u8; 288];
    lengths[..144].fill(8);
    lengths[144..256].fill(9);
    lengths[256..280].fill(7);
    lengths[280..].fill(8);
    // Neither set of lengths is over-subscribed.
    let literals = Code::new(&lengths).unwrap_or_else(|_| unreachable!("fixed lengths"));
    let distances = Code::new(&[5; 30]).unwrap_or_else(|_| unreachable!("fixed lengths"));
    (literals, distances)
}

/// A dynamic block's codes, sent with a code of their own (RFC 1951 §3.2.7).
fn dynamic_codes(bits: &mut Bits<'_>) -> Result<(Code, Code), Corrupt> {
    let literal_count = bits.take(5)? as usize + 257;
    let distance_count = bits.take(5)? as usize + 1;
    let length_count = bits.take(4)? as usize + 4;
    if literal_count > 286 || distance_count > 30 {
        return Err(Corrupt);
    }
    let mut length_lengths = [0u8; 19];
    for &symbol in &CODE_LENGTH_ORDER[..length_count] {
        length_lengths[symbol] = bits.take(3)? as u8;
    }
    let length_code = Code::new(&length_lengths)?;
    let mut lengths = [0u8; 286 + 30];
    let total = literal_count + distance_count;
    let mut filled = 0;
    while filled < total {
        let symbol = length_code.decode(bits)?;
        let (value, repeat) = match symbol {
            0..=15 => (symbol as u8, 1),
            16 => {
                let previous = *lengths[..filled].last().ok_or(Corrupt)?;
                (previous, 3 + bits.take(2)? as usize)
            }
            17 => (0, 3 + bits.take(3)? as usize),
            18 => (0, 11 + bits.take(7)? as usize),
            _ => return Err(Corrupt),
        };
        if filled + repeat > total {
            return Err(Corrupt);
        }
        lengths[filled..filled + repeat].fill(value);
        filled += repeat;
    }
    if bits.overrun() || lengths[256] == 0 {
        // Without a code for the end of the block, the block cannot end.
        return Err(Corrupt);
    }
    let literals = Code::new(&lengths[..literal_count])?;
    let distances = Code::new(&lengths[literal_count..total])?;
    Ok((literals, distances))
}

/// A Huffman-coded block: literals and back-references until the end-of-block symbol.
fn codes(
    bits: &mut Bits<'_>,
    out: &mut Vec<u8>,
    expected: usize,
    literals: &Code,
    distances: &Code,
) -> Result<(), Corrupt> {
    loop {
        // No overrun check per symbol: every symbol but the last adds bytes, and the output is
        // bounded, so reading zeros past the end ends in an error; the block's end checks.
        let symbol = literals.decode(bits)?;
        match symbol {
            0..=255 => {
                if out.len() == expected {
                    return Err(Corrupt);
                }
                out.push(symbol as u8);
            }
            256 => return if bits.overrun() { Err(Corrupt) } else { Ok(()) },
            257..=285 => {
                let index = usize::from(symbol - 257);
                let length =
                    usize::from(LENGTH_BASE[index]) + bits.unchecked(LENGTH_EXTRA[index]) as usize;
                let code = usize::from(distances.decode(bits)?);
                if code >= DISTANCE_BASE.len() {
                    return Err(Corrupt);
                }
                let distance = usize::from(DISTANCE_BASE[code])
                    + bits.unchecked(DISTANCE_EXTRA[code]) as usize;
                if distance > out.len() || out.len() + length > expected {
                    return Err(Corrupt);
                }
                let from = out.len() - distance;
                if distance >= length {
                    out.extend_from_within(from..from + length);
                } else {
                    // The copy overlaps what it writes: byte by byte (a run, when distance is 1).
                    for offset in 0..length {
                        let byte = out[from + offset];
                        out.push(byte);
                    }
                }
            }
            _ => return Err(Corrupt),
        }
    }
}

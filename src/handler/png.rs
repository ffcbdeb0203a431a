//! A PNG decoder for what request bodies usually are: small, 8-bit, non-interlaced grey, grey +
//! alpha, RGB or RGBA images (the digits CNN's 28×28 grey PNGs). Why: for such a file the
//! general decoder's set-up (the header parsed twice, a 4,096-entry inflate table per block,
//! a `DynamicImage` and its conversion) was ~12 µs of the digits CNN's ~45 µs of worker time per
//! request outside ONNX Runtime. Here the header is read once, the stream is inflated by
//! [`inflate`] straight into one buffer, unfiltered in place and converted as PIL converts.
//!
//! Anything else — palettes, 16 bits, interlacing, transparency chunks, a large stream, a bad
//! CRC or Adler-32, any corrupt byte — is left to the general decoder ([`Unsupported`]), which
//! decodes it or refuses it as before.

mod inflate;
#[cfg(test)]
mod tests;

use oxserve_archiver::handler_config::ColorMode;

use super::image::Pixels;

/// This decoder does not take the file: the general decoder should.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsupported;

const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
/// Streams above this go to the general decoder, whose tables pay off on long streams.
const LARGEST_STREAM: usize = 256 << 10;

/// The header fields this decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    /// 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) bytes a pixel; 0 for a colour type or bit
    /// depth this decoder does not take.
    channels: usize,
    interlaced: bool,
}

/// The width and height from a PNG's first chunk, when it is a well-formed `IHDR`.
pub fn header(bytes: &[u8]) -> Option<Header> {
    let rest = bytes.strip_prefix(SIGNATURE)?;
    let (kind, data, _) = chunk(rest).ok()?;
    if kind != *b"IHDR" || data.len() != 13 {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    let (width, height) = (word(0), word(4));
    if width == 0 || height == 0 || width > i32::MAX as u32 || height > i32::MAX as u32 {
        return None;
    }
    let (depth, colour, compression, filter, interlace) =
        (data[8], data[9], data[10], data[11], data[12]);
    if compression != 0 || filter != 0 || interlace > 1 {
        return None;
    }
    let channels = match (depth, colour) {
        (8, 0) => 1,
        (8, 4) => 2,
        (8, 2) => 3,
        (8, 6) => 4,
        _ => 0,
    };
    Some(Header {
        width,
        height,
        channels,
        interlaced: interlace == 1,
    })
}

/// Decodes a PNG in this decoder's reach into pixels of `color` mode.
pub fn decode(bytes: &[u8], color: ColorMode) -> Result<Pixels, Unsupported> {
    let header = header(bytes).ok_or(Unsupported)?;
    if header.channels == 0 || header.interlaced {
        return Err(Unsupported);
    }
    let (_, _, after_header) = chunk(&bytes[SIGNATURE.len()..])?;
    let stream = image_stream(after_header)?;
    let (width, height) = (header.width as usize, header.height as usize);
    let row = width.checked_mul(header.channels).ok_or(Unsupported)?;
    let expected = height.checked_mul(row + 1).ok_or(Unsupported)?;
    // DEFLATE cannot expand more than ~1,032 times: a header promising more is a lie, and its
    // buffer is not allocated.
    if expected > stream.len().saturating_mul(1032).saturating_add(64) {
        return Err(Unsupported);
    }
    let mut raw = zlib(&stream, expected)?;
    unfilter(&mut raw, row, header.channels)?;
    Ok(convert(&raw, header, color))
}

/// A chunk's type, its data and the bytes after it.
type Chunk<'a> = ([u8; 4], &'a [u8], &'a [u8]);

/// One chunk at the start of `bytes`, CRC checked.
fn chunk(bytes: &[u8]) -> Result<Chunk<'_>, Unsupported> {
    let length = bytes.get(..4).ok_or(Unsupported)?;
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    let end = length.checked_add(12).ok_or(Unsupported)?;
    let whole = bytes.get(..end).ok_or(Unsupported)?;
    let (typed, crc) = whole.split_at(length + 8);
    if crc32fast::hash(&typed[4..]).to_be_bytes() != crc {
        return Err(Unsupported);
    }
    let kind = [typed[4], typed[5], typed[6], typed[7]];
    Ok((kind, &typed[8..], &bytes[end..]))
}

/// The zlib stream of the consecutive `IDAT` chunks, joined. Ancillary chunks are skipped, as
/// the general decoder and PIL skip them for pixels; `tRNS` (which makes PIL's conversions
/// differ), a `PLTE` after the data and unknown critical chunks are unsupported.
fn image_stream(mut rest: &[u8]) -> Result<Vec<u8>, Unsupported> {
    let mut stream = Vec::new();
    // Whether the data chunks have begun, and whether they have ended (they must be consecutive).
    let (mut begun, mut ended) = (false, false);
    loop {
        let (kind, data, after) = chunk(rest)?;
        rest = after;
        match &kind {
            b"IDAT" if !ended => {
                begun = true;
                if stream.len() + data.len() > LARGEST_STREAM {
                    return Err(Unsupported);
                }
                stream.extend_from_slice(data);
                continue;
            }
            b"IEND" if begun => return Ok(stream),
            // Only a suggestion for truecolour images (palette images are not taken here).
            b"PLTE" if !begun => {}
            b"tRNS" => return Err(Unsupported),
            _ if kind[0].is_ascii_uppercase() => return Err(Unsupported),
            _ => {}
        }
        ended = begun;
    }
}

/// A zlib wrapper (RFC 1950) around DEFLATE, with its Adler-32 checked.
fn zlib(stream: &[u8], expected: usize) -> Result<Vec<u8>, Unsupported> {
    let [method, flags, ..] = *stream else {
        return Err(Unsupported);
    };
    let preset_dictionary = flags & 0x20 != 0;
    if method & 0x0F != 8
        || method >> 4 > 7
        || (u16::from(method) << 8 | u16::from(flags)) % 31 != 0
        || preset_dictionary
        || stream.len() < 6
    {
        return Err(Unsupported);
    }
    let (deflate, checksum) = stream[2..].split_at(stream.len() - 6);
    let out = inflate::inflate(deflate, expected).map_err(|inflate::Corrupt| Unsupported)?;
    if adler32(&out).to_be_bytes() != checksum {
        return Err(Unsupported);
    }
    Ok(out)
}

fn adler32(bytes: &[u8]) -> u32 {
    const MODULUS: u32 = 65521;
    // 5,552 bytes is the most that can be summed before `b` could overflow 32 bits.
    let (mut a, mut b) = (1u32, 0u32);
    for block in bytes.chunks(5552) {
        for &byte in block {
            a += u32::from(byte);
            b += a;
        }
        a %= MODULUS;
        b %= MODULUS;
    }
    b << 16 | a
}

/// Undoes each row's filter (PNG §9) in place; every row keeps its filter-type byte in front.
/// The row above the first is zeros.
fn unfilter(raw: &mut [u8], row: usize, pixel: usize) -> Result<(), Unsupported> {
    let stride = row + 1;
    let zeros = vec![0u8; row];
    let first = pixel.min(row);
    for index in 0..raw.len() / stride {
        let (done, rest) = raw.split_at_mut(index * stride);
        let above = if index == 0 {
            &zeros[..]
        } else {
            &done[done.len() - row..]
        };
        let Some((kind, current)) = rest[..stride].split_first_mut() else {
            return Err(Unsupported);
        };
        match *kind {
            0 => {}
            1 => {
                for at in pixel..row {
                    current[at] = current[at].wrapping_add(current[at - pixel]);
                }
            }
            2 => {
                for (byte, &up) in current.iter_mut().zip(above) {
                    *byte = byte.wrapping_add(up);
                }
            }
            3 => {
                for at in 0..first {
                    current[at] = current[at].wrapping_add(above[at] / 2);
                }
                for at in pixel..row {
                    let mean = (u16::from(current[at - pixel]) + u16::from(above[at])) / 2;
                    current[at] = current[at].wrapping_add(mean as u8);
                }
            }
            4 if pixel == 1 => {
                // Grey: the left and upper-left bytes kept in registers, not read back from
                // memory just written (which made this loop most of the decode).
                let (mut left, mut corner) = (0u8, 0u8);
                for (byte, &up) in current.iter_mut().zip(above) {
                    left = byte.wrapping_add(paeth(left, up, corner));
                    *byte = left;
                    corner = up;
                }
            }
            4 => {
                // With no pixel to the left, Paeth's choice is the byte above.
                for at in 0..first {
                    current[at] = current[at].wrapping_add(above[at]);
                }
                for at in pixel..row {
                    let predicted = paeth(current[at - pixel], above[at], above[at - pixel]);
                    current[at] = current[at].wrapping_add(predicted);
                }
            }
            _ => return Err(Unsupported),
        }
    }
    Ok(())
}

/// The neighbour closest to `left + above - corner` (PNG §9.4), ties to left, then above.
fn paeth(left: u8, above: u8, corner: u8) -> u8 {
    let estimate = i16::from(left) + i16::from(above) - i16::from(corner);
    let distance = |value: u8| (estimate - i16::from(value)).abs();
    let (to_left, to_above, to_corner) = (distance(left), distance(above), distance(corner));
    if to_left <= to_above && to_left <= to_corner {
        left
    } else if to_above <= to_corner {
        above
    } else {
        corner
    }
}

/// The unfiltered rows (each behind its filter byte) in the handler's colour mode, as PIL's
/// `convert`: alpha dropped, grey copied to RGB, RGB to grey by ITU-R 601-2 luma in fixed point.
fn convert(raw: &[u8], header: Header, color: ColorMode) -> Pixels {
    let (width, height, channels) = (header.width, header.height, header.channels);
    let row = width as usize * channels;
    let rows = raw.chunks_exact(row + 1).map(|row| &row[1..]);
    let out_channels = match color {
        ColorMode::Rgb => 3,
        ColorMode::Gray => 1,
    };
    let mut data = Vec::with_capacity(width as usize * height as usize * out_channels);
    if channels == out_channels {
        for row in rows {
            data.extend_from_slice(row);
        }
        return Pixels::full(width, height, out_channels, data);
    }
    for row in rows {
        for pixel in row.chunks_exact(channels) {
            match (color, channels) {
                (ColorMode::Gray, 1 | 2) => data.push(pixel[0]),
                (ColorMode::Gray, _) => {
                    let [r, g, b] = [pixel[0], pixel[1], pixel[2]].map(u32::from);
                    data.push(((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8);
                }
                (ColorMode::Rgb, 1 | 2) => data.extend_from_slice(&[pixel[0]; 3]),
                (ColorMode::Rgb, _) => data.extend_from_slice(&pixel[..3]),
            }
        }
    }
    Pixels::full(width, height, out_channels, data)
}

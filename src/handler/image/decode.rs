//! Request bytes to [`Pixels`]: raw image bytes or base64 text of them, decoded by the `image`
//! crate (zune-jpeg for JPEG). The decoder that parses the header is the decoder that decodes the
//! pixels, and every size the header declares is checked (the pixel limit, the most pixels the
//! file's length can encode, the decoded bytes, the resize's) before any pixel buffer is
//! allocated.
//!
//! Colours as Pillow's `convert("RGB")` / `convert("L")` give them; EXIF orientation is not
//! applied (TorchServe's handler opens the image with `Image.open` and does not either).

use std::borrow::Cow;
use std::io::Cursor;

use base64::Engine;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use oxserve_archiver::handler_config::{ColorMode, ImagePreprocess};

use super::geometry::Geometry;
use super::Pixels;
use crate::error::ServeError;

/// The most pixels a JPEG can encode per byte of file. Huffman coding spends at least one bit on
/// every 8×8 block of every component (the DC code), and the components with the largest
/// horizontal and vertical sampling factors together have at least one block per 128 pixels: no
/// valid file exceeds 1024 pixels per byte, so a tiny file claiming a huge frame is refused
/// before decoding. (Arithmetic coding could, but zune-jpeg does not decode it.)
const JPEG_PIXELS_PER_BYTE: u64 = 1024;

/// The most bytes one decoded image may take, whatever the configured pixel limit.
const MAX_DECODED_BYTES: u64 = 1 << 30;

/// Decodes request bytes (an image, or base64 text of one, bare or as a JSON string or
/// `{"data"|"body": "..."}`) into pixels in `settings.color`. Refused (400) when empty, not an
/// image, truncated, corrupt, or larger than the pixel limit (when `limit_pixels`).
pub fn decode(
    bytes: &[u8],
    settings: &ImagePreprocess,
    limit_pixels: bool,
) -> Result<Pixels, ServeError> {
    let bytes = image_bytes(bytes)?;
    let reader = ImageReader::new(Cursor::new(&bytes[..]))
        .with_guessed_format()
        .map_err(|error| ServeError::BadRequest(format!("cannot read the image: {error}")))?;
    let format = reader.format();
    if format == Some(ImageFormat::Jpeg) && jpeg_is_truncated(&bytes) {
        // zune-jpeg would pad the missing part with grey; PIL refuses ("image file is truncated").
        return Err(ServeError::BadRequest(
            "cannot decode the JPEG image: the file is truncated".into(),
        ));
    }
    let failed = |error: image::ImageError| {
        ServeError::BadRequest(format!(
            "cannot decode the {} image: {error}",
            format_name(format)
        ))
    };
    let mut decoder = reader.into_decoder().map_err(failed)?;
    let (width, height) = decoder.dimensions();
    let decoded_bytes = check_size(&Declared {
        width,
        height,
        format,
        file_len: bytes.len(),
        decoded_bytes: decoder.total_bytes(),
        max_pixels: limit_pixels.then_some(settings.max_pixels),
    })?;
    // The pre-processing's sizes too, before the pixels are decoded.
    Geometry::new(width, height, settings)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // The pixels plus the decoder's own buffers (a progressive JPEG's coefficients).
    limits.max_alloc = Some(decoded_bytes.saturating_mul(4).max(64 << 20));
    decoder.set_limits(limits).map_err(failed)?;
    let image = DynamicImage::from_decoder(decoder).map_err(failed)?;
    Ok(convert(image, settings.color))
}

/// What an image's header declares, and what its file is.
struct Declared {
    width: u32,
    height: u32,
    format: Option<ImageFormat>,
    file_len: usize,
    decoded_bytes: u64,
    /// The configured pixel limit, when it applies.
    max_pixels: Option<u64>,
}

/// Checks the declared size against the limits; returns the decoded bytes.
fn check_size(declared: &Declared) -> Result<u64, ServeError> {
    let Declared { width, height, .. } = *declared;
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(ServeError::BadRequest(format!(
            "the image is empty ({width}x{height})"
        )));
    }
    if let Some(max_pixels) = declared.max_pixels {
        if pixels > max_pixels {
            return Err(ServeError::BadRequest(format!(
                "the image has {width}x{height} = {pixels} pixels, more than the limit of {max_pixels} (a decompression bomb?)"
            )));
        }
    }
    let file_len = u64::try_from(declared.file_len).unwrap_or(u64::MAX);
    if declared.format == Some(ImageFormat::Jpeg)
        && pixels > file_len.saturating_mul(JPEG_PIXELS_PER_BYTE)
    {
        return Err(ServeError::BadRequest(format!(
            "cannot decode the JPEG image: it claims {width}x{height} pixels, more than its {file_len} bytes can encode"
        )));
    }
    if declared.decoded_bytes > MAX_DECODED_BYTES {
        return Err(ServeError::BadRequest(format!(
            "the {width}x{height} image would decode into {} bytes, more than the limit of {MAX_DECODED_BYTES}",
            declared.decoded_bytes
        )));
    }
    Ok(declared.decoded_bytes)
}

/// The image in the request: its bytes, or the bytes base64 text in it stands for.
fn image_bytes(bytes: &[u8]) -> Result<Cow<'_, [u8]>, ServeError> {
    if bytes.is_empty() {
        return Err(ServeError::BadRequest(
            "the request has no image: the body is empty".into(),
        ));
    }
    if image::guess_format(bytes).is_ok() {
        return Ok(Cow::Borrowed(bytes));
    }
    base64_payload(bytes).map(Cow::Owned).ok_or_else(|| {
        ServeError::BadRequest(
            "the request body is not an image (JPEG, PNG, GIF, BMP or WebP) nor base64 text of one"
                .into(),
        )
    })
}

/// A JPEG whose scan data is not followed by an end-of-image marker (0xFFD9). The marker cannot
/// occur inside entropy-coded data (0xFF bytes are stuffed there), so its absence after the first
/// start-of-scan (0xFFDA) means bytes are missing.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    let start_of_scan = bytes.windows(2).position(|pair| pair == [0xFF, 0xDA]);
    let end_of_image = bytes.windows(2).rposition(|pair| pair == [0xFF, 0xD9]);
    match (start_of_scan, end_of_image) {
        (Some(scan), Some(end)) => end < scan,
        _ => true,
    }
}

fn format_name(format: Option<ImageFormat>) -> String {
    format
        .map(|format| format!("{format:?}").to_uppercase())
        .unwrap_or_else(|| "unknown".into())
}

/// Base64 text, bare or inside a JSON string or `{"data"|"body": "..."}` object.
fn base64_payload(bytes: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let inner: String = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::String(value)) => value,
        Ok(serde_json::Value::Object(map)) => map
            .get("data")
            .or_else(|| map.get("body"))
            .and_then(|value| value.as_str())
            .map(str::to_string)?,
        _ => text.to_string(),
    };
    let compact: String = inner.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let compact = compact
        .split_once("base64,")
        .map_or(compact.as_str(), |(_, data)| data);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()?;
    image::guess_format(&decoded).is_ok().then_some(decoded)
}

/// Converts to the handler's colour mode as Pillow does: `convert("RGB")` drops alpha, expands
/// palettes and replicates grey; `convert("L")` is ITU-R 601-2 luma in fixed point.
fn convert(image: DynamicImage, color: ColorMode) -> Pixels {
    let (width, height) = (image.width(), image.height());
    let (channels, data) = match color {
        ColorMode::Rgb => (3, image.into_rgb8().into_raw()),
        ColorMode::Gray => {
            let data = match image {
                DynamicImage::ImageLuma8(gray) => gray.into_raw(),
                DynamicImage::ImageLumaA8(_) => image.into_luma8().into_raw(),
                other => other
                    .into_rgb8()
                    .pixels()
                    .map(|pixel| {
                        let [r, g, b] = pixel.0.map(u32::from);
                        ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
                    })
                    .collect(),
            };
            (1, data)
        }
    };
    Pixels {
        width,
        height,
        channels,
        data,
    }
}

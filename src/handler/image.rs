//! Image pre-processing as torchvision does it on PIL images: decode (JPEG, PNG, GIF, BMP, WebP;
//! base64 text too) → colour conversion (PIL's formulas) → `Resize(n)` (shorter side to n,
//! antialiased bilinear, as Pillow's convolution resampler) → `CenterCrop(n)` (Python's rounding) →
//! `ToTensor` → `Normalize`, written straight into a channel-first float buffer. Pure, synchronous
//! code: workers call it; it never touches ONNX Runtime.

use std::io::Cursor;

use base64::Engine;
use image::{DynamicImage, ImageFormat, ImageReader};
use oxserve_archiver::handler_config::{ColorMode, ImagePreprocess};

use super::jpeg::{self, Region};
use super::resample::{resize_view, source_span, Resized, Source, Window};
use crate::error::ServeError;

/// A decoded image in the handler's colour mode, 8 bits per channel, interleaved: all of it, or
/// (from the JPEG decoder) only the part the pre-processing reads, from column `x0` and row `y0`
/// on, `stride` pixels a row.
#[derive(Debug, Clone)]
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    pub channels: usize,
    pub data: Vec<u8>,
    pub x0: usize,
    pub y0: usize,
    pub stride: usize,
}

impl Pixels {
    /// A whole image.
    pub fn full(width: u32, height: u32, channels: usize, data: Vec<u8>) -> Pixels {
        Pixels {
            width,
            height,
            channels,
            data,
            x0: 0,
            y0: 0,
            stride: width as usize,
        }
    }
}

/// Request bytes turned into an image's bytes, with its format and size checked.
struct Checked<'a> {
    bytes: std::borrow::Cow<'a, [u8]>,
    format: Option<ImageFormat>,
    width: u32,
    height: u32,
}

/// The most pixels a JPEG's bytes can encode: every 8×8 block of the largest component costs at
/// least one bit of scan data (a Huffman code is never shorter), so at most 64 × 8 pixels a byte.
const JPEG_PIXELS_PER_BYTE: u64 = 512;

/// Raw image bytes, or base64 text of them (TorchServe decodes base64 strings), or a JSON
/// string / `{"data": "..."}` holding base64; refused when empty, not an image, a truncated
/// JPEG, or larger than the pixel limit.
fn check<'a>(
    bytes: &'a [u8],
    settings: &ImagePreprocess,
    limit_pixels: bool,
) -> Result<Checked<'a>, ServeError> {
    if bytes.is_empty() {
        return Err(ServeError::BadRequest(
            "the request has no image: the body is empty".into(),
        ));
    }
    let image_bytes = if image::guess_format(bytes).is_ok() {
        std::borrow::Cow::Borrowed(bytes)
    } else {
        std::borrow::Cow::Owned(base64_payload(bytes).ok_or_else(|| {
            ServeError::BadRequest(
                "the request body is not an image (JPEG, PNG, GIF, BMP or WebP) nor base64 text of one".into(),
            )
        })?)
    };
    if image::guess_format(&image_bytes).ok() == Some(ImageFormat::Jpeg)
        && jpeg_is_truncated(&image_bytes)
    {
        // The decoder would pad the missing part with grey; PIL refuses ("image file is truncated").
        return Err(ServeError::BadRequest(
            "cannot decode the JPEG image: the file is truncated".into(),
        ));
    }
    let (format, (width, height)) = match super::png::header(&image_bytes) {
        // A well-formed PNG header: no need for the general decoder to parse it again.
        Some(header) => (Some(ImageFormat::Png), (header.width, header.height)),
        None => {
            let reader = ImageReader::new(Cursor::new(&image_bytes[..]))
                .with_guessed_format()
                .map_err(|error| {
                    ServeError::BadRequest(format!("cannot read the image: {error}"))
                })?;
            let format = reader.format();
            let dimensions = reader.into_dimensions().map_err(|error| {
                ServeError::BadRequest(format!("cannot decode the image: {error}"))
            })?;
            (format, dimensions)
        }
    };
    let pixels = u64::from(width) * u64::from(height);
    if limit_pixels && pixels > settings.max_pixels {
        return Err(ServeError::BadRequest(format!(
            "the image has {width}x{height} = {pixels} pixels, more than the limit of {} (a decompression bomb?)",
            settings.max_pixels
        )));
    }
    if format == Some(ImageFormat::Jpeg)
        && pixels > JPEG_PIXELS_PER_BYTE.saturating_mul(image_bytes.len() as u64)
    {
        // The decoder would fill the missing blocks, at full cost (fuzz/regressions/image).
        return Err(ServeError::BadRequest(format!(
            "the JPEG declares {width}x{height} pixels, more than its {} bytes can hold",
            image_bytes.len()
        )));
    }
    Ok(Checked {
        bytes: image_bytes,
        format,
        width,
        height,
    })
}

/// Decodes request bytes (see [`check`] for what they may be) into pixels. For the
/// pre-processing in `settings`: a JPEG may be decoded only where [`preprocess`] with the same
/// settings reads it (the rest of the pixels are then zero).
pub fn decode(
    bytes: &[u8],
    settings: &ImagePreprocess,
    limit_pixels: bool,
) -> Result<Pixels, ServeError> {
    decode_checked(&check(bytes, settings, limit_pixels)?, settings)
}

/// [`decode`] then [`preprocess`], as a request goes: the `[C, H, W]` data, H, W and C. A JPEG
/// the fast decoder takes goes through `photo`, on two threads when a core is idle.
pub fn prepare(
    bytes: &[u8],
    settings: &ImagePreprocess,
    limit_pixels: bool,
) -> Result<(Vec<f32>, u32, u32, usize), ServeError> {
    let checked = check(bytes, settings, limit_pixels)?;
    if checked.format == Some(ImageFormat::Jpeg) {
        if let Some(prepared) = super::photo::prepare(&checked.bytes, settings) {
            return Ok(prepared);
        }
    }
    let pixels = decode_checked(&checked, settings)?;
    let (data, height, width) = preprocess(&pixels, settings)?;
    Ok((data, height, width, pixels.channels))
}

fn decode_checked(checked: &Checked<'_>, settings: &ImagePreprocess) -> Result<Pixels, ServeError> {
    let Checked {
        bytes,
        format,
        width,
        height,
    } = checked;
    let (format, width, height) = (*format, *width, *height);
    if format == Some(ImageFormat::Jpeg) {
        if let Some(pixels) = decode_jpeg(bytes, (width, height), settings) {
            return Ok(pixels);
        }
    }
    if format == Some(ImageFormat::Png) {
        if let Ok(pixels) = super::png::decode(bytes, settings.color) {
            return Ok(pixels);
        }
    }
    let mut reader = ImageReader::new(Cursor::new(&bytes[..]));
    if let Some(format) = format {
        reader.set_format(format);
    }
    let mut limits = image::Limits::default();
    // Room for the decoded pixels plus decoder scratch, and no more.
    let pixels = u64::from(width) * u64::from(height);
    limits.max_alloc = Some(pixels.saturating_mul(16).max(64 << 20));
    reader.limits(limits);
    let image = reader.decode().map_err(|error| {
        ServeError::BadRequest(format!(
            "cannot decode the {} image: {error}",
            format_name(format)
        ))
    })?;
    Ok(convert(image, settings.color))
}

/// A JPEG in the fast decoder's reach (see `jpeg`), decoded where `preprocess` will read it:
/// libjpeg-turbo's pixels there, zeros elsewhere. `None` sends the file to the general decoder.
fn decode_jpeg(
    bytes: &[u8],
    (width, height): (u32, u32),
    settings: &ImagePreprocess,
) -> Option<Pixels> {
    let (_, _, components) = jpeg::dimensions(bytes).ok()?;
    let wanted = match settings.color {
        ColorMode::Rgb => 3,
        ColorMode::Gray => 1,
    };
    if components != wanted {
        return None;
    }
    let region = Geometry::new(width, height, settings).source_region(width, height);
    let decoded = jpeg::decode(bytes, region).ok()?;
    Some(Pixels {
        width: decoded.width as u32,
        height: decoded.height as u32,
        channels: decoded.channels,
        data: decoded.data,
        x0: decoded.region.x0,
        y0: decoded.region.y0,
        stride: decoded.region.x1 - decoded.region.x0,
    })
}

/// A JPEG whose scan data is not followed by an end-of-image marker (0xFFD9). The marker cannot
/// occur inside entropy-coded data (0xFF bytes are stuffed there), so its absence after the first
/// start-of-scan (0xFFDA) means bytes are missing.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    let marker = |code: u8| bytes.windows(2).position(|pair| pair == [0xFF, code]);
    let start_of_scan = marker(0xDA);
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

/// Converts to the handler's colour mode with PIL's formulas (`convert("L")` uses ITU-R 601-2
/// luma in fixed point; alpha is dropped as `convert("RGB")` does).
pub(super) fn convert(image: DynamicImage, color: ColorMode) -> Pixels {
    let (width, height) = (image.width(), image.height());
    match color {
        ColorMode::Rgb => Pixels::full(width, height, 3, image.into_rgb8().into_raw()),
        ColorMode::Gray => {
            let data = match image {
                DynamicImage::ImageLuma8(gray) => gray.into_raw(),
                other => other
                    .into_rgb8()
                    .pixels()
                    .map(|pixel| {
                        let [r, g, b] = pixel.0.map(u32::from);
                        ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
                    })
                    .collect(),
            };
            Pixels::full(width, height, 1, data)
        }
    }
}

/// torchvision `Resize(size)` on a PIL image: the shorter side becomes `size`, the longer side
/// `int(size * long / short)` (truncated, as torchvision computes it).
pub fn resized_dimensions(width: u32, height: u32, size: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    if short == size {
        return (width, height);
    }
    let new_long = (u64::from(size) * u64::from(long) / u64::from(short.max(1))) as u32;
    if width <= height {
        (size, new_long.max(1))
    } else {
        (new_long.max(1), size)
    }
}

/// Python's `round()`: halves go to the even neighbour.
fn round_half_even(value: f64) -> i64 {
    let rounded = value.round();
    if (value - value.trunc()).abs() == 0.5 && rounded as i64 % 2 != 0 {
        (rounded - value.signum()) as i64
    } else {
        rounded as i64
    }
}

/// Where the resized window lands in the output plane (CenterCrop pads when the crop is larger).
pub(super) struct Placement {
    pub(super) visible_width: usize,
    pub(super) out_width: usize,
    pub(super) offset_x: usize,
    pub(super) offset_y: usize,
    /// Part of the plane is padding.
    pub(super) padded: bool,
}

/// Writes one channel of the `B`-byte pixels into its plane, normalised. A loop per channel with
/// a constant pixel size, so that the compiler vectorises it.
#[inline(always)]
fn normalise_plane<const B: usize>(
    visible: &[u8],
    channel: usize,
    target: &mut [f32],
    placement: &Placement,
    normalise: impl Fn(u8) -> f32,
) {
    if placement.padded {
        // torchvision pads with 0 before normalising.
        target.fill(normalise(0));
    }
    let row_bytes = (placement.visible_width * B).max(1);
    for (row, source) in visible.chunks_exact(row_bytes).enumerate() {
        let start = (row + placement.offset_y) * placement.out_width + placement.offset_x;
        let target = &mut target[start..start + placement.visible_width];
        if B == 4 {
            // A pixel as a little-endian word: the channel is a shift away, which vectorises
            // (gathering every fourth byte does not).
            let shift = 8 * channel as u32;
            for (slot, pixel) in target.iter_mut().zip(source.chunks_exact(4)) {
                let word = u32::from_le_bytes([pixel[0], pixel[1], pixel[2], pixel[3]]);
                *slot = normalise((word >> shift) as u8);
            }
        } else {
            for (slot, pixel) in target.iter_mut().zip(source.chunks_exact(B)) {
                *slot = normalise(pixel[channel]);
            }
        }
    }
}

/// Where `Resize` + `CenterCrop` put a `width`×`height` image.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub(super) resized_width: u32,
    pub(super) resized_height: u32,
    pub(super) out_width: u32,
    pub(super) out_height: u32,
    /// The crop's offset in the resized image (negative: the crop pads).
    left: i64,
    top: i64,
    /// The part of the resized image inside the crop window; the rest of the window is padding.
    pub(super) window: Window,
}

impl Geometry {
    pub(super) fn new(width: u32, height: u32, settings: &ImagePreprocess) -> Geometry {
        let (resized_width, resized_height) = match settings.resize {
            Some(size) => resized_dimensions(width, height, size),
            None => (width, height),
        };
        let (out_width, out_height) = match settings.center_crop {
            Some(crop) => (crop, crop),
            None => (resized_width, resized_height),
        };
        // torchvision's CenterCrop: offsets rounded half-to-even.
        let left = round_half_even((f64::from(resized_width) - f64::from(out_width)) / 2.0);
        let top = round_half_even((f64::from(resized_height) - f64::from(out_height)) / 2.0);
        let clamp = |value: i64, limit: u32| value.clamp(0, i64::from(limit)) as usize;
        let window = Window {
            x0: clamp(left, resized_width),
            x1: clamp(left + i64::from(out_width), resized_width),
            y0: clamp(top, resized_height),
            y1: clamp(top + i64::from(out_height), resized_height),
        };
        Geometry {
            resized_width,
            resized_height,
            out_width,
            out_height,
            left,
            top,
            window,
        }
    }

    /// Where the window lands in the output planes.
    pub(super) fn placement(&self) -> Placement {
        let window = self.window;
        Placement {
            visible_width: window.x1 - window.x0,
            out_width: self.out_width as usize,
            offset_x: (window.x0 as i64 - self.left) as usize,
            offset_y: (window.y0 as i64 - self.top) as usize,
            padded: window.x1 - window.x0 != self.out_width as usize
                || window.y1 - window.y0 != self.out_height as usize,
        }
    }

    /// The source pixels the resize reads for the window: all that a decoder must produce.
    pub(super) fn source_region(&self, width: u32, height: u32) -> Region {
        self.source_region_of(self.window, width, height)
    }

    /// The source pixels the resize reads for `window` (part of the geometry's window).
    pub(super) fn source_region_of(&self, window: Window, width: u32, height: u32) -> Region {
        let (x0, x1) = source_span(
            width as usize,
            self.resized_width as usize,
            window.x0,
            window.x1,
        );
        let (y0, y1) = source_span(
            height as usize,
            self.resized_height as usize,
            window.y0,
            window.y1,
        );
        Region { x0, x1, y0, y1 }
    }
}

/// Runs the whole pipeline and returns a `[C, H, W]` float tensor's data and its (H, W).
pub fn preprocess(
    pixels: &Pixels,
    settings: &ImagePreprocess,
) -> Result<(Vec<f32>, u32, u32), ServeError> {
    let geometry = Geometry::new(pixels.width, pixels.height, settings);
    let plane = geometry.out_width as usize * geometry.out_height as usize;
    let mut data = vec![0f32; pixels.channels * plane];
    let mut targets: Vec<&mut [f32]> = data.chunks_exact_mut(plane.max(1)).collect();
    fill(
        pixels,
        settings,
        &geometry,
        geometry.window,
        &geometry.placement(),
        &mut targets,
    );
    Ok((data, geometry.out_height, geometry.out_width))
}

/// Resizes `window` (rows of the geometry's window) of `pixels` and writes it, normalised, into
/// one target plane per channel at `placement`.
pub(super) fn fill(
    pixels: &Pixels,
    settings: &ImagePreprocess,
    geometry: &Geometry,
    window: Window,
    placement: &Placement,
    targets: &mut [&mut [f32]],
) {
    let channels = pixels.channels;
    let visible = if window.x0 < window.x1 && window.y0 < window.y1 {
        let source = Source {
            data: &pixels.data,
            width: pixels.width as usize,
            height: pixels.height as usize,
            channels,
            x0: pixels.x0,
            y0: pixels.y0,
            stride: pixels.stride,
        };
        let resized = (
            geometry.resized_width as usize,
            geometry.resized_height as usize,
        );
        resize_view(source, resized, window)
    } else {
        Resized {
            data: Vec::new(),
            pixel_bytes: channels,
        }
    };
    for (channel, target) in targets.iter_mut().enumerate() {
        let mean = settings.mean.get(channel).copied().unwrap_or(0.0);
        let std = settings.std.get(channel).copied().unwrap_or(1.0);
        // torchvision: x / 255 (here `scale`), then (x - mean) / std, in float32.
        let normalise = |value: u8| (f32::from(value) * settings.scale - mean) / std;
        match visible.pixel_bytes {
            1 => normalise_plane::<1>(&visible.data, channel, target, placement, normalise),
            3 => normalise_plane::<3>(&visible.data, channel, target, placement, normalise),
            4 => normalise_plane::<4>(&visible.data, channel, target, placement, normalise),
            other => unreachable!("pixels of {other} bytes"),
        }
    }
    // The resize's buffer, for the next image.
    super::scratch::give_bytes(visible.data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_aspect_with_truncation() {
        assert_eq!(resized_dimensions(451, 300, 256), (384, 256));
        assert_eq!(resized_dimensions(300, 451, 256), (256, 384));
        assert_eq!(resized_dimensions(28, 28, 28), (28, 28));
    }

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(80.0), 80);
        assert_eq!(round_half_even(-0.5), 0);
    }

    #[test]
    fn garbage_and_empty_bodies_are_bad_requests() {
        let settings = oxserve_archiver::HandlerConfig::builtin("image_classifier")
            .and_then(|config| config.image)
            .expect("builtin");
        for body in [&b""[..], b"hello world", b"\x89PNG\r\n\x1a\nbroken"] {
            let error = decode(body, &settings, true).expect_err("refused");
            assert_eq!(error.status(), 400, "{error}");
        }
    }
}

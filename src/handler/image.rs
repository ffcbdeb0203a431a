//! Image pre-processing as TorchServe's vision handlers do it on PIL images: decode (JPEG, PNG,
//! GIF, BMP, WebP; base64 text too) → `convert("RGB")` (or `"L"`) → `Resize(n)` (shorter side to
//! n, antialiased bilinear) → `CenterCrop(n)` → `ToTensor` → `Normalize`, into a channel-first
//! float buffer. Pure, synchronous code on crates (`image`, whose JPEG decoder is zune-jpeg, and
//! `fast_image_resize`); workers and the pre-processing pool call it; it never touches ONNX
//! Runtime.
//!
//! - `decode`: bytes to pixels, every declared size checked before pixels are allocated.
//! - `geometry`: what `Resize` + `CenterCrop` keep, as a box of the source image.
//! - this file: the box resized (only what the crop keeps) and normalised into the tensor.

mod decode;
mod geometry;
#[cfg(test)]
mod tests;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use oxserve_archiver::handler_config::ImagePreprocess;

pub use decode::decode;
pub use geometry::resized_dimensions;

use crate::error::ServeError;
use geometry::Geometry;

/// A decoded image in the handler's colour mode: 8 bits per channel, interleaved, row-major.
#[derive(Debug, Clone)]
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    /// 3 (RGB) or 1 (grey).
    pub channels: usize,
    pub data: Vec<u8>,
}

/// [`decode`] then [`preprocess`], as a request goes: the `[C, H, W]` data, H, W and C.
pub fn prepare(
    bytes: &[u8],
    settings: &ImagePreprocess,
    limit_pixels: bool,
) -> Result<(Vec<f32>, u32, u32, usize), ServeError> {
    let pixels = decode(bytes, settings, limit_pixels)?;
    let (data, height, width) = preprocess(&pixels, settings)?;
    Ok((data, height, width, pixels.channels))
}

/// Resize + CenterCrop + ToTensor + Normalize: a `[C, H, W]` float tensor's data and its (H, W).
/// Refused (400) when the resize would enlarge the image past the pixel limit.
pub fn preprocess(
    pixels: &Pixels,
    settings: &ImagePreprocess,
) -> Result<(Vec<f32>, u32, u32), ServeError> {
    let geometry = Geometry::new(pixels.width, pixels.height, settings)?;
    let visible = resize_visible(pixels, &geometry)?;
    let data = normalise(&visible, pixels.channels, &geometry, settings)?;
    Ok((data, geometry.y.out, geometry.x.out))
}

/// The part of the resized image inside the crop window, resized from the source box it covers
/// (fast_image_resize's convolution computes Pillow's weights for a box): interleaved bytes. Two
/// passes, horizontal then vertical, each rounded to bytes, in Pillow's order; the horizontal pass
/// covers only the source rows the vertical one reads.
fn resize_visible(pixels: &Pixels, geometry: &Geometry) -> Result<Vec<u8>, ServeError> {
    let (width, height) = (geometry.x.visible(), geometry.y.visible());
    if width == 0 || height == 0 {
        return Ok(Vec::new());
    }
    let pixel_type = match pixels.channels {
        1 => PixelType::U8,
        3 => PixelType::U8x3,
        other => {
            return Err(ServeError::Internal(format!(
                "pixels of {other} channels cannot be resized"
            )))
        }
    };
    let source = ImageRef::new(pixels.width, pixels.height, &pixels.data, pixel_type)
        .map_err(|error| ServeError::Internal(format!("decoded pixels: {error}")))?;
    let (left, span_x) = geometry.x.source_span();
    let (top, span_y) = geometry.y.source_span();
    let (first_row, rows) = geometry.y.source_rows();
    let mut resizer = Resizer::new();
    let mut rows_resized = new_image(width, rows, pixels.channels, pixel_type)?;
    resize(
        &mut resizer,
        &source,
        &mut rows_resized,
        (left, f64::from(first_row), span_x, f64::from(rows)),
    )?;
    let mut target = new_image(width, height, pixels.channels, pixel_type)?;
    resize(
        &mut resizer,
        &rows_resized,
        &mut target,
        (0.0, top - f64::from(first_row), f64::from(width), span_y),
    )?;
    Ok(target.into_vec())
}

/// A zeroed `width`×`height` image, its buffer allocated fallibly.
fn new_image(
    width: u32,
    height: u32,
    channels: usize,
    pixel_type: PixelType,
) -> Result<Image<'static>, ServeError> {
    let len = (width as usize)
        .checked_mul(height as usize)
        .and_then(|pixels| pixels.checked_mul(channels))
        .ok_or_else(|| ServeError::BadRequest("the image is too large to pre-process".into()))?;
    let mut buffer = allocate::<u8>(len)?;
    buffer.resize(len, 0);
    Image::from_vec_u8(width, height, buffer, pixel_type)
        .map_err(|error| ServeError::Internal(format!("resize buffer: {error}")))
}

/// Resizes the source box `(left, top, width, height)` of `source` into all of `target`, with
/// torchvision's filter (bilinear, widened when reducing: Pillow's antialiasing).
fn resize(
    resizer: &mut Resizer,
    source: &impl fast_image_resize::IntoImageView,
    target: &mut Image<'_>,
    (left, top, width, height): (f64, f64, f64, f64),
) -> Result<(), ServeError> {
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(left, top, width, height);
    resizer
        .resize(source, target, &options)
        .map_err(|error| ServeError::Internal(format!("resize: {error}")))
}

/// Writes the visible pixels into one plane per channel at the crop's offset, through a table of
/// `(x * scale - mean) / std` per byte value (torchvision's float32 arithmetic); padding is 0
/// normalised, as torchvision pads before normalising.
fn normalise(
    visible: &[u8],
    channels: usize,
    geometry: &Geometry,
    settings: &ImagePreprocess,
) -> Result<Vec<f32>, ServeError> {
    let out_width = geometry.x.out as usize;
    let plane = geometry.plane()?;
    let total = plane
        .checked_mul(channels)
        .ok_or_else(|| ServeError::BadRequest("the image is too large to pre-process".into()))?;
    let mut data = allocate::<f32>(total)?;
    let visible_width = geometry.x.visible() as usize;
    let (offset_x, offset_y) = (geometry.x.offset as usize, geometry.y.offset as usize);
    for channel in 0..channels {
        let mean = settings.mean.get(channel).copied().unwrap_or(0.0);
        let std = settings.std.get(channel).copied().unwrap_or(1.0);
        let table: [f32; 256] =
            std::array::from_fn(|value| (value as f32 * settings.scale - mean) / std);
        let start = data.len();
        data.resize(start + plane, table[0]);
        let target = &mut data[start..];
        let row_bytes = visible_width * channels;
        if row_bytes == 0 {
            continue;
        }
        for (row, source) in visible.chunks_exact(row_bytes).enumerate() {
            let begin = (row + offset_y) * out_width + offset_x;
            let slots = &mut target[begin..begin + visible_width];
            for (slot, pixel) in slots.iter_mut().zip(source.chunks_exact(channels)) {
                *slot = table[usize::from(pixel[channel])];
            }
        }
    }
    Ok(data)
}

/// An empty vector with room for `len` values, or a 400 when the allocator cannot give it (sizes
/// here come from the request's image).
fn allocate<T>(len: usize) -> Result<Vec<T>, ServeError> {
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(len).map_err(|_| {
        ServeError::BadRequest(format!(
            "the image needs {len} values, more than can be allocated"
        ))
    })?;
    Ok(buffer)
}

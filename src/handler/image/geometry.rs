//! What torchvision's `Resize(n)` + `CenterCrop(n)` make of a `width`×`height` image, per axis:
//! the resized length (truncated as torchvision computes it), the part of it the crop keeps, where
//! that lands in the output (the crop pads with zeros when it is larger than the image) and the
//! box of the source it comes from. The resized image itself is never allocated; a resize that
//! enlarges the image past the pixel limit is still refused (TorchServe could not make it).

use oxserve_archiver::handler_config::ImagePreprocess;

use crate::error::ServeError;

/// torchvision `Resize(size)` on a PIL image: the shorter side becomes `size`, the longer side
/// `int(size * long / short)` (Python's float division, truncated).
pub fn resized_dimensions(width: u32, height: u32, size: u32) -> (u64, u64) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (f64::from(size) * f64::from(long) / f64::from(short.max(1))) as u64;
    if width <= height {
        (u64::from(size), new_long)
    } else {
        (new_long, u64::from(size))
    }
}

/// One axis of the pre-processing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Axis {
    /// Length in the decoded image.
    pub(super) source: u32,
    /// Length after `Resize`.
    pub(super) resized: u64,
    /// Length of the output (the crop, or the resized length without one).
    pub(super) out: u32,
    /// The kept part of the resized axis: `start..end`.
    pub(super) start: u64,
    pub(super) end: u64,
    /// Where the kept part starts in the output (padding before it).
    pub(super) offset: u32,
}

impl Axis {
    fn new(source: u32, resized: u64, crop: Option<u32>) -> Result<Axis, ServeError> {
        let Some(crop) = crop else {
            let out = u32::try_from(resized).map_err(|_| too_large(resized))?;
            return Ok(Axis {
                source,
                resized,
                out,
                start: 0,
                end: resized,
                offset: 0,
            });
        };
        if u64::from(crop) > resized {
            // torchvision pads (crop - size) // 2 before and the rest after, then crops it all.
            let offset = (u64::from(crop) - resized) / 2;
            return Ok(Axis {
                source,
                resized,
                out: crop,
                start: 0,
                end: resized,
                offset: u32::try_from(offset).map_err(|_| too_large(resized))?,
            });
        }
        // torchvision: int(round((size - crop) / 2.0)), Python's round (halves to even).
        let start = round_half_even((resized - u64::from(crop)) as f64 / 2.0);
        Ok(Axis {
            source,
            resized,
            out: crop,
            start,
            end: start + u64::from(crop),
            offset: 0,
        })
    }

    /// Length of the kept part (at most `out`).
    pub(super) fn visible(&self) -> u32 {
        u32::try_from(self.end - self.start)
            .unwrap_or(self.out)
            .min(self.out)
    }

    /// The kept part as a source interval `(start, length)`, in source pixels (fractional): the
    /// resize maps resized pixel `i` to source `(i + 0.5) * source / resized`, as Pillow does.
    pub(super) fn source_span(&self) -> (f64, f64) {
        let scale = f64::from(self.source) / self.resized as f64;
        let limit = f64::from(self.source);
        let start = (self.start as f64 * scale).clamp(0.0, limit);
        let length = (f64::from(self.visible()) * scale).min(limit - start);
        (start, length)
    }

    /// The source pixels the kept part reads, `(first, count)`: those within the filter's reach
    /// (bilinear: one output pixel, widened by the scale when reducing) of the span, as Pillow
    /// bounds them.
    pub(super) fn source_rows(&self) -> (u32, u32) {
        let (start, length) = self.source_span();
        let reach = (f64::from(self.source) / self.resized as f64).max(1.0);
        let first = (start - reach).floor().max(0.0);
        let end = (start + length + reach).ceil().min(f64::from(self.source));
        let first = first as u32;
        (first, (end as u32).saturating_sub(first).max(1))
    }
}

/// Both axes of `Resize` + `CenterCrop` for one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Geometry {
    pub(super) x: Axis,
    pub(super) y: Axis,
}

impl Geometry {
    /// Refused (400) when the resize enlarges the image past `settings.max_pixels` (an extreme
    /// aspect ratio: 1 × 6,100,000 pixels resized to 256 wide is 400 G pixels).
    pub(super) fn new(
        width: u32,
        height: u32,
        settings: &ImagePreprocess,
    ) -> Result<Geometry, ServeError> {
        let (resized_width, resized_height) = match settings.resize {
            Some(size) => resized_dimensions(width, height, size),
            None => (u64::from(width), u64::from(height)),
        };
        let resized = resized_width.saturating_mul(resized_height);
        let source = u64::from(width) * u64::from(height);
        if resized > settings.max_pixels.max(source) {
            return Err(ServeError::BadRequest(format!(
                "the {width}x{height} image resized to {resized_width}x{resized_height} would have {resized} pixels, more than the limit of {}",
                settings.max_pixels
            )));
        }
        Ok(Geometry {
            x: Axis::new(width, resized_width, settings.center_crop)?,
            y: Axis::new(height, resized_height, settings.center_crop)?,
        })
    }

    /// Values in one output plane.
    pub(super) fn plane(&self) -> Result<usize, ServeError> {
        usize::try_from(u64::from(self.x.out) * u64::from(self.y.out))
            .map_err(|_| ServeError::BadRequest("the image is too large to pre-process".into()))
    }
}

fn too_large(length: u64) -> ServeError {
    ServeError::BadRequest(format!(
        "the resized image would be {length} pixels long, too large to pre-process"
    ))
}

/// Python's `round()` of a non-negative value: halves go to the even neighbour.
fn round_half_even(value: f64) -> u64 {
    let floor = value.floor();
    let rounded = if value - floor == 0.5 {
        if floor % 2.0 == 0.0 {
            floor
        } else {
            floor + 1.0
        }
    } else {
        value.round()
    };
    rounded as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_aspect_with_truncation() {
        assert_eq!(resized_dimensions(451, 300, 256), (384, 256));
        assert_eq!(resized_dimensions(300, 451, 256), (256, 384));
        assert_eq!(resized_dimensions(28, 28, 28), (28, 28));
        assert_eq!(resized_dimensions(1, 6_100_000, 256), (256, 1_561_600_000));
    }

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(80.0), 80);
        assert_eq!(round_half_even(80.4), 80);
    }

    #[test]
    fn a_crop_larger_than_the_image_pads_as_torchvision() {
        // CenterCrop(10) of 7 pixels: 3 // 2 = 1 pixel of padding before.
        let axis = Axis::new(7, 7, Some(10)).expect("axis");
        assert_eq!((axis.start, axis.end, axis.offset, axis.out), (0, 7, 1, 10));
        // CenterCrop(224) of 384: round(80.0) = 80.
        let axis = Axis::new(451, 384, Some(224)).expect("axis");
        assert_eq!((axis.start, axis.end, axis.offset), (80, 304, 0));
        // CenterCrop(2) of 7: round(2.5) = 2.
        let axis = Axis::new(7, 7, Some(2)).expect("axis");
        assert_eq!((axis.start, axis.end), (2, 4));
    }

    #[test]
    fn a_long_thin_image_keeps_a_small_box_or_is_refused() {
        let settings = oxserve_archiver::HandlerConfig::builtin("image_classifier")
            .and_then(|config| config.image)
            .expect("builtin");
        // 256 x 256,000 resized: under the limit; the crop reads under a pixel of each axis.
        let geometry = Geometry::new(1, 1000, &settings).expect("geometry");
        assert_eq!((geometry.x.out, geometry.y.out), (224, 224));
        let (_, height) = geometry.y.source_span();
        assert!(height < 1.0, "{height}");
        assert!(geometry.y.source_rows().1 <= 4);
        // 256 x 1,561,600,000 resized: refused.
        let error = Geometry::new(1, 6_100_000, &settings).expect_err("refused");
        assert_eq!(error.status(), 400);
    }
}

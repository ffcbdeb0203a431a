//! A JPEG photo from bytes to the normalised tensor, fused: the fast decoder (`jpeg`) decodes
//! only the pixels the resize reads, and when a core is idle the work is shared by two threads.
//!
//! Why two threads for one image: a lone request's latency is its pre-processing plus its
//! inference, and on a small machine decoding a photo costs as much as a small model's run. The
//! split: both threads decode half of the entropy-coded data (see `jpeg::coefficients`), then
//! each transforms, converts, resizes and normalises the source rows of its half of the output
//! rows (a few rows around the middle are transformed by both). One scoped helper thread, two
//! hand-offs (the two halves of coefficients), no locks. Under load, when every core has work,
//! one thread does it all: splitting would only add the hand-offs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use oxserve_archiver::handler_config::{ColorMode, ImagePreprocess};

use super::image::{fill, Geometry, Pixels, Placement};
use super::jpeg::{coefficients, Coefficients, Decoded, Jpeg, Part, Split};
use super::resample::Window;

/// Scan blocks below which one thread is quicker than two (the hand-offs cost ~0.1 ms).
const MIN_SPLIT_BLOCKS: usize = 3000;

/// Files below which no helper is woken ahead (they are unlikely to be split).
const MIN_SPLIT_BYTES: usize = 16 << 10;

/// Photos being pre-processed now, across the server.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

struct Active;

impl Active {
    fn start() -> Active {
        ACTIVE.fetch_add(1, Ordering::Relaxed);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The tensor (`[C, H, W]` data, H, W, C) of a JPEG the fast decoder takes, or `None` for the
/// general path (another layout, a corrupt scan, a crop that pads).
pub fn prepare(bytes: &[u8], settings: &ImagePreprocess) -> Option<(Vec<f32>, u32, u32, usize)> {
    let _active = Active::start();
    prepare_on(
        bytes,
        settings,
        ACTIVE.load(Ordering::Relaxed) < crate::config::Config::cores(),
    )
}

/// [`prepare`], on two threads when `two` allows it.
fn prepare_on(
    bytes: &[u8],
    settings: &ImagePreprocess,
    two: bool,
) -> Option<(Vec<f32>, u32, u32, usize)> {
    if two && bytes.len() >= MIN_SPLIT_BYTES {
        // Wakes a helper now: it searches for work a little while before it sleeps again, so
        // the real hand-off below finds it awake instead of paying the wake-up once more.
        rayon::spawn(|| {});
    }
    let jpeg = Jpeg::open(bytes)
        .map_err(|reason| tracing::debug!(%reason, "JPEG left to the general decoder"))
        .ok()?;
    let channels = jpeg.channels();
    let wanted = match settings.color {
        ColorMode::Rgb => 3,
        ColorMode::Gray => 1,
    };
    if channels != wanted {
        return None;
    }
    let (width, height) = (jpeg.width() as u32, jpeg.height() as u32);
    let geometry = Geometry::new(width, height, settings);
    let placement = geometry.placement();
    let window = geometry.window;
    if placement.padded || window.x0 >= window.x1 || window.y0 >= window.y1 {
        return None;
    }
    let plane = geometry.out_width as usize * geometry.out_height as usize;
    let mut data = vec![0f32; channels * plane];
    let region = geometry.source_region(width, height);
    let needed = jpeg.needed_blocks(region);
    let two = two && needed >= MIN_SPLIT_BLOCKS && window.y1 - window.y0 >= 16;
    let split = two
        .then(|| Split::new(&jpeg, needed, jpeg.bits_for(needed)))
        .flatten();
    let mut targets: Vec<&mut [f32]> = data.chunks_exact_mut(plane).collect();
    let image = Image {
        jpeg,
        geometry,
        settings: settings.clone(),
    };
    match split {
        None => {
            let part = coefficients::serial(&image.jpeg, needed).ok()?;
            image.render(&coefficients::whole(&part), window, &mut targets)?;
        }
        Some(split) => two_threads(image, split, needed, &mut targets)?,
    }
    Some((data, geometry.out_height, geometry.out_width, channels))
}

/// What both threads render from.
struct Image {
    jpeg: Jpeg,
    geometry: Geometry,
    settings: ImagePreprocess,
}

impl Image {
    /// Rows `window` of the output, into `targets` (one per channel, those rows only).
    fn render(
        &self,
        coefficients: &Coefficients<'_>,
        window: Window,
        targets: &mut [&mut [f32]],
    ) -> Option<()> {
        let (width, height) = (self.jpeg.width() as u32, self.jpeg.height() as u32);
        let region = self.geometry.source_region_of(window, width, height);
        let decoded = self.jpeg.render(coefficients, region).ok()?;
        let pixels = pixels(decoded);
        let placement = Placement {
            visible_width: window.x1 - window.x0,
            out_width: self.geometry.out_width as usize,
            offset_x: 0,
            offset_y: 0,
            padded: false,
        };
        fill(
            &pixels,
            &self.settings,
            &self.geometry,
            window,
            &placement,
            targets,
        );
        super::scratch::give_bytes(pixels.data);
        Some(())
    }
}

fn pixels(decoded: Decoded) -> Pixels {
    Pixels {
        width: decoded.width as u32,
        height: decoded.height as u32,
        channels: decoded.channels,
        x0: decoded.region.x0,
        y0: decoded.region.y0,
        stride: decoded.region.x1 - decoded.region.x0,
        data: decoded.data,
    }
}

/// Spins (yielding now and then) until the other thread has set `slot`.
fn wait<T>(slot: &OnceLock<T>) -> &T {
    let mut spins = 0u32;
    loop {
        if let Some(value) = slot.get() {
            return value;
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// What the calling thread and the helper share. Owned (the helper may outlive the call: when
/// its core was busy and it started late, nobody waits for it).
struct Shared {
    image: Image,
    split: Split,
    top: Window,
    bottom: Window,
    heads: OnceLock<Option<Part>>,
    tails: OnceLock<Part>,
    /// Taken by whichever thread renders the bottom rows: the helper once its entropy half is
    /// done, or the calling thread after the top rows when the helper has not got there.
    bottom_claimed: AtomicBool,
    /// The helper's rendering of the bottom rows, one plane after another (`None`: it failed).
    bottom_rows: OnceLock<Option<Vec<f32>>>,
}

impl Shared {
    /// The coefficients once the head is done (and the tail, when they met).
    fn coefficients(&self) -> Option<Coefficients<'_>> {
        let head = wait(&self.heads).as_ref()?;
        coefficients::join(&self.image.jpeg, &self.split, head, || wait(&self.tails)).ok()
    }

    /// The helper's work: the tail, then the bottom rows unless the caller took them.
    fn help(&self) {
        let _ = self
            .tails
            .set(coefficients::tail(&self.image.jpeg, &self.split));
        if self.bottom_claimed.swap(true, Ordering::AcqRel) {
            return;
        }
        let rows = (|| {
            let coefficients = self.coefficients()?;
            let plane = (self.bottom.y1 - self.bottom.y0) * self.image.geometry.out_width as usize;
            let mut buffer = vec![0f32; plane * self.image.jpeg.channels()];
            let mut targets: Vec<&mut [f32]> = buffer.chunks_exact_mut(plane).collect();
            self.image
                .render(&coefficients, self.bottom, &mut targets)?;
            Some(buffer)
        })();
        let _ = self.bottom_rows.set(rows);
    }
}

/// The head and the top rows here, the tail and (usually) the bottom rows on one of rayon's
/// threads.
fn two_threads(
    image: Image,
    split: Split,
    needed: usize,
    targets: &mut [&mut [f32]],
) -> Option<()> {
    let window = image.geometry.window;
    let middle = window.y0 + (window.y1 - window.y0) / 2;
    let shared = Arc::new(Shared {
        top: Window {
            y1: middle,
            ..window
        },
        bottom: Window {
            y0: middle,
            ..window
        },
        image,
        split,
        heads: OnceLock::new(),
        tails: OnceLock::new(),
        bottom_claimed: AtomicBool::new(false),
        bottom_rows: OnceLock::new(),
    });
    let helper = Arc::clone(&shared);
    rayon::spawn(move || helper.help());
    let head = coefficients::head(&shared.image.jpeg, needed, Some(&shared.split)).ok();
    if head.is_none() {
        shared.split.abandon();
    }
    let _ = shared.heads.set(head);
    let coefficients = shared.coefficients()?;
    let at = (middle - window.y0) * shared.image.geometry.out_width as usize;
    let (mut tops, mut bottoms): (Vec<_>, Vec<_>) = targets
        .iter_mut()
        .map(|target| target.split_at_mut(at))
        .unzip();
    shared.image.render(&coefficients, shared.top, &mut tops)?;
    if !shared.bottom_claimed.swap(true, Ordering::AcqRel) {
        return shared
            .image
            .render(&coefficients, shared.bottom, &mut bottoms);
    }
    let rows = wait(&shared.bottom_rows).as_ref()?;
    let plane = rows.len() / bottoms.len().max(1);
    for (target, rows) in bottoms.iter_mut().zip(rows.chunks_exact(plane.max(1))) {
        target.copy_from_slice(rows);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::handler::image;

    /// One thread or two, the tensor is the one `decode` + `preprocess` give.
    #[test]
    fn two_threads_give_the_serial_tensor() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let source = ::image::open(root.join("tests/fixtures/chelsea.png")).unwrap();
        let resized = source
            .resize_exact(720, 720, ::image::imageops::FilterType::Triangle)
            .into_rgb8();
        let mut large = Vec::new();
        ::image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::Cursor::new(&mut large), 90)
            .encode_image(&resized)
            .unwrap();
        let chelsea = std::fs::read(root.join("tests/fixtures/chelsea.jpg")).unwrap();
        let mut settings = oxserve_archiver::HandlerConfig::builtin("image_classifier")
            .and_then(|config| config.image)
            .unwrap();
        for bytes in [&large, &chelsea] {
            for (resize, crop) in [(Some(256), Some(224)), (Some(200), None), (None, Some(160))] {
                settings.resize = resize;
                settings.center_crop = crop;
                let pixels = image::decode(bytes, &settings, true).unwrap();
                let (expected, height, width) = image::preprocess(&pixels, &settings).unwrap();
                for two in [false, true] {
                    let (data, h, w, channels) = prepare_on(bytes, &settings, two).unwrap();
                    assert_eq!((h, w, channels), (height, width, 3));
                    assert!(data == expected, "{resize:?}/{crop:?}, two threads: {two}");
                }
            }
        }
    }
}

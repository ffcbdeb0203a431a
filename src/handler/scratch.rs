//! Buffers kept between images, shared by all threads (a helper thread's buffers are often freed
//! by the thread it helped). A photo's coefficient blocks, planes, pixels and the resize's two
//! passes take a few MiB;
//! allocated afresh, each is a new mapping from the kernel, zeroed page by page and unmapped
//! again on free (glibc maps large blocks), and those page faults cost more than the decoding
//! they serve. Reused, they cost nothing. What a buffer held before is overwritten by whoever
//! takes it (every plane and pixel is written), so it is never cleared.

use std::sync::Mutex;

/// Buffers kept per kind, and the largest kept: an unusually large image's buffers are freed,
/// not kept. Two photos at once use about eight byte buffers and four block buffers (the resize
/// holds its two only while it runs; 16 kept instead of 12 made no difference).
const KEPT: usize = 12;
const LARGEST: usize = 16 << 20;
/// Byte buffers below this are allocated and zeroed afresh, and not kept: zeroing them costs
/// less than the pool's lock, which the workers of a small model (the digits CNN's 784-byte
/// images) would otherwise take from each other several times per request.
const SMALLEST: usize = 64 << 10;

static BYTES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
static BLOCKS: Mutex<Vec<Vec<[i16; 64]>>> = Mutex::new(Vec::new());

/// Runs `f` on a pool (a poisoned lock still holds valid buffers).
fn with<T, R>(pool: &Mutex<Vec<Vec<T>>>, f: impl FnOnce(&mut Vec<Vec<T>>) -> R) -> R {
    let mut kept = pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut kept)
}

/// A buffer of `len` bytes whose contents are unspecified (old pixels, or zeros). A kept buffer
/// that already holds `len` bytes is preferred: only the bytes past a buffer's length must be
/// zeroed (safe Rust has no uninitialised bytes), which for a photo's buffers is a few hundred
/// KiB of `memset` when a buffer last used for a smaller plane is handed a larger one.
pub fn bytes(len: usize) -> Vec<u8> {
    if len < SMALLEST {
        return vec![0; len];
    }
    let mut buffer = with(&BYTES, |kept| {
        let filled = (0..kept.len())
            .filter(|&index| kept[index].len() >= len)
            .min_by_key(|&index| kept[index].len());
        match filled {
            Some(index) => Some(kept.swap_remove(index)),
            None => take(kept, len),
        }
    })
    .unwrap_or_default();
    buffer.truncate(len);
    buffer.resize(len, 0);
    buffer
}

/// An empty byte buffer with room for `capacity` bytes.
pub fn empty_bytes(capacity: usize) -> Vec<u8> {
    empty(&BYTES, capacity)
}

/// An empty buffer with room for `capacity` coefficient blocks.
pub fn blocks(capacity: usize) -> Vec<[i16; 64]> {
    empty(&BLOCKS, capacity)
}

fn empty<T>(pool: &Mutex<Vec<Vec<T>>>, capacity: usize) -> Vec<T> {
    let mut buffer = with(pool, |kept| take(kept, capacity)).unwrap_or_default();
    buffer.clear();
    buffer.reserve(capacity);
    buffer
}

/// The kept buffer that fits `len` best: the smallest large enough, else the largest.
fn take<T>(kept: &mut Vec<Vec<T>>, len: usize) -> Option<Vec<T>> {
    let best = (0..kept.len()).min_by_key(|&index| {
        let capacity = kept[index].capacity();
        (
            capacity < len,
            if capacity >= len {
                capacity
            } else {
                usize::MAX - capacity
            },
        )
    })?;
    Some(kept.swap_remove(best))
}

fn keep<T>(kept: &mut Vec<Vec<T>>, buffer: Vec<T>) {
    if buffer.capacity() * std::mem::size_of::<T>() > LARGEST || buffer.capacity() == 0 {
        return;
    }
    if kept.len() >= KEPT {
        // Drop the smallest: the larger one serves more images.
        if let Some(smallest) = (0..kept.len()).min_by_key(|&index| kept[index].capacity()) {
            if kept[smallest].capacity() >= buffer.capacity() {
                return;
            }
            kept.swap_remove(smallest);
        }
    }
    kept.push(buffer);
}

pub fn give_bytes(buffer: Vec<u8>) {
    if buffer.capacity() < SMALLEST {
        return;
    }
    with(&BYTES, |kept| keep(kept, buffer));
}

pub fn give_blocks(buffer: Vec<[i16; 64]>) {
    with(&BLOCKS, |kept| keep(kept, buffer));
}

//! Entropy decoding into stored coefficient blocks, by one thread or by two.
//!
//! One thread ([`serial`]) walks the scan from the start. Two split it without restart markers,
//! which photos rarely have: the *head* thread decodes from the start, the *tail* thread from a
//! byte in the middle, not knowing where in the MCU structure it landed. Huffman codes
//! resynchronise: after a few blocks of garbage the tail decodes the same blocks a sequential
//! decoder would. The tail records where each of its blocks starts (bit position and slot in
//! the MCU); once the head reaches a block that starts at a recorded position with the same slot,
//! every block the tail decoded from there on is exactly the sequential decoder's (decoding is a
//! function of the position and the slot alone), and the head stops. Only the DC predictions
//! differ, by a constant per component, which [`Coefficients::block`] adds back. The result is
//! the sequential one whatever the file holds; when the two never meet, the head decodes
//! everything.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::entropy::{BitReader, Corrupt, Scan};
use super::{Fallback, Jpeg};
use crate::handler::scratch;

/// Decoded blocks in scan order, with each one's highest zigzag index (0: DC only).
#[derive(Default)]
pub struct Part {
    blocks: Vec<[i16; 64]>,
    last: Vec<u8>,
    /// Head: its DC predictions before the block where it met the tail.
    predictions: [i32; 3],
    /// Tail: the indices where it started decoding again (after garbage).
    restarts: Vec<usize>,
}

impl Part {
    fn with_capacity(blocks: usize) -> Part {
        Part {
            blocks: scratch::blocks(blocks),
            last: scratch::empty_bytes(blocks),
            predictions: [0; 3],
            restarts: Vec::new(),
        }
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        scratch::give_blocks(std::mem::take(&mut self.blocks));
        scratch::give_bytes(std::mem::take(&mut self.last));
    }
}

/// The blocks of the scan up to those a region needs: the head's, then the tail's from where
/// the two met.
pub struct Coefficients<'a> {
    head: &'a Part,
    tail: Option<Tail<'a>>,
}

struct Tail<'a> {
    part: &'a Part,
    /// The tail's index of the block that is block `head.blocks.len()` of the scan.
    first: usize,
    /// What to add to each slot's DC coefficient (per component, indexed by slot).
    dc_offset: Vec<i16>,
}

impl<'a> Coefficients<'a> {
    /// Block `index` of the scan (scan order, `slot = index % blocks per MCU`), its highest
    /// zigzag index, and what to add to its DC coefficient. `None` past the decoded blocks.
    #[inline(always)]
    pub fn block(&self, index: usize, slot: usize) -> Option<(&'a [i16; 64], u8, i16)> {
        let head = self.head;
        if index < head.blocks.len() {
            return Some((&head.blocks[index], head.last[index], 0));
        }
        let tail = self.tail.as_ref()?;
        let at = index - head.blocks.len() + tail.first;
        Some((
            tail.part.blocks.get(at)?,
            tail.part.last[at],
            tail.dc_offset[slot],
        ))
    }
}

impl Coefficients<'_> {
    /// Asks the CPU to bring block `index` into its cache (nothing when it is not decoded). The
    /// blocks are megabytes written by the entropy decoder earlier, mostly out of the nearer
    /// caches when the transform reads them: without this, a quarter of the transform's time
    /// went to the loads of its blocks.
    #[inline(always)]
    pub fn prefetch(&self, index: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some((block, ..)) = self.block(index, 0) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let pointer = block.as_ptr().cast::<i8>();
            // The block's 128 bytes span two cache lines, or three (a block is only 2-aligned).
            for offset in [0, 64, 127] {
                #[allow(unsafe_code)]
                // SAFETY: a prefetch reads nothing and never faults; the offsets are inside
                // the block.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(pointer.add(offset))
                };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = index;
    }
}

/// What the head and tail threads share.
pub struct Split {
    /// The byte of the unstuffed scan the tail starts at.
    start: usize,
    /// Blocks the region needs (the head's and the tail's together).
    needed: usize,
    /// Where each of the tail's blocks starts: `bit position << 8 | slot`.
    starts: Vec<AtomicU64>,
    /// How many of `starts` (and of the tail's blocks) are written.
    published: AtomicUsize,
    /// The tail stopped: at the end of the data, at its last needed block, or told to.
    finished: AtomicBool,
    /// Set by the head: `head block index << 32 | tail index`, plus one (0: not met).
    met: AtomicU64,
    /// Set by the head when it will decode everything itself.
    abandoned: AtomicBool,
    /// The tail met a corrupt block after the meeting point: the file is corrupt.
    corrupt: AtomicBool,
}

impl Split {
    /// A split for a scan whose needed blocks' data is about `needed_bits` long, or `None` when
    /// the scan has restart intervals (left to one thread).
    pub fn new(jpeg: &Jpeg, needed: usize, needed_bits: usize) -> Option<Split> {
        // The tail thread starts later (a sleeping core must wake): it takes a little less.
        Split::at(jpeg, needed, needed_bits * 27 / 50 / 8)
    }

    /// A split whose tail starts at byte `start` of the unstuffed scan.
    pub fn at(jpeg: &Jpeg, needed: usize, start: usize) -> Option<Split> {
        if jpeg.scan.intervals.len() > 2 || needed < 64 {
            return None;
        }
        Some(Split {
            start,
            needed,
            starts: (0..needed).map(|_| AtomicU64::new(0)).collect(),
            published: AtomicUsize::new(0),
            finished: AtomicBool::new(false),
            met: AtomicU64::new(0),
            abandoned: AtomicBool::new(false),
            corrupt: AtomicBool::new(false),
        })
    }
}

impl Split {
    /// Tells the tail to stop: the head failed.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
    }
}

/// The tables and component of each slot of an MCU.
fn slot_tables(jpeg: &Jpeg) -> Vec<usize> {
    jpeg.layout
        .slots
        .iter()
        .map(|slot| slot.component)
        .collect()
}

/// One thread: blocks `0..needed` from the start of the scan.
pub fn serial(jpeg: &Jpeg, needed: usize) -> Result<Part, Fallback> {
    head(jpeg, needed, None)
}

/// Defines `$name` as `$inner` (an `#[inline(always)]` function with the same arguments),
/// compiled a second time with BMI2 and that copy run when the CPU has it. The entropy decoder's
/// critical path is a chain of variable shifts (peek, consume) and table loads: BMI2's
/// `shlx`/`shrx` are one micro-op without the flags dependency of `shl cl`.
macro_rules! with_bmi2 {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $type:ty),*) -> $output:ty = $inner:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $type),*) -> $output {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("bmi2") {
                #[allow(unsafe_code)]
                #[target_feature(enable = "bmi2")]
                unsafe fn bmi2($($arg: $type),*) -> $output {
                    $inner($($arg),*)
                }
                #[allow(unsafe_code)]
                // SAFETY: the CPU has BMI2 (checked above); the function is safe Rust.
                return unsafe { bmi2($($arg),*) };
            }
            $inner($($arg),*)
        }
    };
}

with_bmi2! {
    /// The head: blocks from the start until it meets the tail (or all `needed` of them).
    head(jpeg: &Jpeg, needed: usize, split: Option<&Split>) -> Result<Part, Fallback> = head_on
}

#[inline(always)]
fn head_on(jpeg: &Jpeg, needed: usize, split: Option<&Split>) -> Result<Part, Fallback> {
    let scan: &Scan = &jpeg.scan;
    let components = slot_tables(jpeg);
    let per_mcu = components.len();
    let restart = jpeg.header.restart_interval * per_mcu;
    let mut part = Part::with_capacity(if split.is_some() {
        needed / 2 + needed / 8
    } else {
        needed
    });
    let mut predictions = [0i32; 3];
    let mut interval = 0;
    let mut reader = BitReader::new(&scan.data, scan.intervals[0]);
    // The tail's record the head compares with next; `None` once there is nothing to meet.
    let mut cursor = split.map(|_| 0usize);
    let split_bits = split.map_or(usize::MAX, |split| split.start * 8);
    // Counters instead of `index % per_mcu` and `index % restart`: a division per block is
    // measurable here.
    let mut slot = per_mcu - 1;
    let mut to_restart = restart;
    for index in 0..needed {
        slot = if slot + 1 == per_mcu { 0 } else { slot + 1 };
        if restart > 0 && to_restart == 0 {
            to_restart = restart;
            if reader.bit_position() > scan.intervals[interval + 1] * 8
                || interval + 2 >= scan.intervals.len()
            {
                return Err(Fallback::Corrupt);
            }
            interval += 1;
            reader = BitReader::new(&scan.data, scan.intervals[interval]);
            predictions = [0; 3];
        }
        if let (Some(split), Some(at)) = (split, cursor) {
            let position = reader.bit_position();
            if position >= split_bits {
                match meet(split, at, position, slot) {
                    Meeting::Met(tail_index) => {
                        part.predictions = predictions;
                        let met = ((index as u64) << 32 | tail_index as u64) + 1;
                        split.met.store(met, Ordering::Release);
                        return Ok(part);
                    }
                    Meeting::NotYet(next) => cursor = Some(next),
                    Meeting::Never => {
                        split.abandoned.store(true, Ordering::Release);
                        cursor = None;
                    }
                }
            }
        }
        to_restart = to_restart.wrapping_sub(1);
        let component = components[slot];
        let (dc, ac) = jpeg.tables(component);
        part.blocks.push([0; 64]);
        let block = part.blocks.last_mut().ok_or(Fallback::Corrupt)?;
        let last = reader.block(dc, ac, &mut predictions[component], block)?;
        part.last.push(last as u8);
    }
    if let Some(split) = split {
        split.abandoned.store(true, Ordering::Release);
    }
    if reader.bit_position() > scan.intervals[interval + 1] * 8 {
        // Read past the end of the interval's bytes: the file lacks data libjpeg would have
        // padded with zeros, with a warning.
        return Err(Fallback::Corrupt);
    }
    Ok(part)
}

/// How long the head waits for the tail's records before it goes on alone.
const MAX_WAIT: Duration = Duration::from_micros(300);

enum Meeting {
    Met(usize),
    NotYet(usize),
    Never,
}

/// Whether a tail block starts at `position` with `slot`, scanning the tail's records from
/// `cursor` (waiting for the tail when it has not got that far yet).
fn meet(split: &Split, mut cursor: usize, position: usize, slot: usize) -> Meeting {
    let mut spins = 0u32;
    let mut waited: Option<Instant> = None;
    loop {
        let published = split.published.load(Ordering::Acquire);
        while cursor < published {
            let record = split.starts[cursor].load(Ordering::Relaxed);
            let (at, at_slot) = ((record >> 8) as usize, (record & 0xFF) as usize);
            if at > position {
                return Meeting::NotYet(cursor);
            }
            if at == position && at_slot == slot {
                return Meeting::Met(cursor);
            }
            cursor += 1;
        }
        if split.finished.load(Ordering::Acquire)
            && cursor >= split.published.load(Ordering::Acquire)
        {
            return Meeting::Never;
        }
        // The tail is behind (it started later, or its core is busy): wait a little, then go on
        // alone rather than spin on a core the tail may need.
        spins += 1;
        if spins.is_multiple_of(64) {
            if waited.get_or_insert_with(Instant::now).elapsed() > MAX_WAIT {
                return Meeting::Never;
            }
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

with_bmi2! {
    /// The tail: blocks from `split.start` until the head meets it and the needed blocks are
    /// done, or the data ends, or the head goes on alone.
    tail(jpeg: &Jpeg, split: &Split) -> Part = tail_on
}

#[inline(always)]
fn tail_on(jpeg: &Jpeg, split: &Split) -> Part {
    let scan = &jpeg.scan;
    let components = slot_tables(jpeg);
    let per_mcu = components.len();
    let end_bits = scan.intervals[1] * 8;
    let mut part = Part::with_capacity(split.needed);
    let mut predictions = [0i32; 3];
    let mut reader = BitReader::new(&scan.data, split.start);
    let mut slot = 0;
    let mut target = usize::MAX;
    loop {
        let index = part.blocks.len();
        if index.is_multiple_of(16) {
            split.published.store(index, Ordering::Release);
        }
        if target == usize::MAX {
            let met = split.met.load(Ordering::Acquire);
            if met != 0 {
                let met = met - 1;
                let (head_index, tail_index) = ((met >> 32) as usize, (met & 0xFFFF_FFFF) as usize);
                target = tail_index + (split.needed - head_index);
            } else if split.abandoned.load(Ordering::Relaxed) {
                break;
            }
        }
        let position = reader.bit_position();
        if index >= target || index >= split.needed || position >= end_bits {
            break;
        }
        let component = components[slot];
        let (dc, ac) = jpeg.tables(component);
        // Decoded in place, as the head does: through a block on the stack, the copy and the
        // clearing took ~15 % of the tail's time (680 µs for its half of a photo, 590 now).
        part.blocks.push([0; 64]);
        let Some(block) = part.blocks.last_mut() else {
            break;
        };
        match reader.block(dc, ac, &mut predictions[component], block) {
            Ok(last) => {
                split.starts[index].store((position as u64) << 8 | slot as u64, Ordering::Relaxed);
                part.last.push(last as u8);
                slot = if slot + 1 == per_mcu { 0 } else { slot + 1 };
            }
            Err(Corrupt) if target != usize::MAX => {
                // Past the meeting point the tail decodes real blocks: the file is corrupt.
                part.blocks.pop();
                split.corrupt.store(true, Ordering::Release);
                break;
            }
            Err(Corrupt) => {
                // Not in step yet: start again a byte further on.
                part.blocks.pop();
                reader = BitReader::new(&scan.data, position / 8 + 1);
                predictions = [0; 3];
                slot = 0;
                part.restarts.push(index);
            }
        }
    }
    split.published.store(part.blocks.len(), Ordering::Release);
    split.finished.store(true, Ordering::Release);
    part
}

/// The two parts as one scan (the head's alone when it decoded everything; `tail` is only
/// called when the tail's part is needed), or `Err` when the tail found the file corrupt.
pub fn join<'a>(
    jpeg: &Jpeg,
    split: &Split,
    head: &'a Part,
    tail: impl FnOnce() -> &'a Part,
) -> Result<Coefficients<'a>, Fallback> {
    let met = split.met.load(Ordering::Acquire);
    if met == 0 {
        return Ok(Coefficients { head, tail: None });
    }
    // They met: the tail's blocks are needed (it has got that far, it is running).
    let tail = tail();
    if split.corrupt.load(Ordering::Acquire) {
        return Err(Fallback::Corrupt);
    }
    let first = ((met - 1) & 0xFFFF_FFFF) as usize;
    let components = slot_tables(jpeg);
    let per_mcu = components.len();
    let needed_from_tail = split.needed - head.blocks.len();
    if tail.blocks.len() < first + needed_from_tail {
        // The data ended before the blocks the region needs.
        return Err(Fallback::Corrupt);
    }
    // The tail's prediction per component just before `first`: the DC of its last block of that
    // component since it last started again (0 before any), at most one MCU back.
    let restarted = tail
        .restarts
        .iter()
        .copied()
        .filter(|&restart| restart <= first)
        .max()
        .unwrap_or(0);
    let mut tail_predictions = [0i16; 3];
    let mut found = [false; 3];
    for index in (restarted..first).rev().take(per_mcu) {
        let slot = (split.starts[index].load(Ordering::Relaxed) & 0xFF) as usize;
        let component = components[slot];
        if !found[component] {
            found[component] = true;
            tail_predictions[component] = tail.blocks[index][0];
        }
    }
    let dc_offset = components
        .iter()
        .map(|&component| {
            (head.predictions[component] as i16).wrapping_sub(tail_predictions[component])
        })
        .collect();
    Ok(Coefficients {
        head,
        tail: Some(Tail {
            part: tail,
            first,
            dc_offset,
        }),
    })
}

/// One thread's coefficients as [`Coefficients`].
pub fn whole(part: &Part) -> Coefficients<'_> {
    Coefficients {
        head: part,
        tail: None,
    }
}

#[cfg(test)]
mod tests;

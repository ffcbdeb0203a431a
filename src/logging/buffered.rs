//! A log file written in batches. `tracing_appender::non_blocking` hands every line to its own
//! thread, which wakes up and makes a `write` call per line: with an access line and metric lines
//! per request, that is several thread wake-ups per request, which on a 2-core machine cost
//! more CPU than the HTTP handling itself. Here a line is appended to an in-memory buffer under a
//! short lock; one thread per file writes the buffer out every [`FLUSH_EVERY`] (sooner when it
//! grows past `EAGER_BYTES`), and everything left is written when the guard drops.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in memory.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this large is written out at once.
const EAGER_BYTES: usize = 256 * 1024;
/// Past this, lines are dropped (the disk is not keeping up) rather than growing without bound.
const MAX_BYTES: usize = 64 * 1024 * 1024;

struct Shared {
    buffer: Mutex<Vec<u8>>,
    wake: Condvar,
    closing: AtomicBool,
    dropped_warned: AtomicBool,
}

/// The `MakeWriter` a fmt layer writes its lines through.
#[derive(Clone)]
pub struct BufferedFile {
    shared: Arc<Shared>,
}

/// Owns the file's writer thread; dropping it writes what is buffered and stops the thread.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BufferedFile {
    /// Starts the writer thread for `file`.
    pub fn new(file: File, name: &str) -> std::io::Result<(BufferedFile, FlushGuard)> {
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            closing: AtomicBool::new(false),
            dropped_warned: AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("log-{name}"))
            .spawn(move || write_out(&thread_shared, file))?;
        Ok((
            BufferedFile {
                shared: Arc::clone(&shared),
            },
            FlushGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }
}

/// Capacity the writer thread keeps between rounds (see [`write_out`]); a burst's larger buffer
/// is given back.
const KEPT_BYTES: usize = 2 * EAGER_BYTES;

fn write_out(shared: &Shared, mut file: File) {
    // Two buffers take turns: the one just written out becomes the next to fill, so appends
    // reuse its capacity instead of growing a fresh Vec from empty each round (a fresh one is
    // reallocated and copied, and page-faulted, as it doubles on the request path).
    let mut spare: Vec<u8> = Vec::with_capacity(EAGER_BYTES);
    loop {
        let mut pending = {
            let Ok(buffer) = shared.buffer.lock() else {
                return;
            };
            let Ok((mut buffer, _)) =
                shared
                    .wake
                    .wait_timeout_while(buffer, FLUSH_EVERY, |buffer| {
                        buffer.len() < EAGER_BYTES && !shared.closing.load(Ordering::Acquire)
                    })
            else {
                return;
            };
            std::mem::replace(&mut *buffer, std::mem::take(&mut spare))
        };
        if !pending.is_empty() {
            if let Err(error) = file.write_all(&pending) {
                eprintln!("oxserve: cannot write a log file: {error}");
            }
        }
        pending.clear();
        pending.shrink_to(KEPT_BYTES);
        spare = pending;
        if shared.closing.load(Ordering::Acquire) {
            let rest = shared
                .buffer
                .lock()
                .map(|mut buffer| std::mem::take(&mut *buffer))
                .unwrap_or_default();
            let _ = file.write_all(&rest);
            let _ = file.flush();
            return;
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event's writes into the shared buffer.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Shared {
    fn append(&self, bytes: &[u8]) {
        let Ok(mut buffer) = self.buffer.lock() else {
            return;
        };
        if buffer.len() + bytes.len() > MAX_BYTES {
            if !self.dropped_warned.swap(true, Ordering::Relaxed) {
                eprintln!("oxserve: a log file is not being written fast enough; dropping lines");
            }
            return;
        }
        buffer.extend_from_slice(bytes);
        if buffer.len() >= EAGER_BYTES {
            self.wake.notify_one();
        }
    }
}

impl BufferedFile {
    /// Appends whole lines (see [`crate::logging::write_line`]).
    pub fn append(&self, bytes: &[u8]) {
        self.shared.append(bytes);
    }
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.shared.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedFile {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_in_order_by_the_flush_interval_and_at_drop() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.log");
        let file = File::create(&path).expect("file");
        let (writer, guard) = BufferedFile::new(file, "a").expect("writer");
        for line in 0..1000 {
            writeln!(writer.make_writer(), "line {line}").expect("write");
        }
        std::thread::sleep(FLUSH_EVERY * 3);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 1000, "written within the interval");
        writeln!(writer.make_writer(), "last").expect("write");
        drop(guard);
        let text = std::fs::read_to_string(&path).expect("read");
        let expected: Vec<String> = (0..1000)
            .map(|line| format!("line {line}"))
            .chain(["last".to_string()])
            .collect();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    }
}

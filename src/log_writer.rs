//! The log sink: lines formatted on the request's thread, written in batches by one thread.
//!
//! Every request logs one access line. Writing each with its own `write(2)`, or waking a
//! writer thread per line, costs more CPU than the rest of a warm signature's bookkeeping. Here
//! a line is appended to a shared buffer; the first line into an empty buffer wakes the
//! flusher thread, which lets more lines gather for up to [`GATHER`] (less if the buffer fills
//! past [`EAGER_BYTES`]) and writes them with one call. Nothing is dropped: when the sink falls
//! behind and [`MAX_PENDING_BYTES`] are waiting, loggers wait for the flusher. Dropping the
//! [`FlushGuard`] writes what is left and stops the thread.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the flusher lets lines gather after the first one.
pub const GATHER: Duration = Duration::from_millis(2);
/// The flusher writes at once when this much is waiting.
pub const EAGER_BYTES: usize = 64 * 1024;
/// Loggers wait when this much is waiting.
pub const MAX_PENDING_BYTES: usize = 1024 * 1024;

/// A [`tracing_subscriber::fmt::MakeWriter`]: each event's formatted line goes to the shared
/// buffer.
#[derive(Clone)]
pub struct LineWriter {
    shared: Arc<Shared>,
}

/// Stops the flusher thread when dropped, after it wrote every line logged before.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// To the flusher: lines arrived, the buffer filled, or the guard was dropped.
    wake: Condvar,
    /// To waiting loggers: the buffer was taken.
    drained: Condvar,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A buffer and a flag, consistent between statements: nothing half-done after a panic.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the flusher thread writing to `sink`.
pub fn spawn(sink: impl Write + Send + 'static) -> io::Result<(LineWriter, FlushGuard)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
        drained: Condvar::new(),
    });
    let flushing = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || flush_until_closed(&flushing, sink))?;
    Ok((
        LineWriter {
            shared: shared.clone(),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn flush_until_closed(shared: &Shared, mut sink: impl Write) {
    let mut spare = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.bytes.is_empty() && !pending.closed {
            pending = shared
                .wake
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.bytes.is_empty() {
            return; // closed, and everything written
        }
        if !pending.closed && pending.bytes.len() < EAGER_BYTES {
            pending = shared
                .wake
                .wait_timeout_while(pending, GATHER, |p| {
                    p.bytes.len() < EAGER_BYTES && !p.closed
                })
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut pending.bytes, &mut spare);
        drop(pending);
        shared.drained.notify_all();
        // A log line that cannot be written has nowhere else to go.
        let _ = sink.write_all(&spare).and_then(|()| sink.flush());
        spare.clear();
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Write for &LineWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = &self.shared;
        let mut pending = shared.lock();
        while pending.bytes.len() >= MAX_PENDING_BYTES && !pending.closed {
            pending = shared
                .drained
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.closed {
            // The guard is gone (the process is exiting): straight to stderr.
            drop(pending);
            return io::stderr().write(line);
        }
        let was_empty = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(line);
        let filled = pending.bytes.len() >= EAGER_BYTES;
        drop(pending);
        if was_empty || filled {
            shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineWriter {
    type Writer = &'a LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read, optionally slow.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
        delay: Duration,
    }

    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            std::thread::sleep(self.delay);
            self.bytes.lock().unwrap().extend_from_slice(data);
            *self.writes.lock().unwrap() += 1;
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// `threads` threads log `lines` lines of `width` characters each through a writer to
    /// `sink`; then the guard is dropped and every line must have arrived whole, each thread's
    /// in order.
    fn log_and_check(sink: &Sink, threads: usize, lines: usize, width: usize) {
        let (writer, guard) = spawn(sink.clone()).unwrap();
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let writer = writer.clone();
                scope.spawn(move || {
                    for n in 0..lines {
                        let line = format!("{thread} {n} {}\n", "x".repeat(width));
                        (&writer).write_all(line.as_bytes()).unwrap();
                    }
                });
            }
        });
        drop(guard);
        let bytes = sink.bytes.lock().unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        let mut next = vec![0; threads];
        for line in text.lines() {
            let mut parts = line.split(' ');
            let thread: usize = parts.next().unwrap().parse().unwrap();
            let n: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(parts.next().unwrap().len(), width, "a torn line: {line:?}");
            assert_eq!(n, next[thread], "thread {thread}'s lines out of order");
            next[thread] += 1;
        }
        assert_eq!(next, vec![lines; threads], "lines lost");
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_in_order_and_batched() {
        let sink = Sink::default();
        log_and_check(&sink, 4, 5_000, 40);
        let writes = *sink.writes.lock().unwrap();
        assert!(
            writes < 20_000 / 4,
            "{writes} writes for 20 000 lines: not batched"
        );
    }

    #[test]
    fn a_slow_sink_makes_loggers_wait_and_loses_nothing() {
        let sink = Sink {
            delay: Duration::from_millis(20),
            ..Sink::default()
        };
        // 2 threads × 2 000 lines × ~1 KiB: over MAX_PENDING_BYTES while the sink sleeps.
        log_and_check(&sink, 2, 2_000, 1_000);
    }

    #[test]
    fn a_line_is_written_soon_without_more_lines_or_a_drop() {
        let sink = Sink::default();
        let (writer, _guard) = spawn(sink.clone()).unwrap();
        (&writer).write_all(b"lonely\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.bytes.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.bytes.lock().unwrap().as_slice(), b"lonely\n");
    }
}

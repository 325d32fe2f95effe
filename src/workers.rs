//! Sessions run on one single-threaded runtime per core. A session's sockets,
//! timers and wake-ups then stay on one thread: forwarding a command needs no
//! hand-off between threads, which on a small VM cost more than the proxying
//! itself (futex parks, eventfd wake-ups, inter-processor interrupts).

use std::{future::Future, io};

use tokio::runtime::{Builder, Handle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

struct Worker {
    handle: Handle,
    /// Sessions running on it, to place a new one on the least loaded.
    /// (A tracker wraps the future in place; an `async` wrapper would store
    /// the session's future twice.)
    sessions: TaskTracker,
}

/// The session threads; they stop (dropping what still runs on them) when
/// this is dropped.
pub struct Workers {
    workers: Vec<Worker>,
    stop: CancellationToken,
}

/// One per two available CPUs, at least one. Three quarters of the CPU a
/// forwarded command costs is the kernel's (system calls, the network stack,
/// waking the peer), and a proxy shares its machine with the network's
/// interrupts, often with a store: on 2 vCPUs beside Dovecot, a second worker
/// raised the CPU per command by a quarter and forwarded no more
/// (`benches/README.md`). One worker forwards about 30,000 commands a second.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2))
}

impl Workers {
    /// Starts `n` (at least one) worker threads.
    pub fn new(n: usize) -> io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        for i in 0..n.max(1) {
            let runtime = Builder::new_current_thread()
                .enable_all()
                // Byte counts gather per thread while it works (see
                // `metrics::count_bytes`) and are published when it rests.
                .on_thread_park(crate::metrics::flush_bytes)
                .build()?;
            let handle = runtime.handle().clone();
            let stopped = stop.clone();
            std::thread::Builder::new()
                .name(format!("ferry-worker-{i}"))
                .spawn(move || runtime.block_on(stopped.cancelled()))?;
            workers.push(Worker {
                handle,
                sessions: TaskTracker::new(),
            });
        }
        Ok(Workers { workers, stop })
    }

    /// Runs `session` on the worker with the fewest sessions. Sessions live
    /// long, so balancing by count keeps the cores evenly used.
    pub fn spawn<F>(&self, session: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.sessions.len())
            .expect("at least one worker");
        worker.handle.spawn(worker.sessions.track_future(session));
    }

    /// Sessions running on each worker.
    #[cfg(test)]
    fn loads(&self) -> Vec<usize> {
        self.workers.iter().map(|w| w.sessions.len()).collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Never joins: the last owner may itself run on a worker.
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_go_to_the_least_loaded_worker_and_are_counted_out() {
        let workers = Workers::new(2).unwrap();
        let (release, wait) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            let mut wait = wait.clone();
            workers.spawn(async move {
                let _ = wait.wait_for(|go| *go).await;
            });
        }
        assert_eq!(workers.loads(), vec![2, 2]);
        release.send_replace(true);
        for _ in 0..200 {
            if workers.loads() == vec![0, 0] {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("sessions not counted out: {:?}", workers.loads());
    }
}

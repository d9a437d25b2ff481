//! Worker-wide bounds: how many images download at once and how many decoders run at once.
//! Both are FIFO semaphores (tokio's are fair), so when many jobs start together they are
//! served in arrival order instead of all competing for the CPU and the link.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Gauge;

/// A semaphore that keeps its queue depth and its use in two gauges.
#[derive(Debug, Clone)]
pub(crate) struct Slots {
    sem: Arc<Semaphore>,
    queued: Gauge,
    active: Gauge,
}

/// A held slot; releases itself (and the `active` gauge) when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    active: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.active.add(-1);
    }
}

/// Decrements the queue gauge even when the waiting future is dropped (a cancelled job).
struct Waiting(Gauge);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

impl Slots {
    pub fn new(n: usize, queued: Gauge, active: Gauge) -> Self {
        Self {
            sem: Arc::new(Semaphore::new(n.max(1))),
            queued,
            active,
        }
    }

    /// Waits for a slot, in arrival order.
    pub async fn acquire(&self) -> Slot {
        self.queued.add(1);
        let waiting = Waiting(self.queued.clone());
        // The semaphore is never closed, so acquiring only fails if it were.
        let permit = self.sem.clone().acquire_owned().await.ok();
        drop(waiting);
        self.active.add(1);
        Slot {
            _permit: permit,
            active: self.active.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_depth_and_fifo_order() {
        let q = Gauge::default();
        let a = Gauge::default();
        let slots = Slots::new(1, q.clone(), a.clone());
        let first = slots.acquire().await;
        assert_eq!(a.get(), 1.0);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let slots = slots.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let _s = slots.acquire().await;
                order.lock().unwrap().push(i);
            }));
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(q.get(), 3.0);
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        assert_eq!((q.get(), a.get()), (0.0, 0.0));
    }
}

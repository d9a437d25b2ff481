//! Single flight: concurrent requests for the same URL in this process queue behind one leader,
//! which downloads into the cache; the others then find the entry and read it from disk. A
//! follower that waited for a leader reuses the leader's fresh validation instead of asking the
//! server again. Across processes (`labd fetch` beside the daemon) the same is done with a lock
//! file, see `Cache::lock_url`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OwnedMutexGuard;

#[derive(Debug, Default)]
struct State {
    lock: Arc<tokio::sync::Mutex<()>>,
    validated: Mutex<Option<Instant>>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Flights {
    map: Arc<Mutex<HashMap<String, Arc<State>>>>,
}

/// Being the only one in this process working on a URL.
#[derive(Debug)]
pub(crate) struct FlightGuard {
    guard: Option<OwnedMutexGuard<()>>,
    state: Arc<State>,
    key: String,
    flights: Flights,
    /// When this request started waiting.
    pub since: Instant,
}

impl Flights {
    pub async fn enter(&self, key: &str) -> FlightGuard {
        let since = Instant::now();
        let state = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = state.lock.clone().lock_owned().await;
        FlightGuard {
            guard: Some(guard),
            state,
            key: key.to_string(),
            flights: self.clone(),
            since,
        }
    }
}

impl FlightGuard {
    /// True if another request validated or stored this URL while we waited.
    pub fn validated_while_waiting(&self) -> bool {
        self.state
            .validated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t >= self.since)
    }

    pub fn mark_validated(&self) {
        *self
            .state
            .validated
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.flights.map.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and this guard hold it: nobody waits, forget the URL.
        if Arc::strong_count(&self.state) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_see_the_leaders_validation() {
        let f = Flights::default();
        let leader = f.enter("u").await;
        let f2 = f.clone();
        let follower = tokio::spawn(async move {
            let g = f2.enter("u").await;
            g.validated_while_waiting()
        });
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        leader.mark_validated();
        drop(leader);
        assert!(follower.await.unwrap());
        let late = f.enter("u").await;
        assert!(!late.validated_while_waiting());
        drop(late);
        assert!(f.map.lock().unwrap().is_empty());
    }
}

//! Metrics: one process-wide registry that every domain adds counters and gauges to, rendered in
//! the Prometheus text format by an optional HTTP endpoint (`[metrics] listen`).
//!
//! Hot paths keep the returned handle (an `Arc` of an atomic), so counting a console byte is one
//! relaxed atomic add; the registry lock is only taken to create a series or to render.

pub mod config;
mod server;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

pub use server::serve;

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down. Floats are stored as their bits (`set_f64`).
#[derive(Debug, Clone, Default)]
pub struct Gauge {
    value: Arc<AtomicI64>,
    float: Arc<std::sync::atomic::AtomicBool>,
}

impl Gauge {
    pub fn set(&self, v: i64) {
        self.float.store(false, Ordering::Relaxed);
        self.value.store(v, Ordering::Relaxed);
    }
    pub fn set_f64(&self, v: f64) {
        self.float.store(true, Ordering::Relaxed);
        self.value.store(v.to_bits() as i64, Ordering::Relaxed);
    }
    pub fn add(&self, d: i64) {
        self.value.fetch_add(d, Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        let raw = self.value.load(Ordering::Relaxed);
        if self.float.load(Ordering::Relaxed) {
            f64::from_bits(raw as u64)
        } else {
            raw as f64
        }
    }
}

#[derive(Debug, Clone)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: &'static str,
    series: BTreeMap<Vec<(String, String)>, Series>,
}

/// The set of all metric families. Use [`global`] in the daemon; tests may make their own.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

fn labels_key(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

impl Registry {
    fn series(
        &self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Series,
    ) -> Series {
        let mut fams = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let fam = fams.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        fam.series
            .entry(labels_key(labels))
            .or_insert_with(make)
            .clone()
    }

    /// The counter `name{labels}`, created at zero on first use.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Counter {
        match self.series(name, help, "counter", labels, || {
            Series::Counter(Counter::default())
        }) {
            Series::Counter(c) => c,
            Series::Gauge(_) => Counter::default(), // name reused with another type: detached
        }
    }

    /// The gauge `name{labels}`, created at zero on first use.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        match self.series(name, help, "gauge", labels, || {
            Series::Gauge(Gauge::default())
        }) {
            Series::Gauge(g) => g,
            Series::Counter(_) => Gauge::default(),
        }
    }

    /// Forgets one series (a device removed on reload, say).
    pub fn remove(&self, name: &str, labels: &[(&str, &str)]) {
        let mut fams = self.families.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = fams.get_mut(name) {
            f.series.remove(&labels_key(labels));
        }
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let fams = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, fam) in fams.iter() {
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {}", fam.kind);
            for (labels, series) in &fam.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                    }
                    out.push('}');
                }
                match series {
                    Series::Counter(c) => {
                        let _ = writeln!(out, " {}", c.get());
                    }
                    Series::Gauge(g) => {
                        let _ = writeln!(out, " {}", g.get());
                    }
                }
            }
        }
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

static GLOBAL: LazyLock<Registry> = LazyLock::new(Registry::default);

/// The daemon's registry.
pub fn global() -> &'static Registry {
    &GLOBAL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::default();
        let c = r.counter(
            "labd_console_bytes_in_total",
            "Bytes read from boards.",
            &[("device", "bbb01")],
        );
        c.inc_by(42);
        r.counter(
            "labd_console_bytes_in_total",
            "Bytes read from boards.",
            &[("device", "bbb01")],
        )
        .inc();
        r.gauge(
            "labd_device_online",
            "1 when the console is open.",
            &[("device", "a\"b")],
        )
        .set(1);
        let text = r.render();
        assert_eq!(
            text,
            "# HELP labd_console_bytes_in_total Bytes read from boards.\n\
             # TYPE labd_console_bytes_in_total counter\n\
             labd_console_bytes_in_total{device=\"bbb01\"} 43\n\
             # HELP labd_device_online 1 when the console is open.\n\
             # TYPE labd_device_online gauge\n\
             labd_device_online{device=\"a\\\"b\"} 1\n"
        );
    }
}

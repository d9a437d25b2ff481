//! Checksums as LAVA jobs give them (`md5sum`, `sha256sum`, `sha512sum`), computed over the
//! downloaded, still compressed bytes. Only the digests someone needs are computed: sha256 when
//! a job gives it, when the download goes to the cache (it is the content address) or when the
//! caller records it (jobs do, as LAVA's `sha256sum`); each is a full pass over the download.

use std::collections::VecDeque;
use std::sync::Mutex;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

use super::error::FetchError;

/// Expected digests, lowercase hex. Any subset may be given.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checksums {
    pub md5: Option<String>,
    pub sha256: Option<String>,
    pub sha512: Option<String>,
}

impl Checksums {
    /// Lowercases the digests and checks their length and alphabet.
    pub fn normalized(&self) -> Result<Self, String> {
        fn one(name: &str, v: &Option<String>, len: usize) -> Result<Option<String>, String> {
            let Some(v) = v else { return Ok(None) };
            let v = v.trim().to_ascii_lowercase();
            if v.len() != len || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{name} {v:?} is not a {len}-digit hexadecimal digest"
                ));
            }
            Ok(Some(v))
        }
        Ok(Self {
            md5: one("md5sum", &self.md5, 32)?,
            sha256: one("sha256sum", &self.sha256, 64)?,
            sha512: one("sha512sum", &self.sha512, 128)?,
        })
    }
}

/// Running hashes over the compressed stream, each only when asked for.
pub(crate) struct Hashers {
    sha256: Option<Sha256>,
    md5: Option<Md5>,
    sha512: Option<Sha512>,
}

/// Finished digests, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digests {
    pub sha256: Option<String>,
    pub md5: Option<String>,
    pub sha512: Option<String>,
}

impl Hashers {
    pub fn new(sha256: bool, md5: bool, sha512: bool) -> Self {
        Self {
            sha256: sha256.then(Sha256::new),
            md5: md5.then(Md5::new),
            sha512: sha512.then(Sha512::new),
        }
    }

    /// Whether no digest was asked for.
    pub fn is_empty(&self) -> bool {
        self.sha256.is_none() && self.md5.is_none() && self.sha512.is_none()
    }

    pub fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.md5 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
    }

    pub fn finish(self) -> Digests {
        Digests {
            sha256: self.sha256.map(|h| hex::encode(h.finalize())),
            md5: self.md5.map(|h| hex::encode(h.finalize())),
            sha512: self.sha512.map(|h| hex::encode(h.finalize())),
        }
    }
}

/// The compressed stream's digests, advanced in stream order by whichever pipeline thread has
/// time: the decode thread queues every chunk it receives ([`SharedHash::push`]) and the sink
/// thread hashes queued chunks whenever it would otherwise wait for output
/// ([`SharedHash::hash_one`]). With a fast decoder (zstd) the sink often waits, so the input
/// hash costs the decoder — the critical path — almost nothing; with a slow one (xz) the sink
/// does all of it. The queue is bounded: past [`SharedHash::MAX_PENDING`] chunks the decode
/// thread hashes them itself.
pub(crate) struct SharedHash {
    /// Chunks received but not hashed yet, in stream order.
    pending: Mutex<VecDeque<bytes::Bytes>>,
    /// Whoever holds this lock is the only one popping `pending`, so chunks are hashed in
    /// order even though two threads take turns.
    hashers: Mutex<Hashers>,
    /// No digest asked for: chunks are not even queued.
    idle: bool,
    with_sha256: bool,
}

impl SharedHash {
    /// Chunks queued before the decode thread hashes them itself (bounds the memory kept
    /// alive by the queue to a few MiB).
    pub const MAX_PENDING: usize = 16;

    pub fn new(hashers: Hashers) -> Self {
        Self {
            idle: hashers.is_empty(),
            with_sha256: hashers.sha256.is_some(),
            pending: Mutex::new(VecDeque::new()),
            hashers: Mutex::new(hashers),
        }
    }

    /// Whether the sha256 of the stream is being computed.
    pub fn has_sha256(&self) -> bool {
        self.with_sha256
    }

    /// Queues a chunk; hashes the backlog on this thread when it is too long.
    pub fn push(&self, chunk: bytes::Bytes) {
        if self.idle {
            return;
        }
        let backlog = {
            let mut q = lock(&self.pending);
            q.push_back(chunk);
            q.len()
        };
        if backlog > Self::MAX_PENDING {
            let mut h = lock(&self.hashers);
            while self.hash_next(&mut h) {}
        }
    }

    /// Hashes the oldest queued chunk unless another thread is hashing; false when there was
    /// nothing to do (or no turn to take).
    pub fn hash_one(&self) -> bool {
        match self.hashers.try_lock() {
            Ok(mut h) => self.hash_next(&mut h),
            Err(std::sync::TryLockError::Poisoned(p)) => self.hash_next(&mut p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => false,
        }
    }

    fn hash_next(&self, h: &mut Hashers) -> bool {
        let next = lock(&self.pending).pop_front();
        match next {
            Some(c) => {
                h.update(&c);
                true
            }
            None => false,
        }
    }

    /// Hashes what is still queued and returns the digests.
    pub fn finish(&self) -> Digests {
        let mut h = lock(&self.hashers);
        while self.hash_next(&mut h) {}
        std::mem::replace(&mut *h, Hashers::new(false, false, false)).finish()
    }
}

/// A panicking hasher cannot leave the queue or the digests half-updated in a way that matters
/// (the fetch fails then), so a poisoned lock is simply taken over.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Compares in LAVA's order (md5, sha256, sha512) and fails with LAVA's message.
pub(crate) fn verify(url: &str, want: &Checksums, got: &Digests) -> Result<(), FetchError> {
    let pairs: [(&'static str, &Option<String>, Option<&String>); 3] = [
        ("md5", &want.md5, got.md5.as_ref()),
        ("sha256", &want.sha256, got.sha256.as_ref()),
        ("sha512", &want.sha512, got.sha512.as_ref()),
    ];
    for (algo, expected, actual) in pairs {
        if let Some(expected) = expected {
            let actual = actual.cloned().unwrap_or_default();
            if *expected != actual {
                return Err(FetchError::Checksum {
                    url: url.to_string(),
                    algo,
                    expected: expected.clone(),
                    actual,
                });
            }
        }
    }
    Ok(())
}

/// sha256 of a string, hex: the cache's key for a URL.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_hash_keeps_stream_order_across_threads() {
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
        let shared = SharedHash::new(Hashers::new(true, true, false));
        std::thread::scope(|s| {
            let helper = s.spawn(|| {
                let mut n = 0;
                for _ in 0..2000 {
                    if shared.hash_one() {
                        n += 1;
                    } else {
                        std::thread::yield_now();
                    }
                }
                n
            });
            for c in data.chunks(1000) {
                shared.push(bytes::Bytes::copy_from_slice(c));
            }
            assert!(helper.join().unwrap() > 0, "the helper thread took no turn");
        });
        let d = shared.finish();
        assert_eq!(d.sha256, Some(sha256_hex(&data)));
        let mut md5 = Md5::new();
        md5.update(&data);
        assert_eq!(d.md5, Some(hex::encode(md5.finalize())));
    }

    #[test]
    fn digests_of_known_input() {
        let mut h = Hashers::new(true, true, true);
        h.update(b"ab");
        h.update(b"c");
        let d = h.finish();
        assert_eq!(d.md5.as_deref(), Some("900150983cd24fb0d6963f7d28e17f72"));
        assert_eq!(
            d.sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert!(d.sha512.as_deref().unwrap().starts_with("ddaf35a193617aba"));
        let want = Checksums {
            md5: Some("900150983CD24FB0D6963F7D28E17F72".into()),
            ..Default::default()
        }
        .normalized()
        .unwrap();
        verify("u", &want, &d).unwrap();
        let bad = Checksums {
            sha256: Some("00".repeat(32)),
            ..Default::default()
        };
        let e = verify("http://x/y", &bad, &d).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("sha256 for 'http://x/y' does not match.")
        );
        assert!(
            Checksums {
                md5: Some("xyz".into()),
                ..Default::default()
            }
            .normalized()
            .is_err()
        );
    }
}

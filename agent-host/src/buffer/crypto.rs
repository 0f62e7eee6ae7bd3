//! Client-side encryption of buffer segments: whatever holds the buffer (a disk, a storage
//! account) only ever sees ciphertext.
//!
//! Envelope encryption: a random AES-256-GCM data key encrypts a bounded run of segments
//! and is stored only wrapped by a key-encryption key (a local keyring or a Key Vault key),
//! so the wrapping service is called once per run rather than once per segment. Each
//! segment carries everything needed to open it again, including the versioned id of the
//! wrapping key, so segments written before a key rotation stay readable.
//!
//! Stored format (integers big-endian):
//!
//! ```text
//! magic      4   "CVSG"
//! version    1   1
//! cipher     1   1 = AES-256-GCM
//! kid        u16 length + UTF-8   versioned id of the wrapping key (Wrapped.kid)
//! wrap alg   u8  length + UTF-8   wrapping algorithm (Wrapped.alg)
//! wrapped    u16 length + bytes   the wrapped data key
//! nonce      12
//! ciphertext+tag (16-byte tag)    the rest
//! ```
//!
//! The associated data is the header (magic through wrapped key) followed by the segment's
//! sequence number, so neither the header nor the position of a segment can be changed:
//! a segment copied over another sequence number does not open.

// The errors carry the key service's `KeyError` unboxed so callers can find it by
// downcasting through the error chain; they are rare, so their size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use culvert_sealing::{KeyEncryptionKey, KeyError, Wrapped};
use rand::RngCore;
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"CVSG";
const FORMAT_VERSION: u8 = 1;
const CIPHER_AES_256_GCM: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Data keys are replaced at least this often, however few segments they encrypted, so a
/// leaked data key exposes a bounded window.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(15 * 60);

/// Unwrapped data keys kept in memory; enough for every key of a full buffer in practice,
/// bounded so a long run does not accumulate key material.
const CACHE_ENTRIES: usize = 64;

type DataKey = Zeroizing<[u8; 32]>;

/// Why a segment could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The bytes are not a segment this agent wrote, or were altered (or belong to another
    /// sequence number). Nothing about the key is wrong.
    #[error("segment {seq} is not a valid encrypted segment: {reason}")]
    Corrupt {
        /// The sequence number it was read as.
        seq: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// Unwrapping its data key failed.
    #[error("cannot unwrap the data key of segment {seq} (wrapped by `{kid}`): {source}")]
    Key {
        /// The sequence number.
        seq: u64,
        /// Versioned id of the key that wrapped it.
        kid: String,
        /// What the key service said.
        #[source]
        source: KeyError,
    },
}

/// Why a segment could not be sealed.
#[derive(Debug, thiserror::Error)]
#[error("cannot wrap a new buffer data key with {kek}: {source}")]
pub struct SealError {
    /// The key-encryption key, as it describes itself.
    pub kek: String,
    /// What the key service said.
    #[source]
    pub source: KeyError,
}

struct CurrentKey {
    dek: DataKey,
    header: Vec<u8>,
    used: u64,
    created: Instant,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<Vec<u8>, DataKey>,
    order: VecDeque<Vec<u8>>,
}

impl KeyCache {
    fn get(&self, wrapped: &[u8]) -> Option<DataKey> {
        self.keys.get(wrapped).cloned()
    }

    fn insert(&mut self, wrapped: Vec<u8>, dek: DataKey) {
        if self.keys.contains_key(&wrapped) {
            return;
        }
        while self.order.len() >= CACHE_ENTRIES {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        self.order.push_back(wrapped.clone());
        self.keys.insert(wrapped, dek);
    }
}

/// Encrypts and decrypts segments under data keys wrapped by one key-encryption key.
pub struct SegmentCipher {
    kek: Arc<dyn KeyEncryptionKey>,
    segments_per_key: u64,
    max_age: Duration,
    // Held across the wrap call, so concurrent appends share one new key.
    current: tokio::sync::Mutex<Option<CurrentKey>>,
    cache: std::sync::Mutex<KeyCache>,
}

struct Header<'a> {
    kid: &'a str,
    alg: &'a str,
    wrapped: &'a [u8],
    /// Length of the header, which is also the associated data before the sequence number.
    len: usize,
}

fn build_header(w: &Wrapped) -> Result<Vec<u8>, KeyError> {
    let kid = w.kid.as_bytes();
    let alg = w.alg.as_bytes();
    if kid.len() > u16::MAX as usize
        || alg.len() > u8::MAX as usize
        || w.bytes.len() > u16::MAX as usize
    {
        return Err(KeyError::Invalid(format!(
            "the wrapped data key from `{}` is too large to store",
            w.kid
        )));
    }
    let mut h = Vec::with_capacity(12 + kid.len() + alg.len() + w.bytes.len());
    h.extend_from_slice(MAGIC);
    h.push(FORMAT_VERSION);
    h.push(CIPHER_AES_256_GCM);
    h.extend_from_slice(&(kid.len() as u16).to_be_bytes());
    h.extend_from_slice(kid);
    h.push(alg.len() as u8);
    h.extend_from_slice(alg);
    h.extend_from_slice(&(w.bytes.len() as u16).to_be_bytes());
    h.extend_from_slice(&w.bytes);
    Ok(h)
}

fn parse_header(seq: u64, bytes: &[u8]) -> Result<Header<'_>, OpenError> {
    let corrupt = |reason| OpenError::Corrupt { seq, reason };
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], OpenError> {
        let end = at.checked_add(n).filter(|&e| e <= bytes.len());
        let end = end.ok_or(corrupt("truncated header"))?;
        let out = &bytes[at..end];
        at = end;
        Ok(out)
    };
    if take(4)? != MAGIC {
        return Err(corrupt("no segment header (unencrypted or foreign data)"));
    }
    if take(1)? != [FORMAT_VERSION] {
        return Err(corrupt("unknown format version"));
    }
    if take(1)? != [CIPHER_AES_256_GCM] {
        return Err(corrupt("unknown cipher"));
    }
    let kid_len = u16::from_be_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
    let kid = std::str::from_utf8(take(kid_len)?).map_err(|_| corrupt("key id is not UTF-8"))?;
    let alg_len = take(1)?[0] as usize;
    let alg = std::str::from_utf8(take(alg_len)?).map_err(|_| corrupt("algorithm is not UTF-8"))?;
    let wrapped_len = u16::from_be_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
    let wrapped = take(wrapped_len)?;
    Ok(Header {
        kid,
        alg,
        wrapped,
        len: at,
    })
}

fn aad(header: &[u8], seq: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + 8);
    aad.extend_from_slice(header);
    aad.extend_from_slice(&seq.to_be_bytes());
    aad
}

/// The versioned id of the key that wrapped a stored segment's data key (for diagnostics).
pub fn segment_kid(bytes: &[u8]) -> Option<String> {
    parse_header(0, bytes).ok().map(|h| h.kid.to_string())
}

impl SegmentCipher {
    /// A cipher wrapping its data keys with `kek`, replacing the data key every
    /// `segments_per_key` segments and at least every [`MAX_KEY_AGE`].
    pub fn new(kek: Arc<dyn KeyEncryptionKey>, segments_per_key: u64) -> SegmentCipher {
        SegmentCipher::with_max_age(kek, segments_per_key, MAX_KEY_AGE)
    }

    /// As [`SegmentCipher::new`] with another maximum data key age.
    pub fn with_max_age(
        kek: Arc<dyn KeyEncryptionKey>,
        segments_per_key: u64,
        max_age: Duration,
    ) -> SegmentCipher {
        SegmentCipher {
            kek,
            segments_per_key: segments_per_key.max(1),
            max_age,
            current: tokio::sync::Mutex::new(None),
            cache: std::sync::Mutex::new(KeyCache::default()),
        }
    }

    /// The key-encryption key, as it names itself in errors.
    pub fn describe_kek(&self) -> String {
        self.kek.describe()
    }

    /// Encrypt segment `seq`. Fails only when a new data key is due and wrapping it fails.
    pub async fn seal(&self, seq: u64, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut current = self.current.lock().await;
        let due = current
            .as_ref()
            .is_none_or(|c| c.used >= self.segments_per_key || c.created.elapsed() >= self.max_age);
        if due {
            let mut dek: DataKey = Zeroizing::new([0u8; 32]);
            rand::thread_rng().fill_bytes(dek.as_mut());
            let wrapped = self
                .kek
                .wrap(dek.as_ref())
                .await
                .map_err(|source| SealError {
                    kek: self.kek.describe(),
                    source,
                })?;
            let header = build_header(&wrapped).map_err(|source| SealError {
                kek: self.kek.describe(),
                source,
            })?;
            // Reading back what this process wrote must not cost a call to the key service.
            self.cache
                .lock()
                .expect("key cache lock")
                .insert(wrapped.bytes, dek.clone());
            *current = Some(CurrentKey {
                dek,
                header,
                used: 0,
                created: Instant::now(),
            });
        }
        let key = current.as_mut().expect("set above");
        key.used += 1;
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = Aes256Gcm::new_from_slice(key.dek.as_ref())
            .expect("32-byte key")
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad(&key.header, seq),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer");
        let mut out = Vec::with_capacity(key.header.len() + NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&key.header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypt segment `seq`, unwrapping its data key unless it is cached.
    pub async fn open(&self, seq: u64, stored: &[u8]) -> Result<Vec<u8>, OpenError> {
        let header = parse_header(seq, stored)?;
        let rest = &stored[header.len..];
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Corrupt {
                seq,
                reason: "truncated ciphertext",
            });
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let cached = self
            .cache
            .lock()
            .expect("key cache lock")
            .get(header.wrapped);
        let dek = match cached {
            Some(dek) => dek,
            None => {
                let wrapped = Wrapped {
                    kid: header.kid.to_string(),
                    alg: header.alg.to_string(),
                    bytes: header.wrapped.to_vec(),
                };
                let bytes = Zeroizing::new(self.kek.unwrap(&wrapped).await.map_err(|source| {
                    OpenError::Key {
                        seq,
                        kid: header.kid.to_string(),
                        source,
                    }
                })?);
                let dek: [u8; 32] = bytes.as_slice().try_into().map_err(|_| OpenError::Key {
                    seq,
                    kid: header.kid.to_string(),
                    source: KeyError::Invalid("the unwrapped data key is not 256 bits".into()),
                })?;
                let dek = Zeroizing::new(dek);
                self.cache
                    .lock()
                    .expect("key cache lock")
                    .insert(wrapped.bytes, dek.clone());
                dek
            }
        };
        Aes256Gcm::new_from_slice(dek.as_ref())
            .expect("32-byte key")
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad(&stored[..header.len], seq),
                },
            )
            .map_err(|_| OpenError::Corrupt {
                seq,
                reason: "authentication failed (altered, or stored under another sequence number)",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culvert_sealing::Keyring;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A keyring that counts the calls made to it, to see when data keys change.
    struct Counting {
        ring: Keyring,
        wraps: AtomicUsize,
        unwraps: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl KeyEncryptionKey for Counting {
        fn describe(&self) -> String {
            self.ring.describe()
        }
        async fn wrap(&self, dek: &[u8]) -> Result<Wrapped, KeyError> {
            self.wraps.fetch_add(1, Ordering::SeqCst);
            self.ring.wrap(dek).await
        }
        async fn unwrap(&self, wrapped: &Wrapped) -> Result<Vec<u8>, KeyError> {
            self.unwraps.fetch_add(1, Ordering::SeqCst);
            self.ring.unwrap(wrapped).await
        }
    }

    fn counting(path: &std::path::Path) -> Arc<Counting> {
        Arc::new(Counting {
            ring: Keyring::open_or_create(path).unwrap(),
            wraps: AtomicUsize::new(0),
            unwraps: AtomicUsize::new(0),
        })
    }

    #[tokio::test]
    async fn round_trip_and_data_key_runs() {
        let dir = tempfile::tempdir().unwrap();
        let kek = counting(&dir.path().join("ring.json"));
        let cipher = SegmentCipher::new(kek.clone(), 3);
        let mut sealed = Vec::new();
        for seq in 1..=7u64 {
            let plain = vec![seq as u8; 1000 + seq as usize];
            let s = cipher.seal(seq, &plain).await.unwrap();
            assert!(
                !s.windows(16).any(|w| w == &plain[..16]),
                "plaintext leaked"
            );
            sealed.push((seq, plain, s));
        }
        // 7 segments, 3 per key: keys for 1-3, 4-6, 7.
        assert_eq!(kek.wraps.load(Ordering::SeqCst), 3);
        for (seq, plain, s) in &sealed {
            assert_eq!(&cipher.open(*seq, s).await.unwrap(), plain);
        }
        // Own keys are cached: no unwrap calls.
        assert_eq!(kek.unwraps.load(Ordering::SeqCst), 0);
        // A fresh process unwraps once per data key, then uses its cache.
        let fresh = SegmentCipher::new(kek.clone(), 3);
        for (seq, plain, s) in &sealed {
            assert_eq!(&fresh.open(*seq, s).await.unwrap(), plain);
        }
        assert_eq!(kek.unwraps.load(Ordering::SeqCst), 3);
        // The same plaintext twice never gives the same bytes (fresh nonce).
        assert_ne!(
            cipher.seal(9, b"same").await.unwrap(),
            cipher.seal(9, b"same").await.unwrap()
        );
        assert_eq!(
            segment_kid(&sealed[0].2).unwrap(),
            format!("{}#1", kek.describe())
        );
    }

    #[tokio::test]
    async fn data_key_expires_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let kek = counting(&dir.path().join("ring.json"));
        let cipher = SegmentCipher::with_max_age(kek.clone(), 1000, Duration::from_millis(50));
        cipher.seal(1, b"a").await.unwrap();
        cipher.seal(2, b"b").await.unwrap();
        assert_eq!(kek.wraps.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        cipher.seal(3, b"c").await.unwrap();
        assert_eq!(kek.wraps.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn tampering_and_swaps_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Arc::new(Keyring::open_or_create(&dir.path().join("ring.json")).unwrap());
        let cipher = SegmentCipher::new(ring.clone(), 256);
        let one = cipher.seal(1, b"first segment").await.unwrap();
        let two = cipher.seal(2, b"second segment").await.unwrap();

        // Swapped: segment 2's bytes stored as segment 1.
        assert!(matches!(
            cipher.open(1, &two).await,
            Err(OpenError::Corrupt { seq: 1, .. })
        ));
        // Every single-byte change is caught, in the header, nonce or ciphertext.
        let fresh = SegmentCipher::new(ring.clone(), 256);
        for i in 0..one.len() {
            let mut bad = one.clone();
            bad[i] ^= 0x40;
            for c in [&cipher, &fresh] {
                match c.open(1, &bad).await {
                    Err(OpenError::Corrupt { .. }) | Err(OpenError::Key { .. }) => {}
                    Ok(_) => panic!("byte {i} changed and the segment still opened"),
                }
            }
        }
        // Truncation and unencrypted data.
        assert!(cipher.open(1, &one[..one.len() - 1]).await.is_err());
        assert!(cipher.open(1, &one[..10]).await.is_err());
        assert!(matches!(
            cipher.open(1, b"plain batch bytes").await,
            Err(OpenError::Corrupt { .. })
        ));
        assert_eq!(cipher.open(1, &one).await.unwrap(), b"first segment");
    }

    #[tokio::test]
    async fn keyring_rotation_keeps_old_segments_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring.json");
        let first_run = SegmentCipher::new(Arc::new(Keyring::open_or_create(&path).unwrap()), 2);
        let old: Vec<Vec<u8>> = futures_seal(&first_run, 1..=3).await;
        assert!(segment_kid(&old[0]).unwrap().ends_with("#1"));

        // The key is rotated while the first run goes on: it keeps its loaded versions.
        let mut admin = Keyring::open(&path).unwrap();
        assert_eq!(admin.rotate().unwrap(), 2);
        let during = first_run.seal(4, b"4").await.unwrap();
        assert!(segment_kid(&during).unwrap().ends_with("#1"));

        // The next run wraps with the new version and still opens everything before.
        let next_run = SegmentCipher::new(Arc::new(Keyring::open(&path).unwrap()), 2);
        let new = next_run.seal(5, b"5").await.unwrap();
        assert!(segment_kid(&new).unwrap().ends_with("#2"));
        for (i, s) in old.iter().enumerate() {
            let seq = i as u64 + 1;
            assert_eq!(
                next_run.open(seq, s).await.unwrap(),
                seq.to_string().as_bytes()
            );
        }
        assert_eq!(next_run.open(4, &during).await.unwrap(), b"4");
        assert_eq!(next_run.open(5, &new).await.unwrap(), b"5");

        // Another keyring cannot open them, and says whose key it needs.
        let other = SegmentCipher::new(
            Arc::new(Keyring::open_or_create(&dir.path().join("o.json")).unwrap()),
            2,
        );
        match other.open(5, &new).await {
            Err(OpenError::Key { kid, source, .. }) => {
                assert!(kid.ends_with("#2"));
                assert!(!source.is_transient());
            }
            other => panic!("expected a key error, got {:?}", other.map(|_| ())),
        }
    }

    async fn futures_seal(
        cipher: &SegmentCipher,
        seqs: std::ops::RangeInclusive<u64>,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for seq in seqs {
            out.push(cipher.seal(seq, seq.to_string().as_bytes()).await.unwrap());
        }
        out
    }
}

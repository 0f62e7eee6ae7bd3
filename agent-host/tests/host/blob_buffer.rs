//! The buffer on Blob Storage, against a real Azurite started by each test.
//!
//! Azurite is the end-to-end harness's (`culvert_tests::azurite`): found like the CLI finds
//! it (AZURITE_BIN, PATH, the copy scripts/setup.sh installs); without it these tests fail
//! and say how to install it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use culvert_agent_host::batch::{Batch, Kind, TableRows};
use culvert_agent_host::buffer::{BlobStore, Buffer, SegmentCipher, SegmentStore, segment_kid};
use culvert_agent_host::metrics::BufferMetrics;
use culvert_sealing::Keyring;
use culvert_tests::azurite::Azurite;

/// The blob URL of `prefix` in `container`, as a pipeline's buffer setting names it.
fn url(azurite: &Azurite, container: &str, prefix: &str) -> String {
    format!("{}/{prefix}", azurite.container_url(container))
}

/// Azurite keeps blob metadata in memory and saves it every 5 s; data it acknowledged is
/// only durable across a kill once saved, which real storage does before answering.
async fn let_azurite_save() {
    tokio::time::sleep(Duration::from_millis(5500)).await;
}

fn batch(pos: u8, payload: &[u8]) -> Batch {
    Batch {
        kind: Kind::Changes,
        position: vec![0, pos],
        lag_bytes: 0,
        continues: false,
        tables: vec![TableRows {
            namespace: "public".into(),
            name: "orders".into(),
            first_of_table: false,
            row_count: 1,
            ipc: payload.to_vec(),
        }],
    }
}

fn keyring_cipher(path: &Path, per_key: u64) -> SegmentCipher {
    SegmentCipher::new(Arc::new(Keyring::open_or_create(path).unwrap()), per_key)
}

fn blob_buffer(url: &str, ring: &Path) -> Arc<Buffer> {
    Buffer::new(
        SegmentStore::open(url).unwrap(),
        keyring_cipher(ring, 2),
        64 << 20,
        BufferMetrics::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_store_put_get_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let azurite = Azurite::start(dir.path());
    let store = BlobStore::open(&url(&azurite, "segments", "pipe/a")).unwrap();
    store.prepare().await.unwrap();
    store.prepare().await.unwrap(); // an existing container is fine
    assert_eq!(store.list().await.unwrap(), Vec::<u64>::new());

    let big: Vec<u8> = (0..9 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    store.put(1, b"one").await.unwrap();
    store.put(2, &big).await.unwrap(); // more than one upload block
    store.put(3, b"three").await.unwrap();
    store.put(3, b"three again").await.unwrap(); // overwrite
    // Blobs outside the prefix are not segments of this buffer.
    let other = BlobStore::open(&url(&azurite, "segments", "pipe/a/b")).unwrap();
    other.put(9, b"deeper").await.unwrap();
    let sibling = BlobStore::open(&url(&azurite, "segments", "pipe/ab")).unwrap();
    sibling.put(8, b"sibling").await.unwrap();

    let mut seqs = store.list().await.unwrap();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(store.get(1).await.unwrap(), b"one");
    assert!(store.get(2).await.unwrap() == big);
    assert_eq!(store.get(3).await.unwrap(), b"three again");

    store.delete(2).await.unwrap();
    store.delete(2).await.unwrap(); // already gone is fine
    let mut seqs = store.list().await.unwrap();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![1, 3]);
    let e = format!("{:#}", store.get(2).await.unwrap_err());
    assert!(e.contains("pipe/a/00000000000000000002.seg"), "{e}");

    // Listing follows continuation markers across pages.
    let paged = BlobStore::open(&url(&azurite, "segments", "paged"))
        .unwrap()
        .with_list_page_size(2);
    for seq in 1..=7 {
        paged.put(seq, b"x").await.unwrap();
    }
    let mut seqs = paged.list().await.unwrap();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_on_blob_survives_a_restart_and_a_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let azurite = Azurite::start(&dir.path().join("azurite"));
    let url = url(&azurite, "buffer", "orders");
    let ring = dir.path().join("ring.json");

    let first = blob_buffer(&url, &ring);
    assert_eq!(first.recover(None).await.unwrap().segments, 0);
    for pos in 1..=3u8 {
        first
            .append(&batch(pos, format!("rows of {pos}").as_bytes()))
            .await
            .unwrap();
    }
    first.flush().await.unwrap();
    let (seq, b) = first.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(b.position, vec![0, 1]);
    first.release(seq).await.unwrap();
    first.settle().await;

    // What is stored is ciphertext, under the keyring's first version.
    let raw = BlobStore::open(&url).unwrap();
    let stored = raw.get(2).await.unwrap();
    assert!(!stored.windows(7).any(|w| w == b"rows of"));
    assert!(segment_kid(&stored).unwrap().ends_with("#1"));
    drop(first);

    // The key is rotated; the next process writes under the new version and still reads
    // what was written before.
    Keyring::open(&ring).unwrap().rotate().unwrap();
    let second = blob_buffer(&url, &ring);
    let rec = second.recover(Some(&[0, 1])).await.unwrap();
    assert_eq!(rec.segments, 2);
    assert_eq!(rec.last_position, Some(vec![0, 3]));
    let seq4 = second.append(&batch(4, b"rows of 4")).await.unwrap();
    second.flush().await.unwrap();
    assert_eq!(seq4, 4);
    assert!(
        segment_kid(&raw.get(4).await.unwrap())
            .unwrap()
            .ends_with("#2")
    );
    for pos in 2..=4u8 {
        let (_, b) = second.next(Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!(b.position, vec![0, pos]);
        assert_eq!(b.tables[0].ipc, format!("rows of {pos}").as_bytes());
    }
    second.release(4).await.unwrap();
    second.settle().await;
    // Only the released mark (object 0) is left.
    assert_eq!(raw.list().await.unwrap(), vec![0]);
    assert_eq!(second.retries(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_holds_the_append_until_storage_is_back() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let mut azurite = Azurite::start(&dir.path().join("azurite"));
    let url = url(&azurite, "buffer", "outage");
    let ring = dir.path().join("ring.json");
    let metrics = BufferMetrics::default();
    let buffer = Buffer::new(
        SegmentStore::open(&url).unwrap(),
        keyring_cipher(&ring, 2),
        64 << 20,
        metrics.clone(),
    );
    buffer.recover(None).await.unwrap();
    buffer
        .append(&batch(1, b"before the outage"))
        .await
        .unwrap();
    buffer.flush().await.unwrap();
    let_azurite_save().await;

    azurite.kill();
    let seq = buffer
        .append(&batch(2, b"during the outage"))
        .await
        .unwrap();
    assert_eq!(seq, 2);
    let appending = {
        let buffer = buffer.clone();
        tokio::spawn(async move { buffer.flush().await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !appending.is_finished(),
        "the segment was reported stored while storage was down"
    );
    assert_eq!(
        buffer.published(),
        1,
        "a segment not yet stored is not visible to the target"
    );
    let since = buffer.unavailable_since().expect("marked unavailable");
    assert!(since.elapsed() >= Duration::from_secs(2));
    assert!(buffer.retries() >= 3, "retries: {}", buffer.retries());
    assert_eq!(metrics.unavailable.get(), 1);
    assert_eq!(metrics.retries.get(), buffer.retries());

    azurite.restart();
    tokio::time::timeout(Duration::from_secs(30), appending)
        .await
        .expect("the segment was stored once storage was back")
        .unwrap()
        .unwrap();
    assert!(buffer.unavailable_since().is_none());
    assert_eq!(metrics.unavailable.get(), 0);

    // Both segments are intact, in order, for this process and for the next one.
    for (pos, text) in [(1u8, "before the outage"), (2, "during the outage")] {
        let (_, b) = buffer.next(Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!(b.position, vec![0, pos]);
        assert_eq!(b.tables[0].ipc, text.as_bytes());
    }
    let_azurite_save().await;
    azurite.kill();
    azurite.restart();
    let next_run = blob_buffer(&url, &ring);
    assert_eq!(next_run.recover(None).await.unwrap().segments, 2);
    let (_, b) = next_run
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.tables[0].ipc, b"before the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_fail_fast_and_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let azurite = Azurite::start(dir.path());
    let url = url(&azurite, "forbidden", "p");
    let ring = dir.path().join("ring.json");

    // A SAS whose signature does not verify (wrong account key).
    let started = Instant::now();
    let wrong = Buffer::new(
        SegmentStore::Blob(Box::new(
            BlobStore::with_account_key(&url, vec![7u8; 64], "rwdlac").unwrap(),
        )),
        keyring_cipher(&ring, 2),
        1 << 20,
        BufferMetrics::default(),
    );
    let e = format!("{:#}", wrong.recover(None).await.err().unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(e.contains("403"), "{e}");
    assert!(e.contains("container `forbidden`"), "{e}");
    assert!(e.contains("storage account `devstoreaccount1`"), "{e}");
    assert!(e.contains("account SAS"), "{e}");
    assert_eq!(wrong.retries(), 0);

    // A SAS without write permission: the container can be read, an append cannot go on.
    let open = Buffer::new(
        SegmentStore::open(&url).unwrap(),
        keyring_cipher(&ring, 2),
        1 << 20,
        BufferMetrics::default(),
    );
    open.recover(None).await.unwrap();
    let read_only = Buffer::new(
        SegmentStore::Blob(Box::new(
            BlobStore::with_account_key(&url, culvert_azure::sas::devstore_key(), "rl").unwrap(),
        )),
        keyring_cipher(&ring, 2),
        1 << 20,
        BufferMetrics::default(),
    );
    read_only.recover(None).await.unwrap();
    let started = Instant::now();
    read_only.append(&batch(1, b"x")).await.unwrap();
    let e = format!("{:#}", read_only.flush().await.unwrap_err());
    assert!(read_only.check().is_err(), "a failed upload stays failed");
    assert!(read_only.append(&batch(2, b"y")).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(e.contains("writing segment 1"), "{e}");
    assert!(e.contains("403"), "{e}");
    assert!(e.contains("lacks a permission"), "{e}");
    assert_eq!(read_only.retries(), 0);
}

//! A real Azurite for end-to-end tests, and the few Blob calls the tests make to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::free_port;

/// Azurite's account name.
pub const ACCOUNT: &str = "devstoreaccount1";

fn azurite_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AZURITE_BIN") {
        return PathBuf::from(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("azurite");
            if p.is_file() {
                return p;
            }
        }
    }
    let home = std::env::var_os("HOME").expect("HOME");
    let p = PathBuf::from(home).join(".cache/culvert/npm/node_modules/.bin/azurite");
    assert!(
        p.is_file(),
        "Azurite was not found (AZURITE_BIN, PATH, ~/.cache/culvert/npm/node_modules/.bin/azurite); install it with scripts/setup.sh"
    );
    p
}

/// An Azurite process on free loopback ports; killed on drop.
pub struct Azurite {
    child: Option<Child>,
    location: PathBuf,
    /// Blob service port.
    pub blob_port: u16,
    queue_port: u16,
    table_port: u16,
    sas: String,
    http: reqwest::blocking::Client,
}

impl Azurite {
    /// Start Azurite keeping its data under `location`.
    pub fn start(location: &Path) -> Azurite {
        let sas = culvert_azure::sas::AccountSas::for_blobs(
            chrono::Utc::now() + chrono::Duration::days(2),
        )
        .to_query(ACCOUNT, &culvert_azure::sas::devstore_key());
        let mut azurite = Azurite {
            child: None,
            location: location.to_path_buf(),
            blob_port: free_port(),
            queue_port: free_port(),
            table_port: free_port(),
            sas,
            http: reqwest::blocking::Client::new(),
        };
        azurite.restart();
        azurite
    }

    /// Start (again, after [`Azurite::kill`]) on the same ports and data location.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "azurite is already running");
        let blob = self.blob_port;
        let child = Command::new(azurite_bin())
            .args(["--silent", "--location"])
            .arg(&self.location)
            .args(["--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1"])
            .args(["--tableHost", "127.0.0.1"])
            .args(["--blobPort", &blob.to_string()])
            .args(["--queuePort", &self.queue_port.to_string()])
            .args(["--tablePort", &self.table_port.to_string()])
            // Tests run offline; telemetry would only print failed uploads.
            .args(["--skipApiVersionCheck", "--loose", "--disableTelemetry"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting azurite");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", blob)).is_err() {
            assert!(
                Instant::now() < deadline,
                "azurite did not listen on {blob}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kill the process outright, as a crash or an outage would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An account SAS (query string without `?`) with full blob permissions.
    pub fn sas(&self) -> &str {
        &self.sas
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1/CONTAINER`.
    pub fn container_url(&self, container: &str) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}/{container}", self.blob_port)
    }

    /// Create a container (an existing one is fine).
    pub fn create_container(&self, container: &str) {
        let r = self
            .http
            .put(format!(
                "{}?restype=container&{}",
                self.container_url(container),
                self.sas
            ))
            .header("x-ms-version", "2021-12-02")
            .send()
            .expect("create container");
        assert!(
            r.status().is_success() || r.status().as_u16() == 409,
            "creating container {container}: {}",
            r.status()
        );
    }

    /// A blob's bytes, or `None` when it does not exist.
    pub fn get(&self, container: &str, name: &str) -> Option<Vec<u8>> {
        let r = self
            .http
            .get(format!(
                "{}/{name}?{}",
                self.container_url(container),
                self.sas
            ))
            .header("x-ms-version", "2021-12-02")
            .send()
            .expect("get blob");
        if r.status().as_u16() == 404 {
            return None;
        }
        assert!(r.status().is_success(), "get {name}: {}", r.status());
        Some(r.bytes().expect("blob body").to_vec())
    }

    /// Names of the blobs under `prefix`, in order.
    pub fn list(&self, container: &str, prefix: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut marker = String::new();
        loop {
            let r = self
                .http
                .get(format!(
                    "{}?restype=container&comp=list&prefix={prefix}&marker={marker}&{}",
                    self.container_url(container),
                    self.sas
                ))
                .header("x-ms-version", "2021-12-02")
                .send()
                .expect("list blobs");
            assert!(r.status().is_success(), "list: {}", r.status());
            let text = r.text().unwrap();
            names.extend(between_all(&text, "<Name>", "</Name>"));
            marker = between_all(&text, "<NextMarker>", "</NextMarker>")
                .into_iter()
                .next()
                .unwrap_or_default();
            if marker.is_empty() {
                return names;
            }
        }
    }
}

fn between_all(text: &str, open: &str, close: &str) -> Vec<String> {
    text.split(open)
        .skip(1)
        .filter_map(|s| s.split_once(close).map(|(v, _)| v.to_string()))
        .collect()
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.kill();
    }
}

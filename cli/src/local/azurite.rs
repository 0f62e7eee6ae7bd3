//! Azurite: the Azure Storage emulator that carries the Functions app's queues locally.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::process::on_path;

/// Azurite's well-known development account key (public; it only opens the local emulator).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite's development account.
pub const ACCOUNT: &str = "devstoreaccount1";

/// The ports Azurite serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AzuritePorts {
    /// Blob service.
    pub blob: u16,
    /// Queue service.
    pub queue: u16,
    /// Table service.
    pub table: u16,
}

/// The `azurite` executable: `AZURITE_BIN`, PATH, then the copy scripts/setup.sh installs.
pub fn find() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AZURITE_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("AZURITE_BIN={} does not exist", p.display());
    }
    if let Some(p) = on_path("azurite") {
        return Ok(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = PathBuf::from(home).join(".cache/culvert/npm/node_modules/.bin/azurite");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "Azurite was not found (AZURITE_BIN, PATH, ~/.cache/culvert/npm/node_modules/.bin/azurite); install it with scripts/setup.sh"
    )
}

/// The arguments Azurite runs with: data in `location`, every service on 127.0.0.1.
pub fn args(location: &Path, ports: AzuritePorts) -> Vec<String> {
    vec![
        "--silent".into(),
        "--location".into(),
        location.display().to_string(),
        "--blobHost".into(),
        "127.0.0.1".into(),
        "--queueHost".into(),
        "127.0.0.1".into(),
        "--tableHost".into(),
        "127.0.0.1".into(),
        "--blobPort".into(),
        ports.blob.to_string(),
        "--queuePort".into(),
        ports.queue.to_string(),
        "--tablePort".into(),
        ports.table.to_string(),
        "--skipApiVersionCheck".into(),
        "--loose".into(),
        "--disableTelemetry".into(),
    ]
}

/// The `AzureWebJobsStorage` connection string for the queue and blob services.
pub fn connection_string(ports: AzuritePorts) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};\
         QueueEndpoint=http://127.0.0.1:{q}/{ACCOUNT};BlobEndpoint=http://127.0.0.1:{b}/{ACCOUNT};",
        q = ports.queue,
        b = ports.blob
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_string_names_both_endpoints() {
        let s = connection_string(AzuritePorts {
            blob: 10000,
            queue: 10001,
            table: 10002,
        });
        assert_eq!(
            s,
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
        );
    }

    #[test]
    fn args_bind_loopback_and_keep_data_in_place() {
        let a = args(
            Path::new("/s/azurite"),
            AzuritePorts {
                blob: 1,
                queue: 2,
                table: 3,
            },
        );
        let joined = a.join(" ");
        assert!(joined.contains("--location /s/azurite"));
        assert!(joined.contains("--queuePort 2"));
        assert!(joined.ends_with("--skipApiVersionCheck --loose --disableTelemetry"));
    }
}

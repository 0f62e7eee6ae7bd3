//! The shared wasmtime engine: compiled components cached by content digest, and the
//! epoch ticker that meters guest CPU time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use crate::limits::TICK_MS;

/// Compiles and caches connector components.
#[derive(Clone)]
pub struct ConnectorEngine {
    engine: Engine,
    cache_dir: PathBuf,
}

impl ConnectorEngine {
    /// A new engine caching compiled components under `cache_dir`.
    pub fn new(cache_dir: &Path) -> Result<ConnectorEngine> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine =
            Engine::new(&config).map_err(|e| anyhow!("creating the WebAssembly engine: {e}"))?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("culvert-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(Duration::from_millis(TICK_MS));
                }
            })
            .context("starting the epoch ticker")?;
        std::fs::create_dir_all(cache_dir)
            .with_context(|| format!("creating component cache {}", cache_dir.display()))?;
        Ok(ConnectorEngine {
            engine,
            cache_dir: cache_dir.to_path_buf(),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile `wasm`, or load the native code compiled earlier for the same bytes.
    pub fn load(&self, name: &str, wasm: &[u8]) -> Result<Arc<Component>> {
        let digest = hex::encode(Sha256::digest(wasm));
        let mut compat = Sha256::new();
        std::hash::Hash::hash(
            &self.engine.precompile_compatibility_hash(),
            &mut HashWriter(&mut compat),
        );
        let compat = hex::encode(&compat.finalize()[..8]);
        let path = self.cache_dir.join(format!("{digest}-{compat}.cwasm"));
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an engine with the
            // same compatibility hash, into a cache directory only this agent writes.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(Arc::new(component)),
                Err(e) => {
                    tracing::warn!(connector = name, error = %e, "discarding unreadable compiled component");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        // Compiling takes seconds of CPU; a log line says where that time went.
        tracing::info!(connector = name, bytes = wasm.len(), "compiling component");
        let started = std::time::Instant::now();
        let compiled = self
            .engine
            .precompile_component(wasm)
            .map_err(|e| anyhow!("connector `{name}` is not a valid WebAssembly component: {e}"))?;
        tracing::info!(
            connector = name,
            seconds = started.elapsed().as_secs_f64(),
            "component compiled"
        );
        // Unique per writer: threads of one process may compile the same component at once.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        std::fs::write(&tmp, &compiled).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        // SAFETY: these bytes were produced just now by this engine.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(|e| anyhow!("loading compiled connector `{name}`: {e}"))?;
        Ok(Arc::new(component))
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::hash::Hasher for HashWriter<'_> {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The digest under which a component is cached.
pub fn digest(wasm: &[u8]) -> String {
    hex::encode(Sha256::digest(wasm))
}

//! Finding connector components: first-party ones are built into the agent.

use anyhow::{Context, Result, bail};

include!(concat!(env!("OUT_DIR"), "/first_party.rs"));

/// Names of the first-party connectors built into this agent.
pub fn first_party_names() -> Vec<&'static str> {
    FIRST_PARTY.iter().map(|(n, _)| *n).collect()
}

/// Directory holding every component built with the agent, test components included.
pub fn build_dir() -> &'static str {
    WASM_BUILD_DIR
}

/// The component bytes for a first-party name or a path to a `.wasm` file.
pub fn load(name: &str) -> Result<Vec<u8>> {
    if let Some((_, bytes)) = FIRST_PARTY.iter().find(|(n, _)| *n == name) {
        return Ok(bytes.to_vec());
    }
    if name.ends_with(".wasm") || name.contains('/') {
        return std::fs::read(name)
            .with_context(|| format!("cannot read connector component `{name}`"));
    }
    bail!(
        "unknown connector `{name}`: use a first-party connector ({}) or a path to a .wasm component",
        first_party_names().join(", ")
    )
}

//! Host-side bindings of the `culvert:connector` worlds.

/// The `source` world.
pub mod source {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "source",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// The `destination` world.
pub mod destination {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "destination",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

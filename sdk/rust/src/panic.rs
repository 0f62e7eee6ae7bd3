//! Sends a panic's message to the agent's log before the component traps, so the
//! operator sees why instead of a bare "wasm trap: unreachable".

/// Install the hook once per instance; natively the default hook stays.
pub(crate) fn install_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                crate::host::log(
                    crate::host::Level::Error,
                    &format!("connector panicked: {info}"),
                );
                previous(info);
            }));
        });
    }
}

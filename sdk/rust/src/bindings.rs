//! Generated WIT bindings; authors use the SDK's own types instead.
#![allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]

pub mod source {
    wit_bindgen::generate!({
        path: "wit",
        world: "culvert:connector/source@0.1.0",
        pub_export_macro: true,
        export_macro_name: "__export_source_world",
        default_bindings_module: "$crate::bindings::source",
        generate_all,
    });
}

pub mod destination {
    wit_bindgen::generate!({
        path: "wit",
        world: "culvert:connector/destination@0.1.0",
        with: {
            "culvert:connector/types@0.1.0": crate::bindings::source::culvert::connector::types,
            "culvert:connector/host@0.1.0": crate::bindings::source::culvert::connector::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_destination_world",
        default_bindings_module: "$crate::bindings::destination",
    });
}

//! Any text a client sends: the protoo decoder must return, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wren::signal::protoo::{decode_bounded, Incoming};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Incoming::Request(id, _) | Incoming::Invalid(id, _) = decode_bounded(text, 4096) {
            // Whatever is answered carries the id the text had.
            let v: serde_json::Value = serde_json::from_str(text).expect("answered text is JSON");
            assert_eq!(v["id"].as_u64(), Some(id.0));
        }
    }
});

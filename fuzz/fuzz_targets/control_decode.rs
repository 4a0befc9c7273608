//! Any bytes on the control socket: framing and both decoders return.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wren::ipc::{decode, read_frame, FromSfu, ToSfu};

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    while let Ok(Some(payload)) = smol::block_on(read_frame(&mut input)) {
        let _ = decode::<ToSfu>(&payload);
        let _ = decode::<FromSfu>(&payload);
    }
});

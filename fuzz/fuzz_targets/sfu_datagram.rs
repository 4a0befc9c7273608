//! Any datagram from anyone at the SFU's port, with a publisher and a
//! subscriber session in place: the SFU core must return, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use wren::limits::Limits;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};
use wren::ids::{Mid, Sid};
use wren::sfu::engine::Sfu;

fn offer(dir: Direction) -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

thread_local! {
    static SFU: RefCell<(Sfu, Instant)> = RefCell::new({
        let now = Instant::now();
        let local = "127.0.0.1:40000".parse().unwrap();
        let mut sfu = Sfu::new(
            local,
            &Limits {
                sfu_sessions: 64,
                sfu_connect_timeout_ms: 3_600_000,
                rtx_cache_packets: 64,
                ..Limits::default()
            },
        ).unwrap();
        let mid = Mid::parse("pub#000001").unwrap();
        sfu.publish(now, mid.clone(), &offer(Direction::SendOnly)).unwrap();
        sfu.subscribe(now, Sid::parse("sub#000001").unwrap(), &mid, &offer(Direction::RecvOnly))
            .unwrap();
        (sfu, now)
    });
}

fuzz_target!(|data: &[u8]| {
    SFU.with(|cell| {
        let (sfu, now) = &mut *cell.borrow_mut();
        *now += Duration::from_millis(1);
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        sfu.handle_datagram(*now, from, data);
        sfu.handle_timeout(*now);
        while sfu.poll_transmit().is_some() {}
        while sfu.poll_event().is_some() {}
    });
});

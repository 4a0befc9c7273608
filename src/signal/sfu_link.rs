//! The signaling node's side of one SFU control socket: connect, wait for
//! hello, pass messages both ways, and reconnect when the SFU goes away.

use super::node::SfuSlot;
use super::{clock, SfuLink, Shared};
use crate::ipc::{self, FromSfu, ToSfu};
use crate::limits::{SFU_CONTROL_QUEUE, SFU_HELLO_TIMEOUT, SFU_RETRY_MAX, SFU_RETRY_MIN};
use smol::future::FutureExt;
use smol::net::unix::UnixStream;
use smol::Timer;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;

pub async fn run(shared: Rc<Shared>, slot: SfuSlot, path: PathBuf) {
    let mut retry = SFU_RETRY_MIN;
    let mut logged_down = false;
    loop {
        match UnixStream::connect(&path).await {
            Ok(stream) => {
                retry = SFU_RETRY_MIN;
                logged_down = false;
                if let Err(e) = session(&shared, slot, stream).await {
                    log::warn!("SFU at {}: {e}", path.display());
                }
                shared.sfus.borrow_mut()[slot.0] = None;
                shared.with_node(|n| n.sfu_down(clock(), slot));
            }
            Err(e) => {
                if !logged_down {
                    log::info!("SFU at {} not reachable yet: {e}", path.display());
                    logged_down = true;
                }
            }
        }
        Timer::after(retry).await;
        retry = (retry * 2).min(SFU_RETRY_MAX);
    }
}

async fn session(shared: &Shared, slot: SfuSlot, stream: UnixStream) -> io::Result<()> {
    let mut reader = stream.clone();
    let hello = ipc::read_frame(&mut reader).or(async {
        Timer::after(SFU_HELLO_TIMEOUT).await;
        Err(io::ErrorKind::TimedOut.into())
    });
    let Some(frame) = hello.await? else {
        return Ok(());
    };
    let hello: FromSfu = ipc::decode(&frame)?;
    if !matches!(hello, FromSfu::Hello { .. }) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "expected hello"));
    }
    let (tx, rx) = smol::channel::bounded::<ToSfu>(SFU_CONTROL_QUEUE);
    let (reset, reset_rx) = smol::channel::bounded::<()>(1);
    shared.sfus.borrow_mut()[slot.0] = Some(SfuLink { tx, _reset: reset });
    shared.with_node(|n| n.sfu_message(clock(), slot, hello));

    let mut writer = stream;
    let write_loop = async {
        while let Ok(msg) = rx.recv().await {
            ipc::write_msg(&mut writer, &msg).await?;
        }
        Ok(())
    };
    let read_loop = async {
        while let Some(frame) = ipc::read_frame(&mut reader).await? {
            let msg: FromSfu = ipc::decode(&frame)?;
            shared.with_node(|n| n.sfu_message(clock(), slot, msg));
        }
        Ok::<(), io::Error>(())
    };
    // The node dropped the link (its queue overflowed): end the connection
    // now, even with a write stuck on a socket the SFU does not read.
    let reset = async {
        let _ = reset_rx.recv().await;
        Err(io::Error::other(
            "control queue full: connection dropped, the SFU drops its sessions",
        ))
    };
    read_loop.or(write_loop).or(reset).await
}

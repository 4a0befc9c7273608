//! Many datagrams, one system call. The SFU sends every packet it forwards
//! once per subscriber; a profile of the 150k packets/s load showed about
//! two thirds of its CPU time in the kernel, a good part of it the fixed
//! cost of each `sendto` (entry, socket lookup, address copy). `sendmmsg`
//! pays that once per batch. Destinations differ from one datagram to the
//! next (one per subscriber), so UDP GSO, which needs one destination per
//! call, does not apply.

use crate::limits::SFU_SEND_BATCH as BATCH;
use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
use std::io::{self, IoSlice};
use std::net::UdpSocket;
use str0m::net::Transmit;

/// Sends the first `BATCH` of `transmits` with one `sendmmsg`; returns how
/// many the kernel took (at least one), or the error of the first one
/// (`WouldBlock` when the socket buffer is full). Nothing is allocated:
/// the message headers live on the stack.
pub fn send(socket: &UdpSocket, transmits: &[Transmit]) -> io::Result<usize> {
    let batch = &transmits[..transmits.len().min(BATCH)];
    let addrs: heapless::Vec<SocketAddrAny, BATCH> = batch
        .iter()
        .map(|t| SocketAddrAny::from(t.destination))
        .collect();
    let iovs: heapless::Vec<[IoSlice<'_>; 1], BATCH> =
        batch.iter().map(|t| [IoSlice::new(&t.contents)]).collect();
    let mut controls: [SendAncillaryBuffer<'_, '_, '_>; BATCH] =
        std::array::from_fn(|_| SendAncillaryBuffer::default());
    let mut msgs: heapless::Vec<MMsgHdr<'_>, BATCH> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
        .collect();
    if msgs.is_empty() {
        return Ok(0);
    }
    Ok(sendmmsg(socket, &mut msgs, SendFlags::empty())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;
    use str0m::net::{DatagramSend, Protocol};

    fn transmit(to: SocketAddr, from: SocketAddr, body: &[u8]) -> Transmit {
        Transmit {
            proto: Protocol::Udp,
            source: from,
            destination: to,
            contents: DatagramSend::from(body.to_vec()),
        }
    }

    #[test]
    fn one_call_delivers_each_datagram_to_its_own_destination_in_order() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = sender.local_addr().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let list: Vec<Transmit> = (0..40u8)
            .map(|i| transmit(if i % 2 == 0 { to_a } else { to_b }, from, &[i; 3]))
            .collect();
        let n = send(&sender, &list).unwrap();
        assert_eq!(n, BATCH, "one call takes at most a batch");
        let rest = send(&sender, &list[n..]).unwrap();
        assert_eq!(rest, 40 - BATCH);
        let mut buf = [0u8; 16];
        for i in (0..40u8).step_by(2) {
            assert_eq!(a.recv(&mut buf).unwrap(), 3);
            assert_eq!(buf[..3], [i; 3]);
            assert_eq!(b.recv(&mut buf).unwrap(), 3);
            assert_eq!(buf[..3], [i + 1; 3]);
        }
        assert_eq!(send(&sender, &[]).unwrap(), 0);
    }
}

//! Reading the few header fields TUN mode decides on, and building the UDP packets it
//! writes back to the device.

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, UdpPacket,
    UdpRepr,
};

/// What an IP packet read from the device is, as far as TUN mode cares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    /// A TCP segment from `src` to `dst`; `syn` for a connection's first segment.
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
        syn: bool,
    },
    /// A UDP datagram and its payload.
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'a [u8],
    },
    /// ICMP or ICMPv6 (echo requests included): not carried.
    Icmp,
    /// Anything else: other protocols, IPv4 fragments, IPv6 extension headers, garbage.
    Other,
}

/// Classifies one IP packet.
pub(crate) fn classify(packet: &[u8]) -> Kind<'_> {
    let Some(first) = packet.first() else {
        return Kind::Other;
    };
    let (src_ip, dst_ip, proto, payload): (IpAddr, IpAddr, IpProtocol, &[u8]) = match first >> 4 {
        4 => {
            let Ok(p) = Ipv4Packet::new_checked(packet) else {
                return Kind::Other;
            };
            if p.more_frags() || p.frag_offset() != 0 {
                return Kind::Other;
            }
            let header = usize::from(p.header_len());
            let total = usize::from(p.total_len()).min(packet.len());
            let Some(payload) = packet.get(header..total) else {
                return Kind::Other;
            };
            (
                IpAddr::V4(p.src_addr()),
                IpAddr::V4(p.dst_addr()),
                p.next_header(),
                payload,
            )
        }
        6 => {
            let Ok(p) = Ipv6Packet::new_checked(packet) else {
                return Kind::Other;
            };
            let end = 40 + usize::from(p.payload_len());
            let Some(payload) = packet.get(40..end.min(packet.len())) else {
                return Kind::Other;
            };
            (
                IpAddr::V6(p.src_addr()),
                IpAddr::V6(p.dst_addr()),
                p.next_header(),
                payload,
            )
        }
        _ => return Kind::Other,
    };
    match proto {
        IpProtocol::Tcp => match TcpPacket::new_checked(payload) {
            Ok(t) => Kind::Tcp {
                src: SocketAddr::new(src_ip, t.src_port()),
                dst: SocketAddr::new(dst_ip, t.dst_port()),
                syn: t.syn() && !t.ack(),
            },
            Err(_) => Kind::Other,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(payload) {
            Ok(u) => {
                let len = usize::from(u.len()).clamp(8, payload.len());
                Kind::Udp {
                    src: SocketAddr::new(src_ip, u.src_port()),
                    dst: SocketAddr::new(dst_ip, u.dst_port()),
                    payload: payload.get(8..len).unwrap_or(&[]),
                }
            }
            Err(_) => Kind::Other,
        },
        IpProtocol::Icmp | IpProtocol::Icmpv6 => Kind::Icmp,
        _ => Kind::Other,
    }
}

/// An IP packet carrying one UDP datagram from `src` to `dst`, checksums filled in;
/// `None` when the families differ or the payload does not fit one packet.
pub(crate) fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let udp = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let udp_len = udp.header_len() + payload.len();
    let caps = ChecksumCapabilities::default();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: 64,
            };
            let total = ip.buffer_len() + udp_len;
            if total > usize::from(u16::MAX) {
                return None;
            }
            let mut buf = vec![0u8; total];
            let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
            ip.emit(&mut p, &caps);
            emit_udp(&udp, p.payload_mut(), s.into(), d.into(), payload, &caps);
            Some(buf)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            if udp_len > usize::from(u16::MAX) {
                return None;
            }
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: 64,
            };
            let mut buf = vec![0u8; ip.buffer_len() + udp_len];
            let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
            ip.emit(&mut p);
            emit_udp(&udp, p.payload_mut(), s.into(), d.into(), payload, &caps);
            Some(buf)
        }
        _ => None,
    }
}

/// Writes the UDP header and `payload` into `buf` (the IP packet's payload), with the
/// checksum over the pseudo-header of `src` and `dst`.
fn emit_udp(
    udp: &UdpRepr,
    buf: &mut [u8],
    src: IpAddress,
    dst: IpAddress,
    payload: &[u8],
    caps: &ChecksumCapabilities,
) {
    let mut u = UdpPacket::new_unchecked(buf);
    udp.emit(
        &mut u,
        &src,
        &dst,
        payload.len(),
        |b| b.copy_from_slice(payload),
        caps,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_v4_round_trips_with_a_valid_checksum() {
        let src: SocketAddr = "198.51.100.53:53".parse().unwrap();
        let dst: SocketAddr = "100.96.0.1:40000".parse().unwrap();
        let pkt = udp_packet(src, dst, b"answer").unwrap();
        assert_eq!(
            classify(&pkt),
            Kind::Udp {
                src,
                dst,
                payload: b"answer"
            }
        );
        let ip = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        assert!(ip.verify_checksum());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
            unreachable!()
        };
        assert!(udp.verify_checksum(&IpAddress::Ipv4(s), &IpAddress::Ipv4(d)));
    }

    #[test]
    fn udp_v6_round_trips() {
        let src: SocketAddr = "[2001:db8::53]:53".parse().unwrap();
        let dst: SocketAddr = "[fd7a:7a74:756e::1]:5353".parse().unwrap();
        let pkt = udp_packet(src, dst, &[7u8; 300]).unwrap();
        match classify(&pkt) {
            Kind::Udp {
                src: s,
                dst: d,
                payload,
            } => {
                assert_eq!((s, d), (src, dst));
                assert_eq!(payload, &[7u8; 300][..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mixed_families_build_nothing() {
        assert!(udp_packet(
            "198.51.100.53:53".parse().unwrap(),
            "[::1]:5".parse().unwrap(),
            b"x"
        )
        .is_none());
    }

    /// A TCP SYN as the kernel sends it: 20-byte IPv4 header, 20-byte TCP header.
    fn tcp_v4(flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[100, 96, 0, 1]);
        p[16..20].copy_from_slice(&[198, 51, 100, 101]);
        p[20..22].copy_from_slice(&40001u16.to_be_bytes());
        p[22..24].copy_from_slice(&443u16.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p
    }

    #[test]
    fn classifies_tcp_syn_and_later_segments() {
        let src: SocketAddr = "100.96.0.1:40001".parse().unwrap();
        let dst: SocketAddr = "198.51.100.101:443".parse().unwrap();
        assert_eq!(
            classify(&tcp_v4(0x02)),
            Kind::Tcp {
                src,
                dst,
                syn: true
            }
        );
        // SYN+ACK and plain ACK are not a new connection.
        for flags in [0x12, 0x10] {
            assert_eq!(
                classify(&tcp_v4(flags)),
                Kind::Tcp {
                    src,
                    dst,
                    syn: false
                }
            );
        }
    }

    #[test]
    fn classifies_icmp_fragments_and_garbage() {
        let mut icmp = tcp_v4(0x02);
        icmp[9] = 1;
        assert_eq!(classify(&icmp), Kind::Icmp);
        let mut frag = tcp_v4(0x02);
        frag[6] = 0x20; // more fragments
        assert_eq!(classify(&frag), Kind::Other);
        assert_eq!(classify(&[]), Kind::Other);
        assert_eq!(classify(&[0x45, 0, 0]), Kind::Other);
        assert_eq!(classify(&[0x00; 60]), Kind::Other);
    }
}

//! `--mtu-upper-bound BYTES`: the largest UDP payload path MTU discovery probes for on the
//! connections this process makes or accepts (zt-proto's
//! `TransportSettings::mtu_upper_bound`, default 1452). Raise it where the network carries
//! jumbo frames (an edge and its connectors inside one cloud network); both ends of a hop
//! must, since each accepts datagrams only up to its own bound.

use zt_proto::MAX_MTU_UPPER_BOUND;

/// Smallest bound QUIC allows.
const MIN: u16 = 1200;

/// Parses a number of bytes from 1200 to [`MAX_MTU_UPPER_BOUND`].
pub(crate) fn parse_mtu_upper_bound(s: &str) -> Result<u16, String> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` is not a number of bytes (e.g. 6500)"));
    }
    t.parse::<u16>()
        .ok()
        .filter(|b| (MIN..=MAX_MTU_UPPER_BOUND).contains(b))
        .ok_or_else(|| {
            format!(
                "`{s}`: the bound must be from {MIN} to {MAX_MTU_UPPER_BOUND} bytes \
                 ({MAX_MTU_UPPER_BOUND}: ten packets in one segmented send stay within \
                 the kernel's 64 KiB)"
            )
        })
}

/// Sets the bound in `t` when one was given.
pub(crate) fn apply(t: &mut zt_proto::TransportSettings, bound: Option<u16>) {
    if let Some(b) = bound {
        t.mtu_upper_bound = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_in_range_are_read_and_others_say_why_not() {
        assert_eq!(parse_mtu_upper_bound("1452"), Ok(1452));
        assert_eq!(parse_mtu_upper_bound(" 6550 "), Ok(6550));
        assert_eq!(parse_mtu_upper_bound("1200"), Ok(1200));
        for s in ["1199", "6551", "9000", "0", "65536", "99999999999"] {
            let e = parse_mtu_upper_bound(s).unwrap_err();
            assert!(e.contains("from 1200 to 6550 bytes"), "{s}: {e}");
        }
        for s in ["", "9k", "-1500", "1500B", "15 00"] {
            let e = parse_mtu_upper_bound(s).unwrap_err();
            assert!(e.contains("is not a number of bytes"), "{s}: {e}");
        }
    }
}

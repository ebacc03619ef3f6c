//! `--stream-window SIZE`: one flow's receive window on each hop this process receives on
//! (zt-proto's `TransportSettings::stream_receive_window`, default 256 KiB). It bounds one
//! flow to window ÷ round trip (about 105 Mbit/s at 20 ms); a larger one lets a single
//! transfer fill a long path, at the cost of small flows waiting longer behind it.

/// Smallest and largest window the flag accepts.
const MIN: u64 = 16 * 1024;
const MAX: u64 = 64 * 1024 * 1024;

/// Parses `256KiB`, `2MiB`, `1048576` (bytes); `K`/`KB` and `M`/`MB` are read as KiB and
/// MiB, case does not matter.
pub(crate) fn parse_stream_window(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "`{s}` is not a size: write a number of bytes or a number with KiB or MiB (e.g. 2MiB)"
        ));
    }
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        other => {
            return Err(format!(
                "`{s}`: unknown unit `{other}` (use KiB or MiB, e.g. 256KiB or 2MiB)"
            ))
        }
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|b| (MIN..=MAX).contains(b))
        .ok_or_else(|| format!("`{s}`: a stream window must be from 16KiB to 64MiB"))?;
    Ok(bytes)
}

/// Sets the window in `t`, raising the connection window to hold at least one such flow.
pub(crate) fn apply(t: &mut zt_proto::TransportSettings, window: Option<u64>) {
    if let Some(w) = window {
        t.set_stream_receive_window(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_stream_window("256KiB"), Ok(256 * 1024));
        assert_eq!(parse_stream_window(" 2mib "), Ok(2 * 1024 * 1024));
        assert_eq!(parse_stream_window("2M"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_stream_window("65536"), Ok(65536));
        assert_eq!(parse_stream_window("64 MiB"), Ok(64 * 1024 * 1024));
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        let e = parse_stream_window("2GB").unwrap_err();
        assert!(e.contains("unknown unit `gb`"), "{e}");
        let e = parse_stream_window("MiB").unwrap_err();
        assert!(e.contains("is not a size"), "{e}");
        for s in [
            "1KiB",
            "65MiB",
            "0",
            "99999999999999999999999MiB",
            "18446744073709551615MiB",
        ] {
            let e = parse_stream_window(s).unwrap_err();
            assert!(e.contains("from 16KiB to 64MiB"), "{s}: {e}");
        }
    }

    #[test]
    fn every_input_is_answered_and_accepted_sizes_are_in_range() {
        // Every string over the characters a size is written with, up to four of them,
        // parses or is refused without a panic.
        let alphabet = ['0', '1', '6', '9', 'k', 'K', 'i', 'B', 'm', ' ', '-', '.'];
        let mut inputs = vec![String::new()];
        for _ in 0..4 {
            let next: Vec<String> = inputs
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            inputs.extend(next);
        }
        for s in &inputs {
            if let Ok(b) = parse_stream_window(s) {
                assert!((MIN..=MAX).contains(&b), "{s}");
            }
        }
    }

    #[test]
    fn the_connection_window_holds_one_flow() {
        let mut t = zt_proto::TransportSettings::default();
        apply(&mut t, Some(16 * 1024 * 1024));
        assert_eq!(t.stream_receive_window, 16 * 1024 * 1024);
        assert_eq!(t.connection_receive_window, 16 * 1024 * 1024);
        let mut t = zt_proto::TransportSettings::default();
        let before = t.clone();
        apply(&mut t, None);
        assert_eq!(t, before);
    }
}

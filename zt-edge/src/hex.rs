//! Lowercase hexadecimal, the one text form the edge uses for fingerprints, tags and keys.

/// Encodes bytes as lowercase hex.
pub(crate) fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes exactly `N` bytes of lowercase hex; anything else (uppercase, odd length, other
/// characters) is `None`, so a stored value has exactly one spelling.
pub(crate) fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let raw = text.as_bytes();
    if raw.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
        *slot = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Decodes lowercase hex of any even length, strictly as [`decode_array`] does.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    let raw = text.as_bytes();
    if raw.len() % 2 != 0 {
        return None;
    }
    raw.chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

/// Whether `text` is `len` lowercase hex digits.
pub(crate) fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| nibble(b).is_some())
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let bytes = [0x00, 0x1f, 0xa0, 0xff];
        assert_eq!(encode(&bytes), "001fa0ff");
        assert_eq!(decode_array::<4>("001fa0ff"), Some(bytes));
        assert_eq!(decode_array::<4>("001FA0FF"), None);
        assert_eq!(decode_array::<4>("001fa0f"), None);
        assert_eq!(decode_array::<4>("001fa0fg"), None);
        assert_eq!(decode("001fa0ff"), Some(bytes.to_vec()));
        assert_eq!(decode(""), Some(Vec::new()));
        assert_eq!(decode("001fa0f"), None);
        assert_eq!(decode("0G"), None);
        assert!(is_lower_hex("0af9", 4));
        assert!(!is_lower_hex("0aF9", 4));
        assert!(!is_lower_hex("0af", 4));
    }
}

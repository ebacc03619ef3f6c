//! Did-you-mean for keys: a misspelt key that silently falls back to its default is worse
//! than an error, so a key that is *almost* a known one is named with the one it most
//! likely meant.

/// The known key a misspelt `name` most likely meant: equal after ignoring case, `-` and
/// `_` (`ha_connections`, `connect-timeout`), or within two edits of it (Damerau-Levenshtein,
/// so a swapped pair of letters is one edit). Keys of four characters or fewer only match
/// exactly after that squashing: two edits turn any short key into many others.
///
/// On a tie the key listed first wins, so callers order `known` by how common each key is.
pub fn suggest(name: &str, known: &[&'static str]) -> Option<&'static str> {
    let squash = |s: &str| {
        s.chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let wanted = squash(name);
    known
        .iter()
        .map(|k| (*k, strsim::damerau_levenshtein(&wanted, &squash(k))))
        .filter(|(k, d)| *d == 0 || (*d <= 2 && k.len() > 4))
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &["tunnel", "ha-connections", "edge", "connectTimeout"];

    #[test]
    fn spelling_variants_and_small_typos_are_suggested() {
        assert_eq!(suggest("ha_connections", KEYS), Some("ha-connections"));
        assert_eq!(suggest("ha-conections", KEYS), Some("ha-connections"));
        assert_eq!(suggest("connect-timeout", KEYS), Some("connectTimeout"));
        assert_eq!(suggest("Tunnel", KEYS), Some("tunnel"));
        assert_eq!(suggest("tunenl", KEYS), Some("tunnel"));
        assert_eq!(suggest("EDGE", KEYS), Some("edge"));
    }

    #[test]
    fn short_keys_and_strangers_get_nothing() {
        // Two edits from `edge`, but short keys only match exactly.
        assert_eq!(suggest("ege", KEYS), None);
        assert_eq!(suggest("ingress", KEYS), None);
        assert_eq!(suggest("", KEYS), None);
        assert_eq!(suggest("tunnel", &[]), None);
    }

    #[test]
    fn the_closest_key_wins() {
        assert_eq!(
            suggest("tunnels", &["tunnel", "tunnel-s"]),
            Some("tunnel-s")
        );
        // A tie goes to the key listed first.
        assert_eq!(suggest("tunnelx", &["tunnel", "tunnel-xy"]), Some("tunnel"));
    }
}

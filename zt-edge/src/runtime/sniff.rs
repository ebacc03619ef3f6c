//! The host a flow's first bytes name: the SNI of a TLS ClientHello or the `Host` of an
//! HTTP/1 request. Only reads; the bytes are forwarded unchanged afterwards.
//!
//! Every length is checked against what was received, so hostile bytes yield "no host",
//! never a panic; "need more bytes" is told apart from "not this protocol".

/// What the first bytes revealed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A TLS ClientHello, with its server name if it has one.
    Tls(Option<String>),
    /// An HTTP/1 request, with its `Host` if it has one.
    Http(Option<String>),
    /// Neither: pass the bytes on without a host.
    Other,
    /// Could be one of them; more bytes would tell.
    NeedMore,
}

/// Longest host name kept (DNS's limit).
const MAX_HOST: usize = 253;
/// An HTTP method is a short upper-case token; 16 letters or more is something else.
const MAX_METHOD: usize = 16;

/// Looks at the bytes received so far.
pub(crate) fn sniff(buf: &[u8]) -> Sniffed {
    match buf.first() {
        None => Sniffed::NeedMore,
        Some(0x16) => tls(buf),
        Some(b) if b.is_ascii_uppercase() => http(buf),
        Some(_) => Sniffed::Other,
    }
}

fn host_name(raw: &[u8]) -> Option<String> {
    // The trailing dot of an absolute name goes first, so a name of dots alone is empty.
    let text = std::str::from_utf8(raw).ok()?.trim().trim_end_matches('.');
    let ok = !text.is_empty()
        && text.len() <= MAX_HOST
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    ok.then(|| text.to_ascii_lowercase())
}

/// A cursor over a byte slice whose reads fail past the end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn tls(buf: &[u8]) -> Sniffed {
    // Record header: type, version, length. The ClientHello may span records; the first
    // one holds the start of it and, in practice, the whole of it.
    let mut rec = Cursor(buf);
    let (Some(_), Some(_), Some(len)) = (rec.u8(), rec.u16(), rec.u16()) else {
        return Sniffed::NeedMore;
    };
    if buf[1] != 3 {
        return Sniffed::Other;
    }
    let body = &buf[5..];
    let complete = body.len() >= len;
    let body = &body[..body.len().min(len)];
    let mut hs = Cursor(body);
    match hs.u8() {
        Some(1) => {}
        Some(_) => return Sniffed::Tls(None),
        None => return Sniffed::NeedMore,
    }
    let Some(hs_len) = hs.u24() else {
        return Sniffed::NeedMore;
    };
    let Some(hello) = hs.take(hs_len) else {
        return if complete {
            // The hello continues in a later record; what we have is all we look at.
            Sniffed::Tls(server_name(hs.0))
        } else {
            Sniffed::NeedMore
        };
    };
    Sniffed::Tls(server_name(hello))
}

fn server_name(hello: &[u8]) -> Option<String> {
    let mut c = Cursor(hello);
    c.take(2 + 32)?; // legacy version, random
    c.vec8()?; // session id
    c.vec16()?; // cipher suites
    c.vec8()?; // compression methods
    let mut exts = Cursor(c.vec16()?);
    while let Some(kind) = exts.u16() {
        let data = exts.vec16()?;
        if kind == 0 {
            let mut list = Cursor(data);
            let mut names = Cursor(list.vec16()?);
            while let Some(name_type) = names.u8() {
                let name = names.vec16()?;
                if name_type == 0 {
                    return host_name(name);
                }
            }
            return None;
        }
    }
    None
}

fn http(buf: &[u8]) -> Sniffed {
    // A request line starts with a method token and a space.
    let method_end = buf.iter().position(|&b| !b.is_ascii_uppercase());
    match method_end {
        None if buf.len() < MAX_METHOD => return Sniffed::NeedMore,
        None => return Sniffed::Other,
        Some(i) if i == 0 || i >= MAX_METHOD || buf[i] != b' ' => return Sniffed::Other,
        Some(_) => {}
    }
    // Only complete lines count. A line still arriving may be a Host header cut short
    // ("Host: blocked.ex" of "blocked.example"): deciding on it would let a client choose
    // the host policy sees by how it splits its writes.
    let mut lines = buf
        .split_inclusive(|&b| b == b'\n')
        .take_while(|line| line.ends_with(b"\n"));
    let _request_line = lines.next();
    let mut seen_end = false;
    for line in lines {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            seen_end = true;
            break;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            if line[..colon].eq_ignore_ascii_case(b"host") {
                let value = &line[colon + 1..];
                let value = strip_port(value);
                return Sniffed::Http(host_name(value));
            }
        }
    }
    if seen_end {
        Sniffed::Http(None)
    } else {
        Sniffed::NeedMore
    }
}

fn strip_port(value: &[u8]) -> &[u8] {
    let trimmed = value.trim_ascii();
    if trimmed.first() == Some(&b'[') {
        // An IPv6 literal is not a host name for policy purposes.
        return &[];
    }
    match trimmed.iter().rposition(|&b| b == b':') {
        Some(i) => &trimmed[..i],
        None => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_hello(sni: &str) -> Vec<u8> {
        let name = sni.as_bytes();
        let mut sni_ext = Vec::new();
        sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        sni_ext.push(0);
        sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni_ext.extend_from_slice(name);
        let mut exts = Vec::new();
        // An unrelated extension first (supported_versions).
        exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        exts.extend_from_slice(&[0, 0]);
        exts.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
        exts.extend_from_slice(&sni_ext);
        let mut hello = vec![3, 3];
        hello.extend_from_slice(&[7; 32]);
        hello.push(0);
        hello.extend_from_slice(&[0, 2, 0x13, 0x01]);
        hello.extend_from_slice(&[1, 0]);
        hello.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        hello.extend_from_slice(&exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&hello);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn finds_the_sni_and_waits_for_a_partial_hello() {
        let hello = client_hello("API.Example.com");
        assert_eq!(sniff(&hello), Sniffed::Tls(Some("api.example.com".into())));
        for cut in 0..hello.len() {
            assert_eq!(sniff(&hello[..cut]), Sniffed::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn a_name_of_dots_alone_is_no_host() {
        // Found by the edge_sniff fuzz target: "..." passed the character check and
        // became "" once its trailing dots were trimmed.
        assert_eq!(sniff(&client_hello("...")), Sniffed::Tls(None));
        assert_eq!(
            sniff(b"GET / HTTP/1.1\r\nHost: ..\r\n\r\n"),
            Sniffed::Http(None)
        );
        assert_eq!(
            sniff(&client_hello("Kube.Internal.")),
            Sniffed::Tls(Some("kube.internal".into()))
        );
    }

    #[test]
    fn a_host_line_still_arriving_is_not_taken_for_the_host() {
        let req = b"GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n";
        let whole = sniff(req);
        assert_eq!(whole, Sniffed::Http(Some("blocked.example".into())));
        // Whatever prefix decides, decides what the whole request does.
        for cut in 0..req.len() {
            let part = sniff(&req[..cut]);
            assert!(
                part == Sniffed::NeedMore || part == whole,
                "cut at {cut}: {part:?}"
            );
        }
    }

    #[test]
    fn finds_the_http_host() {
        let req = b"GET /version HTTP/1.1\r\nUser-Agent: x\r\nhost: kube.internal:6443\r\n\r\n";
        assert_eq!(sniff(req), Sniffed::Http(Some("kube.internal".into())));
        assert_eq!(sniff(&req[..20]), Sniffed::NeedMore);
        assert_eq!(sniff(b"GET / HTTP/1.0\r\n\r\n"), Sniffed::Http(None));
        assert_eq!(sniff(b"SSH-2.0-OpenSSH\r\n"), Sniffed::Other);
        assert_eq!(sniff(&[0, 1, 2]), Sniffed::Other);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_classified_without_panicking(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            tls in proptest::bool::ANY,
        ) {
            let mut b = bytes;
            if tls && !b.is_empty() {
                b[0] = 0x16;
            }
            if let Sniffed::Tls(Some(h)) | Sniffed::Http(Some(h)) = sniff(&b) {
                proptest::prop_assert!(h.len() <= MAX_HOST);
            }
        }
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let hello = client_hello("a.example");
        for i in 0..hello.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = hello.clone();
                b[i] = v;
                let _ = sniff(&b);
            }
        }
    }
}

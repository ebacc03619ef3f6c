//! The loopback redirect's request, as the browser sends it to `zt login`: a pure parser
//! (it is reached by whatever connects to the loopback port, so it is fuzzed).

/// Longest request head read from the browser.
pub const MAX_CALLBACK_HEAD: usize = 8 * 1024;

/// What the provider sent back through the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// `?code=…&state=…`: the sign-in went through at the provider.
    Code {
        /// The authorization code.
        code: String,
        /// The state, to compare with the one sent.
        state: String,
    },
    /// `?error=…`: the provider refused (RFC 6749 §4.1.2.1).
    Error {
        /// The OAuth error code.
        error: String,
        /// Its description, when given.
        description: Option<String>,
        /// The state, when given.
        state: Option<String>,
    },
}

/// Why a request on the loopback port is not the redirect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallbackError {
    /// The request head is not complete yet (no blank line).
    #[error("the request is incomplete")]
    Incomplete,
    /// The request head is longer than [`MAX_CALLBACK_HEAD`].
    #[error("the request head is longer than {MAX_CALLBACK_HEAD} bytes")]
    TooLong,
    /// Not `GET <path> HTTP/1.x`.
    #[error("not an HTTP GET request line")]
    NotGet,
    /// A different path (a browser asking for `/favicon.ico`, say).
    #[error("path {0:?} is not the redirect path")]
    OtherPath(String),
    /// The redirect carries neither `code` and `state` nor `error`.
    #[error("the redirect has no code and state, and no error")]
    Missing,
    /// A parameter is not valid percent-encoded UTF-8.
    #[error("parameter {0:?} is not valid percent-encoded UTF-8")]
    BadEncoding(String),
}

/// Parses the request head `head` (everything up to and including the blank line) of a
/// request for `path`.
pub fn parse_callback(head: &[u8], path: &str) -> Result<Callback, CallbackError> {
    if head.len() > MAX_CALLBACK_HEAD {
        return Err(CallbackError::TooLong);
    }
    if !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        return Err(CallbackError::Incomplete);
    }
    let line_end = head
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(CallbackError::Incomplete)?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| CallbackError::NotGet)?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some("GET"), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CallbackError::NotGet);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(CallbackError::NotGet);
    }
    let (got_path, query) = target.split_once('?').unwrap_or((target, ""));
    if got_path != path {
        return Err(CallbackError::OtherPath(
            got_path.chars().take(64).collect(),
        ));
    }
    let mut code = None;
    let mut state = None;
    let mut error = None;
    let mut description = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded =
            || decode(v).ok_or_else(|| CallbackError::BadEncoding(k.chars().take(32).collect()));
        match k {
            "code" => code = Some(decoded()?),
            "state" => state = Some(decoded()?),
            "error" => error = Some(decoded()?),
            "error_description" => description = Some(decoded()?),
            _ => {}
        }
    }
    match (error, code, state) {
        (Some(error), _, state) => Ok(Callback::Error {
            error,
            description,
            state,
        }),
        (None, Some(code), Some(state)) if !code.is_empty() => Ok(Callback::Code { code, state }),
        _ => Err(CallbackError::Missing),
    }
}

/// `application/x-www-form-urlencoded` decoding of one value.
fn decode(v: &str) -> Option<String> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let s = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(s, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_code_and_state_and_the_provider_s_errors() {
        let head = b"GET /callback?code=abc%2Fdef&state=s1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        assert_eq!(
            parse_callback(head, "/callback"),
            Ok(Callback::Code {
                code: "abc/def".into(),
                state: "s1".into()
            })
        );
        let head =
            b"GET /callback?error=access_denied&error_description=no+way&state=s HTTP/1.1\r\n\r\n";
        assert_eq!(
            parse_callback(head, "/callback"),
            Ok(Callback::Error {
                error: "access_denied".into(),
                description: Some("no way".into()),
                state: Some("s".into())
            })
        );
        assert!(matches!(
            parse_callback(b"GET /favicon.ico HTTP/1.1\r\n\r\n", "/callback"),
            Err(CallbackError::OtherPath(_))
        ));
        assert_eq!(
            parse_callback(b"POST /callback HTTP/1.1\r\n\r\n", "/callback"),
            Err(CallbackError::NotGet)
        );
        assert_eq!(
            parse_callback(b"GET /callback?code=x HTTP/1.1\r\n", "/callback"),
            Err(CallbackError::Incomplete)
        );
        assert_eq!(
            parse_callback(
                b"GET /callback?code=%zz&state=a HTTP/1.1\r\n\r\n",
                "/callback"
            ),
            Err(CallbackError::BadEncoding("code".into()))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(head in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_callback(&head, "/callback");
        }

        #[test]
        fn any_code_and_state_survive_encoding(code in "[ -~]{1,80}", state in "[a-f0-9]{1,40}") {
            let enc: String = code.bytes().map(|b| format!("%{b:02X}")).collect();
            let head = format!("GET /callback?state={state}&code={enc} HTTP/1.1\r\n\r\n");
            prop_assert_eq!(
                parse_callback(head.as_bytes(), "/callback"),
                Ok(Callback::Code { code, state })
            );
        }
    }
}

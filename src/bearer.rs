//! Parsing `Authorization: Bearer <token>` (RFC 6750 §2.1).

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::error::Malformed;

/// Why no token could be taken from the headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoToken {
    Missing,
    Malformed(Malformed),
}

/// The token of the request's single `Authorization: Bearer` header, not yet
/// checked with [`check`].
///
/// The scheme is matched case-insensitively (RFC 9110 §11.1); one or more
/// spaces may follow it. Another scheme (`Basic …`, `Token …`, a bare
/// word) is no credential at all, as RFC 6750 §3.1 says of "an unsupported
/// authentication method": [`NoToken::Missing`], like no header. A value
/// with no scheme to read (empty, or not starting with an RFC 9110 `token`)
/// is malformed.
pub(crate) fn token(headers: &HeaderMap) -> Result<&[u8], NoToken> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(NoToken::Missing)?;
    if values.next().is_some() {
        return Err(NoToken::Malformed(Malformed::MultipleHeaders));
    }
    let bytes = value.as_bytes();
    let (scheme, rest) = match bytes.iter().position(|&b| b == b' ') {
        Some(i) => (&bytes[..i], &bytes[i..]),
        None => (bytes, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(if is_scheme(scheme) {
            NoToken::Missing
        } else {
            NoToken::Malformed(Malformed::Scheme)
        });
    }
    // RFC 6750 §2.1: `"Bearer" 1*SP b64token`: spaces only, not tabs.
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    let token = &rest[start..];
    if token.is_empty() {
        return Err(NoToken::Malformed(Malformed::EmptyToken));
    }
    Ok(token)
}

/// Whether `scheme` is an RFC 9110 `token` (§5.6.2), as an `auth-scheme`
/// must be: `1*tchar`.
fn is_scheme(scheme: &[u8]) -> bool {
    !scheme.is_empty()
        && scheme.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Whether `token` is an RFC 6750 `b64token`:
/// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
///
/// Separate from [`token`] so that a token the cache already answered for,
/// which was checked when it was first resolved, is not scanned again (it
/// costs ~0.3 ns a byte: 30 ns for an API key, 230 ns for a JWT).
pub(crate) fn check(token: &[u8]) -> Result<(), Malformed> {
    if is_b64token(token) {
        Ok(())
    } else {
        Err(Malformed::InvalidCharacters)
    }
}

fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    body_len > 0 && token[..body_len].iter().all(|&b| B64TOKEN[usize::from(b)])
}

/// `ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/"`, as a table: one load
/// a byte instead of a chain of range checks.
static B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

/// What RFC 6750 §2.1 and §3.1 say of one header value, written from
/// the grammar and nothing else: `credentials = auth-scheme [ 1*SP
/// ... ]`, and for Bearer `"Bearer" 1*SP b64token`. What [`token`] and
/// [`check`] are held to by the property tests and the fuzzer.
#[cfg(any(test, fuzzing))]
pub(crate) fn reference(value: &[u8]) -> Result<Vec<u8>, NoToken> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let b64char = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
    let scheme_len = value.iter().take_while(|&&b| tchar(b)).count();
    let (scheme, rest) = value.split_at(scheme_len);
    if scheme.is_empty() || !(rest.is_empty() || rest[0] == b' ') {
        return Err(NoToken::Malformed(Malformed::Scheme));
    }
    if !scheme.eq_ignore_ascii_case(b"Bearer") {
        return Err(NoToken::Missing);
    }
    let token: Vec<u8> = rest.iter().copied().skip_while(|&b| b == b' ').collect();
    let body = token.iter().take_while(|&&b| b64char(b)).count();
    let padding = token[body..].iter().take_while(|&&b| b == b'=').count();
    match (token.is_empty(), body > 0 && body + padding == token.len()) {
        (true, _) => Err(NoToken::Malformed(Malformed::EmptyToken)),
        (false, true) => Ok(token),
        (false, false) => Err(NoToken::Malformed(Malformed::InvalidCharacters)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    /// Header values near the grammar: a scheme, separators and token
    /// characters, with a little of everything else.
    fn near_the_grammar() -> impl Strategy<Value = Vec<u8>> {
        let scheme = prop_oneof![
            Just(b"Bearer".to_vec()),
            Just(b"bEaReR".to_vec()),
            Just(b"Basic".to_vec()),
            Just(b"Bearer,".to_vec()),
            Just(Vec::new()),
            proptest::collection::vec(any::<u8>(), 0..4),
        ];
        let separator = proptest::collection::vec(prop_oneof![Just(b' '), Just(b'\t')], 0..3);
        let token = proptest::collection::vec(
            prop_oneof![
                4 => proptest::sample::select(b"aZ09-._~+/".to_vec()),
                1 => Just(b'='),
                1 => proptest::sample::select(b" \t\",;:()=".to_vec()),
                1 => any::<u8>(),
            ],
            0..12,
        );
        (scheme, separator, token).prop_map(|(mut value, separator, token)| {
            value.extend(separator);
            value.extend(token);
            value
        })
    }

    proptest! {
        #[test]
        fn the_parser_agrees_with_the_grammar(value in near_the_grammar()) {
            // What a header value can hold at all (no CR, LF or NUL).
            prop_assume!(HeaderValue::from_bytes(&value).is_ok());
            prop_assert_eq!(parse(&[&value]), reference(&value), "{:?}", String::from_utf8_lossy(&value));
        }

        #[test]
        fn any_header_value_agrees(value in proptest::collection::vec(
            prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff],
            0..40,
        )) {
            prop_assert_eq!(parse(&[&value]), reference(&value));
        }
    }

    fn parse(values: &[&[u8]]) -> Result<Vec<u8>, NoToken> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        let token = token(&headers)?;
        check(token).map_err(NoToken::Malformed)?;
        Ok(token.to_vec())
    }

    #[test]
    fn accepts_bearer_tokens() {
        for (header, token) in [
            (
                &b"Bearer ohk_demo_all_scopes"[..],
                &b"ohk_demo_all_scopes"[..],
            ),
            (b"bearer abc", b"abc"),
            (b"BEARER   abc", b"abc"),
            (b"Bearer a-b.c_d~e+f/g==", b"a-b.c_d~e+f/g=="),
            (
                b"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
                b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
            ),
        ] {
            assert_eq!(
                parse(&[header]),
                Ok(token.to_vec()),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn rejects_everything_else() {
        use Malformed::*;
        let cases: [(&[&[u8]], NoToken); 19] = [
            (&[], NoToken::Missing),
            (
                &[b"Bearer a", b"Bearer b"],
                NoToken::Malformed(MultipleHeaders),
            ),
            // RFC 6750 §3.1: another scheme is no credential.
            (&[b"Basic dXNlcjpwYXNz"], NoToken::Missing),
            (&[b"Token abc"], NoToken::Missing),
            (&[b"Digest username=\"a\", realm=\"b\""], NoToken::Missing),
            (&[b"Bearerabc"], NoToken::Missing),
            (&[b"abc"], NoToken::Missing),
            // No scheme to read at all.
            (&[b""], NoToken::Malformed(Scheme)),
            (&[b" Bearer abc"], NoToken::Malformed(Scheme)),
            (&[b"Bearer\tabc"], NoToken::Malformed(Scheme)),
            (&[b"(Bearer) abc"], NoToken::Malformed(Scheme)),
            (&[b"Bearer, abc"], NoToken::Malformed(Scheme)),
            (&[b"Bearer"], NoToken::Malformed(EmptyToken)),
            (&[b"Bearer    "], NoToken::Malformed(EmptyToken)),
            (&[b"Bearer a b"], NoToken::Malformed(InvalidCharacters)),
            // `1*SP`: a tab is not a separator (proptest found this).
            (&[b"Bearer \tabc"], NoToken::Malformed(InvalidCharacters)),
            (&[b"Bearer ==="], NoToken::Malformed(InvalidCharacters)),
            (&[b"Bearer a=b"], NoToken::Malformed(InvalidCharacters)),
            (
                &[b"Bearer caf\xc3\xa9"],
                NoToken::Malformed(InvalidCharacters),
            ),
        ];
        for (values, want) in cases {
            assert_eq!(parse(values), Err(want), "{values:?}");
        }
        assert_eq!(
            parse(&[b"Bearer a\tb"]),
            Err(NoToken::Malformed(InvalidCharacters))
        );
    }
}

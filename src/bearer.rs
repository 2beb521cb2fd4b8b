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
    let token = rest.trim_ascii_start();
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
        let cases: [(&[&[u8]], NoToken); 18] = [
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

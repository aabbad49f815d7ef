//! The dashboard: one page, served at `/` and `/dashboard` next to
//! `/metrics`, that asks `/metrics.json` once a second and draws it.
//!
//! The page (`dashboard.html`) is self-contained: its script and style are
//! inline, its charts SVG, and it sends nothing but GETs of `/metrics.json`
//! to the origin it came from. The Content-Security-Policy says exactly that:
//! the one inline script and the one inline style, by their SHA-256, and
//! fetches to `'self'`; everything else (other scripts, images, frames,
//! forms) is refused by the browser, so even an endpoint name that got into
//! the page as markup could not run.

use std::borrow::Cow;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::server::Page;

/// The page, as served.
const PAGE: &str = include_str!("dashboard.html");

/// The page, with the headers that say what it may do.
pub(super) fn page() -> Page {
    static HEADERS: OnceLock<String> = OnceLock::new();
    let headers = HEADERS.get_or_init(|| {
        format!(
            "Content-Security-Policy: {}\r\nX-Content-Type-Options: nosniff\r\n\
             Referrer-Policy: no-referrer\r\n",
            content_security_policy()
        )
    });
    Page {
        status: "200 OK",
        content_type: "text/html; charset=utf-8",
        headers,
        body: Cow::Borrowed(PAGE),
    }
}

/// The policy for [`PAGE`], computed once.
fn content_security_policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            source_hash(inline(PAGE, "script")),
            source_hash(inline(PAGE, "style")),
        )
    })
}

/// The text of the page's one `<tag>...</tag>` element, as the browser
/// hashes it (empty if there is none: then nothing inline is allowed).
fn inline<'a>(page: &'a str, tag: &str) -> &'a str {
    page.split_once(&format!("<{tag}>"))
        .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
        .map_or("", |(text, _)| text)
}

/// A CSP hash source: `sha256-` and the base64 of the digest.
fn source_hash(text: &str) -> String {
    format!("sha256-{}", base64(&Sha256::digest(text.as_bytes())))
}

/// Standard base64 with padding (RFC 4648 §4), for the one digest above.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), encoded);
        }
        // The digest of nothing, as browsers print it in CSP errors.
        assert_eq!(
            source_hash(""),
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn the_policy_names_the_pages_own_script_and_style_and_nothing_else() {
        // One inline element of each, with no attribute, so the hash is of
        // exactly what runs.
        for tag in ["script", "style"] {
            assert_eq!(PAGE.matches(&format!("<{tag}")).count(), 1, "<{tag}>");
            assert!(!inline(PAGE, tag).trim().is_empty(), "<{tag}> is empty");
        }
        let policy = content_security_policy();
        assert!(policy.contains(&format!(
            "script-src '{}'",
            source_hash(inline(PAGE, "script"))
        )));
        assert!(policy.contains(&format!(
            "style-src '{}'",
            source_hash(inline(PAGE, "style"))
        )));
        assert!(policy.contains("connect-src 'self'"));
        assert!(!policy.contains("unsafe"));
        // Nothing from elsewhere: the page works without a network. (The
        // SVG namespace is a name, not an address that is fetched.)
        let page = PAGE.replace("http://www.w3.org/2000/svg", "");
        for outside in [
            "http:", "https:", "src=", "href=", "url(", "@import", "import(",
        ] {
            assert!(!page.contains(outside), "{outside} in dashboard.html");
        }
    }
}

//! A value that must never be printed: tokens, passwords, keys.

use std::fmt;

use crate::redact::MASK;

/// A secret string. `Debug` shows `Secret(REDACTED)` and `Display` shows `REDACTED`, so a
/// secret inside a config struct, an error or a log field cannot leak by formatting; the one
/// place that must hand the value over (a request header, a child's environment) calls
/// [`Secret::expose`], which is easy to find in review.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({MASK})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("ya29.very-secret");
        assert_eq!(format!("{s} {s:?}"), "REDACTED Secret(REDACTED)");
        #[derive(Debug)]
        #[allow(dead_code)] // read only through Debug
        struct Holder {
            token: Secret,
        }
        let shown = format!("{:?}", Holder { token: s.clone() });
        assert!(!shown.contains("very-secret"), "{shown}");
        assert_eq!(s.expose(), "ya29.very-secret");
    }
}

//! Error text for one log line.

/// `a: b: c` from an error and its sources, on one line, without repeating a cause whose text
/// is already there (client crates often nest their sources' messages in their own).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("outer{}", .suffix)]
    struct Outer {
        suffix: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn joins_sources_once_on_one_line() {
        let inner = || std::io::Error::other("inner\ncause");
        assert_eq!(
            error_chain(&Outer {
                suffix: "",
                source: inner()
            }),
            "outer: inner cause"
        );
        assert_eq!(
            error_chain(&Outer {
                suffix: " (inner\ncause)",
                source: inner()
            }),
            "outer (inner cause)"
        );
    }
}

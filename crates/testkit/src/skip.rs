//! The one rule for a test that cannot run on this machine (a missing privilege, a tool that
//! cannot be installed offline): in CI it fails, because CI is where the check must run and a
//! silent pass there hides that it never did; elsewhere it says `SKIPPED` with the reason and
//! the test returns.

/// Whether this is a CI run: `CI=true` or `CI=1` (what CI services set; `.ci/run` sets it).
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Call when `test` cannot run here because of `reason`, then return from the test.
///
/// # Panics
///
/// Under CI ([`in_ci`]), with the test's name and the reason, at the caller's line.
#[track_caller]
pub fn skip_unless_ci(test: &str, reason: &str) {
    assert!(
        !in_ci(),
        "{test} cannot run: {reason} (CI is set, so this fails instead of skipping)"
    );
    eprintln!("SKIPPED {test}: {reason} (CI is not set; under CI=true this fails)");
}

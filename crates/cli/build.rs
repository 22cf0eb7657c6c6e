//! Embeds the git commit into `sluice --version`. The image build passes `SLUICE_GIT_SHA`
//! (no `.git` in the build context); a checkout asks git.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SLUICE_GIT_SHA");
    // Rebuild the version string when HEAD moves (a commit or a checkout).
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        // A missing path would make cargo rerun every build: only watch what exists.
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"])
            && std::path::Path::new(&format!("{git_dir}/{reference}")).exists()
        {
            println!("cargo:rerun-if-changed={git_dir}/{reference}");
        }
    }
    let sha = std::env::var("SLUICE_GIT_SHA")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SLUICE_GIT_SHA={sha}");
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

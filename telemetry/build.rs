//! Records the git commit the binaries are built from, for `ferrolb_build_info`.
//!
//! `FERROLB_REVISION` in the build environment wins (image builds without the
//! repository's history pass it); otherwise `git rev-parse --short HEAD`, offline
//! and cheap; otherwise `unknown`. The script runs again when HEAD moves, so the
//! label follows commits and checkouts.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=FERROLB_REVISION");
    let revision = std::env::var("FERROLB_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            // HEAD names the branch; the branch's ref (loose or packed) moves on commit.
            let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
            if let Some(branch) = git(&["rev-parse", "--symbolic-full-name", "HEAD"]) {
                watched.push(branch);
            }
            for name in watched {
                if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
                    let path = PathBuf::from(path);
                    if path.exists() {
                        println!("cargo::rerun-if-changed={}", path.display());
                    }
                }
            }
            git(&["rev-parse", "--short", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=FERROLB_REVISION={revision}");
}

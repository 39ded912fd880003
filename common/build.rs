//! Records the git commit the binaries are built from, for `codraft_build_info{commit}`.
//!
//! `CODRAFT_COMMIT` wins when set (a Docker build has no `.git` and passes it as a build
//! argument); otherwise `git rev-parse` answers, and outside a git checkout the commit is
//! `unknown`, which is honest and never fails the build.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=CODRAFT_COMMIT");
    let commit = std::env::var("CODRAFT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // Rebuild when HEAD moves (a checkout, or a commit on the current branch), so the label
    // never goes stale; and only then: other branches' commits must not rebuild the
    // workspace. Paths that do not exist (a packed ref) are left out, since Cargo reruns
    // the script on every build for a missing one.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for path in watched {
        if let Some(file) = git(&["rev-parse", "--git-path", &path]) {
            if std::path::Path::new(&file).exists() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
    println!("cargo:rustc-env=CODRAFT_COMMIT={commit}");
}

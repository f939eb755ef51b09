//! Running host commands (`ip`, `kubectl`, …) with errors that say what failed.

use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// Runs `program args…`, failing with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = output(program, args)?;
    if !output.status.success() {
        bail!(
            "`{} {}` failed ({}): {}",
            program,
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `program args…` and returns its output whatever the exit status.
pub fn output(program: &str, args: &[&str]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{program}`: is it installed?"))
}

/// Runs `program args…` and reports only whether it succeeded.
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    output(program, args).is_ok_and(|o| o.status.success())
}

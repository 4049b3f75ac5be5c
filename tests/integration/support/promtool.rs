//! `promtool` (Debian's `prometheus` package): checks of the metrics format and of the alerting
//! rules. Where it is not installed, the checks say `SKIPPED` (`.ci/run` installs it).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `promtool <args>` in `dir` with `input` on stdin; asserts it succeeds and, when `quiet`,
/// says nothing (its lint findings are printed, with a zero exit status for some).
pub fn promtool(dir: &Path, args: &[&str], input: &str, quiet: bool) {
    let Ok(mut child) = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!(
            "SKIPPED promtool {}: promtool is not installed (apt-get install prometheus)",
            args.join(" ")
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && (!quiet || said.trim().is_empty()),
        "promtool {}: {said}",
        args.join(" ")
    );
}

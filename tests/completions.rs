//! `sinew completions SHELL` and `sinew man`, run as the built binary.

mod support;

use std::process::{Command, Stdio};
use support::process::BIN;

/// The subcommands every generated document must name.
const SUBCOMMANDS: [&str; 5] = ["run", "check", "status", "completions", "man"];

/// Runs `sinew ARGS...` and returns its stdout; fails the test on a non-zero exit.
fn stdout(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("run sinew");
    assert!(
        out.status.success(),
        "sinew {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn completion_scripts_name_every_subcommand_and_bash_parses_its_own() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&["completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
        assert!(script.contains("log-format"), "{shell}: no global flag");
    }
    let script = stdout(&["completions", "bash"]);
    let path = support::process::temp_file("sinew.bash", &script);
    let parsed = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("run bash -n");
    assert!(
        parsed.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let fish = stdout(&["completions", "fish"]);
    assert!(fish.contains("complete -c sinew"), "{fish}");
    let zsh = stdout(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef sinew"), "{zsh}");
}

#[test]
fn an_unknown_shell_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .expect("run sinew");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
}

#[test]
fn the_man_page_is_roff_naming_every_subcommand() {
    let page = stdout(&["man"]);
    assert!(page.contains(".TH sinew 1"), "{page}");
    assert!(page.contains(".SH SYNOPSIS") && page.contains(".SH SUBCOMMANDS"));
    for sub in SUBCOMMANDS {
        assert!(page.contains(&format!("sinew\\-{sub}(1)")), "no {sub}");
    }
    let dir = std::env::temp_dir().join(format!("sinew-man-{}", std::process::id()));
    stdout(&["man", "--out-dir", dir.to_str().expect("utf-8 path")]);
    let run = std::fs::read_to_string(dir.join("sinew-run.1")).expect("sinew-run.1");
    assert!(run.contains("\\-\\-config"), "{run}");
    assert!(dir.join("sinew.1").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reader_that_closes_the_pipe_early_ends_the_output_quietly() {
    let mut child = Command::new(BIN)
        .args(["completions", "zsh"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sinew");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! A built sinew run with `--log-format json`, its stderr in a file, and waits for its log lines.

use super::process::{temp_file, Proc, BIN};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// A running `sinew run --log-format json` whose stderr goes to a file.
pub struct Logged {
    _sinew: Proc,
    log: std::path::PathBuf,
}

impl Logged {
    /// Starts sinew with `config` (YAML) and JSON logs at `level`.
    pub fn start(name: &str, config: &str, level: &str) -> Self {
        let config = temp_file(&format!("{name}.yaml"), config);
        let log = temp_file(&format!("{name}.log"), "");
        let child = Command::new(BIN)
            .args([
                "run",
                "--log-format",
                "json",
                "--log-level",
                level,
                "--config",
            ])
            .arg(&config)
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn sinew");
        Self {
            _sinew: Proc(child),
            log,
        }
    }

    /// Every line so far, each parsed as a JSON object (a line that is not one fails the test).
    pub fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).expect("read log");
        // A line still being written has no newline yet.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| match serde_json::from_str(l) {
                Ok(v @ Value::Object(_)) => v,
                other => panic!("log line is not a JSON object: {l}: {other:?}"),
            })
            .collect()
    }

    /// Waits (up to 30 s: a ZooKeeper restart on a loaded machine) for lines matching `want`, and
    /// returns all lines that do.
    pub async fn wait_for(&self, count: usize, want: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut found = Vec::new();
        super::eventually(Duration::from_secs(30), || {
            found = self.lines().into_iter().filter(|l| want(l)).collect();
            found.len() >= count
        })
        .await;
        assert!(
            found.len() >= count,
            "{count} lines wanted, {} found in {:#?}",
            found.len(),
            self.lines()
        );
        found
    }
}

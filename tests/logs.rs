//! Logs as an operator ships them: the built binary with `--log-format json` (one flat object per
//! line), the access log of HTTP services and the connection log of TCP services.

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use support::process::{free_port, temp_file, Proc, BIN};

/// A running `sinew run --log-format json` whose stderr goes to a file.
struct Logged {
    _sinew: Proc,
    log: std::path::PathBuf,
}

impl Logged {
    /// Starts sinew with `config` (YAML) and JSON logs at `level`.
    fn start(name: &str, config: &str, level: &str) -> Self {
        let config = temp_file(&format!("{name}.yaml"), config);
        let log = temp_file(&format!("{name}.log"), "");
        let child = Command::new(BIN)
            .args(["run", "--log-format", "json", "--log-level", level, "--config"])
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
    fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).expect("read log");
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| match serde_json::from_str(l) {
                Ok(v @ Value::Object(_)) => v,
                other => panic!("log line is not a JSON object: {l}: {other:?}"),
            })
            .collect()
    }

    /// Waits (up to 10 s) for lines matching `want`, and returns all lines that do.
    async fn wait_for(
        &self,
        count: usize,
        want: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let mut found = Vec::new();
        support::eventually(Duration::from_secs(10), || {
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

#[tokio::test]
async fn json_logs_are_flat_objects_carrying_span_fields_at_the_top_level() {
    let backends = temp_file("logs-json-backends.json", r#"["127.0.0.1:9", "127.0.0.1:10"]"#);
    let config = format!(
        "services:\n  web:\n    listen: 127.0.0.1:{}\n    discovery: {{ file: {} }}\n",
        free_port(),
        backends.display()
    );
    let sinew = Logged::start("logs-json", &config, "info");
    let read = sinew
        .wait_for(1, |l| l["message"] == "backends file read")
        .await;
    let line = &read[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["target"], "sinew::discovery::file");
    assert_eq!(line["service"], "web", "the span's field at the top level");
    assert_eq!(line["path"], backends.display().to_string());
    assert_eq!(line["backends"], 2, "the event's field, a number");
    for line in sinew.lines() {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line[key].is_string(), "{key} in {line:?}");
        }
        for (key, value) in line.as_object().expect("an object") {
            assert!(
                !value.is_object() && !value.is_array(),
                "nested {key}: {line:?}"
            );
        }
    }
}

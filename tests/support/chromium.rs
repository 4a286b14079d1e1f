//! Headless Chromium for status page tests: the page's DOM after its scripts ran.

use std::process::Command;

/// Renders `url` in headless Chromium, letting its scripts run, and returns the DOM.
pub fn render(url: &str) -> String {
    run(url, &["--dump-dom"])
}

/// Runs headless Chromium on `url` with `extra` arguments (e.g. `--screenshot=PATH`) and returns its
/// standard output.
pub fn run(url: &str, extra: &[&str]) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let profile =
        std::env::temp_dir().join(format!("sinew-chromium-{}-{nanos}", std::process::id()));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("chromium is installed (Debian package `chromium`; bash .ci/run installs it)");
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `<tr` of `dom` that shows backend `addr`, or an empty string.
pub fn backend_row(dom: &str, addr: &str) -> String {
    dom.split("<tr")
        .find(|r| r.contains(&format!("data-backend=\"{addr}\"")))
        .unwrap_or_default()
        .to_string()
}

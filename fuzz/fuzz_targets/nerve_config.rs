//! A Nerve config (JSON) through the translation into sinew's registration model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    // No directory is read while fuzzing.
    if text.contains("service_conf_dir") {
        return;
    }
    let _ = sinew::config::nerve::parse(text, Path::new("nerve.conf.json"));
});

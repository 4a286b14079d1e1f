//! A Synapse config (YAML or JSON) through the translation into sinew's model, which maps every HAProxy
//! directive line and `server_options` it carries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|input: &[u8]| {
    let Some((&format, text)) = input.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    // No directory is read while fuzzing.
    if text.contains("service_conf_dir") {
        return;
    }
    let file = if format & 1 == 0 { "synapse.yaml" } else { "synapse.json" };
    let _ = sinew::config::synapse::parse(text, Path::new(file));
});

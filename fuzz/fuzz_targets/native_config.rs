//! sinew's own config file: YAML or JSON text through parsing and validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sinew::config::{Config, Format};
use std::path::Path;

fuzz_target!(|input: &[u8]| {
    let Some((&format, text)) = input.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let (format, file) = if format & 1 == 0 {
        (Format::Yaml, "fuzz.yaml")
    } else {
        (Format::Json, "fuzz.json")
    };
    let _ = Config::parse(text, format, Path::new(file));
});

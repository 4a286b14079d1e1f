//! Every native example config under examples/ validates, as `sinew check` would.

use sinew::config::Config;

#[test]
fn example_configs_validate() {
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = entry.unwrap().path();
        let is_config = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if is_config {
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            checked += 1;
        }
    }
    assert!(
        checked >= 1,
        "examples/ holds at least the quickstart config"
    );
}

#[test]
fn the_reference_config_in_docs_validates() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md")).unwrap();
    let yaml = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap();
    let config = Config::parse(
        yaml,
        sinew::config::Format::Yaml,
        std::path::Path::new("docs/CONFIG.md"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.register.is_some() && config.state_file.is_some());
}

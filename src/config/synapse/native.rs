//! The native YAML a translated config corresponds to, as `sinew check --synapse-config` prints it.
//!
//! Settings equal to sinew's defaults are left out, so an operator migrating reads a short file; loading
//! it gives back the same [`Config`], since what is left out is exactly what loading fills in.

use crate::config::{Config, ServiceConfig};
use serde_norway::{Mapping, Value};

/// Renders `config` as native YAML, without the settings that equal their defaults.
pub fn to_yaml(config: &Config) -> Result<String, serde_norway::Error> {
    let mut root = serde_norway::to_value(config)?;
    prune(
        &mut root,
        &serde_norway::to_value(Config::default())?,
        &["services"],
    );
    if let Some(Value::Mapping(services)) = root.get_mut("services") {
        for (name, svc) in services.iter_mut() {
            let Some(listen) = name
                .as_str()
                .and_then(|n| config.services.get(n))
                .map(|s| s.listen)
            else {
                continue;
            };
            let default = serde_norway::to_value(ServiceConfig::new(listen))?;
            prune(svc, &default, &["listen"]);
        }
    }
    serde_norway::to_string(&root)
}

/// Removes from `value` every key whose value equals the one in `default` (recursing into mappings),
/// and every null (an absent optional setting), except the keys in `keep`.
fn prune(value: &mut Value, default: &Value, keep: &[&str]) {
    let Value::Mapping(map) = value else {
        return;
    };
    let none = Mapping::new();
    let def = default.as_mapping().unwrap_or(&none);
    let mut same = Vec::new();
    for (key, v) in map.iter_mut() {
        if key.as_str().is_some_and(|k| keep.contains(&k)) {
            continue;
        }
        let d = def.get(key).unwrap_or(&Value::Null);
        if v == d || v.is_null() {
            same.push(key.clone());
        } else if v.is_mapping() {
            prune(v, d, &[]);
            if v.as_mapping().is_some_and(Mapping::is_empty) {
                same.push(key.clone());
            }
        }
    }
    for key in same {
        map.shift_remove(&key);
    }
}

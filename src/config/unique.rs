//! Maps keyed by name, where a name given twice is an error instead of "the last one wins".
//!
//! YAML and JSON parsers keep the last of two equal keys, so a service pasted twice, or two services
//! given the same name by mistake, silently became one. Every name-keyed map of the native config uses
//! [`map`] (or [`option_map`]); the Synapse and Nerve readers parse into [`StrictValue`], which applies
//! the same rule to every hash of the file. The error names the key; [`lines`] finds the two lines
//! that give it.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;

/// How a duplicate key's error message starts; [`lines`] finds the key after it.
const DUPLICATE: &str = "duplicate key ";

fn duplicate<E: de::Error>(key: &str) -> E {
    E::custom(format!(
        "{DUPLICATE}{key:?}: each name may appear only once (a second entry would replace the first)"
    ))
}

/// Deserializes a map keyed by name, refusing a name given twice.
pub fn map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map keyed by name")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = m.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(duplicate(&key));
                }
                let value = m.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique(std::marker::PhantomData))
}

/// [`map`] for an optional map (`null` or absent is `None`).
pub fn option_map<'de, D, V>(d: D) -> Result<Option<BTreeMap<String, V>>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    /// A map in [`map`]'s rules, for `Option`'s own null handling.
    struct Unique<V>(BTreeMap<String, V>);
    impl<'de, V: Deserialize<'de>> Deserialize<'de> for Unique<V> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            map(d).map(Unique)
        }
    }
    Option::<Unique<V>>::deserialize(d).map(|o| o.map(|u| u.0))
}

/// A JSON value read from JSON or YAML in which no hash, at any depth, gives a key twice.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictValue(pub serde_json::Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde_json::Value;
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::String(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Value, E> {
                Ok(Value::String(v))
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                StrictValue::deserialize(d).map(|v| v.0)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Value, A::Error> {
                let mut out = Vec::new();
                while let Some(StrictValue(v)) = s.next_element()? {
                    out.push(v);
                }
                Ok(Value::Array(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some(key) = m.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(duplicate(&key));
                    }
                    let StrictValue(v) = m.next_value()?;
                    out.insert(key, v);
                }
                Ok(Value::Object(out))
            }
        }
        d.deserialize_any(V).map(StrictValue)
    }
}

/// Where a duplicate-key error's key is given, first and again: `(lines A and B)` to append to
/// `message`, or `None` when `message` is another error or the lines cannot be told. `line` is where the
/// parser stopped: in YAML the start of the map holding the key, in JSON just after the second key.
pub fn lines(text: &str, message: &str, line: usize, json: bool) -> Option<String> {
    let at = message.find(DUPLICATE)? + DUPLICATE.len();
    let quoted = &message[at..message[at..].find(": ").map_or(message.len(), |e| at + e)];
    let key: String = serde_json::from_str(quoted).ok()?;
    let names_key = |l: &str| {
        let l = l.trim_start().trim_start_matches("- ");
        let rest = [key.clone(), format!("\"{key}\""), format!("'{key}'")]
            .into_iter()
            .find_map(|k| l.strip_prefix(k.as_str()));
        rest.is_some_and(|r| r.trim_start().starts_with(':'))
    };
    // Every line that starts with the key, with its indentation.
    let found: Vec<(usize, usize)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| names_key(l))
        .map(|(i, l)| (i + 1, l.len() - l.trim_start().len()))
        .collect();
    let same_indent = |(_, a): &&(usize, usize), b: usize| *a == b;
    let (first, second) = if json {
        let s = found.iter().rposition(|(n, _)| *n <= line)?;
        let f = found[..s]
            .iter()
            .rev()
            .find(|f| same_indent(f, found[s].1))?;
        (f.0, found[s].0)
    } else {
        let f = found.iter().position(|(n, _)| *n >= line)?;
        let s = found[f + 1..].iter().find(|s| same_indent(s, found[f].1))?;
        (found[f].0, s.0)
    };
    Some(format!("(lines {first} and {second})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Named {
        #[serde(default, deserialize_with = "map")]
        services: BTreeMap<String, u32>,
        #[serde(default, deserialize_with = "option_map")]
        labels: Option<BTreeMap<String, String>>,
    }

    #[test]
    fn a_name_given_twice_is_an_error_in_yaml_and_json() {
        let e = serde_norway::from_str::<Named>("services:\n  web: 1\n  api: 2\n  web: 3\n")
            .unwrap_err();
        assert!(e.to_string().contains("duplicate key \"web\""), "{e}");
        let e = serde_json::from_str::<Named>(r#"{"services": {"web": 1, "web": 2}}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key \"web\""), "{e}");
        let e = serde_norway::from_str::<Named>("labels: { a: x, a: y }\n").unwrap_err();
        assert!(e.to_string().contains("duplicate key \"a\""), "{e}");
        let ok =
            serde_norway::from_str::<Named>("services: { web: 1, api: 2 }\nlabels:\n").unwrap();
        assert_eq!((ok.services.len(), ok.labels), (2, None));
    }

    #[test]
    fn strict_values_refuse_a_key_twice_at_any_depth() {
        let e =
            serde_json::from_str::<StrictValue>(r#"{"a": {"b": [{"c": 1, "c": 2}]}}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key \"c\""), "{e}");
        let v: StrictValue =
            serde_norway::from_str("a: [1, 2.5, x, null, true]\nb: { c: 1 }\n").unwrap();
        assert_eq!(
            v.0,
            serde_json::json!({"a": [1, 2.5, "x", null, true], "b": {"c": 1}})
        );
    }

    #[test]
    fn every_format_refuses_a_service_given_twice_naming_both_lines() {
        use crate::config::{nerve, synapse, Config, Format};
        use std::path::Path;
        let svc = |port: u16| format!("{{ listen: 127.0.0.1:{port}, backends: [127.0.0.1:9] }}");
        let yaml = format!(
            "services:\n  web: {}\n  api: {}\n  web: {}\n",
            svc(1),
            svc(2),
            svc(3)
        );
        let e = Config::parse(&yaml, Format::Yaml, Path::new("c.yaml")).unwrap_err();
        assert!(
            e.to_string().contains("duplicate key \"web\"")
                && e.to_string().contains("(lines 2 and 4)"),
            "{e}"
        );
        let json = "{\"services\": {\n\"web\": {\"listen\": \"127.0.0.1:1\", \"backends\": [\"127.0.0.1:9\"]},\n\"web\": {\"listen\": \"127.0.0.1:2\", \"backends\": [\"127.0.0.1:9\"]}}}";
        let e = Config::parse(json, Format::Json, Path::new("c.json")).unwrap_err();
        assert!(e.to_string().contains("(lines 2 and 3)"), "{e}");
        let register = "register:\n  services:\n    db: { host: h, port: 1, zk_hosts: [z:1], zk_path: /a, checks: [{ type: tcp }], labels: { a: x, a: y } }\n";
        let e = Config::parse(register, Format::Yaml, Path::new("c.yaml")).unwrap_err();
        assert!(e.to_string().contains("duplicate key \"a\""), "{e}");

        let synapse_yaml = "services:\n  web:\n    default_servers: [{ host: 127.0.0.1, port: 9 }]\n    haproxy: { port: 4001 }\n  web:\n    default_servers: [{ host: 127.0.0.1, port: 9 }]\n    haproxy: { port: 4002 }\n";
        let e = synapse::parse(synapse_yaml, Path::new("s.yaml")).unwrap_err();
        assert!(e.to_string().contains("(lines 2 and 5)"), "{e}");
        let synapse_json = "{\"services\": {\n  \"web\": {\"haproxy\": {\"port\": 4001}},\n  \"web\": {\"haproxy\": {\"port\": 4002}}\n}}";
        let e = synapse::parse(synapse_json, Path::new("s.json")).unwrap_err();
        assert!(e.to_string().contains("(lines 2 and 3)"), "{e}");
        let nerve_json = "{\"services\": {\n  \"db\": {},\n  \"db\": {}\n}}";
        let e = nerve::parse(nerve_json, Path::new("n.json")).unwrap_err();
        assert!(
            e.to_string().contains("duplicate key \"db\"")
                && e.to_string().contains("(lines 2 and 3)"),
            "{e}"
        );
    }

    #[test]
    fn both_lines_are_named() {
        let text = "services:\n  web:\n    x: 1\n  api: {}\n  web:\n    x: 2\n";
        let e = serde_norway::from_str::<StrictValue>(text).unwrap_err();
        let line = e.location().map_or(0, |l| l.line());
        assert_eq!(
            lines(text, &e.to_string(), line, false).as_deref(),
            Some("(lines 2 and 5)")
        );
        let text = "{\n  \"services\": {\n    \"web\": 1,\n    \"web\": 2\n  }\n}\n";
        let e = serde_json::from_str::<StrictValue>(text).unwrap_err();
        assert_eq!(
            lines(text, &e.to_string(), e.line(), true).as_deref(),
            Some("(lines 3 and 4)")
        );
        assert_eq!(lines(text, "invalid type", 1, true), None);
    }
}

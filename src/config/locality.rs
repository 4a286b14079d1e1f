//! Zone-aware routing settings: this host's own zone and region (top-level `locality`, or read from
//! the labels of its own registrations), and each service's `locality_routing`.
//!
//! Synapse has no such keys; a translated Synapse config routes without locality until a native
//! layer adds them.

use super::register::Register;
use super::{Config, FieldError};
use serde::{Deserialize, Serialize};

/// The labels a backend's zone is read from when a service names none, in order of preference.
pub const DEFAULT_ZONE_LABELS: [&str; 2] = ["az", "zone"];
/// The label a backend's region is read from when a service names none.
pub const DEFAULT_REGION_LABEL: &str = "region";
/// Envoy's default overprovisioning factor.
pub const DEFAULT_OVERPROVISIONING: f64 = 1.4;
/// The largest overprovisioning factor accepted.
pub const MAX_OVERPROVISIONING: f64 = 100.0;

/// Where this host runs (top-level `locality`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostLocality {
    /// The zone (`us-east-1a`): backends labelled with it are local.
    pub zone: String,
    /// The region (`us-east-1`): backends labelled with it, in other zones, come next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// A service's zone-aware routing (`services.NAME.locality_routing`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LocalityRouting {
    /// On unless `false` (the section's presence turns it on).
    pub enabled: bool,
    /// The local zone takes `min(100 %, usable fraction x overprovisioning)` of new picks.
    pub overprovisioning: f64,
    /// A local zone with fewer usable backends than this sends everything elsewhere.
    pub min_backends: u32,
    /// The label naming a backend's zone; default: `az`, else `zone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_label: Option<String>,
    /// The label naming a backend's region.
    pub region_label: String,
}

impl Default for LocalityRouting {
    fn default() -> Self {
        Self {
            enabled: true,
            overprovisioning: DEFAULT_OVERPROVISIONING,
            min_backends: 1,
            zone_label: None,
            region_label: DEFAULT_REGION_LABEL.to_string(),
        }
    }
}

impl LocalityRouting {
    /// The labels a backend's zone is read from, in order of preference.
    pub fn zone_labels(&self) -> Vec<String> {
        match &self.zone_label {
            Some(l) => vec![l.clone()],
            None => DEFAULT_ZONE_LABELS.iter().map(|l| l.to_string()).collect(),
        }
    }

    /// Checks ranges; fields relative to the section.
    pub fn validate(&self) -> Result<(), FieldError> {
        let o = self.overprovisioning;
        if !o.is_finite() || !(1.0..=MAX_OVERPROVISIONING).contains(&o) {
            return Err(FieldError::new(
                "overprovisioning",
                format!("must be a number from 1.0 to {MAX_OVERPROVISIONING} (Envoy's default is 1.4), got {o}"),
            ));
        }
        if self.min_backends == 0 {
            return Err(FieldError::new("min_backends", "must be at least 1"));
        }
        if self.zone_label.as_deref().is_some_and(str::is_empty) {
            return Err(FieldError::new("zone_label", "must not be empty"));
        }
        if self.region_label.is_empty() {
            return Err(FieldError::new("region_label", "must not be empty"));
        }
        Ok(())
    }
}

impl Config {
    /// This host's locality: `locality` when set, else the `az` (then `zone`) and `region` labels of
    /// the `register` services that carry them. `None` when neither says; an error when two
    /// registrations disagree.
    pub fn host_locality(&self) -> Result<Option<HostLocality>, FieldError> {
        match (&self.locality, &self.register) {
            (Some(l), _) => Ok(Some(l.clone())),
            (None, Some(r)) => from_registrations(r),
            (None, None) => Ok(None),
        }
    }

    /// Checks `locality` and that every service routing by locality knows this host's zone.
    pub(super) fn validate_locality(&self) -> Result<(), FieldError> {
        if let Some(l) = &self.locality {
            if l.zone.is_empty() {
                return Err(FieldError::new("locality.zone", "must not be empty"));
            }
            if l.region.as_deref().is_some_and(str::is_empty) {
                return Err(FieldError::new("locality.region", "must not be empty"));
            }
        }
        let routed = self
            .services
            .iter()
            .find(|(_, s)| s.locality_routing.as_ref().is_some_and(|r| r.enabled));
        let Some((name, _)) = routed else {
            return Ok(());
        };
        if self.host_locality()?.is_none() {
            return Err(FieldError::new(
                format!("services.{name}.locality_routing"),
                "this host's zone is unknown: set the top-level `locality: {zone: ..., region: ...}` or give a `register` service an `az` or `zone` label",
            ));
        }
        Ok(())
    }
}

/// The locality the registrations' labels agree on.
fn from_registrations(register: &Register) -> Result<Option<HostLocality>, FieldError> {
    let mut zone: Option<(&str, &str)> = None;
    let mut region: Option<(&str, &str)> = None;
    for (name, reg) in &register.services {
        let Some(labels) = &reg.labels else { continue };
        let found_zone = DEFAULT_ZONE_LABELS.iter().find_map(|l| labels.get(*l));
        for (found, kept, what) in [
            (found_zone, &mut zone, "zone"),
            (labels.get(DEFAULT_REGION_LABEL), &mut region, "region"),
        ] {
            let Some(value) = found else { continue };
            match kept {
                Some((other, first)) if *first != value.as_str() => {
                    return Err(FieldError::new(
                        format!("register.services.{name}.labels"),
                        format!("{what} {value} differs from {first} of {other}: set the top-level `locality` to say where this host is"),
                    ));
                }
                Some(_) => {}
                None => *kept = Some((name.as_str(), value.as_str())),
            }
        }
    }
    Ok(zone.map(|(_, z)| HostLocality {
        zone: z.to_string(),
        region: region.map(|(_, r)| r.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::load::tests::parse;

    const SVC: &str = "services:\n  web:\n    listen: 127.0.0.1:1\n    backends: [127.0.0.1:1]\n";

    fn register(labels: &[&str]) -> String {
        let mut out = String::from("register:\n  services:\n");
        for (i, l) in labels.iter().enumerate() {
            out.push_str(&format!(
                "    s{i}:\n      host: 127.0.0.1\n      port: {}\n      zk_hosts: [127.0.0.1:2181]\n      zk_path: /s{i}\n      labels: {l}\n      checks: [{{type: tcp}}]\n",
                1000 + i
            ));
        }
        out
    }

    #[test]
    fn routing_defaults_and_the_section_turns_it_on() {
        let text = format!("{SVC}    locality_routing: {{}}\nlocality: {{zone: a}}\n");
        let c = parse(&text).unwrap();
        let r = c.services["web"].locality_routing.clone().unwrap();
        assert!(r.enabled);
        assert_eq!(r.overprovisioning, 1.4);
        assert_eq!(r.min_backends, 1);
        assert_eq!(r.zone_labels(), ["az", "zone"]);
        assert_eq!(r.region_label, "region");
        assert!(parse(SVC).unwrap().services["web"]
            .locality_routing
            .is_none());
    }

    #[test]
    fn bad_values_name_their_field() {
        for (setting, field) in [
            (
                "{overprovisioning: 0.5}",
                "locality_routing.overprovisioning",
            ),
            (
                "{overprovisioning: .nan}",
                "locality_routing.overprovisioning",
            ),
            (
                "{overprovisioning: 1000}",
                "locality_routing.overprovisioning",
            ),
            ("{min_backends: 0}", "locality_routing.min_backends"),
            ("{zone_label: ''}", "locality_routing.zone_label"),
            ("{region_label: ''}", "locality_routing.region_label"),
        ] {
            let text = format!("{SVC}    locality_routing: {setting}\nlocality: {{zone: a}}\n");
            let e = parse(&text).unwrap_err().to_string();
            assert!(
                e.contains(&format!("services.web.{field}: ")),
                "{setting}: {e}"
            );
        }
        let e = parse(&format!("{SVC}    locality_routing: {{weight: 1}}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `weight`"), "{e}");
        let e = parse(&format!("{SVC}locality: {{zone: ''}}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("locality.zone: must not be empty"), "{e}");
    }

    #[test]
    fn routing_without_a_known_zone_is_an_error() {
        let e = parse(&format!("{SVC}    locality_routing: {{}}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("services.web.locality_routing: this host's zone is unknown"),
            "{e}"
        );
        let off = format!("{SVC}    locality_routing: {{enabled: false}}\n");
        assert!(parse(&off).is_ok(), "a disabled section needs no zone");
    }

    #[test]
    fn the_host_locality_comes_from_registration_labels_unless_set() {
        let labelled = format!(
            "{SVC}{}",
            register(&[
                "{}",
                "{az: us-east-1a, region: us-east-1}",
                "{zone: us-east-1a}"
            ])
        );
        let l = parse(&labelled).unwrap().host_locality().unwrap().unwrap();
        assert_eq!(
            (l.zone.as_str(), l.region.as_deref()),
            ("us-east-1a", Some("us-east-1"))
        );
        let set = format!("{labelled}locality: {{zone: b}}\n");
        let l = parse(&set).unwrap().host_locality().unwrap().unwrap();
        assert_eq!((l.zone.as_str(), l.region), ("b", None));
        let none = format!("{SVC}{}", register(&["{region: r}"]));
        assert_eq!(parse(&none).unwrap().host_locality().unwrap(), None);
    }

    #[test]
    fn registrations_that_disagree_on_the_zone_are_an_error_when_routing_needs_it() {
        let text = format!("{SVC}{}", register(&["{az: a}", "{az: b}"]));
        assert!(parse(&text).is_ok(), "no service routes by locality");
        let e = parse(&text.replace(
            "backends: [127.0.0.1:1]\n",
            "backends: [127.0.0.1:1]\n    locality_routing: {}\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("register.services.s1.labels: zone b differs from a of s0"),
            "{e}"
        );
    }
}

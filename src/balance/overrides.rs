//! Operator overrides of single backends, HAProxy's runtime `set server B/S state drain|maint|ready` and
//! `set server B/S weight N`: drain (no new traffic, open connections finish), disable (out of rotation,
//! HAProxy's maintenance) and a weight that replaces the discovered one, until `enable` clears them.
//!
//! Overrides are keyed by `host:port` and live in a per-service store that outlives balancers: a
//! reload builds a new balancer over the same store, and a backend that leaves the set and comes back
//! finds its override still there. They are kept in memory only, so a restart or a binary upgrade
//! starts without any. [`super::eligible`] reads them when it computes weights; the pick path never
//! sees them.

use super::Balancer;
use crate::metrics::Registry;
use arc_swap::ArcSwap;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// The highest weight an override may set (HAProxy's limit for `set server ... weight`).
pub const MAX_WEIGHT: u32 = 256;

/// Why an override cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// The service has no backend by that address or name, and no override for it.
    #[error("service {service:?} has no backend {backend:?} (backends: {known}); give host:port as /api/services shows it")]
    NoSuchBackend {
        /// The service.
        service: String,
        /// The address or name asked for.
        backend: String,
        /// The addresses it has, comma-separated.
        known: String,
    },
    /// A name that more than one backend carries.
    #[error("service {service:?}: the name {name:?} is carried by {addresses}; give host:port")]
    Ambiguous {
        /// The service.
        service: String,
        /// The name asked for.
        name: String,
        /// The addresses carrying it, comma-separated.
        addresses: String,
    },
    /// A weight that is not a whole number from 0 to [`MAX_WEIGHT`].
    #[error("weight {0:?}: expected a whole number from 0 to 256")]
    Weight(String),
}

/// An operator's administrative state of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// No new connections or requests; open ones finish (HAProxy's `drain`).
    Drain,
    /// Out of rotation at once, even in panic mode (HAProxy's `maint`); open connections still finish.
    Disable,
}

impl AdminState {
    /// The name shown in the admin API.
    pub fn name(self) -> &'static str {
        match self {
            AdminState::Drain => "drain",
            AdminState::Disable => "disable",
        }
    }
}

/// What an operator set on one backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// Drained or disabled, when set.
    pub admin_state: Option<AdminState>,
    /// The weight that replaces the discovered one, when set.
    #[serde(rename = "weight_override")]
    pub weight: Option<u32>,
}

impl Override {
    /// True when the backend takes no new traffic because of this override's state.
    pub fn blocks(&self) -> bool {
        self.admin_state.is_some()
    }

    /// True when nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == Override::default()
    }
}

/// An operator's action on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop new traffic, let open connections finish.
    Drain,
    /// Take out of rotation at once.
    Disable,
    /// Clear every override.
    Enable,
    /// Replace the discovered weight.
    Weight(u32),
}

/// Every action's name, the `action` label of the actions counter.
const ACTIONS: [&str; 4] = ["drain", "disable", "enable", "weight"];

impl Action {
    /// The `action` label and the name in logs.
    pub fn name(self) -> &'static str {
        ACTIONS[self.index()]
    }

    /// Its place in [`ACTIONS`].
    fn index(self) -> usize {
        match self {
            Action::Drain => 0,
            Action::Disable => 1,
            Action::Enable => 2,
            Action::Weight(_) => 3,
        }
    }

    /// A weight action from its text (surrounding whitespace ignored), 0 to [`MAX_WEIGHT`].
    pub fn weight(text: &str) -> Result<Self, OverrideError> {
        match text.trim().parse::<u32>() {
            Ok(n) if n <= MAX_WEIGHT => Ok(Action::Weight(n)),
            _ => Err(OverrideError::Weight(text.trim().to_string())),
        }
    }

    /// The override after this action on `current`: a state replaces the state and keeps the weight,
    /// a weight replaces the weight and keeps the state, `enable` clears both.
    pub fn apply(self, current: Override) -> Override {
        match self {
            Action::Drain => Override {
                admin_state: Some(AdminState::Drain),
                ..current
            },
            Action::Disable => Override {
                admin_state: Some(AdminState::Disable),
                ..current
            },
            Action::Enable => Override::default(),
            Action::Weight(n) => Override {
                weight: Some(n),
                ..current
            },
        }
    }
}

/// The overrides of one service's backends, by `host:port`.
pub type OverrideMap = HashMap<String, Override>;

/// The metric families of overrides, and the per-service stores (kept across reloads).
pub struct Overrides {
    actions: IntCounterVec,
    in_force: IntGaugeVec,
    services: Mutex<HashMap<String, Arc<ServiceOverrides>>>,
}

impl Overrides {
    /// Creates the override families in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            actions: registry.counter(
                "sinew_backend_admin_actions_total",
                "Operator actions on backends through the admin API, by action (drain, disable, enable, weight).",
                &["service", "action"],
            )?,
            in_force: registry.gauge(
                "sinew_backend_admin_overrides",
                "Backends with an operator override in force (drained, disabled or reweighted), including ones not in the set now.",
                &["service"],
            )?,
            services: Mutex::default(),
        })
    }

    /// The store of `service`'s overrides: the same one every time, so overrides outlive reloads.
    pub fn service(&self, service: &str) -> Arc<ServiceOverrides> {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        let store = services.entry(service.to_string()).or_insert_with(|| {
            Arc::new(ServiceOverrides {
                map: ArcSwap::default(),
                write: Mutex::new(()),
                actions: ACTIONS.map(|a| self.actions.with_label_values(&[service, a])),
                in_force: self.in_force.with_label_values(&[service]),
            })
        });
        Arc::clone(store)
    }

    /// Drops the overrides of a service a reload removed (its metric series are gone with it); a
    /// service of that name added later starts without any.
    pub fn forget(&self, service: &str) {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        services.remove(service);
    }
}

/// One service's overrides: read whole (a snapshot) whenever weights are computed.
pub struct ServiceOverrides {
    map: ArcSwap<OverrideMap>,
    /// Serialises read-modify-write of `map`.
    write: Mutex<()>,
    actions: [IntCounter; 4],
    in_force: IntGauge,
}

impl ServiceOverrides {
    /// A store whose metrics are registered nowhere (a balancer built without the agent's store).
    pub fn detached() -> Self {
        let counter = || IntCounter::new("detached", "-").unwrap_or_else(|_| unreachable!());
        Self {
            map: ArcSwap::default(),
            write: Mutex::new(()),
            actions: [counter(), counter(), counter(), counter()],
            in_force: IntGauge::new("detached", "-").unwrap_or_else(|_| unreachable!()),
        }
    }

    /// The overrides in force now.
    pub fn snapshot(&self) -> Arc<OverrideMap> {
        self.map.load_full()
    }

    /// Applies `action` to `key`'s override and counts it: the override before and the one now.
    fn act(&self, key: &str, action: Action) -> (Override, Override) {
        let _write = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = OverrideMap::clone(&self.map.load());
        let before = map.get(key).copied().unwrap_or_default();
        let now = action.apply(before);
        if now.is_empty() {
            map.remove(key);
        } else {
            map.insert(key.to_string(), now);
        }
        self.in_force.set(map.len() as i64);
        self.map.store(Arc::new(map));
        self.actions[action.index()].inc();
        (before, now)
    }
}

/// What an action did, for the admin API's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The backend's `host:port`.
    pub address: String,
    /// The override now in force (empty after `enable`).
    #[serde(flatten)]
    pub now: Override,
    /// True when the backend is in the set now; an override on one that is not is kept for its return.
    pub in_set: bool,
    /// Connections (TCP) or requests (HTTP) open to it now, which finish on their own.
    pub active: i64,
}

/// One override in force, for `GET /api/overrides`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideView {
    /// The backend's `host:port`.
    pub address: String,
    /// What is overridden.
    #[serde(flatten)]
    pub now: Override,
    /// True when the backend is in the set now.
    pub in_set: bool,
}

impl Balancer {
    /// Applies an operator's `action` to the backend `target` (its `host:port`, or its discovered name)
    /// and rebuilds the selection state, so the next pick already obeys it.
    pub fn control(&self, target: &str, action: Action) -> Result<Outcome, OverrideError> {
        let key = self.resolve(target)?;
        let (before, now) = self.overrides.act(&key, action);
        if before.blocks() && !now.blocks() {
            // Back in rotation: slow start ramps it up again, as HAProxy does after maintenance.
            if let Some(e) = self.lock().entries.get(&key) {
                e.health.restart_ramp(super::health::now_ms());
            }
        }
        self.refresh();
        let set = self.current();
        let in_set = set.entries().iter().any(|e| e.key == key);
        let active = self
            .lock()
            .entries
            .get(&key)
            .map_or(0, |e| e.stats.load.get());
        tracing::info!(
            service = %self.service,
            backend = %key,
            action = action.name(),
            admin_state = now.admin_state.map_or("-", AdminState::name),
            weight_override = ?now.weight,
            in_set,
            active,
            "backend override changed through the admin API"
        );
        Ok(Outcome {
            address: key,
            now,
            in_set,
            active,
        })
    }

    /// The overrides in force, by address.
    pub fn overrides(&self) -> Vec<OverrideView> {
        let set = self.current();
        let mut list: Vec<OverrideView> = self
            .overrides
            .snapshot()
            .iter()
            .map(|(address, now)| OverrideView {
                address: address.clone(),
                now: *now,
                in_set: set.entries().iter().any(|e| &e.key == address),
            })
            .collect();
        list.sort_by(|a, b| a.address.cmp(&b.address));
        list
    }

    /// The `host:port` that `target` names: a backend in the set or still draining, by address or by
    /// name, or an address with an override in force.
    fn resolve(&self, target: &str) -> Result<String, OverrideError> {
        let reg = self.lock();
        let overrides = self.overrides.snapshot();
        if reg.entries.contains_key(target) || overrides.contains_key(target) {
            return Ok(target.to_string());
        }
        let named: BTreeSet<&str> = reg
            .entries
            .values()
            .filter(|e| e.backend.name.as_deref() == Some(target))
            .map(|e| e.key.as_str())
            .collect();
        match named.len() {
            1 => Ok(named.into_iter().collect::<String>()),
            0 => {
                let known: BTreeSet<&str> = reg.entries.keys().map(String::as_str).collect();
                Err(OverrideError::NoSuchBackend {
                    service: self.service.clone(),
                    backend: target.to_string(),
                    known: if known.is_empty() {
                        "none".into()
                    } else {
                        known.into_iter().collect::<Vec<_>>().join(", ")
                    },
                })
            }
            _ => Err(OverrideError::Ambiguous {
                service: self.service.clone(),
                name: target.to_string(),
                addresses: named.into_iter().collect::<Vec<_>>().join(", "),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{Backend, BalanceMetrics, Origin, Pick, Policy};
    use crate::config::Algorithm;
    use std::time::Duration;

    fn backend(port: u16, weight: u32) -> Backend {
        Backend::new("127.0.0.1", port, weight, Origin::Static)
    }

    /// A balancer over the agent-wide store `overrides` (as every generation of a service gets).
    fn balancer(registry: &Registry, overrides: &Overrides, algorithm: Algorithm) -> Balancer {
        let metrics = Arc::new(BalanceMetrics::register(registry).unwrap());
        Balancer::new("svc", algorithm, metrics).with_overrides(overrides.service("svc"))
    }

    fn setup(algorithm: Algorithm) -> (Registry, Overrides, Balancer) {
        let registry = Registry::new();
        let overrides = Overrides::register(&registry).unwrap();
        let b = balancer(&registry, &overrides, algorithm);
        (registry, overrides, b)
    }

    fn picks(b: &Balancer, n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| b.pick(&[]).unwrap().entry.backend.port)
            .collect()
    }

    fn count(ports: &[u16], port: u16) -> usize {
        ports.iter().filter(|p| **p == port).count()
    }

    fn state(b: &Balancer, port: u16) -> String {
        let address = format!("127.0.0.1:{port}");
        let view = b.view();
        let v = view.backends.iter().find(|v| v.address == address).unwrap();
        v.state.to_string()
    }

    #[test]
    fn actions_combine_as_haproxy_states_and_weights_do() {
        let drained = Override {
            admin_state: Some(AdminState::Drain),
            weight: None,
        };
        let table = [
            (Override::default(), Action::Drain, drained),
            (
                drained,
                Action::Weight(5),
                Override {
                    weight: Some(5),
                    ..drained
                },
            ),
            (
                Override {
                    weight: Some(5),
                    ..drained
                },
                Action::Disable,
                Override {
                    admin_state: Some(AdminState::Disable),
                    weight: Some(5),
                },
            ),
            (
                Override {
                    admin_state: Some(AdminState::Disable),
                    weight: Some(5),
                },
                Action::Enable,
                Override::default(),
            ),
        ];
        for (before, action, after) in table {
            assert_eq!(action.apply(before), after, "{before:?} {action:?}");
        }
    }

    #[test]
    fn weights_from_0_to_256_only() {
        assert_eq!(Action::weight(" 0\n"), Ok(Action::Weight(0)));
        assert_eq!(Action::weight("256"), Ok(Action::Weight(256)));
        for bad in ["257", "-1", "1.5", "", "ten"] {
            assert!(
                matches!(Action::weight(bad), Err(OverrideError::Weight(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn drain_stops_new_picks_and_open_ones_finish() {
        let (registry, _o, b) = setup(Algorithm::RoundRobin);
        b.update(vec![backend(1, 1), backend(2, 1)]);
        let open: Vec<Pick> = (0..4).map(|_| b.pick(&[]).unwrap()).collect();
        let outcome = b.control("127.0.0.1:1", Action::Drain).unwrap();
        assert_eq!((outcome.in_set, outcome.active), (true, 2));
        assert!(picks(&b, 50).iter().all(|p| *p == 2));
        assert_eq!(state(&b, 1), "drain");
        assert_eq!(b.view().backends[0].admin_state, Some(AdminState::Drain));
        assert_eq!(b.view().backends[0].active, 2, "open connections stay open");
        let text = registry.render();
        assert!(text.contains(r#"sinew_backend_up{backend="127.0.0.1:1",name="",service="svc"} 0"#));
        assert!(text.contains(r#"sinew_backend_up{backend="127.0.0.1:2",name="",service="svc"} 1"#));
        drop(open);
        assert_eq!(b.view().backends[0].active, 0);
    }

    #[test]
    fn disable_holds_even_in_panic_and_drain_too() {
        let (_r, _o, b) = setup(Algorithm::LeastConn);
        let b = b.with_policy(Policy {
            panic_threshold: 100,
            ..Policy::default()
        });
        b.update(vec![backend(1, 1), backend(2, 1)]);
        b.control("127.0.0.1:1", Action::Disable).unwrap();
        assert_eq!(state(&b, 1), "maintenance");
        assert!(
            !b.current().weights().panic,
            "a disabled backend is no candidate"
        );
        assert!(picks(&b, 20).iter().all(|p| *p == 2));
        b.control("127.0.0.1:2", Action::Drain).unwrap();
        assert!(b.pick(&[]).is_none(), "nothing left in rotation");
    }

    #[test]
    fn a_weight_override_replaces_the_discovered_weight_until_enable() {
        let (_r, _o, b) = setup(Algorithm::RoundRobin);
        b.update(vec![backend(1, 1), backend(2, 1)]);
        b.control("127.0.0.1:1", Action::Weight(3)).unwrap();
        let ports = picks(&b, 400);
        assert_eq!((count(&ports, 1), count(&ports, 2)), (300, 100));
        let view = b.view();
        assert_eq!(
            (view.backends[0].weight, view.backends[0].weight_override),
            (Some(1), Some(3))
        );
        b.control("127.0.0.1:1", Action::Weight(0)).unwrap();
        assert_eq!(state(&b, 1), "disabled");
        assert!(picks(&b, 20).iter().all(|p| *p == 2));
        b.control("127.0.0.1:1", Action::Enable).unwrap();
        let ports = picks(&b, 200);
        assert_eq!((count(&ports, 1), count(&ports, 2)), (100, 100));
        assert_eq!(b.view().backends[0].weight_override, None);
    }

    #[test]
    fn an_override_holds_across_leaving_returning_and_a_new_balancer() {
        let (registry, overrides, b) = setup(Algorithm::RoundRobin);
        b.update(vec![backend(1, 1), backend(2, 1)]);
        b.control("127.0.0.1:1", Action::Drain).unwrap();
        b.update(vec![backend(2, 1)]);
        let list = b.overrides();
        assert_eq!((list.len(), list[0].in_set), (1, false));
        // Still addressable while away, and the answer says it is kept.
        let away = b.control("127.0.0.1:1", Action::Weight(2)).unwrap();
        assert!(!away.in_set);
        b.update(vec![backend(1, 1), backend(2, 1)]);
        assert!(
            picks(&b, 20).iter().all(|p| *p == 2),
            "returned, still drained"
        );
        // A reload builds a new balancer over the same store.
        let reloaded = Balancer::new(
            "svc",
            Algorithm::RoundRobin,
            Arc::new(BalanceMetrics::register(&Registry::new()).unwrap()),
        )
        .with_overrides(overrides.service("svc"));
        reloaded.update(vec![backend(1, 1), backend(2, 1)]);
        assert!(picks(&reloaded, 20).iter().all(|p| *p == 2));
        assert_eq!(state(&reloaded, 1), "drain");
        let text = registry.render();
        assert!(text.contains(r#"sinew_backend_admin_overrides{service="svc"} 1"#));
        assert!(
            text.contains(r#"sinew_backend_admin_actions_total{action="drain",service="svc"} 1"#)
        );
        assert!(
            text.contains(r#"sinew_backend_admin_actions_total{action="enable",service="svc"} 0"#)
        );
        reloaded.control("127.0.0.1:1", Action::Enable).unwrap();
        assert!(registry
            .render()
            .contains(r#"sinew_backend_admin_overrides{service="svc"} 0"#));
        assert!(b.overrides().is_empty());
    }

    #[test]
    fn a_forgotten_service_starts_over_with_counted_series() {
        let (registry, overrides, b) = setup(Algorithm::RoundRobin);
        b.update(vec![backend(1, 1)]);
        b.control("127.0.0.1:1", Action::Drain).unwrap();
        // A reload removes the service: its series go, and so do its overrides.
        registry.forget_service("svc");
        overrides.forget("svc");
        let again = balancer(&Registry::new(), &overrides, Algorithm::RoundRobin);
        again.update(vec![backend(1, 1)]);
        assert_eq!(again.pick(&[]).unwrap().entry.backend.port, 1);
        again.control("127.0.0.1:1", Action::Weight(2)).unwrap();
        let text = registry.render();
        assert!(
            text.contains(r#"sinew_backend_admin_actions_total{action="weight",service="svc"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sinew_backend_admin_overrides{service="svc"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn unknown_addresses_are_refused_and_names_resolve() {
        let (_r, _o, b) = setup(Algorithm::RoundRobin);
        let named = |port, name: &str| Backend {
            name: Some(name.into()),
            ..backend(port, 1)
        };
        b.update(vec![named(1, "i-1"), named(2, "twin"), named(3, "twin")]);
        let err = b.control("127.0.0.1:9", Action::Drain).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"service "svc" has no backend "127.0.0.1:9" (backends: 127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3); give host:port as /api/services shows it"#
        );
        assert!(matches!(
            b.control("twin", Action::Drain),
            Err(OverrideError::Ambiguous { .. })
        ));
        assert_eq!(
            b.control("i-1", Action::Drain).unwrap().address,
            "127.0.0.1:1"
        );
        assert!(b.overrides().iter().all(|o| o.address == "127.0.0.1:1"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_in_the_queue_does_not_get_a_backend_drained_meanwhile() {
        let (_r, _o, b) = setup(Algorithm::RoundRobin);
        let b = Arc::new(
            b.with_policy(Policy {
                max_connections: Some(1),
                ..Policy::default()
            })
            .with_queue(10, Duration::from_secs(30)),
        );
        b.update(vec![backend(1, 1), backend(2, 1)]);
        let set = b.current();
        let held: Vec<Pick> = (0..2).map(|_| b.pick(&[]).unwrap()).collect();
        let waiter = {
            let (b, set) = (Arc::clone(&b), Arc::clone(&set));
            tokio::spawn(async move {
                let pick = b.pick_queued(&set, &[], None).await.ok()?;
                Some(pick.entry.backend.port)
            })
        };
        tokio::task::yield_now().await;
        b.control("127.0.0.1:1", Action::Drain).unwrap();
        let (on_1, on_2): (Vec<Pick>, Vec<Pick>) =
            held.into_iter().partition(|p| p.entry.backend.port == 1);
        // The drained backend's connection ends: its slot is free, but not for new work.
        drop(on_1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "still waiting for backend 2");
        drop(on_2);
        assert_eq!(waiter.await.unwrap(), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn lifting_a_drain_ramps_the_backend_up_again_under_slow_start() {
        let (_r, _o, b) = setup(Algorithm::RoundRobin);
        let b = b.with_policy(Policy {
            slow_start: Duration::from_secs(10),
            ..Policy::default()
        });
        b.update(vec![backend(1, 1), backend(2, 1)]);
        tokio::time::advance(Duration::from_secs(20)).await;
        b.refresh();
        b.control("127.0.0.1:2", Action::Drain).unwrap();
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(b.refresh(), None, "a drained backend sets no deadline");
        b.control("127.0.0.1:2", Action::Enable).unwrap();
        assert_eq!(
            b.current().weights().weights,
            [100, 10],
            "ramp starts at its floor"
        );
        assert!(b.refresh().is_some());
        tokio::time::advance(Duration::from_secs(5)).await;
        b.refresh();
        assert_eq!(b.current().weights().weights, [100, 50]);
        tokio::time::advance(Duration::from_secs(5)).await;
        b.refresh();
        assert_eq!(b.current().weights().weights, [100, 100]);
    }
}

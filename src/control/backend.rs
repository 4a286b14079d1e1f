//! `sinew backend`: drain, disable, enable or reweight one backend of a running sinew through its admin
//! API, and list the overrides in force (HAProxy's `set server` on the runtime API).

use super::{call, AdminArgs, ControlError};
use crate::admin::OverridesJson;
use crate::balance::BackendView;
use hyper::Method;
use std::fmt::Write;

/// `sinew backend`'s arguments.
#[derive(clap::Args)]
pub struct BackendArgs {
    /// Where the admin server is and its token.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: BackendCommand,
}

/// One `sinew backend` action.
#[derive(clap::Subcommand)]
pub enum BackendCommand {
    /// No new connections or requests to ADDR; open ones finish (HAProxy's `state drain`).
    Drain {
        /// The service.
        service: String,
        /// The backend's host:port as `sinew status SERVICE` shows it, or its discovered name.
        addr: String,
    },
    /// Take ADDR out of rotation at once, even in panic mode (HAProxy's `state maint`).
    Disable {
        /// The service.
        service: String,
        /// The backend's host:port, or its discovered name.
        addr: String,
    },
    /// Clear every override of ADDR: back to its discovered state and weight.
    Enable {
        /// The service.
        service: String,
        /// The backend's host:port, or its discovered name.
        addr: String,
    },
    /// Give ADDR weight N (0 to 256) in place of its discovered weight.
    Weight {
        /// The service.
        service: String,
        /// The backend's host:port, or its discovered name.
        addr: String,
        /// The weight, 0 (no new traffic) to 256.
        n: String,
    },
    /// List the overrides in force.
    List,
}

/// Runs `sinew backend`: the text to print.
pub async fn run(args: BackendArgs) -> Result<String, ControlError> {
    let target = |service: &str, backend: &str, verb: &str| {
        format!(
            "/api/services/{}/backends/{}/{verb}",
            encode(service),
            encode(backend)
        )
    };
    let (method, path) = match &args.command {
        BackendCommand::Drain { service, addr } => (Method::POST, target(service, addr, "drain")),
        BackendCommand::Disable { service, addr } => {
            (Method::POST, target(service, addr, "disable"))
        }
        BackendCommand::Enable { service, addr } => (Method::POST, target(service, addr, "enable")),
        BackendCommand::Weight { service, addr, n } => (
            Method::PUT,
            target(service, addr, &format!("weight/{}", encode(n))),
        ),
        BackendCommand::List => {
            let body = call(&args.admin, Method::GET, "/api/overrides", None).await?;
            let list: OverridesJson =
                serde_json::from_str(&body).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
            return Ok(table(&list));
        }
    };
    call(&args.admin, method, &path, None).await
}

/// The overrides in force, one line each.
pub fn table(list: &OverridesJson) -> String {
    if list.services.is_empty() {
        return "no overrides in force\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20}  {:<40}  {:<8}  {:<6}  IN SET",
        "SERVICE", "BACKEND", "STATE", "WEIGHT"
    );
    for (service, overrides) in &list.services {
        for o in overrides {
            let _ = writeln!(
                out,
                "{service:<20}  {:<40}  {:<8}  {:<6}  {}",
                o.address,
                o.now.admin_state.map_or("-", |s| s.name()),
                o.now.weight.map_or("-".into(), |w| w.to_string()),
                if o.in_set { "yes" } else { "no" }
            );
        }
    }
    out
}

/// A backend's state for `sinew status`, with an operator's override named (`drain (operator)`).
pub fn state_cell(b: &BackendView) -> String {
    match b.admin_state {
        Some(_) => format!("{} (operator)", b.state),
        None => b.state.to_string(),
    }
}

/// A backend's weight for `sinew status`: an operator's weight beside the discovered one (`3 (was 1)`).
pub fn weight_cell(b: &BackendView) -> String {
    match (b.weight_override, b.weight) {
        (Some(w), Some(was)) => format!("{w} (was {was})"),
        (Some(w), None) => w.to_string(),
        (None, w) => w.map_or_else(|| "-".into(), |w| w.to_string()),
    }
}

/// Percent-encodes a path segment: everything but unreserved characters and `:`.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{AdminState, Override, OverrideView};

    #[test]
    fn addresses_are_encoded_for_the_path() {
        assert_eq!(encode("10.0.0.1:8080"), "10.0.0.1:8080");
        assert_eq!(encode("[::1]:80"), "%5B::1%5D:80");
        assert_eq!(encode("a/b c%"), "a%2Fb%20c%25");
    }

    #[test]
    fn status_cells_name_an_operator_override() {
        let view = |extra: serde_json::Value| -> BackendView {
            let mut v = serde_json::json!({"address": "10.0.0.1:80", "state": "up", "weight": 1,
                "effective_weight_percent": 100, "origin": "static", "active": 0,
                "connections_total": 0, "connect_failures_total": 0, "last_check": null});
            if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
                v.extend(extra.clone());
            }
            serde_json::from_value(v).unwrap()
        };
        let plain = view(serde_json::json!({}));
        assert_eq!(
            (state_cell(&plain), weight_cell(&plain)),
            ("up".into(), "1".into())
        );
        let drained = view(
            serde_json::json!({"state": "drain", "admin_state": "drain", "weight_override": 3}),
        );
        assert_eq!(
            (state_cell(&drained), weight_cell(&drained)),
            ("drain (operator)".into(), "3 (was 1)".into())
        );
    }

    #[test]
    fn the_list_shows_state_weight_and_presence() {
        let mut list = OverridesJson {
            services: Default::default(),
        };
        assert_eq!(table(&list), "no overrides in force\n");
        list.services.insert(
            "web".into(),
            vec![OverrideView {
                address: "10.0.0.1:80".into(),
                now: Override {
                    admin_state: Some(AdminState::Drain),
                    weight: None,
                },
                in_set: false,
            }],
        );
        let text = table(&list);
        let row = text.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, ["web", "10.0.0.1:80", "drain", "-", "no"]);
    }
}

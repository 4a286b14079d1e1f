//! The znode of a registered instance: Nerve's JSON, byte for byte, under `zk_path/INSTANCE_` as an
//! ephemeral sequential node, so that an unmodified Synapse (and sinew's own discovery) reads it.

use crate::config::register::Registration;
use serde::Serialize;
use std::collections::BTreeMap;
use zookeeper_client as zk;

const EPHEMERAL_SEQUENTIAL: zk::CreateOptions<'static> =
    zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
const PERSISTENT: zk::CreateOptions<'static> =
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());

/// Nerve's data, fields in Nerve's order.
#[derive(Serialize)]
struct NerveData<'a> {
    host: &'a str,
    port: u16,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    haproxy_server_options: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a BTreeMap<String, String>>,
}

/// The znode data of an instance.
pub fn data(r: &Registration, instance_id: &str) -> Vec<u8> {
    let d = NerveData {
        host: &r.host,
        port: r.port,
        name: instance_id,
        weight: r.weight,
        haproxy_server_options: r.haproxy_server_options.as_deref(),
        labels: r.labels.as_ref(),
    };
    serde_json::to_vec(&d).unwrap_or_default()
}

/// Creates the instance's node (parents as needed), then removes the nodes an earlier session or run of
/// this instance left behind (or a process handing over to this one still holds); returns the node's
/// path. Created first, so the instance is never missing from the children in between.
pub async fn create(
    client: &zk::Client,
    r: &Registration,
    instance_id: &str,
) -> Result<String, zk::Error> {
    client
        .mkdir(&r.zk_path, &PERSISTENT)
        .await
        .or_else(|e| match e {
            zk::Error::NodeExists => Ok(()),
            e => Err(e),
        })?;
    let data = data(r, instance_id);
    let prefix = format!("{instance_id}_");
    let (_, seq) = client
        .create(
            &format!("{}/{prefix}", r.zk_path),
            &data,
            &EPHEMERAL_SEQUENTIAL,
        )
        .await?;
    let created = format!("{prefix}{seq}");
    // Ours exists now: a failure below leaves a duplicate of it (same data), never an error to retry.
    if let Err(e) = remove_stale(client, r, &prefix, &created, &data).await {
        tracing::warn!(zk_path = %r.zk_path, error = %e, "cannot remove an earlier node of this instance");
    }
    Ok(format!("{}/{created}", r.zk_path))
}

/// Deletes the children named `prefix*` with exactly `data`, except `created`.
async fn remove_stale(
    client: &zk::Client,
    r: &Registration,
    prefix: &str,
    created: &str,
    data: &[u8],
) -> Result<(), zk::Error> {
    for child in client.list_children(&r.zk_path).await? {
        if !child.starts_with(prefix) || child == created {
            continue;
        }
        let path = format!("{}/{child}", r.zk_path);
        match client.get_data(&path).await {
            // Same instance, same data: left by an earlier session or an earlier run of this task,
            // or held by the process this one took over from; it would duplicate us.
            Ok((old, _)) if old == data => delete(client, &path).await?,
            Ok(_) | Err(zk::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Replaces the node's data in place (its name stays); `NoNode` when it is gone.
pub async fn rewrite(client: &zk::Client, path: &str, data: &[u8]) -> Result<(), zk::Error> {
    client.set_data(path, data, None).await.map(drop)
}

/// Deletes the node; one already gone is fine.
pub async fn delete(client: &zk::Client, path: &str) -> Result<(), zk::Error> {
    match client.delete(path, None).await {
        Ok(()) | Err(zk::Error::NoNode) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_nerves_json() {
        let mut r = Registration {
            host: "10.0.0.5".into(),
            port: 8080,
            zk_hosts: vec!["zk:2181".into()],
            zk_path: "/nerve/services/web/services".into(),
            session_timeout: std::time::Duration::from_secs(10),
            check_interval: std::time::Duration::from_millis(500),
            weight: None,
            labels: None,
            haproxy_server_options: None,
            checks: Vec::new(),
        };
        assert_eq!(
            data(&r, "i-1"),
            br#"{"host":"10.0.0.5","port":8080,"name":"i-1"}"#
        );
        r.weight = Some(2);
        assert_eq!(
            data(&r, "i-1"),
            br#"{"host":"10.0.0.5","port":8080,"name":"i-1","weight":2}"#
        );
    }
}

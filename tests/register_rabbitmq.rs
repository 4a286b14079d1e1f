//! The rabbitmq registration check against a real rabbitmq-server (one broker for the whole file): a
//! message published to a temporary queue comes back, the connection is closed cleanly every time, a
//! wrong password or a stopped server keeps (or takes) the service out of ZooKeeper.

mod support;

use std::time::Duration;
use support::rabbitmq::{shared, PASSWORD, VHOST};
use support::register::*;
use support::relay::Relay;
use support::zk::ZooKeeper;
use support::*;

fn check(user: &str, password: &str) -> String {
    format!("[{{ type: rabbitmq, username: {user}, password: {password}, vhost: {VHOST}, timeout: 2s, fall: 2 }}]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_round_trip_registers_and_every_connection_is_closed_cleanly() {
    let (zk, rabbit) = tokio::join!(ZooKeeper::start(), shared());
    let agent = agent(&register(
        &zk,
        rabbit.addr.port(),
        &check("clean", PASSWORD),
    ))
    .await;
    let client = zk.client().await;
    let n = wait_nodes(&client, 1, Duration::from_secs(10)).await;
    assert_eq!(
        n[0].1,
        format!(
            r#"{{"host":"127.0.0.1","port":{},"name":"i-test"}}"#,
            rabbit.addr.port()
        )
    );
    // Several more rounds, then a clean stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = http_get(agent.admin_addr(), "/api/register").await.1;
    assert!(
        view.contains("\"rabbitmq\"") && view.contains("\"up\": true"),
        "{view}"
    );
    agent.shutdown(Duration::from_secs(1)).await;
    wait_nodes(&client, 0, Duration::from_secs(1)).await;

    // The broker logs "closing AMQP connection <..> (.., user: 'clean')" for a client that closed
    // properly and "(.., user: 'clean'):" followed by "client unexpectedly closed TCP connection" for
    // one that dropped the socket.
    let mut log = String::new();
    for _ in 0..100 {
        log = rabbit.log();
        if log.matches("user: 'clean')").count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let clean = log.matches("user: 'clean')\n").count();
    let abrupt = log.matches("user: 'clean'):").count();
    assert!(
        clean >= 3,
        "too few closed connections in the broker's log: {clean}"
    );
    assert_eq!(abrupt, 0, "connections dropped without connection.close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_vhost_fails_with_the_brokers_reason_and_registers_nothing() {
    let (zk, rabbit) = tokio::join!(ZooKeeper::start(), shared());
    let refused = agent(&register(
        &zk,
        rabbit.addr.port(),
        &check("refused", "wrong"),
    ))
    .await;
    let view = wait_view(refused.admin_addr(), Duration::from_secs(10), |v| {
        v.contains("ACCESS_REFUSED")
    })
    .await;
    assert!(
        view.contains("ACCESS_REFUSED") && view.contains("\"up\": false"),
        "{view}"
    );
    let client = zk.client().await;
    stays_empty(&client, Duration::from_millis(500)).await;

    // The right password for a vhost that does not exist.
    let checks = format!(
        "[{{ type: rabbitmq, username: refused, password: {PASSWORD}, vhost: nope, timeout: 2s }}]"
    );
    let other = agent(&register(&zk, rabbit.addr.port(), &checks)).await;
    let view = wait_view(other.admin_addr(), Duration::from_secs(10), |v| {
        v.contains("NOT_ALLOWED")
    })
    .await;
    assert!(
        view.contains("NOT_ALLOWED") && view.contains("\"up\": false"),
        "{view}"
    );
    stays_empty(&client, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_znode_goes_when_the_broker_stops_and_comes_back_with_it() {
    let (zk, rabbit) = tokio::join!(ZooKeeper::start(), shared());
    // The check reaches the broker through a relay: dropping the relay stops the broker for this check
    // without disturbing the other tests that share it.
    let relay = Relay::start(rabbit.addr).await;
    let at = relay.addr;
    let agent = agent(&register(&zk, at.port(), &check("relayed", PASSWORD))).await;
    let client = zk.client().await;
    wait_nodes(&client, 1, Duration::from_secs(10)).await;

    drop(relay);
    // fall 2 at a 100 ms interval, plus slack.
    wait_nodes(&client, 0, Duration::from_secs(2)).await;
    // The service is down once `fall` checks in a row failed; the view may be read between two of them.
    let view = wait_view(agent.admin_addr(), Duration::from_secs(5), |v| {
        v.contains("connect 127.0.0.1") && v.contains("\"up\": false")
    })
    .await;
    assert!(
        view.contains("connect 127.0.0.1") && view.contains("\"up\": false"),
        "{view}"
    );

    let _back = Relay::start_on(at, rabbit.addr).await;
    wait_nodes(&client, 1, Duration::from_secs(5)).await;
}

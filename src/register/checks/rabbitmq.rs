//! The rabbitmq check: proves the broker routes and delivers, not only that it accepts connections.
//!
//! Over AMQP 0-9-1 it declares a server-named, exclusive, auto-delete queue, subscribes to it, publishes
//! a random body to it through the default exchange and waits for that body to come back. The
//! connection is closed with a proper `connection.close` whatever happened, so the broker logs no
//! abandoned connections; the queue goes with it. A refused login fails with the broker's own reason
//! (`ACCESS_REFUSED`, `NOT_ALLOWED` for a vhost), because the client asks for it at once rather than
//! the silent close RabbitMQ otherwise answers a wrong password with.

use crate::config::register::Check;
use futures_core::Stream;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::pin::Pin;

/// The AMQP reply code of a normal close.
const REPLY_SUCCESS: u16 = 200;

/// Publishes a message and consumes it back; `Err` carries the reason.
pub async fn run(check: &Check, host: &str, port: u16) -> Result<(), String> {
    let user = check.username.as_deref().unwrap_or("guest");
    let vhost = check.vhost.as_deref().unwrap_or("/");
    let uri = AMQPUri {
        scheme: AMQPScheme::AMQP,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: user.to_string(),
                password: check.password.as_deref().unwrap_or("guest").to_string(),
            },
            host: host.to_string(),
            port,
        },
        vhost: vhost.to_string(),
        query: AMQPQueryString::default(),
    };
    let properties =
        ConnectionProperties::default().with_connection_name("sinew health check".into());
    let conn = Connection::connect_uri(uri, properties)
        .await
        .map_err(|e| format!("connect {host}:{port} as {user:?} to vhost {vhost:?}: {e}"))?;
    let result = round_trip(&conn).await;
    let closed = conn.close(REPLY_SUCCESS, "health check done".into()).await;
    result?;
    closed.map_err(|e| format!("connection.close: {e}"))
}

async fn round_trip(conn: &Connection) -> Result<(), String> {
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| format!("channel.open: {e}"))?;
    let result = publish_and_consume(&channel).await;
    let closed = channel
        .close(REPLY_SUCCESS, "health check done".into())
        .await;
    result?;
    closed.map_err(|e| format!("channel.close: {e}"))
}

async fn publish_and_consume(channel: &Channel) -> Result<(), String> {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("queue.declare: {e}"))?;
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("basic.consume: {e}"))?;
    let body = format!("sinew health check {:016x}", fastrand::u64(..)).into_bytes();
    channel
        .basic_publish(
            "".into(),
            queue.name().clone(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
        .await
        .map_err(|e| format!("basic.publish: {e}"))?;
    let delivery = std::future::poll_fn(|cx| Pin::new(&mut consumer).poll_next(cx))
        .await
        .ok_or("the consumer was cancelled before the message came back")?
        .map_err(|e| format!("basic.deliver: {e}"))?;
    if delivery.data == body {
        Ok(())
    } else {
        Err("consumed another message than the one just published".into())
    }
}

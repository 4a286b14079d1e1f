//! The registrations of the big service, as a deploy tool or Nerve would write them: `n` children,
//! replaced one at a time (a delete and a create in one transaction, so the set never shrinks).

use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use zookeeper_client as zk;

/// Writes in flight at most.
const INFLIGHT: usize = 100;

const PERSISTENT: zk::CreateOptions<'static> =
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());

/// Writes the children of one path.
pub struct Writer {
    client: zk::Client,
    path: String,
    /// Live children, oldest first.
    live: VecDeque<String>,
    seq: u64,
    /// The number of the last registration known to be written.
    newest: u64,
}

/// Nerve's JSON for backend number `seq`: a distinct address per registration.
fn nerve(seq: u64) -> Vec<u8> {
    format!(
        r#"{{"host":"10.{}.{}.{}","port":8080,"name":"b{seq}"}}"#,
        (seq >> 16) & 255,
        (seq >> 8) & 255,
        seq & 255
    )
    .into_bytes()
}

impl Writer {
    /// Connects with a long session, so that it outlives the outages the bench causes.
    pub async fn connect(hosts: &[String], path: &str) -> Self {
        let client = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(60))
            .connect(&hosts.join(","))
            .await
            .expect("writer connects");
        Self {
            client,
            path: path.to_string(),
            live: VecDeque::new(),
            seq: 0,
            newest: 0,
        }
    }

    /// A writer of another path on the same session.
    pub fn at(&self, path: &str) -> Self {
        Self {
            client: self.client.clone(),
            path: path.to_string(),
            live: VecDeque::new(),
            seq: self.seq,
            newest: self.seq,
        }
    }

    /// Creates the path and `n` children, 100 per transaction.
    pub async fn populate(&mut self, n: usize) {
        self.client
            .mkdir(&self.path, &PERSISTENT)
            .await
            .expect("mkdir");
        while self.live.len() < n {
            let batch: Vec<(String, u64)> = (0..(n - self.live.len()).min(100))
                .map(|_| (self.next_name(), self.seq))
                .collect();
            let mut multi = self.client.new_multi_writer();
            for (name, seq) in &batch {
                multi
                    .add_create(&format!("{}/{name}", self.path), &nerve(*seq), &PERSISTENT)
                    .expect("create op");
            }
            multi.commit().await.expect("populate");
            self.newest = self.seq;
            self.live.extend(batch.into_iter().map(|(name, _)| name));
        }
    }

    fn next_name(&mut self) -> String {
        self.seq += 1;
        format!("b{:09}", self.seq)
    }

    /// The newest backend's host, as agents decode it.
    pub fn newest_host(&self) -> String {
        format!(
            "10.{}.{}.{}",
            (self.newest >> 16) & 255,
            (self.newest >> 8) & 255,
            self.newest & 255
        )
    }

    /// Sends the replacement of the oldest child by a new one, without waiting for the reply, so that
    /// the rate holds however busy the ensemble is; the task says whether it committed.
    fn replace_one(&mut self, inflight: &mut JoinSet<Result<u64, zk::Error>>) {
        let Some(old) = self.live.pop_front() else {
            return;
        };
        let name = self.next_name();
        let (seq, client, path) = (self.seq, self.client.clone(), self.path.clone());
        self.live.push_back(name.clone());
        inflight.spawn(async move {
            let mut multi = client.new_multi_writer();
            multi.add_delete(&format!("{path}/{old}"), None)?;
            multi.add_create(&format!("{path}/{name}"), &nerve(seq), &PERSISTENT)?;
            multi.commit().await.map_err(zk::Error::from)?;
            Ok(seq)
        });
    }

    /// After failed writes (whose outcome is unknown): the children as ZooKeeper has them.
    async fn resync(&mut self) -> Result<(), zk::Error> {
        let mut names = self.client.list_children(&self.path).await?;
        names.sort();
        self.live = names.into();
        Ok(())
    }

    /// Replaces children at `rate` per second for `duration` (or `count` replacements, if sooner),
    /// at most [`INFLIGHT`] at a time; after failed writes it re-reads the children and goes on. The
    /// number of replacements committed.
    pub async fn churn(&mut self, rate: f64, duration: Duration, count: usize) -> usize {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        // A busy process wakes late: catch up, so the rate holds on average.
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let end = Instant::now() + duration;
        let mut inflight = JoinSet::new();
        let (mut sent, mut done, mut failed) = (0, 0, false);
        while Instant::now() < end && sent < count {
            tick.tick().await;
            while let Some(r) = inflight.try_join_next() {
                failed |= !self.settle(r, &mut done);
            }
            if failed && inflight.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                failed = self.resync().await.is_err();
                continue;
            }
            if failed || inflight.len() >= INFLIGHT {
                continue;
            }
            self.replace_one(&mut inflight);
            sent += 1;
        }
        while let Some(r) = inflight.join_next().await {
            failed |= !self.settle(r, &mut done);
        }
        if failed {
            let _ = self.resync().await;
        }
        done
    }

    /// Counts a finished write; false if it failed.
    fn settle(
        &mut self,
        r: Result<Result<u64, zk::Error>, tokio::task::JoinError>,
        done: &mut usize,
    ) -> bool {
        match r {
            Ok(Ok(seq)) => {
                *done += 1;
                self.newest = self.newest.max(seq);
                true
            }
            _ => false,
        }
    }
}

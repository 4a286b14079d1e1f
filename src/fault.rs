//! Fault injection for the test suite: named points inside background tasks (discovery, registration)
//! and client connection tasks (`connection`) that a test can make hang or panic, to prove that a
//! stuck or crashed task never stops traffic nor keeps what it held. Compiled in only with the
//! `fault-injection` feature, which the test suite turns on; without it every point is an empty
//! function the compiler removes.

#[cfg(feature = "fault-injection")]
mod points {
    use std::collections::HashMap;
    use std::sync::{Mutex, MutexGuard, OnceLock};
    use tokio::sync::watch;

    /// What a point does when a task reaches it.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mode {
        Pass,
        Hang,
        Panic,
    }

    fn held() -> MutexGuard<'static, HashMap<String, watch::Sender<Mode>>> {
        static HELD: OnceLock<Mutex<HashMap<String, watch::Sender<Mode>>>> = OnceLock::new();
        HELD.get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn key(kind: &str, service: &str) -> String {
        format!("{kind}/{service}")
    }

    fn set(kind: &str, service: &str, mode: Mode) -> String {
        let key = key(kind, service);
        held()
            .entry(key.clone())
            .or_insert_with(|| watch::channel(Mode::Pass).0)
            .send_replace(mode);
        key
    }

    /// Holds the point `kind` of `service`'s task hung until the returned guard is dropped.
    pub fn hang(kind: &str, service: &str) -> Hang {
        Hang {
            key: set(kind, service, Mode::Hang),
        }
    }

    /// Makes the next task that reaches the point `kind` of `service` panic there (once).
    pub fn panic_once(kind: &str, service: &str) {
        set(kind, service, Mode::Panic);
    }

    /// How many tasks wait at the point `kind` of `service` right now.
    pub fn waiting(kind: &str, service: &str) -> usize {
        held()
            .get(&key(kind, service))
            .map_or(0, watch::Sender::receiver_count)
    }

    /// A held point; dropping it lets the waiting tasks go on.
    pub struct Hang {
        key: String,
    }

    impl Drop for Hang {
        fn drop(&mut self) {
            if let Some(tx) = held().get(&self.key) {
                tx.send_replace(Mode::Pass);
            }
        }
    }

    /// A point in a task: waits here while a test holds it hung, panics here when told to.
    pub async fn point(kind: &str, service: &str) {
        let rx = {
            let held = held();
            let Some(tx) = held.get(&key(kind, service)) else {
                return;
            };
            if *tx.borrow() == Mode::Panic {
                tx.send_replace(Mode::Pass);
                drop(held);
                panic!("fault injected at {kind} of {service}");
            }
            tx.subscribe()
        };
        let mut rx = rx;
        let _ = rx.wait_for(|mode| *mode != Mode::Hang).await;
    }
}

#[cfg(not(feature = "fault-injection"))]
mod points {
    /// A point in a task; nothing happens here without the `fault-injection` feature.
    #[inline(always)]
    pub async fn point(_kind: &str, _service: &str) {}
}

pub use points::*;

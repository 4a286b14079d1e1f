//! The one line of Synapse's `haproxy.global` that sinew reads, `nbthread N`; the rest drives an
//! external HAProxy.

/// `nbthread N` in `haproxy.global`, the one line of it sinew reads: its runtime worker threads.
pub(super) fn nbthread(global: &[String]) -> Result<Option<std::num::NonZeroUsize>, String> {
    let mut found = None;
    for line in global {
        let mut words = line.split_whitespace();
        if words.next() != Some("nbthread") {
            continue;
        }
        let value = words.next().unwrap_or_default();
        let n = value
            .parse::<std::num::NonZeroUsize>()
            .ok()
            .filter(|n| n.get() <= crate::config::MAX_THREADS && words.next().is_none())
            .ok_or_else(|| {
                format!(
                    "{line:?}: expected nbthread N, a whole number 1-{}",
                    crate::config::MAX_THREADS
                )
            })?;
        found = Some(n);
    }
    Ok(found)
}

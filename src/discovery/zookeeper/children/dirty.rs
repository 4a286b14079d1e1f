//! What the next re-read must look at ([`Dirty`]), gathered from the watches that fired ([`WatchEvent`]).

use std::collections::BTreeSet;

/// What the next re-read must look at, gathered from fired watches.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// List the children again (the path appeared or went, its child watch fired, or a reconnection).
    pub list: bool,
    /// Read these children's data (new, or changed).
    pub read: BTreeSet<String>,
    /// These children were deleted.
    pub gone: BTreeSet<String>,
    /// A new session: every watch is gone and every known child is checked.
    pub revalidate: bool,
}

impl Dirty {
    /// Everything: the state of a watcher that has never read, or whose session was replaced.
    pub fn everything() -> Self {
        Self {
            list: true,
            revalidate: true,
            ..Self::default()
        }
    }

    /// Whether there is anything to read.
    pub fn any(&self) -> bool {
        self.list || self.revalidate || !self.read.is_empty() || !self.gone.is_empty()
    }

    /// Adds what fired watches ask to be read; the last event about a child decides.
    pub fn absorb(&mut self, fired: Vec<WatchEvent>) {
        for f in fired {
            match f {
                WatchEvent::List => self.list = true,
                WatchEvent::Changed(name) => {
                    self.gone.remove(&name);
                    self.read.insert(name);
                }
                WatchEvent::Gone(name) => {
                    self.read.remove(&name);
                    self.gone.insert(name);
                }
                WatchEvent::Session => {}
            }
        }
    }
}

/// A watch that fired.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The child list changed, or the path itself was created or deleted.
    List,
    /// A child was created or its data changed.
    Changed(String),
    /// A child was deleted.
    Gone(String),
    /// The session ended: the session manager brings a new one.
    Session,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fired_watches_name_what_to_read() {
        let mut d = Dirty::default();
        assert!(!d.any());
        d.absorb(vec![WatchEvent::Changed("b".into()), WatchEvent::Session]);
        assert_eq!(d.read.iter().collect::<Vec<_>>(), ["b"]);
        assert!(!d.list && d.any());
        d.absorb(vec![WatchEvent::List, WatchEvent::Changed("a".into())]);
        assert!(d.list && !d.revalidate);
        assert_eq!(d.read.len(), 2);
        assert!(Dirty::everything().revalidate && Dirty::everything().list);
    }

    #[test]
    fn the_last_event_about_a_child_decides() {
        let mut d = Dirty::default();
        d.absorb(vec![
            WatchEvent::Changed("a".into()),
            WatchEvent::Gone("a".into()),
        ]);
        assert!(d.read.is_empty());
        assert_eq!(d.gone.iter().collect::<Vec<_>>(), ["a"]);
        d.absorb(vec![WatchEvent::Changed("a".into())]);
        assert!(d.gone.is_empty());
        assert_eq!(d.read.iter().collect::<Vec<_>>(), ["a"]);
        assert!(Dirty {
            gone: BTreeSet::from(["x".to_string()]),
            ..Dirty::default()
        }
        .any());
    }
}

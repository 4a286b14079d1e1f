//! The ZooKeeper requests one re-read made, by kind.

/// Requests one re-read made, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Requests {
    /// `getChildren` (with or without a watch).
    pub list: u64,
    /// `getData` of one node.
    pub get_data: u64,
    /// `exists` (with a watch).
    pub exists: u64,
    /// `addWatch` of the persistent recursive watch.
    pub watch: u64,
    /// Multi-read requests (each many `getData`).
    pub multi_read: u64,
}

impl Requests {
    /// The counts in the order of [`crate::discovery::ZK_REQUEST_KINDS`].
    pub fn by_kind(&self) -> [u64; 5] {
        [
            self.list,
            self.get_data,
            self.exists,
            self.watch,
            self.multi_read,
        ]
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.by_kind().iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_metric_labels() {
        let cases = [
            (
                Requests {
                    list: 1,
                    ..Requests::default()
                },
                "list",
            ),
            (
                Requests {
                    get_data: 1,
                    ..Requests::default()
                },
                "get_data",
            ),
            (
                Requests {
                    exists: 1,
                    ..Requests::default()
                },
                "exists",
            ),
            (
                Requests {
                    watch: 1,
                    ..Requests::default()
                },
                "watch",
            ),
            (
                Requests {
                    multi_read: 1,
                    ..Requests::default()
                },
                "multi_read",
            ),
        ];
        for (requests, kind) in cases {
            let at = requests.by_kind().iter().position(|n| *n == 1);
            let label = at.map(|i| crate::discovery::ZK_REQUEST_KINDS[i]);
            assert_eq!(label, Some(kind));
            assert_eq!(requests.total(), 1);
        }
    }
}

//! The PUBLISHes written on a connection and not yet reported confirmed.

use std::collections::VecDeque;

/// Packet ids written, oldest first, each with whether its PUBACK came.
/// Only an acknowledged prefix counts as confirmed, whatever order the
/// PUBACKs arrive in.
#[derive(Debug, Default)]
pub(super) struct Written {
    entries: VecDeque<(u16, bool)>,
    /// Entries still waiting for their PUBACK: what the broker's Receive
    /// Maximum limits.
    unacknowledged: usize,
}

impl Written {
    pub fn push(&mut self, pkid: u16, acknowledged: bool) {
        self.entries.push_back((pkid, acknowledged));
        if !acknowledged {
            self.unacknowledged += 1;
        }
    }

    /// Messages written and not acknowledged yet.
    pub fn in_flight(&self) -> usize {
        self.unacknowledged
    }

    /// Messages written and not yet confirmed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Marks `pkid` acknowledged; `false` if no written message has it.
    pub fn acknowledge(&mut self, pkid: u16) -> bool {
        let entry = self
            .entries
            .iter_mut()
            .find(|(id, acked)| *id == pkid && !acked);
        let found = entry.map(|(_, acked)| *acked = true).is_some();
        if found {
            self.unacknowledged -= 1;
        }
        found
    }

    /// Removes the acknowledged prefix; how many messages it held.
    pub fn take_confirmed(&mut self) -> usize {
        let mut confirmed = 0;
        while self.entries.front().is_some_and(|(_, acked)| *acked) {
            self.entries.pop_front();
            confirmed += 1;
        }
        confirmed
    }
}

#[cfg(test)]
mod tests {
    use super::Written;

    #[test]
    fn only_an_acknowledged_prefix_is_confirmed() {
        let mut written = Written::default();
        for pkid in [7, 8, 9] {
            written.push(pkid, false);
        }
        assert!(written.acknowledge(8));
        assert_eq!(written.in_flight(), 2);
        assert_eq!(written.take_confirmed(), 0, "7 is still unacknowledged");
        assert!(written.acknowledge(7));
        assert_eq!(written.take_confirmed(), 2);
        assert!(!written.acknowledge(7), "7 is no longer in flight");
        assert_eq!(written.in_flight(), 1);
        assert!(written.acknowledge(9));
        assert_eq!(written.take_confirmed(), 1);
        assert_eq!(written.take_confirmed(), 0);
        assert_eq!(written.in_flight(), 0);
    }

    #[test]
    fn a_reused_packet_id_acknowledges_the_oldest_unacknowledged_use() {
        let mut written = Written::default();
        written.push(1, true);
        written.push(1, false);
        assert_eq!(written.in_flight(), 1);
        assert!(written.acknowledge(1));
        assert_eq!(written.take_confirmed(), 2);
        assert_eq!(written.in_flight(), 0);
    }
}

//! Keys with a timeout: the EXPIRE family, TTL, PERSIST, and what "expired"
//! means to the other commands.
//!
//! Time here is a number the caller gives, never a clock: an entry is
//! applied at its leader's stamp ([`KvStore::clock`] keeps the last one), so
//! every node sees the same keys expired; a read is answered at the leader's
//! time. A key past its deadline is absent to every command, as in Redis;
//! a write that meets one deletes it first, and a leader deletes the others
//! in the background with [`Command::Purge`](super::Command::Purge) entries.

use super::expiry::{ExpireCondition, Expiry, GetExAction};
use super::{KvStore, Reply};

impl KvStore {
    /// The last leader stamp applied (unix ms): the time of entries that
    /// carry none (plain SET and MSET, which do not depend on it).
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Keys with a timeout (expired ones not yet deleted included).
    pub fn expiring_keys(&self) -> usize {
        self.expires.len()
    }

    pub(super) fn is_expired(&self, key: &[u8], now: u64) -> bool {
        self.expires.get(key).is_some_and(|at| at <= now)
    }

    /// The value of `key` if it exists and has not expired by `now`.
    pub(super) fn live(&self, key: &[u8], now: u64) -> Option<&[u8]> {
        let value = self.map.get(key)?;
        (!self.is_expired(key, now)).then_some(value)
    }

    /// Deletes `key` if it has expired at the time of the entry being
    /// applied, so that the write that meets it finds it absent.
    pub(super) fn drop_if_expired(&mut self, key: &[u8]) {
        if self.is_expired(key, self.clock) {
            self.delete_one(key);
        }
    }

    /// EXPIRE and its kin: `:1` if the timeout was set (or the key deleted,
    /// for a deadline already past), `:0` for no key or a condition that
    /// does not hold.
    pub(super) fn expire(
        &mut self,
        key: &[u8],
        expiry: Expiry,
        condition: ExpireCondition,
    ) -> Reply {
        self.drop_if_expired(key);
        if self.map.get(key).is_none() {
            return Reply::Integer(0);
        }
        let deadline = expiry.deadline(self.clock);
        if !condition.allows(self.expires.get(key), deadline) {
            return Reply::Integer(0);
        }
        self.set_deadline(key, deadline);
        Reply::Integer(1)
    }

    /// Gives the existing `key` the `deadline` (unix ms); one already past
    /// at the entry's time deletes the key, as Redis does.
    pub(super) fn set_deadline(&mut self, key: &[u8], deadline: i64) {
        if deadline <= self.clock as i64 {
            self.delete_one(key);
        } else {
            self.expires.set(key, deadline as u64);
        }
    }

    /// GETEX with an option: the value (its bytes taken from `budget`), and
    /// the timeout removed or set (a deadline already past deletes the key);
    /// no key, or a value past the budget, changes nothing.
    pub(super) fn get_ex(&mut self, key: &[u8], action: GetExAction, budget: &mut usize) -> Reply {
        self.drop_if_expired(key);
        let reply = self.value_reply(self.map.get(key), budget);
        if !matches!(reply, Reply::Bulk(_)) {
            return reply;
        }
        match action {
            GetExAction::Persist => {
                self.expires.remove(key);
            }
            GetExAction::Expire(expiry) => self.set_deadline(key, expiry.deadline(self.clock)),
        }
        reply
    }

    /// PERSIST: `:1` if the key had a timeout and lost it.
    pub(super) fn persist(&mut self, key: &[u8]) -> Reply {
        self.drop_if_expired(key);
        Reply::Integer(i64::from(self.expires.remove(key).is_some()))
    }

    /// TTL, PTTL, EXPIRETIME and PEXPIRETIME at `now`: -2 for no key, -1 for
    /// one without a timeout, else the time left (or the deadline, when
    /// `absolute`), seconds rounded to the nearest as Redis does.
    pub(super) fn time_left(&self, key: &[u8], now: u64, millis: bool, absolute: bool) -> Reply {
        if self.live(key, now).is_none() {
            return Reply::Integer(-2);
        }
        let Some(deadline) = self.expires.get(key) else {
            return Reply::Integer(-1);
        };
        let ms = if absolute {
            deadline
        } else {
            deadline.saturating_sub(now)
        }
        .min(i64::MAX as u64) as i64;
        Reply::Integer(if millis {
            ms
        } else {
            ms / 1000 + i64::from(ms % 1000 >= 500)
        })
    }

    /// A leader's purge: deletes those of `keys` that have expired by now.
    pub(super) fn purge(&mut self, keys: &[Vec<u8>]) -> Reply {
        let mut deleted = 0;
        for key in keys {
            if self.is_expired(key, self.clock) {
                self.delete_one(key);
                deleted += 1;
            }
        }
        Reply::Integer(deleted)
    }

    /// Keys that have expired by `now`, looking at the timeouts of at most
    /// `shards` shards from `*cursor` on (which it moves on, round the
    /// shards): at most `max` of them, and past the first at most
    /// `max_bytes` of key bytes, for a leader's purge.
    pub fn expired_keys(
        &self,
        now: u64,
        cursor: &mut usize,
        shards: usize,
        max: usize,
        max_bytes: usize,
    ) -> Vec<Vec<u8>> {
        let mut found = Vec::new();
        if self.expires.len() == 0 {
            return found;
        }
        let all = self.expires.shards();
        let mut bytes = 0;
        for _ in 0..shards.min(all.len()) {
            *cursor %= all.len();
            for (key, _) in all[*cursor].iter().filter(|(_, at)| **at <= now) {
                let full = found.len() >= max || bytes + key.len() > max_bytes;
                if full && !found.is_empty() {
                    // The rest of this shard waits for the next purge.
                    return found;
                }
                bytes += key.len();
                found.push(key.to_vec());
            }
            *cursor += 1;
        }
        found
    }
}

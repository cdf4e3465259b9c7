//! A hashed timer wheel keyed by tick numbers. Pure: the caller says what tick it is.
//!
//! A timer due at tick `at` lives in bucket `at % slots` with its absolute tick,
//! so a timer more than one revolution away simply stays in its bucket when the
//! wheel passes it early (the "rounds" are implicit in `at`). Timers scheduled
//! for a tick already reached go to a separate overdue bucket and fire on the
//! next [`TimerWheel::advance`].
//!
//! Invariants (checked by `check_invariants` in tests):
//! - every timer in a wheel bucket is due after `now`; every overdue timer is
//!   due at or before `now`;
//! - each live slab entry records its bucket and position, and that bucket
//!   holds its index at that position (so cancel is O(1): swap-remove).
//!
//! Costs: `schedule` and `cancel` are O(1). `advance` visits the buckets of the
//! ticks passed (at most every bucket once) and sorts only what fires.
//! `next_deadline` is exact; it is cached and, after a change that may raise it,
//! recomputed by walking at most one revolution of buckets.

use std::cell::Cell;

/// Identifies a scheduled timer, for cancelling it.
///
/// The low 32 bits are a slab index and the high 32 bits that slot's generation,
/// so a stale id (its timer fired or was cancelled) does not cancel a newer timer
/// that reuses the slot, unless the slot was reused 2^32 times in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(pub u64);

struct Timer<T> {
    at: u64,
    /// Scheduling order, to fire timers of the same tick first-come first-served.
    seq: u64,
    bucket: usize,
    pos: usize,
    item: T,
}

struct Slot<T> {
    generation: u32,
    timer: Option<Timer<T>>,
}

pub struct TimerWheel<T> {
    now: u64,
    mask: u64,
    /// `slots` wheel buckets, then the overdue bucket; each holds slab indexes.
    buckets: Vec<Vec<u32>>,
    slab: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
    next_seq: u64,
    /// Reused by `advance` for `(at, seq, slab index)` of the timers firing.
    scratch: Vec<(u64, u64, u32)>,
    /// `Some(d)`: `d` is exactly `next_deadline()`. `None`: recompute.
    cached_deadline: Cell<Option<Option<u64>>>,
}

impl<T> TimerWheel<T> {
    /// A wheel with `slots` buckets (a power of two), starting at tick 0.
    pub fn new(slots: usize) -> TimerWheel<T> {
        assert!(
            slots.is_power_of_two(),
            "timer wheel slots {slots} is not a power of two"
        );
        TimerWheel {
            now: 0,
            mask: slots as u64 - 1,
            buckets: (0..=slots).map(|_| Vec::new()).collect(),
            slab: Vec::new(),
            free: Vec::new(),
            len: 0,
            next_seq: 0,
            scratch: Vec::new(),
            cached_deadline: Cell::new(Some(None)),
        }
    }

    /// The current tick.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Schedules `item` to fire at tick `at` (a past tick fires on the next advance).
    pub fn schedule(&mut self, at: u64, item: T) -> TimerId {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.slab.len())
                    .unwrap_or_else(|_| panic!("timer wheel holds 2^32 timers"));
                self.slab.push(Slot {
                    generation: 0,
                    timer: None,
                });
                index
            }
        };
        let bucket = self.bucket_for(at);
        let seq = self.next_seq;
        self.next_seq += 1;
        let pos = self.buckets[bucket].len();
        self.buckets[bucket].push(index);
        let slot = &mut self.slab[index as usize];
        assert!(slot.timer.is_none(), "free slab slot {index} is occupied");
        slot.timer = Some(Timer {
            at,
            seq,
            bucket,
            pos,
            item,
        });
        self.len += 1;
        if let Some(cached) = self.cached_deadline.get() {
            let earliest = cached.map_or(at, |deadline| deadline.min(at));
            self.cached_deadline.set(Some(Some(earliest)));
        }
        TimerId(u64::from(slot.generation) << 32 | u64::from(index))
    }

    /// Cancels a timer that has not fired; returns its item.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let index = (id.0 & u64::from(u32::MAX)) as u32;
        let generation = (id.0 >> 32) as u32;
        let slot = self.slab.get(index as usize)?;
        if slot.generation != generation || slot.timer.is_none() {
            return None;
        }
        let timer = self.release(index);
        self.unlink(timer.bucket, timer.pos, index);
        if self.cached_deadline.get() == Some(Some(timer.at)) {
            self.cached_deadline.set(None);
        }
        Some(timer.item)
    }

    /// Moves time forward to tick `to`, pushing every item due at or before it
    /// onto `fired` in order of their ticks.
    ///
    /// Items due at the same tick come out in the order they were scheduled. A
    /// `to` before the current tick does not move time back; it only fires
    /// overdue timers.
    pub fn advance(&mut self, to: u64, fired: &mut Vec<T>) {
        let mut due = std::mem::take(&mut self.scratch);
        let overdue = self.overdue_bucket();
        self.take_due(overdue, u64::MAX, &mut due);
        if to > self.now {
            let span = to - self.now;
            if span > self.mask {
                for bucket in 0..overdue {
                    self.take_due(bucket, to, &mut due);
                }
            } else {
                for tick in self.now + 1..=to {
                    self.take_due((tick & self.mask) as usize, to, &mut due);
                }
            }
            self.now = to;
        }
        due.sort_unstable_by_key(|&(at, seq, _)| (at, seq));
        fired.reserve(due.len());
        for (_, _, index) in due.drain(..) {
            fired.push(self.release(index).item);
        }
        self.scratch = due;
        self.cached_deadline.set(None);
    }

    /// The earliest tick with a timer, if any. Exact: never later than a timer's
    /// tick (so a poll timeout derived from it never oversleeps), and never
    /// earlier than the earliest one. A tick at or before [`now`](Self::now)
    /// means a timer is overdue: advance at once.
    pub fn next_deadline(&self) -> Option<u64> {
        if let Some(cached) = self.cached_deadline.get() {
            return cached;
        }
        let deadline = self.compute_deadline();
        self.cached_deadline.set(Some(deadline));
        deadline
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn overdue_bucket(&self) -> usize {
        self.buckets.len() - 1
    }

    fn bucket_for(&self, at: u64) -> usize {
        if at <= self.now {
            self.overdue_bucket()
        } else {
            (at & self.mask) as usize
        }
    }

    fn timer(&self, index: u32) -> &Timer<T> {
        match &self.slab[index as usize].timer {
            Some(timer) => timer,
            None => panic!("bucket refers to empty slab slot {index}"),
        }
    }

    /// Moves the timers of `bucket` due at or before `to` into `due` as
    /// `(at, seq, index)`. They stay in the slab until [`Self::release`].
    fn take_due(&mut self, bucket: usize, to: u64, due: &mut Vec<(u64, u64, u32)>) {
        let mut pos = 0;
        while pos < self.buckets[bucket].len() {
            let index = self.buckets[bucket][pos];
            let timer = self.timer(index);
            if timer.at <= to {
                due.push((timer.at, timer.seq, index));
                self.unlink(bucket, pos, index);
            } else {
                pos += 1;
            }
        }
    }

    /// Removes `index` from position `pos` of `bucket`, keeping the position of
    /// the entry swapped into its place up to date.
    fn unlink(&mut self, bucket: usize, pos: usize, index: u32) {
        let removed = self.buckets[bucket].swap_remove(pos);
        assert_eq!(
            removed, index,
            "bucket {bucket} position {pos} holds {removed}, not {index}"
        );
        if let Some(&moved) = self.buckets[bucket].get(pos) {
            if let Some(timer) = &mut self.slab[moved as usize].timer {
                timer.pos = pos;
            }
        }
    }

    /// Empties slab slot `index` (already unlinked or about to be) and frees it.
    fn release(&mut self, index: u32) -> Timer<T> {
        let slot = &mut self.slab[index as usize];
        let timer = match slot.timer.take() {
            Some(timer) => timer,
            None => panic!("releasing empty slab slot {index}"),
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.len -= 1;
        timer
    }

    fn compute_deadline(&self) -> Option<u64> {
        let overdue = &self.buckets[self.overdue_bucket()];
        if let Some(at) = overdue.iter().map(|&index| self.timer(index).at).min() {
            return Some(at);
        }
        if self.len == 0 {
            return None;
        }
        // A timer due within one revolution sits in the bucket of its tick, and
        // anything else in that bucket is due a whole revolution or more later;
        // so the first tick whose bucket holds a timer for exactly that tick is
        // the earliest.
        for tick in self.now.saturating_add(1)..=self.now.saturating_add(self.mask + 1) {
            let bucket = &self.buckets[(tick & self.mask) as usize];
            if bucket.iter().any(|&index| self.timer(index).at == tick) {
                return Some(tick);
            }
        }
        self.buckets
            .iter()
            .flatten()
            .map(|&index| self.timer(index).at)
            .min()
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        let mut live = 0;
        for (bucket, indexes) in self.buckets.iter().enumerate() {
            for (pos, &index) in indexes.iter().enumerate() {
                let timer = self.timer(index);
                assert_eq!((timer.bucket, timer.pos), (bucket, pos), "timer {index}");
                if bucket == self.overdue_bucket() {
                    assert!(
                        timer.at <= self.now,
                        "overdue {} > now {}",
                        timer.at,
                        self.now
                    );
                } else {
                    assert!(
                        timer.at > self.now,
                        "pending {} <= now {}",
                        timer.at,
                        self.now
                    );
                    assert_eq!((timer.at & self.mask) as usize, bucket);
                }
                live += 1;
            }
        }
        assert_eq!(live, self.len);
        assert_eq!(self.slab.len() - self.free.len(), self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::rng::Rng;
    use std::collections::BTreeMap;

    #[test]
    fn fires_in_tick_order_then_scheduling_order() {
        let mut wheel = TimerWheel::new(8);
        wheel.schedule(5, "5a");
        wheel.schedule(3, "3");
        wheel.schedule(5, "5b");
        wheel.schedule(13, "13"); // same bucket as 5, a revolution later
        wheel.schedule(5, "5c");
        assert_eq!(wheel.next_deadline(), Some(3));
        let mut fired = Vec::new();
        wheel.advance(2, &mut fired);
        assert!(fired.is_empty());
        wheel.advance(5, &mut fired);
        assert_eq!(fired, ["3", "5a", "5b", "5c"]);
        assert_eq!(wheel.now(), 5);
        assert_eq!(wheel.next_deadline(), Some(13));
        fired.clear();
        wheel.advance(12, &mut fired);
        assert!(fired.is_empty());
        wheel.advance(13, &mut fired);
        assert_eq!(fired, ["13"]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn past_ticks_fire_on_the_next_advance_even_without_moving() {
        let mut wheel = TimerWheel::new(4);
        let mut fired = Vec::new();
        wheel.advance(10, &mut fired);
        wheel.schedule(11, 'b');
        wheel.schedule(7, 'a');
        wheel.schedule(10, 'z');
        assert_eq!(wheel.next_deadline(), Some(7));
        wheel.advance(10, &mut fired);
        assert_eq!(fired, ['a', 'z']);
        // Time never goes back.
        wheel.advance(3, &mut fired);
        assert_eq!(wheel.now(), 10);
        assert_eq!(wheel.next_deadline(), Some(11));
    }

    #[test]
    fn far_timers_survive_whole_revolutions_and_big_jumps() {
        let mut wheel = TimerWheel::new(4);
        wheel.schedule(1_000, 1000);
        wheel.schedule(9, 9);
        wheel.schedule(5, 5);
        let mut fired = Vec::new();
        for to in 1..=999 {
            wheel.advance(to, &mut fired);
        }
        assert_eq!(fired, [5, 9]);
        assert_eq!(wheel.next_deadline(), Some(1_000));
        wheel.schedule(1_000_000, 1_000_000);
        wheel.advance(5_000_000, &mut fired);
        assert_eq!(fired, [5, 9, 1000, 1_000_000]);
    }

    #[test]
    fn cancel_returns_the_item_once_and_ignores_stale_ids() {
        let mut wheel = TimerWheel::new(8);
        let a = wheel.schedule(4, 'a');
        let b = wheel.schedule(4, 'b');
        assert_eq!(wheel.cancel(a), Some('a'));
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(wheel.len(), 1);
        // The freed slot is reused with a new generation: the old id stays dead.
        let c = wheel.schedule(6, 'c');
        assert_ne!(a, c);
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(wheel.next_deadline(), Some(4));
        assert_eq!(wheel.cancel(b), Some('b'));
        assert_eq!(wheel.next_deadline(), Some(6));
        let mut fired = Vec::new();
        wheel.advance(10, &mut fired);
        assert_eq!(fired, ['c']);
        assert_eq!(wheel.cancel(c), None);
        assert_eq!(wheel.cancel(TimerId(u64::MAX)), None);
    }

    #[test]
    #[should_panic(expected = "not a power of two")]
    fn slots_must_be_a_power_of_two() {
        let _ = TimerWheel::<()>::new(12);
    }

    /// Random schedule/cancel/advance/next_deadline against a BTreeMap keyed by
    /// (tick, scheduling order), for many seeds and wheel sizes; ticks reach
    /// several revolutions ahead and advances sometimes jump far.
    #[test]
    fn matches_a_sorted_map_model() {
        for seed in 0..300u64 {
            let mut rng = Rng::new(seed);
            let slots = 1usize << rng.range(0, 6);
            let mut wheel = TimerWheel::new(slots);
            let mut model: BTreeMap<(u64, u64), (TimerId, u64)> = BTreeMap::new();
            let mut ids: Vec<(TimerId, (u64, u64))> = Vec::new();
            let mut seq = 0u64;
            for step in 0..400 {
                let now = wheel.now();
                match rng.range(0, 10) {
                    0..=4 => {
                        let at = match rng.range(0, 4) {
                            0 => now.saturating_sub(rng.range(0, 5)),
                            1 => now + rng.range(0, slots as u64 * 5 + 1),
                            _ => now + rng.range(1, 2 * slots as u64 + 2),
                        };
                        let item = seed << 32 | step;
                        let id = wheel.schedule(at, item);
                        model.insert((at, seq), (id, item));
                        ids.push((id, (at, seq)));
                        seq += 1;
                    }
                    5 | 6 if !ids.is_empty() => {
                        let (id, key) = ids.swap_remove(rng.range(0, ids.len() as u64) as usize);
                        let expected = model.remove(&key).map(|(_, item)| item);
                        assert_eq!(wheel.cancel(id), expected, "seed {seed} step {step}");
                    }
                    _ => {
                        let to = match rng.range(0, 8) {
                            0 => now + rng.range(0, slots as u64 * 8 + 1),
                            1 => now.saturating_sub(1),
                            _ => now + rng.range(0, 3),
                        };
                        let mut fired = Vec::new();
                        wheel.advance(to, &mut fired);
                        let due: Vec<(u64, u64)> = model
                            .keys()
                            .take_while(|(at, _)| *at <= to.max(now))
                            .copied()
                            .collect();
                        let expected: Vec<u64> = due
                            .iter()
                            .filter_map(|key| model.remove(key))
                            .map(|(_, item)| item)
                            .collect();
                        assert_eq!(fired, expected, "seed {seed} step {step} to {to}");
                    }
                }
                wheel.check_invariants();
                assert_eq!(wheel.len(), model.len(), "seed {seed} step {step}");
                assert_eq!(
                    wheel.next_deadline(),
                    model.keys().next().map(|(at, _)| *at),
                    "seed {seed} step {step}"
                );
            }
        }
    }
}

//! A hashed timer wheel keyed by tick numbers. Pure: the caller says what tick it is.
//!
//! (Helper D: replace the stubs; keep the public API.)

/// Identifies a scheduled timer, for cancelling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(pub u64);

pub struct TimerWheel<T> {
    _items: Vec<T>,
}

impl<T> TimerWheel<T> {
    /// A wheel with `slots` buckets (a power of two), starting at tick 0.
    pub fn new(_slots: usize) -> TimerWheel<T> {
        todo!()
    }
    /// The current tick.
    pub fn now(&self) -> u64 {
        todo!()
    }
    /// Schedules `item` to fire at tick `at` (a past tick fires on the next advance).
    pub fn schedule(&mut self, _at: u64, _item: T) -> TimerId {
        todo!()
    }
    /// Cancels a timer that has not fired; returns its item.
    pub fn cancel(&mut self, _id: TimerId) -> Option<T> {
        todo!()
    }
    /// Moves time forward to tick `to`, pushing every item due at or before it
    /// onto `fired` in order of their ticks.
    pub fn advance(&mut self, _to: u64, _fired: &mut Vec<T>) {
        todo!()
    }
    /// The earliest tick with a timer, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        todo!()
    }
    pub fn len(&self) -> usize {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

//! Expiry times in commands: SET's EX, PX, EXAT and PXAT, SETEX, PSETEX and
//! the EXPIRE family, parsed and checked as Redis 7.0 checks them.
//!
//! A relative time (EX, EXPIRE 10) stays relative in the log: the node turns
//! it into a deadline when it applies the entry, from the time the leader
//! stamped on the entry, so every node computes the same deadline.

use super::command::{parse_integer, CommandError};
use super::reply::up_to_nul;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    RelativeSeconds,
    RelativeMillis,
    AbsoluteSeconds,
    AbsoluteMillis,
}

impl TimeUnit {
    /// The unit of an option or command that takes a time, by its lower-case
    /// name: SET's and GETEX's EX, PX, EXAT and PXAT, the EXPIRE family,
    /// SETEX and PSETEX.
    pub fn of(lower_name: &[u8]) -> Option<TimeUnit> {
        Some(match lower_name {
            b"ex" | b"expire" | b"setex" => TimeUnit::RelativeSeconds,
            b"px" | b"pexpire" | b"psetex" => TimeUnit::RelativeMillis,
            b"exat" | b"expireat" => TimeUnit::AbsoluteSeconds,
            b"pxat" | b"pexpireat" => TimeUnit::AbsoluteMillis,
            _ => return None,
        })
    }

    fn seconds(self) -> bool {
        matches!(self, TimeUnit::RelativeSeconds | TimeUnit::AbsoluteSeconds)
    }

    fn relative(self) -> bool {
        matches!(self, TimeUnit::RelativeSeconds | TimeUnit::RelativeMillis)
    }
}

/// A time as a command gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    pub time: i64,
    pub unit: TimeUnit,
}

impl Expiry {
    /// The deadline in unix milliseconds when applied at `now`. Parsing
    /// bounds the time so that this cannot overflow (see [`parse_expiry`]).
    pub fn deadline(self, now: u64) -> i64 {
        let millis = if self.unit.seconds() {
            self.time.saturating_mul(1000)
        } else {
            self.time
        };
        if self.unit.relative() {
            millis.saturating_add(now.min(NOW_MILLIS_BOUND as u64) as i64)
        } else {
            millis
        }
    }
}

/// What GETEX does to the key's timeout besides answering its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetExAction {
    /// PERSIST: removes it.
    Persist,
    /// EX, PX, EXAT or PXAT: sets it.
    Expire(Expiry),
}

/// GETEX's options after the key, checked as Redis 7.0 checks them (one
/// kind of option, which may be given again; the time checked last); `None`
/// for none (a plain GET).
pub fn getex_action(words: &[Vec<u8>]) -> Result<Option<GetExAction>, CommandError> {
    // The option's lower-case name and, but for PERSIST, its time.
    let mut given: Option<(Vec<u8>, Option<&[u8]>)> = None;
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let lower = word.to_ascii_lowercase();
        if given.as_ref().is_some_and(|(kind, _)| *kind != lower) {
            return Err(CommandError::Syntax);
        }
        let time = match lower.as_slice() {
            b"persist" => None,
            b"ex" | b"px" | b"exat" | b"pxat" => match words.next() {
                Some(time) => Some(&time[..]),
                None => return Err(CommandError::Syntax),
            },
            _ => return Err(CommandError::Syntax),
        };
        given = Some((lower, time));
    }
    let Some((kind, time)) = given else {
        return Ok(None);
    };
    let Some(time) = time else {
        return Ok(Some(GetExAction::Persist));
    };
    let unit = TimeUnit::of(&kind).ok_or(CommandError::Syntax)?;
    let expiry = parse_expiry("getex", time, unit, true)?;
    Ok(Some(GetExAction::Expire(expiry)))
}

/// EXPIRE's NX, XX, GT and LT (Redis allows XX with GT or LT: both must hold).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpireCondition {
    /// Only a key without a timeout.
    pub nx: bool,
    /// Only a key with one.
    pub xx: bool,
    /// Only a later time than the key's (none counts as forever).
    pub gt: bool,
    /// Only an earlier time than the key's.
    pub lt: bool,
}

impl ExpireCondition {
    /// Whether EXPIRE sets `deadline` on a key whose current one is `current`.
    pub fn allows(self, current: Option<u64>, deadline: i64) -> bool {
        let current = current.map(|at| at as i64);
        !(self.nx && current.is_some()
            || self.xx && current.is_none()
            || self.gt && current.is_none_or(|at| deadline <= at)
            || self.lt && current.is_some_and(|at| deadline >= at))
    }
}

/// The current time in milliseconds is below this until the year 2109. Redis
/// adds the current time to a relative expiry and calls a sum past `i64` an
/// invalid time; taking this bound for it keeps parsing free of clocks, and
/// differs from Redis only in which error refuses a time within 140 years of
/// `i64::MAX` milliseconds.
pub const NOW_MILLIS_BOUND: i64 = 1 << 42;

/// An expiry time for `name`: Redis's errors for one it would refuse (not an
/// integer; 0 or less where it must be positive; past `i64` in milliseconds).
pub fn parse_expiry(
    name: &'static str,
    time: &[u8],
    unit: TimeUnit,
    positive: bool,
) -> Result<Expiry, CommandError> {
    let time = parse_integer(time).ok_or(CommandError::NotInteger)?;
    let millis = match unit.seconds() {
        true => time.checked_mul(1000),
        false => Some(time),
    };
    let invalid = match millis {
        None => true,
        Some(_) if positive && time <= 0 => true,
        Some(ms) => unit.relative() && ms > i64::MAX - NOW_MILLIS_BOUND,
    };
    if invalid {
        return Err(CommandError::InvalidExpireTime(name));
    }
    Ok(Expiry { time, unit })
}

/// EXPIRE's options after key and time, checked as Redis 7.0 checks them.
pub fn expire_condition(words: &[Vec<u8>]) -> Result<ExpireCondition, CommandError> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for word in words {
        match word.to_ascii_lowercase().as_slice() {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            _ => {
                return Err(CommandError::Rejected(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(up_to_nul(word))
                )));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CommandError::Rejected(
            "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
        ));
    }
    if gt && lt {
        return Err(CommandError::Rejected(
            "ERR GT and LT options at the same time are not compatible".into(),
        ));
    }
    Ok(ExpireCondition { nx, xx, gt, lt })
}

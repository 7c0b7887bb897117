//! Durations on the wire are milliseconds in a `u64` (or an `i64` for instants): these
//! conversions saturate, where `as_millis() as u64` would wrap a huge duration round to a
//! small one (an idle timeout of 584 million years read back as one hour).

use std::time::Duration;

/// `d` in whole milliseconds, or `u64::MAX` if it does not fit.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `d` in whole milliseconds, or `i64::MAX` if it does not fit (for sums with instants).
pub fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `d` in whole seconds, or `i64::MAX` if it does not fit.
pub fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A wire count of milliseconds as an `i64`, saturating.
pub fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate_instead_of_wrapping() {
        let huge = Duration::from_secs(18_446_744_073_713_152);
        assert_eq!(millis(huge), u64::MAX);
        assert_eq!(millis_i64(huge), i64::MAX);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(secs_i64(Duration::MAX), i64::MAX);
        assert_eq!(ms_i64(u64::MAX), i64::MAX);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis_i64(Duration::from_secs(2)), 2000);
    }
}

//! The system clock, read only by the shells (servers, load generator):
//! the core is always handed the time.

use crate::model::UnixNanos;

/// Nanoseconds since the Unix epoch now.
pub fn system_now() -> UnixNanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

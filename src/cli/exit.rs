//! The exit codes `gate`, `status` and `event` share, as documented in `--help`
//! and the README.

/// The release is green: promote.
pub const GREEN: u8 = 0;
/// The release is red: roll back.
pub const RED: u8 = 1;
/// Still yellow when the timeout passed.
pub const UNDECIDED: u8 = 2;
/// The server could not be reached, or did not know the release, until
/// the timeout passed.
pub const UNAVAILABLE: u8 = 3;
/// The deployment id names releases in several services or environments.
pub const AMBIGUOUS: u8 = 4;
/// The `--server` URL cannot be used (EX_USAGE).
pub const USAGE: u8 = 64;

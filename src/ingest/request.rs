//! What the gateway gives an accepted request: its id and the moment it was accepted.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

/// `__kdd_request_id`: 20 random lowercase ASCII letters (26^20 ≈ 2^94 values).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId([u8; RequestId::LEN]);

impl RequestId {
    pub const LEN: usize = 20;

    pub fn generate() -> RequestId {
        let mut rng = rand::rng();
        let mut id = [0u8; Self::LEN];
        for byte in &mut id {
            *byte = rng.random_range(b'a'..=b'z');
        }
        RequestId(id)
    }

    /// From stored bytes; `None` unless they are 20 lowercase letters.
    pub fn from_bytes(bytes: &[u8]) -> Option<RequestId> {
        let id: [u8; Self::LEN] = bytes.try_into().ok()?;
        id.iter()
            .all(u8::is_ascii_lowercase)
            .then_some(RequestId(id))
    }

    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a request id holds only ASCII letters")
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.as_str())
    }
}

/// `__kdd_request_unix_timestamp`: seconds since the epoch as an `f64`, the value both the answer
/// and the stored row carry. An f64 near 1.7e9 resolves about 0.24 µs, well under a millisecond,
/// and the log stores its exact bits, so the row cannot drift from the answer.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct AcceptedAt(f64);

impl AcceptedAt {
    pub fn now() -> AcceptedAt {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        AcceptedAt(since_epoch.as_nanos() as f64 / 1e9)
    }

    pub fn from_secs(secs: f64) -> AcceptedAt {
        AcceptedAt(secs)
    }

    pub fn secs(self) -> f64 {
        self.0
    }

    /// Whole seconds, for the `received_at DateTime` column that partitions and orders tables.
    pub fn whole_secs(self) -> u32 {
        self.0.clamp(0.0, u32::MAX as f64) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_twenty_lowercase_letters_and_differ() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_eq!(a.as_str().len(), 20);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_lowercase()));
        assert_ne!(a, b);
        assert_eq!(RequestId::from_bytes(a.as_bytes()), Some(a));
        assert_eq!(RequestId::from_bytes(b"ABCDEFGHIJKLMNOPQRST"), None);
    }

    #[test]
    fn timestamps_have_sub_millisecond_precision() {
        let t = AcceptedAt::now().secs();
        assert!(t > 1.6e9);
        // The spacing of f64 values at this magnitude is far below a millisecond.
        let next = f64::from_bits(t.to_bits() + 1);
        assert!(next - t < 1e-6);
    }
}

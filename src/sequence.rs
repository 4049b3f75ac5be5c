//! Kinesis sequence numbers.
//!
//! A sequence number is a decimal string of up to 129 digits (`0|[1-9]\d{0,128}`): it does not fit
//! an `i64`, so it is kept as text and compared numerically (shorter is smaller, then byte order).

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated Kinesis sequence number, ordered numerically.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SequenceNumber(String);

/// The text was not a Kinesis sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a Kinesis sequence number (expected 1 to 129 decimal digits, no leading zero)"
)]
pub struct InvalidSequenceNumber(pub String);

impl SequenceNumber {
    /// Parses and validates a sequence number.
    pub fn parse(text: &str) -> Result<Self, InvalidSequenceNumber> {
        let valid = match text.as_bytes() {
            [] => false,
            [b'0'] => true,
            [b'0', ..] => false,
            digits => digits.len() <= 129 && digits.iter().all(u8::is_ascii_digit),
        };
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidSequenceNumber(text.to_owned()))
        }
    }

    /// The decimal text, as Kinesis sends it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.as_bytes().cmp(other.0.as_bytes()))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SequenceNumber {
    type Error = InvalidSequenceNumber;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SequenceNumber> for String {
    fn from(value: SequenceNumber) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_what_kinesis_never_sends() {
        for bad in ["", "01", "-1", "1.5", "12a", &"9".repeat(130)] {
            assert!(SequenceNumber::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(SequenceNumber::parse("0").is_ok());
        assert!(SequenceNumber::parse(&"9".repeat(129)).is_ok());
    }

    #[test]
    fn orders_beyond_i64() {
        let small = SequenceNumber::parse("9223372036854775807").unwrap();
        let big = SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898")
            .unwrap();
        assert!(small < big);
    }

    proptest! {
        #[test]
        fn order_matches_u128_order(a in any::<u128>(), b in any::<u128>()) {
            let sa = SequenceNumber::parse(&a.to_string()).unwrap();
            let sb = SequenceNumber::parse(&b.to_string()).unwrap();
            prop_assert_eq!(sa.cmp(&sb), a.cmp(&b));
        }
    }
}

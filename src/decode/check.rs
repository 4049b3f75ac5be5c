//! Checks a record before arrow-json decodes it: UTF-8, exactly one JSON object, and every value of
//! an integer column an exact integer.
//!
//! arrow-json alone would truncate `1.5` or `"3.7"` in a BIGINT column to `1` and `3` without a
//! word. A value is never changed silently: such a record becomes a dead letter with the reason.

use std::borrow::Cow;
use std::fmt;

use arrow::datatypes::{DataType, SchemaRef};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The integer columns of a raw schema and their ranges.
#[derive(Debug, Clone, Default)]
pub(super) struct RecordCheck {
    integers: Vec<IntegerColumn>,
}

#[derive(Debug, Clone)]
struct IntegerColumn {
    name: String,
    sql_type: &'static str,
    min: i128,
    max: i128,
}

impl RecordCheck {
    /// The check for records of `schema`.
    pub fn new(schema: &SchemaRef) -> Self {
        let integers = schema
            .fields()
            .iter()
            .filter_map(|f| {
                let (sql_type, min, max) = integer_range(f.data_type())?;
                Some(IntegerColumn {
                    name: f.name().clone(),
                    sql_type,
                    min,
                    max,
                })
            })
            .collect();
        Self { integers }
    }

    /// `Ok` when the record is one JSON object whose integer columns hold exact integers;
    /// otherwise the reason it is a dead letter.
    pub fn check(&self, data: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(data).map_err(|e| format!("record is not UTF-8: {e}"))?;
        if !text.trim_start().starts_with('{') {
            return Err("record is not a JSON object".to_owned());
        }
        let mut deserializer = serde_json::Deserializer::from_str(text);
        deserializer
            .deserialize_map(ObjectVisitor { check: self })
            .and_then(|verdict| deserializer.end().map(|()| verdict))
            .map_err(|e| format!("malformed JSON: {e}"))?
    }

    fn column(&self, key: &str) -> Option<&IntegerColumn> {
        self.integers.iter().find(|c| c.name == key)
    }
}

fn integer_range(data_type: &DataType) -> Option<(&'static str, i128, i128)> {
    Some(match data_type {
        DataType::Int8 => ("TINYINT", i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => ("SMALLINT", i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => ("INT", i32::MIN.into(), i32::MAX.into()),
        DataType::Int64 => ("BIGINT", i64::MIN.into(), i64::MAX.into()),
        DataType::UInt8 => ("TINYINT UNSIGNED", 0, u8::MAX.into()),
        DataType::UInt16 => ("SMALLINT UNSIGNED", 0, u16::MAX.into()),
        DataType::UInt32 => ("INT UNSIGNED", 0, u32::MAX.into()),
        DataType::UInt64 => ("BIGINT UNSIGNED", 0, u64::MAX.into()),
        _ => return None,
    })
}

impl IntegerColumn {
    /// Checks one raw JSON value of this column.
    fn check(&self, raw: &RawValue) -> Result<(), String> {
        let text = raw.get();
        let literal: Cow<'_, str> = if text.starts_with('"') {
            match serde_json::from_str::<String>(text) {
                Ok(inner) => Cow::Owned(inner),
                Err(e) => return Err(format!("column `{}`: {e}", self.name)),
            }
        } else if text == "null" {
            return Ok(());
        } else {
            Cow::Borrowed(text)
        };
        let digits = literal.strip_prefix('-').unwrap_or(&literal);
        let exact = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && literal
                .parse::<i128>()
                .is_ok_and(|v| (self.min..=self.max).contains(&v));
        if exact {
            Ok(())
        } else {
            Err(format!(
                "column `{}` is {} but the record holds {text}, which is not an integer in its range; declare the column DOUBLE or VARCHAR in the raw schema to keep such values",
                self.name, self.sql_type
            ))
        }
    }
}

/// Walks the top-level object: integer columns are checked, every other value is skipped.
/// The outer `Result` is the JSON's syntax, the inner one the verdict on the values.
struct ObjectVisitor<'c> {
    check: &'c RecordCheck,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = Result<(), String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut verdict = Ok(());
        while let Some(Key(key)) = map.next_key()? {
            match self.check.column(&key) {
                Some(column) => {
                    let raw: &RawValue = map.next_value()?;
                    if verdict.is_ok() {
                        verdict = column.check(raw);
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(verdict)
    }
}

/// An object key, borrowed from the record unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn check() -> RecordCheck {
        RecordCheck::new(&Arc::new(Schema::new(vec![
            Field::new("ind", DataType::Int64, true),
            Field::new("age", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
        ])))
    }

    #[test]
    fn exact_integers_pass() {
        let c = check();
        for ok in [
            r#"{"ind": 1, "age": -3, "name": 1.5}"#,
            r#"{"ind": "42", "age": null}"#,
            r#"{"name": "x"}"#,
            r#"{"ind": 9223372036854775807}"#,
            r#"{"i\u006ed": 7}"#,
        ] {
            assert_eq!(c.check(ok.as_bytes()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn anything_that_would_be_changed_is_refused_with_the_reason() {
        let c = check();
        for (bad, said) in [
            (r#"{"ind": 1.5}"#, "1.5"),
            (r#"{"ind": "3.7"}"#, "\"3.7\""),
            (r#"{"ind": 1e3}"#, "1e3"),
            (r#"{"age": 3000000000}"#, "3000000000"),
            (r#"{"ind": 9223372036854775808}"#, "9223372036854775808"),
            (r#"{"ind": true}"#, "true"),
            (r#"{"ind": ""}"#, "\"\""),
            (r#"{"i\u006ed": 2.5}"#, "2.5"),
        ] {
            let err = c.check(bad.as_bytes()).unwrap_err();
            assert!(
                err.contains(said) && err.contains("not an integer"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn malformed_records_are_named() {
        let c = check();
        assert!(c.check(b"[1]").unwrap_err().contains("not a JSON object"));
        assert!(c.check(b"{\"ind\": 1").unwrap_err().contains("malformed"));
        assert!(c.check(b"{} {}").unwrap_err().contains("malformed"));
        assert!(c.check(b"\xff").unwrap_err().contains("UTF-8"));
    }
}

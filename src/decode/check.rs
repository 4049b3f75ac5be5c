//! Integer columns are decoded as text and checked here, so that a value is never changed on its
//! way in.
//!
//! arrow-json alone would truncate `1.5` or `"3.7"` in a BIGINT column to `1` and `3` without a
//! word. So the decoder reads integer columns as their JSON text (a number's literal, a string's
//! contents), and [`IntegerColumns::convert`] turns each text into the declared integer type when
//! it is an exact integer in the type's range. A row holding anything else is reported with the
//! reason and becomes a dead letter.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, StringArray, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

/// The top-level integer columns of a raw schema.
#[derive(Debug, Clone, Default)]
pub(super) struct IntegerColumns {
    columns: Vec<IntegerColumn>,
}

#[derive(Debug, Clone)]
struct IntegerColumn {
    index: usize,
    name: String,
    data_type: DataType,
    sql_type: &'static str,
    min: i128,
    max: i128,
}

/// A row that holds a value its integer column cannot take, and why.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct BadRow {
    /// The row's index in the decoded batch.
    pub row: usize,
    /// The reason, naming the column and the value.
    pub reason: String,
}

impl IntegerColumns {
    /// The integer columns of `schema`.
    pub fn new(schema: &Schema) -> Self {
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .filter_map(|(index, f)| {
                let (sql_type, min, max) = integer_range(f.data_type())?;
                Some(IntegerColumn {
                    index,
                    name: f.name().clone(),
                    data_type: f.data_type().clone(),
                    sql_type,
                    min,
                    max,
                })
            })
            .collect();
        Self { columns }
    }

    /// `schema` with its integer columns as text: the schema arrow-json decodes into.
    pub fn as_text(&self, schema: &Schema) -> SchemaRef {
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        for column in &self.columns {
            fields[column.index] = fields[column.index].clone().with_data_type(DataType::Utf8);
        }
        Arc::new(Schema::new(fields))
    }

    /// Turns the text of every integer column in `columns` (decoded with [`Self::as_text`]) into
    /// the declared type. Returns the rows that hold something else, in row order, each once.
    /// Their values are NULL in the converted columns.
    pub fn convert(&self, columns: &mut [ArrayRef]) -> Result<Vec<BadRow>, ArrowError> {
        let mut bad: Vec<BadRow> = Vec::new();
        for column in &self.columns {
            let text = columns[column.index]
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| {
                    ArrowError::InvalidArgumentError(format!(
                        "column `{}` was not decoded as text",
                        column.name
                    ))
                })?;
            let (converted, errors) = column.convert(text)?;
            columns[column.index] = converted;
            bad.extend(errors);
        }
        bad.sort_by_key(|b| b.row);
        bad.dedup_by_key(|b| b.row);
        Ok(bad)
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
    /// The column in its declared type, and the rows whose text is not an integer in its range.
    fn convert(&self, text: &StringArray) -> Result<(ArrayRef, Vec<BadRow>), ArrowError> {
        let mut bad = Vec::new();
        let values: Vec<Option<i128>> = text
            .iter()
            .enumerate()
            .map(|(row, value)| {
                let value = value?;
                let exact = self.exact(value);
                if exact.is_none() {
                    bad.push(BadRow {
                        row,
                        reason: self.refusal(value),
                    });
                }
                exact
            })
            .collect();
        // Every value is in the declared type's range, so both casts below are exact.
        let wide: ArrayRef = if self.min < 0 {
            Arc::new(Int64Array::from_iter(
                values.iter().map(|v| v.and_then(|v| i64::try_from(v).ok())),
            ))
        } else {
            Arc::new(UInt64Array::from_iter(
                values.iter().map(|v| v.and_then(|v| u64::try_from(v).ok())),
            ))
        };
        Ok((cast(&wide, &self.data_type)?, bad))
    }

    /// The value when `text` is an integer (optional `-`, then digits only) in the column's range.
    fn exact(&self, text: &str) -> Option<i128> {
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse::<i128>()
            .ok()
            .filter(|v| (self.min..=self.max).contains(v))
    }

    fn refusal(&self, value: &str) -> String {
        format!(
            "column `{}` is {} but the record holds `{value}`, which is not an integer in its range; declare the column DOUBLE or VARCHAR in the raw schema to keep such values",
            self.name, self.sql_type
        )
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int8Array, Int32Array, UInt64Array};

    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("ind", DataType::Int64, true),
            Field::new("age", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("small", DataType::Int8, true),
            Field::new("count", DataType::UInt64, true),
        ])
    }

    fn text(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn integer_columns_are_decoded_as_text_and_others_are_kept() {
        let schema = schema();
        let text = IntegerColumns::new(&schema).as_text(&schema);
        let types: Vec<_> = text
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(types, vec![DataType::Utf8; 5]);
        assert_eq!(text.field(2).name(), "name");
    }

    #[test]
    fn exact_integers_are_converted_to_the_declared_type() {
        let integers = IntegerColumns::new(&schema());
        let mut columns = vec![
            text(&[Some("1"), Some("-9223372036854775808"), None]),
            text(&[Some("-3"), Some("2147483647"), Some("007")]),
            text(&[Some("x"), Some("1.5"), None]),
            text(&[Some("-128"), Some("127"), None]),
            text(&[Some("18446744073709551615"), Some("0"), None]),
        ];
        assert_eq!(integers.convert(&mut columns).unwrap(), []);
        let ind = columns[0].as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(
            ind.iter().collect::<Vec<_>>(),
            [Some(1), Some(i64::MIN), None]
        );
        let age = columns[1].as_any().downcast_ref::<Int32Array>().unwrap();
        assert_eq!(
            age.iter().collect::<Vec<_>>(),
            [Some(-3), Some(i32::MAX), Some(7)]
        );
        let small = columns[3].as_any().downcast_ref::<Int8Array>().unwrap();
        assert_eq!(
            small.iter().collect::<Vec<_>>(),
            [Some(-128), Some(127), None]
        );
        let count = columns[4].as_any().downcast_ref::<UInt64Array>().unwrap();
        assert_eq!(count.value(0), u64::MAX);
        assert_eq!(columns[2].data_type(), &DataType::Utf8, "text stays text");
    }

    #[test]
    fn anything_that_would_be_changed_is_refused_with_the_reason() {
        let integers = IntegerColumns::new(&schema());
        let refused = [
            "1.5",
            "1e3",
            "9223372036854775808",
            "true",
            "",
            "+5",
            "-",
            " 1",
            "3000000000",
        ];
        for value in refused {
            // `age` is INT: 3000000000 is out of its range; the rest are not integers at all.
            let mut columns = vec![
                text(&[Some("1"), Some(value)]),
                text(&[Some("1"), Some(value)]),
                text(&[None, None]),
                text(&[None, None]),
                text(&[None, None]),
            ];
            let bad = integers.convert(&mut columns).unwrap();
            assert_eq!(bad.len(), 1, "{value:?}: one row, reported once: {bad:?}");
            assert_eq!(bad[0].row, 1);
            let reason = &bad[0].reason;
            assert!(
                reason.contains(&format!("`{value}`")) && reason.contains("not an integer"),
                "{value:?}: {reason}"
            );
            assert!(columns[1].is_null(1), "{value:?}: a refused value is NULL");
        }
    }

    #[test]
    fn a_range_is_the_declared_types() {
        let integers = IntegerColumns::new(&schema());
        for (small, fits) in [("-129", false), ("128", false), ("-128", true)] {
            let mut columns = vec![
                text(&[None]),
                text(&[None]),
                text(&[None]),
                text(&[Some(small)]),
                text(&[Some("-1")]),
            ];
            let bad = integers.convert(&mut columns).unwrap();
            // -1 never fits the unsigned column.
            assert_eq!(bad.len(), 1);
            let names_small = bad[0].reason.contains("`small`");
            assert_eq!(names_small, !fits, "{small}: {bad:?}");
        }
    }
}

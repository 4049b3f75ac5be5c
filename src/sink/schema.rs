//! Maps the cleaning SQL's Arrow types onto types a Delta table stores.
//!
//! Delta has no nanosecond or zone-less `timestamp` without extra table features: timestamps become
//! microsecond UTC (Delta `timestamp`). View types become plain ones. Every column is nullable, so a
//! later batch with a NULL never conflicts with the table created from the first one. The same
//! holds inside lists, structs and maps (a map's keys stay non-null).

use std::sync::Arc;

use arrow::array::{RecordBatch, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

/// The Delta-storable version of a schema.
pub fn delta_compatible(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema.fields().iter().map(storable_field).collect();
    Arc::new(Schema::new(fields))
}

fn storable_field(field: &FieldRef) -> Field {
    Field::new(field.name(), storable_type(field.data_type()), true)
}

fn storable_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => DataType::Int32,
        DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::ListView(item)
        | DataType::FixedSizeList(item, _) => DataType::List(Arc::new(storable_field(item))),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(storable_field).collect()),
        // Keys stay non-null (Delta and Arrow require it); values are stored as a column is.
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(pair) if pair.len() == 2 => {
                let key = Field::new(pair[0].name(), storable_type(pair[0].data_type()), false);
                let pair = DataType::Struct(vec![key, storable_field(&pair[1])].into());
                DataType::Map(Arc::new(Field::new(entries.name(), pair, false)), false)
            }
            _ => data_type.clone(),
        },
        other => other.clone(),
    }
}

/// Casts a batch to `schema`, taking its columns by name; a column of `schema` the batch lacks
/// (one the SQL no longer produces) is NULL, and one the batch has beyond `schema` is an error.
/// Fails rather than lose a value.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema() == *schema {
        return Ok(batch.clone());
    }
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    if let Some(extra) = batch
        .schema()
        .fields()
        .iter()
        .find(|f| schema.column_with_name(f.name()).is_none())
    {
        return Err(ArrowError::SchemaError(format!(
            "the table has no column `{}` for the cleaned rows",
            extra.name()
        )));
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => cast_with_options(column, field.data_type(), &options),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_become_utc_microseconds_and_lists_nullable() {
        let schema = Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
            Field::new(
                "c",
                DataType::List(Arc::new(Field::new("item", DataType::Float64, false))),
                false,
            ),
            Field::new("s", DataType::Utf8View, false),
        ]);
        let out = delta_compatible(&schema);
        assert_eq!(
            out.field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(out.fields().iter().all(|f| f.is_nullable()));
        let DataType::List(item) = out.field(1).data_type() else {
            panic!("not a list")
        };
        assert!(item.is_nullable());
        assert_eq!(out.field(2).data_type(), &DataType::Utf8);
    }
}

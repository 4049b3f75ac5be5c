//! Schema evolution on write: what the table's schema becomes when the cleaning SQL's output
//! changes.
//!
//! - A column the SQL adds is added to the table, at the end, in the commit of the first batch
//!   that carries it; older rows read it as NULL.
//! - A column the SQL no longer produces stays in the table, NULL in new rows.
//! - A column whose type changed cannot be stored in place: nothing is written, and the error
//!   names the columns and the ways forward.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// One column whose type the SQL changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeChange {
    /// The column.
    pub column: String,
    /// Its type in the table.
    pub table: String,
    /// The type the SQL produces now.
    pub sql: String,
}

/// The schema rows of `sql` (already Delta-storable) are written with into a table of `table`:
/// the table's columns in its order, then the SQL's new ones. Fails with every column whose type
/// changed, whose name differs from the table's only by case, or that has no type (`NULL AS x`).
pub fn target_schema(table: &SchemaRef, sql: &SchemaRef) -> Result<SchemaRef, Vec<TypeChange>> {
    let changed: Vec<TypeChange> = sql
        .fields()
        .iter()
        .filter_map(|wanted| {
            let name = wanted.name();
            if wanted.data_type() == &DataType::Null {
                // `NULL AS x`: Delta has no such type, and x could never get one later.
                return Some(TypeChange {
                    column: name.clone(),
                    table: "(none yet)".into(),
                    sql: "untyped NULL (write CAST(NULL AS VARCHAR), or the type it will hold)"
                        .into(),
                });
            }
            // Delta column names are case-insensitive: `Title` is `title`.
            let existing = table
                .fields()
                .iter()
                .find(|f| f.name().eq_ignore_ascii_case(name))?;
            if existing.name() != name {
                return Some(TypeChange {
                    column: name.clone(),
                    table: format!("named `{}`", existing.name()),
                    sql: format!("named `{name}` (Delta names ignore case: use the table's)"),
                });
            }
            (!types_match(existing.data_type(), wanted.data_type())).then(|| TypeChange {
                column: name.clone(),
                table: existing.data_type().to_string(),
                sql: wanted.data_type().to_string(),
            })
        })
        .collect();
    if !changed.is_empty() {
        return Err(changed);
    }
    let added: Vec<Field> = sql
        .fields()
        .iter()
        .filter(|f| table.column_with_name(f.name()).is_none())
        .map(|f| f.as_ref().clone())
        .collect();
    if added.is_empty() {
        return Ok(Arc::clone(table));
    }
    let fields: Vec<Field> = table
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .chain(added)
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// Types equal for Delta, at any depth: a list's item name (Delta's `element`, Arrow's `item`) and
/// the nullability of nested fields are the writer's business; struct fields must match by name,
/// in order, and type.
fn types_match(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::List(x), DataType::List(y)) | (DataType::Map(x, _), DataType::Map(y, _)) => {
            types_match(x.data_type(), y.data_type())
        }
        (DataType::Struct(x), DataType::Struct(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(f, g)| f.name() == g.name() && types_match(f.data_type(), g.data_type()))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(columns: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(
            columns
                .iter()
                .map(|(name, t)| Field::new(*name, t.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn new_columns_go_last_dropped_ones_stay_and_type_changes_are_named() {
        let table = schema(&[("ind", DataType::Int64), ("title", DataType::Utf8)]);
        let same = target_schema(&table, &table).unwrap();
        assert_eq!(same, table);
        // Another order, a new column, a dropped one.
        let sql = schema(&[("length", DataType::Int32), ("ind", DataType::Int64)]);
        let target = target_schema(&table, &sql).unwrap();
        let names: Vec<&str> = target.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["ind", "title", "length"]);
        let sql = schema(&[("ind", DataType::Utf8), ("title", DataType::Int64)]);
        let changed = target_schema(&table, &sql).unwrap_err();
        assert_eq!(
            changed,
            [
                TypeChange {
                    column: "ind".into(),
                    table: "Int64".into(),
                    sql: "Utf8".into()
                },
                TypeChange {
                    column: "title".into(),
                    table: "Utf8".into(),
                    sql: "Int64".into()
                }
            ]
        );
        // A name that differs only by case, and an untyped NULL, are refused too.
        let sql = schema(&[("Title", DataType::Utf8), ("note", DataType::Null)]);
        let refused: Vec<String> = target_schema(&table, &sql)
            .unwrap_err()
            .into_iter()
            .map(|c| c.column)
            .collect();
        assert_eq!(refused, ["Title", "note"]);
    }
}

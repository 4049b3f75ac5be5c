//! Writes the tables as files (JSON lines or CSV), one file per table, and reads JSON lines back.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    Dataset, DatasetError, GEO_COLUMNS, GeoRow, PIN_COLUMNS, PinRow, Post, TABLE_NAMES,
    USER_COLUMNS, UserRow,
};

/// A file format for `kinesis-delta dataset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// One JSON object per line (`<table>.jsonl`).
    Jsonl,
    /// RFC 4180 CSV with a header (`<table>.csv`).
    Csv,
}

/// Writes the three tables into `dir`; returns the files written.
pub fn write_files(
    dataset: &Dataset,
    dir: &Path,
    format: FileFormat,
) -> Result<Vec<PathBuf>, DatasetError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| DatasetError::Io {
            path: path.clone(),
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ext = match format {
        FileFormat::Jsonl => "jsonl",
        FileFormat::Csv => "csv",
    };
    let paths: Vec<PathBuf> = TABLE_NAMES
        .iter()
        .map(|t| dir.join(format!("{t}.{ext}")))
        .collect();
    let mut writers = Vec::with_capacity(3);
    for path in &paths {
        writers.push(BufWriter::new(
            std::fs::File::create(path).map_err(io(path))?,
        ));
    }
    let [pin, geo, user] = &mut writers[..] else {
        unreachable!("three tables")
    };
    if format == FileFormat::Csv {
        header(pin, &PIN_COLUMNS).map_err(io(&paths[0]))?;
        header(geo, &GEO_COLUMNS).map_err(io(&paths[1]))?;
        header(user, &USER_COLUMNS).map_err(io(&paths[2]))?;
    }
    for post in dataset.posts() {
        write_row(pin, &post.pin, &PIN_COLUMNS, format).map_err(io(&paths[0]))?;
        write_row(geo, &post.geo, &GEO_COLUMNS, format).map_err(io(&paths[1]))?;
        write_row(user, &post.user, &USER_COLUMNS, format).map_err(io(&paths[2]))?;
    }
    for (writer, path) in writers.iter_mut().zip(&paths) {
        writer.flush().map_err(io(path))?;
    }
    Ok(paths)
}

fn header(out: &mut impl Write, columns: &[&str]) -> std::io::Result<()> {
    writeln!(out, "{}", columns.join(","))
}

fn write_row<T: Serialize>(
    out: &mut impl Write,
    row: &T,
    columns: &[&str],
    format: FileFormat,
) -> std::io::Result<()> {
    match format {
        FileFormat::Jsonl => {
            serde_json::to_writer(&mut *out, row).map_err(std::io::Error::other)?;
            writeln!(out)
        }
        FileFormat::Csv => {
            let value = serde_json::to_value(row).map_err(std::io::Error::other)?;
            let fields: Vec<String> = columns.iter().map(|c| csv_field(&value[*c])).collect();
            writeln!(out, "{}", fields.join(","))
        }
    }
}

fn csv_field(value: &serde_json::Value) -> String {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ') {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// Reads the three `<table>.jsonl` files of `dir` back into posts (row `k` of each table together).
pub fn read_json_lines(dir: &Path) -> Result<Vec<Post>, DatasetError> {
    fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, DatasetError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| DatasetError::Io {
            path: shown.clone(),
            source,
        })?;
        let mut rows = Vec::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| DatasetError::Io {
                path: shown.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            rows.push(
                serde_json::from_str(&line).map_err(|e| DatasetError::Parse {
                    path: shown.clone(),
                    line: i + 1,
                    message: e.to_string(),
                })?,
            );
        }
        Ok(rows)
    }
    let pins: Vec<PinRow> = read(&dir.join("pinterest_data.jsonl"))?;
    let geos: Vec<GeoRow> = read(&dir.join("geolocation_data.jsonl"))?;
    let users: Vec<UserRow> = read(&dir.join("user_data.jsonl"))?;
    if pins.len() != geos.len() || pins.len() != users.len() {
        return Err(DatasetError::Invalid(format!(
            "{}: the three tables have {}, {} and {} rows; they must have as many",
            dir.display(),
            pins.len(),
            geos.len(),
            users.len()
        )));
    }
    Ok(pins
        .into_iter()
        .zip(geos)
        .zip(users)
        .map(|((pin, geo), user)| Post { pin, geo, user })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::DatasetSpec;

    #[test]
    fn json_lines_round_trip_and_csv_quotes_what_it_must() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = Dataset::new(DatasetSpec {
            rows: 300,
            ..DatasetSpec::default()
        });
        write_files(&dataset, dir.path(), FileFormat::Jsonl).unwrap();
        assert_eq!(
            read_json_lines(dir.path()).unwrap(),
            dataset.posts().collect::<Vec<_>>()
        );
        let files = write_files(&dataset, dir.path(), FileFormat::Csv).unwrap();
        let pin = std::fs::read_to_string(&files[0]).unwrap();
        assert!(
            pin.starts_with(
                "index,unique_id,title,description,poster_name,follower_count,tag_list,"
            )
        );
        assert_eq!(pin.lines().count(), 301);
        assert!(
            pin.contains("\"N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e\""),
            "commas quoted"
        );
        assert_eq!(
            csv_field(&serde_json::json!("say \"hi\"")),
            "\"say \"\"hi\"\"\""
        );
    }
}

//! What a record's data holds before it is decoded: gzip is undone wherever it is found (by its
//! magic bytes), then the stream's format says how many JSON objects the data is: one (`json`),
//! one per line (`json_lines`), or one per log event of a CloudWatch Logs subscription envelope
//! (`cloudwatch_logs`).

use std::borrow::Cow;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::config::PayloadFormat;

/// The first bytes of gzip data.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The most a record may hold once unzipped: more is a dead letter (a record is at most 1 MiB, so
/// this is far beyond any real log envelope).
const MAX_UNZIPPED: u64 = 64 << 20;

/// Whether `data` is gzip-compressed.
pub fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&GZIP_MAGIC)
}

/// The JSON objects a record's data holds, as text (`Ok(vec![])`: nothing to keep, as for a
/// CloudWatch Logs control message), or why the data does not fit the format.
pub fn objects(data: &[u8], format: PayloadFormat) -> Result<Vec<Vec<u8>>, String> {
    let data: Cow<'_, [u8]> = if is_gzip(data) {
        Cow::Owned(gunzip(data)?)
    } else {
        Cow::Borrowed(data)
    };
    match format {
        PayloadFormat::Json => Ok(vec![data.into_owned()]),
        PayloadFormat::JsonLines => Ok(data
            .split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(<[u8]>::to_vec)
            .collect()),
        PayloadFormat::CloudwatchLogs => log_events(&data),
    }
}

fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .take(MAX_UNZIPPED + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("record is not valid gzip: {e}"))?;
    if out.len() as u64 > MAX_UNZIPPED {
        return Err(format!(
            "record unzips to more than {} MiB",
            MAX_UNZIPPED >> 20
        ));
    }
    Ok(out)
}

/// A CloudWatch Logs subscription envelope.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    message_type: String,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    log_group: Option<String>,
    #[serde(default)]
    log_stream: Option<String>,
    #[serde(default)]
    subscription_filters: Vec<String>,
    #[serde(default)]
    log_events: Vec<LogEvent>,
}

#[derive(Deserialize)]
struct LogEvent {
    id: String,
    timestamp: i64,
    message: String,
}

/// One row of a log event: the event with its envelope's fields.
#[derive(Serialize)]
struct LogRow<'a> {
    owner: Option<&'a str>,
    log_group: Option<&'a str>,
    log_stream: Option<&'a str>,
    subscription_filters: &'a [String],
    id: &'a str,
    timestamp: i64,
    message: &'a str,
}

fn log_events(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let envelope: Envelope = serde_json::from_slice(data)
        .map_err(|e| format!("record is not a CloudWatch Logs envelope: {e}"))?;
    match envelope.message_type.as_str() {
        // CloudWatch checks that the destination is reachable with these: no log data.
        "CONTROL_MESSAGE" => Ok(Vec::new()),
        "DATA_MESSAGE" => envelope
            .log_events
            .iter()
            .map(|event| {
                serde_json::to_vec(&LogRow {
                    owner: envelope.owner.as_deref(),
                    log_group: envelope.log_group.as_deref(),
                    log_stream: envelope.log_stream.as_deref(),
                    subscription_filters: &envelope.subscription_filters,
                    id: &event.id,
                    timestamp: event.timestamp,
                    message: &event.message,
                })
                .map_err(|e| e.to_string())
            })
            .collect(),
        other => Err(format!(
            "a CloudWatch Logs envelope of messageType `{other}` (DATA_MESSAGE or CONTROL_MESSAGE expected)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::objects;
    use crate::config::PayloadFormat;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn texts(objects: Vec<Vec<u8>>) -> Vec<String> {
        objects
            .into_iter()
            .map(|o| String::from_utf8(o).unwrap())
            .collect()
    }

    #[test]
    fn a_cloudwatch_logs_envelope_is_one_row_per_event_with_the_envelope() {
        let envelope = include_bytes!("../../tests/fixtures/payloads/cloudwatch_logs.json");
        let expected = include_str!("../../tests/fixtures/payloads/cloudwatch_logs.expected.jsonl");
        let rows = texts(objects(&gzip(envelope), PayloadFormat::CloudwatchLogs).unwrap());
        assert_eq!(rows, expected.lines().collect::<Vec<_>>());
        let control = include_bytes!("../../tests/fixtures/payloads/cloudwatch_control.json");
        assert!(
            objects(&gzip(control), PayloadFormat::CloudwatchLogs)
                .unwrap()
                .is_empty(),
            "a control message is no row"
        );
        let not_logs = objects(&gzip(br#"{"index": 1}"#), PayloadFormat::CloudwatchLogs);
        assert!(
            not_logs
                .unwrap_err()
                .contains("not a CloudWatch Logs envelope")
        );
    }

    #[test]
    fn json_lines_are_one_row_each_zipped_or_not() {
        let lines = include_bytes!("../../tests/fixtures/payloads/lines.jsonl");
        let expected: Vec<&str> = std::str::from_utf8(lines)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            texts(objects(lines, PayloadFormat::JsonLines).unwrap()),
            expected
        );
        assert_eq!(
            texts(objects(&gzip(lines), PayloadFormat::JsonLines).unwrap()),
            expected
        );
    }

    #[test]
    fn gzip_is_undone_for_one_object_and_bad_gzip_says_so() {
        let one = br#"{"index": 7}"#;
        assert_eq!(
            objects(&gzip(one), PayloadFormat::Json).unwrap(),
            vec![one.to_vec()]
        );
        let mut cut = gzip(one);
        cut.truncate(12);
        let err = objects(&cut, PayloadFormat::Json).unwrap_err();
        assert!(err.contains("not valid gzip"), "{err}");
    }
}

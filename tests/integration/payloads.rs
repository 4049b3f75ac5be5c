//! Payload formats through the engine: a stream whose records are gzipped JSON lines (ten rows a
//! record) lands each row once beside streams of plain JSON, across a restart.

use std::io::Write;

use crate::end_to_end::assert_exactly_once;
use crate::support::data::{records, triples};
use crate::support::servers::{Kind, TestKinesis};
use crate::support::{
    create_streams, edit_file, load_pipeline, put_records, run_available_now, write_config,
};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzipped_json_lines_are_one_row_per_line() {
    let server = TestKinesis::start(Kind::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), server.endpoint(), "lines", 100_000);
    edit_file(
        &config,
        "table = \"pin\"\n",
        "table = \"pin\"\nformat = \"json_lines\"\n",
    );
    let pipeline = load_pipeline(&config);
    assert_eq!(
        pipeline.streams[0].format,
        kinesis_delta::config::PayloadFormat::JsonLines
    );
    let client = server.client().await;
    create_streams(&client, &pipeline, 2).await;
    for (from, count) in [(0, 100), (100, 60)] {
        let batch = triples(from, count);
        let pins: Vec<(String, Vec<u8>)> = records(&batch, |t| &t.pin)
            .chunks(10)
            .map(|lines| {
                let joined: Vec<u8> = lines
                    .iter()
                    .flat_map(|(_, data)| data.iter().copied().chain([b'\n']))
                    .collect();
                (lines[0].0.clone(), gzip(&joined))
            })
            .collect();
        put_records(&client, &pipeline.streams[0].stream, &pins).await;
        for (spec, pick) in pipeline.streams[1..].iter().zip([
            (|t| &t.geo) as fn(&crate::support::data::Triple) -> &serde_json::Value,
            |t| &t.user,
        ]) {
            put_records(&client, &spec.stream, &records(&batch, pick)).await;
        }
        run_available_now(&pipeline).await;
    }
    assert_exactly_once(&pipeline, 160).await;
}

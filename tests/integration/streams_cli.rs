//! `kinesis-delta streams` against kinesis-mock, through the binary as a user runs it.

use std::process::Output;

use serde_json::Value;

use crate::support::kinesis_mock::KinesisMock;

fn streams(endpoint: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kinesis-delta"))
        .args(["streams", "--endpoint-url", endpoint, "--user-id", "cli"])
        .args(args)
        .env(
            "KINESIS_DELTA_TABLE_ROOT",
            std::env::temp_dir().join("kinesis-delta-cli-tables"),
        )
        .output()
        .unwrap()
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_and_every_action_answers_people_and_scripts() {
    let server = KinesisMock::start().await;
    let endpoint = server.endpoint.clone();
    tokio::task::spawn_blocking(move || {
        let created = json(&streams(&endpoint, &["create", "--shards", "2", "--json"]));
        let outcomes: Vec<(&str, &str)> = created
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["stream"].as_str().unwrap(),
                    v["outcome"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                ("streaming-cli-pin", "created"),
                ("streaming-cli-geo", "created"),
                ("streaming-cli-user", "created")
            ]
        );
        let again = streams(&endpoint, &["create"]);
        assert!(again.status.success());
        let text = String::from_utf8_lossy(&again.stdout);
        assert_eq!(text.matches("exists already, ACTIVE").count(), 3, "{text}");

        let listed = json(&streams(&endpoint, &["list", "--json"]));
        assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
        let described = json(&streams(
            &endpoint,
            &["describe", "streaming-cli-geo", "--json"],
        ));
        assert_eq!(described["StreamStatus"], "ACTIVE");
        assert_eq!(described["Shards"].as_array().unwrap().len(), 2);
        let human = streams(&endpoint, &["describe", "streaming-cli-geo"]);
        assert!(String::from_utf8_lossy(&human.stdout).contains("2 shards"));

        let deleted = streams(&endpoint, &["delete", "streaming-cli-user"]);
        assert!(deleted.status.success());
        let missing = streams(&endpoint, &["describe", "no-such-stream"]);
        assert!(!missing.status.success());
        assert!(String::from_utf8_lossy(&missing.stderr).contains("ResourceNotFoundException"));
    })
    .await
    .unwrap();
}

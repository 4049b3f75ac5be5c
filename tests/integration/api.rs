//! The REST API: handler tests through the router without a socket (`oneshot`), then every route
//! through a real socket against kinesis-mock, including a client sending the seed's exact bodies.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kinesis_delta::api::{self, ApiSettings, OPENAPI};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::support::kinesis_mock::KinesisMock;
use crate::support::{client, create_stream, read_stream};

/// Sends one request through the router, without a socket.
async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An app whose Kinesis endpoint answers nothing (nothing listens on port 9).
async fn offline_app(settings: &ApiSettings) -> axum::Router {
    api::app(client("http://127.0.0.1:9").await, settings)
}

#[tokio::test]
async fn bad_input_is_a_4xx_with_a_message_and_never_reaches_kinesis() {
    let app = offline_app(&ApiSettings {
        max_body_bytes: 64 * 1024,
        ..ApiSettings::default()
    })
    .await;
    let record = "/streams/s/record";
    let cases: Vec<(&str, &str, Option<String>, StatusCode, &str)> = vec![
        (
            "PUT",
            record,
            Some("{not json".into()),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            "PUT",
            record,
            Some(r#"{"PartitionKey": "k"}"#.into()),
            StatusCode::BAD_REQUEST,
            "Data is required",
        ),
        (
            "PUT",
            record,
            Some(r#"{"Data": {}}"#.into()),
            StatusCode::BAD_REQUEST,
            "PartitionKey is required",
        ),
        (
            "PUT",
            record,
            Some(r#"{"Data": {}, "PartitionKey": ""}"#.into()),
            StatusCode::BAD_REQUEST,
            "must not be empty",
        ),
        (
            "PUT",
            record,
            Some(r#"{"Data": {}, "PartitionKey": 5}"#.into()),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            "PUT",
            record,
            Some(format!(
                r#"{{"Data": {{}}, "PartitionKey": "{}"}}"#,
                "k".repeat(257)
            )),
            StatusCode::BAD_REQUEST,
            "256",
        ),
        (
            "PUT",
            "/streams/bad%20name/record",
            Some(r#"{"Data": 1, "PartitionKey": "k"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid stream name",
        ),
        (
            "PUT",
            "/streams/aaaaaaaaaa",
            Some("{}".into()),
            StatusCode::METHOD_NOT_ALLOWED,
            "",
        ),
        (
            "PUT",
            record,
            Some(format!(
                r#"{{"Data": "{}", "PartitionKey": "k"}}"#,
                "x".repeat(70 * 1024)
            )),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
        ),
        (
            "PUT",
            "/streams/s/records",
            Some(r#"{"recs": []}"#.into()),
            StatusCode::BAD_REQUEST,
            "records is required",
        ),
        (
            "PUT",
            "/streams/s/records",
            Some(r#"{"records": []}"#.into()),
            StatusCode::BAD_REQUEST,
            "at least one",
        ),
        (
            "PUT",
            "/streams/s/records",
            Some(r#"{"records": [{"data": 1}]}"#.into()),
            StatusCode::BAD_REQUEST,
            "records[0].partition-key is required",
        ),
        (
            "PUT",
            "/streams/s/records",
            Some(r#"{"records": [{"partition-key": "k"}]}"#.into()),
            StatusCode::BAD_REQUEST,
            "records[0].data is required",
        ),
        (
            "POST",
            "/streams/s",
            Some(r#"{"ShardCount": -1}"#.into()),
            StatusCode::BAD_REQUEST,
            "positive integer",
        ),
        (
            "POST",
            "/streams/s",
            Some(r#"{"ShardCount": "two"}"#.into()),
            StatusCode::BAD_REQUEST,
            "positive integer",
        ),
    ];
    let long_name = format!("/streams/{}", "a".repeat(129));
    let mut cases = cases;
    cases.push((
        "GET",
        &long_name,
        None,
        StatusCode::BAD_REQUEST,
        "invalid stream name",
    ));
    for (method, uri, body, status, message) in &cases {
        let (got, json) = call(&app, method, uri, body.as_deref(), None).await;
        assert_eq!(got, *status, "{method} {uri}: {json}");
        if !message.is_empty() {
            let text = json["message"].as_str().unwrap_or_default();
            assert!(
                text.contains(message),
                "{method} {uri}: {text:?} lacks {message:?}"
            );
        }
    }
    let many: Vec<Value> = (0..501)
        .map(|i| json!({"data": i, "partition-key": "k"}))
        .collect();
    let (status, json) = call(
        &app,
        "PUT",
        "/streams/s/records",
        Some(&json!({"records": many}).to_string()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
    assert!(json["message"].as_str().unwrap().contains("at most 500"));
}

#[tokio::test]
async fn kinesis_unreachable_is_a_503_not_a_crash() {
    let app = offline_app(&ApiSettings::default()).await;
    let (status, json) = call(
        &app,
        "PUT",
        "/streams/s/record",
        Some(r#"{"Data": 1, "PartitionKey": "k"}"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert!(json["message"].is_string());
}

#[tokio::test]
async fn the_api_key_is_required_when_configured() {
    let app = offline_app(&ApiSettings {
        api_key: Some("s3cret".into()),
        ..ApiSettings::default()
    })
    .await;
    for key in [None, Some("wrong"), Some("s3cre")] {
        let (status, json) = call(&app, "GET", "/streams", None, key).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{key:?}: {json}");
    }
    // With the key the request reaches Kinesis (which is offline here: 503, not 403).
    let (status, _) = call(&app, "GET", "/streams", None, Some("s3cret")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, json) = call(&app, "GET", "/openapi.json", None, Some("s3cret")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["openapi"], "3.0.3");
}

/// Serves the API on a loopback socket in front of `endpoint`.
async fn serve(endpoint: &str, cancel: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = api::app(client(endpoint).await, &ApiSettings::default());
    tokio::spawn(api::serve(listener, app, cancel.clone()));
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_against_a_real_kinesis_through_a_socket() {
    let server = KinesisMock::start().await;
    let cancel = CancellationToken::new();
    let url = serve(&server.endpoint, &cancel).await;
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{url}{path}"))
            .header("content-type", "application/json");
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    // POST with the seed's body and with none (→ 5 shards).
    assert_eq!(
        send(
            reqwest::Method::POST,
            "/streams/api-one",
            Some(json!({"ShardCount": 2}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        send(reqwest::Method::POST, "/streams/api-five", None)
            .await
            .0,
        200
    );
    let kinesis = client(&server.endpoint).await;
    crate::support::wait_active(&kinesis, "api-one").await;
    crate::support::wait_active(&kinesis, "api-five").await;
    let (status, again) = send(
        reqwest::Method::POST,
        "/streams/api-one",
        Some(json!({"ShardCount": 2})),
    )
    .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["__type"], "ResourceInUseException");

    let (status, list) = send(reqwest::Method::GET, "/streams", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["StreamNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"api-one") && names.contains(&"api-five"),
        "{list}"
    );

    let (status, described) = send(reqwest::Method::GET, "/streams/api-five", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        described["StreamDescription"]["Shards"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(described["StreamDescription"]["StreamStatus"], "ACTIVE");
    let (status, missing) = send(reqwest::Method::GET, "/streams/no-such-stream", None).await;
    assert_eq!(
        (status, missing["__type"].as_str()),
        (404, Some("ResourceNotFoundException"))
    );

    // PutRecord: the record is the JSON text of Data, with the given partition key.
    let (status, put) = send(
        reqwest::Method::PUT,
        "/streams/api-one/record",
        Some(json!({"StreamName": "api-one", "Data": {"index": 1, "title": "Τίτλος"}, "PartitionKey": "pk-1"})),
    )
    .await;
    assert_eq!(status, 200, "{put}");
    assert!(
        put["SequenceNumber"].is_string() && put["ShardId"].is_string(),
        "{put}"
    );
    let (status, _) = send(
        reqwest::Method::PUT,
        "/streams/no-such-stream/record",
        Some(json!({"Data": 1, "PartitionKey": "k"})),
    )
    .await;
    assert_eq!(status, 404);

    // PutRecords with mixed data types.
    let (status, batch) = send(
        reqwest::Method::PUT,
        "/streams/api-one/records",
        Some(json!({"records": [{"data": {"ind": 2}, "partition-key": "pk-2"}, {"data": "text", "partition-key": "pk-3"}, {"data": [1, 2], "partition-key": "pk-4"}]})),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["FailedRecordCount"], 0);
    assert_eq!(batch["Records"].as_array().unwrap().len(), 3);

    let records = read_stream(&server.endpoint, "api-one").await;
    let expected: Vec<(String, Vec<u8>)> = vec![
        (
            "pk-1".into(),
            r#"{"index":1,"title":"Τίτλος"}"#.as_bytes().to_vec(),
        ),
        ("pk-2".into(), br#"{"ind":2}"#.to_vec()),
        ("pk-3".into(), br#""text""#.to_vec()),
        ("pk-4".into(), br#"[1,2]"#.to_vec()),
    ];
    assert_eq!(records, expected);

    assert_eq!(
        send(reqwest::Method::DELETE, "/streams/api-five", None)
            .await
            .0,
        200
    );
    let deleted = crate::support::poll(Duration::from_secs(20), || async {
        !client(&server.endpoint)
            .await
            .list_streams()
            .send()
            .await
            .unwrap()
            .stream_names()
            .contains(&"api-five".to_owned())
    })
    .await;
    assert!(deleted, "api-five was not deleted");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_python_client_works_unchanged() {
    let server = KinesisMock::start().await;
    let kinesis = client(&server.endpoint).await;
    create_stream(&kinesis, "streaming-0a40ea42f8d1-pin", 1).await;
    let cancel = CancellationToken::new();
    let url = serve(&server.endpoint, &cancel).await;
    // The seed's emulator, as it was written (json.dumps of the body, PUT with a JSON content type).
    let script = r#"
import json, sys, urllib.request
invoke_url = sys.argv[1] + "/streams/streaming-0a40ea42f8d1-pin/record"
pin_result = {"index": 10794, "unique_id": "c4bd2577-a7bb-4409-bb7a-17d5ed7e1cf1", "title": "TireBuyer", "description": "Nissan GT-R. Sick.", "poster_name": "Ray Uyemura", "follower_count": "437", "tag_list": "Lowrider,Old Vintage Cars,Antique Cars", "is_image_or_video": "image", "image_src": "https://i.pinimg.com/originals/0d/29/9f/0d299f3df020395aa7ce8387f40fbeed.jpg", "downloaded": 1, "save_location": "Local save in /data/vehicles", "category": "vehicles"}
payload = json.dumps({"StreamName": "streaming-0a40ea42f8d1-pin", "Data": pin_result, "PartitionKey": "partition-1"})
request = urllib.request.Request(invoke_url, data=payload.encode(), method="PUT", headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request) as response:
    print(response.status, response.read().decode())
"#;
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&url)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("200 ") && stdout.contains("SequenceNumber"),
        "{stdout}"
    );
    let records = read_stream(&server.endpoint, "streaming-0a40ea42f8d1-pin").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].0, "partition-1");
    let sent: Value = serde_json::from_slice(&records[0].1).unwrap();
    assert_eq!(sent["index"], 10794);
    assert_eq!(sent["follower_count"], "437");
    cancel.cancel();
}

#[tokio::test]
async fn the_openapi_document_matches_what_the_server_accepts() {
    let spec: Value = serde_json::from_str(OPENAPI).unwrap();
    let app = offline_app(&ApiSettings::default()).await;
    let paths = spec["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        let uri = path.replace("{stream-name}", "some-stream");
        for method in ["get", "post", "put", "delete"] {
            let Some(operation) = item.get(method) else {
                // An undocumented method is not routed.
                let (status, _) = call(&app, &method.to_uppercase(), &uri, None, None).await;
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is routed but not documented"
                );
                continue;
            };
            operations += 1;
            let content = &operation["requestBody"]["content"]["application/json"];
            let example = content.get("example").map(Value::to_string);
            // The documented example is accepted: it passes validation and reaches Kinesis
            // (offline here, so 503), or the route answers by itself (200).
            let (status, json) =
                call(&app, &method.to_uppercase(), &uri, example.as_deref(), None).await;
            assert!(
                status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                "{method} {path} with its example: {status} {json}"
            );
            // Every documented required field is really required.
            let schema_ref = content["schema"]["$ref"].as_str().unwrap_or_default();
            let Some(name) = schema_ref.strip_prefix("#/components/schemas/") else {
                continue;
            };
            let schema = &spec["components"]["schemas"][name];
            for field in schema["required"].as_array().into_iter().flatten() {
                let mut body = content["example"].clone();
                body.as_object_mut()
                    .unwrap()
                    .remove(field.as_str().unwrap());
                let (status, json) = call(
                    &app,
                    &method.to_uppercase(),
                    &uri,
                    Some(&body.to_string()),
                    None,
                )
                .await;
                assert_eq!(
                    status,
                    StatusCode::BAD_REQUEST,
                    "{method} {path} without {field}: {json}"
                );
            }
        }
    }
    assert_eq!(operations, 7, "every documented operation was checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_throttling_is_a_429_with_its_type() {
    use crate::support::fault_proxy::{FaultPlan, FaultProxy};
    let server = KinesisMock::start().await;
    create_stream(&client(&server.endpoint).await, "throttled", 1).await;
    let proxy = FaultProxy::start_with(&server.endpoint, FaultPlan::NONE, true).await;
    let app = api::app(client(&proxy.endpoint).await, &ApiSettings::default());
    let (status, json) = call(
        &app,
        "PUT",
        "/streams/throttled/record",
        Some(r#"{"Data": 1, "PartitionKey": "k"}"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    assert_eq!(json["__type"], "ProvisionedThroughputExceededException");
    assert!(json["message"].as_str().unwrap().contains("Rate exceeded"));
}

/// A "Kinesis" that accepts connections and never answers, and what it notifies at each
/// connection it accepts.
async fn silent_endpoint() -> (String, std::sync::Arc<tokio::sync::Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let connected = std::sync::Arc::new(tokio::sync::Notify::new());
    let notify = std::sync::Arc::clone(&connected);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            notify.notify_one();
        }
    });
    (endpoint, connected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_kinesis_is_answered_408_and_shutdown_lets_in_flight_requests_finish() {
    let settings = ApiSettings {
        request_timeout: Duration::from_millis(1500),
        ..ApiSettings::default()
    };
    let (kinesis, kinesis_called) = silent_endpoint().await;
    let app = api::app(client(&kinesis).await, &settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    let server = tokio::spawn(api::serve(listener, app, cancel.clone()));

    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .put(format!("{url}/streams/s/record"))
            .body(r#"{"Data": 1, "PartitionKey": "k"}"#)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // Shut down while the request is in flight (its handler waits on Kinesis): it still gets its
    // answer.
    tokio::time::timeout(Duration::from_secs(10), kinesis_called.notified())
        .await
        .expect("the request reaches Kinesis");
    cancel.cancel();
    assert_eq!(
        request
            .await
            .unwrap()
            .expect("the in-flight request is answered"),
        408
    );
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops once the request is done")
        .unwrap()
        .unwrap();
}

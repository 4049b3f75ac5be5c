//! The files of `deploy/` stay true to the binary: the commands they run parse with the real
//! CLI, the environment variables they set are ones it reads, the probes hit the admin server's
//! routes, the pods run as non-root, and the dashboard and alerts use only exported metrics.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use kinesis_delta::cli::{Cli, Command};
use kinesis_delta::telemetry::catalog::{CATALOG, Kind};
use tower::ServiceExt;
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::promtool::promtool;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The environment variables the CLI reads (every subcommand's `env = …`), with the AWS SDK's and
/// the allocator's own.
fn known_env() -> BTreeSet<String> {
    fn collect(command: &clap::Command, names: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            collect(sub, names);
        }
    }
    let mut names = BTreeSet::new();
    collect(&Cli::command(), &mut names);
    names.extend(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].map(String::from));
    names
}

/// Parses `args` as the binary would and returns the admin address it asks for.
fn admin_address(args: &[String], source: &str) -> std::net::SocketAddr {
    let argv = std::iter::once("kinesis-delta".to_owned()).chain(args.iter().cloned());
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{source}: {e}"));
    let admin = match cli.command {
        Command::Run(run) => run.admin,
        Command::Api(api) => api.admin,
        other => panic!("{source}: runs {other:?}, not run or api"),
    };
    admin
        .admin_address
        .unwrap_or_else(|| panic!("{source}: no --admin-address"))
}

#[test]
fn the_systemd_unit_runs_the_engine_as_the_cli_expects() {
    let unit = std::fs::read_to_string(deploy().join("systemd/kinesis-delta.service")).unwrap();
    // Continuation lines joined, comments dropped.
    let joined = unit.replace("\\\n", " ");
    let settings: Vec<(&str, &str)> = joined
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let value = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.trim())
            .unwrap_or_else(|| panic!("no {key}="))
    };
    let exec: Vec<String> = value("ExecStart")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert!(exec[0].ends_with("/kinesis-delta"), "{exec:?}");
    let admin = admin_address(&exec[1..], "ExecStart");
    assert!(
        admin.ip().is_loopback(),
        "a host service keeps metrics on loopback: {admin}"
    );
    assert!(!["root", "0"].contains(&value("User")), "runs as non-root");
    let known = known_env();
    for (key, assignment) in &settings {
        if *key == "Environment" {
            let name = assignment.split('=').next().unwrap();
            assert!(
                known.contains(name),
                "Environment={name} is read by nothing"
            );
        }
    }
    assert_eq!(value("KillSignal"), "SIGTERM");
}

#[tokio::test]
async fn the_kubernetes_manifests_run_the_cli_as_non_root_with_working_probes() {
    let shipped_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("kinesis-delta.toml");
    let (shipped, _) = kinesis_delta::config::PipelineConfig::load(Some(&shipped_path)).unwrap();
    let sql_files: BTreeSet<String> = shipped
        .streams
        .iter()
        .flat_map(|s| [s.schema.clone(), s.sql.clone()])
        .map(|p| p.display().to_string())
        .collect();
    let known = known_env();
    let mut containers = 0;
    for file in ["kubernetes/engine.yaml", "kubernetes/api.yaml"] {
        let text = std::fs::read_to_string(deploy().join(file)).unwrap();
        for doc in YamlLoader::load_from_str(&text).unwrap() {
            if doc["kind"].as_str() != Some("Deployment") {
                continue;
            }
            let pod = &doc["spec"]["template"]["spec"];
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"].as_bool(),
                Some(true),
                "{file}"
            );
            assert!(
                pod["securityContext"]["runAsUser"].as_i64().unwrap() > 0,
                "{file}"
            );
            let volumes = pod["volumes"].as_vec().unwrap();
            for container in pod["containers"].as_vec().unwrap() {
                containers += 1;
                let source = format!("{file}: {}", container["name"].as_str().unwrap());
                check_container(container, volumes, &sql_files, &known, &source).await;
            }
        }
    }
    assert_eq!(containers, 2, "the engine and the API");
}

async fn check_container(
    container: &Yaml,
    volumes: &[Yaml],
    sql_files: &BTreeSet<String>,
    known_env: &BTreeSet<String>,
    source: &str,
) {
    let strings = |y: &Yaml| -> Vec<String> {
        y.as_vec()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        strings(&container["command"])[0].ends_with("/kinesis-delta"),
        "{source}"
    );
    let args = strings(&container["args"]);
    let admin = admin_address(&args, source);
    let port = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some("admin"))
        .unwrap_or_else(|| panic!("{source}: no port named admin"));
    assert_eq!(
        i64::from(admin.port()),
        port["containerPort"].as_i64().unwrap(),
        "{source}"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{source}: {probe}");
        assert_eq!(get["port"].as_str(), Some("admin"), "{source}: {probe}");
        assert_served(path).await;
    }
    let security = &container["securityContext"];
    assert_eq!(
        security["allowPrivilegeEscalation"].as_bool(),
        Some(false),
        "{source}"
    );
    let mut table_root = None;
    for env in container["env"].as_vec().unwrap() {
        let name = env["name"].as_str().unwrap();
        assert!(
            known_env.contains(name),
            "{source}: {name} is read by nothing"
        );
        if name == "KINESIS_DELTA_TABLE_ROOT" {
            table_root = env["value"].as_str();
        }
    }
    // The config's own table_root is relative to it, in a read-only mount the config check
    // would try to create folders in: every container points it elsewhere.
    assert!(
        table_root.is_some_and(|root| root.contains("://")),
        "{source}: set KINESIS_DELTA_TABLE_ROOT to the tables' URL"
    );
    // The config file the args name, and the SQL files it names, are in the mounted volume.
    let config = args[args.iter().position(|a| a == "--config").unwrap() + 1].clone();
    let mount = container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| config.starts_with(m["mountPath"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("{source}: nothing mounted at {config}"));
    let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
    let mounted: BTreeSet<String> = volume["configMap"]["items"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|item| {
            format!(
                "{}/{}",
                mount["mountPath"].as_str().unwrap(),
                item["path"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        mounted.contains(&config),
        "{source}: {config} is not mounted"
    );
    let config_dir = Path::new(&config).parent().unwrap();
    for sql in sql_files {
        let path = config_dir.join(sql).display().to_string();
        assert!(
            mounted.contains(&path),
            "{source}: the config's {sql} is not mounted"
        );
    }
}

/// The admin server answers `path` (whatever its state: not 404).
async fn assert_served(path: &str) {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let request = axum::http::Request::get(path)
        .body(axum::body::Body::empty())
        .unwrap();
    let answer = kinesis_delta::telemetry::admin::router(handle)
        .oneshot(request)
        .await
        .unwrap();
    assert_ne!(answer.status(), 404, "{path} is not an admin route");
}

#[test]
fn the_dashboard_and_alerts_use_only_exported_metrics_and_pass_promtool() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/kinesis-delta.json")).unwrap(),
    )
    .unwrap();
    let mut expressions = Vec::new();
    collect_exprs(&dashboard, &mut expressions);
    let alerts = std::fs::read_to_string(deploy().join("prometheus/alerts.yaml")).unwrap();
    let rules = &YamlLoader::load_from_str(&alerts).unwrap()[0];
    for group in rules["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            expressions.push(rule["expr"].as_str().unwrap().to_owned());
        }
    }
    let mut used = BTreeSet::new();
    for expr in &expressions {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("kinesis_delta_") || word.starts_with("process_") {
                used.insert(word.to_owned());
            }
        }
    }
    let exported = |name: &str| {
        CATALOG.iter().any(|m| {
            m.name == name
                || (m.kind == Kind::Histogram
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name == format!("{}{suffix}", m.name)))
        })
    };
    for name in &used {
        assert!(exported(name), "{name} is used but not exported");
    }
    assert!(
        used.len() >= 15,
        "the dashboard shows most metrics: {used:?}"
    );

    let dir = deploy().join("prometheus");
    promtool(&dir, &["check", "rules", "alerts.yaml"], "", false);
    promtool(&dir, &["test", "rules", "alerts.test.yaml"], "", false);
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

//! Test custom handler for `tests/runtime.rs`: records every request it gets and answers as the tests need.
//!
//! Listens on `FUNCTIONS_CUSTOMHANDLER_PORT`; appends one JSON line per request to the file in `TEST_HANDLER_RECORD`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::io::Write as _;
use std::sync::{Arc, Mutex};

struct Recorder {
    file: Mutex<std::fs::File>,
}

impl Recorder {
    fn record(&self, entry: &Value) {
        let mut line = entry.to_string();
        line.push('\n');
        let mut f = self.file.lock().unwrap();
        f.write_all(line.as_bytes()).unwrap();
        f.flush().unwrap();
    }
}

fn ok(outputs: Value, logs: Value, return_value: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"Outputs": outputs, "Logs": logs, "ReturnValue": return_value}).to_string(),
    )
        .into_response()
}

async fn handle(State(rec): State<Arc<Recorder>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or(""))))
        .collect();
    let path = parts.uri.path().to_owned();
    let entry = json!({
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "headers": headers,
        "body": body_text,
    });
    rec.record(&entry);

    if path == "/" {
        return (StatusCode::OK, "ready").into_response();
    }
    // Forwarded HTTP requests keep their /api/... path: echo them.
    if path.starts_with("/api/") {
        let status = if parts.method == "POST" {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return (
            status,
            [
                ("x-echo", "forwarded"),
                ("content-type", "application/json"),
            ],
            entry.to_string(),
        )
            .into_response();
    }
    let function = path.trim_start_matches('/');
    let payload: Value = serde_json::from_str(&body_text).unwrap_or(Value::Null);
    let dequeue_count = payload["Metadata"]["DequeueCount"].as_i64().unwrap_or(0);
    match function {
        "orders" => {
            let id = payload["Data"]["req"]["Params"]["id"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let n: i64 = id.parse().unwrap_or(-1);
            ok(
                json!({
                    "res": {"statusCode": 202, "headers": {"Content-Type": "application/json", "X-Order": id}, "body": {"accepted": n}},
                    "outMsg": {"order": n},
                }),
                json!([format!("order {id} accepted")]),
                Value::Null,
            )
        }
        "flaky" if dequeue_count < 3 => {
            (StatusCode::INTERNAL_SERVER_ERROR, "not yet").into_response()
        }
        "doomed" => (StatusCode::INTERNAL_SERVER_ERROR, "always fails").into_response(),
        "badbody" => (StatusCode::OK, "this is not an invocation result").into_response(),
        "returner" => ok(
            json!({}),
            json!([]),
            json!({"statusCode": 203, "body": "from ReturnValue"}),
        ),
        _ => ok(
            json!({"res": {"statusCode": 200, "body": {"function": function, "params": payload["Data"]["req"]["Params"]}}}),
            json!([]),
            Value::Null,
        ),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .expect("FUNCTIONS_CUSTOMHANDLER_PORT is set")
        .parse()
        .expect("port is a number");
    let path = std::env::var("TEST_HANDLER_RECORD").expect("TEST_HANDLER_RECORD is set");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("record file opens");
    let rec = Arc::new(Recorder {
        file: Mutex::new(file),
    });
    // Lets a test check what the runtime does when its handler dies.
    if let Some(ms) = std::env::var("TEST_HANDLER_EXIT_AFTER_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            eprintln!("test handler exiting on purpose");
            std::process::exit(3);
        });
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("handler port binds");
    eprintln!("test handler listening on {port}");
    axum::serve(listener, Router::new().fallback(handle).with_state(rec))
        .await
        .expect("serve");
}

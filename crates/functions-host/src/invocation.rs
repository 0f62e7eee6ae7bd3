//! The custom-handler invocation payload (`Data` + `Metadata`) and response (`Outputs`, `Logs`, `ReturnValue`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// What the host POSTs to `/{functionName}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRequest {
    /// Trigger and input values by binding name.
    #[serde(rename = "Data")]
    pub data: Map<String, Value>,
    /// Trigger metadata plus `sys`.
    #[serde(rename = "Metadata")]
    pub metadata: Map<String, Value>,
}

/// Encodes a scalar as the host does (`JsonConvert.SerializeObject`): a string arrives JSON-encoded a second time.
pub fn host_encode(text: &str) -> Value {
    Value::String(serde_json::to_string(text).expect("strings serialize"))
}

/// The `sys` metadata object every invocation carries.
pub fn sys_metadata(function: &str, now: DateTime<Utc>, rand_guid: uuid::Uuid) -> Value {
    json!({
        "MethodName": function,
        "UtcNow": now.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "RandGuid": rand_guid.to_string(),
    })
}

/// The parts of an HTTP request that the payload carries.
#[derive(Debug, Clone, Default)]
pub struct HttpRequestData {
    /// Absolute URL as the client addressed it.
    pub url: String,
    /// Method, upper case.
    pub method: String,
    /// Query pairs in order (repeated keys allowed).
    pub query: Vec<(String, String)>,
    /// Header pairs in order (repeated names allowed).
    pub headers: Vec<(String, String)>,
    /// Route parameter values.
    pub params: BTreeMap<String, String>,
    /// Body bytes; `None` or empty means no `Body` property.
    pub body: Option<Vec<u8>>,
}

impl HttpRequestData {
    fn content_type(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str())
    }

    /// Query as the host's `Query` object: repeated keys joined with commas, as ASP.NET's StringValues print.
    fn query_object(&self) -> Map<String, Value> {
        let mut out: Map<String, Value> = Map::new();
        for (k, v) in &self.query {
            match out.get_mut(k) {
                Some(Value::String(existing)) => {
                    existing.push(',');
                    existing.push_str(v);
                }
                _ => {
                    out.insert(k.clone(), Value::String(v.clone()));
                }
            }
        }
        out
    }

    /// The `Data.<trigger>` value for an HTTP trigger.
    pub fn to_trigger_value(&self) -> Value {
        let mut headers: Map<String, Value> = Map::new();
        for (k, v) in &self.headers {
            match headers.get_mut(k) {
                Some(Value::Array(list)) => list.push(Value::String(v.clone())),
                _ => {
                    headers.insert(k.clone(), json!([v]));
                }
            }
        }
        let mut req = json!({
            "Url": self.url,
            "Method": self.method,
            "Query": self.query_object(),
            "Headers": headers,
            "Params": self.params,
            "Identities": [],
        });
        if let Some(body) = self.body.as_ref().filter(|b| !b.is_empty()) {
            // Binary media types travel as base64, everything else as text.
            let binary = self.content_type().is_some_and(|ct| {
                let ct = ct.to_ascii_lowercase();
                ct.starts_with("application/octet-stream") || ct.starts_with("multipart/")
            });
            req["Body"] = Value::String(if binary {
                B64.encode(body)
            } else {
                String::from_utf8_lossy(body).into_owned()
            });
        }
        req
    }

    /// Trigger metadata: route parameters and query values host-encoded, plus `Query` and `Headers` objects.
    pub fn to_metadata(&self) -> Map<String, Value> {
        let mut meta = Map::new();
        for (k, v) in self.query_object() {
            if let Value::String(s) = v {
                meta.insert(k, host_encode(&s));
            }
        }
        // Route values win over query values of the same name, as in the host's binding data.
        for (k, v) in &self.params {
            meta.insert(k.clone(), host_encode(v));
        }
        let mut headers = Map::new();
        for (k, v) in &self.headers {
            match headers.get_mut(k) {
                Some(Value::String(existing)) => {
                    existing.push(',');
                    existing.push_str(v);
                }
                _ => {
                    headers.insert(k.clone(), Value::String(v.clone()));
                }
            }
        }
        meta.insert("Query".into(), Value::Object(self.query_object()));
        meta.insert("Headers".into(), Value::Object(headers));
        meta
    }
}

/// Builds the payload for an HTTP trigger named `trigger`.
pub fn http_invocation(
    function: &str,
    trigger: &str,
    req: &HttpRequestData,
    now: DateTime<Utc>,
    rand: uuid::Uuid,
) -> InvocationRequest {
    let mut data = Map::new();
    data.insert(trigger.to_owned(), req.to_trigger_value());
    let mut metadata = req.to_metadata();
    metadata.insert("sys".into(), sys_metadata(function, now, rand));
    InvocationRequest { data, metadata }
}

/// Queue message properties that become trigger metadata.
#[derive(Debug, Clone, Default)]
pub struct QueueMessageData {
    /// Decoded message text.
    pub text: String,
    /// `DequeueCount`.
    pub dequeue_count: i64,
    /// `Id`.
    pub id: String,
    /// `PopReceipt`.
    pub pop_receipt: String,
    /// `InsertionTime`.
    pub insertion_time: Option<String>,
    /// `ExpirationTime`.
    pub expiration_time: Option<String>,
    /// `NextVisibleTime`.
    pub next_visible_time: Option<String>,
}

/// Builds the payload for a queue trigger named `trigger`.
pub fn queue_invocation(
    function: &str,
    trigger: &str,
    msg: &QueueMessageData,
    now: DateTime<Utc>,
    rand: uuid::Uuid,
) -> InvocationRequest {
    let mut data = Map::new();
    data.insert(trigger.to_owned(), host_encode(&msg.text));
    let mut metadata = Map::new();
    metadata.insert("DequeueCount".into(), json!(msg.dequeue_count));
    metadata.insert("Id".into(), json!(msg.id));
    for (key, value) in [
        ("InsertionTime", &msg.insertion_time),
        ("ExpirationTime", &msg.expiration_time),
        ("NextVisibleTime", &msg.next_visible_time),
    ] {
        if let Some(v) = value {
            metadata.insert(key.into(), json!(v));
        }
    }
    metadata.insert("PopReceipt".into(), json!(msg.pop_receipt));
    metadata.insert("sys".into(), sys_metadata(function, now, rand));
    InvocationRequest { data, metadata }
}

/// `ScheduleStatus` of a timer invocation.
#[derive(Debug, Clone, Copy)]
pub struct TimerStatus {
    /// Previous occurrence.
    pub last: DateTime<Utc>,
    /// Next occurrence.
    pub next: DateTime<Utc>,
    /// When this status was computed.
    pub last_updated: DateTime<Utc>,
}

/// Builds the payload for a timer trigger named `trigger`.
pub fn timer_invocation(
    function: &str,
    trigger: &str,
    status: &TimerStatus,
    is_past_due: bool,
    now: DateTime<Utc>,
    rand: uuid::Uuid,
) -> InvocationRequest {
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let mut data = Map::new();
    data.insert(
        trigger.to_owned(),
        json!({
            "Schedule": {"AdjustForDST": true},
            "ScheduleStatus": {"Last": ts(status.last), "Next": ts(status.next), "LastUpdated": ts(status.last_updated)},
            "IsPastDue": is_past_due,
        }),
    );
    let mut metadata = Map::new();
    metadata.insert("sys".into(), sys_metadata(function, now, rand));
    InvocationRequest { data, metadata }
}

/// Why a handler's answer is not a valid invocation result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid invocation response: {0}")]
pub struct InvalidResponse(pub String);

/// The handler's answer on the payload path.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InvocationResult {
    /// Output values by binding name.
    pub outputs: Map<String, Value>,
    /// Log lines to record.
    pub logs: Vec<String>,
    /// `ReturnValue`, for `$return` bindings.
    pub return_value: Value,
}

fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

impl InvocationResult {
    /// Parses a response body the way the host deserializes it (property names case-insensitive).
    pub fn parse(body: &[u8]) -> Result<Self, InvalidResponse> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| InvalidResponse(format!("not JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| InvalidResponse("not a JSON object".into()))?;
        let outputs = match get_ci(obj, "Outputs") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(_) => return Err(InvalidResponse("`Outputs` must be an object".into())),
        };
        let logs = match get_ci(obj, "Logs") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            Some(_) => return Err(InvalidResponse("`Logs` must be an array".into())),
        };
        Ok(Self {
            outputs,
            logs,
            return_value: get_ci(obj, "ReturnValue").cloned().unwrap_or(Value::Null),
        })
    }

    /// The value for output binding `name` (`$return` reads `ReturnValue`); binding names compare case-insensitively.
    pub fn output(&self, name: &str) -> Option<&Value> {
        if name == "$return" {
            return Some(&self.return_value).filter(|v| !v.is_null());
        }
        get_ci(&self.outputs, name).filter(|v| !v.is_null())
    }
}

/// An `http` output value turned into a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOutput {
    /// Status code.
    pub status: u16,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpOutput {
    /// Reads `{statusCode|status, body, headers}` case-insensitively; a non-object value becomes a 200 body.
    pub fn from_value(value: &Value) -> Result<Self, InvalidResponse> {
        let Some(obj) = value.as_object() else {
            return Ok(Self::with_body(200, Vec::new(), value));
        };
        let status = match get_ci(obj, "StatusCode").or_else(|| get_ci(obj, "Status")) {
            None | Some(Value::Null) => 200,
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()).unwrap_or(0),
            Some(Value::String(s)) => s.trim().parse::<u16>().unwrap_or(0),
            Some(_) => 0,
        };
        if !(100..=999).contains(&status) {
            return Err(InvalidResponse(format!(
                "http output has an invalid status code: {value}"
            )));
        }
        let mut headers = Vec::new();
        match get_ci(obj, "Headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(h)) => {
                for (k, v) in h {
                    match v {
                        Value::String(s) => headers.push((k.clone(), s.clone())),
                        Value::Array(items) => {
                            headers.extend(items.iter().map(|i| (k.clone(), scalar_text(i))));
                        }
                        Value::Null => {}
                        other => headers.push((k.clone(), scalar_text(other))),
                    }
                }
            }
            Some(_) => {
                return Err(InvalidResponse(
                    "http output `headers` must be an object".into(),
                ));
            }
        }
        Ok(Self::with_body(
            status,
            headers,
            get_ci(obj, "Body").unwrap_or(&Value::Null),
        ))
    }

    fn with_body(status: u16, mut headers: Vec<(String, String)>, body: &Value) -> Self {
        let has_ct = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        let (bytes, default_ct) = match body {
            Value::Null => (Vec::new(), None),
            Value::String(s) => (s.clone().into_bytes(), Some("text/plain; charset=utf-8")),
            other => (
                other.to_string().into_bytes(),
                Some("application/json; charset=utf-8"),
            ),
        };
        if let (false, Some(ct)) = (has_ct, default_ct) {
            headers.push(("Content-Type".into(), ct.into()));
        }
        Self {
            status,
            headers,
            body: bytes,
        }
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Messages of a `queue` output value: a string, an array of strings, or JSON values serialized to text.
pub fn queue_messages(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .filter(|v| !v.is_null())
            .map(scalar_text)
            .collect(),
        other => vec![scalar_text(other)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap()
    }

    fn guid() -> uuid::Uuid {
        uuid::Uuid::parse_str("24ad4c06-24ad-4e5b-8294-3da9714877e9").unwrap()
    }

    #[test]
    fn http_payload_shape() {
        let req = HttpRequestData {
            url: "http://localhost:7071/api/orders/42?x=1&x=2&y=z".into(),
            method: "POST".into(),
            query: vec![
                ("x".into(), "1".into()),
                ("x".into(), "2".into()),
                ("y".into(), "z".into()),
            ],
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("accept".into(), "a".into()),
                ("accept".into(), "b".into()),
            ],
            params: [("id".to_string(), "42".to_string())].into(),
            body: Some(br#"{"id":1005}"#.to_vec()),
        };
        let payload = http_invocation("orders", "req", &req, now(), guid());
        let v = serde_json::to_value(&payload).unwrap();
        assert_eq!(
            v,
            json!({
                "Data": {"req": {
                    "Url": "http://localhost:7071/api/orders/42?x=1&x=2&y=z",
                    "Method": "POST",
                    "Query": {"x": "1,2", "y": "z"},
                    "Headers": {"content-type": ["application/json"], "accept": ["a", "b"]},
                    "Params": {"id": "42"},
                    "Identities": [],
                    "Body": "{\"id\":1005}"
                }},
                "Metadata": {
                    "id": "\"42\"", "x": "\"1,2\"", "y": "\"z\"",
                    "Query": {"x": "1,2", "y": "z"},
                    "Headers": {"content-type": "application/json", "accept": "a,b"},
                    "sys": {"MethodName": "orders", "UtcNow": "2024-05-06T07:08:09Z", "RandGuid": "24ad4c06-24ad-4e5b-8294-3da9714877e9"}
                }
            })
        );
        let empty = HttpRequestData {
            method: "GET".into(),
            body: Some(Vec::new()),
            ..Default::default()
        };
        assert!(empty.to_trigger_value().get("Body").is_none());
        let binary = HttpRequestData {
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: Some(vec![0, 255]),
            ..Default::default()
        };
        assert_eq!(binary.to_trigger_value()["Body"], "AP8=");
    }

    #[test]
    fn queue_payload_double_encodes_the_message() {
        let msg = QueueMessageData {
            text: r#"{"a":1}"#.into(),
            dequeue_count: 2,
            id: "m1".into(),
            pop_receipt: "pr".into(),
            insertion_time: Some("2024-05-06T07:00:00Z".into()),
            expiration_time: None,
            next_visible_time: Some("2024-05-06T07:10:00Z".into()),
        };
        let v = serde_json::to_value(queue_invocation("provision", "msg", &msg, now(), guid()))
            .unwrap();
        assert_eq!(v["Data"]["msg"], json!("\"{\\\"a\\\":1}\""));
        let inner: String = serde_json::from_str(v["Data"]["msg"].as_str().unwrap()).unwrap();
        assert_eq!(inner, r#"{"a":1}"#);
        assert_eq!(v["Metadata"]["DequeueCount"], json!(2));
        assert_eq!(v["Metadata"]["Id"], json!("m1"));
        assert_eq!(v["Metadata"]["PopReceipt"], json!("pr"));
        assert!(v["Metadata"].get("ExpirationTime").is_none());
        assert_eq!(v["Metadata"]["sys"]["MethodName"], json!("provision"));
    }

    #[test]
    fn timer_payload_shape() {
        let status = TimerStatus {
            last: now(),
            next: now() + chrono::Duration::seconds(10),
            last_updated: now(),
        };
        let v = serde_json::to_value(timer_invocation(
            "housekeeping",
            "timer",
            &status,
            false,
            now(),
            guid(),
        ))
        .unwrap();
        assert_eq!(
            v["Data"]["timer"],
            json!({"Schedule": {"AdjustForDST": true},
                   "ScheduleStatus": {"Last": "2024-05-06T07:08:09Z", "Next": "2024-05-06T07:08:19Z", "LastUpdated": "2024-05-06T07:08:09Z"},
                   "IsPastDue": false})
        );
        assert_eq!(v["Metadata"]["sys"]["MethodName"], json!("housekeeping"));
    }

    #[test]
    fn parses_results_case_insensitively() {
        let r = InvocationResult::parse(
            br#"{"outputs": {"Res": {"statusCode": 201}}, "logs": ["a", 2], "returnValue": "x"}"#,
        )
        .unwrap();
        assert_eq!(r.logs, vec!["a", "2"]);
        assert!(r.output("res").is_some());
        assert_eq!(r.output("$return"), Some(&json!("x")));
        assert_eq!(
            InvocationResult::parse(b"{}").unwrap(),
            InvocationResult::default()
        );
        assert!(InvocationResult::parse(b"not json").is_err());
        assert!(InvocationResult::parse(b"[1]").is_err());
        assert!(InvocationResult::parse(br#"{"Outputs": 3}"#).is_err());
        assert!(InvocationResult::parse(br#"{"Logs": "x"}"#).is_err());
    }

    #[test]
    fn http_output_variants() {
        let o = HttpOutput::from_value(&json!({"StatusCode": "202", "Body": "{\"ok\":true}", "Headers": {"Content-Type": "application/json", "X-A": 1}})).unwrap();
        assert_eq!(o.status, 202);
        assert_eq!(o.body, br#"{"ok":true}"#);
        assert_eq!(
            o.headers,
            vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-A".into(), "1".into())
            ]
        );
        let o = HttpOutput::from_value(&json!({"statusCode": 200, "body": {"ok": true}})).unwrap();
        assert_eq!(o.body, br#"{"ok":true}"#);
        assert_eq!(
            o.headers,
            vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into()
            )]
        );
        let o = HttpOutput::from_value(&json!({"status": 404})).unwrap();
        assert_eq!((o.status, o.body.len(), o.headers.len()), (404, 0, 0));
        assert!(HttpOutput::from_value(&json!({"statusCode": "abc"})).is_err());
        assert!(HttpOutput::from_value(&json!({"statusCode": 99999})).is_err());
    }

    #[test]
    fn queue_output_values() {
        assert_eq!(queue_messages(&json!("a")), vec!["a"]);
        assert_eq!(
            queue_messages(&json!(["a", {"b": 1}])),
            vec!["a".to_string(), r#"{"b":1}"#.to_string()]
        );
        assert_eq!(queue_messages(&json!({"job": "x"})), vec![r#"{"job":"x"}"#]);
        assert!(queue_messages(&Value::Null).is_empty());
    }
}

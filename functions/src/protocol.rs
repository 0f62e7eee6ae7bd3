//! The custom-handler invocation protocol: what the Functions host POSTs to
//! `/{functionName}` and what it expects back.
//!
//! The host serializes every trigger value with `JsonConvert.SerializeObject`, so a queue
//! message or a metadata value can arrive as a JSON string holding JSON; [`unwrap_json`]
//! undoes that once. `DequeueCount` arrives as a number or a string.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Why an invocation payload is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The body is not an invocation payload.
    #[error("the invocation payload is malformed: {0}")]
    Malformed(String),
    /// The trigger binding is missing from `Data`.
    #[error("the invocation has no `Data.{0}`")]
    MissingTrigger(String),
}

/// `POST /{functionName}` body.
#[derive(Debug, Deserialize)]
pub struct Invocation {
    /// Input bindings by name.
    #[serde(rename = "Data", default)]
    pub data: Map<String, Value>,
    /// Trigger metadata.
    #[serde(rename = "Metadata", default)]
    pub metadata: Map<String, Value>,
}

/// The handler's answer.
#[derive(Debug, Default, Serialize)]
pub struct InvocationResult {
    /// Output bindings by name.
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    /// Lines the host logs at Information level.
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    /// The `$return` binding.
    #[serde(rename = "ReturnValue")]
    pub return_value: Value,
}

/// Undo the host's extra JSON encoding of a string value, once.
pub fn unwrap_json(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str::<Value>(s).unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    }
}

impl Invocation {
    /// Parse a payload body.
    pub fn parse(body: &[u8]) -> Result<Invocation, ProtocolError> {
        serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }

    /// A queue message, decoded: the message text parsed as JSON (unwrapped as needed).
    pub fn queue_message(&self, binding: &str) -> Result<Value, ProtocolError> {
        let raw = self
            .data
            .get(binding)
            .ok_or_else(|| ProtocolError::MissingTrigger(binding.into()))?;
        let mut v = unwrap_json(raw);
        // A message text that is itself JSON arrives as a string of JSON a second time.
        if let Value::String(_) = v {
            v = unwrap_json(&v);
        }
        Ok(v)
    }

    /// How many times this queue message has been dequeued (1 on the first attempt).
    pub fn dequeue_count(&self) -> u32 {
        match self.metadata.get("DequeueCount").map(unwrap_json) {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(1) as u32,
            Some(Value::String(s)) => s.trim_matches('"').parse().unwrap_or(1),
            _ => 1,
        }
    }

    /// The HTTP request of an HTTP trigger.
    pub fn http_request(&self, binding: &str) -> Result<HttpRequestData, ProtocolError> {
        let raw = self
            .data
            .get(binding)
            .ok_or_else(|| ProtocolError::MissingTrigger(binding.into()))?;
        serde_json::from_value(unwrap_json(raw))
            .map_err(|e| ProtocolError::Malformed(e.to_string()))
    }
}

/// An HTTP request as the host passes it in `Data`.
#[derive(Debug, Deserialize)]
pub struct HttpRequestData {
    /// Full URL.
    #[serde(rename = "Url", default)]
    pub url: String,
    /// Method.
    #[serde(rename = "Method", default)]
    pub method: String,
    /// Query: an object, or a string holding one (host versions differ).
    #[serde(rename = "Query", default)]
    pub query: Value,
    /// Headers, each with its values.
    #[serde(rename = "Headers", default)]
    pub headers: HashMap<String, Value>,
    /// Route parameters.
    #[serde(rename = "Params", default)]
    pub params: HashMap<String, Value>,
    /// Body text; absent when empty.
    #[serde(rename = "Body", default)]
    pub body: Option<Value>,
}

impl HttpRequestData {
    /// Headers as a header map.
    pub fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, values) in &self.headers {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            let list: Vec<String> = match values {
                Value::Array(items) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                Value::String(s) => vec![s.clone()],
                _ => Vec::new(),
            };
            for v in list {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    map.append(name.clone(), v);
                }
            }
        }
        map
    }

    /// A route parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params.get(name).map(|v| match unwrap_json(v) {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }

    /// The body bytes.
    pub fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(other) => other.to_string().into_bytes(),
        }
    }
}

/// An `http` output binding value.
pub fn http_output(status: u16, headers: &HeaderMap, body: &[u8]) -> Value {
    let mut h = Map::new();
    for (name, value) in headers {
        if let Ok(v) = value.to_str() {
            h.insert(name.as_str().to_string(), Value::String(v.to_string()));
        }
    }
    serde_json::json!({
        "statusCode": status,
        "headers": h,
        "body": String::from_utf8_lossy(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queue_payload_in_the_documented_shape() {
        let body = json!({
            "Data": {"msg": "\"{\\\"environment_id\\\":\\\"e1\\\"}\""},
            "Metadata": {"DequeueCount": "2", "Id": "\"800ae4b3\"", "sys": {"MethodName": "provision"}}
        });
        let inv = Invocation::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            inv.queue_message("msg").unwrap(),
            json!({"environment_id": "e1"})
        );
        assert_eq!(inv.dequeue_count(), 2);
        let plain =
            json!({"Data": {"msg": {"environment_id": "e1"}}, "Metadata": {"DequeueCount": 1}});
        let inv = Invocation::parse(plain.to_string().as_bytes()).unwrap();
        assert_eq!(inv.queue_message("msg").unwrap()["environment_id"], "e1");
        assert_eq!(inv.dequeue_count(), 1);
        assert!(inv.queue_message("other").is_err());
    }

    #[test]
    fn http_payload_in_the_documented_shape() {
        let body = json!({"Data": {"req": {
            "Url": "http://localhost:7071/api/v1/connectors/42/validate?x=1",
            "Method": "POST", "Query": "{}",
            "Headers": {"Content-Type": ["application/json"], "Authorization": ["Bearer k"]},
            "Params": {"id": "42"}, "Body": "{\"a\":1}"}}, "Metadata": {}});
        let inv = Invocation::parse(body.to_string().as_bytes()).unwrap();
        let req = inv.http_request("req").unwrap();
        assert_eq!(req.param("id").as_deref(), Some("42"));
        assert_eq!(req.header_map()["authorization"], "Bearer k");
        assert_eq!(req.body_bytes(), br#"{"a":1}"#);
        let out = http_output(201, &req.header_map(), b"{}");
        assert_eq!(out["statusCode"], 201);
    }
}

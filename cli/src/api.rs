//! Calls to the control plane that keep each answer's JSON text, so `--output json` prints
//! exactly what the API said while tables read the typed value.

use anyhow::Result;
use culvert_control_api::Page;
use culvert_control_api::client::{Client, ClientError, Options};
use culvert_control_api::page::MAX_LIMIT;
// axum and the client share the `http` crate, so this is the client's `Method`.
use axum::http::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::output::Output;
use crate::output::{out, outln};

/// One answer: the typed value, its JSON text and its `ETag`.
pub struct Answer<T> {
    /// The decoded body.
    pub value: T,
    /// The body as the API sent it.
    pub raw: Box<RawValue>,
    /// The `ETag` header, when sent.
    pub etag: Option<String>,
}

/// The API client plus how to print results.
pub struct Api {
    client: Client,
    /// Table or JSON.
    pub output: Output,
    /// Whether an API key was configured (to explain a 401).
    pub has_key: bool,
}

fn decode<T: DeserializeOwned>(
    client: &Client,
    path: &str,
    raw: &RawValue,
) -> Result<T, ClientError> {
    serde_json::from_str(raw.get()).map_err(|e| ClientError::Unexpected {
        url: format!("{}{path}", client.base()),
        status: 200,
        detail: e.to_string(),
    })
}

impl Api {
    /// A client for `base` with an optional bearer key.
    pub fn new(base: &str, key: Option<String>, output: Output) -> Api {
        Api {
            has_key: key.is_some(),
            client: Client::new(base, key),
            output,
        }
    }

    /// The API base URL.
    #[cfg(test)]
    pub fn base(&self) -> &str {
        self.client.base()
    }

    /// Call `method path` and decode the answer as `T` while keeping its text.
    pub async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        opts: Options<'_>,
    ) -> Result<Answer<T>, ClientError> {
        let tagged = self
            .client
            .call::<B, Box<RawValue>>(method, path, body, opts)
            .await?;
        let value = decode(&self.client, path, &tagged.body)?;
        Ok(Answer {
            value,
            raw: tagged.body,
            etag: tagged.etag,
        })
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Answer<T>, ClientError> {
        self.call::<(), T>(Method::GET, path, None, Options::default())
            .await
    }

    /// `POST path` to create a resource. A transport failure is retried once with the same
    /// idempotency key: the first attempt may have created it, and the key makes the retry
    /// return that resource instead of a second one (or a name conflict).
    pub async fn create<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Answer<T>, ClientError> {
        let key = uuid::Uuid::new_v4().to_string();
        let opts = Options {
            idempotency_key: Some(&key),
            ..Options::default()
        };
        match self.call(Method::POST, path, Some(body), opts).await {
            Err(ClientError::Unreachable { .. }) => {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                self.call(Method::POST, path, Some(body), opts).await
            }
            other => other,
        }
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Answer<T>, ClientError> {
        self.call(Method::POST, path, Some(body), Options::default())
            .await
    }

    /// `PATCH path` guarded by `If-Match: etag`.
    pub async fn patch<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        etag: Option<&str>,
    ) -> Result<Answer<T>, ClientError> {
        let opts = Options {
            if_match: etag,
            ..Options::default()
        };
        self.call(Method::PATCH, path, Some(body), opts).await
    }

    /// `PUT path` with binary `bytes` of `content_type`: the status and the decoded answer.
    /// Large uploads get ten minutes instead of the usual 30 s.
    pub async fn put_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(u16, T), ClientError> {
        self.client
            .put_bytes(
                path,
                content_type,
                bytes,
                std::time::Duration::from_secs(600),
            )
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.call::<(), serde_json::Value>(Method::DELETE, path, None, Options::default())
            .await
            .map(|_| ())
    }

    /// Every item of a list, following `next_cursor`; `query` is added to each page's query string.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<List<T>, ClientError> {
        let mut items = Vec::new();
        let mut raw = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            q.push(format!("limit={MAX_LIMIT}"));
            if let Some(c) = &cursor {
                q.push(format!("cursor={c}"));
            }
            let url = format!("{path}?{}", q.join("&"));
            let page: Page<Box<RawValue>> = self.get::<Page<Box<RawValue>>>(&url).await?.value;
            for r in page.items {
                items.push(decode(&self.client, path, &r)?);
                raw.push(r);
            }
            match page.next_cursor {
                Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
                _ => break,
            }
        }
        Ok(List { items, raw })
    }

    /// Print an answer: its JSON text, or what `table` renders from its value.
    pub fn show<T>(&self, answer: &Answer<T>, table: impl FnOnce(&T) -> String) {
        match self.output {
            Output::Json => outln!("{}", answer.raw.get()),
            Output::Table => out!("{}", table(&answer.value)),
        }
    }

    /// Print a list: one page holding every item as JSON, or the rendered table.
    pub fn show_list<T>(&self, list: &List<T>, table: impl FnOnce(&[T]) -> String) {
        match self.output {
            Output::Json => outln!("{}", list.json()),
            Output::Table => out!("{}", table(&list.items)),
        }
    }
}

/// Every item of a list, decoded and as sent.
pub struct List<T> {
    /// Decoded.
    pub items: Vec<T>,
    /// As the API sent them.
    pub raw: Vec<Box<RawValue>>,
}

impl<T> List<T> {
    /// The list as one page of the API's shape: `{"items":[...]}`.
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct All<'a> {
            items: &'a [Box<RawValue>],
        }
        serde_json::to_string(&All { items: &self.raw }).expect("raw JSON values serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_json_keeps_item_text() {
        let list = List::<serde_json::Value> {
            items: vec![],
            raw: vec![
                RawValue::from_string(r#"{"b":1,"a":2}"#.into()).unwrap(),
                RawValue::from_string(r#"{"x":null}"#.into()).unwrap(),
            ],
        };
        assert_eq!(list.json(), r#"{"items":[{"b":1,"a":2},{"x":null}]}"#);
    }
}

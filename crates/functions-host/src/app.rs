//! The app model: `host.json` and one `function.json` per function folder, validated as the host would.

use crate::ncrontab::Schedule;
use crate::routes::RouteTemplate;
use crate::settings::AppSettings;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A problem with the app's files; names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not JSON.
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A field is missing or has a wrong value.
    #[error("{}: field `{field}`: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted path of the field, e.g. `bindings[0].route`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// A loaded Functions app: host configuration and its functions, sorted by name.
#[derive(Debug, Clone)]
pub struct App {
    /// The app root directory.
    pub root: PathBuf,
    /// Parsed `host.json`.
    pub host: HostConfig,
    /// Enabled functions, sorted by name.
    pub functions: Vec<FunctionDef>,
}

/// Parsed `host.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// `functionTimeout`; `None` when absent or `-1` (unbounded).
    pub function_timeout: Option<Duration>,
    /// `customHandler.description`.
    pub handler: HandlerDescription,
    /// `customHandler.enableForwardingHttpRequest` (or `enableProxyingHttpRequest`, served the same way here).
    pub enable_forwarding_http_request: bool,
    /// `extensions.http.routePrefix`, without slashes; default `api`.
    pub route_prefix: String,
    /// `extensions.queues`.
    pub queues: QueuesConfig,
}

/// `customHandler.description`: how to start the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerDescription {
    /// `defaultExecutablePath`, relative to the working directory or absolute.
    pub default_executable_path: String,
    /// `workingDirectory`, relative to the app root or absolute; empty means the app root.
    pub working_directory: String,
    /// `arguments`, before `%SETTING%` expansion.
    pub arguments: Vec<String>,
}

/// `extensions.queues` with the host's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuesConfig {
    /// Longest wait between polls of an empty queue (default 1 min).
    pub max_polling_interval: Duration,
    /// Delay before a failed message is visible again (default 0).
    pub visibility_timeout: Duration,
    /// Messages fetched per poll, 1-32 (default 16).
    pub batch_size: u32,
    /// Dequeues before a failing message goes to `<queue>-poison` (default 5).
    pub max_dequeue_count: u32,
    /// A new batch is fetched once in-flight messages drop to this (default batchSize / 2).
    pub new_batch_threshold: u32,
    /// How message text is stored in the queue.
    pub message_encoding: MessageEncoding,
}

impl Default for QueuesConfig {
    fn default() -> Self {
        Self {
            max_polling_interval: Duration::from_secs(60),
            visibility_timeout: Duration::ZERO,
            batch_size: 16,
            max_dequeue_count: 5,
            new_batch_threshold: 8,
            message_encoding: MessageEncoding::Base64,
        }
    }
}

/// `extensions.queues.messageEncoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageEncoding {
    /// Messages are base64 text (the host's default).
    Base64,
    /// Messages are stored as given.
    None,
}

/// One function folder.
#[derive(Debug, Clone)]
pub struct FunctionDef {
    /// The folder name, which is also the name the handler is invoked with.
    pub name: String,
    /// The `function.json` path, for messages.
    pub path: PathBuf,
    /// The single trigger binding.
    pub trigger: Trigger,
    /// Output bindings in file order.
    pub outputs: Vec<OutputBinding>,
    /// Names and types of input bindings other than the trigger (not served locally).
    pub other_inputs: Vec<(String, String)>,
}

/// A function's trigger.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// `httpTrigger`.
    Http(HttpTrigger),
    /// `queueTrigger`.
    Queue(QueueTrigger),
    /// `timerTrigger`.
    Timer(TimerTrigger),
}

/// `httpTrigger` binding.
#[derive(Debug, Clone)]
pub struct HttpTrigger {
    /// Binding name, the key under `Data`.
    pub name: String,
    /// Allowed methods in upper case; `None` allows all.
    pub methods: Option<Vec<String>>,
    /// Route template (the function name when `route` is absent).
    pub route: RouteTemplate,
    /// `authLevel`; keys are not checked locally, as with Core Tools.
    pub auth_level: AuthLevel,
}

/// `authLevel` of an HTTP trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLevel {
    /// No key.
    Anonymous,
    /// Function or host key.
    Function,
    /// Master key.
    Admin,
}

/// `queueTrigger` binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTrigger {
    /// Binding name, the key under `Data`.
    pub name: String,
    /// Queue name, settings expanded and lower-cased as the host does.
    pub queue_name: String,
    /// App setting naming the storage connection string.
    pub connection: String,
}

/// `timerTrigger` binding.
#[derive(Debug, Clone)]
pub struct TimerTrigger {
    /// Binding name, the key under `Data`.
    pub name: String,
    /// Parsed schedule.
    pub schedule: Schedule,
    /// `runOnStartup`.
    pub run_on_startup: bool,
}

/// An output binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputBinding {
    /// `http` out; the name may be `$return`.
    Http {
        /// Binding name.
        name: String,
    },
    /// `queue` out.
    Queue {
        /// Binding name (key under `Outputs`, or `$return`).
        name: String,
        /// Queue name, settings expanded and lower-cased.
        queue_name: String,
        /// App setting naming the storage connection string.
        connection: String,
    },
    /// Any other type; its values are dropped with a warning.
    Unsupported {
        /// Binding name.
        name: String,
        /// Binding type as written.
        binding_type: String,
    },
}

impl OutputBinding {
    /// The binding name.
    pub fn name(&self) -> &str {
        match self {
            OutputBinding::Http { name }
            | OutputBinding::Queue { name, .. }
            | OutputBinding::Unsupported { name, .. } => name,
        }
    }
}

impl FunctionDef {
    /// Exactly one `httpTrigger` input and one `http` output: the shape that `enableForwardingHttpRequest` forwards.
    pub fn is_http_in_and_out(&self) -> bool {
        matches!(self.trigger, Trigger::Http(_))
            && self.other_inputs.is_empty()
            && self.outputs.len() == 1
            && matches!(self.outputs[0], OutputBinding::Http { .. })
    }

    /// Name of the `http` output binding, if any.
    pub fn http_output(&self) -> Option<&str> {
        self.outputs.iter().find_map(|o| match o {
            OutputBinding::Http { name } => Some(name.as_str()),
            _ => None,
        })
    }

    /// Every storage connection setting the function's bindings use.
    pub fn connections(&self) -> Vec<&str> {
        let mut out = Vec::new();
        if let Trigger::Queue(q) = &self.trigger {
            out.push(q.connection.as_str());
        }
        for o in &self.outputs {
            if let OutputBinding::Queue { connection, .. } = o {
                out.push(connection.as_str());
            }
        }
        out
    }
}

const DEFAULT_CONNECTION: &str = "AzureWebJobsStorage";

impl App {
    /// Reads `root/host.json` and every `root/*/function.json`; `%NAME%` in binding properties resolves from `settings`.
    pub fn load(root: &Path, settings: &AppSettings) -> Result<App, AppError> {
        let host_path = root.join("host.json");
        let host = HostConfig::parse(&host_path, &read_json(&host_path)?)?;
        let entries = std::fs::read_dir(root).map_err(|source| AppError::Read {
            path: root.to_path_buf(),
            source,
        })?;
        let mut functions = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| AppError::Read {
                path: root.to_path_buf(),
                source,
            })?;
            let dir = entry.path();
            let file = dir.join("function.json");
            if !dir.is_dir() || !file.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(f) = FunctionDef::parse(&name, &file, &read_json(&file)?, settings)? {
                functions.push(f);
            }
        }
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(App {
            root: root.to_path_buf(),
            host,
            functions,
        })
    }

    /// The function named `name` (folder names compare case-insensitively, as in Azure).
    pub fn function(&self, name: &str) -> Option<&FunctionDef> {
        self.functions
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }
}

fn read_json(path: &Path) -> Result<Value, AppError> {
    let text = std::fs::read_to_string(path).map_err(|source| AppError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    serde_json::from_str(text).map_err(|source| AppError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Field lookups that report errors against one file.
struct Fields<'a> {
    path: &'a Path,
}

impl Fields<'_> {
    fn invalid(&self, field: impl Into<String>, message: impl Into<String>) -> AppError {
        AppError::Invalid {
            path: self.path.to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn object<'v>(
        &self,
        value: &'v Value,
        field: &str,
    ) -> Result<&'v Map<String, Value>, AppError> {
        value
            .as_object()
            .ok_or_else(|| self.invalid(field, "must be a JSON object"))
    }

    fn opt_object<'v>(
        &self,
        obj: &'v Map<String, Value>,
        key: &str,
        field: &str,
    ) -> Result<Option<&'v Map<String, Value>>, AppError> {
        match get_ci(obj, key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.object(v, field).map(Some),
        }
    }

    fn opt_str<'v>(
        &self,
        obj: &'v Map<String, Value>,
        key: &str,
        field: &str,
    ) -> Result<Option<&'v str>, AppError> {
        match get_ci(obj, key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.invalid(field, "must be a string")),
        }
    }

    fn req_str<'v>(
        &self,
        obj: &'v Map<String, Value>,
        key: &str,
        field: &str,
    ) -> Result<&'v str, AppError> {
        match self.opt_str(obj, key, field)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(self.invalid(field, "must not be empty")),
            None => Err(self.invalid(field, "is required")),
        }
    }

    fn opt_bool(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        field: &str,
    ) -> Result<Option<bool>, AppError> {
        match get_ci(obj, key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(self.invalid(field, "must be true or false")),
        }
    }

    fn opt_u32(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        field: &str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<Option<u32>, AppError> {
        let n = match get_ci(obj, key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(_) => None,
        };
        match n.and_then(|n| u32::try_from(n).ok()) {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(self.invalid(
                field,
                format!(
                    "must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// A .NET TimeSpan string; a bare number is read as milliseconds, as older host.json files wrote them.
    fn opt_timespan(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        field: &str,
    ) -> Result<Option<Duration>, AppError> {
        match get_ci(obj, key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|ms| Some(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    self.invalid(field, "must be a non-negative number of milliseconds")
                }),
            Some(Value::String(s)) => parse_timespan(s).map(Some).ok_or_else(|| {
                self.invalid(field, format!("`{s}` is not a time span like \"00:05:00\""))
            }),
            Some(_) => Err(self.invalid(field, "must be a time span string like \"00:05:00\"")),
        }
    }
}

/// Case-insensitive key lookup: the host binds configuration and binding JSON without regard to case.
fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Parses a .NET TimeSpan in the `[d.]hh:mm[:ss[.fffffff]]` form.
pub fn parse_timespan(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (days, clock) = match text.split_once('.') {
        Some((d, rest)) if rest.contains(':') && !d.contains(':') => (d.parse::<u64>().ok()?, rest),
        _ => (0, text),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let hours: u64 = parts[0].parse().ok()?;
    let minutes: u64 = parts[1].parse().ok()?;
    let (seconds, nanos) = match parts.get(2) {
        None => (0, 0),
        Some(s) => match s.split_once('.') {
            None => (s.parse::<u64>().ok()?, 0),
            Some((whole, frac)) => {
                if frac.is_empty() || frac.len() > 7 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let nanos = format!("{frac:0<9}").parse::<u32>().ok()?;
                (whole.parse::<u64>().ok()?, nanos)
            }
        },
    };
    if hours > 23 || minutes > 59 || seconds > 59 {
        return None;
    }
    Some(Duration::new(
        days * 86_400 + hours * 3_600 + minutes * 60 + seconds,
        nanos,
    ))
}

impl HostConfig {
    /// Validates a parsed `host.json`; `path` is only used in messages.
    pub fn parse(path: &Path, json: &Value) -> Result<HostConfig, AppError> {
        let f = Fields { path };
        let root = f.object(json, "(root)")?;
        match get_ci(root, "version") {
            Some(Value::String(v)) if v == "2.0" => {}
            Some(Value::String(v)) => {
                return Err(f.invalid("version", format!("must be \"2.0\", found \"{v}\"")));
            }
            Some(_) => return Err(f.invalid("version", "must be the string \"2.0\"")),
            None => return Err(f.invalid("version", "is required and must be \"2.0\"")),
        }
        let function_timeout = match get_ci(root, "functionTimeout") {
            Some(Value::String(s)) if s.trim() == "-1" => None,
            Some(Value::Number(n)) if n.as_i64() == Some(-1) => None,
            _ => f.opt_timespan(root, "functionTimeout", "functionTimeout")?,
        };
        let ch = f
            .opt_object(root, "customHandler", "customHandler")?
            .ok_or_else(|| {
                f.invalid(
                    "customHandler",
                    "is required: this runtime only runs custom handlers",
                )
            })?;
        let desc = f
            .opt_object(ch, "description", "customHandler.description")?
            .ok_or_else(|| f.invalid("customHandler.description", "is required"))?;
        let default_executable_path = f
            .req_str(
                desc,
                "defaultExecutablePath",
                "customHandler.description.defaultExecutablePath",
            )?
            .to_owned();
        let working_directory = f
            .opt_str(
                desc,
                "workingDirectory",
                "customHandler.description.workingDirectory",
            )?
            .unwrap_or("")
            .to_owned();
        let arguments = match get_ci(desc, "arguments") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        f.invalid(
                            format!("customHandler.description.arguments[{i}]"),
                            "must be a string",
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(f.invalid(
                    "customHandler.description.arguments",
                    "must be an array of strings",
                ));
            }
        };
        let forwarding = f.opt_bool(
            ch,
            "enableForwardingHttpRequest",
            "customHandler.enableForwardingHttpRequest",
        )?;
        let proxying = f.opt_bool(
            ch,
            "enableProxyingHttpRequest",
            "customHandler.enableProxyingHttpRequest",
        )?;

        let extensions = f.opt_object(root, "extensions", "extensions")?;
        let http = match extensions {
            Some(e) => f.opt_object(e, "http", "extensions.http")?,
            None => None,
        };
        let route_prefix = match http {
            Some(h) => f
                .opt_str(h, "routePrefix", "extensions.http.routePrefix")?
                .unwrap_or("api"),
            None => "api",
        }
        .trim_matches('/')
        .to_owned();
        if route_prefix.contains(['{', '}', '?']) {
            return Err(f.invalid("extensions.http.routePrefix", "must be plain path text"));
        }

        let mut queues = QueuesConfig::default();
        if let Some(q) = match extensions {
            Some(e) => f.opt_object(e, "queues", "extensions.queues")?,
            None => None,
        } {
            if let Some(d) = f.opt_timespan(
                q,
                "maxPollingInterval",
                "extensions.queues.maxPollingInterval",
            )? {
                if d < Duration::from_millis(100) {
                    return Err(f.invalid(
                        "extensions.queues.maxPollingInterval",
                        "must be at least 100 ms",
                    ));
                }
                queues.max_polling_interval = d;
            }
            if let Some(d) = f.opt_timespan(
                q,
                "visibilityTimeout",
                "extensions.queues.visibilityTimeout",
            )? {
                if d > Duration::from_secs(7 * 86_400) {
                    return Err(f.invalid(
                        "extensions.queues.visibilityTimeout",
                        "must not exceed 7 days",
                    ));
                }
                queues.visibility_timeout = d;
            }
            if let Some(n) = f.opt_u32(q, "batchSize", "extensions.queues.batchSize", 1..=32)? {
                queues.batch_size = n;
                queues.new_batch_threshold = n / 2;
            }
            if let Some(n) = f.opt_u32(
                q,
                "maxDequeueCount",
                "extensions.queues.maxDequeueCount",
                1..=u32::MAX,
            )? {
                queues.max_dequeue_count = n;
            }
            if let Some(n) = f.opt_u32(
                q,
                "newBatchThreshold",
                "extensions.queues.newBatchThreshold",
                0..=u32::MAX,
            )? {
                queues.new_batch_threshold = n;
            }
            match f.opt_str(q, "messageEncoding", "extensions.queues.messageEncoding")? {
                None => {}
                Some(s) if s.eq_ignore_ascii_case("base64") => {
                    queues.message_encoding = MessageEncoding::Base64
                }
                Some(s) if s.eq_ignore_ascii_case("none") => {
                    queues.message_encoding = MessageEncoding::None
                }
                Some(s) => {
                    return Err(f.invalid(
                        "extensions.queues.messageEncoding",
                        format!("must be \"base64\" or \"none\", found \"{s}\""),
                    ));
                }
            }
        }

        Ok(HostConfig {
            function_timeout,
            handler: HandlerDescription {
                default_executable_path,
                working_directory,
                arguments,
            },
            enable_forwarding_http_request: forwarding.unwrap_or(false)
                || proxying.unwrap_or(false),
            route_prefix,
            queues,
        })
    }
}

/// Azure's function name rule: a letter, then letters, digits, `_` or `-`, at most 128 characters.
fn valid_function_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 128
}

/// Azure Storage queue naming: 3-63 of `a-z0-9-`, starting and ending alphanumeric, no `--`.
fn valid_queue_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

const HTTP_METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT",
];

impl FunctionDef {
    /// Validates a parsed `function.json` for the function folder `name`; `None` when `disabled` is true.
    pub fn parse(
        name: &str,
        path: &Path,
        json: &Value,
        settings: &AppSettings,
    ) -> Result<Option<FunctionDef>, AppError> {
        let f = Fields { path };
        if !valid_function_name(name) {
            return Err(f.invalid(
                "(folder name)",
                format!("`{name}` is not a valid function name (a letter, then letters, digits, '_' or '-')"),
            ));
        }
        let root = f.object(json, "(root)")?;
        if f.opt_bool(root, "disabled", "disabled")?.unwrap_or(false) {
            return Ok(None);
        }
        let bindings = match get_ci(root, "bindings") {
            Some(Value::Array(b)) => b,
            Some(_) => return Err(f.invalid("bindings", "must be an array")),
            None => return Err(f.invalid("bindings", "is required")),
        };
        let mut trigger: Option<Trigger> = None;
        let mut outputs = Vec::new();
        let mut other_inputs = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for (i, b) in bindings.iter().enumerate() {
            let at = |field: &str| format!("bindings[{i}].{field}");
            let obj = f.object(b, &format!("bindings[{i}]"))?;
            let btype = f.req_str(obj, "type", &at("type"))?;
            let direction = f
                .req_str(obj, "direction", &at("direction"))?
                .to_ascii_lowercase();
            if !matches!(direction.as_str(), "in" | "out" | "inout") {
                return Err(f.invalid(
                    at("direction"),
                    format!("must be \"in\" or \"out\", found \"{direction}\""),
                ));
            }
            let bname = f.req_str(obj, "name", &at("name"))?.to_owned();
            if names.iter().any(|n| n.eq_ignore_ascii_case(&bname)) {
                return Err(f.invalid(at("name"), format!("binding name `{bname}` is used twice")));
            }
            names.push(bname.clone());
            let lower = btype.to_ascii_lowercase();
            let expect_dir = |want: &str| -> Result<(), AppError> {
                if direction == want {
                    Ok(())
                } else {
                    Err(f.invalid(
                        at("direction"),
                        format!("a {btype} binding must have direction \"{want}\""),
                    ))
                }
            };
            let resolve = |field: &str, value: &str| -> Result<String, AppError> {
                settings.expand_strict(value).map_err(|missing| {
                    f.invalid(
                        at(field),
                        format!("app setting `{missing}` (from `%{missing}%`) is not set"),
                    )
                })
            };
            let queue_name = |obj: &Map<String, Value>| -> Result<String, AppError> {
                let raw = f.req_str(obj, "queueName", &at("queueName"))?;
                let q = resolve("queueName", raw)?.to_ascii_lowercase();
                if !valid_queue_name(&q) {
                    return Err(f.invalid(
                        at("queueName"),
                        format!(
                            "`{q}` is not a valid queue name (3-63 of a-z, 0-9 and single '-')"
                        ),
                    ));
                }
                Ok(q)
            };
            let connection = |obj: &Map<String, Value>| -> Result<String, AppError> {
                Ok(f.opt_str(obj, "connection", &at("connection"))?
                    .filter(|c| !c.trim().is_empty())
                    .unwrap_or(DEFAULT_CONNECTION)
                    .to_owned())
            };
            let new_trigger = match lower.as_str() {
                "httptrigger" => {
                    expect_dir("in")?;
                    let methods = match get_ci(obj, "methods") {
                        None | Some(Value::Null) => None,
                        Some(Value::Array(items)) => {
                            let mut ms = Vec::new();
                            for (j, m) in items.iter().enumerate() {
                                let m = m
                                    .as_str()
                                    .map(str::to_ascii_uppercase)
                                    .filter(|m| HTTP_METHODS.contains(&m.as_str()))
                                    .ok_or_else(|| {
                                        f.invalid(
                                            at(&format!("methods[{j}]")),
                                            "must be an HTTP method name such as \"get\"",
                                        )
                                    })?;
                                ms.push(m);
                            }
                            (!ms.is_empty()).then_some(ms)
                        }
                        Some(_) => {
                            return Err(
                                f.invalid(at("methods"), "must be an array of method names")
                            );
                        }
                    };
                    let route = match f.opt_str(obj, "route", &at("route"))? {
                        Some(r) => RouteTemplate::parse(&resolve("route", r)?),
                        None => RouteTemplate::literal(name),
                    }
                    .map_err(|e| f.invalid(at("route"), e.to_string()))?;
                    let auth_level = match f
                        .opt_str(obj, "authLevel", &at("authLevel"))?
                        .map(str::to_ascii_lowercase)
                        .as_deref()
                    {
                        None | Some("function") => AuthLevel::Function,
                        Some("anonymous") => AuthLevel::Anonymous,
                        Some("admin") | Some("system") => AuthLevel::Admin,
                        Some(other) => {
                            return Err(f.invalid(
                                at("authLevel"),
                                format!("must be anonymous, function or admin, found \"{other}\""),
                            ));
                        }
                    };
                    Some(Trigger::Http(HttpTrigger {
                        name: bname,
                        methods,
                        route,
                        auth_level,
                    }))
                }
                "queuetrigger" => {
                    expect_dir("in")?;
                    Some(Trigger::Queue(QueueTrigger {
                        name: bname,
                        queue_name: queue_name(obj)?,
                        connection: connection(obj)?,
                    }))
                }
                "timertrigger" => {
                    expect_dir("in")?;
                    let raw = f.req_str(obj, "schedule", &at("schedule"))?;
                    let schedule = Schedule::parse(&resolve("schedule", raw)?)
                        .map_err(|e| f.invalid(at("schedule"), e.to_string()))?;
                    let run_on_startup = f
                        .opt_bool(obj, "runOnStartup", &at("runOnStartup"))?
                        .unwrap_or(false);
                    Some(Trigger::Timer(TimerTrigger {
                        name: bname,
                        schedule,
                        run_on_startup,
                    }))
                }
                t if t.ends_with("trigger") => {
                    return Err(f.invalid(
                        at("type"),
                        format!("trigger type `{btype}` is not supported by the local runtime"),
                    ));
                }
                "http" => {
                    expect_dir("out")?;
                    outputs.push(OutputBinding::Http { name: bname });
                    None
                }
                "queue" => {
                    expect_dir("out")?;
                    outputs.push(OutputBinding::Queue {
                        name: bname,
                        queue_name: queue_name(obj)?,
                        connection: connection(obj)?,
                    });
                    None
                }
                _ if direction == "in" => {
                    other_inputs.push((bname, btype.to_owned()));
                    None
                }
                _ => {
                    outputs.push(OutputBinding::Unsupported {
                        name: bname,
                        binding_type: btype.to_owned(),
                    });
                    None
                }
            };
            if let Some(t) = new_trigger {
                if trigger.is_some() {
                    return Err(f.invalid(
                        at("type"),
                        "a function has exactly one trigger; this is the second",
                    ));
                }
                trigger = Some(t);
            }
        }
        let trigger = trigger.ok_or_else(|| {
            f.invalid(
                "bindings",
                "no trigger binding (httpTrigger, queueTrigger or timerTrigger)",
            )
        })?;
        Ok(Some(FunctionDef {
            name: name.to_owned(),
            path: path.to_path_buf(),
            trigger,
            outputs,
            other_inputs,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(v: Value) -> Result<HostConfig, AppError> {
        HostConfig::parse(Path::new("/app/host.json"), &v)
    }

    fn func(name: &str, v: Value) -> Result<Option<FunctionDef>, AppError> {
        let settings = AppSettings::from_pairs([("QUEUE_NAME", "Jobs")]);
        FunctionDef::parse(name, Path::new("/app/f/function.json"), &v, &settings)
    }

    fn field_of(err: AppError) -> (String, String) {
        match err {
            AppError::Invalid { field, message, .. } => (field, message),
            other => panic!("not an Invalid error: {other}"),
        }
    }

    fn minimal_host() -> Value {
        json!({"version": "2.0", "customHandler": {"description": {"defaultExecutablePath": "handler"}}})
    }

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("00:00:02"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timespan("00:10:00"), Some(Duration::from_secs(600)));
        assert_eq!(
            parse_timespan("1.02:00:00"),
            Some(Duration::from_secs(86_400 + 7_200))
        );
        assert_eq!(
            parse_timespan("00:00:00.5"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_timespan("01:30"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_timespan("24:00:00"), None);
        assert_eq!(parse_timespan("abc"), None);
        assert_eq!(parse_timespan("5"), None);
    }

    #[test]
    fn host_json_defaults_and_full() {
        let h = host(minimal_host()).unwrap();
        assert_eq!(h.route_prefix, "api");
        assert_eq!(h.queues, QueuesConfig::default());
        assert!(!h.enable_forwarding_http_request);
        assert_eq!(h.function_timeout, None);

        let h = host(json!({
            "version": "2.0", "functionTimeout": "00:10:00",
            "customHandler": {"description": {"defaultExecutablePath": "bin/h", "workingDirectory": "w", "arguments": ["--x", "%A%"]},
                              "enableForwardingHttpRequest": true},
            "extensions": {"http": {"routePrefix": "/v/"},
                "queues": {"maxPollingInterval": "00:00:02", "visibilityTimeout": "00:00:30", "batchSize": 4,
                           "maxDequeueCount": 3, "messageEncoding": "none"}}
        }))
        .unwrap();
        assert_eq!(h.function_timeout, Some(Duration::from_secs(600)));
        assert_eq!(h.handler.arguments, vec!["--x", "%A%"]);
        assert_eq!(h.handler.working_directory, "w");
        assert!(h.enable_forwarding_http_request);
        assert_eq!(h.route_prefix, "v");
        assert_eq!(h.queues.max_polling_interval, Duration::from_secs(2));
        assert_eq!(h.queues.visibility_timeout, Duration::from_secs(30));
        assert_eq!(h.queues.batch_size, 4);
        assert_eq!(h.queues.new_batch_threshold, 2);
        assert_eq!(h.queues.max_dequeue_count, 3);
        assert_eq!(h.queues.message_encoding, MessageEncoding::None);
    }

    #[test]
    fn host_json_errors_name_the_field() {
        let cases = [
            (json!({"customHandler": {}}), "version"),
            (json!({"version": "1.0"}), "version"),
            (json!({"version": "2.0"}), "customHandler"),
            (
                json!({"version": "2.0", "customHandler": {"description": {}}}),
                "customHandler.description.defaultExecutablePath",
            ),
            (
                json!({"version": "2.0", "customHandler": {"description": {"defaultExecutablePath": "h", "arguments": [1]}}}),
                "customHandler.description.arguments[0]",
            ),
            (
                json!({"version": "2.0", "functionTimeout": "ten", "customHandler": {"description": {"defaultExecutablePath": "h"}}}),
                "functionTimeout",
            ),
        ];
        for (v, want) in cases {
            let (field, message) = field_of(host(v).unwrap_err());
            assert_eq!(field, want, "{message}");
        }
        let mut v = minimal_host();
        v["extensions"] = json!({"queues": {"batchSize": 64}});
        assert_eq!(
            field_of(host(v).unwrap_err()).0,
            "extensions.queues.batchSize"
        );
        let mut v = minimal_host();
        v["extensions"] = json!({"queues": {"messageEncoding": "utf8"}});
        assert_eq!(
            field_of(host(v).unwrap_err()).0,
            "extensions.queues.messageEncoding"
        );
        let mut v = minimal_host();
        v["extensions"] = json!({"queues": {"maxPollingInterval": "00:00:00.050"}});
        assert_eq!(
            field_of(host(v).unwrap_err()).0,
            "extensions.queues.maxPollingInterval"
        );
        let err = host(json!({"version": "3"})).unwrap_err().to_string();
        assert!(err.starts_with("/app/host.json: field `version`"), "{err}");
    }

    #[test]
    fn function_json_shapes() {
        let f = func(
            "orders",
            json!({"bindings": [
                {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["post", "GET"], "route": "orders/{id:int}", "authLevel": "anonymous"},
                {"type": "http", "direction": "out", "name": "res"},
                {"type": "queue", "direction": "out", "name": "msg", "queueName": "%QUEUE_NAME%", "connection": "Storage"}
            ]}),
        )
        .unwrap()
        .unwrap();
        let Trigger::Http(h) = &f.trigger else {
            panic!()
        };
        assert_eq!(
            h.methods.as_deref(),
            Some(&["POST".to_string(), "GET".to_string()][..])
        );
        assert_eq!(h.route.as_str(), "orders/{id:int}");
        assert_eq!(h.auth_level, AuthLevel::Anonymous);
        assert!(!f.is_http_in_and_out());
        assert_eq!(f.http_output(), Some("res"));
        assert_eq!(
            f.outputs[1],
            OutputBinding::Queue {
                name: "msg".into(),
                queue_name: "jobs".into(),
                connection: "Storage".into()
            }
        );

        let f = func(
            "status",
            json!({"bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req"},
            {"type": "http", "direction": "out", "name": "$return"}]}),
        )
        .unwrap()
        .unwrap();
        assert!(f.is_http_in_and_out());
        let Trigger::Http(h) = &f.trigger else {
            panic!()
        };
        assert_eq!(h.route.as_str(), "status");
        assert_eq!(h.methods, None);

        let f = func("q", json!({"bindings": [{"type": "queueTrigger", "direction": "in", "name": "msg", "queueName": "work"}]}))
            .unwrap()
            .unwrap();
        let Trigger::Queue(q) = &f.trigger else {
            panic!()
        };
        assert_eq!(q.connection, "AzureWebJobsStorage");

        let f = func("t", json!({"bindings": [{"type": "timerTrigger", "direction": "in", "name": "timer", "schedule": "*/10 * * * * *", "runOnStartup": true}]}))
            .unwrap()
            .unwrap();
        let Trigger::Timer(t) = &f.trigger else {
            panic!()
        };
        assert!(t.run_on_startup);

        assert!(
            func("off", json!({"disabled": true, "bindings": []}))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn function_json_errors_name_the_field() {
        let http = |extra: Value| {
            let mut b = json!({"type": "httpTrigger", "direction": "in", "name": "req"});
            b.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"bindings": [b]})
        };
        let cases = [
            (json!({}), "bindings"),
            (json!({"bindings": {}}), "bindings"),
            (json!({"bindings": []}), "bindings"),
            (json!({"bindings": [7]}), "bindings[0]"),
            (
                json!({"bindings": [{"direction": "in", "name": "x"}]}),
                "bindings[0].type",
            ),
            (
                json!({"bindings": [{"type": "httpTrigger", "name": "x"}]}),
                "bindings[0].direction",
            ),
            (
                json!({"bindings": [{"type": "httpTrigger", "direction": "in"}]}),
                "bindings[0].name",
            ),
            (http(json!({"route": "a/{id:nope}"})), "bindings[0].route"),
            (
                http(json!({"methods": ["fetch"]})),
                "bindings[0].methods[0]",
            ),
            (
                http(json!({"authLevel": "secret"})),
                "bindings[0].authLevel",
            ),
            (
                json!({"bindings": [{"type": "queueTrigger", "direction": "in", "name": "m", "queueName": "Bad_Name"}]}),
                "bindings[0].queueName",
            ),
            (
                json!({"bindings": [{"type": "queueTrigger", "direction": "in", "name": "m", "queueName": "%MISSING%"}]}),
                "bindings[0].queueName",
            ),
            (
                json!({"bindings": [{"type": "queueTrigger", "direction": "in", "name": "m"}]}),
                "bindings[0].queueName",
            ),
            (
                json!({"bindings": [{"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "0 * * * *"}]}),
                "bindings[0].schedule",
            ),
            (
                json!({"bindings": [{"type": "eventHubTrigger", "direction": "in", "name": "e"}]}),
                "bindings[0].type",
            ),
            (
                json!({"bindings": [{"type": "queue", "direction": "in", "name": "e", "queueName": "abc"}]}),
                "bindings[0].direction",
            ),
            (
                json!({"bindings": [
                    {"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "* * * * * *"},
                    {"type": "queueTrigger", "direction": "in", "name": "m", "queueName": "abc"}]}),
                "bindings[1].type",
            ),
            (
                json!({"bindings": [
                    {"type": "httpTrigger", "direction": "in", "name": "x"},
                    {"type": "http", "direction": "out", "name": "X"}]}),
                "bindings[1].name",
            ),
        ];
        for (v, want) in cases {
            let (field, message) = field_of(func("f", v.clone()).unwrap_err());
            assert_eq!(field, want, "{v}: {message}");
        }
        assert_eq!(
            field_of(func("1bad", json!({"bindings": []})).unwrap_err()).0,
            "(folder name)"
        );
        let err = func("f", http(json!({"route": "a/{id:nope}"})))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/app/f/function.json: field `bindings[0].route`")
                && err.contains("unknown constraint `nope`"),
            "{err}"
        );
    }

    #[test]
    fn load_reads_folders_and_reports_bad_json() {
        let dir = std::env::temp_dir().join(format!("fh-app-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("hello")).unwrap();
        std::fs::create_dir_all(dir.join("notafunction")).unwrap();
        std::fs::write(dir.join("host.json"), minimal_host().to_string()).unwrap();
        std::fs::write(
            dir.join("hello/function.json"),
            r#"{"bindings":[{"type":"httpTrigger","direction":"in","name":"req"},{"type":"http","direction":"out","name":"res"}]}"#,
        )
        .unwrap();
        let app = App::load(&dir, &AppSettings::default()).unwrap();
        assert_eq!(app.functions.len(), 1);
        assert!(app.function("HELLO").is_some());
        std::fs::write(dir.join("hello/function.json"), "{ nope").unwrap();
        let err = App::load(&dir, &AppSettings::default()).unwrap_err();
        assert!(
            matches!(err, AppError::Json { ref path, .. } if path.ends_with("hello/function.json")),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

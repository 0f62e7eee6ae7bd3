//! Route templates as ASP.NET Core (and so the Functions host) reads them, and the table that picks a function.

use percent_encoding::percent_decode_str;
use std::collections::BTreeMap;
use std::fmt;

/// Why a route template was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route template `{template}`: {message}")]
pub struct RouteError {
    /// The template as written.
    pub template: String,
    /// What is wrong with it.
    pub message: String,
}

/// A parsed route template such as `v1/pipelines/{id}/{action:regex(^(pause|resume)$)}`.
#[derive(Clone)]
pub struct RouteTemplate {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug)]
enum Segment {
    Literal(String),
    Param(Param),
}

#[derive(Clone, Debug)]
struct Param {
    name: String,
    optional: bool,
    catch_all: bool,
    constraints: Vec<Constraint>,
}

#[derive(Clone, Debug)]
enum Constraint {
    Int,
    Long,
    Bool,
    Guid,
    Alpha,
    Double,
    DateTime,
    Length(usize, usize),
    Min(i64),
    Max(i64),
    Range(i64, i64),
    Regex(regex::Regex),
}

impl fmt::Debug for RouteTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RouteTemplate({:?})", self.text)
    }
}

impl fmt::Display for RouteTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl RouteTemplate {
    /// Parses a template: literal segments, `{name}`, `{name?}` and `{*rest}` last, `{name:constraint(...)}`.
    pub fn parse(template: &str) -> Result<Self, RouteError> {
        let fail = |message: String| RouteError {
            template: template.to_owned(),
            message,
        };
        let trimmed = template.trim().trim_start_matches('~').trim_matches('/');
        let mut segments = Vec::new();
        for (index, raw) in split_segments(trimmed)
            .map_err(fail)?
            .into_iter()
            .enumerate()
        {
            if raw.is_empty() {
                return Err(fail(format!("segment {} is empty", index + 1)));
            }
            if let Some(inner) = raw.strip_prefix('{') {
                let inner = inner
                    .strip_suffix('}')
                    .ok_or_else(|| fail(format!("segment `{raw}` mixes a parameter with literal text, which is not supported")))?;
                segments.push(Segment::Param(
                    parse_param(inner).map_err(|m| fail(format!("parameter `{raw}`: {m}")))?,
                ));
            } else if raw.contains(['{', '}']) {
                return Err(fail(format!(
                    "segment `{raw}` mixes a parameter with literal text, which is not supported"
                )));
            } else {
                segments.push(Segment::Literal(raw));
            }
        }
        let mut names = Vec::new();
        let last = segments.len().saturating_sub(1);
        for (i, segment) in segments.iter().enumerate() {
            if let Segment::Param(p) = segment {
                if names
                    .iter()
                    .any(|n: &String| n.eq_ignore_ascii_case(&p.name))
                {
                    return Err(fail(format!("parameter `{}` appears twice", p.name)));
                }
                names.push(p.name.clone());
                if p.optional && i != last {
                    return Err(fail(format!(
                        "optional parameter `{}` must be the last segment",
                        p.name
                    )));
                }
                if p.catch_all && i != last {
                    return Err(fail(format!(
                        "catch-all parameter `{}` must be the last segment",
                        p.name
                    )));
                }
            }
        }
        Ok(Self {
            text: trimmed.to_owned(),
            segments,
        })
    }

    /// A template made only of the function's name, used when `route` is absent.
    pub fn literal(name: &str) -> Result<Self, RouteError> {
        Self::parse(name)
    }

    /// The template text, without leading or trailing slashes.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Route parameter values when `segments` (already percent-decoded) match this template.
    pub fn match_segments(&self, segments: &[String]) -> Option<BTreeMap<String, String>> {
        let mut params = BTreeMap::new();
        let mut i = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(lit) => {
                    if !segments.get(i)?.eq_ignore_ascii_case(lit) {
                        return None;
                    }
                    i += 1;
                }
                Segment::Param(p) if p.catch_all => {
                    let rest = segments[i.min(segments.len())..].join("/");
                    i = segments.len();
                    if !rest.is_empty() {
                        if !p.accepts(&rest) {
                            return None;
                        }
                        params.insert(p.name.clone(), rest);
                    }
                }
                Segment::Param(p) => match segments.get(i) {
                    Some(value) => {
                        if value.is_empty() || !p.accepts(value) {
                            return None;
                        }
                        params.insert(p.name.clone(), value.clone());
                        i += 1;
                    }
                    None if p.optional => {}
                    None => return None,
                },
            }
        }
        (i == segments.len()).then_some(params)
    }

    /// Sort key: more literal segments first, then ASP.NET's inbound precedence (literal, constrained, plain, catch-all).
    fn preference(&self) -> (std::cmp::Reverse<usize>, Vec<u8>) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let digits = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 1,
                Segment::Param(p) if p.catch_all => 5,
                Segment::Param(p) if !p.constraints.is_empty() => 3,
                Segment::Param(_) => 4,
            })
            .collect();
        (std::cmp::Reverse(literals), digits)
    }
}

impl Param {
    fn accepts(&self, value: &str) -> bool {
        self.constraints.iter().all(|c| c.accepts(value))
    }
}

impl Constraint {
    fn accepts(&self, v: &str) -> bool {
        match self {
            Constraint::Int => v.parse::<i32>().is_ok(),
            Constraint::Long => v.parse::<i64>().is_ok(),
            Constraint::Bool => v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"),
            Constraint::Guid => uuid::Uuid::try_parse(v).is_ok(),
            Constraint::Alpha => !v.is_empty() && v.chars().all(|c| c.is_ascii_alphabetic()),
            Constraint::Double => v.parse::<f64>().is_ok_and(f64::is_finite),
            Constraint::DateTime => {
                chrono::DateTime::parse_from_rfc3339(v).is_ok()
                    || chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok()
                    || chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S").is_ok()
            }
            Constraint::Length(min, max) => (*min..=*max).contains(&v.chars().count()),
            Constraint::Min(min) => v.parse::<i64>().is_ok_and(|n| n >= *min),
            Constraint::Max(max) => v.parse::<i64>().is_ok_and(|n| n <= *max),
            Constraint::Range(min, max) => {
                v.parse::<i64>().is_ok_and(|n| (*min..=*max).contains(&n))
            }
            // ASP.NET's regex constraint is case-insensitive and unanchored: templates anchor with ^...$ themselves.
            Constraint::Regex(re) => re.is_match(v),
        }
    }
}

/// Splits on `/` outside `{...}`, so a regex constraint may contain a slash.
fn split_segments(text: &str) -> Result<Vec<String>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.checked_sub(1).ok_or("unbalanced `}`")?,
            '/' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if depth != 0 {
        return Err("unbalanced `{`".into());
    }
    out.push(current);
    Ok(out)
}

fn parse_param(inner: &str) -> Result<Param, String> {
    let mut rest = inner.trim();
    let catch_all = rest.starts_with('*');
    rest = rest.trim_start_matches('*');
    let name_end = rest.find([':', '?', '=']).unwrap_or(rest.len());
    let name = &rest[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!("`{name}` is not a valid parameter name"));
    }
    rest = &rest[name_end..];
    let mut constraints = Vec::new();
    while let Some(after) = rest.strip_prefix(':') {
        let cname_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let cname = &after[..cname_end];
        rest = &after[cname_end..];
        let arg = if rest.starts_with('(') {
            let close = matching_paren(rest)
                .ok_or_else(|| format!("constraint `{cname}` has no closing `)`"))?;
            let arg = &rest[1..close];
            rest = &rest[close + 1..];
            Some(arg)
        } else {
            None
        };
        constraints.push(parse_constraint(cname, arg)?);
    }
    let optional = rest == "?";
    if !optional && !rest.is_empty() {
        if rest.starts_with('=') {
            return Err("default values are not supported".into());
        }
        return Err(format!("unexpected `{rest}`"));
    }
    if catch_all && optional {
        return Err("a catch-all parameter cannot be marked optional (it already is)".into());
    }
    Ok(Param {
        name: name.to_owned(),
        optional,
        catch_all,
        constraints,
    })
}

/// Index of the `)` closing the `(` at `text[0]`, skipping escaped characters and `[...]` classes.
fn matching_paren(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_class = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn parse_constraint(name: &str, arg: Option<&str>) -> Result<Constraint, String> {
    let ints = |arg: Option<&str>, count: usize| -> Result<Vec<i64>, String> {
        let arg = arg.ok_or_else(|| format!("constraint `{name}` needs an argument"))?;
        let values = arg
            .split(',')
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("constraint `{name}`: `{v}` is not a number"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if values.len() != count && !(name.eq_ignore_ascii_case("length") && values.len() == 1) {
            return Err(format!("constraint `{name}` takes {count} argument(s)"));
        }
        Ok(values)
    };
    let non_negative =
        |v: i64| usize::try_from(v).map_err(|_| format!("constraint `{name}`: {v} is negative"));
    let no_arg = |c: Constraint| match arg {
        Some(_) => Err(format!("constraint `{name}` takes no argument")),
        None => Ok(c),
    };
    match name.to_ascii_lowercase().as_str() {
        "int" => no_arg(Constraint::Int),
        "long" => no_arg(Constraint::Long),
        "bool" => no_arg(Constraint::Bool),
        "guid" => no_arg(Constraint::Guid),
        "alpha" => no_arg(Constraint::Alpha),
        "double" | "float" | "decimal" => no_arg(Constraint::Double),
        "datetime" => no_arg(Constraint::DateTime),
        "length" => {
            let v = ints(arg, 2)?;
            let min = non_negative(v[0])?;
            let max = match v.get(1) {
                Some(m) => non_negative(*m)?,
                None => min,
            };
            Ok(Constraint::Length(min, max))
        }
        "minlength" => Ok(Constraint::Length(
            non_negative(ints(arg, 1)?[0])?,
            usize::MAX,
        )),
        "maxlength" => Ok(Constraint::Length(0, non_negative(ints(arg, 1)?[0])?)),
        "min" => Ok(Constraint::Min(ints(arg, 1)?[0])),
        "max" => Ok(Constraint::Max(ints(arg, 1)?[0])),
        "range" => {
            let v = ints(arg, 2)?;
            Ok(Constraint::Range(v[0], v[1]))
        }
        "regex" => {
            let pattern = arg.ok_or("constraint `regex` needs a pattern")?;
            regex::RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map(Constraint::Regex)
                .map_err(|e| format!("constraint `regex`: {e}"))
        }
        "" => Err("empty constraint name".into()),
        other => Err(format!("unknown constraint `{other}`")),
    }
}

/// What a lookup in a [`RouteTable`] found.
#[derive(Debug)]
pub enum RouteMatch<'a, T> {
    /// A route matched path and method.
    Found {
        /// The value registered with the route.
        value: &'a T,
        /// Route parameter values, percent-decoded.
        params: BTreeMap<String, String>,
    },
    /// Some route matched the path but none allows the method.
    MethodNotAllowed {
        /// Methods the path-matching routes allow, upper case.
        allowed: Vec<String>,
    },
    /// No route matched the path.
    NotFound,
}

struct Route<T> {
    template: RouteTemplate,
    methods: Option<Vec<String>>,
    value: T,
}

/// Routes of all HTTP functions, tried most specific first.
pub struct RouteTable<T> {
    routes: Vec<Route<T>>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self { routes: Vec::new() }
    }
}

impl<T> RouteTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route; `methods` of `None` (or empty) allows every method.
    pub fn add(&mut self, template: RouteTemplate, methods: Option<Vec<String>>, value: T) {
        let methods = methods
            .filter(|m| !m.is_empty())
            .map(|m| m.into_iter().map(|x| x.to_ascii_uppercase()).collect());
        self.routes.push(Route {
            template,
            methods,
            value,
        });
        // Stable sort keeps registration (function name) order between equally specific routes.
        self.routes.sort_by_key(|r| r.template.preference());
    }

    /// Finds the route for `method` and a path relative to the route prefix (still percent-encoded).
    pub fn find(&self, method: &str, path: &str) -> RouteMatch<'_, T> {
        let segments = split_path(path);
        let mut allowed: Vec<String> = Vec::new();
        for route in &self.routes {
            let Some(params) = route.template.match_segments(&segments) else {
                continue;
            };
            match &route.methods {
                None => {
                    return RouteMatch::Found {
                        value: &route.value,
                        params,
                    };
                }
                Some(methods) if methods.iter().any(|m| m.eq_ignore_ascii_case(method)) => {
                    return RouteMatch::Found {
                        value: &route.value,
                        params,
                    };
                }
                Some(methods) => {
                    for m in methods {
                        if !allowed.contains(m) {
                            allowed.push(m.clone());
                        }
                    }
                }
            }
        }
        if allowed.is_empty() {
            RouteMatch::NotFound
        } else {
            RouteMatch::MethodNotAllowed { allowed }
        }
    }
}

/// Splits a request path into percent-decoded segments; one trailing slash is ignored, as ASP.NET does.
pub fn split_path(path: &str) -> Vec<String> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return Vec::new();
    }
    path.split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(template: &str, path: &str) -> Option<BTreeMap<String, String>> {
        RouteTemplate::parse(template)
            .unwrap()
            .match_segments(&split_path(path))
    }

    fn p(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn literals_and_parameters() {
        assert_eq!(params("openapi.json", "openapi.json"), p(&[]));
        assert_eq!(params("openapi.json", "OpenAPI.JSON"), p(&[]));
        assert_eq!(params("v1/agents/{id}", "v1/agents/a1"), p(&[("id", "a1")]));
        assert_eq!(params("v1/agents/{id}", "v1/agents"), None);
        assert_eq!(params("v1/agents/{id}", "v1/agents/a/b"), None);
        assert_eq!(
            params("v1/agents/{id}", "v1/agents/a%20b/"),
            p(&[("id", "a b")])
        );
        assert_eq!(params("/v1/x/", "v1/x"), p(&[]));
    }

    #[test]
    fn optional_and_catch_all() {
        assert_eq!(params("v1/environments/{id?}", "v1/environments"), p(&[]));
        assert_eq!(
            params("v1/environments/{id?}", "v1/environments/e1"),
            p(&[("id", "e1")])
        );
        assert_eq!(
            params("v1/environments/{id?}", "v1/environments/e1/x"),
            None
        );
        assert_eq!(
            params("files/{*rest}", "files/a/b/c"),
            p(&[("rest", "a/b/c")])
        );
        assert_eq!(params("files/{*rest}", "files"), p(&[]));
        let err = RouteTemplate::parse("a/{id?}/b").unwrap_err();
        assert!(err.message.contains("must be the last segment"), "{err}");
    }

    #[test]
    fn constraints() {
        assert_eq!(params("items/{id:int}", "items/42"), p(&[("id", "42")]));
        assert_eq!(params("items/{id:int}", "items/4x"), None);
        assert_eq!(params("items/{id:int}", "items/99999999999"), None);
        assert_eq!(
            params("items/{id:long}", "items/99999999999"),
            p(&[("id", "99999999999")])
        );
        let guid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(
            params("items/{id:guid}", &format!("items/{guid}")),
            p(&[("id", guid)])
        );
        assert_eq!(params("items/{id:guid}", "items/nope"), None);
        assert_eq!(
            params("items/{n:alpha}", "items/abcXYZ"),
            p(&[("n", "abcXYZ")])
        );
        assert_eq!(params("items/{n:alpha}", "items/ab1"), None);
        assert_eq!(params("items/{n:length(2,3)}", "items/abcd"), None);
        assert_eq!(
            params("items/{n:int:range(1,5)}", "items/5"),
            p(&[("n", "5")])
        );
        assert_eq!(params("items/{n:int:range(1,5)}", "items/6"), None);
        assert_eq!(params("items/{n:bool}", "items/TRUE"), p(&[("n", "TRUE")]));
    }

    #[test]
    fn regex_constraint_with_alternation() {
        let t = "v1/pipelines/{id}/{action:regex(^(pause|resume|resync)$)}";
        assert_eq!(
            params(t, "v1/pipelines/p1/pause"),
            p(&[("action", "pause"), ("id", "p1")])
        );
        assert_eq!(
            params(t, "v1/pipelines/p1/RESYNC"),
            p(&[("action", "RESYNC"), ("id", "p1")])
        );
        assert_eq!(params(t, "v1/pipelines/p1/pauses"), None);
        assert_eq!(params(t, "v1/pipelines/p1/explode"), None);
        // Unanchored patterns match anywhere, as in ASP.NET.
        assert_eq!(params("x/{v:regex(ab)}", "x/cabd"), p(&[("v", "cabd")]));
        // Character classes and escapes may hold parentheses and slashes.
        assert_eq!(
            params("x/{v:regex(^[()]+\\)?$)}", "x/()"),
            p(&[("v", "()")])
        );
        assert_eq!(params("x/{v:regex(^a/?b$)}/y", "x/ab/y"), p(&[("v", "ab")]));
    }

    #[test]
    fn template_errors() {
        for (t, want) in [
            ("a/{id:nope}", "unknown constraint `nope`"),
            ("a/{id", "unbalanced"),
            ("a/x{id}", "mixes a parameter"),
            ("a/{id}/{id}", "appears twice"),
            ("a/{id=3}", "default values"),
            ("a//b", "empty"),
            ("a/{v:regex(()}", "no closing"),
            ("a/{v:regex([)}", "no closing"),
            ("a/{v:regex(*a)}", "constraint `regex`"),
            ("a/{}", "not a valid parameter name"),
            ("a/{id:int(3)}", "takes no argument"),
        ] {
            let err = RouteTemplate::parse(t).unwrap_err();
            assert!(err.to_string().contains(want), "{t}: {err}");
        }
    }

    #[test]
    fn table_prefers_literals_and_filters_methods() {
        let mut table = RouteTable::new();
        let get = |m: &[&str]| Some(m.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        table.add(
            RouteTemplate::parse("v1/pipelines/{id}/{action}").unwrap(),
            get(&["post"]),
            "actions",
        );
        table.add(
            RouteTemplate::parse("v1/pipelines/{id}/status").unwrap(),
            get(&["get"]),
            "status",
        );
        table.add(
            RouteTemplate::parse("v1/pipelines/{id?}").unwrap(),
            get(&["get", "post"]),
            "pipelines",
        );
        table.add(
            RouteTemplate::parse("items/{n:int}").unwrap(),
            None,
            "by-number",
        );
        table.add(
            RouteTemplate::parse("items/{name}").unwrap(),
            None,
            "by-name",
        );

        let found = |m: &str, path: &str| match table.find(m, path) {
            RouteMatch::Found { value, .. } => Some(*value),
            _ => None,
        };
        assert_eq!(found("GET", "v1/pipelines/p1/status"), Some("status"));
        assert_eq!(found("post", "v1/pipelines/p1/status"), Some("actions"));
        assert_eq!(found("POST", "v1/pipelines/p1/pause"), Some("actions"));
        assert_eq!(found("GET", "v1/pipelines"), Some("pipelines"));
        assert_eq!(found("GET", "items/12"), Some("by-number"));
        assert_eq!(found("GET", "items/twelve"), Some("by-name"));
        match table.find("DELETE", "v1/pipelines/p1") {
            RouteMatch::MethodNotAllowed { allowed } => assert_eq!(allowed, vec!["GET", "POST"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            table.find("GET", "v2/nothing"),
            RouteMatch::NotFound
        ));
    }
}

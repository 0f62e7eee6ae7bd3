//! App settings: in Azure they reach the host and the handler as environment variables.

use std::collections::BTreeMap;

/// The app settings of a run (by default the host process's environment).
#[derive(Debug, Clone, Default)]
pub struct AppSettings {
    values: BTreeMap<String, String>,
}

impl AppSettings {
    /// Settings taken from the current process environment.
    pub fn from_env() -> Self {
        Self {
            values: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// Settings from explicit pairs (for embedding and tests).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Adds or replaces one setting.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// The value of a setting, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Every setting, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Expands `%NAME%` like .NET's `Environment.ExpandEnvironmentVariables`: unknown names stay as written.
    pub fn expand_lenient(&self, text: &str) -> String {
        expand(text, |name| self.get(name))
    }

    /// Expands `%NAME%` as binding properties do: an unknown name is an error naming it.
    pub fn expand_strict(&self, text: &str) -> Result<String, String> {
        // Report the first unresolved name rather than passing `%X%` through to Azure Storage.
        match first_unresolved(text, |n| self.get(n).is_some()) {
            Some(name) => Err(name),
            None => Ok(expand(text, |name| self.get(name))),
        }
    }

    /// The connection string named by a binding's `connection` property, looked up as the host does.
    pub fn connection_string(&self, connection: &str) -> Option<&str> {
        self.get(connection)
            .or_else(|| self.get(&format!("AzureWebJobs{connection}")))
            .filter(|v| !v.trim().is_empty())
    }
}

fn expand<'a>(text: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        match after.find('%') {
            Some(len) if len > 0 => {
                let name = &after[..len];
                out.push_str(&rest[..start]);
                match lookup(name) {
                    Some(value) => out.push_str(value),
                    None => {
                        out.push('%');
                        out.push_str(name);
                        out.push('%');
                    }
                }
                rest = &after[len + 1..];
            }
            _ => {
                out.push_str(&rest[..=start]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn first_unresolved(text: &str, known: impl Fn(&str) -> bool) -> Option<String> {
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        match after.find('%') {
            Some(len) if len > 0 => {
                let name = &after[..len];
                if !known(name) {
                    return Some(name.to_owned());
                }
                rest = &after[len + 1..];
            }
            _ => rest = after,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_known_and_keeps_unknown() {
        let s = AppSettings::from_pairs([("A", "one"), ("B", "two")]);
        assert_eq!(
            s.expand_lenient("--x %A% %B%/%C% 100%"),
            "--x one two/%C% 100%"
        );
        assert_eq!(s.expand_strict("q-%A%").unwrap(), "q-one");
        assert_eq!(s.expand_strict("q-%C%").unwrap_err(), "C");
        assert_eq!(s.expand_strict("plain").unwrap(), "plain");
    }

    #[test]
    fn connection_falls_back_to_azurewebjobs_prefix() {
        let s = AppSettings::from_pairs([("AzureWebJobsStorage", "UseDevelopmentStorage=true")]);
        assert_eq!(
            s.connection_string("Storage"),
            Some("UseDevelopmentStorage=true")
        );
        assert_eq!(
            s.connection_string("AzureWebJobsStorage"),
            Some("UseDevelopmentStorage=true")
        );
        assert_eq!(s.connection_string("Other"), None);
    }
}

//! Quoting for names and values embedded in replication commands.

/// Quotes `name` as a double-quoted identifier, so any slot or option name is taken literally.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes `value` as a single-quoted literal; the replication grammar has no backslash escapes, only `''`.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_double_embedded_quotes() {
        assert_eq!(quote_identifier("slot"), "\"slot\"");
        assert_eq!(quote_identifier("My Slot"), "\"My Slot\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_identifier(""), "\"\"");
    }

    #[test]
    fn literals_double_embedded_quotes() {
        assert_eq!(quote_literal("pub"), "'pub'");
        assert_eq!(quote_literal("o'brien"), "'o''brien'");
        assert_eq!(quote_literal("''"), "''''''");
        assert_eq!(quote_literal("back\\slash"), "'back\\slash'");
    }
}

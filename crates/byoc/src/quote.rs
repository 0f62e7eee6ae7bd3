//! Quoting values into HCL, POSIX shell and comments, so no value can change the text around it.

/// `s` as an HCL quoted string literal: escapes, and `${` / `%{` doubled so Terraform reads
/// them as text rather than as an interpolation or a directive.
pub(crate) fn hcl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `s` as one POSIX shell word: single quotes, with embedded single quotes closed and escaped.
pub(crate) fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `s` made safe for a one-line comment (`#` in HCL and shell, plain text in Markdown):
/// control characters, which could end the comment, become spaces.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_strings_escape_quotes_controls_and_templates() {
        assert_eq!(hcl_string("plain"), r#""plain""#);
        assert_eq!(hcl_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(hcl_string("x\ny\t\u{1}"), r#""x\ny\t\u0001""#);
        assert_eq!(hcl_string("${var.x} %{if}"), r#""$${var.x} %%{if}""#);
        // A lone `$` or `%` is text already and stays single.
        assert_eq!(hcl_string("100% $5"), r#""100% $5""#);
    }

    #[test]
    fn shell_words_survive_single_quotes() {
        assert_eq!(shell_word("abc"), "'abc'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn one_line_removes_line_breaks() {
        assert_eq!(one_line("a\nb\rc"), "a b c");
    }
}

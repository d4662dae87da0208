//! The few bits of PipeWire's relaxed JSON ("SPA JSON") the module arguments need.
//!
//! `pw_properties_new_string` flattens the top level of the module arguments into key/value
//! strings; nested values (`[ ... ]`, `{ ... }`) arrive as their source text. This file splits
//! such an array of scalars (`[ "239.255.77.77:45300" 192.168.1.20:45300, FL FR ]`) into its
//! items. As in PipeWire, items are separated by white space or commas, and strings may be
//! quoted (with `\"` escapes) or bare.

use crate::error::ConfigError;

/// Splits `text`, an SPA JSON array of scalars or a single bare scalar, into its items.
///
/// `key` names the argument in the error returned for an unterminated string or array, or for
/// nested arrays/objects (which no argument of this module takes).
pub fn parse_string_array(key: &'static str, text: &str) -> Result<Vec<String>, ConfigError> {
    let trimmed = text.trim();
    let inner = match trimmed.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .ok_or_else(|| ConfigError::invalid(key, text, "array is missing its closing ']'"))?,
        None => trimmed,
    };
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        match first {
            '"' => {
                chars.next();
                let mut item = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some(escaped) => item.push(escaped),
                            None => break,
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        other => item.push(other),
                    }
                }
                if !closed {
                    return Err(ConfigError::invalid(key, text, "unterminated string"));
                }
                items.push(item);
            }
            ']' | '{' | '}' => {
                return Err(ConfigError::invalid(
                    key,
                    text,
                    "expected a flat list of strings",
                ));
            }
            _ => {
                // A bare item runs to the next separator. One starting with '[' must be a
                // bracketed IPv6 literal ("[ff05::77]:45300"), not a nested array.
                let mut item = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == ',' || c == '"' {
                        break;
                    }
                    item.push(c);
                    chars.next();
                }
                if item.starts_with('[') && !(item.len() > 2 && item[1..].contains(']')) {
                    return Err(ConfigError::invalid(
                        key,
                        text,
                        "expected a flat list of strings",
                    ));
                }
                items.push(item);
            }
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Vec<String> {
        parse_string_array("test", s).unwrap()
    }

    #[test]
    fn quoted_and_bare_items() {
        assert_eq!(parse("[ FL FR ]"), vec!["FL", "FR"]);
        assert_eq!(parse("[FL,FR]"), vec!["FL", "FR"]);
        assert_eq!(
            parse(r#"[ "239.255.77.77:45300" "192.168.1.20:45300" "[ff05::77]:45300" ]"#),
            vec![
                "239.255.77.77:45300",
                "192.168.1.20:45300",
                "[ff05::77]:45300"
            ]
        );
        assert_eq!(parse(r#"[ "a\"b" ]"#), vec!["a\"b"]);
        assert_eq!(parse("single"), vec!["single"]);
        assert_eq!(parse("[ ]"), Vec::<String>::new());
    }

    #[test]
    fn bare_ipv6_literal_keeps_brackets() {
        assert_eq!(parse("[ [::1]:45300 ]"), vec!["[::1]:45300"]);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [r#"[ "open "#, "[ FL FR", "[ [ a ] ]", "[ { a = b } ]"] {
            assert!(parse_string_array("test", bad).is_err(), "{bad}");
        }
    }
}

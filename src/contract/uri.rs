//! A resource contract's URI: a fixed URI, or a template whose `{name}` variables (RFC 6570
//! simple expansion, the only form MCP resource templates need here) stand for typed
//! arguments. A URI a caller names is matched against the template, each variable is
//! decoded and handed to the contract's validators, and the URI sent upstream is expanded
//! again from the values that passed: the upstream reads what was validated, never the
//! caller's spelling of it.
//!
//! INVARIANT: matching is unambiguous. A variable takes only unreserved characters and
//! percent-escapes, and the text after a variable must begin with a reserved character
//! (`/`, `?`, `#`, `:`, `=`, `&`, `,`, `;`, …), so a URI matches a template in at most one way.

use serde_json::{Map, Value};

/// The longest URI taken from a caller.
pub(crate) const MAX_URI: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UriTemplate {
    text: String,
    parts: Vec<Part>,
}

fn unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// Why a URI does not match: said to the caller as "not available", never in detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoMatch;

impl UriTemplate {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > MAX_URI {
            return Err(format!("`uri` must be 1 to {MAX_URI} characters"));
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("`uri` must not hold spaces or control characters".into());
        }
        let scheme_end = text.find(':').ok_or("`uri` needs a scheme, e.g. `runbook://{service}`")?;
        let scheme = &text[..scheme_end];
        if scheme.is_empty()
            || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(format!("`uri`: `{scheme}` is not a URI scheme"));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let (lit, tail) = rest.split_at(open);
            if lit.contains('}') {
                return Err("`uri`: a `}` without its `{`".into());
            }
            if !lit.is_empty() {
                parts.push(Part::Literal(lit.to_string()));
            }
            let close = tail.find('}').ok_or("`uri`: a `{` without its `}`")?;
            let name = &tail[1..close];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`uri`: `{{{name}}}`: only simple variables (`{{name}}`, letters, digits, `_`) are supported"
                ));
            }
            if parts.iter().any(|p| *p == Part::Var(name.to_string())) {
                return Err(format!("`uri`: variable `{name}` appears twice"));
            }
            if let Some(Part::Var(prev)) = parts.last() {
                return Err(format!(
                    "`uri`: `{{{prev}}}{{{name}}}`: two variables need a separator between them"
                ));
            }
            parts.push(Part::Var(name.to_string()));
            rest = &tail[close + 1..];
        }
        if rest.contains('}') {
            return Err("`uri`: a `}` without its `{`".into());
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        for pair in parts.windows(2) {
            if let [Part::Var(v), Part::Literal(l)] = pair
                && l.starts_with(unreserved)
            {
                return Err(format!(
                    "`uri`: after `{{{v}}}` the text must begin with a separator such as `/`, `?`, `=`, `:` (it begins with `{}`), so that a URI matches in one way only",
                    l.chars().next().unwrap_or(' ')
                ));
            }
        }
        if let Some(Part::Var(v)) = parts.first() {
            return Err(format!("`uri` must begin with its scheme, not with `{{{v}}}`"));
        }
        Ok(Self {
            text: text.to_string(),
            parts,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it names one fixed URI (`resources/list`) or a template
    /// (`resources/templates/list`).
    pub(crate) fn is_fixed(&self) -> bool {
        !self.parts.iter().any(|p| matches!(p, Part::Var(_)))
    }

    pub(crate) fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// The variables of `uri`, decoded, if it is an instance of this template.
    pub(crate) fn matches(&self, uri: &str) -> Result<Map<String, Value>, NoMatch> {
        if uri.len() > MAX_URI {
            return Err(NoMatch);
        }
        let mut out = Map::new();
        let mut rest = uri;
        for part in &self.parts {
            match part {
                Part::Literal(l) => rest = rest.strip_prefix(l.as_str()).ok_or(NoMatch)?,
                Part::Var(name) => {
                    let end = rest.find(|c: char| !(unreserved(c) || c == '%')).unwrap_or(rest.len());
                    let (raw, tail) = rest.split_at(end);
                    if raw.is_empty() {
                        return Err(NoMatch);
                    }
                    out.insert(name.clone(), Value::String(decode(raw).ok_or(NoMatch)?));
                    rest = tail;
                }
            }
        }
        if rest.is_empty() { Ok(out) } else { Err(NoMatch) }
    }

    /// The URI for these values (each a string, or a number or boolean written as JSON),
    /// every character but the unreserved ones percent-encoded.
    pub(crate) fn expand(&self, values: &Map<String, Value>) -> Option<String> {
        let mut out = String::with_capacity(self.text.len());
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Var(name) => {
                    let text = match values.get(name)? {
                        Value::String(s) => s.clone(),
                        v @ (Value::Number(_) | Value::Bool(_)) => v.to_string(),
                        _ => return None,
                    };
                    for b in text.bytes() {
                        if unreserved(char::from(b)) {
                            out.push(char::from(b));
                        } else {
                            out.push_str(&format!("%{b:02X}"));
                        }
                    }
                }
            }
        }
        Some(out)
    }
}

/// Percent-decoding to UTF-8 text; `None` for a broken escape or bytes that are not UTF-8.
fn decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i) {
            Some(b'%') => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            Some(b) => {
                out.push(*b);
                i += 1;
            }
            None => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_decode_and_expand_again() {
        let t = UriTemplate::parse("runbook://{service}/pages/{page}").unwrap();
        assert!(!t.is_fixed());
        assert_eq!(t.vars().collect::<Vec<_>>(), ["service", "page"]);
        let m = t.matches("runbook://db/pages/failover%20steps").unwrap();
        assert_eq!(m["service"], "db");
        assert_eq!(m["page"], "failover steps");
        assert_eq!(t.expand(&m).unwrap(), "runbook://db/pages/failover%20steps");
        for bad in [
            "runbook://db/pages/",
            "runbook://db/x/pages/a",
            "runbook://db/pages/a/b",
            "runbook://db/pages/a?x=1",
            "runbook://db/pages/%zz",
            "runbook://db/pages/%ff",
            "other://db/pages/a",
            "",
        ] {
            assert_eq!(t.matches(bad), Err(NoMatch), "{bad}");
        }
        let fixed = UriTemplate::parse("tickets://summary").unwrap();
        assert!(fixed.is_fixed());
        assert!(fixed.matches("tickets://summary").unwrap().is_empty());
        assert!(fixed.matches("tickets://summary2").is_err());
    }

    #[test]
    fn ambiguous_or_unsupported_templates_are_refused() {
        for bad in [
            "",
            "no-scheme/{x}",
            "{x}://a",
            "a://{x}{y}",
            "a://{x}-{y}",
            "a://{x}/{x}",
            "a://{+x}",
            "a://{x,y}",
            "a://{x",
            "a://x}",
            "a://{}",
            "a:// {x}",
        ] {
            assert!(UriTemplate::parse(bad).is_err(), "{bad}");
        }
        assert!(UriTemplate::parse("a://{x}/{y}?q={z}").is_ok());
    }

    proptest::proptest! {
        /// Whatever a caller sends, matching never panics, and what matches expands back to
        /// a URI that matches again with the same values.
        #[test]
        fn matching_is_stable(uri in "[ -~]{0,60}") {
            let t = UriTemplate::parse("r://{a}/x/{b}?q={c}").unwrap();
            if let Ok(m) = t.matches(&uri) {
                let again = t.expand(&m).unwrap();
                proptest::prop_assert_eq!(t.matches(&again).unwrap(), m);
            }
        }

        #[test]
        fn any_value_expands_to_a_uri_that_matches_with_that_value(v in "\\PC{1,20}") {
            let t = UriTemplate::parse("r://{a}/x").unwrap();
            let mut m = Map::new();
            m.insert("a".into(), Value::String(v));
            let uri = t.expand(&m).unwrap();
            proptest::prop_assert_eq!(t.matches(&uri).unwrap(), m);
        }
    }
}

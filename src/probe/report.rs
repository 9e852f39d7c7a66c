//! Reports of `capgate probe` and `capgate tabletop`: a terminal summary, JSON, and JUnit
//! XML for CI. A finding is a denied path that was not denied (or not recorded).

use serde::Serialize;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Pass,
    Finding,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) group: String,
    pub(crate) name: String,
    pub(crate) outcome: Outcome,
    pub(crate) detail: String,
    pub(crate) trace: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) checks: Vec<Check>,
}

impl Report {
    pub(crate) fn count(&self, o: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == o).count()
    }

    pub(crate) fn findings(&self) -> usize {
        self.count(Outcome::Finding)
    }

    pub(crate) fn to_json(&self, kind: &str) -> serde_json::Value {
        json!({
            "kind": kind,
            "passed": self.count(Outcome::Pass),
            "findings": self.findings(),
            "skipped": self.count(Outcome::Skipped),
            "checks": self.checks,
        })
    }

    /// One line per group, then every finding with its detail.
    pub(crate) fn summary(&self, title: &str) -> String {
        let mut out = format!("{title}\n");
        let mut groups: Vec<&str> = self.checks.iter().map(|c| c.group.as_str()).collect();
        groups.sort_unstable();
        groups.dedup();
        let width = groups.iter().map(|g| g.chars().count()).max().unwrap_or(0);
        for g in groups {
            let of = |o| self.checks.iter().filter(|c| c.group == g && c.outcome == o).count();
            out.push_str(&format!(
                "  {g:<width$} {:>4} passed  {:>3} findings  {:>3} skipped\n",
                of(Outcome::Pass),
                of(Outcome::Finding),
                of(Outcome::Skipped)
            ));
        }
        for c in self.checks.iter().filter(|c| c.outcome == Outcome::Finding) {
            out.push_str(&format!("  FINDING [{}] {}: {}", c.group, c.name, c.detail));
            if let Some(t) = &c.trace {
                out.push_str(&format!(" (trace {t})"));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "{} passed, {} findings, {} skipped\n",
            self.count(Outcome::Pass),
            self.findings(),
            self.count(Outcome::Skipped)
        ));
        out
    }

    pub(crate) fn to_junit(&self, suite: &str) -> String {
        let mut groups: Vec<&str> = self.checks.iter().map(|c| c.group.as_str()).collect();
        groups.sort_unstable();
        groups.dedup();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!(
            "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
            xml(suite),
            self.checks.len(),
            self.findings(),
            self.count(Outcome::Skipped)
        ));
        for g in groups {
            let cs: Vec<&Check> = self.checks.iter().filter(|c| c.group == g).collect();
            out.push_str(&format!(
                "  <testsuite name=\"{}.{}\" tests=\"{}\" failures=\"{}\">\n",
                xml(suite),
                xml(g),
                cs.len(),
                cs.iter().filter(|c| c.outcome == Outcome::Finding).count()
            ));
            for c in cs {
                out.push_str(&format!(
                    "    <testcase classname=\"{}.{}\" name=\"{}\"",
                    xml(suite),
                    xml(g),
                    xml(&c.name)
                ));
                match c.outcome {
                    Outcome::Pass => out.push_str("/>\n"),
                    Outcome::Skipped => out.push_str(&format!("><skipped message=\"{}\"/></testcase>\n", xml(&c.detail))),
                    Outcome::Finding => out.push_str(&format!(
                        "><failure message=\"{}\">trace {}</failure></testcase>\n",
                        xml(&c.detail),
                        xml(c.trace.as_deref().unwrap_or("-"))
                    )),
                }
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}

/// XML attribute/text escaping; control characters (invalid in XML 1.0) become `?`.
fn xml(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c if c.is_control() && c != '\n' && c != '\t' => "?".to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_escapes_and_counts() {
        let r = Report {
            checks: vec![
                Check {
                    group: "identity".into(),
                    name: "a <b> & \"c\"".into(),
                    outcome: Outcome::Finding,
                    detail: "x\u{0}y".into(),
                    trace: Some("t1".into()),
                },
                Check {
                    group: "identity".into(),
                    name: "ok".into(),
                    outcome: Outcome::Pass,
                    detail: String::new(),
                    trace: None,
                },
            ],
        };
        let x = r.to_junit("probe");
        assert!(x.contains("tests=\"2\" failures=\"1\""));
        assert!(x.contains("a &lt;b&gt; &amp; &quot;c&quot;"));
        assert!(x.contains("x?y"));
        assert!(!x.contains('\u{0}'));
        assert_eq!(r.findings(), 1);
        assert!(r.summary("probe").contains("FINDING [identity]"));
    }
}

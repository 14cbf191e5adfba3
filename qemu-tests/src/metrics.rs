//! Reads single samples out of a Prometheus text exposition (what the
//! agent serves on `:7480/metrics`). The benchmark needs only "the value of
//! metric X with labels Y", so this is a lookup, not a full parser: comment
//! lines are skipped, label values may contain escaped quotes and commas.

use std::collections::BTreeMap;

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses every sample line it can; lines that are not valid samples are
/// skipped because an exposition may carry types this lookup does not model.
#[must_use]
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

/// The value of the first sample named `name` whose labels include all of `labels`.
#[must_use]
pub fn find_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_samples(text).into_iter().find_map(|s| {
        let matches = s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v));
        matches.then_some(s.value)
    })
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_ascii_whitespace())?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after_brace)?;
        labels = parsed;
        rest = remaining;
    }
    let value_text = rest.split_ascii_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the labels and the text after `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        labels.insert(key, value);
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXPOSITION: &str = "\
# HELP cairn_process_resident_bytes Resident set size.
# TYPE cairn_process_resident_bytes gauge
cairn_process_resident_bytes{process=\"cairn-init\"} 1835008
cairn_process_resident_bytes{process=\"cairnd\"} 9.4e6
cairn_uptime_seconds 12.5
weird{a=\"x\\\"}y\",b=\"2\"} 7 1700000000
# EOF
";

    #[test]
    fn finds_resident_bytes_by_process_label() {
        assert_eq!(
            find_sample(
                EXPOSITION,
                "cairn_process_resident_bytes",
                &[("process", "cairn-init")]
            ),
            Some(1_835_008.0)
        );
        assert_eq!(
            find_sample(
                EXPOSITION,
                "cairn_process_resident_bytes",
                &[("process", "cairnd")]
            ),
            Some(9.4e6)
        );
        assert_eq!(
            find_sample(EXPOSITION, "cairn_uptime_seconds", &[]),
            Some(12.5)
        );
        assert_eq!(
            find_sample(
                EXPOSITION,
                "cairn_process_resident_bytes",
                &[("process", "x")]
            ),
            None
        );
    }

    #[test]
    fn escaped_quotes_in_label_values_do_not_end_the_value() {
        assert_eq!(
            find_sample(EXPOSITION, "weird", &[("a", "x\"}y"), ("b", "2")]),
            Some(7.0)
        );
    }

    proptest! {
        #[test]
        fn rendered_samples_parse_back(
            name in "[a-z_][a-z0-9_]{0,20}",
            labels in proptest::collection::btree_map("[a-z_][a-z0-9_]{0,8}", "[ -~]{0,12}", 0..4),
            value in -1.0e12f64..1.0e12,
        ) {
            let rendered_labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            let line = if labels.is_empty() {
                format!("{name} {value}\n")
            } else {
                format!("{name}{{{}}} {value}\n", rendered_labels.join(","))
            };
            let parsed = parse_samples(&line);
            prop_assert_eq!(parsed, vec![Sample { name, labels, value }]);
        }
    }
}

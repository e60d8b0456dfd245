//! A strict reader of the Prometheus text exposition format (version 0.0.4), for tests: every
//! family has one TYPE (and at most one HELP) before its samples, a family's lines are
//! contiguous, no series appears twice, names and labels are well formed, counters are
//! non-negative, and every histogram series has increasing `le` bounds ending in `+Inf`,
//! cumulative counts, and `_count` equal to its `+Inf` bucket, with a `_sum`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name to type.
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// Samples named `name` whose labels include every pair of `labels`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The one sample named `name` with these labels (panics when there are none or several).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self.find(name, labels).collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0].value
    }

    /// Names of every sample line.
    pub fn names(&self) -> HashSet<String> {
        self.samples.iter().map(|s| s.name.clone()).collect()
    }
}

fn valid_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if v
            .chars()
            .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            Err(format!("value {v:?} is not a number"))
        }
        _ => v
            .parse()
            .map_err(|_| format!("value {v:?} is not a number")),
    }
}

/// Labels between braces; returns them and the rest of the line.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = rest[..eq].trim();
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {name} value is not quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                value.push(match c {
                    'n' => '\n',
                    '\\' => '\\',
                    '"' => '"',
                    other => return Err(format!("bad escape \\{other} in label {name}")),
                });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(eq + 1 + i + 1);
                break;
            } else if c == '\n' {
                return Err("newline in a label value".into());
            } else {
                value.push(c);
            }
        }
        let end = end.ok_or_else(|| format!("label {name} value not closed"))?;
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = rest[end..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// The family a sample name belongs to, given the types declared so far.
fn family_of(name: &str, types: &HashMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base.to_string();
        }
    }
    name.to_string()
}

/// Parses `text` strictly; the error names the line.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut exp = Exposition::default();
    let mut help: HashSet<String> = HashSet::new();
    let mut closed: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut seen: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    let mut enter = |family: &str, closed: &mut HashSet<String>| -> Result<(), String> {
        if current.as_deref() != Some(family) {
            if closed.contains(family) {
                return Err(format!("family {family} is not contiguous"));
            }
            if let Some(prev) = current.replace(family.to_string()) {
                closed.insert(prev);
            }
        }
        Ok(())
    };
    let mut sampled: HashSet<String> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let mut parts = c.trim_start().splitn(3, ' ');
            let kind = parts.next().unwrap_or_default();
            if kind != "HELP" && kind != "TYPE" {
                continue;
            }
            let name = parts.next().unwrap_or_default();
            let rest = parts.next().unwrap_or_default();
            if !valid_metric_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            enter(name, &mut closed).map_err(at)?;
            if kind == "HELP" {
                if !help.insert(name.to_string()) {
                    return Err(at(format!("HELP of {name} twice")));
                }
            } else {
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest) {
                    return Err(at(format!("unknown type {rest:?}")));
                }
                if sampled.contains(name) {
                    return Err(at(format!("TYPE of {name} after its samples")));
                }
                if exp
                    .types
                    .insert(name.to_string(), rest.to_string())
                    .is_some()
                {
                    return Err(at(format!("TYPE of {name} twice")));
                }
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(r) => parse_labels(r).map_err(at)?,
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| at(format!("bad timestamp {ts:?}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &exp.types);
        let Some(kind) = exp.types.get(&family).cloned() else {
            return Err(at(format!("sample of {family} without a TYPE")));
        };
        enter(&family, &mut closed).map_err(at)?;
        sampled.insert(family.clone());
        if kind != "histogram" && name != family {
            return Err(at(format!("{name} in family {family}")));
        }
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("counter below zero or NaN".into()));
        }
        if kind == "histogram" && (name.ends_with("_bucket") != labels.contains_key("le")) {
            return Err(at("le belongs on _bucket samples only".into()));
        }
        if !seen.insert((name.to_string(), labels.clone())) {
            return Err(at("series twice".into()));
        }
        exp.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    check_histograms(&exp)?;
    Ok(exp)
}

fn check_histograms(exp: &Exposition) -> Result<(), String> {
    for (family, _) in exp.types.iter().filter(|(_, t)| *t == "histogram") {
        let mut groups: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in exp.find(&format!("{family}_bucket"), &[]) {
            let mut key = s.labels.clone();
            let le = key.remove("le").unwrap_or_default();
            groups
                .entry(key)
                .or_default()
                .push((parse_value(&le)?, s.value));
        }
        for (labels, buckets) in &groups {
            let what = format!("{family}{labels:?}");
            if buckets
                .windows(2)
                .any(|w| w[0].0.is_nan() || w[0].0 >= w[1].0)
            {
                return Err(format!("{what}: le bounds not increasing"));
            }
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{what}: bucket counts not cumulative"));
            }
            let last = buckets.last().ok_or_else(|| format!("{what}: no bucket"))?;
            if last.0 != f64::INFINITY {
                return Err(format!("{what}: no le=\"+Inf\" bucket"));
            }
            let with = |suffix: &str| {
                exp.samples
                    .iter()
                    .find(|s| s.name == format!("{family}{suffix}") && &s.labels == labels)
                    .map(|s| s.value)
                    .ok_or_else(|| format!("{what}: no {suffix}"))
            };
            if with("_count")? != last.1 {
                return Err(format!("{what}: _count differs from the +Inf bucket"));
            }
            with("_sum")?;
        }
        for suffix in ["_count", "_sum"] {
            for s in exp.find(&format!("{family}{suffix}"), &[]) {
                if !groups.contains_key(&s.labels) {
                    return Err(format!("{family}{suffix}{:?} without buckets", s.labels));
                }
            }
        }
    }
    Ok(())
}

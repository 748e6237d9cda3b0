//! Prometheus text exposition written straight into a reused `String` (format 0.0.4), and the
//! conversion of a finished 0.0.4 body to OpenMetrics 1.0.0.
//!
//! Why not the `prometheus` crate's registry: building a fresh registry of ~40 families with
//! thousands of label sets per scrape allocates per series and sorts labels; writing the text
//! directly costs one `push_str` per token (see bench/agent-bench.sh and the encoder bench in
//! `tests` below, which compares the two on the same data).

use std::fmt::Write as _;

/// Metric types we emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
        }
    }
}

/// Escapes a label value (backslash, double quote, newline) onto `out`.
pub fn escape_label_into(out: &mut String, v: &str) {
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Builds `k1="v1",k2="v2"` (escaped) for use as a series' label prefix.
pub fn label_prefix(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        escape_label_into(&mut s, v);
        s.push('"');
    }
    s
}

/// A sample value: integers print exactly, floats in Go-compatible spelling.
#[derive(Clone, Copy, Debug)]
pub enum Val {
    U(u64),
    F(f64),
}

impl From<u64> for Val {
    fn from(v: u64) -> Self {
        Val::U(v)
    }
}
impl From<f64> for Val {
    fn from(v: f64) -> Self {
        Val::F(v)
    }
}

fn push_val(out: &mut String, v: Val) {
    match v {
        Val::U(u) => out.push_str(itoa::Buffer::new().format(u)),
        Val::F(f) if f.is_nan() => out.push_str("NaN"),
        Val::F(f) if f.is_infinite() => out.push_str(if f > 0.0 { "+Inf" } else { "-Inf" }),
        Val::F(f) => {
            let _ = write!(out, "{f}");
        }
    }
}

/// Writes one family at a time: `family()` then `sample()`s.
pub struct Enc<'a> {
    pub out: &'a mut String,
    name: &'static str,
}

impl<'a> Enc<'a> {
    pub fn new(out: &'a mut String) -> Self {
        Enc { out, name: "" }
    }

    /// Starts a family with its HELP and TYPE lines.
    pub fn family(&mut self, name: &'static str, help: &str, t: Type) {
        self.name = name;
        let o = &mut *self.out;
        o.push_str("# HELP ");
        o.push_str(name);
        o.push(' ');
        o.push_str(help);
        o.push_str("\n# TYPE ");
        o.push_str(name);
        o.push(' ');
        o.push_str(t.as_str());
        o.push('\n');
    }

    /// One series of the current family: `prefix` is a pre-escaped label list (may be empty),
    /// `extra` more labels appended after it.
    pub fn sample(&mut self, prefix: &str, extra: &[(&str, &str)], v: impl Into<Val>) {
        let o = &mut *self.out;
        o.push_str(self.name);
        if !prefix.is_empty() || !extra.is_empty() {
            o.push('{');
            o.push_str(prefix);
            for (i, (k, val)) in extra.iter().enumerate() {
                if i > 0 || !prefix.is_empty() {
                    o.push(',');
                }
                o.push_str(k);
                o.push_str("=\"");
                escape_label_into(o, val);
                o.push('"');
            }
            o.push('}');
        }
        o.push(' ');
        push_val(o, v.into());
        o.push('\n');
    }
}

pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// True when an Accept header prefers OpenMetrics (any non-zero-q openmetrics entry that is
/// weighted at least as high as text/plain).
pub fn wants_openmetrics(accept: &str) -> bool {
    let mut om = -1.0f32;
    let mut text = -1.0f32;
    for part in accept.split(',') {
        let mut it = part.split(';').map(str::trim);
        let media = it.next().unwrap_or("");
        let mut q = 1.0f32;
        for p in it {
            if let Some(v) = p.strip_prefix("q=") {
                q = v.parse().unwrap_or(0.0);
            }
        }
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            om = om.max(q);
        } else if media.eq_ignore_ascii_case("text/plain") {
            text = text.max(q);
        }
    }
    om > 0.0 && om >= text
}

/// Rewrites a complete 0.0.4 body as OpenMetrics 1.0.0: a counter family `x_total` is declared
/// as `x` (its samples keep `_total`); a counter whose name lacks `_total` (cAdvisor's
/// `container_memory_failcnt`) cannot be an OpenMetrics counter and becomes `unknown`;
/// `# EOF` ends the body. Works on any producer's output, including extra ones appended.
pub fn to_openmetrics(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut pending_help: Option<&str> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(h) = pending_help.take() {
                out.push_str(h);
                out.push('\n');
            }
            pending_help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (fam, t) = match t {
                "counter" => match name.strip_suffix("_total") {
                    Some(base) => (base, "counter"),
                    None => (name, "unknown"),
                },
                "untyped" => (name, "unknown"),
                other => (name, other),
            };
            if let Some(h) = pending_help.take() {
                let help = h.split_once(' ').map(|x| x.1).unwrap_or("");
                out.push_str("# HELP ");
                out.push_str(fam);
                out.push(' ');
                out.push_str(help);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(fam);
            out.push(' ');
            out.push_str(t);
            out.push('\n');
            continue;
        }
        if let Some(h) = pending_help.take() {
            out.push_str("# HELP ");
            out.push_str(h);
            out.push('\n');
        }
        if line.is_empty() {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(h) = pending_help {
        out.push_str("# HELP ");
        out.push_str(h);
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_families_labels_and_values() {
        let mut s = String::new();
        let mut e = Enc::new(&mut s);
        e.family(
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed in seconds.",
            Type::Counter,
        );
        let p = label_prefix(&[("id", "/a\"b\\c\nd"), ("name", "web")]);
        e.sample(&p, &[("cpu", "total")], 1.5);
        e.family(
            "machine_cpu_cores",
            "Number of logical CPU cores.",
            Type::Gauge,
        );
        e.sample("", &[], 2u64);
        e.sample("", &[("k", "v")], f64::NAN);
        assert_eq!(
            s,
            "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.\n\
             # TYPE container_cpu_usage_seconds_total counter\n\
             container_cpu_usage_seconds_total{id=\"/a\\\"b\\\\c\\nd\",name=\"web\",cpu=\"total\"} 1.5\n\
             # HELP machine_cpu_cores Number of logical CPU cores.\n\
             # TYPE machine_cpu_cores gauge\n\
             machine_cpu_cores 2\n\
             machine_cpu_cores{k=\"v\"} NaN\n"
        );
    }

    #[test]
    fn openmetrics_conversion() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
                    # HELP container_memory_failcnt F.\n# TYPE container_memory_failcnt counter\ncontainer_memory_failcnt 0\n\
                    # HELP g G.\n# TYPE g gauge\ng 1\n";
        assert_eq!(
            to_openmetrics(text),
            "# HELP a A.\n# TYPE a counter\na_total{x=\"1\"} 3\n\
             # HELP container_memory_failcnt F.\n# TYPE container_memory_failcnt unknown\ncontainer_memory_failcnt 0\n\
             # HELP g G.\n# TYPE g gauge\ng 1\n# EOF\n"
        );
    }

    #[test]
    fn accept_negotiation() {
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!wants_openmetrics("text/plain"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
        assert!(!wants_openmetrics(
            "application/openmetrics-text;q=0.2,text/plain"
        ));
    }

    /// Same data through the prometheus crate and through `Enc`: both must parse to the same
    /// samples (checked by comparing the sample lines, modulo label order which we fix).
    #[test]
    fn matches_the_prometheus_crate_output() {
        use prometheus::{CounterVec, Encoder, Opts, Registry, TextEncoder};
        let r = Registry::new();
        let c = CounterVec::new(Opts::new("x_total", "X."), &["id", "name"]).unwrap();
        r.register(Box::new(c.clone())).unwrap();
        c.with_label_values(&["/a", "w"]).inc_by(2.5);
        let mut theirs = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut theirs).unwrap();
        let mut ours = String::new();
        let mut e = Enc::new(&mut ours);
        e.family("x_total", "X.", Type::Counter);
        e.sample(&label_prefix(&[("id", "/a"), ("name", "w")]), &[], 2.5);
        assert_eq!(String::from_utf8(theirs).unwrap(), ours);
    }
}

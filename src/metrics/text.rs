//! The exposition writer for the tracker's families, which are nearly all of a scrape at
//! scale (10 000 orgs are some 80 000 series).
//!
//! Writes series lines straight into the response, byte for byte what prometheus-client 0.26
//! writes for the same family, in either format it speaks: OpenMetrics 1.0 text
//! (`text::encode_registry`) or the Prometheus text format 0.0.4 (`prometheus_text::encode`).
//! The tests hold it to that by encoding random families both ways. The library's
//! per-series encoder objects cost some 1 700 instructions a line; this, a few hundred.
//! It owns formatting only: which series exist is the caller's business.

/// The prefix of every metric name (`Registry::with_prefix` of the same word).
pub const PREFIX: &str = "ratewarden";

/// Which exposition format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: counters typed without `_total`, the `# EOF` left to the caller.
    OpenMetrics,
    /// Prometheus text 0.0.4 (`text/plain; version=0.0.4`).
    Classic,
}

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    Histogram,
}

/// One family: its series lines, gathered apart from the exposition so the caller can fill
/// several families in one walk over the orgs, then [`Family::write`] them in turn.
pub struct Family {
    /// The name with its prefix.
    name: String,
    help: String,
    ty: Type,
    format: Format,
    lines: String,
}

/// The `le` label values of `bounds` then `+Inf`, as `format` writes them.
pub fn le_values(format: Format, bounds: &[f64]) -> Vec<String> {
    bounds
        .iter()
        .map(|&b| match format {
            Format::OpenMetrics => dtoa::Buffer::new().format(b).to_owned(),
            Format::Classic => go_float(b),
        })
        .chain(["+Inf".to_owned()])
        .collect()
}

impl Family {
    /// Family `name` (without the prefix), with no series yet.
    pub fn new(format: Format, name: &str, help: &str, ty: Type) -> Self {
        Family {
            name: format!("{PREFIX}_{name}"),
            help: help.to_owned(),
            ty,
            format,
            lines: String::new(),
        }
    }

    /// Appends the family to `out`: its `# HELP` and `# TYPE` lines, then its series.
    pub fn write(&self, out: &mut String) {
        let classic = self.format == Format::Classic;
        let total = classic && self.ty == Type::Counter;
        for (head, tail) in [("# HELP ", None), ("# TYPE ", Some(self.ty))] {
            out.push_str(head);
            out.push_str(&self.name);
            if total {
                out.push_str("_total");
            }
            out.push(' ');
            match tail {
                None if classic => escape(out, &self.help, false),
                None => out.push_str(&self.help),
                Some(Type::Counter) => out.push_str("counter"),
                Some(Type::Gauge) => out.push_str("gauge"),
                Some(Type::Histogram) => out.push_str("histogram"),
            }
            out.push('\n');
        }
        out.push_str(&self.lines);
    }

    /// A counter or gauge series of integer value `v`.
    pub fn int(&mut self, labels: &[(&str, &str)], v: impl itoa::Integer) {
        self.name_labels(None, labels, None);
        self.lines.push(' ');
        self.lines.push_str(itoa::Buffer::new().format(v));
        self.lines.push('\n');
    }

    /// A gauge series of float value `v`.
    pub fn float(&mut self, labels: &[(&str, &str)], v: f64) {
        self.name_labels(None, labels, None);
        self.lines.push(' ');
        self.push_f64(v);
        self.lines.push('\n');
    }

    /// A histogram series: `le` from [`le_values`] (`+Inf` last), `counts` per bucket
    /// (not cumulative); buckets past the shorter of the two are left out.
    pub fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        sum: f64,
        count: u64,
        le: &[String],
        counts: &[u64],
    ) {
        let classic = self.format == Format::Classic;
        if !classic {
            self.sum_count(labels, sum, count);
        }
        let mut cumulative = 0u64;
        for (le, n) in le.iter().zip(counts) {
            cumulative += n;
            self.name_labels(Some("_bucket"), labels, Some(le));
            self.lines.push(' ');
            self.lines.push_str(itoa::Buffer::new().format(cumulative));
            self.lines.push('\n');
        }
        if classic {
            self.sum_count(labels, sum, count);
        }
    }

    fn sum_count(&mut self, labels: &[(&str, &str)], sum: f64, count: u64) {
        self.name_labels(Some("_sum"), labels, None);
        self.lines.push(' ');
        self.push_f64(sum);
        self.lines.push('\n');
        self.name_labels(Some("_count"), labels, None);
        self.lines.push(' ');
        self.lines.push_str(itoa::Buffer::new().format(count));
        self.lines.push('\n');
    }

    /// The series name (with `suffix`, or `_total` for a counter) and its labels; `le` goes
    /// first in OpenMetrics and last in the classic format, as the library places it.
    fn name_labels(&mut self, suffix: Option<&str>, labels: &[(&str, &str)], le: Option<&str>) {
        let out = &mut self.lines;
        out.push_str(&self.name);
        match suffix {
            Some(s) => out.push_str(s),
            None if self.ty == Type::Counter => out.push_str("_total"),
            None => {}
        }
        let le = le.map(|v| ("le", v));
        let (first, last) = if self.format == Format::Classic {
            (None, le)
        } else {
            (le, None)
        };
        let mut open = true;
        for (k, v) in first.iter().chain(labels).chain(last.iter()) {
            out.push(if open { '{' } else { ',' });
            open = false;
            out.push_str(k);
            out.push_str("=\"");
            escape(out, v, true);
            out.push('"');
        }
        if !open {
            out.push('}');
        }
    }

    fn push_f64(&mut self, v: f64) {
        let mut buf = dtoa::Buffer::new();
        let s = match (self.format, v.is_finite()) {
            (Format::OpenMetrics, _) => buf.format(v),
            (Format::Classic, true) => buf.format_finite(v),
            (Format::Classic, false) => nonfinite(v),
        };
        self.lines.push_str(s);
    }
}

/// Appends `s`, escaping backslash and newline (and, in label values, the double quote).
fn escape(out: &mut String, s: &str, quote: bool) {
    // Label values are short (org and app names): a plain loop beats a SIMD search here.
    let special = |b: u8| b == b'\\' || b == b'\n' || (quote && b == b'"');
    if !s.bytes().any(special) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn nonfinite(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v.is_sign_positive() {
        "+Inf"
    } else {
        "-Inf"
    }
}

/// `v` as Go's `strconv.FormatFloat(v, 'g', -1, 64)`, which the classic format uses for `le`
/// (Prometheus itself is written in Go): whole numbers below 1e6 as integers, exponent
/// notation outside [1e-4, 1e6) with a signed two-digit exponent.
fn go_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e6 {
        return itoa::Buffer::new().format(v as i64).to_owned();
    }
    if (1e-4..1e6).contains(&v.abs()) {
        return v.to_string();
    }
    if !v.is_finite() {
        return nonfinite(v).to_owned();
    }
    let sci = format!("{v:e}");
    match sci.split_once('e') {
        Some((mantissa, exp)) => match exp.parse::<i32>() {
            Ok(e) => format!("{mantissa}e{e:+03}"),
            Err(_) => sci,
        },
        None => sci,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::MetricType;
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::registry::Registry;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Values {
        Counter(Vec<u64>),
        GaugeInt(Vec<i64>),
        GaugeFloat(Vec<f64>),
        Histogram {
            bounds: Vec<f64>,
            series: Vec<(f64, Vec<u64>)>,
        },
    }

    #[derive(Clone, Debug)]
    struct Fam {
        name: &'static str,
        help: String,
        labels: Vec<Vec<(String, String)>>,
        values: Values,
    }

    /// The families, encoded by prometheus-client.
    #[derive(Debug)]
    struct Reference(Vec<Fam>);

    impl Collector for Reference {
        fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
            for f in &self.0 {
                let ty = match f.values {
                    Values::Counter(_) => MetricType::Counter,
                    Values::GaugeInt(_) | Values::GaugeFloat(_) => MetricType::Gauge,
                    Values::Histogram { .. } => MetricType::Histogram,
                };
                let mut m = enc.encode_descriptor(f.name, &f.help, None, ty)?;
                for (i, labels) in f.labels.iter().enumerate() {
                    let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (&**k, &**v)).collect();
                    let s = m.encode_family(&l)?;
                    match &f.values {
                        Values::Counter(v) => ConstCounter::new(v[i]).encode(s)?,
                        Values::GaugeInt(v) => ConstGauge::new(v[i]).encode(s)?,
                        Values::GaugeFloat(v) => ConstGauge::new(v[i]).encode(s)?,
                        Values::Histogram { bounds, series } => {
                            let (sum, counts) = &series[i];
                            let buckets: Vec<(f64, u64)> = bounds
                                .iter()
                                .copied()
                                .chain([f64::INFINITY])
                                .zip(counts.iter().copied())
                                .collect();
                            let mut s = s;
                            s.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                                *sum,
                                counts.iter().sum(),
                                &buckets,
                                None,
                            )?
                        }
                    }
                }
            }
            Ok(())
        }
    }

    fn ours(fams: &[Fam], format: Format) -> String {
        let mut out = String::new();
        for f in fams {
            let ty = match f.values {
                Values::Counter(_) => Type::Counter,
                Values::GaugeInt(_) | Values::GaugeFloat(_) => Type::Gauge,
                Values::Histogram { .. } => Type::Histogram,
            };
            let le = match &f.values {
                Values::Histogram { bounds, .. } => le_values(format, bounds),
                _ => vec![],
            };
            let mut m = Family::new(format, f.name, &f.help, ty);
            for (i, labels) in f.labels.iter().enumerate() {
                let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (&**k, &**v)).collect();
                match &f.values {
                    Values::Counter(v) => m.int(&l, v[i]),
                    Values::GaugeInt(v) => m.int(&l, v[i]),
                    Values::GaugeFloat(v) => m.float(&l, v[i]),
                    Values::Histogram { series, .. } => {
                        let (sum, counts) = &series[i];
                        m.histogram(&l, *sum, counts.iter().sum(), &le, counts)
                    }
                }
            }
            m.write(&mut out);
        }
        out
    }

    fn library(fams: &[Fam], format: Format) -> String {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(Reference(fams.to_vec())));
        let mut out = String::new();
        let done = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode_registry(&mut out, &registry)
            }
            Format::Classic => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            }
        };
        assert!(done.is_ok());
        out
    }

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            (0u32..2_000_000).prop_map(f64::from),
            (-1_000_000i64..1_000_000).prop_map(|n| n as f64 / 1000.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::NAN),
            Just(0.0),
            Just(1e-5),
            Just(2.5e7),
        ]
    }

    fn label_value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_.-]{0,12}",
            "[a-z\"\\\\\n é💥]{0,8}",
            Just("__overflow__".to_owned()),
        ]
    }

    fn labels(n: usize) -> impl Strategy<Value = Vec<Vec<(String, String)>>> {
        let keys = prop::sample::subsequence(vec!["org", "app", "dimension", "outcome"], 0..=3);
        (
            keys,
            prop::collection::vec(prop::collection::vec(label_value(), 3), n),
        )
            .prop_map(|(keys, values)| {
                values
                    .into_iter()
                    .map(|vs| {
                        keys.iter()
                            .zip(vs)
                            .map(|(k, v)| (k.to_string(), v))
                            .collect()
                    })
                    .collect()
            })
    }

    fn family() -> impl Strategy<Value = Fam> {
        let help = prop_oneof!["[A-Za-z ,()]{0,30}", "[a-z\\\\\n\"]{0,10}"];
        (0usize..4, help, 0usize..4).prop_flat_map(|(kind, help, n)| {
            let values = match kind {
                0 => prop::collection::vec(any::<u64>(), n)
                    .prop_map(Values::Counter)
                    .boxed(),
                1 => prop::collection::vec(any::<i64>(), n)
                    .prop_map(Values::GaugeInt)
                    .boxed(),
                2 => prop::collection::vec(float(), n)
                    .prop_map(Values::GaugeFloat)
                    .boxed(),
                _ => prop::collection::vec(float().prop_filter("finite", |b| b.is_finite()), 0..5)
                    .prop_flat_map(move |mut bounds| {
                        bounds.sort_by(f64::total_cmp);
                        bounds.dedup();
                        let k = bounds.len() + 1;
                        let series = (float(), prop::collection::vec(0u64..1000, k));
                        prop::collection::vec(series, n).prop_map(move |series| Values::Histogram {
                            bounds: bounds.clone(),
                            series,
                        })
                    })
                    .boxed(),
            };
            let name = ["usage", "requests", "job_duration_seconds", "x"][kind];
            (values, labels(n)).prop_map(move |(values, labels)| Fam {
                name,
                help: help.clone(),
                labels,
                values,
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Byte for byte what prometheus-client writes, in both formats.
        #[test]
        fn writes_what_prometheus_client_writes(fams in prop::collection::vec(family(), 1..4)) {
            for format in [Format::OpenMetrics, Format::Classic] {
                prop_assert_eq!(ours(&fams, format), library(&fams, format), "{:?}", format);
            }
        }
    }

    #[test]
    fn a_histogram_reads_as_the_library_writes_it() {
        let fams = [Fam {
            name: "job_duration_seconds",
            help: "Duration of finished jobs".into(),
            labels: vec![vec![("org".into(), "acme".into())]],
            values: Values::Histogram {
                bounds: vec![0.5, 1.0, 1e6, 2.5e-5],
                series: vec![(5.0, vec![0, 1, 0, 0, 2])],
            },
        }];
        let classic = ours(&fams, Format::Classic);
        assert!(
            classic
                .contains("ratewarden_job_duration_seconds_bucket{org=\"acme\",le=\"1e+06\"} 1\n"),
            "{classic}"
        );
        assert!(
            classic
                .contains("ratewarden_job_duration_seconds_bucket{org=\"acme\",le=\"+Inf\"} 3\n"),
            "{classic}"
        );
        let om = ours(&fams, Format::OpenMetrics);
        assert!(om.starts_with("# HELP ratewarden_job_duration_seconds Duration of finished jobs\n# TYPE ratewarden_job_duration_seconds histogram\nratewarden_job_duration_seconds_sum{org=\"acme\"} 5.0\n"), "{om}");
        assert_eq!(classic, library(&fams, Format::Classic));
        assert_eq!(om, library(&fams, Format::OpenMetrics));
    }
}

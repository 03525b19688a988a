//! A [`Sample`] as OpenMetrics text, through `prometheus-client`'s encoder
//! (a [`Collector`] over the sample), so the escaping, the `_total` suffix
//! and the `# EOF` trailer are the library's, not ours.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::{Kind, Sample};

#[derive(Debug)]
struct SampleCollector(Sample);

impl Collector for SampleCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for f in &self.0.families {
            let kind = match f.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut family = encoder.encode_descriptor(f.name, f.help, None, kind)?;
            match f.points.as_slice() {
                // Unlabelled: encoded on the descriptor itself, so the line
                // carries no (empty) braces.
                [p] if p.labels.is_empty() => encode_value(f.kind, p.value, family)?,
                points => {
                    for p in points {
                        let labels = p.labels.as_slice();
                        encode_value(f.kind, p.value, family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn encode_value(kind: Kind, value: u64, metric: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
    match kind {
        Kind::Counter => ConstCounter::new(value).encode(metric),
        Kind::Gauge => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric),
    }
}

/// The sample in the OpenMetrics text format (taken by value: the registry
/// owns its collectors).
pub fn render(sample: Sample) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SampleCollector(sample)));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

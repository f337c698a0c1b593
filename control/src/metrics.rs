//! Prometheus exposition (prometheus-client, text format): figures read from the shared-memory
//! statistics blocks at scrape time, control-side state, and HTTP request metrics.
//!
//! Owns metric names and labels. Does not keep its own copies of dataplane counters: every
//! scrape reads the region, so the exported values are the dataplane's own.

use std::sync::Arc;
use std::time::Duration;

use dwcp_shm::{DROP_REASONS, Role, Stat, TransferMode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::core::Core;

/// Labels of HTTP request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Method.
    pub method: &'static str,
    /// Route template (e.g. `/v1/flags/{name}`), one of `http::ROUTES`.
    pub route: &'static str,
    /// Status code.
    pub status: u16,
}

/// Labels of HTTP latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Method.
    pub method: &'static str,
    /// Route template.
    pub route: &'static str,
}

/// HTTP request metrics, updated by middleware.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    /// Requests by method, route, status.
    pub requests: Family<HttpLabels, Counter>,
    /// Handling time by method and route.
    pub duration: Family<RouteLabels, Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
            }),
        }
    }
}

/// Builds the registry: HTTP metrics plus a collector over the region and the core.
pub fn registry(core: Arc<Core>, http: &HttpMetrics) -> Registry {
    let mut r = Registry::default();
    r.register(
        "dwcp_http_requests",
        "HTTP requests handled",
        http.requests.clone(),
    );
    r.register(
        "dwcp_http_request_duration_seconds",
        "HTTP request handling time",
        http.duration.clone(),
    );
    r.register_collector(Box::new(ShmCollector { core }));
    r
}

#[derive(Debug)]
struct ShmCollector {
    core: Arc<Core>,
}

fn counter<N: EncodeCounterValue + Copy + std::fmt::Debug>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&'static str, String)>, N)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    if let [(labels, v)] = rows
        && labels.is_empty()
    {
        return ConstCounter::new(*v).encode(m);
    }
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&'static str, String)>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    if let [(labels, v)] = rows
        && labels.is_empty()
    {
        return ConstGauge::new(*v).encode(m);
    }
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for ShmCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let region = self.core.region();
        let stats = region.stats_reader().all();
        let now = dwcp_shm::monotonic_ns();
        let per = |s: Stat| -> Vec<(Vec<(&'static str, String)>, u64)> {
            stats
                .iter()
                .map(|w| (vec![("worker", w.worker.to_string())], w.get(s)))
                .collect()
        };
        for (name, help, s) in [
            ("dwcp_worker_rx_frames", "Frames received", Stat::RxFrames),
            ("dwcp_worker_tx_frames", "Frames sent", Stat::TxFrames),
            (
                "dwcp_worker_rx_bytes",
                "Payload bytes received",
                Stat::RxBytes,
            ),
            ("dwcp_worker_tx_bytes", "Payload bytes sent", Stat::TxBytes),
            (
                "dwcp_worker_retransmits",
                "Frames retransmitted",
                Stat::Retransmits,
            ),
            ("dwcp_worker_errors", "Transfer errors", Stat::Errors),
            (
                "dwcp_worker_flows_v1",
                "Flows on protocol v1",
                Stat::FlowsV1,
            ),
            (
                "dwcp_worker_flows_v3",
                "Flows on protocol v3",
                Stat::FlowsV3,
            ),
        ] {
            counter(&mut enc, name, help, &per(s))?;
        }
        let cpu: Vec<_> = stats
            .iter()
            .map(|w| {
                (
                    vec![("worker", w.worker.to_string())],
                    w.get(Stat::CpuNs) as f64 * 1e-9,
                )
            })
            .collect();
        counter(
            &mut enc,
            "dwcp_worker_cpu_seconds",
            "CPU time of the worker threads that ran the slot's transfers",
            &cpu,
        )?;
        let drops: Vec<_> = stats
            .iter()
            .flat_map(|w| {
                DROP_REASONS.iter().map(move |(s, reason)| {
                    (
                        vec![
                            ("worker", w.worker.to_string()),
                            ("reason", (*reason).to_owned()),
                        ],
                        w.get(*s),
                    )
                })
            })
            .collect();
        counter(
            &mut enc,
            "dwcp_worker_drops",
            "Frames dropped, by reason",
            &drops,
        )?;
        let modes: Vec<_> = stats
            .iter()
            .map(|w| {
                let m = TransferMode::from_code(w.get(Stat::Mode)).unwrap_or_default();
                (
                    vec![
                        ("worker", w.worker.to_string()),
                        ("mode", m.as_str().to_owned()),
                    ],
                    1.0,
                )
            })
            .collect();
        gauge(
            &mut enc,
            "dwcp_worker_mode",
            "Current transfer mode (label), value 1",
            &modes,
        )?;
        let g = |s: Stat, scale: f64| -> Vec<_> {
            stats
                .iter()
                .map(|w| {
                    (
                        vec![("worker", w.worker.to_string())],
                        w.get(s) as f64 * scale,
                    )
                })
                .collect()
        };
        gauge(
            &mut enc,
            "dwcp_worker_latency_p99_seconds",
            "Worker p99 frame-to-ack latency",
            &g(Stat::LatencyP99Us, 1e-6),
        )?;
        gauge(
            &mut enc,
            "dwcp_worker_cpu_ratio",
            "Worker CPU busy share",
            &g(Stat::CpuPermille, 1e-3),
        )?;
        gauge(
            &mut enc,
            "dwcp_worker_cpu_seconds_per_byte",
            "Worker CPU per object byte of the current or last transfer",
            &g(Stat::CpuPsPerByte, 1e-12),
        )?;
        let hb: Vec<_> = stats
            .iter()
            .filter(|w| w.get(Stat::HeartbeatNs) != 0)
            .map(|w| {
                (
                    vec![("worker", w.worker.to_string())],
                    Duration::from_nanos(now.saturating_sub(w.get(Stat::HeartbeatNs)))
                        .as_secs_f64(),
                )
            })
            .collect();
        gauge(
            &mut enc,
            "dwcp_worker_heartbeat_age_seconds",
            "Time since the worker's last loop",
            &hb,
        )?;

        let (pct_bp, stage, state) = self.core.rollout_brief();
        gauge(
            &mut enc,
            "dwcp_rollout_v3_ratio",
            "Share of flows assigned to v3",
            &[(vec![], f64::from(pct_bp) / 10_000.0)],
        )?;
        gauge(
            &mut enc,
            "dwcp_rollout_stage",
            "Current rollout stage index",
            &[(vec![], stage as f64)],
        )?;
        gauge(
            &mut enc,
            "dwcp_rollout_state",
            "Rollout state (label), value 1",
            &[(vec![("state", state.to_owned())], 1.0)],
        )?;
        gauge(
            &mut enc,
            "dwcp_flag_table_generation",
            "Generation of the shared flag/rollout table",
            &[(vec![], region.table_reader().generation() as f64)],
        )?;
        let (ch, ct) = region.command_positions();
        let (eh, et) = region.event_positions();
        gauge(
            &mut enc,
            "dwcp_ring_lag",
            "Messages written and not yet consumed",
            &[
                (vec![("ring", "command".to_owned())], (ch - ct) as f64),
                (vec![("ring", "event".to_owned())], (eh - et) as f64),
            ],
        )?;
        let dp = region.side_status(Role::Dataplane);
        gauge(
            &mut enc,
            "dwcp_dataplane_up",
            "A live dataplane process is attached",
            &[(vec![], f64::from(u8::from(dp.alive)))],
        )?;
        if let Some(age) = dp.heartbeat_age {
            gauge(
                &mut enc,
                "dwcp_dataplane_heartbeat_age_seconds",
                "Time since the dataplane heartbeat",
                &[(vec![], age.as_secs_f64())],
            )?;
        }
        let c = self.core.counters();
        for (name, help, v) in [
            (
                "dwcp_control_commands_sent",
                "Commands pushed to the command ring",
                c.commands_sent,
            ),
            (
                "dwcp_control_commands_ring_full",
                "Commands refused by a full command ring",
                c.commands_ring_full,
            ),
            (
                "dwcp_control_events_applied",
                "Events applied",
                c.events_applied,
            ),
            (
                "dwcp_control_events_duplicate",
                "Redelivered events skipped",
                c.events_duplicate,
            ),
            (
                "dwcp_control_events_bad",
                "Undecodable events",
                c.events_bad,
            ),
            (
                "dwcp_control_dataplane_restarts",
                "Dataplane restarts seen",
                c.dataplane_restarts,
            ),
        ] {
            counter(&mut enc, name, help, &[(vec![], v)])?;
        }
        Ok(())
    }
}

/// Rewrites OpenMetrics text (as `prometheus_client` encodes it) into the Prometheus text
/// format 0.0.4: counter families are named with their `_total` suffix in `# HELP` / `# TYPE`
/// (as their samples are), `# UNIT` lines and the final `# EOF` are dropped. Samples are kept
/// as they are (the encoder writes no exemplars or `_created` series for these metrics).
pub fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 16 * counters.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::openmetrics_to_text;

    #[test]
    fn counters_get_total_names_and_eof_goes() {
        let om = "# HELP a_frames Frames.\n# TYPE a_frames counter\na_frames_total{w=\"0\"} 3\n\
                  # HELP g Gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        let t = openmetrics_to_text(om);
        assert_eq!(
            t,
            "# HELP a_frames_total Frames.\n# TYPE a_frames_total counter\n\
             a_frames_total{w=\"0\"} 3\n# HELP g Gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}

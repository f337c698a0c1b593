//! The certification suites: which links, payload sizes, data kinds, stream counts and peers
//! are measured, and for how long.
//!
//! Owns: the suite description types and the two defined suites, [`Suite::quick`] (CI,
//! about two minutes on a 2-core machine) and [`Suite::full`] (an operator's certification,
//! about fifteen minutes). Does not: run anything ([`super::run`]).

use serde::{Deserialize, Serialize};

use crate::loops::LoopPath;

/// Datacenter (direct veth) or WAN (through the emulator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkKind {
    /// A - B veth pair, offloads on.
    Datacenter,
    /// A - R - B through the WAN emulator.
    Wan,
}

/// One link configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Kind.
    pub kind: LinkKind,
    /// Round-trip propagation delay, ms (half each way); 0 on the datacenter link.
    pub rtt_ms: f64,
    /// Random loss per direction (0.01 = 1 %).
    pub loss: f64,
    /// Bottleneck rate per direction, Mbit/s of Ethernet frames.
    pub rate_mbit: Option<f64>,
    /// MTU of every veth.
    pub mtu: u32,
}

impl LinkSpec {
    /// The datacenter link with `mtu`.
    pub fn datacenter(mtu: u32) -> Self {
        Self {
            kind: LinkKind::Datacenter,
            rtt_ms: 0.0,
            loss: 0.0,
            rate_mbit: None,
            mtu,
        }
    }

    /// A WAN link.
    pub fn wan(rtt_ms: f64, loss: f64, rate_mbit: f64) -> Self {
        Self {
            kind: LinkKind::Wan,
            rtt_ms,
            loss,
            rate_mbit: Some(rate_mbit),
            mtu: 1500,
        }
    }

    /// Short id part, e.g. `dc-mtu1500` or `wan-rtt50-loss0.1`.
    pub fn id(&self) -> String {
        match self.kind {
            LinkKind::Datacenter => format!("dc-mtu{}", self.mtu),
            LinkKind::Wan => format!("wan-rtt{}-loss{}", self.rtt_ms, self.loss * 100.0),
        }
    }
}

/// What a dwcp transfer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// Zero regions, repeated blocks and text (HDE and zstd shrink it).
    Compressible,
    /// Random bytes (nothing to gain from encoding).
    Incompressible,
}

impl DataKind {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Compressible => "compressible",
            Self::Incompressible => "incompressible",
        }
    }
}

/// A peer of a transfer case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransferPeerSpec {
    /// A dwcp transfer of an object of this kind.
    Dwcp(DataKind),
    /// iperf3 TCP with this congestion control.
    Iperf3(String),
}

/// Packet-rate cases: every path with one payload size on the datacenter link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PacketSpec {
    /// DWCP payload bytes.
    pub payload: usize,
    /// MTU (9000 for payloads that do not fit 1500).
    pub mtu: u32,
    /// Seconds per repetition.
    pub secs: f64,
    /// Paths side by side.
    pub paths: Vec<LoopPath>,
}

/// Transfer cases on one link: every stream count, every peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferSpec {
    /// The link.
    pub link: LinkSpec,
    /// Stream counts (dwcp streams, iperf3 -P).
    pub streams: Vec<u16>,
    /// Peers side by side.
    pub peers: Vec<TransferPeerSpec>,
    /// Seconds per iperf3 run.
    pub iperf3_secs: u32,
    /// dwcp object size, MiB.
    pub object_mib: u64,
    /// A dwcp transfer taking longer than this is stopped and counted as a failed
    /// repetition (keeps a slow appliance from stretching the suite).
    pub dwcp_timeout_secs: u32,
}

/// A certification suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suite {
    /// Name (`quick`, `full`).
    pub name: String,
    /// Repetitions per peer and case.
    pub reps: u32,
    /// Packet-rate cases.
    pub packet: Vec<PacketSpec>,
    /// Transfer cases, grouped by link (one lab per link).
    pub transfer: Vec<TransferSpec>,
}

fn all_peers() -> Vec<TransferPeerSpec> {
    vec![
        TransferPeerSpec::Dwcp(DataKind::Incompressible),
        TransferPeerSpec::Dwcp(DataKind::Compressible),
        TransferPeerSpec::Iperf3("cubic".into()),
        TransferPeerSpec::Iperf3("bbr".into()),
    ]
}

impl Suite {
    /// The CI suite: 64 B and 1400 B packet loops (1 s), datacenter transfers with 1 and 4
    /// streams, WAN at 10 ms RTT with 0 % and 1 % loss at 100 Mbit/s; 2 repetitions.
    pub fn quick() -> Self {
        let paths = LoopPath::ALL.to_vec();
        Self {
            name: "quick".into(),
            reps: 2,
            packet: vec![
                PacketSpec {
                    payload: 64,
                    mtu: 1500,
                    secs: 1.0,
                    paths: paths.clone(),
                },
                PacketSpec {
                    payload: 1400,
                    mtu: 1500,
                    secs: 1.0,
                    paths,
                },
            ],
            transfer: vec![
                TransferSpec {
                    link: LinkSpec::datacenter(1500),
                    streams: vec![1, 4],
                    peers: all_peers(),
                    iperf3_secs: 2,
                    object_mib: 32,
                    dwcp_timeout_secs: 10,
                },
                TransferSpec {
                    link: LinkSpec::wan(10.0, 0.0, 100.0),
                    streams: vec![4],
                    peers: all_peers(),
                    iperf3_secs: 3,
                    object_mib: 4,
                    dwcp_timeout_secs: 10,
                },
                TransferSpec {
                    link: LinkSpec::wan(10.0, 0.01, 100.0),
                    streams: vec![4],
                    peers: all_peers(),
                    iperf3_secs: 3,
                    object_mib: 4,
                    dwcp_timeout_secs: 10,
                },
            ],
        }
    }

    /// The operator's suite: 64 B, 1400 B and 8000 B (MTU 9000) packet loops (3 s);
    /// datacenter transfers with 1, 2, 4 and 8 streams at MTU 1500 and 4 streams at MTU
    /// 9000; WAN at 10 and 50 ms RTT with 0, 0.1 and 1 % loss at 200 Mbit/s, 4 streams;
    /// 3 repetitions.
    pub fn full() -> Self {
        let paths = LoopPath::ALL.to_vec();
        let mut transfer = vec![
            TransferSpec {
                link: LinkSpec::datacenter(1500),
                streams: vec![1, 2, 4, 8],
                peers: all_peers(),
                iperf3_secs: 5,
                object_mib: 256,
                dwcp_timeout_secs: 120,
            },
            TransferSpec {
                link: LinkSpec::datacenter(9000),
                streams: vec![4],
                peers: all_peers(),
                iperf3_secs: 5,
                object_mib: 256,
                dwcp_timeout_secs: 120,
            },
        ];
        for rtt in [10.0, 50.0] {
            for loss in [0.0, 0.001, 0.01] {
                transfer.push(TransferSpec {
                    link: LinkSpec::wan(rtt, loss, 200.0),
                    streams: vec![4],
                    peers: all_peers(),
                    iperf3_secs: 10,
                    object_mib: 64,
                    dwcp_timeout_secs: 120,
                });
            }
        }
        Self {
            name: "full".into(),
            reps: 3,
            packet: vec![
                PacketSpec {
                    payload: 64,
                    mtu: 1500,
                    secs: 3.0,
                    paths: paths.clone(),
                },
                PacketSpec {
                    payload: 1400,
                    mtu: 1500,
                    secs: 3.0,
                    paths: paths.clone(),
                },
                PacketSpec {
                    payload: 8000,
                    mtu: 9000,
                    secs: 3.0,
                    paths,
                },
            ],
            transfer,
        }
    }

    /// Measurement steps (one peer repetition each), for the progress bar.
    pub fn steps(&self) -> u64 {
        let p: usize = self.packet.iter().map(|c| c.paths.len()).sum();
        let t: usize = self
            .transfer
            .iter()
            .map(|t| t.streams.len() * t.peers.len())
            .sum();
        (p + t) as u64 * u64::from(self.reps)
    }

    /// A rough lower bound of the run time in seconds (measurement time only).
    pub fn estimated_secs(&self) -> f64 {
        let reps = f64::from(self.reps);
        let p: f64 = self
            .packet
            .iter()
            .map(|c| c.paths.len() as f64 * (c.secs + 0.3))
            .sum();
        let t: f64 = self
            .transfer
            .iter()
            .map(|t| {
                let per_stream: f64 = t
                    .peers
                    .iter()
                    .map(|p| match p {
                        TransferPeerSpec::Iperf3(_) => f64::from(t.iperf3_secs) + 0.3,
                        TransferPeerSpec::Dwcp(_) => {
                            let rate = t.link.rate_mbit.unwrap_or(2000.0);
                            (t.object_mib as f64 * 8.389 / rate) + t.link.rtt_ms / 100.0 + 0.5
                        }
                    })
                    .sum();
                per_stream * t.streams.len() as f64 + 1.0
            })
            .sum();
        (p + t) * reps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_suite_fits_the_ci_budget_and_covers_the_axes() {
        let q = Suite::quick();
        assert!(q.estimated_secs() < 150.0, "{}", q.estimated_secs());
        assert!(q.packet.iter().any(|p| p.payload == 64));
        assert!(q.packet.iter().any(|p| p.payload == 1400));
        assert!(
            q.transfer
                .iter()
                .any(|t| t.link.kind == LinkKind::Wan && t.link.loss > 0.0)
        );
        assert!(q.transfer.iter().any(|t| t.streams.len() > 1));
        let f = Suite::full();
        assert!(f.steps() > q.steps());
        let rtts: std::collections::BTreeSet<u64> =
            f.transfer.iter().map(|t| t.link.rtt_ms as u64).collect();
        assert!(rtts.len() >= 3, "datacenter + two WAN RTTs: {rtts:?}");
    }

    #[test]
    fn link_ids_are_distinct() {
        let f = Suite::full();
        let ids: std::collections::BTreeSet<String> =
            f.transfer.iter().map(|t| t.link.id()).collect();
        assert_eq!(ids.len(), f.transfer.len());
    }
}

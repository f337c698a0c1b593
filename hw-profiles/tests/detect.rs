//! Detection tests: on this machine, on a fake sysfs tree with two NUMA nodes, and (as root)
//! inside a lab network namespace, where sysfs shows the wrong namespace and `ip` must be used.

use std::path::Path;

use dwcp_hw_profiles::SimdLevel;
use dwcp_hw_profiles::detect::{
    HostPaths, format_cpulist, interface_info, parse_cpulist, parse_ethtool_channels,
    parse_ethtool_driver, parse_ip_link_json, profile_from, simd_level,
};
use dwcp_hw_profiles::{Host, Problem, Profile, ProfileError, XdpMode, detect_profile};

#[test]
fn cpulists() {
    assert_eq!(
        parse_cpulist("0-3,8,10-11\n").unwrap(),
        vec![0, 1, 2, 3, 8, 10, 11]
    );
    assert_eq!(parse_cpulist("5").unwrap(), vec![5]);
    assert_eq!(parse_cpulist("").unwrap(), Vec::<u32>::new());
    assert!(parse_cpulist("3-1").is_err());
    assert!(parse_cpulist("a").is_err());
    assert_eq!(format_cpulist(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    assert_eq!(format_cpulist(&[]), "");
}

#[test]
fn detect_on_this_machine_validates_for_this_host() {
    let host = Host::detect().unwrap();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    assert_eq!(host.online_cpus, parse_cpulist(&online).unwrap());
    assert!(!host.cpu_model.is_empty());

    let p = detect_profile(None).unwrap();
    p.validate_for_host()
        .unwrap_or_else(|e| panic!("{e}\n{}", p.to_toml().unwrap()));
    assert_eq!(
        p.cpu.worker_cores, host.online_cpus,
        "one worker per online core"
    );
    assert_eq!(p.cpu.simd, host.simd);
    // Round trip of a detected profile.
    assert_eq!(Profile::from_str(&p.to_toml().unwrap()).unwrap(), p);

    // With this machine's first non-loopback interface that has a usable MTU, if any.
    let ifname = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .find(|n| interface_info(n).is_ok_and(|i| (1280..=9000).contains(&i.mtu)));
    if let Some(ifname) = ifname {
        let p = detect_profile(Some(&ifname)).unwrap();
        assert_eq!(p.nic.interface.as_deref(), Some(ifname.as_str()));
        p.validate_for_host()
            .unwrap_or_else(|e| panic!("{e}\n{}", p.to_toml().unwrap()));
    }
}

#[test]
fn host_validation_catches_cores_simd_and_hugepages() {
    let host = Host::detect().unwrap();
    let mut p = Profile::embedded_default();
    let absent = host.online_cpus.iter().max().unwrap() + 1;
    p.cpu.worker_cores = vec![absent];
    p.rings.hugepages = true;
    let problems = p.host_problems(&host);
    assert!(
        problems
            .iter()
            .any(|x| matches!(x, Problem::CoreNotOnline { core, .. } if *core == absent)),
        "{problems:?}"
    );
    if host.hugepages.free_kib() < p.umem_bytes_total() / 1024 {
        assert!(
            problems.iter().any(|x| x.field() == "rings.hugepages"),
            "{problems:?}"
        );
    }
    p.nic.interface = Some("dwcp-no-such0".into());
    match p.validate_for_host() {
        Err(ProfileError::Invalid { problems, .. }) => {
            assert!(
                problems.iter().any(|x| x.field() == "nic.interface"),
                "{problems:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn two_numa_nodes_from_a_fake_tree() {
    let d = tempfile::tempdir().unwrap();
    let (sys, proc) = (d.path().join("sys"), d.path().join("proc"));
    write(&sys, "devices/system/cpu/online", "0-7\n");
    write(&sys, "devices/system/node/node0/cpulist", "0-3\n");
    write(&sys, "devices/system/node/node1/cpulist", "4-7\n");
    std::fs::create_dir_all(sys.join("kernel/mm/hugepages/hugepages-2048kB")).unwrap();
    std::fs::create_dir_all(sys.join("kernel/mm/hugepages/hugepages-1048576kB")).unwrap();
    write(
        &proc,
        "cpuinfo",
        "processor\t: 0\nvendor_id\t: X\nmodel name\t: Test CPU 9000\n",
    );
    write(
        &proc,
        "meminfo",
        "MemTotal: 1 kB\nHugePages_Total:     512\nHugePages_Free:      500\nHugepagesize:       2048 kB\n",
    );
    let host = Host::detect_at(&HostPaths { sys, proc }).unwrap();
    assert_eq!(host.online_cpus, (0..8).collect::<Vec<_>>());
    assert_eq!(host.node_of(5), 1);
    assert_eq!(host.node_of(2), 0);
    assert_eq!(host.cpu_model, "Test CPU 9000");
    assert_eq!(host.hugepages.free_kib(), 500 * 2048);
    assert_eq!(host.hugepages.sizes_kib, vec![2048, 1_048_576]);

    // A 4-queue NIC on node 1: workers go to node 1's cores.
    let info = parse_ip_link_json(
        "ens1",
        r#"[{"ifindex":7,"ifname":"ens1","mtu":1500,"max_mtu":9216,"num_tx_queues":4,"num_rx_queues":4}]"#,
    )
    .unwrap();
    let info = dwcp_hw_profiles::IfaceInfo {
        driver: "mlx5_core".into(),
        numa_node: Some(1),
        ..info
    };
    let p = profile_from(&host, Some(&info));
    assert_eq!(p.cpu.worker_cores, vec![4, 5, 6, 7]);
    assert_eq!(p.cpu.numa_nodes, vec![1, 1, 1, 1]);
    assert_eq!(p.nic.queues, 4);
    assert!(p.nic.zero_copy && p.nic.xdp_mode == XdpMode::Native);
    assert!(
        p.rings.hugepages,
        "4 x 4096 x 4096 B = 64 MiB fits 1000 MiB free"
    );
    assert!(p.problems().is_empty(), "{:?}", p.problems());
    assert!(
        p.host_problems(&host).is_empty(),
        "{:?}",
        p.host_problems(&host)
    );

    // A profile that puts node-1 cores on node 0 is caught.
    let mut wrong = p.clone();
    wrong.cpu.numa_nodes = vec![0; 4];
    let probs = wrong.host_problems(&host);
    assert_eq!(probs.len(), 4);
    assert!(matches!(
        probs[0],
        Problem::NumaMismatch {
            core: 4,
            profile_node: 0,
            host_node: 1,
            ..
        }
    ));
}

#[test]
fn parses_ip_and_ethtool_output() {
    let info = parse_ip_link_json(
        "veth-a",
        r#"[{"ifindex":12,"ifname":"veth-a","mtu":1500,"min_mtu":68,"max_mtu":65535,
            "linkinfo":{"info_kind":"veth"},"num_tx_queues":2,"num_rx_queues":2}]"#,
    )
    .unwrap();
    assert_eq!(info.driver, "veth");
    assert_eq!(info.kind.as_deref(), Some("veth"));
    assert_eq!((info.ifindex, info.mtu, info.queues()), (12, 1500, 2));
    assert!(parse_ip_link_json("x", "[]").is_err());
    assert!(parse_ip_link_json("x", "not json").is_err());
    assert_eq!(
        parse_ethtool_driver("driver: virtio_net\nversion: 1.0.0\n").as_deref(),
        Some("virtio_net")
    );
    assert_eq!(parse_ethtool_driver("version: 1\n"), None);
}

/// Inside a namespace entered with setns(), /sys/class/net still shows the original
/// namespace; detection must see the lab's veth through `ip`/`ethtool`, and the shipped
/// veth-lab profile must validate there.
#[test]
fn detect_inside_lab_namespace() {
    if !dwcp_netns::privileged_test_guard("detect_inside_lab_namespace") {
        return;
    }
    let pair = dwcp_netns::Pair::new(
        "hwp",
        dwcp_netns::VethOptions {
            queues: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let veth_lab =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("profiles/veth-lab.toml");
    let (detected, lab_check, sysfs_sees_it) = pair
        .a
        .run_in(move || {
            let detected = detect_profile(Some(dwcp_netns::IF_A));
            let lab = Profile::load(&veth_lab).and_then(|p| p.validate_for_host());
            let sysfs = Path::new("/sys/class/net").join(dwcp_netns::IF_A).exists();
            (detected, lab.map_err(|e| e.to_string()), sysfs)
        })
        .unwrap();
    let p = detected.unwrap();
    assert_eq!(p.nic.driver, "veth");
    assert_eq!(p.nic.queues, 2);
    assert_eq!(p.nic.mtu, 1500);
    assert_eq!(p.nic.xdp_mode, XdpMode::Native);
    assert!(!p.nic.zero_copy, "veth is copy mode only");
    assert!(p.problems().is_empty(), "{:?}", p.problems());
    lab_check.unwrap();
    // Document the reason for preferring `ip`: sysfs here belongs to the original namespace.
    eprintln!(
        "sysfs shows {} in the lab namespace: {sysfs_sees_it}",
        dwcp_netns::IF_A
    );
}

#[test]
fn ethtool_channels_decide_the_queue_count() {
    // mlx5-style: 63 queues allocated, 8 combined channels configured.
    let mlx = "Channel parameters for ens1f0np0:\nPre-set maximums:\nRX:\t\tn/a\nTX:\t\tn/a\n\
               Other:\t\t512\nCombined:\t63\nCurrent hardware settings:\nRX:\t\tn/a\n\
               TX:\t\tn/a\nOther:\t\t512\nCombined:\t8\n";
    let c = parse_ethtool_channels(mlx).unwrap();
    assert_eq!((c.combined, c.max_combined, c.rx, c.tx), (8, 63, 0, 0));
    let info = parse_ip_link_json(
        "ens1f0np0",
        r#"[{"ifindex":3,"ifname":"ens1f0np0","mtu":9000,"num_tx_queues":63,"num_rx_queues":63}]"#,
    )
    .unwrap();
    assert_eq!(info.queues(), 63, "without channels: the allocated queues");
    let info = dwcp_hw_profiles::IfaceInfo {
        channels: Some(c),
        ..info
    };
    assert_eq!(info.queues(), 8, "with channels: the ones in use");
    // veth: separate rx/tx channels, no combined.
    let veth = "Channel parameters for veth-a:\nPre-set maximums:\nRX:\t\t2\nTX:\t\t2\n\
                Other:\t\tn/a\nCombined:\tn/a\nCurrent hardware settings:\nRX:\t\t1\n\
                TX:\t\t2\nOther:\t\tn/a\nCombined:\tn/a\n";
    let c = parse_ethtool_channels(veth).unwrap();
    assert_eq!(c.queue_pairs(), 1);
    assert_eq!(
        parse_ethtool_channels("netlink error: Operation not supported"),
        None
    );
}

#[test]
fn simd_level_agrees_with_cpuinfo_flags() {
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        eprintln!("no /proc/cpuinfo: skipped");
        return;
    };
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default();
    let want = if flags.contains(&"avx512f") {
        SimdLevel::Avx512
    } else if flags.contains(&"avx2") {
        SimdLevel::Avx2
    } else {
        SimdLevel::Scalar
    };
    assert_eq!(simd_level(), want, "cpuinfo flags: {flags:?}");
}

/// Cross-check of the sysfs topology reader against hwloc (Debian `hwloc`, hwloc-calc):
/// the same online CPUs and the same NUMA node for each. Skipped loudly without hwloc-calc.
#[test]
fn topology_agrees_with_hwloc() {
    let calc = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("hwloc-calc")
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let Some(n) = calc(&["--number-of", "pu", "all"]) else {
        eprintln!(
            "topology_agrees_with_hwloc: hwloc-calc not installed (apt-get install hwloc): SKIPPED"
        );
        return;
    };
    let host = Host::detect().unwrap();
    assert_eq!(
        n.parse::<usize>().unwrap(),
        host.online_cpus.len(),
        "online CPUs"
    );
    for &cpu in &host.online_cpus {
        let node = calc(&["-p", "--intersect", "NUMAnode", &format!("pu:{cpu}")]).unwrap();
        // A machine without NUMA nodes in hwloc's view has one node 0.
        let node: u32 = node.split(',').next().unwrap().parse().unwrap_or(0);
        assert_eq!(node, host.node_of(cpu), "NUMA node of CPU {cpu}");
    }
}

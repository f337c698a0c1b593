//! End-to-end tests through real HTTP against the `dwcp-control` binary, with a fake
//! dataplane thread on the same real shared-memory region.

mod common;

use std::time::{Duration, Instant};

use common::{FakeDataplane, Server, expect_error, shm_path, wait_for, write_config};
use dwcp_shm::{Command, Region, RolloutState};
use serde_json::{Value, json};

fn table(dir: &std::path::Path) -> dwcp_shm::TableSnapshot {
    Region::open(&shm_path(dir))
        .unwrap()
        .table_reader()
        .read()
        .unwrap()
}

#[test]
fn health_probes_follow_the_dataplane() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    assert_eq!(s.get_json("/livez")["status"], "ok");
    let r = s.get("/readyz");
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = r.json().unwrap();
    assert!(v["failing"]["dataplane_attached"].is_string(), "{v}");

    let dp = FakeDataplane::spawn(&shm_path(dir.path()));
    wait_for(5, "ready", || {
        (s.get("/readyz").status().as_u16() == 200).then_some(())
    });
    let h = wait_for(5, "drops in health", || {
        let h = s.get_json("/v1/health");
        (h["components"]["workers"][1]["drops"]["checksum"].as_u64() > Some(0)).then_some(h)
    });
    let c = &h["components"];
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(c["dataplane"]["status"], "ok");
    assert!(c["dataplane"]["heartbeat_age_ms"].as_u64().unwrap() < 500);
    assert_eq!(c["workers"][0]["status"], "ok");
    assert!(c["workers"][0]["rx_frames"].as_u64().unwrap() > 0);
    assert!(c["workers"][0]["retransmits"].as_u64().unwrap() > 0);
    assert_eq!(c["workers"][0]["mode"], "datacenter");
    assert_eq!(c["shm"]["abi_version"], 1);
    assert_eq!(c["command_ring"]["status"], "ok");

    // The dataplane goes away: not ready any more, health says why.
    drop(dp);
    let r = wait_for(5, "not ready", || {
        let r = s.get("/readyz");
        (r.status().as_u16() == 503).then_some(r)
    });
    let v: Value = r.json().unwrap();
    assert!(v["failing"]["dataplane_attached"].is_string(), "{v}");
    let h = s.get_json("/v1/health");
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["components"]["dataplane"]["status"], "down");
}

#[test]
fn flags_crud_targeting_auth_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let dp = FakeDataplane::spawn(&shm_path(dir.path()));

    let r = s
        .authed(s.http.put(s.url("/v1/flags/hde.zstd")))
        .header("x-dwcp-actor", "alice")
        .json(&json!({"kind": "percent", "enabled": true, "percent": 25.5}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let f: Value = r.json().unwrap();
    assert_eq!(f["effective"], json!({"enabled": true, "pct_bp": 2550}));
    assert!(
        f["updated_by"]
            .as_str()
            .unwrap()
            .starts_with("alice@127.0.0.1:")
    );
    let g1 = f["generation"].as_u64().unwrap();

    // Denied for this node: stored as set, effective off.
    let f: Value = s
        .put(
            "/v1/flags/amst.multistream",
            &json!({"kind": "bool", "enabled": true, "nodes": {"deny": ["node-a"]}}),
        )
        .json()
        .unwrap();
    assert_eq!(f["effective"]["enabled"], false);
    // Allow-listed elsewhere only: off here too; allow-listed here: on.
    let f: Value = s
        .put(
            "/v1/flags/x.allow",
            &json!({"kind": "bool", "enabled": true, "nodes": {"allow": ["node-a", "node-b"]}}),
        )
        .json()
        .unwrap();
    assert_eq!(f["effective"]["enabled"], true);
    let g3 = f["generation"].as_u64().unwrap();
    assert_eq!(g3, g1 + 2);

    let t = table(dir.path());
    assert_eq!(t.generation, g3);
    let z = t.flag("hde.zstd").unwrap();
    assert_eq!(
        (z.enabled, z.pct_bp, z.kind),
        (true, 2550, dwcp_shm::FlagKind::Percent)
    );
    assert_eq!(z.changed_generation, g1);
    assert!(!t.flag("amst.multistream").unwrap().enabled);
    assert!(t.flag("x.allow").unwrap().enabled);
    // Consistent hashing in the dataplane's own decision: about a quarter of flows.
    let on = (0..10_000u64).filter(|f| z.enabled_for(*f)).count();
    assert!((2_300..2_800).contains(&on), "{on}");

    let list = s.get_json("/v1/flags");
    let names: Vec<_> = list["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["amst.multistream", "hde.zstd", "x.allow"]);
    assert_eq!(s.get_json("/v1/flags/hde.zstd")["spec"]["percent"], 25.5);

    assert_eq!(s.delete("/v1/flags/x.allow").status().as_u16(), 204);
    assert_eq!(expect_error(s.get("/v1/flags/x.allow"), 404), "not_found");
    assert_eq!(
        expect_error(s.delete("/v1/flags/x.allow"), 404),
        "not_found"
    );
    assert!(table(dir.path()).flag("x.allow").is_none());

    // The dataplane was told, in order, over the command ring.
    wait_for(5, "set-flag commands", || {
        let n = dp
            .commands()
            .iter()
            .filter(|(_, c)| matches!(c, Command::SetFlag { .. }))
            .count();
        (n == 3).then_some(())
    });

    // Auth: no token, wrong token, wrong scheme: 401 and nothing changes.
    let before = s.get_json("/v1/flags");
    let gen_before = table(dir.path()).generation;
    let body = json!({"kind": "bool", "enabled": false});
    for rb in [
        s.http.put(s.url("/v1/flags/hde.zstd")).json(&body),
        s.http
            .put(s.url("/v1/flags/hde.zstd"))
            .bearer_auth("wrong")
            .json(&body),
        s.http
            .put(s.url("/v1/flags/hde.zstd"))
            .header("authorization", format!("Basic {}", s.token))
            .json(&body),
        s.http.delete(s.url("/v1/flags/hde.zstd")),
        s.http.post(s.url("/v1/rollout/abort")),
    ] {
        let r = rb.send().unwrap();
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(expect_error(r, 401), "unauthorized");
    }
    assert_eq!(s.get_json("/v1/flags"), before);
    assert_eq!(table(dir.path()).generation, gen_before);

    let audit = s.get_json("/v1/audit?limit=10");
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0]["action"], "flag.delete");
    assert_eq!(entries[0]["after"], Value::Null);
    assert!(entries[3]["actor"].as_str().unwrap().starts_with("alice@"));
    assert_eq!(entries[3]["before"], Value::Null);
}

#[test]
fn bad_input_is_a_json_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.put("/v1/flags/keep", &json!({"kind": "bool", "enabled": true}));
    let snapshot = |s: &Server| {
        (
            s.get_json("/v1/flags"),
            s.get_json("/v1/rollout")["state"].clone(),
            s.get_json("/v1/jobs"),
            s.get_json("/v1/audit"),
            table(dir.path()),
        )
    };
    let before = snapshot(&s);
    let put = |name: &str, body: &str| {
        s.authed(s.http.put(s.url(&format!("/v1/flags/{name}"))))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .unwrap()
    };
    let cases: Vec<(reqwest::blocking::Response, u16, &str)> = vec![
        (
            put("keep", r#"{"kind":"bool","enabled":false,"extra":1}"#),
            422,
            "invalid_body",
        ),
        (
            put(
                "keep",
                r#"{"kind":"percent","enabled":true,"percent":100.5}"#,
            ),
            422,
            "invalid_argument",
        ),
        (
            put("keep", r#"{"kind":"percent","enabled":true,"percent":-1}"#),
            422,
            "invalid_argument",
        ),
        (
            put("keep", r#"{"kind":"bool","enabled":true,"percent":5}"#),
            422,
            "invalid_argument",
        ),
        (
            put("keep", r#"{"kind":"percent","enabled":true}"#),
            422,
            "invalid_argument",
        ),
        (
            put("keep", r#"{"kind":"maybe","enabled":true}"#),
            422,
            "invalid_body",
        ),
        (
            put("keep", r#"{"kind":"bool","enabled":"yes"}"#),
            422,
            "invalid_body",
        ),
        (
            put(
                "keep",
                r#"{"kind":"bool","enabled":true,"nodes":{"allow":["bad node"]}}"#,
            ),
            422,
            "invalid_argument",
        ),
        (
            put(&"n".repeat(33), r#"{"kind":"bool","enabled":true}"#),
            422,
            "invalid_argument",
        ),
        (
            put("bad%20name", r#"{"kind":"bool","enabled":true}"#),
            422,
            "invalid_argument",
        ),
        (put("keep", r#"{"kind":"bool","#), 400, "invalid_json"),
        (put("keep", ""), 400, "invalid_json"),
        (
            s.authed(s.http.put(s.url("/v1/flags/keep")))
                .body(r#"{"kind":"bool","enabled":false}"#)
                .send()
                .unwrap(),
            415,
            "unsupported_media_type",
        ),
        (
            put(
                "keep",
                &format!(
                    r#"{{"kind":"bool","enabled":false,"description":"{}"}}"#,
                    "a".repeat(8000)
                ),
            ),
            413,
            "payload_too_large",
        ),
        (
            s.post(
                "/v1/rollout/plan",
                &json!({"stages": [5, 1], "hold_ms": 10}),
            ),
            422,
            "invalid_argument",
        ),
        (
            s.post(
                "/v1/rollout/plan",
                &json!({"stages": [0, 1], "hold_ms": 10}),
            ),
            422,
            "invalid_argument",
        ),
        (
            s.post(
                "/v1/rollout/plan",
                &json!({"stages": [1, 101], "hold_ms": 10}),
            ),
            422,
            "invalid_argument",
        ),
        (
            s.post("/v1/rollout/plan", &json!({"stages": [], "hold_ms": 10})),
            422,
            "invalid_argument",
        ),
        (
            s.post("/v1/rollout/plan", &json!({"stages": [1], "hold_ms": 0})),
            422,
            "invalid_argument",
        ),
        (
            s.post(
                "/v1/rollout/plan",
                &json!({"stages": [1, 2], "hold_ms": 5, "stage_hold_ms": [5]}),
            ),
            422,
            "invalid_argument",
        ),
        (
            s.post(
                "/v1/rollout/plan",
                &json!({"stages": [1], "hold_ms": 5, "thresholds": {"max_error_rate": 2}}),
            ),
            422,
            "invalid_argument",
        ),
        (
            s.post(
                "/v1/rollout/plan",
                &json!({"stages": [1], "hold_ms": 5, "thresholds": {"p99": 2}}),
            ),
            422,
            "invalid_body",
        ),
        (s.post_empty("/v1/rollout/pause"), 409, "conflict"),
        (s.post_empty("/v1/rollout/resume"), 409, "conflict"),
        (
            s.post(
                "/v1/jobs",
                &json!({"kind": "disk", "size_bytes": 10, "peer": "nowhere"}),
            ),
            422,
            "invalid_argument",
        ),
        (
            s.post(
                "/v1/jobs",
                &json!({"kind": "disk", "size_bytes": 10, "peer": "10.0.0.1:0"}),
            ),
            422,
            "invalid_argument",
        ),
        (
            s.post(
                "/v1/jobs",
                &json!({"kind": "disk", "size_bytes": 0, "peer": "10.0.0.1:7470"}),
            ),
            422,
            "invalid_argument",
        ),
        (
            s.post(
                "/v1/jobs",
                &json!({"kind": "disk", "size_bytes": 1, "peer": "10.0.0.1:7470", "max_rounds": 0}),
            ),
            422,
            "invalid_argument",
        ),
        (
            s.post(
                "/v1/jobs",
                &json!({"kind": "tape", "size_bytes": 1, "peer": "10.0.0.1:7470"}),
            ),
            422,
            "invalid_body",
        ),
        (s.post_empty("/v1/jobs/abc/cancel"), 400, "invalid_path"),
        (s.post_empty("/v1/jobs/77/cancel"), 404, "not_found"),
        (s.get("/v1/jobs/-1"), 400, "invalid_path"),
        (s.get("/v1/jobs/18446744073709551616"), 400, "invalid_path"),
        (s.get("/v1/audit?limit=0"), 400, "invalid_query"),
        (s.get("/v1/audit?limit=x"), 400, "invalid_query"),
        (s.get("/v1/rollout/decisions?since=1"), 400, "invalid_query"),
        (
            s.authed(s.http.patch(s.url("/v1/flags/keep")))
                .send()
                .unwrap(),
            405,
            "method_not_allowed",
        ),
        (s.get("/v2/flags"), 404, "not_found"),
        (
            s.authed(s.http.delete(s.url("/v1/flags/keep")))
                .header("x-dwcp-actor", "x".repeat(65))
                .send()
                .unwrap(),
            400,
            "invalid_header",
        ),
    ];
    for (i, (r, status, code)) in cases.into_iter().enumerate() {
        let got = expect_error(r, status);
        assert_eq!(got, code, "case {i}");
    }
    assert_eq!(snapshot(&s), before, "a refused request changed state");
}

#[test]
fn rollout_advances_then_rolls_back_on_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let dp = FakeDataplane::spawn(&shm_path(dir.path()));
    wait_for(5, "ready", || {
        (s.get("/readyz").status().as_u16() == 200).then_some(())
    });

    let r = s.post(
        "/v1/rollout/plan",
        &json!({"stages": [1, 5, 100], "hold_ms": 300, "stage_hold_ms": [300, 200, 300],
                "thresholds": {"max_error_rate": 0.05, "max_p99_latency_us": 10000, "max_cpu_percent": 95},
                "breach_window_ms": 200}),
    );
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(table(dir.path()).content.rollout.pct_bp, 100);
    let v = wait_for(10, "completed", || {
        let v = s.get_json("/v1/rollout");
        (v["state"] == "completed").then_some(v)
    });
    assert_eq!(v["pct_bp"], 10_000);
    let t = table(dir.path());
    assert_eq!(t.content.rollout.state, RolloutState::Completed);
    assert_eq!(t.content.rollout.pct_bp, 10_000);
    assert_eq!(v["generation"].as_u64(), Some(t.generation));
    let d = s.get_json("/v1/rollout/decisions")["decisions"].clone();
    let actions: Vec<_> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["complete", "advance", "advance", "plan"]);
    assert!(d[1]["figures"]["frames"].as_u64().unwrap() > 0, "{d}");
    assert_eq!(d[1]["actor"], "controller");

    // A new plan; the dataplane starts failing 20 % of frames: automatic rollback.
    s.post(
        "/v1/rollout/plan",
        &json!({"stages": [10, 50], "hold_ms": 60000,
                "thresholds": {"max_error_rate": 0.05}, "breach_window_ms": 200}),
    );
    assert_eq!(table(dir.path()).content.rollout.pct_bp, 1000);
    dp.state
        .error_permille
        .store(200, std::sync::atomic::Ordering::Relaxed);
    let v = wait_for(10, "rolled back", || {
        let v = s.get_json("/v1/rollout");
        (v["state"] == "rolled_back").then_some(v)
    });
    assert_eq!(v["pct_bp"], 0);
    let d = &v["recent_decisions"][0];
    assert_eq!(d["action"], "rollback");
    assert_eq!(d["actor"], "controller");
    assert!(d["reason"].as_str().unwrap().contains("error rate"), "{d}");
    let rate = d["figures"]["error_rate"].as_f64().unwrap();
    assert!(rate > 0.05 && rate < 0.3, "{rate}");
    let t = table(dir.path());
    assert_eq!(
        (t.content.rollout.state, t.content.rollout.pct_bp),
        (RolloutState::RolledBack, 0)
    );
    wait_for(5, "rollback command", || {
        dp.commands()
            .iter()
            .any(|(_, c)| {
                matches!(
                    c,
                    Command::RolloutStage {
                        state: RolloutState::RolledBack,
                        pct_bp: 0,
                        ..
                    }
                )
            })
            .then_some(())
    });
}

#[test]
fn operator_actions_and_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let plan = json!({"stages": [1, 5, 10, 50, 100], "hold_ms": 600000});
    assert_eq!(s.post("/v1/rollout/plan", &plan).status().as_u16(), 200);
    assert_eq!(
        expect_error(s.post("/v1/rollout/plan", &plan), 409),
        "conflict"
    );
    let act = |a: &str| -> Value {
        let r = s.post_empty(&format!("/v1/rollout/{a}"));
        assert_eq!(r.status().as_u16(), 200, "{a}");
        r.json().unwrap()
    };
    assert_eq!(act("pause")["state"], "paused");
    assert_eq!(
        table(dir.path()).content.rollout.state,
        RolloutState::Paused
    );
    assert_eq!(act("promote")["to_pct_bp"], 500);
    assert_eq!(act("resume")["state"], "running");
    assert_eq!(act("promote")["to_stage"], 2);
    assert_eq!(table(dir.path()).content.rollout.pct_bp, 1000);
    let d = act("abort");
    assert_eq!(
        (d["state"].as_str(), d["to_pct_bp"].as_u64()),
        (Some("aborted"), Some(0))
    );
    assert_eq!(table(dir.path()).content.rollout.pct_bp, 0);
    assert_eq!(
        expect_error(s.post_empty("/v1/rollout/resume"), 409),
        "conflict"
    );
    assert_eq!(s.post("/v1/rollout/plan", &plan).status().as_u16(), 200);
    assert_eq!(act("rollback")["state"], "rolled_back");
    let v = s.get_json("/v1/rollout");
    assert_eq!(v["state"], "rolled_back");
    assert_eq!(v["recent_decisions"].as_array().unwrap().len(), 8);
}

#[test]
fn jobs_progress_from_events_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let dp = FakeDataplane::spawn(&shm_path(dir.path()));
    let r = s.post(
        "/v1/jobs",
        &json!({"kind": "disk", "size_bytes": 10_000_000, "peer": "10.77.0.2:7470"}),
    );
    assert_eq!(r.status().as_u16(), 201);
    let j: Value = r.json().unwrap();
    assert_eq!(j["status"], "queued");
    let id = j["id"].as_u64().unwrap();
    let j = wait_for(10, "job completed", || {
        let j = s.get_json(&format!("/v1/jobs/{id}"));
        (j["status"] == "completed").then_some(j)
    });
    assert_eq!(j["progress"]["bytes_done"], 10_000_000);
    assert_eq!(j["progress"]["mode"], "datacenter");
    assert_eq!(j["acked"], true);
    let sent = dp.commands().into_iter().find_map(|(_, c)| match c {
        Command::CreateJob(spec) => Some(spec),
        _ => None,
    });
    let spec = sent.unwrap();
    assert_eq!(
        (spec.job_id, spec.total_bytes, spec.peer_port),
        (id, 10_000_000, 7470)
    );
    assert_eq!(
        spec.peer_ipv4,
        u32::from(std::net::Ipv4Addr::new(10, 77, 0, 2))
    );

    let j: Value = s
        .post("/v1/jobs", &json!({"kind": "memory", "size_bytes": 1u64 << 41, "peer": "10.77.0.2:7470", "max_rounds": 5}))
        .json()
        .unwrap();
    let id2 = j["id"].as_u64().unwrap();
    let j = wait_for(10, "job running", || {
        let j = s.get_json(&format!("/v1/jobs/{id2}"));
        (j["status"] == "running" && j["progress"]["round"].as_u64() >= Some(1)).then_some(j)
    });
    assert!(j["progress"]["rate_bps"].as_u64().unwrap() > 0);
    assert!(j["progress"]["eta_secs"].as_f64().unwrap() > 0.0);
    let r = s.post_empty(&format!("/v1/jobs/{id2}/cancel"));
    assert_eq!(r.status().as_u16(), 202);
    wait_for(10, "job cancelled", || {
        (s.get_json(&format!("/v1/jobs/{id2}"))["status"] == "cancelled").then_some(())
    });
    assert_eq!(
        expect_error(s.post_empty(&format!("/v1/jobs/{id2}/cancel")), 409),
        "conflict"
    );
    let list = s.get_json("/v1/jobs");
    let ids: Vec<_> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [id2, id]);
    assert_eq!(expect_error(s.get("/v1/jobs/999"), 404), "not_found");
}

#[test]
fn state_survives_a_killed_and_restarted_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path());
    let token = s.token.clone();
    {
        let dp = FakeDataplane::spawn(&shm_path(dir.path()));
        s.put(
            "/v1/flags/a",
            &json!({"kind": "bool", "enabled": true, "description": "kept"}),
        );
        s.put(
            "/v1/flags/b",
            &json!({"kind": "percent", "enabled": true, "percent": 5}),
        );
        s.post(
            "/v1/rollout/plan",
            &json!({"stages": [1, 5, 10], "hold_ms": 600000}),
        );
        s.post_empty("/v1/rollout/promote");
        s.post_empty("/v1/rollout/pause");
        let id = s
            .post(
                "/v1/jobs",
                &json!({"kind": "object", "size_bytes": 4096, "peer": "10.0.0.9:7470"}),
            )
            .json::<Value>()
            .unwrap()["id"]
            .as_u64()
            .unwrap();
        wait_for(10, "job done", || {
            (s.get_json(&format!("/v1/jobs/{id}"))["status"] == "completed").then_some(())
        });
        drop(dp);
    }
    let flags = s.get_json("/v1/flags");
    let mut rollout = s.get_json("/v1/rollout");
    let jobs = s.get_json("/v1/jobs");
    let audit = s.get_json("/v1/audit");
    let decisions = s.get_json("/v1/rollout/decisions");
    let gen_before = table(dir.path()).generation;
    s.restart();
    assert_eq!(s.token, token, "token file reused");
    assert_eq!(s.get_json("/v1/flags"), flags);
    let mut after = s.get_json("/v1/rollout");
    for v in [&mut rollout, &mut after] {
        v["last_figures"] = Value::Null;
        v["generation"] = Value::Null;
    }
    assert_eq!(after, rollout);
    assert_eq!(s.get_json("/v1/jobs"), jobs);
    assert_eq!(s.get_json("/v1/audit"), audit);
    assert_eq!(s.get_json("/v1/rollout/decisions"), decisions);
    let t = table(dir.path());
    assert_eq!(t.generation, gen_before + 1, "republished once at start");
    assert_eq!(t.content.rollout.state, RolloutState::Paused);
    assert_eq!(t.content.rollout.pct_bp, 500);
    assert_eq!(t.content.flags.len(), 2);
    // Ids continue after the restart.
    let j: Value = s
        .post(
            "/v1/jobs",
            &json!({"kind": "object", "size_bytes": 1, "peer": "10.0.0.9:7470"}),
        )
        .json()
        .unwrap();
    assert_eq!(j["id"], jobs["jobs"][0]["id"].as_u64().unwrap() + 1);
}

#[test]
fn config_seeds_flags_once() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "[flags.seeded]\nkind = \"percent\"\nenabled = true\npercent = 50\n",
    );
    let mut s = Server::start(dir.path());
    assert_eq!(s.get_json("/v1/flags/seeded")["effective"]["pct_bp"], 5000);
    assert_eq!(s.delete("/v1/flags/seeded").status().as_u16(), 204);
    s.restart();
    assert_eq!(expect_error(s.get("/v1/flags/seeded"), 404), "not_found");
}

#[test]
fn metrics_exposition_reads_the_region() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let _dp = FakeDataplane::spawn(&shm_path(dir.path()));
    s.put("/v1/flags/m", &json!({"kind": "bool", "enabled": true}));
    let text = wait_for(5, "frames in metrics", || {
        let t = s.get("/metrics").text().unwrap();
        let line = t
            .lines()
            .find(|l| l.starts_with("dwcp_worker_rx_frames_total{worker=\"0\"}"))?;
        let v: u64 = line.rsplit(' ').next()?.parse().ok()?;
        (v > 0 && t.contains("dwcp_worker_drops_total{worker=\"1\",reason=\"checksum\"}"))
            .then_some(t)
    });
    for needle in [
        "dwcp_worker_tx_frames_total{worker=\"1\"}",
        "dwcp_worker_retransmits_total{worker=\"0\"}",
        "dwcp_worker_mode{worker=\"0\",mode=\"datacenter\"} 1.0",
        "dwcp_rollout_v3_ratio ",
        "dwcp_rollout_state{state=\"idle\"} 1",
        "dwcp_flag_table_generation ",
        "dwcp_ring_lag{ring=\"command\"}",
        "dwcp_ring_lag{ring=\"event\"}",
        "dwcp_dataplane_up 1.0",
        "dwcp_http_requests_total{method=\"PUT\",route=\"/v1/flags/{name}\",status=\"200\"} 1",
        "dwcp_http_request_duration_seconds_bucket",
        "dwcp_control_commands_sent_total 1",
        // Without an OpenMetrics Accept header: Prometheus text 0.0.4.
        "# TYPE dwcp_worker_rx_frames_total counter",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
    assert!(!text.contains("# EOF"), "text format has no EOF marker");
    // What Prometheus asks for: OpenMetrics, counters named without `_total` in metadata.
    let om = reqwest::blocking::Client::new()
        .get(s.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let om = om.text().unwrap();
    assert!(om.contains("# TYPE dwcp_worker_rx_frames counter"));
    assert!(om.trim_end().ends_with("# EOF"));
}

#[test]
fn openapi_document_is_served_and_lists_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let served = s.get_json("/v1/openapi.json");
    let file: Value = serde_json::from_str(dwcp_control::http::OPENAPI).unwrap();
    assert_eq!(served, file);
    assert!(file["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, item) in file["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            documented.push((method.clone(), path.clone()));
            assert!(
                op["responses"].is_object(),
                "{method} {path} has no responses"
            );
            let mutating = method != "get";
            assert_eq!(
                op.get("security").is_some(),
                mutating,
                "{method} {path}: security must be declared exactly on mutating operations"
            );
        }
    }
    let mut routes: Vec<_> = dwcp_control::http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes);
}

#[test]
fn flag_change_reaches_the_table_quickly() {
    // The measuring process is this test process: it polls the table generation in the
    // shared region while the server (another process) handles PUTs.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let reader = Region::open(&shm_path(dir.path())).unwrap().table_reader();
    // The poller stops once it has seen `stop_at` (set after the last PUT).
    let stop_at = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let st = stop_at.clone();
    let poller = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut last = reader.generation();
        while last < st.load(std::sync::atomic::Ordering::Relaxed) {
            let g = reader.generation();
            if g != last {
                seen.push((g, Instant::now()));
                last = g;
            } else {
                std::hint::spin_loop();
            }
        }
        seen
    });
    let mut sent = Vec::new();
    for i in 0..200u32 {
        let t = Instant::now();
        let f: Value = s
            .put(
                "/v1/flags/lat",
                &json!({"kind": "bool", "enabled": i.is_multiple_of(2)}),
            )
            .json()
            .unwrap();
        sent.push((f["generation"].as_u64().unwrap(), t, t.elapsed()));
    }
    stop_at.store(sent.last().unwrap().0, std::sync::atomic::Ordering::Relaxed);
    let seen = poller.join().unwrap();
    let mut lat: Vec<Duration> = sent
        .iter()
        .map(|(g, t, _)| {
            let (_, at) = seen
                .iter()
                .find(|(sg, _)| sg >= g)
                .expect("generation never seen");
            at.duration_since(*t)
        })
        .collect();
    let mut rtt: Vec<Duration> = sent.iter().map(|x| x.2).collect();
    lat.sort();
    rtt.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p) as usize];
    eprintln!(
        "flag change -> table generation visible in another process: n={} min={:?} p50={:?} p99={:?} max={:?}; HTTP PUT round trip p50={:?} p99={:?}",
        lat.len(),
        lat[0],
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat[lat.len() - 1],
        pct(&rtt, 0.5),
        pct(&rtt, 0.99),
    );
    assert!(pct(&lat, 0.5) < Duration::from_millis(100));
}

#[test]
fn events_sent_while_the_server_is_down_are_applied_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path());
    let dp = FakeDataplane::spawn(&shm_path(dir.path()));
    let body = json!({"kind": "memory", "size_bytes": 1u64 << 41, "peer": "10.77.0.2:7470"});
    let id = s.post("/v1/jobs", &body).json::<Value>().unwrap()["id"]
        .as_u64()
        .unwrap();
    wait_for(10, "running", || {
        (s.get_json(&format!("/v1/jobs/{id}"))["status"] == "running").then_some(())
    });
    // Kill the server, let the dataplane finish the job meanwhile.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let region = Region::open(&shm_path(dir.path())).unwrap();
    let head0 = region.event_positions().0;
    dp.state
        .finish_all
        .store(true, std::sync::atomic::Ordering::Relaxed);
    wait_for(5, "finish event written", || {
        (region.event_positions().0 > head0).then_some(())
    });
    s.restart();
    let j = wait_for(5, "completed after restart", || {
        let j = s.get_json(&format!("/v1/jobs/{id}"));
        (j["status"] == "completed").then_some(j)
    });
    assert_eq!(j["progress"]["bytes_done"], 1u64 << 41);
    let (h, t) = region.event_positions();
    wait_for(5, "event ring drained", || {
        (region.event_positions().1 >= h).then_some(())
    });
    assert!(t <= h);
}

#[test]
fn a_dataplane_restart_fails_its_running_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let dp = FakeDataplane::spawn(&shm_path(dir.path()));
    let body = json!({"kind": "disk", "size_bytes": 1u64 << 41, "peer": "10.77.0.2:7470"});
    let id = s.post("/v1/jobs", &body).json::<Value>().unwrap()["id"]
        .as_u64()
        .unwrap();
    wait_for(10, "running", || {
        (s.get_json(&format!("/v1/jobs/{id}"))["status"] == "running").then_some(())
    });
    drop(dp);
    let _dp2 = FakeDataplane::spawn(&shm_path(dir.path()));
    let j = wait_for(5, "failed", || {
        let j = s.get_json(&format!("/v1/jobs/{id}"));
        (j["status"] == "failed").then_some(j)
    });
    assert!(j["error"].as_str().unwrap().contains("restarted"), "{j}");
    let h = s.get_json("/v1/health");
    assert_eq!(h["components"]["control"]["dataplane_restarts"], 1);
}

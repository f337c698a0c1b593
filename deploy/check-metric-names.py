#!/usr/bin/env python3
"""Checks that every PromQL query in a Grafana dashboard (panel targets and templating
queries) and in Prometheus rule files uses only metric names present in a scrape of a real
/metrics, and only label names those metrics carry.

Usage: check-metric-names.py METRICS_TEXT DASHBOARD.json [RULES.yml ...]
Exit 1 with one line per problem. Names Prometheus itself makes (`up`) are allowed in rules.
Standard library only, plus PyYAML when rule files are given.
"""
import json
import re
import sys

FUNCS_AND_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "inf", "nan", "le",
}
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


def scraped(path):
    """metric name -> set of label names, from Prometheus/OpenMetrics text."""
    names = {}
    for line in open(path, encoding="utf-8"):
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(rf"({IDENT})(\{{([^}}]*)\}})?\s", line)
        if not m:
            continue
        labels = set(re.findall(rf"({IDENT})=\"", m.group(3) or ""))
        names.setdefault(m.group(1), set()).update(labels)
    return names


def selectors(expr):
    """(metric name, label names in its matcher) for every vector selector in a query."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\$\{?\w+\}?", "x", e)  # Grafana variables (inside label values)
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    out = []
    for m in re.finditer(rf"({IDENT})\s*(\{{[^}}]*\}})?\s*(\()?", e):
        name, matcher, call = m.group(1), m.group(2), m.group(3)
        if call or name in FUNCS_AND_KEYWORDS or re.fullmatch(r"[0-9.e]+", name):
            continue
        prev = e[: m.start()].rstrip()
        if prev.endswith(("{", ",")) and not matcher:
            continue  # a label name inside a matcher we already took
        labels = set(re.findall(rf"({IDENT})\s*(?:=~|!~|!=|=)", matcher or ""))
        out.append((name, labels))
    return out


def dashboard_queries(d):
    for p in d.get("panels", []):
        for t in p.get("targets", []):
            if t.get("expr"):
                yield f"panel {p.get('title')!r}", t["expr"]
        for sub in p.get("panels", []):  # rows
            yield from dashboard_queries({"panels": [sub]})
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            m = re.match(r"label_values\((.*?)(?:,\s*\w+)?\)$", q.strip())
            yield f"variable {v['name']!r}", m.group(1) if m else q


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    names = scraped(sys.argv[1])
    queries = list(dashboard_queries(json.load(open(sys.argv[2], encoding="utf-8"))))
    for path in sys.argv[3:]:
        import yaml

        for g in yaml.safe_load(open(path, encoding="utf-8"))["groups"]:
            for r in g["rules"]:
                queries.append((f"rule {r.get('alert') or r.get('record')!r}", r["expr"]))
    problems, used = [], set()
    for where, expr in queries:
        sels = selectors(expr)
        if not sels:
            problems.append(f"{where}: no metric in {expr!r}")
        for name, labels in sels:
            if name in PROMETHEUS_OWN and where.startswith("rule"):
                continue
            used.add(name)
            if name not in names:
                problems.append(f"{where}: metric {name} is not exported")
                continue
            for label in labels - names[name] - {"instance", "job"}:
                problems.append(f"{where}: metric {name} has no label {label}")
    for p in problems:
        print(p)
    print(f"{len(queries)} queries, {len(used)} metric names, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

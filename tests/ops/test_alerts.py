"""The alert rules (ops/prometheus): `promtool check rules`, `promtool test rules` on recorded
series, `promtool check config` of the example scrape configuration, and every metric an alert
names is one the code exports (the daemon's and the web's registries, read here)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ivr.metrics import DaemonMetrics
from notices.metrics import NoticeMetrics
from web_stub.ops import WebMetrics

OPS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
#: series Prometheus makes itself, not the code
PROMETHEUS_OWN = {"up"}
PROMQL_WORDS = {
    "sum", "count", "rate", "increase", "absent", "and", "or", "unless", "by", "without", "max", "min",
    "avg", "on", "ignoring", "group_left", "group_right", "bool", "offset", "histogram_quantile",
}  # fmt: skip


def promtool(*args: str, cwd: Path = OPS) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool is missing: install Debian's prometheus package (scripts/bootstrap does)")
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_tests_the_rules_on_recorded_series() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_example_scrape_configuration_is_valid(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("a-token\n")
    config = (
        (OPS / "prometheus.yml")
        .read_text()
        .replace("/etc/prometheus/ivr-web-metrics-token", str(token))
        .replace("/etc/prometheus/ivr-notices-metrics-token", str(token))
    )
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(OPS / "alerts.yml", tmp_path / "alerts.yml")
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def exported_names() -> set[str]:
    names: set[str] = set()
    for registry in (DaemonMetrics().registry, WebMetrics().registry, NoticeMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
            if family.type == "counter":
                names.add(f"{family.name}_total")
            if family.type == "histogram":
                names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum"))
    return names


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load((OPS / "alerts.yml").read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_matchers = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_matchers)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_ranges)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", without_groupings))
    return {word for word in words if word not in PROMQL_WORDS}


def test_every_metric_an_alert_names_is_exported_by_the_code() -> None:
    exported = exported_names()
    expressions = alert_expressions()
    wanted = {"IvrDaemonDown", "IvrSystemErrorRate", "IvrApologyRate", "IvrAmiDisconnected"}
    wanted |= {"IvrLockoutSpike", "Ivr429Spike", "NoticeRelayDown"}
    assert wanted <= set(expressions)
    for alert, expr in expressions.items():
        names = metric_names(expr)
        assert names, alert
        unknown = names - exported - PROMETHEUS_OWN
        assert not unknown, f"{alert} names {sorted(unknown)}, which the code does not export"


def test_the_name_reader_sees_every_metric() -> None:
    expr = 'sum by (job) (rate(ivr_calls_total{outcome="a b"}[5m])) / sum(rate(x_y[5m])) > 0.05'
    assert metric_names(expr) == {"ivr_calls_total", "x_y"}

"""The Grafana dashboard (deploy/grafana/outbox-relay.json) against the relay.

Grafana itself is not packaged by Debian, so the dashboard is never loaded
into one here. What is checked instead: the JSON model (a Prometheus
datasource as a templated variable, used by every panel); every query parses
(`promtool check rules` on one recording rule per query); every metric a
query names is in the /metrics of a real relay, scraped over HTTP; and every
query, run by a real Prometheus that scrapes that relay, returns series that
carry the labels its legend names.
"""
import json
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import uuid

from test_artifacts import BOOTSTRAP, ROOT, example_db, free_port, http_get, psql, relay_bin  # noqa: F401
from test_prometheus import promtool

DASHBOARD = ROOT / "deploy/grafana/outbox-relay.json"
# What Grafana puts in for its own variables when it sends a query. The rate
# interval is four scrape intervals at least; the live Prometheus below
# scrapes every second.
RATE_INTERVAL = "10s"
# PromQL words that are not metric names (keywords, binary operators,
# modifiers); a name followed by "(" is a function or an aggregation.
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "atan2", "inf", "nan"}


def dashboard():
    return json.loads(DASHBOARD.read_text())


def panels(dash):
    """Every panel, those inside collapsed rows too; rows themselves not."""
    for p in dash["panels"]:
        if p["type"] == "row":
            yield from p.get("panels", [])
        else:
            yield p


def label_values(var):
    """(selector, label) of a query variable's label_values(selector, label)."""
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
    assert m, f'variable {var["name"]}: not label_values(selector, label)'
    return m.group(1), m.group(2)


def queries(dash):
    """[(where, PromQL)] of every panel target and every query variable;
    a variable's label_values(selector, label) contributes its selector."""
    out = [(f'panel {p["id"]} "{p["title"]}" {t["refId"]}', t["expr"])
           for p in panels(dash) for t in p["targets"]]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            out.append((f'variable {v["name"]}', label_values(v)[0]))
    return out


def substitute(expr, values):
    """The query as Grafana sends it: $var, ${var} and ${var:format} replaced.
    A variable the dashboard does not define fails."""
    def value(m):
        name = m.group(1) or m.group(2)
        assert name in values, f"${name} in {expr!r}: not a variable of the dashboard"
        return values[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def variable_values(dash, relay_name):
    """Grafana's builtin rate interval, and each query variable set to the
    one relay the test runs (its 'All' would be .*). The name is used as a
    regular expression as it is: it holds no character special to one."""
    assert re.fullmatch(r"[\w-]+", relay_name), relay_name
    values = {"__rate_interval": RATE_INTERVAL}
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            values[v["name"]] = relay_name
    return values


def metric_names(expr):
    """The metric names a PromQL expression selects: what is left once
    strings, label matchers, ranges and label lists (by, on, group_left...)
    are taken out, less keywords, function and aggregation names and
    numbers."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^{}]*\}", " ", e)
    e = re.sub(r"\[[^\[\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.:$])[A-Za-z_:][\w:]*", e):
        if m.group(0).lower() in PROMQL_WORDS or re.match(r"\s*\(", e[m.end():]):
            continue
        names.add(m.group(0))
    return names


def unknown_metrics(named_queries, exported):
    """["where: name"] for each metric a query names that is not exported."""
    return [f"{where}: {name}" for where, expr in named_queries
            for name in sorted(metric_names(expr)) if name not in exported]


def check_rules(tmp_path, named_queries, values):
    """promtool check rules on a rule file with one recording rule a query."""
    rules = tmp_path / "dashboard_rules.yml"
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (where, expr) in enumerate(named_queries):
        lines += [f"      # {where}", f"      - record: dashboard:query_{i}",
                  f"        expr: {json.dumps(substitute(expr, values))}"]
    rules.write_text("\n".join(lines) + "\n")
    return promtool("check", "rules", str(rules))


# --------------------------------------------------------------------------
# the JSON model
# --------------------------------------------------------------------------
def test_dashboard_model():
    dash = dashboard()
    assert dash["uid"] == "outbox-relay" and dash["title"] == "outbox-relay"
    assert dash["id"] is None, "an id is the Grafana instance's, not the file's"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    use = {"type": "prometheus", "uid": "${datasource}"}
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == use, v["name"]
    ids = [p["id"] for p in dash["panels"]] + \
        [c["id"] for p in dash["panels"] if p["type"] == "row" for c in p.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    taken = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f'{p["title"]} overlaps another panel'
        taken |= cells
    for p in panels(dash):
        assert p["datasource"] == use, p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == use and t["expr"].strip(), (p["title"], t["refId"])
    # Every variable a query uses is defined (substitute() fails otherwise).
    values = variable_values(dash, "r")
    for _, expr in queries(dash):
        substitute(expr, values)


def test_metric_names_are_found_in_promql():
    cases = [
        ('histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="y", z=~"$relay"}[$__rate_interval])))',
         {"a_bucket"}),
        ('a * on (job, instance) group_left (relay) b{relay=~"x"} offset 5m', {"a", "b"}),
        ("changes((max by (relay) (c))[5m:30s]) > 3 and d == bool 1", {"c", "d"}),
        ("time() - e > 1e3", {"e"}),
        ("sum without (instance) (f) unless on () absent(g)", {"f", "g"}),
        ("2 * h + Inf", {"h"}),
    ]
    for expr, names in cases:
        assert metric_names(expr) == names, expr


# --------------------------------------------------------------------------
# the queries parse
# --------------------------------------------------------------------------
def test_every_query_parses(tmp_path):
    dash = dashboard()
    named = queries(dash)
    out = check_rules(tmp_path, named, variable_values(dash, "outbox-relay"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(named)} rules found" in out.stdout, out.stdout


def test_promtool_rejects_a_query_that_does_not_parse(tmp_path):
    """The check above can fail: one unbalanced parenthesis is refused."""
    dash = dashboard()
    named = queries(dash)[:1] + [("broken", "sum by (relay) (outbox_relay_leader")]
    out = check_rules(tmp_path, named, variable_values(dash, "outbox-relay"))
    assert out.returncode != 0 and "dashboard:query_1" in out.stdout + out.stderr, \
        out.stdout + out.stderr


# --------------------------------------------------------------------------
# against a live relay and a live Prometheus
# --------------------------------------------------------------------------
def exported_names(text):
    """Sample names of a Prometheus text exposition (histograms' _bucket,
    _sum and _count included, as queries name them)."""
    return {m.group(1) for m in re.finditer(r"^([A-Za-z_:][\w:]*)[{ ]", text, re.M)}


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def prom_query(port, expr):
    url = f"/api/v1/query?query={urllib.parse.quote(expr)}"
    code, body = http_get(port, url)
    assert code == 200, f"{expr}: {code} {body}"
    return json.loads(body)["data"]["result"]


def drop_topic(topic):
    """Delete the relay's checkpoint topic from the shared local broker."""
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 0})
    try:
        admin.delete_topics([topic], operation_timeout=30)[topic].result(60)
    except Exception as e:  # the relay never got to create it
        assert "UNKNOWN_TOPIC" in str(e), e


def test_dashboard_against_a_live_relay(example_db, tmp_path):
    """A relay on the PostgreSQL and Kafka of deploy/local/up, leader, with
    http.listen set: every metric the dashboard names is in its /metrics
    (scraped over HTTP); then a Prometheus scraping it every second runs every
    query: each returns series, with the labels its legend uses."""
    db, dash = example_db, dashboard()
    psql(db, "-f", ROOT / "sql/install.sql")
    name = "dashboard-test-" + uuid.uuid4().hex[:8]
    port = free_port()
    conf = tmp_path / "relay.conf"
    conf.write_text(f'relay = {{ name = "{name}"; lease_ttl_ms = 3000; }};\n'
                    f'postgres = {{ conninfo = "{db}"; }};\n'
                    f'kafka = {{ bootstrap_servers = "{BOOTSTRAP}"; checkpoint_topic = "ckpt-{name}"; }};\n'
                    f'http = {{ listen = "127.0.0.1:{port}"; }};\n')
    log_path = tmp_path / "relay.log"
    log = open(log_path, "wb")
    relay = subprocess.Popen([relay_bin(), "run", "-c", conf], stdout=log, stderr=log)
    prom = prom_log = None
    try:
        def leader_scrape():
            assert relay.poll() is None, log_path.read_text()
            code, text = http_get(port, "/metrics")
            return text if code == 200 and re.search(r"^outbox_relay_leader 1$", text, re.M) else None
        text = wait(leader_scrape, 60, "the relay to lead")
        exported = exported_names(text)
        assert "outbox_relay_info" in exported and "outbox_relay_commit_duration_seconds_bucket" in exported
        named = queries(dash)
        missing = unknown_metrics(named, exported)
        assert not missing, "the dashboard names metrics the relay does not export:\n" + "\n".join(missing)
        # ...and the check would say so of a name that is not exported.
        assert unknown_metrics([("bad", "rate(outbox_relay_rows_publish_total[5m])")], exported) == \
            ["bad: outbox_relay_rows_publish_total"]

        # Prometheus, scraping the relay every second.
        assert shutil.which("prometheus"), "prometheus is missing: scripts/install-deps.sh installs it"
        pport = free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: outbox-relay\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
        prom_log = open(tmp_path / "prometheus.log", "wb")
        prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{pport}", "--log.level=warn"],
                                stdout=prom_log, stderr=prom_log)
        wait(lambda: prom.poll() is None and http_get(pport, "/-/ready")[0] == 200, 30,
             "Prometheus to start")
        # Enough samples for the rate interval (and its subqueries) to see two.
        wait(lambda: prom_query(pport, f"count_over_time(outbox_relay_info[{RATE_INTERVAL}]) >= 5"),
             30, "Prometheus to scrape the relay")
        values = variable_values(dash, name)
        for v in dash["templating"]["list"]:
            if v["type"] == "query":  # what Grafana asks to fill the variable's menu
                selector, label = label_values(v)
                code, body = http_get(pport, f"/api/v1/label/{label}/values?"
                                             f"match[]={urllib.parse.quote(substitute(selector, values))}")
                assert code == 200 and name in json.loads(body)["data"], (v["name"], body)
        empty, unlabelled = [], []
        for p in panels(dash):
            for t in p["targets"]:
                where = f'panel {p["id"]} "{p["title"]}" {t["refId"]}'
                result = prom_query(pport, substitute(t["expr"], values))
                if not result:
                    empty.append(where)
                for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")):
                    if any(label not in r["metric"] for r in result):
                        unlabelled.append(f"{where}: {{{{{label}}}}}")
        assert not empty, "queries that return nothing:\n" + "\n".join(empty)
        assert not unlabelled, "legends naming a label the series lack:\n" + "\n".join(unlabelled)
    finally:
        if prom is not None:
            prom.send_signal(signal.SIGTERM)
            prom.wait(30)
            prom_log.close()
        relay.send_signal(signal.SIGTERM)
        code = relay.wait(60)
        log.close()
        drop_topic(f"ckpt-{name}")
    assert code == 0, log_path.read_text()

"""Metric definitions, targets, ratios and the Markdown report for bench/run (stdlib only)."""

from __future__ import annotations

import math

BASELINE = "runc"
SUBJECT = "pyoci"
FLOOR_SLACK_MS = 1.5

# key -> (title, unit, lower_is_better)
TIME_METRICS = {
    "floor": ("interpreter floor (`python3 -I -S -c pass`)", "ms", True),
    "run": ("`run` of /bin/true", "ms", True),
    "create": ("`create` alone", "ms", True),
    "start": ("`start` alone", "ms", True),
    "state": ("`state` alone", "ms", True),
    "kill": ("`kill KILL` alone", "ms", True),
    "delete": ("`delete` alone (stopped container)", "ms", True),
    "cycle": ("create → start → wait → delete", "ms", True),
    "shim": ("create → start → delete --force (podman/containerd shim)", "ms", True),
    "exec": ("`exec` of /bin/true into a running container", "ms", True),
}
OTHER_METRICS = {
    "sequence": ("{n} × `run` in sequence (total)", "ms", True),
    "parallel_throughput": ("{n} × `run` in parallel: throughput", "containers/s", False),
    "parallel_p99": ("{n} × `run` in parallel: p99 latency", "ms", True),
    "init_hwm": ("waiting init (created) peak RSS, VmHWM", "KiB", True),
    "init_rss": ("waiting init (created) RSS, VmRSS", "KiB", True),
    "init_pss": ("waiting init (created) Pss", "KiB", True),
    "cmd_rss_run": ("peak RSS of the `run` command (GNU time %M)", "KiB", True),
    "cmd_rss_create": ("peak RSS of the `create` command (GNU time %M)", "KiB", True),
    "cmd_rss_state": ("peak RSS of the `state` command (GNU time %M)", "KiB", True),
}
ORDER = ["floor", "run", "create", "start", "state", "kill", "delete", "cycle", "shim",
         "sequence", "parallel_throughput", "parallel_p99", "exec", "init_hwm", "init_rss",
         "init_pss", "cmd_rss_run", "cmd_rss_create", "cmd_rss_state"]

# key -> (text, kind, bound): kind "ratio" (subject/baseline <= bound) or "floor"
# (subject median <= floor median + bound ms) or "le" (subject <= baseline).
TARGETS = {
    "run": ("≤ 1.0× runc", "ratio", 1.0),
    "create": ("≤ 1.0× runc", "ratio", 1.0),
    "sequence": ("≤ 1.0× runc", "ratio", 1.0),
    "shim": ("≤ 1.3× runc", "ratio", 1.3),
    "state": (f"≤ floor + {FLOOR_SLACK_MS} ms", "floor", FLOOR_SLACK_MS),
    "start": (f"≤ floor + {FLOOR_SLACK_MS} ms", "floor", FLOOR_SLACK_MS),
    "kill": (f"≤ floor + {FLOOR_SLACK_MS} ms", "floor", FLOOR_SLACK_MS),
    "delete": (f"≤ floor + {FLOOR_SLACK_MS} ms", "floor", FLOOR_SLACK_MS),
    "init_hwm": ("≤ runc", "ratio", 1.0),
}


def title(key: str, params: dict) -> tuple[str, str, bool]:
    t, unit, lower = TIME_METRICS.get(key) or OTHER_METRICS[key]
    return t.format(n=params.get(key + "_n", params.get("n", ""))), unit, lower


def _median_of(metric: dict | None, name: str) -> float | None:
    if not metric:
        return None
    v = metric.get("per_runtime", {}).get(name) or {}
    m = v.get(metric.get("show", "median"))
    return None if m is None or (isinstance(m, float) and math.isnan(m)) else m


def ratios(metric: dict, names: list[str]) -> dict[str, float]:
    """Each runtime's median over the baseline's (runc, else the first runtime)."""
    base = BASELINE if BASELINE in names else (names[0] if names else "")
    b = _median_of(metric, base)
    out = {}
    for n in names:
        if n == base:
            continue
        v = _median_of(metric, n)
        if v is not None and b:
            out[f"{n}/{base}"] = v / b
    return out


def judge(key: str, metrics: dict) -> tuple[str, str]:
    """(target text, 'met' | 'not met' | 'n/a') for the subject runtime on metric key."""
    if key not in TARGETS:
        return "", ""
    text, kind, bound = TARGETS[key]
    s = _median_of(metrics.get(key), SUBJECT)
    if kind == "floor":
        f = _median_of(metrics.get("floor"), "floor")
        if s is None or f is None:
            return text, "n/a"
        return f"{text} (≤ {f + bound:.2f} ms)", "met" if s <= f + bound else "not met"
    b = _median_of(metrics.get(key), BASELINE)
    if s is None or b is None or b == 0:
        return text, "n/a"
    return text, "met" if s / b <= bound else "not met"


def _fmt(v: float | None, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if unit == "KiB":
        return f"{v:,.0f}"
    if unit == "containers/s":
        return f"{v:.1f}"
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _cell(metric: dict, name: str, unit: str) -> str:
    v = metric.get("per_runtime", {}).get(name)
    if v is None:
        return "–"
    if "error" in v:
        return "failed"
    if "na" in v:
        return "n/a"
    return _fmt(v.get(metric.get("show", "median")), unit)


def markdown(res: dict) -> str:
    """The RESULTS.md text for a results dict as bench/run writes it."""
    names = [n for n, r in res["runtimes"].items() if r.get("available")]
    cols = [n for n in names if n != "floor"]
    base = BASELINE if BASELINE in cols else (cols[0] if cols else "")
    ratio_cols = [f"{n}/{base}" for n in cols if n != base]
    m = res["machine"]
    cfg = res["config"]
    out = ["# pyoci benchmarks", "",
           f"Generated by `{res['command']}` on {res['date']}.", "",
           "## Machine", "",
           f"- nproc {m['nproc']}, memory {m['memory_mib']} MiB, kernel {m['kernel']} "
           f"({m['machine']})",
           f"- load average at start {_load(m.get('loadavg_start'))}, at end "
           f"{_load(m.get('loadavg_end'))} (the machine may be shared: numbers are noisy)",
           "", "## Runtimes", ""]
    for n, r in res["runtimes"].items():
        line = f"- **{n}**: {r.get('version') or '?'} (`{r.get('path') or 'not found'}`)"
        if not r.get("available"):
            line += f": {r.get('note')}"
        out.append(line)
    fl = res.get("floor_interpreter", {})
    out += [f"- interpreter floor: `{fl.get('path')} -I -S -c pass` ({fl.get('version')})",
            f"- bundle: busybox-static rootfs, `config.json` as `runc spec` (ociVersion "
            f"{cfg.get('oci_version')}), read-only root, pid/net/ipc/uts/mount namespaces",
            "", "## Iterations", "",
            f"- single commands, cycles, exec: {cfg['iterations']} per runtime, "
            f"interleaved (runtime order alternates every iteration); command peak RSS: "
            f"{min(cfg['iterations'], 10)} separate untimed runs",
            f"- sequence: {cfg['sequence_n']} runs × {cfg['sequence_reps']} repetitions",
            f"- parallel: {cfg['parallel_n']} at once × {cfg['parallel_rounds']} rounds",
            f"- quick mode: {'yes' if cfg.get('quick') else 'no'}",
            f"- runtimes' environment: {cfg.get('runtime_env', 'inherited')}; the first run "
            "of each runtime (its probe) is a warm-up and is not counted", "",
            "## Results (medians)", "",
            "Targets apply to pyoci; ratios are against runc. "
            f"Floor targets: median ≤ interpreter floor median + {FLOOR_SLACK_MS} ms.", ""]
    head = ["metric", "unit", *cols, *ratio_cols, "target", "status"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] * len(head)) + "|")
    for key in ORDER:
        metric = res["metrics"].get(key)
        if not metric:
            continue
        unit = metric["unit"]
        if key == "floor":
            cells = [f"{_fmt(_median_of(metric, 'floor'), unit)} (python)" if i == 0 else ""
                     for i, _ in enumerate(cols)]
        else:
            cells = [_cell(metric, n, unit) for n in cols]
        rs = metric.get("ratio", {})
        rcells = [f"{rs[c]:.2f}×" if c in rs else "–" for c in ratio_cols]
        out.append("| " + " | ".join([metric["title"], unit, *cells, *rcells,
                                      metric.get("target", ""), metric.get("status", "")])
                   + " |")
    out += ["", "## Distributions (median / p90 / p99, n)", ""]
    out.append("| metric | " + " | ".join(cols or ["–"]) + " |")
    out.append("|" + "|".join(["---"] * (len(cols) + 1)) + "|")
    for key in ORDER:
        metric = res["metrics"].get(key)
        if not metric or metric["unit"] != "ms":
            continue
        who = ["floor"] if key == "floor" else cols
        cells = []
        for n in who:
            v = metric["per_runtime"].get(n) or {}
            if "median" in v:
                cells.append(f"{_fmt(v['median'], 'ms')} / {_fmt(v['p90'], 'ms')} / "
                             f"{_fmt(v['p99'], 'ms')}, {v['n']}")
            else:
                cells.append("–")
        cells += [""] * (len(cols) - len(cells))
        out.append("| " + " | ".join([metric["title"], *cells]) + " |")
    notes = []
    for key in ORDER:
        metric = res["metrics"].get(key) or {}
        for n, v in (metric.get("per_runtime") or {}).items():
            if "error" in v:
                notes.append(f"- {metric['title']}, {n}: failed: {v['error']}")
            elif "na" in v:
                notes.append(f"- {metric['title']}, {n}: n/a: {v['na']}")
    for path in res.get("leaked_cgroups") or []:
        notes.append(f"- left behind (removed by the harness): cgroup `{path}`")
    if notes:
        out += ["", "## Failures, n/a and leftovers", "", *notes]
    out += ["", "Raw samples: `bench/out/results.json` (see bench/README.md).", ""]
    return "\n".join(out)


def _load(v) -> str:
    return " ".join(f"{x:.2f}" for x in v) if v else "?"

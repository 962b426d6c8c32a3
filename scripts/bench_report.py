#!/usr/bin/env python3
"""tapegrad vs PyTorch: run the W1-W6 benchmarks side by side and write BENCHMARKS.md + an SVG chart.

Python 3.11, standard library only.

    python3 scripts/bench_report.py run     [--only W1,W4] [--threads 1,2] [--peers DIR] [--venv DIR]
    python3 scripts/bench_report.py report  [--run-dir DIR] [--out BENCHMARKS.md] [--svg docs/bench_ratios.svg]
    python3 scripts/bench_report.py all     # run, then report on that run

`run` builds the benches once (unpinned), then for each workload group W1..W6 runs, back to back:
    tapegrad 1 thread  taskset -c 0 cargo bench --bench <b> -- --noplot --save-baseline t1 '^W<k>_'
    PyTorch  1 thread  taskset -c 0 <venv>/bin/python torch_bench.py --threads 1 --only W<k> --out torch.jsonl
    tapegrad 2 threads cargo bench --bench <b> -- --noplot --save-baseline t2 '^W<k>_'
    PyTorch  2 threads <venv>/bin/python torch_bench.py --threads 2 --only W<k> --out torch.jsonl
so that load drift on the (shared) machine hits both sides alike. Everything goes into a fresh
directory target/bench-report/<timestamp>/ (criterion writes there via CRITERION_HOME, so stale
results of older runs can never leak in): criterion/<group>/<id>/t<N>/estimates.json, torch.jsonl,
meta.json (date, machine, load averages, exact commands), log.txt.

`report` reads one such directory (default: the newest) and writes the markdown and the SVG.
Times are criterion's median point estimate (tapegrad) and benchlib's median (PyTorch), both per
call of forward + backward.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

# BENCHMARKS.md from this line on is written by hand and kept when the report is regenerated.
KEEP_MARK = "<!-- hand-written sections below: kept by scripts/bench_report.py -->"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUNS = REPO / "target" / "bench-report"
DEFAULT_VENV = Path.home() / ".cache" / "tapegrad-peers-venv"

# Workload group -> (cargo bench target, criterion filter regex).
GROUPS = {
    "W1": ("softmax", "^W1_"),
    "W2": ("softmax", "^W2_"),
    "W3": ("softmax", "^W3_"),
    "W4": ("backward", "^W4_"),
    "W5": ("backward", "^W5_"),
    "W6": ("backward", "^W6_"),
}

SOFTMAX_SHAPES = ["64x10", "256x1000", "1024x4096", "32x32768"]
MATMUL_N = [64, 256, 512, 1024]


def _rows():
    """The comparison rows: (workload, label, shape, criterion path, torch variant, torch shape, target)."""
    rows = []
    sm = [
        ("W1", "fused softmax", "W1_fused", "fused_softmax"),
        ("W2", "composed (stable)", "W2_composed", "composed_stable"),
        ("W2", "composed (naive)", "W2_naive", "composed_naive"),
        ("W3", "cross-entropy fused", "W3_ce_fused", "fused_cross_entropy"),
        ("W3", "cross-entropy composed", "W3_ce_composed", "composed_lse_gather"),
    ]
    for w, label, group, variant in sm:
        for s in SOFTMAX_SHAPES:
            target = None
            if w == "W1":
                target = 0.2 if s == "64x10" else 0.6
            elif group == "W2_composed":
                target = 0.5
            elif group == "W3_ce_fused":
                target = 0.6
            rows.append((w, label, s, f"{group}/{s}", variant, s, target))
    for n in MATMUL_N:
        rows.append(("W4", "matmul + sum", f"{n}x{n}", f"W4_matmul/fwd_bwd/{n}", "matmul_sum", f"{n}x{n}",
                     1.0 if n >= 256 else None))
    rows.append(("W5", "chain of 1000 ops, fwd+bwd", "0-dim", "W5_chain1000/fwd_bwd", "chain1000_fwd_bwd", "0-dim", None))
    rows.append(("W5", "chain of 1000 ops, fwd no-grad", "0-dim", "W5_chain1000/forward_nograd",
                 "chain1000_fwd_nograd", "0-dim", None))
    rows.append(("W6", "MLP step (SGD)", "128x784", "W6_mlp/step_sgd", "mlp_step_sgd", "128x784", 0.8))
    return rows


ROWS = _rows()
WORKLOAD_TITLES = {
    "W1": "W1 — fused softmax, `sum(softmax(x) * g)`, forward + backward",
    "W2": "W2 — softmax composed from primitives (stable: detached max; naive: `exp(x)/sum(exp(x))`)",
    "W3": "W3 — softmax cross-entropy, mean over the batch",
    "W4": "W4 — matmul `sum(A @ B)`, gradients of A and B (GFLOP/s count 6n³)",
    "W5": "W5 — per-op overhead: 1000-op chain on a 0-d value",
    "W6": "W6 — MLP 784-256-10, batch 128: forward + backward + SGD update",
}


# ----------------------------------------------------------------------------- run


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _cmd_out(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def machine_info() -> dict:
    lscpu = {}
    for line in _cmd_out(["lscpu"]).splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            lscpu[k.strip()] = v.strip()
    flags = lscpu.get("Flags", "").split()
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return {
        "cpu_model": lscpu.get("Model name", platform.processor() or "?"),
        "cpus": lscpu.get("CPU(s)", str(os.cpu_count())),
        "cores_per_socket": lscpu.get("Core(s) per socket", "?"),
        "threads_per_core": lscpu.get("Thread(s) per core", "?"),
        "sockets": lscpu.get("Socket(s)", "?"),
        "hypervisor": lscpu.get("Hypervisor vendor", ""),
        "simd": simd,
        "kernel": platform.release(),
        "mem_total": next((l.split(":", 1)[1].strip() for l in Path("/proc/meminfo").read_text().splitlines()
                           if l.startswith("MemTotal")), "?") if Path("/proc/meminfo").exists() else "?",
    }


def find_peers(arg: str | None) -> Path:
    cands = [Path(arg)] if arg else []
    if os.environ.get("TAPEGRAD_PEERS"):
        cands.append(Path(os.environ["TAPEGRAD_PEERS"]))
    cands += [REPO.parent / "shared" / "peers", REPO.parent.parent / "shared" / "peers"]
    for c in cands:
        if (c / "torch_bench.py").exists():
            return c.resolve()
    sys.exit(f"torch_bench.py not found in any of {[str(c) for c in cands]}; pass --peers DIR")


class Runner:
    def __init__(self, run_dir: Path, dry: bool):
        self.run_dir = run_dir
        self.dry = dry
        self.steps: list[dict] = []
        self.log = None if dry else open(run_dir / "log.txt", "a")

    def step(self, what: str, cmd: list[str], env: dict | None = None, cwd: Path = REPO) -> None:
        shown = " ".join(shlex.quote(c) for c in cmd)
        env_shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        full = (env_shown + " " if env_shown else "") + shown
        print(f"\n=== {what}: {full}", flush=True)
        rec = {"what": what, "cmd": full, "load_before": _loadavg(), "start": _dt.datetime.now().isoformat(timespec="seconds")}
        if self.dry:
            self.steps.append(rec)
            return
        t0 = time.monotonic()
        self.log.write(f"\n=== {what}: {full}\n")
        self.log.flush()
        p = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT)
        rec.update(rc=p.returncode, seconds=round(time.monotonic() - t0, 1), load_after=_loadavg())
        self.steps.append(rec)
        print(f"    rc={p.returncode}  {rec['seconds']} s  load {rec['load_before']} -> {rec['load_after']}", flush=True)
        if p.returncode != 0:
            print(f"    (see {self.run_dir / 'log.txt'})", flush=True)


def cmd_run(a) -> Path:
    only = [w.strip() for w in a.only.split(",")] if a.only else list(GROUPS)
    bad = [w for w in only if w not in GROUPS]
    if bad:
        sys.exit(f"unknown workload(s) {bad}; choose from {list(GROUPS)}")
    threads = [int(t) for t in a.threads.split(",")]
    peers = find_peers(a.peers)
    py = Path(a.venv) / "bin" / "python"
    if not py.exists():
        sys.exit(f"{py} missing: install the peers venv first (bash <peers>/run.sh does it)")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(a.runs_dir) / stamp
    if not a.dry_run:
        run_dir.mkdir(parents=True, exist_ok=True)
    crit = run_dir / "criterion"
    torch_out = run_dir / "torch.jsonl"
    r = Runner(run_dir, a.dry_run)
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "git_commit": _cmd_out(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "git_dirty": bool(_cmd_out(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])),
        "rustc": _cmd_out(["rustc", "--version"]),
        "torch": _cmd_out([str(py), "-c", "import torch; print(torch.__version__)"]),
        "peers_dir": str(peers),
        "threads": threads,
        "only": only,
        "load_start": _loadavg(),
    }
    print(f"run dir: {run_dir}\nload average: {meta['load_start']}", flush=True)
    # Build once, unpinned, so that the pinned runs only measure.
    r.step("build", ["cargo", "bench", "--no-run", "--bench", "softmax", "--bench", "backward"])
    env = {"CRITERION_HOME": str(crit)}
    for w in only:
        bench, filt = GROUPS[w]
        for t in threads:
            pin = ["taskset", "-c", ",".join(str(c) for c in range(t))] if t == 1 or a.pin_all else []
            r.step(f"{w} tapegrad {t}t", pin + ["cargo", "bench", "--bench", bench, "--", "--noplot",
                                              "--save-baseline", f"t{t}", filt], env=env)
            r.step(f"{w} torch {t}t", pin + [str(py), str(peers / "torch_bench.py"), "--threads", str(t),
                                           "--only", w, "--out", str(torch_out)])
    meta["load_end"] = _loadavg()
    meta["steps"] = r.steps
    meta["seconds_total"] = round(sum(s.get("seconds", 0) for s in r.steps), 1)
    if not a.dry_run:
        (run_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"\ndone in {meta['seconds_total']} s; results in {run_dir}")
    return run_dir


# ----------------------------------------------------------------------------- report


def load_criterion(crit: Path, threads: list[int]) -> dict:
    """{(threads, 'group/id'): median ns} from <crit>/<group>/<id...>/t<N>/estimates.json."""
    out = {}
    if not crit.is_dir():
        return out
    for t in threads:
        for est in crit.glob(f"**/t{t}/estimates.json"):
            bj = est.parent / "benchmark.json"
            if bj.exists():
                full_id = json.loads(bj.read_text())["full_id"]
            else:
                full_id = str(est.parent.parent.relative_to(crit))
            out[(t, full_id)] = json.loads(est.read_text())["median"]["point_estimate"]
    return out


def load_torch(path: Path) -> dict:
    """{(threads, workload, variant, shape): median ns}; a later line for the same key wins."""
    out = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            out[(d["threads"], d["workload"], d["variant"], d["shape"])] = d["median_ns"]
    return out


def fmt_t(ns: float | None) -> str:
    if ns is None:
        return "—"
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= div:
            v = ns / div
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{ns:.0f} ns"


def fmt_r(r: float | None) -> str:
    if r is None:
        return "—"
    return f"{r:.2g}" if r < 0.1 else (f"{r:.2f}" if r < 10 else f"{r:.1f}")


def met(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "not met")


def _ratio(a, b):
    return a / b if a is not None and b is not None and b > 0 else None


def collect(run_dir: Path, threads: list[int]):
    tg = load_criterion(run_dir / "criterion", threads)
    pt = load_torch(run_dir / "torch.jsonl")
    data = []
    for w, label, shape, cpath, variant, tshape, target in ROWS:
        row = {"w": w, "label": label, "shape": shape, "cpath": cpath, "target": target, "t": {}}
        for t in threads:
            a, b = tg.get((t, cpath)), pt.get((t, w, variant, tshape))
            row["t"][t] = (a, b, _ratio(a, b))
        data.append(row)
    return data, tg, pt


def write_markdown(run_dir: Path, out: Path, svg_rel: str, threads: list[int]) -> list[dict]:
    meta_p = run_dir / "meta.json"
    meta = json.loads(meta_p.read_text()) if meta_p.exists() else {}
    data, tg, pt = collect(run_dir, threads)
    m = meta.get("machine", {})
    L = []
    L.append("# Benchmarks: tapegrad vs PyTorch (eager autograd, CPU)\n")
    L.append(f"Generated by `scripts/bench_report.py` from run `{run_dir.name}`. "
             "Each time is the median of one call of forward + backward (graph built from scratch, f32); "
             "**ratio = tapegrad ÷ PyTorch** (below 1: tapegrad is faster). Both sides were measured in the same "
             "run, interleaved per workload group, so the ratios are comparable even though the absolute "
             "times drift with the load of the shared machine. Never compare absolute times across runs.\n")
    L.append(f"![tapegrad ÷ PyTorch ratios]({svg_rel})\n")
    L.append("## Run\n")
    L.append(f"- date: {meta.get('date', '?')}; total wall time of the run {meta.get('seconds_total', '?')} s")
    L.append(f"- machine: {m.get('cpu_model', '?')}, {m.get('cpus', '?')} CPUs ({m.get('sockets', '?')} socket × "
             f"{m.get('cores_per_socket', '?')} cores × {m.get('threads_per_core', '?')} thread/core)"
             + (f", {m['hypervisor']} VM" if m.get("hypervisor") else "")
             + (f", SIMD: {', '.join(m['simd'])}" if m.get("simd") else "") + f", RAM {m.get('mem_total', '?')}, "
             f"Linux {m.get('kernel', '?')}")
    loads = [s.get("load_before") for s in meta.get("steps", [])] + [meta.get("load_end")]
    one_min = [float(x.split()[0]) for x in loads if x and x != "?"]
    L.append(f"- load average (1/5/15 min) at start: {meta.get('load_start', '?')}, at end: {meta.get('load_end', '?')}"
             + (f"; 1-min load seen before the steps: {min(one_min):.2f}–{max(one_min):.2f}" if one_min else "")
             + " — the machine is shared, with 2 cores; loads above ~1 mean other jobs compete for the cores, "
             "which hurts the 2-thread runs most")
    L.append(f"- tapegrad commit `{meta.get('git_commit', '?')[:12]}`" + (" (with uncommitted changes)" if meta.get("git_dirty") else "")
             + f", {meta.get('rustc', '?')}; PyTorch {meta.get('torch', '?')}")
    L.append("- tapegrad: criterion median point estimate (benches use 0.5 s warm-up, 2 s measurement, 20 samples); "
             "PyTorch: `benchlib.bench` median (see the peers README)")
    L.append("- 1 thread = pinned to core 0 with `taskset -c 0` (tapegrad's kernels are single-threaded "
             "today, so its 2-thread column measures the same code unpinned)\n")
    if meta.get("steps"):
        L.append("Commands, in the order they ran (`$RUN` = the run directory, `$PEERS` = " + f"`{meta.get('peers_dir', '?')}`):\n")
        L.append("```sh")
        for s in meta["steps"]:
            c = s["cmd"].replace(str(run_dir), "$RUN").replace(meta.get("peers_dir", "\0"), "$PEERS")
            extra = f"   # {s.get('seconds', '?')} s, load {s.get('load_before', '?')}"
            if s.get("rc"):
                extra += f", EXIT CODE {s['rc']}"
            L.append(c + extra)
        L.append("```\n")
        L.append("Reproduce: `python3 scripts/bench_report.py run` then `python3 scripts/bench_report.py report` "
                 "(or `... all`).\n")

    # ---- caveats found in the data
    notes = []
    if len(threads) > 1:
        t0, tn = threads[0], threads[-1]
        slow = [r for r in data if r["t"][t0][1] and r["t"][tn][1] and r["t"][tn][1] > 1.5 * r["t"][t0][1]]
        if slow:
            worst = max(slow, key=lambda r: r["t"][tn][1] / r["t"][t0][1])
            notes.append(
                f"PyTorch with {tn} threads was more than 1.5× *slower* than with {t0} thread in {len(slow)} of "
                f"{len(data)} rows (worst: {worst['cpath']}, {fmt_t(worst['t'][t0][1])} → {fmt_t(worst['t'][tn][1])}). "
                "That is oversubscription — its worker threads wait on each other while other jobs hold the cores — "
                f"not a property of the library; the {tn}-thread ratios and their met/not met are not meaningful in this run. "
                "Re-run when the load average is below the core count.")
    lmax = max((float(x.split()[0]) for x in loads if x and x != "?"), default=None)
    ncpu = int(m.get("cpus", "0") or 0) if str(m.get("cpus", "")).isdigit() else 0
    if lmax is not None and ncpu and lmax > ncpu:
        notes.append(f"The 1-minute load average reached {lmax:.1f} on {ncpu} CPUs: even the pinned 1-thread runs "
                     "shared core 0 with other processes, so absolute times are inflated and ratios have a noise "
                     "of perhaps ±20–30 %.")
    if notes:
        L.append("## Caveats for this run\n")
        L += [f"- {n}" for n in notes]
        L.append("")

    # ---- targets summary
    tcol = " / ".join(f"{t}t" for t in threads)
    L.append("## Targets (speed issue)\n")
    L.append(f"| target | measured ({tcol}) | met ({tcol}) |")
    L.append("|---|---|---|")

    def rows_of(cpath_prefix):
        return [r for r in data if r["cpath"].startswith(cpath_prefix)]

    def ratio_target(desc, rows):
        vals, oks = [], []
        for t in threads:
            rs = [(r["t"][t][2], r["target"]) for r in rows]
            if any(x is None for x, _ in rs):
                vals.append("incomplete")
                oks.append(None)
                continue
            vals.append(", ".join(fmt_r(x) for x, _ in rs))
            oks.append(all(x <= tgt for x, tgt in rs))
        L.append(f"| {desc} | {' / '.join(vals)} | {' / '.join(met(o) for o in oks)} |")

    ratio_target("W1 fused softmax ≤ 0.6× PyTorch, ≤ 0.2× at 64x10 (shapes " + ", ".join(SOFTMAX_SHAPES) + ")",
                 rows_of("W1_fused/"))
    ratio_target("W2 composed (stable) ≤ 0.5× PyTorch composed", rows_of("W2_composed/"))
    vals, oks = [], []
    for t in threads:
        r = _ratio(tg.get((t, "W2_composed/1024x4096")), tg.get((t, "W1_fused/1024x4096")))
        vals.append(fmt_r(r))
        oks.append(None if r is None else r <= 2.0)
    L.append(f"| W2 tapegrad composed ÷ tapegrad fused ≤ 2.0 at 1024x4096 | {' / '.join(vals)} | {' / '.join(met(o) for o in oks)} |")
    ratio_target("W3 fused cross-entropy ≤ 0.6× PyTorch", rows_of("W3_ce_fused/"))
    ratio_target("W4 matmul n ≥ 256 ≤ 1.0× PyTorch (n = 256, 512, 1024)", [r for r in rows_of("W4_") if r["target"]])
    vals, oks = [], []
    for t in threads:
        ns = tg.get((t, "W5_chain1000/fwd_bwd"))
        vals.append("—" if ns is None else f"{ns / 1000:.0f} ns/op")
        oks.append(None if ns is None else ns / 1000 <= 100)
    L.append(f"| W5 ≤ 100 ns per op, forward + backward | {' / '.join(vals)} | {' / '.join(met(o) for o in oks)} |")
    ratio_target("W6 MLP step ≤ 0.8× PyTorch", rows_of("W6_"))
    L.append("")

    # ---- per-workload tables
    L.append("## Results per workload\n")
    hdr = "| variant | shape | " + " | ".join(f"tapegrad {t}t | PyTorch {t}t | **ratio {t}t**" for t in threads) + " | target | met |"
    sep = "|---|---|" + "---:|---:|---:|" * len(threads) + "---:|---|"
    for w in GROUPS:
        rows = [r for r in data if r["w"] == w]
        if not any(v[0] is not None or v[1] is not None for r in rows for v in r["t"].values()):
            continue
        L.append(f"### {WORKLOAD_TITLES[w]}\n")
        L.append(hdr)
        L.append(sep)
        for r in rows:
            cells = []
            for t in threads:
                a, b, q = r["t"][t]
                cells += [fmt_t(a), fmt_t(b), f"**{fmt_r(q)}**" if q is not None else "—"]
            tgt = "—" if r["target"] is None else f"≤ {r['target']:g}"
            oks = [None if r["target"] is None or r["t"][t][2] is None else r["t"][t][2] <= r["target"] for t in threads]
            mt = "—" if r["target"] is None else " / ".join(met(o) for o in oks)
            L.append(f"| {r['label']} | {r['shape']} | " + " | ".join(cells) + f" | {tgt} | {mt} |")
        L.append("")
        if w == "W4":
            parts = []
            for t in threads:
                g = []
                for n in MATMUL_N:
                    a = tg.get((t, f"W4_matmul/fwd_bwd/{n}"))
                    b = pt.get((t, "W4", "matmul_sum", f"{n}x{n}"))
                    g.append(f"n={n}: {6 * n**3 / a:.0f} vs {6 * n**3 / b:.0f}" if a and b else f"n={n}: —")
                parts.append(f"- GFLOP/s {t}t (tapegrad vs PyTorch): " + "; ".join(g))
            L += parts + [""]
        if w == "W5":
            for t in threads:
                a = tg.get((t, "W5_chain1000/fwd_bwd"))
                b = pt.get((t, "W5", "chain1000_fwd_bwd", "0-dim"))
                c = tg.get((t, "W5_chain1000/forward_nograd"))
                d = pt.get((t, "W5", "chain1000_fwd_nograd", "0-dim"))
                f = lambda x: "—" if x is None else f"{x / 1000:.0f} ns"
                L.append(f"- per op {t}t: fwd+bwd tapegrad {f(a)} vs PyTorch {f(b)}; forward no-grad tapegrad {f(c)} vs PyTorch {f(d)}")
            L.append("")

    # ---- backward / forward
    L.append("## tapegrad: forward + backward ÷ forward alone\n")
    L.append("The cheap-gradient principle says a small constant (about 3 for a matmul: one product forward, "
             "two backward). `forward` records the same graph with gradients on but takes no gradient.\n")
    L.append("| workload | " + " | ".join(f"fwd+bwd {t}t | forward {t}t | **ratio {t}t**" for t in threads) + " |")
    L.append("|---|" + "---:|---:|---:|" * len(threads))
    pairs = [(f"W4 matmul n={n}", f"W4_matmul/fwd_bwd/{n}", f"W4_matmul/forward/{n}") for n in MATMUL_N]
    pairs += [("W5 chain1000", "W5_chain1000/fwd_bwd", "W5_chain1000/forward"),
              ("W5 chain1000 (vs forward no-grad)", "W5_chain1000/fwd_bwd", "W5_chain1000/forward_nograd"),
              ("W6 MLP step ÷ forward", "W6_mlp/step_sgd", "W6_mlp/forward")]
    for label, num, den in pairs:
        cells = []
        for t in threads:
            a, b = tg.get((t, num)), tg.get((t, den))
            q = _ratio(a, b)
            cells += [fmt_t(a), fmt_t(b), f"**{fmt_r(q)}**" if q is not None else "—"]
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L.append("")
    missing = [(t, r["cpath"]) for r in data for t in threads if r["t"][t][0] is None or r["t"][t][1] is None]
    if missing:
        L.append(f"Missing measurements ({len(missing)}): " + ", ".join(f"{p} ({t}t)" for t, p in missing[:20])
                 + (" …" if len(missing) > 20 else "") + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Hand-written sections after the marker (measured by other benches) survive a regeneration.
    kept = ""
    if out.exists():
        old = out.read_text()
        if KEEP_MARK in old:
            kept = old[old.index(KEEP_MARK):]
    text = "\n".join(L)
    if kept:
        text = text.rstrip("\n") + "\n\n" + kept
    out.write_text(text)
    return data


# ----------------------------------------------------------------------------- svg

HALO = ' stroke="#fff" stroke-width="3" paint-order="stroke"'
COLORS = {1: "#2b6cb0", 2: "#dd8a1f", 4: "#2f855a", 8: "#9b2c2c"}


def write_svg(data: list[dict], threads: list[int], path: Path, subtitle: str) -> None:
    vals = [r["t"][t][2] for r in data for t in threads if r["t"][t][2]] + [r["target"] for r in data if r["target"]]
    if not vals:
        vals = [1.0]
    steps = [v * 10.0**e for e in range(-4, 5) for v in (1, 2, 5)]
    # Floor at 0.02: smaller ratios are clipped (drawn to the edge, the value printed), so that the
    # interesting range around 1 keeps its room.
    lo = max(s for s in steps if s <= max(min(min(vals) / 1.15, 0.5), 0.02))
    hi = min(s for s in steps if s >= max(max(vals) * 1.15, 2.0))
    W, label_w, right_pad, top = 1020, 290, 60, 92
    bar_h, gap, group_gap = 10, 9, 16
    row_h = bar_h * len(threads) + gap
    px0, px1 = label_w + 60, W - right_pad  # 60 px for the labels of clipped bars
    lx = lambda v: px0 + (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (px1 - px0)
    n_groups = len({r["w"] for r in data})
    H = top + len(data) * row_h + n_groups * group_gap + 60
    e = html.escape
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="#ffffff"/>',
         f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">'
         'tapegrad time ÷ PyTorch time (forward + backward, f32, log scale)</text>',
         f'<text x="{W / 2}" y="43" text-anchor="middle" font-size="11" fill="#444">{e(subtitle)}</text>',
         f'<text x="{lx(1.0) - 8}" y="64" text-anchor="end" font-size="11" fill="#2f855a">◀ tapegrad faster</text>',
         f'<text x="{lx(1.0) + 8}" y="64" font-size="11" fill="#9b2c2c">tapegrad slower ▶</text>']
    # legend
    lxp = px0
    for t in threads:
        o.append(f'<rect x="{lxp}" y="72" width="14" height="10" fill="{COLORS.get(t, "#666")}"/>'
                 f'<text x="{lxp + 18}" y="81" font-size="11">{t} thread{"s" if t > 1 else ""}'
                 f'{" (taskset -c 0)" if t == 1 else " (unpinned)"}</text>')
        lxp += 150
    o.append(f'<line x1="{lxp}" y1="70" x2="{lxp}" y2="84" stroke="#c53030" stroke-width="2.5"/>'
             f'<text x="{lxp + 6}" y="81" font-size="11">target (issue)</text>')
    plot_top, plot_bot = top, H - 45
    # grid + ticks
    for s in steps:
        if lo <= s <= hi:
            x = lx(s)
            o.append(f'<line x1="{x:.1f}" y1="{plot_top}" x2="{x:.1f}" y2="{plot_bot}" stroke="#e2e2e2"/>')
            o.append(f'<text x="{x:.1f}" y="{plot_bot + 16}" text-anchor="middle" font-size="11">{s:g}</text>')
    o.append(f'<text x="{(px0 + px1) / 2}" y="{plot_bot + 34}" text-anchor="middle" font-size="11" fill="#444">'
             'ratio tapegrad ÷ PyTorch (lower is better)</text>')
    y = top
    prev_w = None
    for r in data:
        if r["w"] != prev_w:
            if prev_w is not None:
                o.append(f'<line x1="10" y1="{y + group_gap / 2 - 4:.1f}" x2="{px1}" y2="{y + group_gap / 2 - 4:.1f}" stroke="#bbb" stroke-dasharray="3,3"/>')
            y += group_gap
            prev_w = r["w"]
        cy = y + row_h / 2 - gap / 2
        o.append(f'<text x="{label_w}" y="{cy + 4:.1f}" text-anchor="end">'
                 f'<tspan font-weight="bold">{e(r["w"])}</tspan> {e(r["label"])} {e(r["shape"])}</text>')
        labels = []  # drawn after the bars and the target mark, so that nothing hides them
        for i, t in enumerate(threads):
            q = r["t"][t][2]
            by = y + i * bar_h
            if q is None:
                labels.append(f'<text x="{lx(1.0) + 4:.1f}" y="{by + bar_h - 1}" font-size="10" fill="#888">n/a</text>')
                continue
            qc = min(max(q, lo), hi)
            clip = "◀ " if q < lo else ""
            x0, x1 = sorted((lx(1.0), lx(qc)))
            o.append(f'<rect x="{x0:.1f}" y="{by}" width="{max(x1 - x0, 1):.1f}" height="{bar_h - 1}" '
                     f'fill="{COLORS.get(t, "#666")}"><title>{e(r["cpath"])} {t}t: {q:.3f}</title></rect>')
            if q >= 1:
                labels.append(f'<text x="{x1 + 3:.1f}" y="{by + bar_h - 1.5}" font-size="10"{HALO}>{fmt_r(q)}</text>')
            else:
                labels.append(f'<text x="{x0 - 3:.1f}" y="{by + bar_h - 1.5}" font-size="10" text-anchor="end"{HALO}>{clip}{fmt_r(q)}</text>')
        if r["target"]:
            tx = lx(r["target"])
            o.append(f'<line x1="{tx:.1f}" y1="{y - 2}" x2="{tx:.1f}" y2="{y + bar_h * len(threads) + 1}" '
                     'stroke="#c53030" stroke-width="2.5"/>')
        o += labels
        y += row_h
    o.append(f'<line x1="{lx(1.0):.1f}" y1="{plot_top}" x2="{lx(1.0):.1f}" y2="{plot_bot}" stroke="#111" stroke-width="1.5"/>')
    o.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(o) + "\n")


def newest_run(runs_dir: Path) -> Path:
    runs = sorted(p for p in runs_dir.glob("*") if p.is_dir())
    if not runs:
        sys.exit(f"no runs under {runs_dir}; do `python3 scripts/bench_report.py run` first")
    return runs[-1]


def cmd_report(a, run_dir: Path | None = None) -> None:
    run_dir = Path(run_dir or a.run_dir or newest_run(Path(a.runs_dir)))
    meta_p = run_dir / "meta.json"
    meta = json.loads(meta_p.read_text()) if meta_p.exists() else {}
    threads = [int(t) for t in a.threads.split(",")] if a.threads else meta.get("threads", [1, 2])
    out, svg = Path(a.out), Path(a.svg)
    try:
        svg_rel = os.path.relpath(svg.resolve(), out.resolve().parent)
    except ValueError:
        svg_rel = str(svg)
    data = write_markdown(run_dir, out, svg_rel, threads)
    m = meta.get("machine", {})
    sub = (f"{meta.get('date', '?')[:16].replace('T', ' ')} · {m.get('cpu_model', '?')}, {m.get('cpus', '?')} CPUs · "
           f"load avg at start {meta.get('load_start', '?').split(' ')[0]} · run {run_dir.name}")
    write_svg(data, threads, svg, sub)
    print(f"wrote {out} and {svg} from {run_dir}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)

    def run_args(q):
        q.add_argument("--only", help="comma list of workload groups, e.g. W1,W4 (default: all W1-W6)")
        q.add_argument("--threads", default="1,2", help="thread counts to run (default 1,2); 1 is pinned with taskset -c 0")
        q.add_argument("--pin-all", action="store_true", help="also pin N-thread runs to cores 0..N-1")
        q.add_argument("--peers", help="directory holding torch_bench.py (default: ../shared/peers or ../../shared/peers)")
        q.add_argument("--venv", default=str(DEFAULT_VENV), help=f"python venv with torch (default {DEFAULT_VENV})")
        q.add_argument("--dry-run", action="store_true", help="print the commands only")

    def report_args(q, with_threads=True):
        q.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
        q.add_argument("--svg", default=str(REPO / "docs" / "bench_ratios.svg"))
        if with_threads:
            q.add_argument("--threads", default=None, help="thread counts to report (default: those of the run)")

    q = sub.add_parser("run", help="run tapegrad + PyTorch benches into a fresh run directory")
    run_args(q)
    q.add_argument("--runs-dir", default=str(DEFAULT_RUNS))
    q = sub.add_parser("report", help="write BENCHMARKS.md + SVG from a run directory")
    q.add_argument("--run-dir", help="default: newest directory under --runs-dir")
    q.add_argument("--runs-dir", default=str(DEFAULT_RUNS))
    report_args(q)
    q = sub.add_parser("all", help="run, then report")
    run_args(q)
    q.add_argument("--runs-dir", default=str(DEFAULT_RUNS))
    report_args(q, with_threads=False)
    a = p.parse_args()
    if a.mode == "run":
        cmd_run(a)
    elif a.mode == "report":
        cmd_report(a)
    else:
        d = cmd_run(a)
        if not a.dry_run:
            a.run_dir = None
            a.threads = None
            cmd_report(a, d)


if __name__ == "__main__":
    main()

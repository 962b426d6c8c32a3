#!/usr/bin/env python3
"""tapegrad vs PyTorch (and JAX): run the benchmarks of benches/workloads.json side by side, write
BENCHMARKS.md and the chart docs/bench_ratios.svg.

The workloads W1-W8, their shapes, variants, memory-floor byte counts and the targets of the speed
issue are defined once, in benches/workloads.json: this script, the Rust benches and the reference
scripts of benches/peers/ all read it. The script itself is Python 3.11, standard library only; the
PyTorch side, the JAX side and the chart (matplotlib) run under the python of a venv outside the
repository (default ~/.cache/tapegrad-peers-venv, or $PEERS_VENV), made from
benches/peers/requirements.txt: `run` and `report` create it, or install what it lacks, on first use.

    python3 scripts/bench_report.py venv    [--jax]     # create / update the venv, nothing else
    python3 scripts/bench_report.py run     [--only W1,W4] [--threads 1,2] [--jax] [--venv DIR]
    python3 scripts/bench_report.py report  [--run-dir DIR] [--out BENCHMARKS.md] [--svg docs/bench_ratios.svg]
    python3 scripts/bench_report.py all     # run, then report on that run

`run` builds the benches once (unpinned), measures the memory bandwidth (benches/stream.rs, STREAM
copy/scale/add/triad, once per thread count), then for each workload runs, back to back:
    tapegrad 1 thread  TAPEGRAD_NUM_THREADS=1 taskset -c 0 cargo bench --bench <b> -- --noplot --save-baseline t1 '^W<k>_'
    PyTorch  1 thread  taskset -c 0 <venv>/bin/python benches/peers/torch_bench.py --threads 1 --only W<k> --out torch.jsonl
    JAX      1 thread  taskset -c 0 <venv>/bin/python benches/peers/jax_bench.py --threads 1 ...   (with --jax)
    tapegrad 2 threads TAPEGRAD_NUM_THREADS=2 cargo bench --bench <b> -- --noplot --save-baseline t2 '^W<k>_'
    PyTorch  2 threads <venv>/bin/python benches/peers/torch_bench.py --threads 2 --only W<k> --out torch.jsonl
so that load drift on the (shared) machine hits all sides alike. A workload whose tapegrad bench is
not written yet (`"bench": null` in the workloads file) runs on the reference side only
and is reported as "not yet measured". Everything goes into a fresh directory
target/bench-report/<timestamp>/ (criterion writes there via CRITERION_HOME, so stale results of
older runs can never leak in): criterion/<group>/<id>/t<N>/estimates.json, torch.jsonl, jax.jsonl,
meta.json (date, machine, load averages, exact commands), log.txt.

`report` reads one such directory (default: the newest) and writes the markdown and the SVG. Times
are criterion's median point estimate (tapegrad) and benchlib's median (PyTorch, JAX), both per call
of forward + backward. The memory floor of a W1-W3 row is the bytes the workload must move (the
workloads file says how they are counted) divided by the STREAM copy bandwidth of the same run and
thread count.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# BENCHMARKS.md from this line on is written by hand and kept when the report is regenerated.
KEEP_MARK = "<!-- hand-written sections below: kept by scripts/bench_report.py -->"
REPO = Path(__file__).resolve().parent.parent
PEERS = REPO / "benches" / "peers"
WORKLOADS_JSON = REPO / "benches" / "workloads.json"
REQUIREMENTS = PEERS / "requirements.txt"
REQUIREMENTS_JAX = PEERS / "requirements-jax.txt"
DEFAULT_RUNS = REPO / "target" / "bench-report"
DEFAULT_VENV = Path(os.environ.get("PEERS_VENV") or Path.home() / ".cache" / "tapegrad-peers-venv")
STREAM_KERNELS = ["copy", "scale", "add", "triad"]
LIBS = {"torch": "PyTorch", "jax": "JAX"}


# ----------------------------------------------------------------------------- workloads


def load_workloads(path: Path = WORKLOADS_JSON) -> list[dict]:
    return json.loads(path.read_text())["workloads"]


def shape_label(shape: list[int]) -> str:
    return "x".join(map(str, shape)) if shape else "0-dim"


def fill(template: str, shape: list[int]) -> str:
    """A criterion id of the workloads file: {shape} = the shape's label, {n} = its first size."""
    return template.format(shape=shape_label(shape), n=shape[0] if shape else "")


def _applies(target: dict, shape: list[int]) -> bool:
    return "shapes" not in target or shape in target["shapes"]


def build_rows(wl: list[dict]) -> list[dict]:
    """One comparison row per workload, variant and shape."""
    rows = []
    for w in wl:
        for v in w["variants"]:
            for s in w["shapes"]:
                target = {}
                for tg in w.get("targets", []):
                    if tg["kind"] == "ratio" and tg["variant"] == v["key"] and _applies(tg, s):
                        target = {int(t): m for t, m in tg["max"].items()}
                rows.append({
                    "w": w["id"], "key": v["key"], "label": v["label"], "shape": shape_label(s), "dims": s,
                    "cpath": fill(v["criterion"], s), "torch": v.get("torch"), "jax": v.get("jax"),
                    "measured": w.get("bench") is not None,
                    "floor_bpe": (v.get("floor") or {}).get("bytes_per_element"),
                    "target": target,
                })
    return rows


# ----------------------------------------------------------------------------- venv


def requirements(path: Path) -> list[tuple[str, str]]:
    """The exact pins `name==version` of a requirements file, following `-r other.txt`."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r"):
            out += requirements(path.parent / line[2:].strip())
            continue
        m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^;\s]+)", line)
        if not m:
            sys.exit(f"{path}: '{line}' is not an exact pin name==version")
        out.append((m.group(1), m.group(3)))
    return out


_CHECK = """
import json, sys
from importlib.metadata import version, PackageNotFoundError
bad = []
for name, want in json.loads(sys.argv[1]):
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have is None or have.split("+")[0] != want:
        bad.append(f"{name}=={want} (installed: {have})")
print(json.dumps(bad))
"""


def venv_problems(venv: Path, req: Path) -> list[str]:
    py = venv / "bin" / "python"
    if not py.exists():
        return [f"no venv at {venv}"]
    p = subprocess.run([str(py), "-c", _CHECK, json.dumps(requirements(req))], capture_output=True, text=True)
    if p.returncode != 0:
        return [f"{py} does not run: {p.stderr.strip()[-300:]}"]
    return json.loads(p.stdout)


def venv_commands(venv: Path, req: Path) -> list[list[str]]:
    cmds = [] if (venv / "bin" / "python").exists() else [["python3", "-m", "venv", str(venv)]]
    return cmds + [[str(venv / "bin" / "pip"), "install", "-r", str(req)]]


def ensure_venv(venv: Path, jax: bool = False, install: bool = True) -> Path:
    """The venv's python, after creating the venv or installing the pins it lacks (if `install`)."""
    req = REQUIREMENTS_JAX if jax else REQUIREMENTS
    problems = venv_problems(venv, req)
    if problems:
        shown = " && ".join(" ".join(shlex.quote(c) for c in cmd) for cmd in venv_commands(venv, req))
        print(f"venv {venv}: {'; '.join(problems)}", flush=True)
        if not install:
            sys.exit(f"create or update it with:\n    {shown}")
        print(f"running: {shown}", flush=True)
        for cmd in venv_commands(venv, req):
            subprocess.run(cmd, check=True)
        problems = venv_problems(venv, req)
        if problems:
            sys.exit(f"venv {venv} still lacks: {'; '.join(problems)}")
    return venv / "bin" / "python"


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
    wl = {w["id"]: w for w in load_workloads()}
    only = [w.strip() for w in a.only.split(",")] if a.only else list(wl)
    bad = [w for w in only if w not in wl]
    if bad:
        sys.exit(f"unknown workload(s) {bad}; choose from {list(wl)}")
    threads = [int(t) for t in a.threads.split(",")]
    peers = Path(a.peers).resolve() if a.peers else PEERS
    venv = Path(a.venv)
    py = venv / "bin" / "python" if a.dry_run else ensure_venv(venv, a.jax, a.install)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(a.runs_dir) / stamp
    if not a.dry_run:
        run_dir.mkdir(parents=True, exist_ok=True)
    crit = run_dir / "criterion"
    r = Runner(run_dir, a.dry_run)
    version = lambda mod: _cmd_out([str(py), "-c", f"import {mod}; print({mod}.__version__)"])
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "git_commit": _cmd_out(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "git_dirty": bool(_cmd_out(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])),
        "rustc": _cmd_out(["rustc", "--version"]),
        "torch": version("torch"),
        "jax": version("jax") if a.jax else None,
        "venv": str(venv),
        "peers_dir": str(peers),
        "threads": threads,
        "only": only,
        "load_start": _loadavg(),
    }
    print(f"run dir: {run_dir}\nload average: {meta['load_start']}", flush=True)
    benches = sorted({wl[w]["bench"] for w in only if wl[w].get("bench")}) + ["stream"]
    # Build once, unpinned, so that the pinned runs only measure.
    r.step("build", ["cargo", "bench", "--no-run"] + [x for b in benches for x in ("--bench", b)])

    def pin(t: int) -> list[str]:
        return ["taskset", "-c", ",".join(str(c) for c in range(t))] if t == 1 or a.pin_all else []

    for t in threads:
        r.step(f"STREAM {t}t", pin(t) + ["cargo", "bench", "--bench", "stream", "--", "--noplot", "--save-baseline", f"t{t}"],
               env={"CRITERION_HOME": str(crit), "STREAM_THREADS": str(t)})
    libs = ["torch"] + (["jax"] if a.jax else [])
    for w in only:
        bench = wl[w].get("bench")
        for t in threads:
            if bench:
                r.step(f"{w} tapegrad {t}t", pin(t) + ["cargo", "bench", "--bench", bench, "--", "--noplot",
                                                     "--save-baseline", f"t{t}", f"^{w}_"],
                       env={"CRITERION_HOME": str(crit), "TAPEGRAD_NUM_THREADS": str(t)})
            for lib in libs:
                r.step(f"{w} {lib} {t}t", pin(t) + [str(py), str(peers / f"{lib}_bench.py"), "--threads", str(t),
                                                  "--only", w, "--out", str(run_dir / f"{lib}.jsonl")])
    meta["load_end"] = _loadavg()
    meta["steps"] = r.steps
    meta["seconds_total"] = round(sum(s.get("seconds", 0) for s in r.steps), 1)
    if not a.dry_run:
        (run_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"\ndone in {meta['seconds_total']} s; results in {run_dir}")
    return run_dir


# ----------------------------------------------------------------------------- report


def load_criterion(crit: Path, threads: list[int]) -> tuple[dict, dict]:
    """({(threads, 'group/id'): median ns}, {(threads, 'group/id'): bytes per iteration}) from
    <crit>/<group>/<id...>/t<N>/estimates.json and the benchmark.json beside it."""
    med, nbytes = {}, {}
    if not crit.is_dir():
        return med, nbytes
    for t in threads:
        for est in crit.glob(f"**/t{t}/estimates.json"):
            bj = est.parent / "benchmark.json"
            info = json.loads(bj.read_text()) if bj.exists() else {}
            full_id = info.get("full_id") or str(est.parent.parent.relative_to(crit))
            med[(t, full_id)] = json.loads(est.read_text())["median"]["point_estimate"]
            thr = info.get("throughput") or {}
            b = thr.get("Bytes") or thr.get("BytesDecimal")
            if b:
                nbytes[(t, full_id)] = b
    return med, nbytes


def load_jsonl(path: Path) -> dict:
    """{(threads, workload, variant, shape): median ns} of torch.jsonl / jax.jsonl; a later line for
    the same key wins."""
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


def stream_bandwidth(tg: dict, nbytes: dict, threads: list[int]) -> dict:
    """{(threads, kernel): GB/s} of the STREAM bench (ids STREAM/<kernel>/<threads>, baseline t<threads>)."""
    bw = {}
    for t in threads:
        for k in STREAM_KERNELS:
            key = (t, f"STREAM/{k}/{t}")
            if key in tg and key in nbytes and tg[key] > 0:
                bw[(t, k)] = nbytes[key] / tg[key]  # bytes per ns = GB/s
    return bw


def collect(run_dir: Path, threads: list[int], wl: list[dict]):
    tg, nbytes = load_criterion(run_dir / "criterion", threads)
    ref = {lib: load_jsonl(run_dir / f"{lib}.jsonl") for lib in LIBS}
    bw = stream_bandwidth(tg, nbytes, threads)
    data = build_rows(wl)
    for r in data:
        r["t"] = {}
        for t in threads:
            a = tg.get((t, r["cpath"])) if r["measured"] else None
            pt = ref["torch"].get((t, r["w"], r["torch"], r["shape"]))
            jx = ref["jax"].get((t, r["w"], r["jax"], r["shape"]))
            floor = None
            if r["floor_bpe"] and (t, "copy") in bw:
                floor = r["floor_bpe"] * math.prod(r["dims"]) / bw[(t, "copy")]
            r["t"][t] = {"tg": a, "pt": pt, "jx": jx, "r": _ratio(a, pt), "rj": _ratio(a, jx),
                         "floor": floor, "rf": _ratio(a, floor), "ptf": _ratio(pt, floor)}
    return data, tg, bw, ref


def _max_text(maxes: dict, threads: list[int], unit: str = "") -> str:
    vals = [maxes.get(t) for t in threads]
    if len(set(vals)) == 1 and vals[0] is not None:
        return f"≤ {vals[0]:g}{unit}"
    return " / ".join("—" if v is None else f"≤ {v:g}{unit}" for v in vals)


def _shapes_text(target: dict, w: dict) -> str:
    if "shapes" in target:
        return " (" + ", ".join(shape_label(s) for s in target["shapes"]) + ")"
    return ", every shape" if len(w["shapes"]) > 1 else ""


def target_rows(wl: list[dict], data: list[dict], threads: list[int]) -> list[tuple[str, list[str], list[bool | None]]]:
    """(description, measured value per thread count, met per thread count) of every target of the file."""
    out = []
    for w in wl:
        vlabel = {v["key"]: v["label"] for v in w["variants"]}
        for target in w.get("targets", []):
            maxes = {int(t): m for t, m in target["max"].items()}
            rows = [r for r in data if r["w"] == w["id"] and r["key"] == target["variant"] and _applies(target, r["dims"])]
            kind, label = target["kind"], vlabel[target["variant"]]
            if kind == "ratio":
                desc = f"{w['id']} {label} {_max_text(maxes, threads, '×')} PyTorch{_shapes_text(target, w)}"
                values = {t: [r["t"][t]["r"] for r in rows] for t in threads}
                show = fmt_r
            elif kind == "floor":
                desc = (f"{w['id']} {label}{_shapes_text(target, w).replace(', every shape', ' (every shape)')} "
                        f"{_max_text(maxes, threads, '×')} its memory floor (bytes moved ÷ STREAM copy bandwidth)")
                values = {t: [r["t"][t]["rf"] for r in rows] for t in threads}
                show = fmt_r
            elif kind == "over":
                ow, okey = target["over"].split("/")
                other = {r["shape"]: r for r in data if r["w"] == ow and r["key"] == okey}
                olabel = other[next(iter(other))]["label"] if other else okey
                desc = f"{w['id']} tapegrad {label} ÷ tapegrad {olabel} ({ow}) {_max_text(maxes, threads)}{_shapes_text(target, w)}"
                values = {t: [_ratio(r["t"][t]["tg"], other[r["shape"]]["t"][t]["tg"]) if r["shape"] in other else None
                              for r in rows] for t in threads}
                show = fmt_r
            elif kind == "ns_per_op":
                ops = w["params"]["ops"]
                desc = f"{w['id']} {_max_text(maxes, threads, ' ns')} per op, {label}"
                values = {t: [None if r["t"][t]["tg"] is None else r["t"][t]["tg"] / ops for r in rows] for t in threads}
                show = lambda x: f"{x:.0f} ns/op"
            else:
                sys.exit(f"{WORKLOADS_JSON}: {w['id']}: unknown target kind {kind!r}")
            if target.get("issue"):
                desc = f"[issue {target['issue']}] {desc}"
            shown, oks = [], []
            for t in threads:
                vs = values[t]
                if w.get("bench") is None:
                    shown.append("not yet measured")
                    oks.append(None)
                elif not vs or any(x is None for x in vs):
                    shown.append("incomplete")
                    oks.append(None)
                else:
                    shown.append(", ".join(show(x) for x in vs))
                    oks.append(None if t not in maxes else all(x <= maxes[t] for x in vs))
            out.append((desc, shown, oks))
    return out


def write_markdown(run_dir: Path, out: Path, svg_rel: str, threads: list[int], wl: list[dict]) -> list[dict]:
    meta_p = run_dir / "meta.json"
    meta = json.loads(meta_p.read_text()) if meta_p.exists() else {}
    data, tg, bw, ref = collect(run_dir, threads, wl)
    has_jax = any(v["jx"] is not None for r in data for v in r["t"].values())
    m = meta.get("machine", {})
    L = []
    L.append("# Benchmarks: tapegrad vs PyTorch (eager autograd, CPU)" + (" and JAX (jit)" if has_jax else "") + "\n")
    L.append(f"Generated by `scripts/bench_report.py` from run `{run_dir.name}`. "
             "Each time is the median of one call of forward + backward (graph built from scratch, f32; the training "
             "steps W6–W8 add the SGD update); **ratio = tapegrad ÷ PyTorch** (below 1: tapegrad is faster). All sides "
             "were measured in the same run, interleaved per workload, so the ratios are comparable even though the "
             "absolute times drift with the load of the shared machine. Never compare absolute times across runs. "
             "The workloads, their shapes and the targets are defined once, in "
             "[benches/workloads.json](benches/workloads.json) (the models of W7 and W8 in words: "
             "[benches/peers/README.md](benches/peers/README.md)).\n")
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
             + f", {meta.get('rustc', '?')}; PyTorch {meta.get('torch', '?')}" + (f"; JAX {meta['jax']}" if meta.get("jax") else ""))
    L.append("- tapegrad: criterion median point estimate (benches use 0.5 s warm-up, 2 s measurement, 20 samples); "
             "PyTorch" + (" and JAX" if has_jax else "") + ": `benchlib.bench` median (see "
             "[benches/peers/README.md](benches/peers/README.md))")
    L.append("- threads: 1 thread = `TAPEGRAD_NUM_THREADS=1` for tapegrad, `torch.set_num_threads(1)` for PyTorch"
             + (", `--xla_cpu_multi_thread_eigen=false` for JAX" if has_jax else "")
             + ", each pinned to core 0 with `taskset -c 0`; 2 threads = `TAPEGRAD_NUM_THREADS=2` and "
             "`torch.set_num_threads(2)`, unpinned\n")
    if meta.get("steps"):
        subst = [(str(run_dir), "$RUN"), (meta.get("venv") or "\0", "$VENV"), (str(REPO) + "/", "")]
        L.append("Commands, in the order they ran, from the repository root (`$RUN` = the run directory, `$VENV` = "
                 "the peers venv):\n")
        L.append("```sh")
        for s in meta["steps"]:
            c = s["cmd"]
            for a, b in subst:
                c = c.replace(a, b)
            extra = f"   # {s.get('seconds', '?')} s, load {s.get('load_before', '?')}"
            if s.get("rc"):
                extra += f", EXIT CODE {s['rc']}"
            L.append(c + extra)
        L.append("```\n")
    L.append("Reproduce from a clone: `python3 scripts/bench_report.py all` (or `run`, then `report`; `--jax` adds "
             "JAX). It creates the venv `~/.cache/tapegrad-peers-venv` from `benches/peers/requirements.txt` on "
             "first use (`python3 scripts/bench_report.py venv` does only that).\n")

    # ---- caveats found in the data
    notes = []
    if len(threads) > 1:
        t0, tn = threads[0], threads[-1]
        slow = [r for r in data if r["t"][t0]["pt"] and r["t"][tn]["pt"] and r["t"][tn]["pt"] > 1.5 * r["t"][t0]["pt"]]
        if slow:
            worst = max(slow, key=lambda r: r["t"][tn]["pt"] / r["t"][t0]["pt"])
            notes.append(
                f"PyTorch with {tn} threads was more than 1.5× *slower* than with {t0} thread in {len(slow)} of "
                f"{len(data)} rows (worst: {worst['cpath']}, {fmt_t(worst['t'][t0]['pt'])} → {fmt_t(worst['t'][tn]['pt'])}). "
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
    L.append("## Targets (speed issue 13; the compiled-tape issue 14 where marked)\n")
    L.append(f"| target | measured ({tcol}) | met ({tcol}) |")
    L.append("|---|---|---|")
    for desc, shown, oks in target_rows(wl, data, threads):
        L.append(f"| {desc} | {' / '.join(shown)} | {' / '.join(met(o) for o in oks)} |")
    L.append("")

    # ---- memory bandwidth
    L.append("## Memory bandwidth (STREAM, `cargo bench --bench stream`)\n")
    L.append("f32 arrays of 64 MiB each; GB/s = 10⁹ bytes read + written per second, counted as STREAM does "
             "(copy and scale move 2 arrays, add and triad 3; no write-allocate traffic). The copy bandwidth is "
             "the memory floor's divisor below.\n")
    L.append("| kernel | " + " | ".join(f"GB/s {t}t" for t in threads) + " |")
    L.append("|---|" + "---:|" * len(threads))
    for k in STREAM_KERNELS:
        L.append(f"| {k} | " + " | ".join("—" if (t, k) not in bw else f"{bw[(t, k)]:.1f}" for t in threads) + " |")
    L.append("")

    # ---- per-workload tables
    L.append("## Results per workload\n")
    for w in wl:
        rows = [r for r in data if r["w"] == w["id"]]
        if not any(v["tg"] is not None or v["pt"] is not None or v["jx"] is not None for r in rows for v in r["t"].values()):
            continue
        L.append(f"### {w['id']} — {w['title']}\n")
        L.append(w["definition"] + "\n")
        if w.get("bench") is None:
            L.append("**tapegrad: not yet measured** — its bench is not written yet (`\"bench\": null` in "
                     "[benches/workloads.json](benches/workloads.json), which specifies the model step by step, as "
                     "does [benches/peers/README.md](benches/peers/README.md)).\n")
        hdr = "| variant | shape | "
        sep = "|---|---|"
        for t in threads:
            hdr += f"tapegrad {t}t | PyTorch {t}t | **ratio {t}t** | "
            sep += "---:|---:|---:|"
            if has_jax:
                hdr += f"JAX {t}t | ÷ JAX {t}t | "
                sep += "---:|---:|"
        L.append(hdr + "target | met |")
        L.append(sep + "---:|---|")
        for r in rows:
            cells = []
            for t in threads:
                v = r["t"][t]
                cells += ["not yet measured" if not r["measured"] else fmt_t(v["tg"]), fmt_t(v["pt"]),
                          f"**{fmt_r(v['r'])}**" if v["r"] is not None else "—"]
                if has_jax:
                    cells += [fmt_t(v["jx"]), fmt_r(v["rj"])]
            tgt = "—" if not r["target"] else _max_text(r["target"], threads)
            if not r["target"]:
                mt = "—"
            elif not r["measured"]:
                mt = "not yet measured"
            else:
                mt = " / ".join(met(None if t not in r["target"] or r["t"][t]["r"] is None else r["t"][t]["r"] <= r["target"][t])
                                for t in threads)
            L.append(f"| {r['label']} | {r['shape']} | " + " | ".join(cells) + f" | {tgt} | {mt} |")
        L.append("")
        frows = [r for r in rows if r["floor_bpe"]]
        if frows:
            L.append("Memory floor: the bytes the workload must move ÷ the STREAM copy bandwidth of the same thread "
                     "count; bytes counted as " + "; ".join(
                         f"{v['label']}: {v['floor']['bytes_per_element']} bytes per element — {v['floor']['count']}"
                         for v in w["variants"] if v.get("floor")) + ".\n")
            L.append("| variant | shape | MB moved | " + " | ".join(f"floor {t}t | tapegrad ÷ floor {t}t | PyTorch ÷ floor {t}t"
                                                               for t in threads) + " |")
            L.append("|---|---|---:|" + "---:|---:|---:|" * len(threads))
            for r in frows:
                cells = []
                for t in threads:
                    v = r["t"][t]
                    cells += [fmt_t(v["floor"]), f"**{fmt_r(v['rf'])}**" if v["rf"] is not None else "—", fmt_r(v["ptf"])]
                mb = r["floor_bpe"] * math.prod(r["dims"]) / 1e6
                L.append(f"| {r['label']} | {r['shape']} | {mb:.3g} | " + " | ".join(cells) + " |")
            L.append("")
        if w["id"] == "W4":
            coef = w["params"]["flops_per_n3"]
            for t in threads:
                g = []
                for r in rows:
                    n = r["dims"][0]
                    a, b = r["t"][t]["tg"], r["t"][t]["pt"]
                    g.append(f"n={n}: {coef * n**3 / a:.0f} vs {coef * n**3 / b:.0f}" if a and b else f"n={n}: —")
                L.append(f"- GFLOP/s {t}t (tapegrad vs PyTorch): " + "; ".join(g))
            L.append("")
        if w["id"] == "W5":
            ops = w["params"]["ops"]
            by_key = {r["key"]: r for r in rows}
            f = lambda x: "—" if x is None else f"{x / ops:.0f} ns"
            for t in threads:
                a, b = (by_key["fwd_bwd"]["t"][t][k] for k in ("tg", "pt"))
                c, d = (by_key["fwd_nograd"]["t"][t][k] for k in ("tg", "pt"))
                L.append(f"- per op {t}t: fwd+bwd tapegrad {f(a)} vs PyTorch {f(b)}; forward no-grad tapegrad {f(c)} vs PyTorch {f(d)}")
            L.append("")

    # ---- backward / forward
    L.append("## tapegrad: forward + backward ÷ forward alone\n")
    L.append("The cheap-gradient principle says a small constant (about 3 for a matmul: one product forward, "
             "two backward). `forward` records the same graph with gradients on but takes no gradient.\n")
    L.append("| workload | " + " | ".join(f"fwd+bwd {t}t | forward {t}t | **ratio {t}t**" for t in threads) + " |")
    L.append("|---|" + "---:|---:|---:|" * len(threads))
    for w in wl:
        if w.get("bench") is None:
            continue
        for v in w["variants"]:
            for fwd in v.get("forward", []):
                for s in w["shapes"]:
                    num, den = fill(v["criterion"], s), fill(fwd, s)
                    cells = []
                    for t in threads:
                        a, b = tg.get((t, num)), tg.get((t, den))
                        q = _ratio(a, b)
                        cells += [fmt_t(a), fmt_t(b), f"**{fmt_r(q)}**" if q is not None else "—"]
                    L.append(f"| {w['id']} {v['label']} {shape_label(s)} ÷ `{den}` | " + " | ".join(cells) + " |")
    L.append("")
    missing = [(t, r["cpath"]) for r in data for t in threads
               if r["measured"] and (r["t"][t]["tg"] is None or r["t"][t]["pt"] is None)]
    missing += [(t, f"STREAM/{k}/{t}") for t in threads for k in STREAM_KERNELS if (t, k) not in bw]
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


# ----------------------------------------------------------------------------- chart (matplotlib)

COLORS = {1: "#2b6cb0", 2: "#dd8a1f", 4: "#2f855a", 8: "#9b2c2c"}
TARGET_COLOR = "#c53030"


def chart_spec(data: list[dict], threads: list[int], subtitle: str) -> dict:
    """What the chart shows, as JSON for `chart` (which runs under the venv's python)."""
    return {
        "threads": threads,
        "subtitle": subtitle,
        "rows": [{"w": r["w"], "label": r["label"], "shape": r["shape"], "cpath": r["cpath"], "measured": r["measured"],
                  "ratio": {str(t): r["t"][t]["r"] for t in threads},
                  "target": {str(t): r["target"].get(t) for t in threads}} for r in data],
    }


def draw_chart(spec: dict, svg: Path) -> None:
    """Log-scale horizontal bars of tapegrad ÷ PyTorch per row and thread count, target marks."""
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator
    from matplotlib.transforms import blended_transform_factory

    # Text stays text (small file; the viewer's sans-serif font draws it); fixed ids, no date: the
    # same data gives the same file.
    plt.rcParams.update({"svg.hashsalt": "tapegrad-bench-ratios", "svg.fonttype": "none", "font.size": 9,
                         "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"]})
    rows, threads = spec["rows"], spec["threads"]
    vals = [q for r in rows for q in r["ratio"].values() if q] + [m for r in rows for m in r["target"].values() if m]
    vals = vals or [1.0]
    steps = [v * 10.0**e for e in range(-4, 5) for v in (1, 2, 5)]
    # Floor at 0.02: smaller ratios are clipped (drawn to the edge, the value printed), so that the
    # interesting range around 1 keeps its room.
    lo = max(s for s in steps if s <= max(min(min(vals) / 1.15, 0.5), 0.02))
    hi = min(s for s in steps if s >= max(max(vals) * 1.15, 2.0))

    # y layout, top to bottom: one unit per row, a gap between workloads.
    ys, seps, y, prev = [], [], 0.0, None
    for r in rows:
        if prev is not None and r["w"] != prev:
            seps.append(y - 0.2)
            y += 0.6
        ys.append(y)
        prev = r["w"]
        y += 1.0
    top_in, bottom_in, row_in = 1.25, 0.65, 0.26
    height = top_in + bottom_in + row_in * y
    fig, ax = plt.subplots(figsize=(10.5, height))
    fig.subplots_adjust(left=3.0 / 10.5, right=1 - 0.35 / 10.5, top=1 - top_in / height, bottom=bottom_in / height)
    ax.set_xscale("log")
    ax.set_xlim(lo / 1.8, hi)  # room left of `lo` for the values of the shortest (and clipped) bars
    ax.set_ylim(y - 0.4, -0.6)
    halo = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.4}  # keeps grid lines off the values
    bh = 0.84 / len(threads)
    for r, yc in zip(rows, ys):
        for i, t in enumerate(threads):
            by = yc - 0.42 + bh * (i + 0.5)
            tgt = r["target"].get(str(t))
            if tgt:
                ax.plot([tgt, tgt], [by - bh / 2, by + bh / 2], color=TARGET_COLOR, lw=2.4, solid_capstyle="butt", zorder=4)
            if not r["measured"]:
                continue
            q = r["ratio"].get(str(t))
            if q is None:
                ax.text(1.03, by, "n/a", va="center", fontsize=7.5, color="#888")
                continue
            qc = min(max(q, lo), hi)
            ax.barh(by, qc - 1.0, left=1.0, height=bh * 0.92, color=COLORS.get(t, "#666"), zorder=3)
            text = ("◀ " if q < lo else "") + fmt_r(q)
            x, ha = (qc * 1.03, "left") if q >= 1 else (qc / 1.03, "right")
            ax.text(x, by, text, va="center", ha=ha, fontsize=7.5, bbox=halo, zorder=5)
        if not r["measured"]:
            ax.text(1.06, yc, "not yet measured", va="center", fontsize=8, color="#666",
                    style="italic", zorder=5)
    for s in seps:
        ax.axhline(s, color="#bbb", lw=0.8, ls=(0, (3, 3)))
    ax.axvline(1.0, color="#111", lw=1.4, zorder=4)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r['w']}  {r['label']}  {r['shape']}" for r in rows])
    ax.tick_params(axis="y", length=0)
    ticks = [s for s in steps if lo <= s <= hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{s:g}" for s in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(axis="x", color="#e2e2e2", zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.plot([lo, hi], [0, 0], transform=blended_transform_factory(ax.transData, ax.transAxes), color="#111", lw=0.8,
            clip_on=False)
    ax.set_xlabel("ratio tapegrad ÷ PyTorch (lower is better)", color="#444")
    above = blended_transform_factory(ax.transData, ax.transAxes)
    ax.text(1 / 1.04, 1.005, "◀ tapegrad faster", transform=above, ha="right", va="bottom", color="#2f855a")
    ax.text(1.04, 1.005, "tapegrad slower ▶", transform=above, ha="left", va="bottom", color="#9b2c2c")
    handles = [Patch(color=COLORS.get(t, "#666"), label=f"{t} thread" + ("" if t == 1 else "s")
                     + (" (pinned to core 0)" if t == 1 else " (unpinned)")) for t in threads]
    handles.append(Line2D([], [], color=TARGET_COLOR, lw=2.4, label="target (speed issue)"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.62 / height))
    fig.suptitle("tapegrad time ÷ PyTorch time (forward + backward, f32, log scale)", fontweight="bold",
                 fontsize=12, y=1 - 0.12 / height)
    fig.text(0.5, 1 - 0.42 / height, spec["subtitle"], ha="center", fontsize=8.5, color="#444")
    svg.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": "scripts/bench_report.py (matplotlib)"})
    plt.close(fig)


def cmd_chart(a) -> None:
    draw_chart(json.loads(Path(a.data).read_text()), Path(a.svg))


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
    py = ensure_venv(Path(a.venv), install=a.install)  # matplotlib, for the chart
    data = write_markdown(run_dir, out, svg_rel, threads, load_workloads())
    m = meta.get("machine", {})
    sub = (f"{meta.get('date', '?')[:16].replace('T', ' ')} · {m.get('cpu_model', '?')}, {m.get('cpus', '?')} CPUs · "
           f"load avg at start {meta.get('load_start', '?').split(' ')[0]} · run {run_dir.name}")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(chart_spec(data, threads, sub), f)
    try:
        subprocess.run([str(py), str(Path(__file__).resolve()), "chart", "--data", f.name, "--svg", str(svg)], check=True)
    finally:
        os.unlink(f.name)
    print(f"wrote {out} and {svg} from {run_dir}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)

    def venv_arg(q):
        q.add_argument("--venv", default=str(DEFAULT_VENV),
                       help=f"python venv of benches/peers/requirements.txt (default {DEFAULT_VENV}; made if missing)")
        q.add_argument("--no-install", dest="install", action="store_false",
                       help="if the venv is missing or lacks a pin, print the command that fixes it and stop")

    def run_args(q):
        q.add_argument("--only", help="comma list of workloads, e.g. W1,W4 (default: all of benches/workloads.json)")
        q.add_argument("--threads", default="1,2", help="thread counts to run (default 1,2); 1 is pinned with taskset -c 0")
        q.add_argument("--pin-all", action="store_true", help="also pin N-thread runs to cores 0..N-1")
        q.add_argument("--jax", action="store_true", help="run the JAX references as well (requirements-jax.txt)")
        q.add_argument("--peers", help="directory holding torch_bench.py and jax_bench.py (default benches/peers)")
        venv_arg(q)
        q.add_argument("--dry-run", action="store_true", help="print the commands only")

    def report_args(q, with_threads=True):
        q.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
        q.add_argument("--svg", default=str(REPO / "docs" / "bench_ratios.svg"))
        if with_threads:
            q.add_argument("--threads", default=None, help="thread counts to report (default: those of the run)")

    q = sub.add_parser("venv", help="create the peers venv, or install the pins it lacks")
    venv_arg(q)
    q.add_argument("--jax", action="store_true", help="requirements-jax.txt (JAX too)")
    q = sub.add_parser("run", help="run tapegrad + PyTorch (+ JAX) benches into a fresh run directory")
    run_args(q)
    q.add_argument("--runs-dir", default=str(DEFAULT_RUNS))
    q = sub.add_parser("report", help="write BENCHMARKS.md + SVG from a run directory")
    q.add_argument("--run-dir", help="default: newest directory under --runs-dir")
    q.add_argument("--runs-dir", default=str(DEFAULT_RUNS))
    venv_arg(q)
    report_args(q)
    q = sub.add_parser("all", help="run, then report")
    run_args(q)
    q.add_argument("--runs-dir", default=str(DEFAULT_RUNS))
    report_args(q, with_threads=False)
    q = sub.add_parser("chart", help="(internal) draw the SVG from a JSON spec; needs matplotlib")
    q.add_argument("--data", required=True)
    q.add_argument("--svg", required=True)
    a = p.parse_args()
    if a.mode == "venv":
        py = ensure_venv(Path(a.venv), a.jax, a.install)
        print(f"{py}: the pins of {REQUIREMENTS_JAX if a.jax else REQUIREMENTS} are installed")
    elif a.mode == "run":
        cmd_run(a)
    elif a.mode == "report":
        cmd_report(a)
    elif a.mode == "chart":
        cmd_chart(a)
    else:
        d = cmd_run(a)
        if not a.dry_run:
            a.run_dir = None
            a.threads = None
            cmd_report(a, d)


if __name__ == "__main__":
    main()

"""Speed and peak memory of moetrace's trace analyzer, side by side with HolisticTraceAnalysis.

Prints figures; asserts nothing. Each measurement runs in a fresh process, timed from outside
(wall clock, and user+system CPU time from the kernel's accounting of that child) with its peak
resident memory (ru_maxrss of the child, whole interpreter included).

Input: a real GPU trace of at least 500 MB uncompressed, made by profiling many decode steps of
benchmarks/gpu/moe_layer_trace.py (Qwen3-235B layer shapes) on an H100:

    # on a machine with a CUDA GPU and torch (e.g. the device tool), 809 steps made 526 MB:
    python benchmarks/trace_analysis.py --generate --steps 809 --data DIR
    # or from the xz parts benchmarks/gpu/collect.sh brought back:
    python benchmarks/trace_analysis.py --from-parts 'PARTS_GLOB' --data DIR
    # then measure (HolisticTraceAnalysis from its own venv; pip install HolisticTraceAnalysis):
    python benchmarks/trace_analysis.py --trace DIR/big.trace.json --hta-python /tmp/htavenv/bin/python

Smaller traces for the memory-versus-size figures are prefixes of the big one (its first N decode
steps, cut with tests/data/traces/trim.py: real events, none duplicated).
HTA's figure is TraceAnalysis(trace_dir) (its parse) plus get_gpu_kernel_breakdown(), the
equivalent of what moetrace's analyzer computes.

Without the H100 trace: ``--synthetic FIXTURE`` repeats a real fixture's events into a big trace
(labelled synthetic). Against an older moetrace (e.g. main's checkout), measured in turns with this
tree's because a shared machine's speed drifts from one minute to the next:

    python benchmarks/trace_analysis.py --synthetic \
        tests/data/traces/gpu/tp1_sglang/qwen3-235b-tp1-1795731670-TP-0-DECODE.trace.json.gz \
        --prefix-steps 100,300 --repeat 3 --against /path/to/main/src

Other layouts (issue 21): ``--layout json`` measures the same events re-serialized by Python's
``json.dump`` (no newlines; a merged or post-processed trace), ``--gzip`` the traces gzipped as
engines write them (MB/s are then of the decompressed bytes); ``--prefix-steps ""`` measures the big
trace only. Last measured 2026-12-06 21:40 (quiet minute, best of 3 in turns with main, wall):
Kineto's layout 261.5 MB/s (main 256.8), gzipped 225.6 (138.0); json.dump's layout 201.8 (60.0),
gzipped 180.2 (53.8); peak 38-60 MB. Details: docs/traces.md, "Issue 21, part 3".

Issue 14's measurement (2026-11-30 12:22, the 522 MB synthetic trace, 1.92 M events; the dev VM:
Intel Xeon, 2 cores, 24 GiB, Python 3.11.7; best of 3 in turns, CPU time of the whole process): main
117.7 MB/s, 38 MB peak; msgspec reading bytes (this tree) 195.0 MB/s, 39 MB peak: 1.66x (192.5 against
121.8 in the next run): the 150 MB/s target met. HolisticTraceAnalysis 0.5.0 once (12:24): 10.0 MB/s,
2,401 MB peak. Details: docs/traces.md, "Speed".
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import lzma
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OURS = """
import json, sys
from moetrace.traces.analyze import analyze_trace
s = analyze_trace(sys.argv[1])
print(json.dumps({"events": s.events, "bytes": s.bytes_read, "breakdown": s.shares()}))
"""

HTA = """
import json, logging, sys
logging.disable(logging.CRITICAL)
from hta.trace_analysis import TraceAnalysis
a = TraceAnalysis(trace_dir=sys.argv[1])
kinds, kernels = a.get_gpu_kernel_breakdown(visualize=False)
print(json.dumps({"kernels": int(len(kernels)), "kinds": kinds.to_dict(orient="records")}))
"""


@dataclass
class Run:
    tool: str
    trace: Path
    wall_s: float
    cpu_s: float
    peak_mb: float
    out: dict

    @property
    def size_mb(self) -> float:
        """The trace's size once decompressed (what MB/s are of, gzipped or not)."""
        return self.out.get("bytes", self.trace.stat().st_size) / 1e6


def measure(tool: str, python: str, code: str, arg: str, trace: Path, src: Path = ROOT / "src") -> Run:
    """Run ``code`` in a fresh interpreter (moetrace from ``src``), reaped with wait4: its wall time,
    CPU time and peak RSS."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        path = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))  # src first
        p = subprocess.Popen([python, "-c", code, arg], stdout=out, stderr=err, env={**os.environ, "PYTHONPATH": path})
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{tool} failed on {trace}:\n{err.read()[-2000:]}")
        last = out.read().strip().splitlines()[-1]
    return Run(tool, trace, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, json.loads(last))


def prefixes(big: Path, steps: list[int], data: Path) -> list[Path]:
    """The big trace's first N decode steps, as separate real traces.

    Cut by tests/data/traces/trim.py (whole events out of the original text) in a child process:
    it loads the whole trace, and a big parent would leave its peak memory to later children.
    """
    out = []
    for n in steps:
        dst = data / f"prefix{n}-TP-0-DECODE.trace.json"
        if not dst.exists():
            gz = dst.with_suffix(".json.gz")
            subprocess.run([sys.executable, str(ROOT / "tests/data/traces/trim.py"), str(big), str(gz), "--steps",
                            str(n)], check=True, stdout=subprocess.DEVNULL)
            with gzip.open(gz, "rb") as src, open(dst, "wb") as f:
                shutil.copyfileobj(src, f, 1 << 20)
            gz.unlink()
        out.append(dst)
    return out


_TS = re.compile(r'"ts": ([0-9.]+)')
_IDS = re.compile(r'"(External id|correlation|id)": (\d+)')


def synthetic(fixture: Path, size_mb: float, data: Path) -> Path:
    """A large trace made of a real fixture's events repeated: each copy's timestamps shifted past
    the previous copy and its External ids, correlations and flow ids offset, written back in
    Kineto's own layout (each event's original text, only those numbers changed). For when the
    526 MB H100 trace is not at hand; its figures are labelled as synthetic."""
    sys.path.insert(0, str(ROOT / "tests/data/traces"))
    from trim import split_events
    dst = data / f"synthetic-{fixture.name.split('.')[0]}-{size_mb:.0f}MB-TP-0-DECODE.trace.json"
    if dst.exists():
        return dst
    with gzip.open(fixture, "rt") if fixture.suffix == ".gz" else open(fixture) as f:
        text = f.read()
    head, pieces, tail = split_events(text)
    events = [json.loads(p) for p in pieces]
    timed = [(p, e) for p, e in zip(pieces, events) if "ts" in e and e.get("ph") != "M"]
    meta = [p for p, e in zip(pieces, events) if not ("ts" in e and e.get("ph") != "M")]
    t0 = min(e["ts"] for _, e in timed)
    span = max(e["ts"] + e.get("dur", 0) for _, e in timed) - t0 + 100.0
    id_span = max((int(m.group(2)) for p, _ in timed for m in _IDS.finditer(p)), default=0) + 1
    with open(dst, "w") as out:
        out.write(head + "\n" + ",\n".join(meta))
        k = 0
        while out.tell() < size_mb * 1e6:
            dt, di = k * span, k * id_span
            for p, _ in timed:
                p = _TS.sub(lambda m: f'"ts": {float(m.group(1)) + dt:.3f}', p)
                p = _IDS.sub(lambda m: f'"{m.group(1)}": {int(m.group(2)) + di}', p)
                out.write(",\n" + p)
            k += 1
        out.write(tail)
    return dst


def as_layout(trace: Path, layout: str) -> Path:
    """``trace`` (Kineto's layout) in another layout. ``json``: what ``json.dump(json.load(f), out)``
    writes (a merged or post-processed trace: no newline anywhere, ", " between events), made one
    event at a time. The same events in fewer bytes (no indentation, shorter floats): 522 MB of
    Kineto's layout make 467 MB."""
    if layout == "kineto":
        return trace
    sys.path.insert(0, str(ROOT / "tests/data/traces"))
    from trim import split_events
    dst = trace.with_name(trace.name.replace(".trace.json", f".{layout}.trace.json"))
    if dst.exists():
        return dst
    text = trace.read_text()
    head, pieces, tail = split_events(text)
    del text
    top = json.loads(head + tail)  # tail: from the array's "]" on
    before, after = json.dumps(top).split('"traceEvents": []')
    with open(dst, "w") as out:
        out.write(before + '"traceEvents": [')
        out.write(", ".join(json.dumps(json.loads(p)) for p in pieces))
        out.write("]" + after)
    return dst


def gzipped(trace: Path) -> Path:
    """``trace`` gzipped as engines write it (PyTorch's profiler: ``gzip.open``'s default level 9)."""
    dst = trace.with_name(trace.name + ".gz")
    if not dst.exists():
        with open(trace, "rb") as src, gzip.open(dst, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
    return dst


def from_parts(pattern: str, data: Path) -> Path:
    parts = sorted(glob.glob(pattern))
    if not parts:
        raise SystemExit(f"no parts match {pattern}")
    dst = data / "big.trace.json"
    with open(dst, "wb") as f:
        for chunk in _xz_stream(parts):
            f.write(chunk)
    return dst


def _xz_stream(parts: list[str]):
    d = lzma.LZMADecompressor()
    for part in parts:
        data = Path(part).read_bytes()
        while data:
            yield d.decompress(data)
            if d.eof:
                data, d = d.unused_data, lzma.LZMADecompressor()
            else:
                data = b""


def generate(data: Path, steps: int, python: str) -> Path:
    """Profile ``steps`` decode steps on a CUDA GPU (needs torch with CUDA)."""
    out = data / "gen"
    subprocess.run([python, str(ROOT / "benchmarks/gpu/moe_layer_trace.py"), "--out", str(out), "--only", "decode",
                    "--decode-steps", str(steps), "--no-gzip", "--prefix", "big"], check=True)
    (src,) = out.glob("*.trace.json")
    dst = data / "big.trace.json"
    src.replace(dst)
    return dst


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def hta_version(python: str) -> str:
    r = subprocess.run([python, "-c", "from importlib.metadata import version as v; "
                        "print('HolisticTraceAnalysis', v('HolisticTraceAnalysis'), 'pandas', v('pandas'))"],
                       capture_output=True, text=True)
    return r.stdout.strip() or "?"


def table(runs: list[Run]) -> str:
    lines = ["| tool | trace MB | events | wall s | CPU s | MB/s (wall) | MB/s (CPU) | peak MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        events = r.out.get("events", "-")
        lines.append(f"| {r.tool} | {r.size_mb:.0f} | {events} | {r.wall_s:.1f} | {r.cpu_s:.1f} | "
                     f"{r.size_mb / r.wall_s:.1f} | {r.size_mb / r.cpu_s:.1f} | {r.peak_mb:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", type=Path, help="the big uncompressed trace (.json)")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "moetrace-bench")
    ap.add_argument("--from-parts", help="glob of the xz parts benchmarks/gpu/collect.sh brought back")
    ap.add_argument("--generate", action="store_true", help="profile a new big trace (CUDA GPU needed)")
    ap.add_argument("--synthetic", type=Path, help="repeat this real fixture's events into a big trace instead")
    ap.add_argument("--size-mb", type=float, default=520.0, help="size of the --synthetic trace")
    ap.add_argument("--steps", type=int, default=809, help="decode steps to profile with --generate")
    ap.add_argument("--torch-python", default=sys.executable, help="interpreter with torch, for --generate")
    ap.add_argument("--hta-python", help="interpreter with HolisticTraceAnalysis installed")
    ap.add_argument("--layout", choices=("kineto", "json"), default="kineto",
                    help="kineto: as PyTorch writes traces; json: the same events re-serialized by Python's "
                         "json.dump (a merged or post-processed trace; no newlines)")
    ap.add_argument("--gzip", action="store_true", help="measure the traces gzipped (.json.gz, level 9, as "
                                                         "engines write them); MB/s are of the decompressed bytes")
    ap.add_argument("--prefix-steps", default="100,300", help="sizes for memory vs size: first N steps")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement (the best is kept)")
    ap.add_argument("--against", type=Path, metavar="SRC",
                    help="another moetrace source tree (its src/ folder, e.g. of main) measured too, each of its "
                         "runs next to one of this tree's: a shared machine's speed drifts between minutes")
    args = ap.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)

    big = args.trace
    if args.from_parts:
        big = from_parts(args.from_parts, args.data)
    elif args.generate:
        big = generate(args.data, args.steps, args.torch_python)
    elif args.synthetic:
        big = synthetic(args.synthetic, args.size_mb, args.data)
    if big is None or not big.exists():
        raise SystemExit("give --trace, --from-parts or --generate")
    steps = [int(s) for s in args.prefix_steps.split(",") if s]
    traces = [as_layout(t, args.layout) for t in prefixes(big, steps, args.data) + [big]]
    if args.gzip:
        traces = [gzipped(t) for t in traces]
    big = traces[-1]

    def best(tool: str, python: str, code: str, arg: str, trace: Path) -> Run:
        return min((measure(tool, python, code, arg, trace) for _ in range(args.repeat)), key=lambda r: r.wall_s)

    if args.against:
        runs, older = [], []
        for t in traces:  # interleaved: this tree, the other, this tree...
            pairs = [(measure("moetrace", sys.executable, OURS, str(t), t),
                      measure(f"moetrace ({args.against})", sys.executable, OURS, str(t), t, args.against))
                     for _ in range(args.repeat)]
            runs.append(min((a for a, _ in pairs), key=lambda r: r.wall_s))
            older.append(min((b for _, b in pairs), key=lambda r: r.wall_s))
        runs += older
    else:
        runs = [best("moetrace", sys.executable, OURS, str(t), t) for t in traces]
    if args.hta_python:
        for t in (traces[0], big):
            with tempfile.TemporaryDirectory() as d:  # HTA reads every trace file of a directory
                (Path(d) / t.name).symlink_to(t.resolve())
                runs.append(best("HTA", args.hta_python, HTA, d, t))

    print(f"machine: {machine()}")
    if args.hta_python:
        print(f"compared with: {hta_version(args.hta_python)}")
    print(f"trace: {big} ({big.stat().st_size / 1e6:.0f} MB), prefixes of {steps} decode steps\n")
    print(table(runs))
    ours = {r.trace: r for r in runs if r.tool == "moetrace"}
    for h in (r for r in runs if r.tool == "HTA"):
        o = ours[h.trace]
        print(f"\n{h.size_mb:.0f} MB: moetrace is {h.wall_s / o.wall_s:.1f}x faster (wall), "
              f"{h.cpu_s / o.cpu_s:.1f}x (CPU time), with {o.peak_mb / h.peak_mb:.3f} of HTA's peak memory")
    for o in (r for r in runs if r.tool.startswith("moetrace (")):
        n = next(r for r in runs if r.tool == "moetrace" and r.trace == o.trace)
        print(f"\n{n.size_mb:.0f} MB: this tree is {o.wall_s / n.wall_s:.2f}x as fast as {args.against} (wall), "
              f"{o.cpu_s / n.cpu_s:.2f}x (CPU time)")
    sizes = [(r.size_mb, r.peak_mb) for r in runs if r.tool == "moetrace"]
    print("\nmoetrace peak memory by trace size: " + ", ".join(f"{s:.0f} MB -> {m:.0f} MB" for s, m in sizes))


if __name__ == "__main__":
    main()

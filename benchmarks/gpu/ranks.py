"""GPU run 4: one rank of each spec config at full depth on one GPU, with the engines' dummy loaders.

A detached queue on the node, started by one device call and polled by the next ones (the node keeps
/tmp while held, and a call may last 10 minutes at most):

    python3 benchmarks/gpu/ranks.py start --parts PART...     # install, then start the queue (detached)
    python3 benchmarks/gpu/ranks.py poll --wait 540 --parts PART...   # install more, wait, pack what is new

Each queue entry is one real ``moetrace run MODEL -c CONFIG --weights dummy --one-rank`` (moetrace writes
the weightless rank-shaped model itself), run back to back on GPU 0, each engine into its own results
directory, with moetrace's telemetry sampler (NVML or nvidia-smi) beside it (``telemetry-<tag>.csv``). An entry whose engine
is not installed yet is passed over and taken up once it is (the SGLang parts arrive with the polls).
``poll`` packs every file written since the last pack into ``$OUT/<name>.tar.gz.NN``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep import BASE, ENGINES, NODE_ENV, OUT, REPO, _alive, log, moetrace_site, node_facts  # noqa: E402

RUN = BASE / "ranks"
V, S = "vllm-0_25_0", "sglang-0_5_17"
COMMON = ("--max-model-len", "8192", "--repeat", "3", "--profile-steps", "5", "--request-timeout", "150",
          "--profile-timeout", "150", "--launch-timeout", "900")
BALANCED = ("--routing", "balanced")  # dummy weights' routers collapse onto a few experts; the engines' simulator
VLLM = ("--engine-arg=--max-num-seqs=1", "--engine-env", "VLLM_DEEP_GEMM_WARMUP=skip", *BALANCED)
SGL = (*BALANCED, "--engine-arg=--attention-backend=triton", "--engine-arg=--sampling-backend=pytorch",
       "--engine-arg=--cuda-graph-max-bs=2", "--engine-arg=--max-running-requests=2")
OOM = ("--no-skip-predicted", "--no-profile", "--repeat", "1")


@dataclass(frozen=True)
class Entry:
    engine: str  # bundle
    model: str
    config: str
    args: tuple[str, ...] = ()
    tag: str = ""

    @property
    def name(self) -> str:
        return f"{self.engine.split('-')[0]}-{self.model}-{self.config}{'-' + self.tag if self.tag else ''}"


# In order of what matters most, for a short device budget: the first full-depth rank (Qwen3-235B: it fits an H100
# and needs no new fp8 MoE compile, which costs 200-270 s the first time a shape is seen); the same rank on SGLang
# (the engine of most published batch-1 figures; it waits for its parts, and the queue takes it as soon as they are in);
# two of the spec's expected OOMs as real engine OOMs (the load fails before any compile: about a minute each); the
# other ranks (on an H100 the H200-only ones are recorded as predicted, without a launch); the other OOMs; then depth
# scaling of one rank and its model router.
QUEUE = [
    Entry(V, "Qwen3-235B", "TP8_EP2_auto", VLLM),
    Entry(S, "Qwen3-235B", "TP8_EP2_auto", SGL),
    *(Entry(V, m, c, VLLM + OOM, "oom") for m, c in (("MiniMax-M2", "TP1_auto"), ("DeepSeek-V3.1", "TP4_auto"))),
    *(Entry(V, m, "TP8_EP2_auto", VLLM)
      for m in ("MiniMax-M2", "DeepSeek-V3.1", "Kimi-K2-Thinking", "GLM-4.6", "Qwen3-Coder-480B")),
    Entry(S, "MiniMax-M2", "TP8_EP2_auto", SGL),
    *(Entry(V, m, c, VLLM + OOM, "oom") for m, c in (("Qwen3-Coder-480B", "TP4_auto"), ("Kimi-K2-Thinking", "TP1_auto"))),
    *(Entry(V, "Qwen3-235B", "TP8_EP2_auto", VLLM + ("--layers", str(n)), f"L{n}") for n in (24, 48)),
    Entry(V, "Qwen3-235B", "TP8_EP2_auto", VLLM + ("--routing", "model"), "router"),  # the last --routing wins
]


def install(parts: list[Path]) -> None:
    """Install the parts this call carries; a bundle whose every payload is in gets ``.complete``."""
    if not parts:
        return
    r = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu/engines/install.py"), *map(str, parts),
                        "--root", str(ENGINES)], capture_output=True, text=True)
    print(r.stdout[-2000:], r.stderr[-2000:], flush=True)
    for line in r.stdout.splitlines():
        if " complete: " in line:  # install.py's last lines: "install: <bundle> complete: <python>"
            (Path(line.split(" complete: ")[1]).parents[1] / ".complete").touch()


def ready(bundle: str) -> bool:
    return (ENGINES / bundle / ".complete").exists()


def gpu_kind() -> str:
    """h200 or h100, from the card's name: the planner's GPU, so an entry it says cannot fit this card is
    recorded as predicted without a launch (the H200-only ranks on an H100)."""
    name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                          capture_output=True, text=True).stdout
    return "h200" if "H200" in name else "h100"


def moetrace_args(e: Entry, gpu: str, python: Path, results: Path) -> list[str]:
    """The entry's ``moetrace`` arguments (tests/gpu/test_ranks_queue.py dry-runs every one of them)."""
    return ["run", e.model, "-c", e.config, "--weights", "dummy", "--one-rank", "--engine", e.engine.split("-")[0],
            "--device", "cuda", "--gpu", gpu, "--engine-python", str(python), "--results", str(results), *COMMON,
            *e.args]


def run_entry(e: Entry) -> int:
    py = ENGINES / e.engine / "bin" / "python"
    sub = e.tag if e.tag in ("oom", "router") else ""  # own directories: the same keys as the main entries
    results = RUN / f"results-{e.engine.split('-')[0]}" / sub
    cmd = [sys.executable, "-c", "import sys; sys.argv[0] = 'moetrace'; from moetrace.cli import main; main()",
           *moetrace_args(e, gpu_kind(), py, results)]
    env = dict(os.environ, **NODE_ENV, CUDA_VISIBLE_DEVICES="0",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(moetrace_site())]))
    t = time.monotonic()
    # the whole entry (launch and profiling too), by moetrace's own sampler; the record keeps the measured runs'
    sampler = [sys.executable, "-m", "moetrace.measure.telemetry", "--out", str(RUN / f"telemetry-{e.name}.csv"),
               "--interval-ms", "500", "--gpus", "0"]
    with open(RUN / f"moetrace-{e.name}.txt", "w") as out:
        out.write("$ moetrace " + " ".join(cmd[3:]) + "\n# CUDA_VISIBLE_DEVICES=0\n")
        out.flush()
        tel = subprocess.Popen(sampler, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(RUN)).returncode
        finally:
            tel.terminate()  # the sampler stops on SIGTERM
            tel.wait(10)
    log(f"{e.name}: exit {rc} in {time.monotonic() - t:.0f} s")
    return rc


def queue() -> None:
    done = RUN / "done.jsonl"
    todo = list(QUEUE)
    while todo:
        startable = [e for e in todo if ready(e.engine)]
        if not startable:
            time.sleep(5)
            continue
        e = startable[0]
        todo.remove(e)
        t = time.time()
        rc = run_entry(e)
        with open(done, "a") as f:
            f.write(json.dumps({"entry": e.name, "exit": rc, "start": t, "seconds": round(time.time() - t, 1)}) + "\n")
    log("queue finished")


def pack(name: str) -> None:
    """Every file under RUN (and the node's facts) written since the last pack, in pieces of 15 MiB."""
    stamp = RUN / ".packed"
    since = stamp.stat().st_mtime if stamp.exists() else 0.0
    now = time.time()
    files = [p for p in sorted(RUN.rglob("*")) if _newer(p, since) and p != stamp
             and p.name != "tokenizer.json"]  # moetrace's own tokenizer: made again from the config
    files += [p for p in (BASE / "node-facts.txt",) if p.exists() and since == 0.0]
    tmp = Path("/tmp") / f"{name}.tar.gz"
    with tarfile.open(tmp, "w:gz") as t:
        for p in files:
            try:
                t.add(p, arcname=str(p.relative_to(BASE)))
            except OSError:  # the running entry replaced or removed it meanwhile (tmp-then-rename writes)
                continue
    stamp.touch()
    os.utime(stamp, (now, now))
    OUT.mkdir(parents=True, exist_ok=True)
    data = tmp.read_bytes()
    chunk = 15 * 2**20
    for i in range(0, max(1, len(data)), chunk):
        (OUT / f"{name}.tar.gz.{i // chunk:02d}").write_bytes(data[i:i + chunk])
    log(f"packed {len(files)} files, {len(data) / 2**20:.1f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("start", "poll", "queue"))
    ap.add_argument("--parts", nargs="*", type=Path, default=[])
    ap.add_argument("--wait", type=float, default=0, help="poll: seconds to wait for the queue before packing")
    ap.add_argument("--name", default="", help="poll: the pack's name")
    a = ap.parse_args()
    RUN.mkdir(parents=True, exist_ok=True)
    if a.what == "queue":
        return queue()
    node_facts()
    install(a.parts)
    pid = RUN / "queue.pid"
    if a.what == "start" and not (pid.exists() and _alive(pid.read_text().strip())):
        with open(RUN / "queue.log", "a") as f:
            p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "queue"], stdout=f,
                                 stderr=subprocess.STDOUT, start_new_session=True, cwd=str(REPO))
        pid.write_text(str(p.pid))
        log(f"queue started (pid {p.pid})")
    t, name = time.monotonic(), a.name or f"{a.what}-{time.strftime('%H%M%S')}"
    seen = _entries_done()
    while time.monotonic() - t < a.wait and pid.exists() and _alive(pid.read_text().strip()):
        time.sleep(5)
        if _entries_done() > seen:  # pack each finished entry at once: a call cut off at the budget keeps it
            seen = _entries_done()
            pack(f"{name}-e{seen}")
    subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used,utilization.gpu", "--format=csv"])
    print((RUN / "queue.log").read_text()[-3000:] if (RUN / "queue.log").exists() else "", flush=True)
    pack(name)


def _newer(p: Path, since: float) -> bool:
    """A plain file written at or after ``since``; False for one gone meanwhile (the queue writes while we pack)."""
    try:
        return p.is_file() and p.stat().st_mtime >= since
    except OSError:
        return False


def _entries_done() -> int:
    done = RUN / "done.jsonl"
    return len(done.read_text().splitlines()) if done.exists() else 0


if __name__ == "__main__":
    main()

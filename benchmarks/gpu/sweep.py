"""The GPU evidence sweep: moetrace's real commands against real engines on an offline GPU node.

Run on the node from the repository root, one step per device call (the node keeps /tmp while it is
held, so the steps run back to back):

    python3 benchmarks/gpu/sweep.py STEP [--parts DIR ...] [--budget-s 560]

Each step installs the engine parts it carries (``benchmarks/gpu/engines/install.py`` into
``/tmp/engines``), makes sure the real-width slices its steps need are being written (``benchmarks/gpu/slices.toml``,
moetrace's own generator, in the background, into ``/tmp/slices``), then runs its phases: each phase is
a set of lanes run at the same time, a lane is one ``moetrace run`` of one slice on its own GPUs
(``CUDA_VISIBLE_DEVICES``), several configs in a row. Every run writes into one results directory
(``/tmp/gpu-sweep/results-<engine>``; the OOM probe, the FA3 and the expert-load runs into their own), the
store's locking keeps concurrent lanes safe.
Whatever ran is packed into ``$OUT/<step>.tar.gz`` (records, views, server logs, traces, moetrace's
output), so a later failure loses nothing; ``tests/data/gpu/`` is made from these packs
(``benchmarks/gpu/fixtures.py``).

The plan (STEPS below) is ordered by what matters most, so that a short device budget still gets the
first rows. Nothing here is specific to one machine except the GPU count each lane asks for.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINES = Path(os.environ.get("MOETRACE_GPU_ENGINES", "/tmp/engines"))
SLICES = Path(os.environ.get("MOETRACE_GPU_SLICES", "/tmp/slices"))
BASE = Path(os.environ.get("MOETRACE_GPU_SWEEP", "/tmp/gpu-sweep"))  # results, logs, moetrace's output
RESULTS = BASE / "results"
OUT = Path(os.environ.get("OUT", "/tmp/out"))

# Offline, and NVLink multicast off (this workplace's rule for its multi-GPU machines; see the README).
NODE_ENV = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1",
    "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
# SGLang before its FA3 library arrives: Triton attention; greedy sampling in PyTorch (FlashInfer's
# sampling kernels would be JIT-compiled at first use).
SGL_TRITON = ("--engine-arg=--attention-backend=triton", "--engine-arg=--sampling-backend=pytorch")
# vLLM's fp8 block GEMMs without DeepGEMM (its JIT needs the CUTLASS headers the vLLM parts leave out).
NO_DEEPGEMM = ("--engine-env", "VLLM_USE_DEEP_GEMM=0")
SGL_DEFAULT = ("--engine-arg=--sampling-backend=pytorch",)
MEM_07, MEM_08 = ("--mem-fraction", "0.7"), ("--mem-fraction", "0.8")  # moetrace's flag: the planner sees it too
LOAD = ("--expert-load",)
NO_DG_WARMUP = ("--engine-env", "VLLM_DEEP_GEMM_WARMUP=skip")  # see fix-2
REPEAT5 = ("--repeat", "5")  # the last --repeat wins
NO_SHARED_FUSION = ("--engine-arg=--disable-shared-experts-fusion",)  # SGLang's recorder with a fused shared expert: see fix-2


@dataclass
class Lane:
    gpus: str  # CUDA_VISIBLE_DEVICES
    engine: str  # bundle directory under ENGINES: vllm-0_25_0 | sglang-0_5_17
    slice: str  # name in slices.toml
    configs: tuple[str, ...]
    args: tuple[str, ...] = ()
    results: str = ""  # "" = RESULTS; else RESULTS-<results>
    tag: str = ""

    @property
    def engine_name(self) -> str:
        return self.engine.split("-")[0]


@dataclass
class Step:
    phases: list[list[Lane]] = field(default_factory=list)
    background: tuple[str, ...] = ()  # node-side jobs started detached (FlashInfer JIT warm-up)
    prepare: tuple[str, ...] = ()  # an install step: the slices the next steps need, written while it installs

    @property
    def slices(self) -> tuple[str, ...]:
        """The slices to write: those its lanes or the steps it prepares need (the first run's install
        steps named none and wrote all seven; a one-slice run need not wait for the other six)."""
        named = self.prepare + tuple(ln.slice for phase in self.phases for ln in phase)
        return tuple(dict.fromkeys(named)) or ALL_SLICES


ALL_SLICES = (Q := "qwen3-235b", D := "deepseek-v3.1", HOT := "glm-4.6-hot", "qwen3-coder-480b", "glm-4.6", "minimax-m2",
              "kimi-k2-thinking")
V, S = "vllm-0_25_0", "sglang-0_5_17"
# One device call each, in this order (the parts each carries: benchmarks/gpu/README.md). Every step
# installs what it carries and starts the slice writer if the slices are not all written; a step with
# phases waits for the writer to finish first, so no measured engine shares the host with it.
STEPS: dict[str, Step] = {
    "install-1": Step(),  # vLLM part 1; the slices start being written
    "install-2": Step(),  # vLLM part 2
    # vLLM complete: {auto, triton} on the two main slices, one GPU each.
    "vllm-tp1": Step(phases=[[
        Lane("0", V, Q, ("TP1_auto", "TP1_triton")),
        Lane("1", V, D, ("TP1_auto", "TP1_triton")),
    ]]),
    # SGLang complete (Triton attention: FA3 is its own bundle): {auto, triton} on the same slices.
    "sglang-tp1": Step(background=("flashinfer-jit",), phases=[[
        Lane("0", S, Q, ("TP1_auto", "TP1_triton"), SGL_TRITON),
        Lane("1", S, D, ("TP1_auto", "TP1_triton"), SGL_TRITON),
    ]]),
    # The other four architectures on vLLM (TP1_auto), then one real GPU OOM: the Qwen3 slice's
    # 10.5 GB of weights under a 5% memory setting (7 GB of 141), launched although the planner says no.
    "vllm-archs": Step(phases=[[
        Lane("0", V, "qwen3-coder-480b", ("TP1_auto",)),
        Lane("1", V, "glm-4.6", ("TP1_auto",)),
    ], [
        Lane("0", V, "minimax-m2", ("TP1_auto",)),
        Lane("1", V, "kimi-k2-thinking", ("TP1_auto",)),
    ], [
        Lane("0", V, Q, ("TP1_auto",), ("--engine-arg=--gpu-memory-utilization=0.05", "--no-skip-predicted"),
             results="oom", tag="oom"),
        Lane("1", V, D, ("TP1_auto", "TP1_triton")),
    ]]),
    # Two GPUs: TP2 and TP2 with expert parallelism (real NCCL / custom all-reduce in the traces).
    "vllm-tp2": Step(phases=[[Lane("0,1", V, Q, ("TP2_auto", "TP2_EP2_auto"))], [
        Lane("0", V, D, ("TP1_auto",), NO_DEEPGEMM, tag="nodg"),
        Lane("1", V, "minimax-m2", ("TP1_auto",), NO_DEEPGEMM, tag="nodg"),
    ]]),
    "sglang-tp2": Step(background=("flashinfer-jit",), phases=[[Lane("0,1", S, Q, ("TP2_EP2_auto", "TP2_auto"), SGL_TRITON)]]),
    # FA3 complete: SGLang's default attention backend on Hopper, both main slices.
    "sglang-fa3": Step(phases=[[
        Lane("0", S, Q, ("TP1_auto",), SGL_DEFAULT, results="fa3", tag="fa3"),
        Lane("1", S, D, ("TP1_auto",), SGL_DEFAULT + MEM_07, results="fa3", tag="fa3"),
    ]]),
    # ---- The second run (2026-11-30, session 2): what the first left open, with the current code.
    # Parts: install-1 vLLM part01, install-2 vLLM part02, vllm-2 vLLM part03 + SGLang part02,
    # sglang-2 SGLang part01, vllm-tp2-2 / sglang-tp2-2 / sglang-fa3 the three FA3 parts.
    # DeepSeek-V3.1 on vLLM (DeepGEMM's headers shipped now) with 80% of memory: at vLLM's default
    # 90% its KV cache left no room for a 3.9 GiB MLA prefill buffer; Qwen3 again with the current code.
    "vllm-2": Step(phases=[[
        Lane("0", V, D, ("TP1_auto", "TP1_triton"), MEM_08, tag="mem08"),
        Lane("1", V, Q, ("TP1_auto", "TP1_triton")),
    ]]),
    # DeepSeek-V3.1 on SGLang with a 70% static fraction (at its default the 16 GiB CUDA-graph state of
    # 128-head MLA did not fit beside the KV pool); expert load (SGLang's recorder) on Qwen3 and on the
    # GLM-4.6 slice whose router is planted skewed; the triton_kernel MoE backend where it runs.
    "sglang-2": Step(background=("flashinfer-jit",), phases=[[
        Lane("0", S, D, ("TP1_auto",), SGL_TRITON + MEM_07, tag="mem07"),
        Lane("1", S, Q, ("TP1_auto",), SGL_TRITON + LOAD, results="load", tag="load"),
    ], [
        Lane("0", S, D, ("TP1_triton",), SGL_TRITON + MEM_07, tag="mem07"),
        Lane("1", S, HOT, ("TP1_auto",), SGL_TRITON + LOAD, results="load", tag="load"),
    ], [
        Lane("0", S, Q, ("TP1_triton_kernel",), SGL_TRITON),
        Lane("1", V, D, ("TP1_auto",), MEM_08, tag="mem08"),  # vllm-2's launch timed out in CUDA-graph capture
    ]]),
    # Two GPUs again with the current code: every rank's breakdown in the record, engine in trace names;
    # SGLang's EP2 with expert load (tokens each EP rank's experts received).
    # What sglang-2 found: SGLang's recorder indexes out of bounds with GLM's fused shared expert (a
    # device-side assert at start-up), so the skewed slice runs with the fusion off; vLLM's DeepGEMM
    # warm-up JIT-builds 2052 kernels (~1 s each) before the server is ready, so it is skipped (the
    # shapes a run needs are built in moetrace's warm-up request).
    "fix-2": Step(phases=[[
        Lane("0", S, HOT, ("TP1_auto",), SGL_TRITON + LOAD + ("--engine-arg=--disable-shared-experts-fusion",),
             results="load", tag="load-nofusion"),
        Lane("1", V, D, ("TP1_auto",), MEM_08 + ("--engine-env", "VLLM_DEEP_GEMM_WARMUP=skip"), tag="mem08-nowarmup"),
    ]]),
    "vllm-tp2-2": Step(phases=[[Lane("0,1", V, Q, ("TP2_EP2_auto",))]]),
    "sglang-tp2-2": Step(phases=[[Lane("0,1", S, Q, ("TP2_EP2_auto",), SGL_TRITON + LOAD, results="load", tag="load")]]),
    # ---- The third run (session 3, one H200): the one config of issue 11 that never ran, and what the
    # expert recorder costs. The checkout had grown to 11.5 MiB (the run-2 fixtures), so the 57 MiB parts
    # no longer fit a call's 64 MiB: the parts' files were regrouped by size into five calls
    # (.gpu-parts/run3/c1..c5, README.md "Third run"); install.py takes any subset of a bundle's files.
    "install-3a": Step(prepare=(D, Q)),
    "install-3b": Step(prepare=(D, Q)),
    # vLLM's triton MoE backend on the DeepSeek-V3.1 slice (fp8 blocks), then auto again on the same node.
    "vllm-3": Step(phases=[[Lane("0", V, D, ("TP1_triton", "TP1_auto"), MEM_08 + NO_DG_WARMUP, tag="mem08-nowarmup")]]),
    # The same vLLM Qwen3 config as runs 1 and 2, on a third node: how far one config's numbers move
    # between nodes (carries SGLang's largest files).
    "vllm-3b": Step(phases=[[Lane("0", V, Q, ("TP1_auto",), REPEAT5)]]),
    # SGLang Qwen3 TP1_auto with the expert recorder's launch flags (--expert-load) and without, in turns,
    # 5 runs each: does running with the recorder change the measured numbers? (Run 2 measured ITL 1.50 ms
    # with it, run 1 1.19 ms without, on different nodes.) Each into its own results directory.
    "sglang-3": Step(phases=[
        [Lane("0", S, Q, ("TP1_auto",), SGL_TRITON + REPEAT5 + extra, results=f"{arm}-{i}", tag=f"{arm}-{i}")]
        for i in (1, 2) for arm, extra in (("recoff", ()), ("recon", LOAD))
    ]),
    # If time is left: expert load on a second architecture (256 experts, grouped top-k, fp8), then a
    # third pair of the recorder's turns.
    "sglang-3b": Step(phases=[[Lane("0", S, D, ("TP1_auto",), SGL_TRITON + MEM_07 + LOAD, results="load", tag="load")]] + [
        [Lane("0", S, Q, ("TP1_auto",), SGL_TRITON + REPEAT5 + extra, results=f"{arm}-3", tag=f"{arm}-3")]
        for arm, extra in (("recoff", ()), ("recon", LOAD))
    ]),
    # sglang-3b's DeepSeek launch hit the recorder's out-of-bounds index that GLM's fused shared expert hit
    # in run 2 (DeepSeek's shared expert is fused too): again with the fusion off.
    "fix-3": Step(phases=[[Lane("0", S, D, ("TP1_auto",), SGL_TRITON + MEM_07 + LOAD + NO_SHARED_FUSION,
                               results="load", tag="load-nofusion")]]),
}


def log(msg: str) -> None:
    print(f"[sweep {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def install(parts: list[Path]) -> None:
    if not parts:
        return
    t = time.monotonic()
    r = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu/engines/install.py"), *map(str, parts),
                        "--root", str(ENGINES)])
    log(f"install exit {r.returncode} in {time.monotonic() - t:.0f} s")


def start_slices(names: tuple[str, ...]) -> None:
    """Write the slices in the background (detached: it outlives this call, not the node)."""
    SLICES.mkdir(parents=True, exist_ok=True)
    todo = [n for n in names if not (SLICES / n / ".done").exists()]
    pid_file = SLICES / "writer.pid"
    if not todo or (pid_file.exists() and _alive(pid_file.read_text().strip())):
        return  # nothing to write, or a writer is at it
    code = (
        "import sys, time, tomllib, json, pathlib\n"
        "from moetrace.presets import get_preset\n"
        "from moetrace.tiny import write_tiny_checkpoint\n"
        "MATRIX = [[1, 1, ['auto', 'triton']], [2, 1, ['auto']], [2, 2, ['auto']]]\n"
        f"table = tomllib.loads(pathlib.Path({str(REPO / 'benchmarks/gpu/slices.toml')!r}).read_text())\n"
        "for name in sys.argv[1:]:\n"
        f"    out = pathlib.Path({str(SLICES)!r}) / name\n"
        "    t = time.time(); s = table[name]; p = get_preset(s['preset'])\n"
        "    write_tiny_checkpoint(p, out, precision='native', name=p.name + ('-hot' if s.get('hot_experts') else '') + '-slice', matrix=MATRIX, hot_experts=s.get('hot_experts', 0), **s['overrides'])\n"
        "    (out / '.done').write_text(json.dumps({'seconds': round(time.time() - t, 1)}))\n"
        "    print(name, 'written in', round(time.time() - t, 1), 's', flush=True)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    with open(SLICES / "writer.log", "a") as f:
        p = subprocess.Popen([sys.executable, "-c", code, *todo], stdout=f, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True, cwd=str(SLICES))
    (SLICES / "writer.pid").write_text(str(p.pid))
    log(f"writing slices {todo} (pid {p.pid}, log {SLICES / 'writer.log'})")


def start_background(jobs: tuple[str, ...]) -> None:
    for job in jobs:
        if job == "flashinfer-jit":  # FlashInfer's norm and TP>1 all-reduce fusion modules, built once ahead of SGLang
            py = ENGINES / S / "bin" / "python"
            for mod, fn in (("flashinfer.jit.norm", "gen_norm_module"), ("flashinfer.jit.comm", "gen_trtllm_comm_module")):
                code = f"import time; t = time.time(); from {mod} import {fn} as g; g().build_and_load(); " \
                       f"print('built {fn}', round(time.time() - t, 1), 's')"
                with open(BASE / f"jit-{fn}.log", "w") as f:
                    subprocess.Popen([str(py), "-c", code], stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            log("FlashInfer JIT warm-up started")


def _alive(pid: str) -> bool:
    try:  # a zombie (finished, not yet reaped by us) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_writer(deadline: float) -> bool:
    pid_file = SLICES / "writer.pid"
    while pid_file.exists() and _alive(pid_file.read_text().strip()):
        if time.monotonic() > deadline:
            return False
        time.sleep(2)
    return True


def wait_slice(name: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if (SLICES / name / ".done").exists():
            return True
        time.sleep(2)
    return False


def moetrace_site(packages: tuple[str, ...] = ("msgspec", "orjson"), engines: Path = ENGINES,
                  site: Path = BASE / "moetrace-site") -> Path:
    """moetrace's own dependencies that the node's image lacks (msgspec, orjson: not in its package
    list), linked from an engine bundle that ships them for the same Python (vLLM's and SGLang's do).
    The sweep's moetrace runs on the node's python3 with the checkout's src/ and this folder first."""
    site.mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        if (site / pkg).exists() or importlib.util.find_spec(pkg) is not None:
            continue
        found = [d / pkg for d in sorted(engines.glob("*/site")) if (d / pkg / "__init__.py").is_file()]
        if found:
            (site / pkg).symlink_to(found[0], target_is_directory=True)
    return site


def run_lane(lane: Lane, deadline: float) -> subprocess.Popen | None:
    # one results directory per engine (the store refuses a second engine's results: Model::config
    # would name two engines' numbers); runs 1 and 2 wrote both engines into one (tests/data/gpu*/README)
    results = RESULTS.with_name(f"{RESULTS.name}-{lane.engine_name}" + (f"-{lane.results}" if lane.results else ""))
    py = ENGINES / lane.engine / "bin" / "python"
    if not py.exists():
        log(f"skip {lane}: {py} is not installed")
        return None
    cmd = [sys.executable, "-c", "import sys; sys.argv[0] = 'moetrace'; from moetrace.cli import main; main()",
           "run", str(SLICES / lane.slice), "--engine", lane.engine_name, "--device", "cuda", "--gpu", "h200",
           "--engine-python", str(py), "--results", str(results), "--max-model-len", "8192", "--repeat", "3",
           "--profile-steps", "5", "--request-timeout", "90", "--profile-timeout", "90",
           "--launch-timeout", str(max(60, int(deadline - time.monotonic()) - 60))]
    for c in lane.configs:
        cmd += ["-c", c]
    cmd += list(lane.args)
    env = dict(os.environ, **NODE_ENV, CUDA_VISIBLE_DEVICES=lane.gpus,
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(moetrace_site()),
                                           os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    tag = f"{lane.engine_name}-{lane.slice}-{'-'.join(lane.configs)}{'-' + lane.tag if lane.tag else ''}"
    out = open(BASE / f"moetrace-{tag}.txt", "w")
    out.write("$ " + " ".join(cmd[3:]) + f"\n# CUDA_VISIBLE_DEVICES={lane.gpus}\n")
    out.flush()
    log(f"lane {tag} on GPU {lane.gpus}")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))


def run_phase(lanes: list[Lane], deadline: float) -> None:
    procs = []
    for lane in lanes:
        if not wait_slice(lane.slice, deadline - 120):
            log(f"skip {lane.slice}: slice not written in time ({SLICES / 'writer.log'})")
            continue
        p = run_lane(lane, deadline)
        if p:
            procs.append(p)
    for p in procs:
        try:
            p.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.terminate()  # moetrace records Interrupted and stops its engine (SIGTERM handler)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
            log("a lane ran out of the step's budget and was stopped")


def pack(step: str, started: float) -> None:
    """Everything this step wrote, into $OUT (files of at most 15 MiB)."""
    OUT.mkdir(parents=True, exist_ok=True)
    base = BASE
    tmp = Path("/tmp") / f"{step}.tar.gz"
    files = [p for d in sorted(base.glob(f"{RESULTS.name}*")) for p in sorted(d.rglob("*"))
             if p.is_file() and (p.stat().st_mtime >= started - 1 or p.parent == d)]
    traces = sorted((p for p in files if ".trace.json" in p.name), key=lambda p: p.stat().st_size)
    budget, left_out = 48 * 2**20, []  # $OUT takes 64 MiB: smallest traces first, the rest named
    for p in traces:
        budget -= p.stat().st_size
        if budget < 0:
            left_out.append(p)
    with tarfile.open(tmp, "w:gz") as t:
        for p in files:
            if p not in left_out:
                t.add(p, arcname=str(p.relative_to(base)))
        if left_out:
            note = base / f"{step}-traces-left-out.txt"
            note.write_text("".join(f"{p.relative_to(base)} {p.stat().st_size}\n" for p in left_out))
            t.add(note, arcname=note.name)
        for p in sorted(base.glob("*.txt")) + sorted(base.glob("*.log")) + sorted(SLICES.glob("*.log")):
            if p.stat().st_mtime >= started - 1:
                t.add(p, arcname=p.name)
        for p in sorted(SLICES.glob("*/config.json")) + sorted(SLICES.glob("*/.done")) + \
                sorted(SLICES.glob("*/moetrace.json")):
            t.add(p, arcname=f"slices/{p.parent.name}/{p.name}")
        facts = base / "node-facts.txt"
        if facts.exists():
            t.add(facts, arcname=facts.name)
    size = tmp.stat().st_size
    chunk = 15 * 2**20
    with open(tmp, "rb") as f:
        for i in range(-(-size // chunk)):
            (OUT / f"{step}.tar.gz.{i:02d}").write_bytes(f.read(chunk))
    log(f"packed {size / 2**20:.1f} MiB into {OUT}")


def node_facts() -> None:
    BASE.mkdir(parents=True, exist_ok=True)
    f = BASE / "node-facts.txt"
    if f.exists():
        return
    cmds = ["nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv", "nvidia-smi topo -m",
            "nproc", "free -g", "df -h /tmp", f"{sys.executable} -c 'import torch, triton; print(torch.__version__, "
            "torch.version.cuda, triton.__version__, torch.cuda.nccl.version())'"]
    with open(f, "w") as out:
        for c in cmds:
            out.write(f"$ {c}\n")
            out.flush()
            subprocess.run(c, shell=True, stdout=out, stderr=subprocess.STDOUT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=list(STEPS))
    ap.add_argument("--parts", nargs="*", type=Path, default=[], help="part directories this call carries")
    ap.add_argument("--budget-s", type=float, default=560, help="stop starting work after this (device call limit)")
    a = ap.parse_args()
    t0 = time.monotonic()
    started = time.time()
    deadline = t0 + a.budget_s - 25  # room to pack
    step = STEPS[a.step]
    node_facts()
    install(a.parts)
    start_slices(step.slices)
    start_background(step.background)
    if step.phases and not wait_writer(deadline - 200):
        log("the slice writer is still running: measuring beside it")
    for phase in step.phases:
        if time.monotonic() > deadline - 90:
            log(f"no time left for phase {[ln.slice for ln in phase]}")
            break
        run_phase(phase, deadline)
    pack(a.step, started)
    log(f"step {a.step} done in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()

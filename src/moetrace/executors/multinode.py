"""Multi-node launches: a config with ``nodes: N`` (e.g. TP16 over two 8-GPU nodes) runs one
engine process per node. Rank 0 is the ordinary ``moetrace run`` (it launches its engine,
serves HTTP, is benchmarked and profiled, and records); ranks 1..N-1 only start their
engine process and keep it up until rank 0 is done.

The per-node plan (``launch_plan``) is a pure function of the config, the options, the
node list and the first node's address: for each node, the exact command and the
environment its engine process receives. The engines' flags:

* SGLang: ``--nnodes N --node-rank R --dist-init-addr HOST:PORT`` on every node; only
  rank 0 serves HTTP (the other ranks run schedulers only). Each rank writes its trace
  files to the ``output_dir`` of ``POST /start_profile``, which is rank 0's attempt
  folder in the (shared) results directory, so all nodes' traces land there.
* vLLM (multiprocessing backend): ``--nnodes N --node-rank R --master-addr HOST
  --master-port PORT`` on every node, and ``vllm serve ... --headless`` on ranks > 0
  (vLLM 0.32 ``vllm/engine/arg_utils.py`` and ``vllm/entrypoints/cli/serve.py``).
  ``--profiler-config`` is a launch flag, so ranks > 0 write their traces into
  ``<results>/slurm/jobs/<job>/node<R>/profiler_raw`` and rank 0 moves them into its
  attempt folder (``traces/node<R>/``) when it is done.

Inside a Slurm job (``node_main``, called by the Slurm executor's node function on every
task): the rank is ``SLURM_PROCID`` (one task per node), rank 0 picks a free port and
writes ``HOST:PORT`` to ``<job folder>/dist_init_addr``; the other ranks wait for that file,
launch, and stop when rank 0 writes ``<job folder>/done`` (or their engine exits).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["NodeLaunch", "launch_plan", "dist_init_args", "split_addr", "node_address", "expand_nodelist",
           "node_main", "WORKER_LOG"]

WORKER_LOG = "server.log"


@dataclass
class NodeLaunch:
    """What one node's engine process gets."""

    rank: int
    host: str
    command: list[str]
    env: dict[str, str]  # added to the node's environment
    serves_http: bool  # only rank 0: it is benchmarked and profiled through its HTTP port
    profile_dir: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "host": self.host, "command": self.command, "env": self.env,
                "serves_http": self.serves_http, "profile_dir": self.profile_dir, "notes": self.notes}


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {addr!r}")
    return host.strip("[]"), int(port)


def dist_init_args(engine: str, addr: str) -> list[str]:
    """The arguments that point an engine process at the first node. Rank 0's ``moetrace run``
    gets them as extra engine arguments (its runner builds the rest of the multi-node command)."""
    from ..engines.registry import get_engine
    host, port = split_addr(addr)
    return get_engine(engine).dist_init_args(host, port)


def launch_plan(preset: Any, config: Any, opts: Any, nodes: list[str], dist_init_addr: str, *, port: int,
                profile_dirs: dict[int, Path] | None = None) -> list[NodeLaunch]:
    """One ``NodeLaunch`` per node of a multi-node config: the engine's command and the
    environment (``Engine.launch_environment``: the engine's own variables, the routing switch, ``--engine-env``)
    for node rank 0..N-1.
    ``nodes`` are the job's hosts in Slurm's order; the first one is rank 0."""
    from ..engines.base import LaunchSpec
    from ..engines.registry import get_engine

    if config.nodes < 2:
        raise ValueError(f"config {config.name} is not multi-node (nodes={config.nodes})")
    if len(nodes) < config.nodes:
        raise ValueError(f"config {config.name} needs {config.nodes} nodes, got {len(nodes)}: {nodes}")
    split_addr(dist_init_addr)
    engine = get_engine(opts.engine)
    device = opts.resolved_device()
    out = []
    for rank, host in enumerate(nodes[:config.nodes]):
        pdir = (profile_dirs or {}).get(rank)
        spec = LaunchSpec.from_options(preset, config, opts, port=port, device=device, profile_dir=pdir,
                                       node_rank=rank, dist_init_addr=dist_init_addr)
        env = engine.launch_environment(spec, opts)
        out.append(NodeLaunch(rank=rank, host=host, command=engine.command(spec), env=env, serves_http=rank == 0,
                              profile_dir=str(spec.profile_dir) if spec.profile_dir else None))
    return out


# ----------------------------------------------------------------------------- Slurm side

def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed host list ('gpu[01-02],cpu7') as names, by ``scontrol show hostnames``."""
    if not nodelist:
        return []
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    return [n for n in nodelist.split(",") if n and "[" not in n]


def node_address(name: str | None = None) -> str:
    """An address the other nodes can reach this node at: ``$MOETRACE_DIST_HOST`` if set, else a
    non-loopback IPv4 of the node's name, else the name itself."""
    if os.environ.get("MOETRACE_DIST_HOST"):
        return os.environ["MOETRACE_DIST_HOST"]
    name = name or os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    try:
        for info in socket.getaddrinfo(name, None, socket.AF_INET):
            ip = info[4][0]
            if not ip.startswith("127."):
                return ip
    except OSError:
        pass
    try:  # the address this host routes from (no packet is sent)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
            if not ip.startswith("127."):
                return ip
    except OSError:
        pass
    return name


def _wait_for(path: Path, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        try:
            text = path.read_text().strip()
            if text:
                return text
        except OSError:
            pass
        time.sleep(0.5)
    return None


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def node_main(rank: int, job: dict[str, Any], run_rank0: Callable[[list[str]], int],
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> int:
    """What task ``rank`` of a multi-node Slurm job does. ``job`` is the executor's description
    (command, engine, job folder, results, model, config, options); ``run_rank0(extra_args)``
    runs rank 0's ``moetrace run`` with extra engine arguments and returns its exit code."""
    jobdir = Path(job["jobdir"])
    addr_file, done_file = jobdir / "dist_init_addr", jobdir / "done"
    if rank == 0:
        addr = os.environ.get("MOETRACE_DIST_INIT_ADDR") or f"{node_address()}:{_free_port()}"
        _write(addr_file, addr)
        log(f"moetrace: multi-node rank 0 of {job['nnodes']}: dist-init address {addr}")
        extra = []
        for a in dist_init_args(job["engine"], addr):
            extra.append(f"--engine-arg={a}" if a.startswith("-") else f"--engine-arg={_quote(a)}")
        try:
            return run_rank0(extra)
        finally:
            _write(done_file, time.strftime("%Y-%m-%dT%H:%M:%S"))
            try:
                collect_node_traces(job)
            except Exception as e:  # traces are a bonus; never lose the run over them
                log(f"moetrace: collecting other nodes' traces failed: {type(e).__name__}: {e}")
    return _worker(rank, job, log)


def _quote(a: str) -> str:
    import shlex
    return shlex.quote(a)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, job: dict[str, Any], log: Callable[[str], None]) -> int:
    """Rank > 0: launch this node's engine process, keep it up until rank 0 is done."""
    from ..engines.process import ServerProcess, free_port, reap_orphans
    from ..presets import get_preset
    from ..matrix import Config

    jobdir = Path(job["jobdir"])
    opts = _options(job["options"])
    stop = {"sig": None}

    def on_signal(signum, frame):  # Slurm ending the job, or the driver cancelling it
        stop["sig"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)}
    try:
        addr = _wait_for(jobdir / "dist_init_addr", opts.launch_timeout_s, lambda: stop["sig"] is None)
        if addr is None:
            log(f"moetrace: rank {rank}: no dist-init address from rank 0 in {jobdir}; giving up")
            return 3
        preset = get_preset(job["model_arg"])
        config = Config.from_dict(job["config_detail"])
        nodedir = jobdir / f"node{rank}"
        plan = launch_plan(preset, config, opts, [f"rank{i}" for i in range(config.nodes)], addr,
                           port=opts.port or free_port(opts.host),
                           profile_dirs={rank: nodedir / "profiler_raw"})[rank]
        plan.host = socket.gethostname()
        (nodedir).mkdir(parents=True, exist_ok=True)
        _write(nodedir / "launch.json", json.dumps(plan.to_dict(), indent=2))
        log(f"moetrace: multi-node rank {rank}: starting {' '.join(plan.command)}")
        server = ServerProcess(plan.command, log_path=nodedir / WORKER_LOG, env=dict(os.environ, **plan.env),
                               registry=Path(job["results"]) / "running",
                               label=f"{job['model']} {job['config']} rank {rank}", grace_s=opts.grace_s)
        server.start()
        try:
            while stop["sig"] is None and not (jobdir / "done").exists():
                if server.exit_code() is not None:
                    log(f"moetrace: rank {rank}: engine exited with code {server.exit_code()} "
                        f"(log {nodedir / WORKER_LOG})")
                    break
                time.sleep(1.0)
        finally:
            rep = server.stop()
            log(f"moetrace: rank {rank}: engine stopped ({rep.to_dict()})")
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        reap_orphans(Path(job["results"]) / "running", log=log)


def _options(d: dict[str, Any]):
    from ..options import from_dict
    return from_dict(d)


def collect_node_traces(job: dict[str, Any]) -> list[Path]:
    """Move the traces ranks > 0 wrote outside rank 0's attempt folder (vLLM) into the attempt
    folder of the record(s) rank 0 committed for this job: ``<attempt>/traces/node<R>/``."""
    from ..results.store import ResultsStore
    jobdir = Path(job["jobdir"])
    raws = sorted(p for p in jobdir.glob("node*/profiler_raw") if p.is_dir() and any(p.iterdir()))
    if not raws:
        return []
    store = ResultsStore(job["results"])
    recs = [r for r in store.records() if (r.seq or 0) > int(job.get("since_seq", 0))
            and r.model == job["model"] and r.config == job["config"] and r.attempt_dir]
    if not recs:
        return []
    attempt = store.root / str(recs[-1].attempt_dir)
    moved = []
    for raw in raws:
        dest = attempt / "traces" / raw.parent.name
        dest.mkdir(parents=True, exist_ok=True)
        for f in raw.iterdir():
            target = dest / f.name
            shutil.move(str(f), str(target))
            moved.append(target)
    return moved

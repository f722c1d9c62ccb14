"""GPU telemetry beside the measured runs: clocks, power, temperature, memory, utilisation and
throttle reasons of each GPU of a config, sampled every ``interval_ms``.

Two sources, the first that works:

- NVML through the ``nvidia-ml-py`` binding (module ``pynvml``; ``pip install 'moetrace[telemetry]'``);
- ``nvidia-smi --query-gpu=<FIELDS> --format=csv,noheader,nounits -lms <interval>`` as a subprocess.

Either way the samples are written as nvidia-smi writes them with those options (one line per GPU
and sample, the fields of ``FIELDS`` in order, no header, no units), so one parser
(:func:`parse_smi_csv`) reads both. The field names are nvidia-smi's (``nvidia-smi --help-query-gpu``):
``timestamp`` ("YYYY/MM/DD HH:MM:SS.mmm"), ``index``, ``clocks.sm`` and ``clocks.mem`` (MHz),
``power.draw`` (W), ``temperature.gpu`` (C), ``memory.used`` (MiB), ``utilization.gpu`` (%),
``clocks_throttle_reasons.active`` (a hex bitmask of NVML's ``nvmlClocksThrottleReasons``; newer drivers
name it ``clocks_event_reasons.active`` and keep the old name). An unsupported value reads
``[N/A]`` or ``[Not Supported]``: None here.

:func:`summarise` says, per GPU, min/median/max of each field, the share of samples with each throttle
reason, and ``throttled``: the SM clock of busy samples fell below ``clock_floor`` of its highest, or a
reason other than idle was active. Standalone, beside an engine a driver script started::

    python -m moetrace.measure.telemetry --out FILE.csv --interval-ms 200 [--gpus 0,1]   # until SIGTERM

and :func:`summarise_csv` reads what it wrote.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Iterable, Sequence

__all__ = ["FIELDS", "Sample", "config_gpus", "THROTTLE_REASONS", "parse_smi_csv", "format_sample",
           "throttle_names", "summarise", "summarise_csv", "samples_between", "Sampler", "smi_command", "main"]

FIELDS = ("timestamp", "index", "clocks.sm", "clocks.mem", "power.draw", "temperature.gpu", "memory.used",
          "utilization.gpu", "clocks_throttle_reasons.active")
#: NVML's nvmlClocksThrottleReasons bits (nvml.h; nvidia-smi -q names them "Clocks Event Reasons")
THROTTLE_REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
                    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
                    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting"}
IDLE = 0x1
TIME_FORMAT = "%Y/%m/%d %H:%M:%S.%f"
CLOCK_FLOOR = 0.9       # throttled: a busy sample's SM clock under 90% of the highest seen
BUSY_UTIL_PCT = 50.0    # a sample counts as busy from this utilisation on (idle clocks are not throttling)


@dataclass(frozen=True)
class Sample:
    """One GPU at one moment; None where the GPU did not say."""

    time: float                    # seconds since the epoch (the host's clock)
    gpu: int
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    power_w: float | None = None
    temp_c: float | None = None
    memory_used_mib: float | None = None
    util_pct: float | None = None
    throttle: int | None = None    # nvmlClocksThrottleReasons bitmask


NUMERIC = tuple(f.name for f in fields(Sample))[2:-1]  # the fields summarised as min/median/max


# ------------------------------------------------------------------ parsing and writing nvidia-smi's CSV
def _value(text: str) -> float | None:
    t = text.strip()
    if not t or t.startswith("[") or t.upper() == "N/A":  # [N/A], [Not Supported], [Unknown Error]
        return None
    try:
        return float(t)
    except ValueError:
        return None


def _reasons(text: str) -> int | None:
    t = text.strip()
    try:
        return int(t, 16) if t.lower().startswith("0x") else int(t)
    except ValueError:
        return None


def parse_smi_csv(text: str) -> list[Sample]:
    """Samples of ``nvidia-smi --query-gpu=<FIELDS> --format=csv,noheader,nounits`` output (or of this
    module's own, which is the same). Lines that are not a sample (a header, a cut last line, an error
    message) are skipped."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(FIELDS):
            continue
        try:
            t = datetime.strptime(parts[0], TIME_FORMAT).timestamp()
            gpu = int(parts[1])
        except ValueError:
            continue
        out.append(Sample(t, gpu, *(_value(p) for p in parts[2:-1]), throttle=_reasons(parts[-1])))
    return out


def format_sample(s: Sample) -> str:
    """A sample as nvidia-smi writes it with ``--format=csv,noheader,nounits``."""
    def num(v: float | None) -> str:
        return "[N/A]" if v is None else (f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}")
    stamp = datetime.fromtimestamp(s.time).strftime(TIME_FORMAT)[:-3]
    vals = [num(getattr(s, k)) for k in NUMERIC]
    reasons = "[N/A]" if s.throttle is None else f"0x{s.throttle:016x}"
    return ", ".join([stamp, str(s.gpu), *vals, reasons])


def throttle_names(mask: int | None) -> list[str]:
    """The reasons a bitmask holds, by NVML's names (unknown bits as hex)."""
    if not mask:
        return []
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_REASONS)
    return names + ([f"0x{rest:x}"] if rest else [])


# ------------------------------------------------------------------ summary
def samples_between(samples: Iterable[Sample], start: float, end: float) -> list[Sample]:
    """The samples of a window (a run's send and last token, as epoch seconds)."""
    return [s for s in samples if start <= s.time <= end]


def _stats(vals: list[float]) -> dict[str, float] | None:
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals)} if vals else None


def _gpu_summary(ss: list[Sample], clock_floor: float, busy_util_pct: float) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": len(ss), "duration_s": round(ss[-1].time - ss[0].time, 3)}
    for k in NUMERIC:
        out[k] = _stats([v for s in ss if (v := getattr(s, k)) is not None])
    known = [s.throttle for s in ss if s.throttle is not None]
    active = [m & ~IDLE for m in known]
    counts: dict[str, int] = {}
    for m in known:
        for name in throttle_names(m):
            counts[name] = counts.get(name, 0) + 1
    out["throttle"] = {"fraction": sum(1 for m in active if m) / len(known) if known else None,
                       "reasons": {k: v / len(known) for k, v in sorted(counts.items())}}
    busy = [s.sm_clock_mhz for s in ss if s.sm_clock_mhz is not None and (s.util_pct or 0) >= busy_util_pct]
    top = max((s.sm_clock_mhz for s in ss if s.sm_clock_mhz is not None), default=None)
    why = []
    if busy and top:
        out["busy_sm_clock_ratio"] = min(busy) / top
        if min(busy) < clock_floor * top:
            why.append(f"SM clock {min(busy):.0f} MHz while busy, under {100 * clock_floor:.0f}% of its "
                       f"highest {top:.0f} MHz")
    reasons = sorted({n for m in active for n in throttle_names(m)})
    if reasons:
        why.append("throttle reasons: " + ", ".join(reasons))
    out["throttled"], out["why"] = bool(why), why
    return out


def summarise(samples: Sequence[Sample], *, clock_floor: float = CLOCK_FLOOR,
              busy_util_pct: float = BUSY_UTIL_PCT) -> dict[str, Any]:
    """Per GPU: min/median/max of each field, the share of samples with each throttle reason (``throttle``:
    ``fraction`` with any reason but idle, ``reasons`` each by name, idle included), and ``throttled`` with
    ``why``: a busy sample's (utilisation >= ``busy_util_pct``) SM clock under ``clock_floor`` of the
    highest seen, or a reason other than idle. At the top: ``throttled`` if any GPU was."""
    by_gpu: dict[int, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: s.time):
        by_gpu.setdefault(s.gpu, []).append(s)
    gpus = {str(g): _gpu_summary(ss, clock_floor, busy_util_pct) for g, ss in sorted(by_gpu.items())}
    return {"samples": len(samples), "gpus": gpus, "throttled": any(g["throttled"] for g in gpus.values())}


def summarise_csv(path: str | Path, **kw: Any) -> dict[str, Any]:
    """:func:`summarise` of a file the standalone sampler (or nvidia-smi with ``FIELDS``) wrote."""
    return summarise(parse_smi_csv(Path(path).read_text(encoding="utf-8", errors="replace")), **kw)


def telemetry_brief(runs: Sequence[dict[str, Any]], samples_path: str | None) -> dict[str, Any]:
    """A record's ``telemetry``: which runs were throttled and why (each run keeps its own summary),
    the range of the busy SM clock and of power over every run, and where the samples are."""
    sums = [r.get("telemetry") or {} for r in runs]
    gpus = [g for t in sums for g in (t.get("gpus") or {}).values()]

    def span(field: str, stat: str) -> list[float] | None:
        vals = [g[field][stat] for g in gpus if g.get(field)]
        return [min(vals), max(vals)] if vals else None

    return {"source": next((t.get("source") for t in sums if t.get("source")), None),
            "runs_sampled": sum(1 for t in sums if t.get("samples")),
            "throttled_runs": [i for i, t in enumerate(sums) if t.get("throttled")],
            "why": sorted({w for g in gpus for w in g.get("why", [])}),
            "sm_clock_mhz": span("sm_clock_mhz", "median"), "power_w": span("power_w", "max"),
            "samples_path": samples_path}


# ------------------------------------------------------------------ sampling
def config_gpus(n: int, visible: str | None = None) -> list[int | str]:
    """The GPUs a config of ``n`` GPUs per node runs on, as NVML and nvidia-smi name them: the first ``n``
    of ``CUDA_VISIBLE_DEVICES`` (``visible``; indices, or UUIDs, which both accept), else 0..n-1. NVML
    and nvidia-smi number every GPU of the host, whatever CUDA_VISIBLE_DEVICES hides."""
    ids = [x.strip() for x in (visible or "").split(",") if x.strip()]
    if not ids:
        return list(range(n))
    if len(ids) < n:
        raise ValueError(f"CUDA_VISIBLE_DEVICES={visible} shows {len(ids)} GPUs, the config needs {n}")
    return [int(x) if x.isdigit() else x for x in ids[:n]]


def smi_command(interval_ms: int, gpus: Sequence[int | str] | None = None) -> list[str]:
    """nvidia-smi sampling ``FIELDS`` every ``interval_ms`` until it is stopped."""
    cmd = ["nvidia-smi", f"--query-gpu={','.join(FIELDS)}", "--format=csv,noheader,nounits", "-lms", str(interval_ms)]
    return cmd + (["-i", ",".join(str(g) for g in gpus)] if gpus else [])


class _Nvml:
    """NVML reads of the chosen GPUs (every value that fails is None, never the whole sample)."""

    def __init__(self, nvml: Any, gpus: Sequence[int | str] | None):
        self.nvml = nvml
        nvml.nvmlInit()
        ids = list(gpus) if gpus else list(range(nvml.nvmlDeviceGetCount()))
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(g) if isinstance(g, int) else nvml.nvmlDeviceGetHandleByUUID(g)
                        for g in ids]
        self.gpus = [g if isinstance(g, int) else int(nvml.nvmlDeviceGetIndex(h)) for g, h in zip(ids, self.handles)]
        # renamed in newer bindings (clocks "event" reasons); the old name stays as an alias in most
        self.reasons = (getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                        or getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons"))

    def _get(self, f, *args) -> Any:
        try:
            return f(*args)
        except Exception:  # pynvml.NVMLError and its NotSupported subclasses
            return None

    def read(self) -> list[Sample]:
        n, now, out = self.nvml, round(time.time(), 3), []  # to the ms, as nvidia-smi's CSV keeps it
        for g, h in zip(self.gpus, self.handles):
            power, mem, util = (self._get(n.nvmlDeviceGetPowerUsage, h), self._get(n.nvmlDeviceGetMemoryInfo, h),
                                self._get(n.nvmlDeviceGetUtilizationRates, h))
            out.append(Sample(now, g, self._get(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM),
                              self._get(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_MEM),
                              None if power is None else power / 1000.0,  # mW
                              self._get(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU),
                              None if mem is None else mem.used / 2 ** 20,  # bytes
                              None if util is None else float(util.gpu), self._get(self.reasons, h)))
        return out

    def close(self) -> None:
        self._get(self.nvml.nvmlShutdown)


def _pynvml() -> Any | None:
    try:
        import pynvml  # nvidia-ml-py: pip install 'moetrace[telemetry]'
        return pynvml
    except ImportError:
        return None


class Sampler:
    """Samples the GPUs (``gpus``: indices or UUIDs, :func:`config_gpus`; None: all) every ``interval_ms`` in
    the background, from NVML
    when ``pynvml`` imports and initialises (``source="auto"`` or ``"nvml"``), else from nvidia-smi. Each
    sample goes to ``samples`` and, as nvidia-smi's CSV line, to ``out`` (flushed)::

        with Sampler(gpus=config_gpus(config.tp, os.environ.get("CUDA_VISIBLE_DEVICES"))) as s:
            ...                       # the measured runs
        summary = summarise(s.samples)
    """

    def __init__(self, gpus: Sequence[int | str] | None = None, interval_ms: int = 200, out: IO[str] | None = None,
                 source: str = "auto"):
        if interval_ms < 1 or source not in ("auto", "nvml", "nvidia-smi"):
            raise ValueError(f"interval_ms must be >= 1 and source auto, nvml or nvidia-smi: {interval_ms}, {source}")
        self.gpus, self.interval_ms, self.out, self.source = gpus, interval_ms, out, source
        self.samples: list[Sample] = []
        self.used: str | None = None  # the source that runs: "nvml" or "nvidia-smi"
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None

    def _add(self, samples: list[Sample], lines: Iterable[str]) -> None:
        with self._lock:
            self.samples += samples
            if self.out is not None:
                self.out.writelines(f"{line}\n" for line in lines)
                self.out.flush()

    def _nvml_loop(self, nvml: _Nvml) -> None:
        try:
            while True:
                t = time.monotonic()
                got = nvml.read()
                self._add(got, [format_sample(s) for s in got])
                if self._stop.wait(max(0.0, self.interval_ms / 1000.0 - (time.monotonic() - t))):
                    return
        finally:
            nvml.close()

    def _smi_loop(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            got = parse_smi_csv(line)
            if got:
                self._add(got, [line.rstrip("\n")])

    def start(self) -> "Sampler":
        nvml_mod = _pynvml() if self.source in ("auto", "nvml") else None
        if nvml_mod is not None:
            try:
                nvml = _Nvml(nvml_mod, self.gpus)
            except Exception as e:  # no driver, no GPU
                if self.source == "nvml":
                    raise RuntimeError(f"NVML did not start: {e}") from e
            else:
                self.used, self._thread = "nvml", threading.Thread(target=self._nvml_loop, args=(nvml,), daemon=True)
        elif self.source == "nvml":
            raise RuntimeError("NVML needs the nvidia-ml-py binding: pip install 'moetrace[telemetry]'")
        if self._thread is None:
            if shutil.which("nvidia-smi") is None:
                raise RuntimeError("no GPU telemetry: neither NVML (nvidia-ml-py) nor nvidia-smi is available")
            self._proc = subprocess.Popen(smi_command(self.interval_ms, self.gpus), stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True)
            self.used, self._thread = "nvidia-smi", threading.Thread(target=self._smi_loop, args=(self._proc,),
                                                                     daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(10)
        return list(self.samples)

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m moetrace.measure.telemetry --out FILE.csv``: sample until SIGTERM or Ctrl-C."""
    p = argparse.ArgumentParser(prog="python -m moetrace.measure.telemetry", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="CSV file to write (nvidia-smi's format, FIELDS in order)")
    p.add_argument("--interval-ms", type=int, default=200)
    p.add_argument("--gpus", default=None, help="comma-separated GPU indices or UUIDs [default: all]")
    p.add_argument("--source", choices=("auto", "nvml", "nvidia-smi"), default="auto")
    a = p.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    gpus = [int(g) if g.strip().isdigit() else g.strip() for g in a.gpus.split(",")] if a.gpus else None
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        try:
            sampler = Sampler(gpus, a.interval_ms, f, a.source).start()
        except (RuntimeError, ValueError) as e:
            print(f"telemetry: {e}", file=sys.stderr)
            return 2
        print(f"telemetry: sampling {a.gpus or 'all GPUs'} every {a.interval_ms} ms from {sampler.used} into {a.out}",
              file=sys.stderr, flush=True)
        while not done.wait(0.5):
            if sampler._proc is not None and sampler._proc.poll() is not None:
                print(f"telemetry: nvidia-smi exited ({sampler._proc.returncode})", file=sys.stderr)
                sampler.stop()
                return 1
        sampler.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

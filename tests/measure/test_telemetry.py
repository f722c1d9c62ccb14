"""GPU telemetry: nvidia-smi's CSV parsed, summarised, and sampled from NVML or nvidia-smi (both faked:
no GPU here). The CSV is written as `nvidia-smi --query-gpu=<FIELDS> --format=csv,noheader,nounits`
prints it: the fields in the order asked, ", " between them, the timestamp as YYYY/MM/DD HH:MM:SS.mmm,
clocks_throttle_reasons.active as a 64-bit hex mask, [N/A] / [Not Supported] where a GPU has no value."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import types
from datetime import datetime
from pathlib import Path

import pytest

from moetrace.measure import telemetry as tm

SMI = """\
2026/11/30 11:55:29.101, 0, 1980, 3201, 312.45, 41, 120345, 97, 0x0000000000000000
2026/11/30 11:55:29.101, 1, 1980, 3201, [N/A], 40, 100, 98, [Not Supported]
2026/11/30 11:55:29.301, 0, 1755, 3201, 699.80, 52, 120345, 100, 0x0000000000000004
2026/11/30 11:55:29.501, 0, 345, 3201, 85.10, 38, 120345, 0, 0x0000000000000001
Unable to determine the device handle for GPU0000:19:00.0: Unknown Error
2026/11/30 11:55:29.70
"""


def test_parse_reads_nvidia_smis_csv_and_skips_what_is_not_a_sample():
    ss = tm.parse_smi_csv(SMI)
    assert [(s.gpu, s.sm_clock_mhz) for s in ss] == [(0, 1980), (1, 1980), (0, 1755), (0, 345)]
    first = ss[0]
    assert first.time == datetime(2026, 11, 30, 11, 55, 29, 101000).timestamp()
    assert (first.mem_clock_mhz, first.power_w, first.temp_c, first.memory_used_mib, first.util_pct,
            first.throttle) == (3201, 312.45, 41, 120345, 97, 0)
    assert ss[1].power_w is None and ss[1].throttle is None  # [N/A], [Not Supported]
    assert ss[2].throttle == 0x4 and tm.throttle_names(ss[2].throttle) == ["sw_power_cap"]
    assert tm.throttle_names(0x41 | 0x2000) == ["gpu_idle", "hw_thermal_slowdown", "0x2000"]


def test_format_writes_what_parse_reads():
    ss = tm.parse_smi_csv(SMI)
    text = "\n".join(tm.format_sample(s) for s in ss)
    assert text.splitlines()[0] == SMI.splitlines()[0]
    assert text.splitlines()[1] == "2026/11/30 11:55:29.101, 1, 1980, 3201, [N/A], 40, 100, 98, [N/A]"
    assert tm.parse_smi_csv(text) == ss


def test_summary_by_hand():
    s = tm.summarise(tm.parse_smi_csv(SMI))
    g0, g1 = s["gpus"]["0"], s["gpus"]["1"]
    assert s["samples"] == 4 and s["throttled"] is True
    assert g0["samples"] == 3 and g0["duration_s"] == pytest.approx(0.4)
    assert g0["sm_clock_mhz"] == {"min": 345, "median": 1755, "max": 1980}
    assert g0["power_w"] == {"min": 85.10, "median": 312.45, "max": 699.80}
    # one of three samples had a reason other than idle (the power cap); idle is counted, not a throttle
    assert g0["throttle"] == {"fraction": pytest.approx(1 / 3),
                              "reasons": {"gpu_idle": pytest.approx(1 / 3), "sw_power_cap": pytest.approx(1 / 3)}}
    # busy samples (>= 50% utilisation): 1980 and 1755 MHz, 1755 / 1980 = 0.886 < 0.9; the idle 345 MHz is not
    assert g0["busy_sm_clock_ratio"] == pytest.approx(1755 / 1980)
    assert g0["throttled"] and g0["why"] == ["SM clock 1755 MHz while busy, under 90% of its highest 1980 MHz",
                                             "throttle reasons: sw_power_cap"]
    assert g1["power_w"] is None and g1["throttle"] == {"fraction": None, "reasons": {}} and not g1["throttled"]
    # a looser floor and no reasons: not throttled
    calm = [x for x in tm.parse_smi_csv(SMI) if x.throttle != 0x4]
    assert not tm.summarise(calm, clock_floor=0.5)["throttled"]


def test_samples_between_is_a_window():
    ss = tm.parse_smi_csv(SMI)
    t0 = ss[0].time
    assert [s.sm_clock_mhz for s in tm.samples_between(ss, t0 + 0.1, t0 + 0.3)] == [1755]


def test_summarise_csv(tmp_path):
    (tmp_path / "t.csv").write_text(SMI)
    assert tm.summarise_csv(tmp_path / "t.csv")["gpus"]["0"]["samples"] == 3


# ------------------------------------------------------------------ the sampler, with fakes
FAKE_SMI = """#!/bin/sh
echo "$@" > "$(dirname "$0")/args"
while true; do
  t=$(date +"%Y/%m/%d %H:%M:%S.%3N")
  echo "$t, 0, 1980, 3201, 300.00, 40, 1000, 99, 0x0000000000000000"
  echo "$t, 1, 1410, 3201, 700.00, 70, 2000, 99, 0x0000000000000004"
  sleep 0.05
done
"""


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    d = tmp_path / "bin"
    d.mkdir()
    (d / "nvidia-smi").write_text(FAKE_SMI)
    (d / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML: nvidia-smi it is
    return d


def _wait(cond, timeout=20.0):
    t = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < t
        time.sleep(0.05)


def test_sampler_falls_back_to_nvidia_smi(fake_smi):
    out = io.StringIO()
    with tm.Sampler(gpus=[0, 1], interval_ms=50, out=out) as s:
        _wait(lambda: len(s.samples) >= 4)
    assert s.used == "nvidia-smi"
    assert (fake_smi / "args").read_text().split() == [
        "--query-gpu=" + ",".join(tm.FIELDS), "--format=csv,noheader,nounits", "-lms", "50", "-i", "0,1"]
    written = tm.parse_smi_csv(out.getvalue())
    assert len(written) >= 4 and written == s.samples[: len(written)]
    summary = tm.summarise(s.samples)
    assert summary["gpus"]["1"]["throttled"] and not summary["gpus"]["0"]["throttled"]


class _FakeNvml(types.SimpleNamespace):
    pass


def _fake_pynvml(calls):
    class NVMLError(Exception):
        pass

    def not_supported(h):
        raise NVMLError("Not Supported")
    n = _FakeNvml(NVML_CLOCK_SM=1, NVML_CLOCK_MEM=2, NVML_TEMPERATURE_GPU=0, NVMLError=NVMLError)
    n.nvmlInit = lambda: calls.append("init")
    n.nvmlShutdown = lambda: calls.append("shutdown")
    n.nvmlDeviceGetCount = lambda: 2
    n.nvmlDeviceGetHandleByIndex = lambda i: f"h{i}"
    n.nvmlDeviceGetHandleByUUID = lambda u: {"GPU-aa": "h1"}[u]
    n.nvmlDeviceGetIndex = lambda h: int(h[1:])
    n.nvmlDeviceGetClockInfo = lambda h, kind: {1: 1980, 2: 3201}[kind] - (300 if h == "h1" and kind == 1 else 0)
    n.nvmlDeviceGetPowerUsage = lambda h: 350_500                      # mW
    n.nvmlDeviceGetTemperature = lambda h, sensor: 44
    n.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=3 * 2 ** 30)
    n.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=100)
    n.nvmlDeviceGetCurrentClocksThrottleReasons = not_supported
    return n


def test_sampler_reads_nvml_when_it_imports(monkeypatch):
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(calls))
    out = io.StringIO()
    with tm.Sampler(interval_ms=20, out=out) as s:
        _wait(lambda: len(s.samples) >= 4)
    assert s.used == "nvml" and calls == ["init", "shutdown"]
    a = s.samples[0]
    assert (a.gpu, a.sm_clock_mhz, a.mem_clock_mhz, a.power_w, a.temp_c, a.memory_used_mib, a.util_pct,
            a.throttle) == (0, 1980, 3201, 350.5, 44, 3072, 100.0, None)
    assert {x.gpu for x in s.samples} == {0, 1}
    written = tm.parse_smi_csv(out.getvalue())
    assert len(written) >= 4 and all(abs(w.time - x.time) < 1e-3 and
                                     w.sm_clock_mhz == x.sm_clock_mhz and w.gpu == x.gpu for w, x in zip(written, s.samples))
    assert tm.summarise(s.samples)["gpus"]["1"]["throttled"] is False  # its clock is steady, if lower


def test_nvml_asked_for_but_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(RuntimeError, match=r"moetrace\[telemetry\]"):
        tm.Sampler(source="nvml").start()


def test_standalone_runs_until_sigterm(fake_smi, tmp_path):
    out = tmp_path / "tel" / "gpu.csv"
    env = dict(os.environ, PYTHONPATH=str(Path(tm.__file__).resolve().parents[2]))
    p = subprocess.Popen([sys.executable, "-m", "moetrace.measure.telemetry", "--out", str(out), "--interval-ms", "50",
                          "--source", "nvidia-smi"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: out.exists() and len(tm.parse_smi_csv(out.read_text())) >= 4)
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
    s = tm.summarise_csv(out)
    assert set(s["gpus"]) == {"0", "1"} and s["throttled"]
    assert "from nvidia-smi" in p.stderr.read()


def test_config_gpus_follow_cuda_visible_devices():
    assert tm.config_gpus(2) == [0, 1] and tm.config_gpus(2, "") == [0, 1]
    assert tm.config_gpus(2, "4,5,6") == [4, 5]
    assert tm.config_gpus(1, "GPU-aa,GPU-bb") == ["GPU-aa"]
    with pytest.raises(ValueError, match="shows 1 GPUs, the config needs 2"):
        tm.config_gpus(2, "3")
    assert tm.smi_command(200, ["GPU-aa", 3])[-2:] == ["-i", "GPU-aa,3"]


def test_nvml_finds_a_gpu_by_uuid(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml([]))
    with tm.Sampler(gpus=["GPU-aa"], interval_ms=20) as s:
        _wait(lambda: len(s.samples) >= 1)
    assert {x.gpu for x in s.samples} == {1} and s.samples[0].sm_clock_mhz == 1680


def test_record_brief_names_the_throttled_runs():
    calm = tm.summarise([s for s in tm.parse_smi_csv(SMI) if not s.throttle or s.throttle == 1])
    hot = tm.summarise(tm.parse_smi_csv(SMI))
    runs = [{"telemetry": {"source": "nvidia-smi", **calm}}, {"telemetry": {"source": "nvidia-smi", **hot}}, {}]
    b = tm.telemetry_brief(runs, "attempts/x/telemetry.csv")
    assert b["source"] == "nvidia-smi" and b["runs_sampled"] == 2 and b["samples_path"] == "attempts/x/telemetry.csv"
    assert not calm["throttled"] and b["throttled_runs"] == [1] and b["why"] == sorted(set(b["why"]))
    assert b["sm_clock_mhz"][0] <= b["sm_clock_mhz"][1]

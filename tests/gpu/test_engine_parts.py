"""The offline engine install (benchmarks/gpu/engines): parts cut to a size, installed on the node in any
order, each payload as soon as all its chunks are there, checked by SHA-256, into the bundle's own
directory with its interpreter wrapper. Local payloads only (the real parts need PyPI; they ran on the
H200, tests/data/gpu/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu" / "engines"))
import build  # noqa: E402

INSTALL = ROOT / "benchmarks" / "gpu" / "engines" / "install.py"


def _wheel(stage: Path) -> Path:
    w = stage / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(w, "w") as z:
        z.writestr("tinypkg/__init__.py", "VALUE = 42\n")
        z.writestr("tinypkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n")
        z.writestr("tinypkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  "Tag: py3-none-any\n")
        z.writestr("tinypkg-1.0.dist-info/RECORD", "")
    return w


@pytest.fixture
def parts(tmp_path):
    stage = tmp_path / "stage"
    tree = tmp_path / "tree" / "eng"
    tree.mkdir(parents=True)
    (tree / "__init__.py").write_text("NAME = 'eng'\n")
    (tree / "big.bin").write_bytes(os.urandom(300_000))  # incompressible: forces several chunks
    stage.mkdir()
    build.tar_xz(tree.parent, ["eng"], stage / "tree.tar.xz", ["eng/big.bin"])
    lib = tmp_path / "lib.so"
    lib.write_bytes(os.urandom(200_000))
    build.xz(lib, stage / "eng__lib.so.xz")
    payloads = [build.payload(stage / "tree.tar.xz", "tree"), build.payload(stage / "eng__lib.so.xz", "file", "eng/lib.so"),
                build.payload(_wheel(stage), "wheel")]
    index = {"bundle": "eng-1_0", "engine": "eng", "version": "1.0", "into": "eng-1_0", "env": {"ENG_FLAG": "0"},
             "python": "3"}
    dirs = build.pack_parts(payloads, stage, tmp_path / "parts", index, max_bytes=96 * 1024)
    return dirs, lib


def _install(dirs, root):
    return subprocess.run([sys.executable, str(INSTALL), *map(str, dirs), "--root", str(root)],
                          capture_output=True, text=True)


def test_parts_respect_the_size_and_install_in_any_order(parts, tmp_path):
    dirs, lib = parts
    assert len(dirs) >= 3
    for d in dirs:
        data = sum(f.stat().st_size for f in d.iterdir() if f.name not in ("index.json", "install.py"))
        assert data <= 96 * 1024
        assert json.loads((d / "index.json").read_text())["parts"] == len(dirs)
    root = tmp_path / "engines"
    first = _install(list(reversed(dirs))[:-1], root)  # all but part 01
    assert first.returncode == 3 and "waiting for part(s) 01" in first.stdout, first.stdout + first.stderr
    last = _install(dirs[:1], root)
    assert last.returncode == 0, last.stdout + last.stderr
    site = root / "eng-1_0" / "site"
    assert (site / "eng" / "lib.so").read_bytes() == lib.read_bytes()
    assert (site / "eng" / "__init__.py").exists() and not (site / "eng" / "big.bin").exists()  # dropped
    py = root / "eng-1_0" / "bin" / "python"
    out = subprocess.run([str(py), "-c", "import os, eng, tinypkg; print(eng.NAME, tinypkg.VALUE, os.environ['ENG_FLAG'])"],
                         capture_output=True, text=True)
    assert out.stdout.split() == ["eng", "42", "0"], out.stderr
    assert json.loads((root / "eng-1_0" / "engine.json").read_text())["version"] == "1.0"
    again = _install(dirs, root)  # installed payloads are not installed twice
    assert again.returncode == 0 and "file eng__lib.so.xz" not in again.stdout


def test_a_damaged_chunk_is_refused(parts, tmp_path):
    dirs, _ = parts
    victim = next(f for d in dirs for f in sorted(d.iterdir()) if f.name.startswith("eng__lib.so.xz"))
    victim.write_bytes(b"\0" * victim.stat().st_size)
    r = _install(dirs, tmp_path / "engines")
    assert r.returncode == 1 and "does not match its SHA-256" in r.stderr


def test_releases_name_every_engine_the_gpu_sweep_uses():
    import tomllib
    releases = tomllib.loads((ROOT / "benchmarks" / "gpu" / "engines" / "releases.toml").read_text())
    assert {r["engine"] for r in releases.values()} == {"vllm", "sglang"}
    assert releases["sglang-fa3-0_4_5"]["into"] == "sglang-0_5_17"


def test_the_sweep_links_moetraces_own_dependencies_from_an_engine_bundle(tmp_path):
    """The node's image has neither msgspec nor orjson (the device's package list); the engine bundles
    install them for the node's Python, and the sweep's moetrace finds them there."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))
    import sweep
    engines = tmp_path / "engines"
    (engines / "vllm-0_25_0" / "site" / "nosuchpkg_x").mkdir(parents=True)
    (engines / "vllm-0_25_0" / "site" / "nosuchpkg_x" / "__init__.py").write_text("")
    site = sweep.moetrace_site(("nosuchpkg_x", "json", "nosuchpkg_y"), engines=engines, site=tmp_path / "ms")
    assert sorted(p.name for p in site.iterdir()) == ["nosuchpkg_x"]  # json: the node has it; y: nobody
    assert (site / "nosuchpkg_x").resolve() == (engines / "vllm-0_25_0" / "site" / "nosuchpkg_x").resolve()
    assert sweep.moetrace_site(("nosuchpkg_x",), engines=engines, site=site) == site  # again: no error


def test_both_engine_bundles_ship_orjson_for_the_measuring_client():
    """Issue 23 §2: the vLLM bundle lacked orjson and the client fell back to the stdlib json decoder."""
    import tomllib
    releases = tomllib.loads((ROOT / "benchmarks" / "gpu" / "engines" / "releases.toml").read_text())
    for bundle in ("vllm-0_25_0", "sglang-0_5_17"):
        assert any(w.split("==")[0] == "orjson" for w in releases[bundle]["wheels"]), bundle

"""Node-side installer for the parts that build.py made (stdlib only; runs on an offline node).

    python3 install.py PART_DIR [PART_DIR ...] --root /tmp/engines

Copies each part's chunks into ``<root>/<bundle>/.chunks``; every payload whose chunks have all
arrived (in this call or an earlier one) is joined, checked against its SHA-256 and installed into the
bundle's own site directory ``<root>/<into>/site``: trees extracted, large libraries decompressed to their
path, wheels installed with ``pip --no-index --no-deps --target``. Installed payloads are remembered in
``<root>/<into>/installed.json``; running it again is a no-op. It also writes ``<root>/<into>/bin/python``,
the engine's interpreter for moetrace's ``--engine-python``: the node's python3 with the site first on
``PYTHONPATH`` and the bundle's environment. Exit 0 when every payload of every bundle named is installed,
3 while parts are still missing (it says which), 1 on a bad chunk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(1 << 22):
            h.update(b)
    return h.hexdigest()


def install_wheels(wheels: list[Path], site: Path) -> bool:
    """One pip call for every wheel that is ready (a pip start costs about a second)."""
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--disable-pip-version-check", "--root-user-action=ignore", "--upgrade", "--target",
                        str(site), *map(str, wheels)])
    return r.returncode == 0


def install_payload(p: dict, src: Path, site: Path) -> None:
    if p["kind"] == "tree":
        with tarfile.open(src) as t:
            t.extractall(site, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(site)
    elif p["kind"] == "file":
        dst = site / p["target"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        with lzma.open(src) as f, open(dst, "wb") as g:
            shutil.copyfileobj(f, g, 1 << 24)
    else:
        raise SystemExit(f"install: unknown payload kind {p['kind']!r}")


def done(p: dict, chunks: Path, joined: Path, state: dict, state_path: Path) -> None:
    state[p["file"]] = p["sha256"]
    state_path.write_text(json.dumps(state, indent=1) + "\n")
    for c in p["chunks"]:
        (chunks / c).unlink(missing_ok=True)
    joined.unlink(missing_ok=True)


def wrapper(home: Path, site: Path, env: dict[str, str]) -> Path:
    exe = home / "bin" / "python"
    exe.parent.mkdir(parents=True, exist_ok=True)
    lines = ["#!/bin/sh", f"# the engine's interpreter: {sys.executable} with {site} first on PYTHONPATH",
             f'export PYTHONPATH="{site}${{PYTHONPATH:+:$PYTHONPATH}}"']
    lines += [f'export {k}="{v}"' for k, v in sorted(env.items())]
    lines += [f'exec "{sys.executable}" "$@"']
    exe.write_text("\n".join(lines) + "\n")
    exe.chmod(0o755)
    return exe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("parts", nargs="+", type=Path)
    ap.add_argument("--root", type=Path, default=Path("/tmp/engines"))
    a = ap.parse_args()
    indexes: dict[str, dict] = {}
    for part in a.parts:
        idx = json.loads((part / "index.json").read_text())
        indexes[idx["bundle"]] = idx
        chunks = a.root / idx["bundle"] / ".chunks"
        chunks.mkdir(parents=True, exist_ok=True)
        for f in part.iterdir():
            if f.name not in ("index.json", "install.py"):
                shutil.copy(f, chunks / f.name)
    missing_parts: dict[str, set[int]] = {}
    for name, idx in indexes.items():
        chunks = a.root / name / ".chunks"
        home = a.root / idx["into"]
        site = home / "site"
        site.mkdir(parents=True, exist_ok=True)
        state_path = home / "installed.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        # Trees first (a file payload or wheel may land inside a tree's directories).
        order = sorted(idx["payloads"], key=lambda p: {"tree": 0, "file": 1, "wheel": 2}[p["kind"]])
        wheels: list[tuple[dict, Path]] = []
        for p in order:
            if state.get(p["file"]) == p["sha256"]:
                continue
            absent = [c for c in p["chunks"] if not (chunks / c).exists()]
            if absent:
                missing_parts.setdefault(name, set()).update(p["part_of"][c] for c in absent)
                continue
            joined = chunks / (p["file"] + ".joined") if len(p["chunks"]) > 1 else chunks / p["chunks"][0]
            if len(p["chunks"]) > 1:
                with open(joined, "wb") as g:
                    for c in p["chunks"]:
                        with open(chunks / c, "rb") as f:
                            shutil.copyfileobj(f, g, 1 << 24)
            if sha256(joined) != p["sha256"]:
                print(f"install: {name}: {p['file']} does not match its SHA-256; rebuild the parts", file=sys.stderr)
                return 1
            if p["kind"] == "wheel":
                wheels.append((p, joined))
                continue
            t = time.monotonic()
            install_payload(p, joined, site)
            print(f"install: {name}: {p['kind']} {p['file']} ({p['size'] / 2**20:.1f} MiB, {time.monotonic() - t:.1f} s)")
            done(p, chunks, joined, state, state_path)
        if wheels:
            t = time.monotonic()
            if not install_wheels([w for _, w in wheels], site):
                print(f"install: {name}: pip could not install {len(wheels)} wheels (above: why)", file=sys.stderr)
                return 1
            print(f"install: {name}: {len(wheels)} wheels ({time.monotonic() - t:.1f} s)")
            for p, joined in wheels:
                done(p, chunks, joined, state, state_path)
        env = {}
        for other in indexes.values():
            if other["into"] == idx["into"]:
                env.update(other.get("env", {}))
        meta = home / "engine.json"
        old = json.loads(meta.read_text()) if meta.exists() else {}
        env = {**old.get("env", {}), **env}
        exe = wrapper(home, site, env)
        meta.write_text(json.dumps({"engine": idx["engine"], "version": idx["version"], "site": str(site),
                                    "python": str(exe), "env": env}, indent=1) + "\n")
    if missing_parts:
        for name, parts in sorted(missing_parts.items()):
            print(f"install: {name}: waiting for part(s) {', '.join(f'{k:02d}' for k in sorted(parts))}")
        return 3
    for name, idx in indexes.items():
        print(f"install: {name} complete: {a.root / idx['into'] / 'bin' / 'python'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

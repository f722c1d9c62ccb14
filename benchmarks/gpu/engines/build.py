"""Build the install parts of one engine release for an offline GPU node (run where PyPI is reachable).

    python3 benchmarks/gpu/engines/build.py vllm-0_25_0 sglang-0_5_17 sglang-fa3-0_4_5 \
        --out .gpu-parts --max-part-mib 56

Reads ``releases.toml`` beside this file. For each bundle: downloads the wheels for the node's
Python and platform (``--python-version``, manylinux x86-64), unpacks the ``unpack`` wheels into a
tree, drops what the node does not need, and turns the rest into payloads:

- ``tree.tar.xz``: the unpacked Python tree (installed by extracting it into the bundle's site);
- one ``<path>.xz`` per ``split`` file (large native libraries; extracted to that path in the site);
- one ``<dir>.tar.xz`` per ``split_trees`` directory;
- the ``wheels``, as they are (installed with ``pip --no-index --no-deps --target``).

Payloads larger than a part are cut into chunks; chunks are packed into numbered part directories of at
most ``--max-part-mib`` each (``<out>/<bundle>/partNN/``). Every part carries ``index.json``, the whole
bundle's list of payloads with their chunks, sizes and SHA-256, so the node-side ``install.py`` can install
each payload as soon as all its chunks have arrived, in whatever order the parts come.

xz, not zstd: Python's ``lzma`` is always on the node. Needs ``xz`` and ``pip`` here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

from install import sha256  # install.py sits beside this file and travels in every part

HERE = Path(__file__).resolve().parent
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64", "manylinux1_x86_64"]


def download(reqs: list[str], dest: Path, python_version: str, cache: Path) -> list[Path]:
    """Wheels for the node (``--no-deps``: every requirement is named in releases.toml)."""
    dest.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    abi = "cp" + python_version.replace(".", "")
    args = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
            "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
            "--abi", abi, "--abi", "abi3", "--abi", "none", "-d", str(cache)]
    for p in PLATFORMS + ["any"]:
        args += ["--platform", p]
    before = set(cache.glob("*.whl"))
    subprocess.run(args + reqs, check=True)
    got = []
    for req in reqs:
        name = req.split("==")[0].lower().replace("-", "_")
        version = req.split("==")[1] if "==" in req else None
        matches = [w for w in cache.glob("*.whl") if w.name.lower().split("-")[0] == name
                   and (version is None or w.name.split("-")[1] == version)]
        if not matches:
            raise SystemExit(f"build: no wheel for {req} in {cache}")
        got.append(max(matches, key=lambda w: (w in before, w.stat().st_mtime)))
    return got


def xz(src: Path, dst: Path) -> None:
    with open(dst, "wb") as out:
        subprocess.run(["nice", "-n", "10", "xz", "-6", "-T0", "-c", str(src)], stdout=out, check=True)


def tar_xz(root: Path, members: list[str], dst: Path, exclude: list[str]) -> None:
    raw = dst.with_suffix("")  # .tar
    excl = {root / e for e in exclude}

    def keep(ti: tarfile.TarInfo):
        p = root / ti.name
        if any(p == e or e in p.parents for e in excl):
            return None
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti
    with tarfile.open(raw, "w") as t:
        for m in members:
            t.add(root / m, arcname=m, filter=keep)
    xz(raw, dst)
    raw.unlink()


def build_bundle(name: str, spec: dict, out: Path, work: Path, python_version: str, max_bytes: int) -> list[Path]:
    stage = work / name / "payloads"
    tree = work / name / "tree"
    shutil.rmtree(work / name, ignore_errors=True)
    stage.mkdir(parents=True)
    tree.mkdir(parents=True)
    cache = work / "wheels"
    payloads: list[dict] = []

    def add(path: Path, kind: str, target: str | None = None) -> None:
        payloads.append(payload(path, kind, target))

    if spec.get("unpack"):
        members = set()
        for whl in download(spec["unpack"], stage, python_version, cache):
            with zipfile.ZipFile(whl) as z:
                z.extractall(tree)
                members |= {n.split("/")[0] for n in z.namelist()}
        for rel in spec.get("split", []):
            dst = stage / (rel.replace("/", "__") + ".xz")
            xz(tree / rel, dst)
            add(dst, "file", rel)
        for rel in spec.get("split_trees", []):
            dst = stage / (rel.replace("/", "__") + ".tar.xz")
            tar_xz(tree, [rel], dst, [])
            add(dst, "tree", None)
        dst = stage / "tree.tar.xz"
        tar_xz(tree, sorted(members), dst, spec.get("drop", []) + spec.get("split", []) + spec.get("split_trees", []))
        add(dst, "tree", None)
    for req, rel in spec.get("extract", []):
        (whl,) = download([req], stage, python_version, cache)
        with zipfile.ZipFile(whl) as z:
            z.extract(rel, tree)
        dst = stage / (rel.replace("/", "__") + ".xz")
        xz(tree / rel, dst)
        add(dst, "file", rel)
    if spec.get("wheels"):
        for whl in download(spec["wheels"], stage, python_version, cache):
            shutil.copy(whl, stage / whl.name)
            add(stage / whl.name, "wheel", None)
    shutil.rmtree(tree)
    index = {"bundle": name, "engine": spec["engine"], "version": spec["version"], "into": spec.get("into", name),
             "env": spec.get("env", {}), "python": python_version}
    dirs = pack_parts(payloads, stage, out / name, index, max_bytes)
    shutil.rmtree(work / name)
    return dirs


def payload(path: Path, kind: str, target: str | None = None) -> dict:
    """One payload's entry in index.json: ``kind`` is wheel, tree (a tar.xz extracted into the site)
    or file (an .xz decompressed to ``target``, a path inside the site)."""
    return {"file": path.name, "kind": kind, "target": target, "size": path.stat().st_size, "sha256": sha256(path)}


def pack_parts(payloads: list[dict], stage: Path, out: Path, index: dict, max_bytes: int) -> list[Path]:
    """Cut the payloads (files in ``stage``) into chunks of at most ``max_bytes``, pack the chunks
    first-fit-decreasing into ``out/partNN/`` and put the whole bundle's ``index.json`` and
    ``install.py`` in every part."""
    chunks = []
    for p in payloads:
        n = -(-p["size"] // max_bytes)
        p["chunks"] = [f"{p['file']}.{i:03d}" if n > 1 else p["file"] for i in range(n)]
        for i, c in enumerate(p["chunks"]):
            chunks.append((min(max_bytes, p["size"] - i * max_bytes), c, p, i))
    parts: list[list] = []
    for size, c, p, i in sorted(chunks, key=lambda x: -x[0]):
        for part in parts:
            if sum(x[0] for x in part) + size <= max_bytes:
                part.append((size, c, p, i))
                break
        else:
            parts.append([(size, c, p, i)])
    for k, part in enumerate(parts):
        for _, c, p, _ in part:
            p.setdefault("part_of", {})[c] = k + 1
    index = {**index, "parts": len(parts), "payloads": payloads}
    dirs = []
    shutil.rmtree(out, ignore_errors=True)
    for k, part in enumerate(parts):
        d = out / f"part{k + 1:02d}"
        d.mkdir(parents=True)
        for size, c, p, i in part:
            src = stage / p["file"]
            with open(src, "rb") as f, open(d / c, "wb") as g:
                f.seek(i * max_bytes)
                g.write(f.read(size))
        (d / "index.json").write_text(json.dumps(index, indent=1) + "\n")
        shutil.copy(HERE / "install.py", d / "install.py")
        dirs.append(d)
    return dirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", help="names in releases.toml")
    ap.add_argument("--out", type=Path, default=Path(".gpu-parts"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/moetrace-gpu-build"))
    ap.add_argument("--python-version", default="3.12", help="the node's Python (default 3.12)")
    ap.add_argument("--max-part-mib", type=float, default=56.0)
    a = ap.parse_args()
    releases = tomllib.loads((HERE / "releases.toml").read_text())
    for name in a.bundles:
        if name not in releases:
            raise SystemExit(f"build: no bundle {name!r} in releases.toml (known: {', '.join(releases)})")
    for name in a.bundles:
        dirs = build_bundle(name, releases[name], a.out, a.work, a.python_version, int(a.max_part_mib * 2**20))
        for d in dirs:
            size = sum(f.stat().st_size for f in d.iterdir())
            print(f"{d}  {size / 2**20:.1f} MiB  {len(list(d.iterdir())) - 2} files")


if __name__ == "__main__":
    main()

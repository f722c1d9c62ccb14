"""Open a page in a real headless Chromium (Debian's package): its console messages,
the report's status marker, and a screenshot."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]
_CONSOLE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)")


def require_chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        msg = f"{CHROMIUM} is missing (scripts/setup-system.d/chromium.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return CHROMIUM


@dataclass
class PageResult:
    dom: str
    console: list[str]        # every console message (log, error, CSP violation, uncaught exception)
    status: str | None        # <body data-report-status>
    charts: str | None        # <body data-charts> "drawn/total"
    screenshot: Path


def open_page(page: Path, work: Path, *, size: tuple[int, int] = (1200, 2000)) -> PageResult:
    exe = require_chromium()
    work.mkdir(parents=True, exist_ok=True)
    url = page.resolve().as_uri()
    common = [exe, *FLAGS, f"--window-size={size[0]},{size[1]}"]
    dom = subprocess.run([*common, f"--user-data-dir={work / 'profile-dom'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    png = work / "screenshot.png"
    shot = subprocess.run([*common, f"--user-data-dir={work / 'profile-shot'}", f"--screenshot={png}", url],
                          capture_output=True, text=True, timeout=120)
    assert png.exists(), f"no screenshot: {shot.stderr[-2000:]}"
    console = [m.group(1) for line in (dom.stderr + shot.stderr).splitlines() if (m := _CONSOLE.search(line))]
    body = re.search(r"<body[^>]*>", dom.stdout)
    attr = lambda name: (re.search(name + r'="([^"]*)"', body.group(0)).group(1)  # noqa: E731
                         if body and re.search(name + r'="([^"]*)"', body.group(0)) else None)
    return PageResult(dom=dom.stdout, console=console, status=attr("data-report-status"),
                      charts=attr("data-charts"), screenshot=png)


def count_colour(png: Path, rgb: tuple[int, int, int], tol: int = 6) -> int:
    """Pixels of about this colour in a screenshot (Pillow comes with matplotlib)."""
    from PIL import Image
    img = Image.open(png).convert("RGB")
    r0, g0, b0 = rgb
    return sum(n for n, (r, g, b) in img.getcolors(maxcolors=1 << 24)
               if abs(r - r0) <= tol and abs(g - g0) <= tol and abs(b - b0) <= tol)


def non_white_fraction(png: Path) -> float:
    from PIL import Image
    img = Image.open(png).convert("L")
    return sum(n for n, v in img.getcolors(256) if v < 240) / (img.width * img.height)


def hex_rgb(h: str) -> tuple[int, int, int]:
    h = h.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)

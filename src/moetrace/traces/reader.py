"""Stream the events of a Chrome/Kineto trace (``.json`` or ``.json.gz``) one at a time.

The whole file is never held: bytes are read (and gunzipped) in chunks, decoded to text
incrementally, and each element of ``traceEvents`` is cut out with ``json.JSONDecoder.raw_decode``
(the C scanner) straight from the chunk buffer. Top-level keys other than ``traceEvents``
(``deviceProperties``, ``distributedInfo``...) are parsed whole into a small header dict.

Every failure (missing file, bad gzip, truncation, invalid JSON, a file larger than the
decompressed-size limit) is raised as :class:`TraceError` with the file's path in the message.
"""

from __future__ import annotations

import codecs
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["DEFAULT_MAX_BYTES", "TraceError", "TraceStream"]

DEFAULT_MAX_BYTES = 4 << 30  # decompressed bytes read from one trace before refusing it
_CHUNK = 1 << 22  # compressed/plain bytes read at a time
_OUT_CHUNK = 1 << 23  # at most this many bytes out of zlib per call (bounds a gzip bomb's bite)
_MAX_VALUE = 64 << 20  # one event or header value may not exceed this (malformed input guard)
_GZIP_MAGIC = b"\x1f\x8b"

_skip_ws = re.compile(r"[ \t\n\r]*").match
_skip_sep = re.compile(r"[ \t\n\r,]*").match  # between array elements: whitespace and commas
_cat_field = re.compile(r'"cat":\s*"([^"\\]*)"').search
_KINETO_END = "\n  }"  # how PyTorch's Kineto writer closes every element of traceEvents
_LAYOUT_CHECKS = 64
_MAX_SCAN = 1 << 20  # no Kineto event end within this many characters: not Kineto's layout


class TraceError(Exception):
    """A trace that cannot be read; the message names the file and says why."""


def _gunzip(f: BinaryIO, path: Path) -> Iterator[bytes]:
    """Decompressed chunks of a (possibly multi-member) gzip stream; raises on corruption or truncation."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = b""
    while True:
        if not pending:
            pending = f.read(_CHUNK)
            if not pending:
                break
        try:
            out = d.decompress(pending, _OUT_CHUNK)
        except zlib.error as e:
            raise TraceError(f"{path}: corrupt gzip data ({e})") from None
        pending = d.unconsumed_tail
        if out:
            yield out
        if d.eof:  # end of one gzip member: another may follow
            rest = d.unused_data + pending
            pending = rest.lstrip(b"\x00")
            if not pending:
                pending = f.read(_CHUNK)
                if not pending:
                    return
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    if not d.eof:
        raise TraceError(f"{path}: truncated gzip file (compressed stream ended early)")


class TraceStream:
    """One pass over a trace file: ``header`` fills in as ``events()`` advances.

    >>> stream = TraceStream(path)
    >>> for ev in stream.events(): ...
    >>> stream.header.get("deviceProperties"), stream.bytes_read
    """

    def __init__(self, path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.header: dict[str, Any] = {}
        self.bytes_read = 0
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._chunks: Iterator[bytes] | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()
        self.skip_cats: frozenset[str] = frozenset()  # events of these categories may be skipped unread
        # When set: in Kineto's layout only complete ("ph": "X") events of these categories are read;
        # the reader jumps from one to the next with one regular-expression search (C speed) and
        # counts the events it passes in ``skipped``.
        self.want_cats: frozenset[str] | None = None
        self._want: re.Pattern | None = None
        self.skipped = 0
        self._layout: bool | None = None  # Kineto's layout: None until checked
        self._checked = 0

    # ---- bytes -> text ---------------------------------------------------------------------
    def _byte_chunks(self) -> Iterator[bytes]:
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise TraceError(f"{self.path}: cannot open ({e.strerror or e})") from None
        with f:
            if f.read(2) == _GZIP_MAGIC:
                f.seek(0)
                yield from _gunzip(f, self.path)
                return
            f.seek(0)
            size = self.path.stat().st_size
            if size > self.max_bytes:
                raise TraceError(f"{self.path}: {size} bytes is over the limit of {self.max_bytes} bytes "
                                 "(raise max_bytes to read it)")
            while chunk := f.read(_CHUNK):
                yield chunk

    def _fill(self) -> bool:
        """Append the next chunk of text to the buffer (dropping what was consumed); False at EOF."""
        if self._eof:
            return False
        if self._chunks is None:
            self._chunks = self._byte_chunks()
        for raw in self._chunks:
            self.bytes_read += len(raw)
            if self.bytes_read > self.max_bytes:
                raise TraceError(f"{self.path}: more than {self.max_bytes} bytes once decompressed "
                                 "(a gzip bomb, or raise max_bytes)")
            try:
                text = self._decoder.decode(raw)
            except UnicodeDecodeError as e:
                at = self.bytes_read - len(raw) + e.start
                raise TraceError(f"{self.path}: not UTF-8 text near byte {at}") from None
            if text:
                self._buf = self._buf[self._pos:] + text
                self._pos = 0
                return True
        self._eof = True
        return False

    # ---- JSON tokens -----------------------------------------------------------------------
    def _peek(self, skip=_skip_ws) -> str:
        """The next non-blank character ('' at end of file)."""
        while True:
            self._pos = skip(self._buf, self._pos).end()
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return ""

    def _expect(self, char: str, what: str) -> None:
        got = self._peek()
        if got != char:
            self._fail(f"expected {char!r} {what}, found {got!r}" if got else f"ended before {what}")
        self._pos += 1

    def _value(self) -> Any:
        """Decode one JSON value at the cursor, reading more text until it is complete."""
        self._peek()
        while True:
            try:
                value, end = self._json.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as e:
                if len(self._buf) - self._pos > _MAX_VALUE:
                    self._fail(f"invalid JSON ({e.msg})")
                if not self._fill():
                    self._fail(f"invalid or truncated JSON ({e.msg})")
                continue
            if end == len(self._buf) and not self._eof and self._buf[self._pos] not in "{[\"":
                # a number or literal may continue in the next chunk
                if self._fill():
                    continue
            self._pos = end
            return value

    def _fail(self, why: str) -> None:
        at = max(self.bytes_read - (len(self._buf) - self._pos), 0)  # approximate for non-ASCII text
        raise TraceError(f"{self.path}: {why} (near decompressed byte {at}); the file is truncated or corrupt")

    # ---- structure -------------------------------------------------------------------------
    def events(self) -> Iterator[dict[str, Any]]:
        """Yield each element of ``traceEvents`` (or of a top-level array) in file order."""
        first = self._peek()
        if first == "[":  # the JSON Array Format of Chrome traces
            self._pos += 1
            yield from self._array_items()
            self._end()
            return
        if first != "{":
            self._fail("not a JSON trace (expected '{' or '[')" if first else "empty file")
        self._pos += 1
        if self._peek() == "}":
            self._pos += 1
            self._end()
            return
        while True:
            key = self._value()
            if not isinstance(key, str):
                self._fail("expected a key")
            self._expect(":", f"after key {key!r}")
            if key == "traceEvents":
                self._expect("[", "to open traceEvents")
                yield from self._array_items()
            else:
                self.header[key] = self._value()
            sep = self._peek()
            if sep == ",":
                self._pos += 1
                continue
            if sep == "}":
                self._pos += 1
                break
            self._fail(f"expected ',' or '}}' after {key!r}" if sep else "the top-level object is not closed")
        self._end()

    def _array_items(self) -> Iterator[dict[str, Any]]:
        decode, json_error = self._json.raw_decode, json.JSONDecodeError
        while True:
            if self._layout is True:
                yield from self._kineto_items()
            c = self._peek(_skip_sep)
            if c == "]":
                self._pos += 1
                return
            if c == "":
                self._fail("traceEvents is not closed")
            start = self._pos
            try:  # the event lies whole inside the buffer
                ev, self._pos = decode(self._buf, start)
            except json_error:
                ev = self._value()
            else:
                if self._layout is None and c == "{":
                    self._check_layout(start, self._pos, ev)
            yield ev

    def _want_pattern(self) -> re.Pattern | None:
        if self.want_cats is not None and self._want is None:
            cats = "|".join(re.escape(c) for c in sorted(self.want_cats))
            self._want = re.compile(r'\{\n    "ph": "X",\s*"cat": "(?:' + cats + ')"')
        return self._want if self.want_cats is not None else None

    def _check_layout(self, start: int, end: int, ev: Any = None) -> None:
        """Does Kineto's layout say the event at ``start`` ends where it really ends (``end``)? And does
        the search for wanted events find this one if it is wanted (else every event is read)?"""
        want = self._want_pattern()
        if (want is not None and isinstance(ev, dict) and ev.get("ph") == "X" and ev.get("cat") in self.want_cats
                and not want.match(self._buf, start)):
            self.want_cats = None
        if self._buf.find(_KINETO_END, start, end) + len(_KINETO_END) != end:
            self._layout = False
        else:
            self._checked += 1
            if self._checked >= _LAYOUT_CHECKS:
                self._layout = True

    def _kineto_items(self) -> Iterator[dict[str, Any]]:
        """The events of a file in Kineto's layout (checked): each ends with newline, 2 spaces, '}'.

        Events whose category is in ``skip_cats`` are stepped over unread; returns at anything
        unexpected (the array's end, another layout), leaving the cursor for the general loop.
        """
        decode, skip, n = self._json.raw_decode, self.skip_cats, len(_KINETO_END)
        pattern = self._want_pattern()
        want = pattern.search if pattern is not None else None
        while True:
            buf, pos = self._buf, self._pos
            if want is not None:
                m = want(buf, pos)
                if m is None:  # none in the buffer: pass the complete events, read on
                    last = buf.rfind(_KINETO_END, pos)
                    if last >= 0:
                        self.skipped += buf.count(_KINETO_END, pos, last + n)
                        self._pos = last + n
                    if len(buf) - self._pos > _MAX_SCAN:
                        self._layout = False
                    if not self._layout or not self._fill():
                        return
                    continue
                if m.start() > pos:
                    self.skipped += buf.count(_KINETO_END, pos, m.start())
                pos = m.start()
            elif buf.startswith(",\n  {", pos) or buf.startswith(",\n{", pos):
                pos = buf.index("{", pos)
            elif self._peek(_skip_sep) == "{":
                buf, pos = self._buf, self._pos
            else:
                return
            end = buf.find(_KINETO_END, pos)
            if end < 0:
                self._pos = pos
                if len(buf) - pos > _MAX_SCAN:
                    self._layout = False
                if not self._layout or not self._fill():
                    return
                continue
            stop = end + n
            i = buf.find('"cat": "', pos, end)
            if i >= 0 and buf[i + 8:buf.find('"', i + 8, end)] in skip:
                self._pos = stop
                self.skipped += 1
                continue
            try:
                ev, real_end = decode(buf, pos)
            except json.JSONDecodeError as e:
                self._pos = pos
                self._fail(f"invalid JSON ({e.msg})")
            if real_end != stop:  # not Kineto's layout after all: let the general loop go on
                self._layout = False
            self._pos = real_end
            yield ev

    def _end(self) -> None:
        if self._peek():
            self._fail("unexpected text after the trace")

"""Stream the events of a Chrome/Kineto trace (``.json`` or ``.json.gz``) one at a time.

Two ways to read a trace, both in one pass with flat memory:

- :meth:`TraceStream.events`: every element of ``traceEvents``, decoded to a dict;
- :meth:`TraceStream.spans`: only the complete events (``"ph": "X"``) of the categories asked
  for, each as a tuple ``(cat, name, pid, tid, ts, dur, ext, device)`` (``ext`` is
  ``args["External id"]`` or None, ``device`` is ``args["device"]``, else ``pid``); the other
  events are counted in ``skipped``. This is what the analyzer reads.

The whole file is never held: bytes are read (and gunzipped) in chunks, decoded to text
incrementally, and each element of ``traceEvents`` is cut out with ``json.JSONDecoder.raw_decode``
(the C scanner) straight from the chunk buffer. Top-level keys other than ``traceEvents``
(``deviceProperties``, ``distributedInfo``...) are parsed whole into a small header dict.

**Kineto's layout.** PyTorch's profiler closes every event with a newline, two spaces and ``}``,
and writes a complete event's keys in one order (``ph, cat, name, pid, tid, ts, dur, args``).
Once the first 64 events show that layout, the reader stops decoding event by event. A buffer
(1 MiB) at a time, one regular expression (``_want_pattern``) finds the wanted events and captures
their fields (``_FIELDS``): ``spans`` builds its tuples from those groups (``_span_from_fields``)
without building dicts, and one ``str.count`` of the event ends counts the events it passed. An
event whose fields are not where the expression looks (a name with an escape, an ``External id``
that is not the first argument, a pid that is no integer...) is decoded whole instead, and the
first 64 wanted events are read both ways and compared; a disagreement turns the shortcut off.
Any other layout is read by the general loop, one decoded event at a time. What the shortcut does
assume: past those first events the writer does not change its key order (a wanted event written
``"cat"`` first would not be found, only counted). ``tests/traces/test_fast_path.py`` holds both
ways to the same spans and the same analysis on every real trace kept in the tests.

Every failure (missing file, bad gzip, truncation, invalid JSON, a file larger than the
decompressed-size limit) is raised as :class:`TraceError` with the file's path in the message.
"""

from __future__ import annotations

import codecs
import json
import re
import zlib
from collections.abc import Iterator
from itertools import chain, islice
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["DEFAULT_MAX_BYTES", "TraceError", "TraceStream"]

DEFAULT_MAX_BYTES = 4 << 30  # decompressed bytes read from one trace before refusing it
_CHUNK = 1 << 20  # compressed/plain bytes read at a time (1 MiB: a buffer's spans stay in the CPU's cache)
_OUT_CHUNK = 1 << 23  # at most this many bytes out of zlib per call (bounds a gzip bomb's bite)
_MAX_VALUE = 64 << 20  # one event or header value may not exceed this (malformed input guard)
_GZIP_MAGIC = b"\x1f\x8b"

_skip_ws = re.compile(r"[ \t\n\r]*").match
_skip_sep = re.compile(r"[ \t\n\r,]*").match  # between array elements: whitespace and commas
_KINETO_END = "\n  }"  # how PyTorch's Kineto writer closes every element of traceEvents
_LAYOUT_CHECKS = 64
_MAX_SCAN = 1 << 20  # no Kineto event end within this many characters: not Kineto's layout
_VERIFY = 64  # wanted events read both from _FIELDS' groups and by decoding them, before trusting the groups

# A wanted event's other fields in Kineto's layout, after its category, to the event's end:
#   , "name": "...", "pid": 0, "tid": 7,\n    "ts": 123.456, "dur": 7.8,
#   \n    "args": {\n      "External id": 42, ...\n    }\n  }
# (any blanks between items; args last, or none). Groups: name, pid, tid, ts, dur, the External id
# when it is the first argument, and the text of the other arguments (None without args).
# pid, tid and ts are taken up to their comma and given to int()/float(), which also say whether
# they are numbers (one loop over "not a comma" costs the regex engine far less than a character
# class); dur is the characters JSON numbers are made of. ``*+``/``++`` are possessive: never given
# back, which spares the engine the bookkeeping of backtracking.
_W = r"[ \t\n\r]*+"
_FIELDS = (rf',{_W}"name": "([^"]*+)",{_W}"pid": ([^,]++),{_W}"tid": ([^,]++),{_W}"ts": ([^,]++),'
           rf'{_W}"dur": (-?[0-9][0-9.eE+-]*+)'
           rf'(?:{_W},{_W}"args": \{{{_W}(?:"External id": (-?[0-9]++))?([^}}]*+)\}})?\n  \}}')
_DEVICE = re.compile(r'"device": (-?[0-9]+)[ \t\n\r]*(?:,|$)')


class _Ints(dict):
    """str -> int, remembered: pids, tids and devices repeat in every event."""

    def __missing__(self, text: str) -> int:
        value = self[text] = int(text)
        return value


def _span_from_fields(groups: tuple, ints: _Ints) -> tuple | None:
    """The span of a wanted event from the groups of its ``_FIELDS`` match; None where the event must be
    decoded instead: its fields are not all where ``_FIELDS`` looks, its name or arguments hold an escape
    (a backslash) or braces, or an argument "External id" or "device" is written another way. (With no
    backslash and no braces in the arguments' text, each ``"device":`` in it is the argument so named.)"""
    cat, name, pid, tid, ts, dur, ext, args = groups
    if ts is None or "\\" in name:
        return None
    try:
        pid = device = ints[pid]
        if args is not None:
            if "\\" in args or "{" in args:
                return None
            if ext is not None:
                ext = int(ext)
            elif '"External id"' in args:
                return None
            if '"device"' in args:
                d = _DEVICE.search(args)
                if d is None:
                    return None
                device = ints[d[1]]
        return cat, name, pid, ints[tid], float(ts), float(dur), ext, device
    except ValueError:  # not a number (a string, 1.0 for an int...): the decoder reads it
        return None


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
    """One pass over a trace file: ``header`` fills in as ``events()`` (or ``spans()``) advances.

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
        self.skip_cats: frozenset[str] = frozenset()  # events(): these categories are counted in skipped instead
        # When set: in Kineto's layout only complete ("ph": "X") events of these categories are read;
        # the reader jumps from one to the next with one regular-expression search (C speed) and
        # counts the events it passes in ``skipped``. ``spans(cats)`` sets it to ``cats``. Dropped
        # (None: every event decoded) when one of the first 64 events is wanted but written another way.
        self.want_cats: frozenset[str] | None = None
        self._want: re.Pattern | None = None
        self.skipped = 0
        self._layout: bool | None = None  # Kineto's layout: None until checked
        self._checked = 0
        self._cats: frozenset[str] | None = None  # spans(): the categories yielded, as spans not dicts
        self._fields_ok: bool | None = None  # spans may be read from _FIELDS' groups (checked on the first ones)
        self._ints = _Ints()

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
        return chain.from_iterable(self._walk())

    def spans(self, cats: frozenset[str]) -> Iterator[tuple]:
        """Yield ``(cat, name, pid, tid, ts, dur, ext, device)`` for each complete event (``"ph": "X"``)
        whose category is in ``cats``, in file order; every other element is counted in ``skipped``.

        ``name`` is ``str(event["name"])`` ("" if none), ``ts`` and ``dur`` are floats (``dur`` 0.0 if
        none), ``ext`` is ``args["External id"]`` (None if none) and ``device`` is ``args["device"]``,
        else ``pid``. An event without ``ts`` raises :class:`TraceError`.
        """
        self._cats = self.want_cats = frozenset(cats)
        return chain.from_iterable(self._walk())

    def _walk(self) -> Iterator[list]:
        """The top level: header keys into ``header``, and ``traceEvents``' items in lists (batches)."""
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

    def _array_items(self) -> Iterator[list]:
        """The general loop: decode each element (a batch of one); hands over to ``_kineto_items``
        once the layout is known."""
        decode, json_error = self._json.raw_decode, json.JSONDecodeError
        while True:
            if self._layout is True and self._want_pattern() is not None:
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
            if self._cats is not None:
                if self._wanted(ev):
                    yield [self._span_of(ev)]
                else:
                    self.skipped += 1
            elif isinstance(ev, dict) and ev.get("cat") in self.skip_cats:
                self.skipped += 1
            else:
                yield [ev]

    def _wanted(self, ev: Any) -> bool:
        return isinstance(ev, dict) and ev.get("ph") == "X" and isinstance(ev.get("cat"), str) \
            and ev["cat"] in self._cats

    def _span_of(self, ev: dict) -> tuple:
        """The span of a decoded event (see :meth:`spans`)."""
        try:
            args = ev.get("args") or {}
            pid = ev.get("pid")
            return (ev["cat"], str(ev.get("name", "")), pid, ev.get("tid"), float(ev["ts"]),
                    float(ev.get("dur", 0.0)), args.get("External id"), args.get("device", pid))
        except (AttributeError, KeyError, TypeError, ValueError) as e:  # no ts, a ts that is no number...
            raise TraceError(f"{self.path}: malformed event ({type(e).__name__}: {e}): {str(ev)[:200]}") from None

    def _want_pattern(self) -> re.Pattern | None:
        """The search for the wanted events in Kineto's layout: group 1 is the category, groups 2-9
        the rest of ``_FIELDS`` (None when the event is written some other way)."""
        if self.want_cats is not None and self._want is None:
            cats = "|".join(re.escape(c) for c in sorted(self.want_cats))
            self._want = re.compile(rf'\{{\n    "ph": "X",{_W}"cat": "({cats})"(?:{_FIELDS})?')
        return self._want if self.want_cats is not None else None

    def _check_layout(self, start: int, end: int, ev: Any = None) -> None:
        """Does Kineto's layout say the event at ``start`` ends where it really ends (``end``)? And does
        the search for wanted events find this one if it is wanted (else every event is decoded)?"""
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

    def _kineto_items(self) -> Iterator[list]:
        """The wanted events of a file in Kineto's layout (checked: each event ends with a newline, two
        spaces and '}'), a buffer at a time: one search finds them, the buffer's other events are
        counted in ``skipped``. Returns at the end of the events or at anything unexpected, with the
        cursor on an event boundary for the general loop."""
        n = len(_KINETO_END)
        while True:
            buf, pos = self._buf, self._pos
            limit = buf.rfind(_KINETO_END, pos) + n  # the end of the buffer's last whole event
            if limit < pos + n:
                if len(buf) - pos > _MAX_SCAN:  # no event end in sight: not Kineto's layout after all
                    self._layout = False
                if not self._layout or not self._fill():
                    return
                continue
            items = self._read_items(buf, pos, limit)
            if self._layout:  # read to the limit (else it stopped where the layout broke)
                self.skipped += buf.count(_KINETO_END, pos, limit) - len(items)
                self._pos = limit
            yield items
            if not self._layout or not self._fill():
                return

    def _read_items(self, buf: str, pos: int, limit: int) -> list:
        """The wanted events in ``buf[pos:limit]`` (whole events): spans (``spans()``) read from the
        groups of ``_FIELDS`` where they can be (see ``_span_from_fields``), else decoded; dicts
        (``events()``) decoded."""
        if self._cats is not None and self._fields_ok is None:
            self._fields_ok = self._check_fields(buf, pos, limit)
        out = []
        append, ints = out.append, self._ints
        fields = self._cats is not None and self._fields_ok
        for m in self._want.finditer(buf, pos, limit):
            if fields:
                span = _span_from_fields(m.groups(), ints)
                if span is not None:
                    append(span)
                    continue
            ev, end = self._decode_at(buf, m.start())
            if buf.rfind(_KINETO_END, m.start(), end) + len(_KINETO_END) != end:  # not Kineto's layout
                self.skipped += buf.count(_KINETO_END, pos, m.start()) - len(out)
                self._pos, self._layout = m.start(), False
                return out
            if self._cats is None:
                append(ev)
            elif self._wanted(ev):
                append(self._span_of(ev))
        return out

    def _check_fields(self, buf: str, pos: int, limit: int) -> bool:
        """Do the first wanted events (up to ``_VERIFY``) give the same spans read from the groups of
        ``_FIELDS`` as decoded? If not, every event is decoded."""
        for m in islice(self._want.finditer(buf, pos, limit), _VERIFY):
            span = _span_from_fields(m.groups(), self._ints)
            if span is not None:
                ev, _ = self._decode_at(buf, m.start())
                if not self._wanted(ev) or self._span_of(ev) != span:
                    return False
        return True

    def _decode_at(self, buf: str, start: int) -> tuple[Any, int]:
        try:
            return self._json.raw_decode(buf, start)
        except json.JSONDecodeError as e:
            self._pos = start
            self._fail(f"invalid JSON ({e.msg})")

    def _end(self) -> None:
        if self._peek():
            self._fail("unexpected text after the trace")

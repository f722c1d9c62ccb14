"""Stream the events of a Chrome/Kineto trace (``.json`` or ``.json.gz``) one at a time.

Two ways to read a trace, both in one pass with flat memory:

- :meth:`TraceStream.events`: every element of ``traceEvents``, decoded to a dict;
- :meth:`TraceStream.spans`: only the complete events (``"ph": "X"``) of the categories asked
  for, each as a :class:`Span` (``cat, name, pid, tid, ts, dur`` and the arguments ``ext``, the
  ``External id``, and ``device``, else ``pid``); the other events are counted in ``skipped``. This
  is what the analyzer reads.

The whole file is never held: bytes are read (and gunzipped, by ISA-L where the ``isal`` package is
installed, else zlib, in a thread that runs ahead of the reader) in chunks, decoded to text
incrementally, and each element of ``traceEvents`` is cut out with ``json.JSONDecoder.raw_decode``
(the C scanner) straight from the chunk buffer. Top-level keys other than ``traceEvents``
(``deviceProperties``, ``distributedInfo``...) are parsed whole into a small header dict.

**A buffer at a time.** After the first event, :meth:`TraceStream.spans` stops decoding event by
event: a buffer (1 MiB of bytes, never decoded to text) at a time, its whole events (up to the last
place where a '}' and a '{' are separated by a ',' and blanks: ``},\n{`` in Kineto's layout,
``}, {`` in what ``json.dump`` writes, ``},{`` compact) are decoded in one call by msgspec (a JSON
decoder in C) straight into :class:`Span` structs, which hold only the fields the analysis reads:
every other key (most of a kernel's arguments) is skipped in C, never made into a Python object.
Such a place may lie inside a string or between objects nested in an event; msgspec's decoding then
fails (the text up to it is no whole array of events). A buffer msgspec cannot read exactly as
``json`` would (that, a name that is no string, ``NaN``, a lone surrogate...) is read by the general
loop instead, one decoded event at a time, so the spans are the same either way
(``tests/traces/test_fast_path.py`` and ``test_json_layout.py`` hold both ways to the same spans and
the same analysis on every real trace kept in the tests, as written and re-serialized by ``json``).

Every failure (missing file, bad gzip, truncation, invalid JSON, a file larger than the
decompressed-size limit) is raised as :class:`TraceError` with the file's path in the message.
"""

from __future__ import annotations

import codecs
import json
import queue
import re
import threading
import zlib
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
from msgspec import UNSET

try:  # ISA-L's inflate: the same gzip streams, 3x as fast as zlib's (docs/traces.md, "Speed")
    from isal import isal_zlib as _inflate
except ImportError:  # a dependency; zlib where it is not installed
    _inflate = zlib

__all__ = ["DEFAULT_MAX_BYTES", "Args", "Span", "TraceError", "TraceStream"]

DEFAULT_MAX_BYTES = 4 << 30  # decompressed bytes read from one trace before refusing it
_CHUNK = 1 << 20  # compressed/plain bytes read at a time (1 MiB: a buffer's spans stay in the CPU's cache)
_OUT_CHUNK = 1 << 23  # at most this many bytes out of zlib per call (bounds a gzip bomb's bite)
_AHEAD = 2  # decompressed chunks the gunzip thread may hold ready before the reader takes them
_MAX_VALUE = 64 << 20  # one event or header value may not exceed this (malformed input guard)
_GZIP_MAGIC = b"\x1f\x8b"

_skip_ws = re.compile(r"[ \t\n\r]*").match
_skip_sep = re.compile(r"[ \t\n\r,]*").match  # between array elements: whitespace and commas
_skip_sep_bytes = re.compile(rb"[ \t\n\r,]*").match
_WS = frozenset(b" \t\n\r")
_MAX_GAP = 64  # more blanks than this around a ',' between '}' and '{': not taken for an event boundary
_MAX_SCAN = 1 << 20  # no event boundary within this many bytes: the general loop reads them
_TRIES = 3  # boundaries tried in a buffer, from its end, before the general loop reads it


class Args(msgspec.Struct, frozen=True, gc=False):
    """The arguments of an event that the analysis reads; msgspec skips the others unread.
    ``ext`` is ``args["External id"]`` (None if absent), ``device`` is UNSET if absent; both any JSON
    value, as ``json`` gives it (the analysis only compares and files them)."""

    ext: Any = msgspec.field(default=None, name="External id")
    device: Any = UNSET


_NO_ARGS = Args()


class Span(msgspec.Struct, kw_only=True, gc=False):
    """One event, the fields the analysis reads (see :meth:`TraceStream.spans`).

    Decoded by msgspec, ``pid``, ``tid`` and the arguments take any JSON value (a float pid is a
    float, as ``json`` gives it); the others are typed strictly (a name that is no string, a ts
    that is no number fails the whole buffer, which the general loop then reads, doing what
    :meth:`TraceStream.spans` says: ``str(name)``, ``float(ts)``...): what msgspec gives is what
    ``json`` would. Made by the general loop from a decoded dict, the fields hold whatever JSON gave,
    as the analysis has always received them. ``gc=False``: no cycles can run through an event, so
    the cycle collector need not track the millions of them a trace makes. The fields are in the
    order Kineto writes the keys: msgspec looks for each key from the field after the last one
    found, so each is found at the first try (7% of the decoding).
    """

    ph: str = ""
    cat: str | None = None
    name: str = ""
    pid: Any = None
    tid: Any = None
    ts: float
    dur: float = 0.0
    args: Args = _NO_ARGS

    @property
    def ext(self) -> Any:
        """``args["External id"]``, None if absent."""
        return self.args.ext

    @property
    def device(self) -> Any:
        """``args["device"]``, else ``pid``."""
        device = self.args.device
        return self.pid if device is UNSET else device


_decode_spans = msgspec.json.Decoder(list[Span]).decode


def _blank_before(buf: bytearray, at: int, start: int) -> int:
    """The index of the last byte before ``at`` (not before ``start``) that is no blank; -1 if there is
    none within ``_MAX_GAP`` bytes."""
    j = at - 1
    while j >= start and buf[j] in _WS:
        if at - j > _MAX_GAP:
            return -1
        j -= 1
    return j if j >= start else -1


def _last_boundary(buf: bytearray, start: int, lo: int, end: int | None = None) -> int:
    """The end of the last element of ``buf[start:end]`` that another follows, as far as a look at
    bytes can tell: the index after a '}' that a ',' separates from a '{' (blanks around the ','
    allowed), the '{' at or after ``lo`` (earlier ones were looked at before); -1 if there is none.

    Whatever the layout (Kineto's ``},\n  {``, ``json.dump``'s ``}, {``, compact ``},{``). It may be
    no boundary at all (inside a string, or between objects of an array inside an event): the
    decoding of the events up to it says (``_decode_events`` fails unless it is one)."""
    pos = len(buf) if end is None else end
    while (pos := buf.rfind(b"{", max(start, lo), pos)) > start:
        comma = _blank_before(buf, pos, start)
        if comma > start and buf[comma] == 0x2C:  # ","
            close = _blank_before(buf, comma, start)
            if close >= start and buf[close] == 0x7D:  # "}"
                return close + 1
    return -1


def _decode_events(buf: bytearray, start: int, limit: int) -> list[Span] | bool | None:
    """msgspec's reading of the whole events ``buf[start:limit]`` as one JSON array, or None where it
    cannot read them as ``json`` would. '[' is written over the separator before them and ']' over
    the byte after them (both put back after): the text is not copied.

    False where ``limit`` is not the end of an element of the array (or None, where msgspec finds
    something else wrong first): ``buf[start:limit]`` is then a piece of valid JSON cut inside a
    string (the ']' is in the string, which stays open) or inside an element (one ']' cannot close
    both it and the array), and msgspec finds its text truncated."""
    if start == 0:  # no separator before the first event: the general loop reads it
        return None
    before = buf[start - 1]
    buf[start - 1] = 0x5B  # "["
    appended = limit == len(buf)
    after = 0 if appended else buf[limit]
    if appended:
        buf.append(0x5D)  # "]"
    else:
        buf[limit] = 0x5D
    try:
        with memoryview(buf)[start - 1:limit + 1] as events:
            return _decode_spans(events)
    except msgspec.MsgspecError as e:  # a field of another type, NaN, a lone surrogate, an event cut open...
        return False if "truncated" in str(e) else None
    finally:
        buf[start - 1] = before
        if appended:
            del buf[-1]
        else:
            buf[limit] = after


def _decode_buffer(buf: bytearray, start: int, limit: int) -> tuple[list[Span] | None, int]:
    """The spans of ``buf[start:limit]`` and the limit read; where ``limit`` was no boundary (a '}, {'
    in a string or between objects nested in an event), those of the whole events before the
    boundary before it (up to ``_TRIES`` boundaries are tried). None where msgspec cannot read them,
    with -1 where the buffer holds no boundary but ones that were none."""
    for _ in range(_TRIES):
        spans = _decode_events(buf, start, limit)
        if spans is not False:
            return spans, limit
        if (limit := _last_boundary(buf, start, 0, limit - 1)) < 0:
            break
    return None, limit


class TraceError(Exception):
    """A trace that cannot be read; the message names the file and says why."""


def _gunzip(f: BinaryIO, path: Path) -> Iterator[bytes]:
    """Decompressed chunks of a (possibly multi-member) gzip stream; raises on corruption or truncation."""
    d = _inflate.decompressobj(16 + zlib.MAX_WBITS)
    pending = b""
    while True:
        if not pending:
            pending = f.read(_CHUNK)
            if not pending:
                break
        try:
            out = d.decompress(pending, _OUT_CHUNK)
        except (zlib.error, _inflate.error) as e:
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
            d = _inflate.decompressobj(16 + zlib.MAX_WBITS)
    if not d.eof:
        raise TraceError(f"{path}: truncated gzip file (compressed stream ended early)")


def _gunzip_ahead(f: BinaryIO, path: Path) -> Iterator[bytes]:
    """``_gunzip``'s chunks, decompressed in a thread ahead of the reader: zlib lets go of the GIL
    while it inflates, so with a second core free its decompression costs the reader next to no time
    (ISA-L's ``isal_zlib`` keeps the GIL: with it the thread overlaps the file's reads, and the gain
    is ISA-L's speed, 3x zlib's). At most ``_AHEAD`` chunks wait (and one is being made); they are
    handed out in pieces of ``_CHUNK`` (whole, they made the reader's buffers 8 MiB: 10% slower,
    30 MB more memory). An error in the thread is raised here. Closing this generator stops the
    thread before ``f`` is closed."""
    ready: queue.Queue = queue.Queue(_AHEAD)
    stop = threading.Event()

    def work() -> None:
        try:
            for chunk in _gunzip(f, path):
                ready.put(chunk)
                if stop.is_set():
                    return
            ready.put(None)
        except BaseException as e:  # handed to the reader, raised there
            ready.put(e)

    thread = threading.Thread(target=work, name=f"gunzip {path.name}", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            for i in range(0, len(item), _CHUNK):  # buffers of 1 MiB, as from a plain file: their spans stay in cache
                yield item[i:i + _CHUNK]
    finally:
        stop.set()
        while thread.is_alive():  # unblock a put, then let the thread see the stop
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(0.01)


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
        self._chunks: Iterator[bytes | bytearray] | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()
        self.skip_cats: frozenset[str] = frozenset()  # events(): these categories are counted in skipped instead
        self.skipped = 0
        self._offset = 0  # characters dropped from the front of the buffer: _offset + _pos only grows
        self._cats: frozenset[str] | None = None  # spans(): the categories yielded, as spans not dicts
        self._slow_until = 0  # spans(): the general loop reads up to here (events msgspec could not read)
        self._buffers = 0  # spans(): buffers msgspec read

    # ---- bytes -> text ---------------------------------------------------------------------
    def _byte_chunks(self) -> Iterator[bytes | bytearray]:
        """The file's bytes, gunzipped, a chunk at a time. A plain file's chunks are read into one
        buffer again and again (each chunk is valid until the next is asked for): a fresh 1 MiB
        bytes object per read cost the kernel's page faults, 0.3 s of system time on 522 MB."""
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise TraceError(f"{self.path}: cannot open ({e.strerror or e})") from None
        with f:
            if f.read(2) == _GZIP_MAGIC:
                f.seek(0)
                yield from _gunzip_ahead(f, self.path)
                return
            f.seek(0)
            size = self.path.stat().st_size
            if size > self.max_bytes:
                raise TraceError(f"{self.path}: {size} bytes is over the limit of {self.max_bytes} bytes "
                                 "(raise max_bytes to read it)")
            chunk = bytearray(_CHUNK)
            while n := f.readinto(chunk):
                yield chunk if n == len(chunk) else chunk[:n]

    def _raw(self) -> bytes | bytearray | None:
        """The next chunk of the file's (gunzipped) bytes, counted against ``max_bytes``; None at EOF.
        Valid until the next call (see ``_byte_chunks``)."""
        if self._eof:
            return None
        if self._chunks is None:
            self._chunks = self._byte_chunks()
        raw = next(self._chunks, None)
        if raw is None:
            self._eof = True
            return None
        self.bytes_read += len(raw)
        if self.bytes_read > self.max_bytes:
            raise TraceError(f"{self.path}: more than {self.max_bytes} bytes once decompressed "
                             "(a gzip bomb, or raise max_bytes)")
        return raw

    def _text(self, raw: bytes | bytearray) -> str:
        try:
            return self._decoder.decode(raw)
        except UnicodeDecodeError as e:
            at = self.bytes_read - len(raw) + e.start
            raise TraceError(f"{self.path}: not UTF-8 text near byte {at}") from None

    def _fill(self) -> bool:
        """Append the next chunk of text to the buffer (dropping what was consumed); False at EOF."""
        while (raw := self._raw()) is not None:
            text = self._text(raw)
            if text:
                self._buf = self._buf[self._pos:] + text
                self._offset += self._pos
                self._pos = 0
                return True
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

    def spans(self, cats: frozenset[str]) -> Iterator[Span]:
        """Yield a :class:`Span` for each complete event (``"ph": "X"``) whose category is in ``cats``,
        in file order; every other element is counted in ``skipped``.

        ``name`` is ``str(event["name"])`` ("" if none), ``ts`` and ``dur`` are floats (``dur`` 0.0 if
        none), ``ext`` is ``args["External id"]`` (None if none) and ``device`` is ``args["device"]``,
        else ``pid``. An event without ``ts`` raises :class:`TraceError`.
        """
        self._cats = frozenset(cats)
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
        """The general loop: decode each element (a batch of one); for ``spans()``, hands over to
        ``_buffer_spans`` after the first element, wherever the loop is not finishing a buffer that
        msgspec could not read."""
        decode, json_error = self._json.raw_decode, json.JSONDecodeError
        first = True
        while True:
            if self._cats is not None and not first and self._offset + self._pos >= self._slow_until:
                yield from self._buffer_spans()
            first = False
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

    def _span_of(self, ev: dict) -> Span:
        """The span of a decoded event (see :meth:`spans`)."""
        try:
            args = ev.get("args") or {}
            return Span(ph="X", cat=ev["cat"], name=str(ev.get("name", "")), pid=ev.get("pid"), tid=ev.get("tid"),
                        ts=float(ev["ts"]), dur=float(ev.get("dur", 0.0)),
                        args=Args(args.get("External id"), args.get("device", UNSET)))
        except (AttributeError, KeyError, TypeError, ValueError) as e:  # no ts, a ts that is no number...
            raise TraceError(f"{self.path}: malformed event ({type(e).__name__}: {e}): {str(ev)[:200]}") from None

    def _buffer_spans(self) -> Iterator[list[Span]]:
        """The wanted events, a buffer at a time: msgspec decodes the buffer's whole events (up to its
        last event boundary, ``_last_boundary``) in one call, the ones not wanted are counted in
        ``skipped``. Returns at the end of the events, or at a buffer msgspec cannot read
        (``_slow_until``: the general loop reads that one, then hands over again), the unread text
        handed back to the general loop's buffer.

        Bytes, not text: msgspec reads UTF-8 itself, so the text is neither decoded nor copied (each
        1 MiB string made and freed costs the kernel's page faults too); chunks that are not ASCII are
        still checked by the UTF-8 decoder. No layout is assumed: a boundary found in the bytes that
        is none (inside a string, between objects nested in an event) makes the decoding fail, and the
        one before it is tried (``_decode_buffer``); past the end of the array, or where msgspec cannot
        read the events, the general loop reads that buffer."""
        buf = self._unread_bytes()
        cats, lo = self._cats, 0
        while True:
            start = _skip_sep_bytes(buf).end()
            limit = _last_boundary(buf, start, lo)
            spans, end = _decode_buffer(buf, start, limit) if limit >= 0 else (None, -1)
            if end < 0:  # no boundary in the buffer (none but ones that were none): more bytes
                raw = self._raw() if len(buf) - start <= _MAX_SCAN else None
                if raw is None:  # the end of the file, or no boundary in sight: the general loop reads on
                    self._hand_back(buf, start)
                    return
                if not raw.isascii() or self._decoder.getstate()[0]:
                    self._text(raw)  # the UTF-8 check (its state follows buf's last bytes)
                lo = len(buf)  # only the new bytes may hold a '{' not looked at yet
                buf += raw
                continue
            if spans is None:
                self._hand_back(buf, start, limit)
                return
            wanted = [s for s in spans if s.cat in cats and s.ph == "X"]
            self.skipped += len(spans) - len(wanted)
            del buf[:end]  # cheap: a bytearray drops its front by moving its start
            lo = 0
            self._buffers += 1
            yield wanted

    def _unread_bytes(self) -> bytearray:
        """The text not read yet, back to bytes, with the bytes the UTF-8 decoder holds (the start of a
        character cut by a chunk's end): ``_buffer_spans`` goes on from there."""
        buf = bytearray(self._buf[self._pos:].encode())
        buf += self._decoder.getstate()[0]
        self._offset += len(self._buf)
        self._buf, self._pos = "", 0
        return buf

    def _hand_back(self, buf: bytearray, start: int, slow_to: int | None = None) -> None:
        """Give ``buf[start:]`` back to the general loop as text; it reads up to ``slow_to`` (None: all of
        it) itself before handing over again."""
        self._decoder.reset()
        self._buf, self._pos = self._text(buf[start:]), 0
        chars = len(self._buf) if slow_to is None else len(buf[start:slow_to].decode())
        self._slow_until = self._offset + chars

    def _end(self) -> None:
        if self._peek():
            self._fail("unexpected text after the trace")

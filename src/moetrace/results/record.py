"""The attempt record: the one contract every stage shares.

An attempt (one config, one batch size, run or failed) is one :class:`Record`, written once as
``records/NNNNNNNN.json`` by the results store and read by every report. The runner and the Slurm
driver build records here; the store's legacy import makes them from the spec's old view files;
``report/data.py``, ``plan/check.py`` and the Slurm executor read them through this module.

A record's parts (each a dataclass whose fields are typed as their JSON values, None when absent:
:meth:`Part.has` tells an absent key from a null one; what the parts do not name is kept in ``extra``):

- identity: ``schema`` (:data:`SCHEMA`), ``attempt_id``, ``model``, ``config``, ``key``
  (:func:`result_key`: ``Model::config`` plus :func:`workload_suffix` off the spec's
  :data:`DEFAULT_WORKLOAD`; :func:`split_key`, :func:`key_workload` read it back), ``status``
  (``success`` | ``failure``), ``role``, ``started_at`` and ``finished_at`` (:func:`now_iso`);
  ``seq`` and ``record_path`` are added by the store.
- :class:`Workload`: batch size, input and output length, repetitions, seed (successes only; a
  failure's workload is in its key or its ``options``: :meth:`Record.workload_triple`).
- :class:`Metrics`: the aggregate over repetitions (the spec's latency, throughputs and ITL, TTFT,
  percentiles, floors and efficiencies, ``delivery``); :class:`Run`: one repetition's metrics and
  token times.
- :class:`Profile`: the traces filed per stage (``extend``/``decode`` and ``*_all``), the time
  breakdown, the floor decomposition, and why profiling failed (``error``/``analysis_error``).
- :class:`Error`: a failure's class (``type``, see ``classify.py``), message, evidence, phase, log.
- :class:`EngineInfo`: which engine, how it was launched (command, env), its version, what it chose
  as its server log says (``resolved``: MoE and attention backend...), and :class:`Stop`: how it was
  stopped.
- the rest (``config_detail``, ``options``, ``host``, ``phases``, ``plan``, ``plan_check``,
  ``slurm``...) as plain JSON values.

Writing: :meth:`Record.new` (the current schema; keys in the order given, parts given as dicts
parsed) and :meth:`Record.copy` (the runner's base record, once per batch size). A field given,
even as None, or set later is written; one never given is not, so no ``null`` appears that the
writer did not write.

Reading: attributes (``rec.metrics.itl_ms``); ``rec.the_metrics`` and the other ``the_*`` give an
empty part for an absent one, so readers need no defensive ``.get`` chains;
:meth:`Record.workload_triple`, :meth:`Profile.traces`, :meth:`Metrics.numbers` answer the
questions reports ask. Parts can also be read like the dicts they were
(``rec["metrics"]["itl_ms"]``) for code written against the JSON shape.

JSON: :meth:`Record.from_dict` keeps every key it does not know (in ``extra``) and the order keys
came in, so ``Record.from_dict(d).to_dict() == d`` with the same key order, and a record loaded
and written again is byte for byte the file it came from (``tests/results/test_record.py``). The
JSON is unchanged since records began, so :data:`SCHEMA` is still 1. ``json_default`` writes a
record given to ``json.dumps``.

A record is flattened once, for the spec's two view files and the report's rows alike, in
``results/flat.py`` (:func:`~moetrace.results.flat.flat`, ``success_entry``, ``failure_entry``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

from ..text import num

__all__ = ["SCHEMA", "DEFAULT_WORKLOAD", "DEFAULT_BATCH", "DEFAULT_INPUT_LEN", "DEFAULT_OUTPUT_LEN", "now_iso",
           "result_key", "workload_suffix", "split_key", "key_workload", "Record", "Workload", "Metrics", "Run",
           "Profile", "Error", "EngineInfo", "Stop", "json_default", "Part"]

SCHEMA = 1  # the JSON has not changed since records began; bump when it does
DEFAULT_BATCH, DEFAULT_INPUT_LEN, DEFAULT_OUTPUT_LEN = 1, 4096, 512
DEFAULT_WORKLOAD = (DEFAULT_BATCH, DEFAULT_INPUT_LEN, DEFAULT_OUTPUT_LEN)  # the spec's workload
_SUFFIX_RE = re.compile(r"::bs(\d+)_in(\d+)_out(\d+)$")


def now_iso() -> str:
    """Local time to the second, as the spec's ``last_updated``."""
    return _dt.datetime.now().replace(microsecond=0).isoformat()


def result_key(model: str, config: str, workload_suffix: str = "") -> str:
    return f"{model}::{config}{workload_suffix}"


def workload_suffix(batch: int, input_len: int, output_len: int) -> str:
    """Result keys are the spec's ``Model::config`` for the spec's workload; another
    workload gets its own key so that it never overwrites the spec's numbers."""
    if (batch, input_len, output_len) == DEFAULT_WORKLOAD:
        return ""
    return f"::bs{batch}_in{input_len}_out{output_len}"


def split_key(key: str) -> tuple[str, str, str]:
    """(model, config, workload suffix without its ``::``; "" for the spec's workload)."""
    model, _, rest = key.partition("::")
    config, _, suffix = rest.partition("::")
    return model, config, suffix


def key_workload(key: str) -> tuple[int, int, int] | None:
    """The workload a key's suffix names, or None for a key without one."""
    m = _SUFFIX_RE.search(key)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


_MISSING = object()  # a key the part does not have (to_dict)


@dataclass(eq=False)
class _Part(MutableMapping):
    """A JSON object with named fields, the keys it does not name in ``extra``, and the order and
    presence of its keys: a field given (even as None) or set later is written; one left out is
    not, and reads as None (every field's default: its type is its JSON value's, or None).
    :meth:`has` tells the two apart. Reads like the dict it was (``part["k"]``, ``part.get("k")``)
    for the tests and other readers written against the JSON shape; the package reads attributes."""

    _parts: ClassVar[dict[str, type]] = {}      # field -> part type of its value
    _lists: ClassVar[dict[str, type]] = {}      # field -> part type of its list's items
    extra: dict[str, Any] = field(default_factory=dict, repr=False, kw_only=True)

    def __new__(cls, *args: Any, **kwargs: Any):
        """Notes which fields the constructor is given (positionally or by name), before the
        dataclass's ``__init__`` fills the others with None: those are the keys the JSON has."""
        obj = super().__new__(cls)
        object.__setattr__(obj, "_given", frozenset(cls._order()[:len(args)]) | kwargs.keys())
        return obj

    def __post_init__(self) -> None:
        given = self.__dict__.pop("_given", frozenset())
        keys = [name for name in self._order() if name in given]
        keys += [k for k in self.extra if k not in keys]
        object.__setattr__(self, "_keys", keys)

    def has(self, name: str) -> bool:
        """Whether the JSON has this key (a field given or set, even as None, or an extra key)."""
        return name in self._keys or name in self.extra

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        keys = self.__dict__.get("_keys")
        if keys is not None and name != "extra" and name in self._names() and name not in keys:
            keys.append(name)

    @classmethod
    def _order(cls) -> tuple[str, ...]:
        order = cls.__dict__.get("_order_cache")
        if order is None:
            order = tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")
            cls._order_cache = order  # type: ignore[attr-defined]
        return order

    @classmethod
    def _names(cls) -> frozenset[str]:
        names = cls.__dict__.get("_names_cache")
        if names is None:
            names = frozenset(f.name for f in dataclasses.fields(cls) if f.name != "extra")
            cls._names_cache = names  # type: ignore[attr-defined]
        return names

    # ----- JSON
    @classmethod
    def from_dict(cls, d: Any):
        if isinstance(d, cls):
            return d
        if isinstance(d, _Part):
            d = d.to_dict()
        if not isinstance(d, dict):
            d = {}
        names = cls._names()
        obj = cls(**{k: cls._decode(k, v) for k, v in d.items() if k in names},
                  extra={k: v for k, v in d.items() if k not in names})
        obj._keys = list(d)
        return obj

    @classmethod
    def of(cls, d: Any):
        """The value as this part: itself, parsed from a dict, or empty."""
        return cls.from_dict(d)

    @classmethod
    def _decode(cls, k: str, v: Any) -> Any:
        if k in cls._parts and isinstance(v, dict):
            return cls._parts[k].from_dict(v)
        if k in cls._lists and isinstance(v, list):
            return [cls._lists[k].from_dict(x) if isinstance(x, dict) else x for x in v]
        return v

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for k in self._keys:
            v = getattr(self, k) if k in self._names() else self.extra.get(k, _MISSING)
            if v is not _MISSING:
                out[k] = _encode(v)
        for k, v in self.extra.items():
            if k not in out:
                out[k] = _encode(v)
        return out

    def copy(self, **changes: Any):
        new = type(self).from_dict(self.to_dict())
        for k, v in changes.items():
            new.set(k, v)
        return new

    def set(self, k: str, v: Any) -> None:
        """Sets a key by name: a field (a part given as a dict is parsed), else an extra key."""
        if k in self._names():
            setattr(self, k, self._decode(k, v))
        else:
            self.extra[k] = v
            if k not in self._keys:
                self._keys.append(k)

    # ----- the dict it was
    def __setitem__(self, k: str, v: Any) -> None:
        self.set(k, v)

    def __getitem__(self, k: str) -> Any:
        if k in self._names() and k in self._keys:
            return getattr(self, k)
        if k in self.extra:
            return self.extra[k]
        raise KeyError(k)

    def __delitem__(self, k: str) -> None:
        if k not in self:
            raise KeyError(k)
        if k in self._names():
            object.__setattr__(self, k, None)
        self.extra.pop(k, None)
        self._keys.remove(k)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.to_dict()))

    def __len__(self) -> int:
        return len(self.to_dict())

    def __contains__(self, k: object) -> bool:
        return k in self._keys or k in self.extra

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (_Part, dict)):
            return self.to_dict() == (other.to_dict() if isinstance(other, _Part) else other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


#: the part machinery, for other typed JSON files of the results directory (the Slurm job registry)
Part = _Part


def json_default(o: Any) -> Any:
    """``json.dumps(..., default=json_default)``: a record or part as its JSON object."""
    return o.to_dict() if isinstance(o, _Part) else str(o)


def _encode(v: Any) -> Any:
    if isinstance(v, _Part):
        return v.to_dict()
    if isinstance(v, list):
        return [_encode(x) for x in v]
    return v


@dataclass(eq=False)
class Workload(_Part):
    batch_size: int | None = None
    input_len: int | None = None
    output_len: int | None = None
    repeat: int | None = None
    launches: int | None = None  # engine launches measured (--launches), each ``repeat`` runs
    launches_stopped: str | None = None  # --launches auto: why it stopped ("interval 3.1% <= 5%", "cap 5 reached, ...")
    seed: int | None = None
    prompt_nonce: str | None = None


@dataclass(eq=False)
class Metrics(_Part):
    """The aggregate over repetitions; every other number (percentiles, floors, efficiencies,
    the server's own timing) is in ``extra`` under its name, read with :meth:`numbers`."""

    latency_s: float | None = None
    input_throughput_tok_per_s: float | None = None
    output_throughput_tok_per_s: float | None = None
    itl_ms: float | None = None
    ttft_ms: float | None = None
    delivery: dict[str, Any] | None = None  # bursts and stalls of the stream (measure/metrics.py)

    def numbers(self) -> dict[str, float]:
        """Every finite number, by name."""
        return {k: float(v) for k, v in self.to_dict().items() if num(v) is not None}


@dataclass(eq=False)
class Run(_Part):
    _parts: ClassVar[dict[str, type]] = {"metrics": Metrics}
    metrics: Metrics | None = None
    token_times: list[Any] | None = None
    launch: int | None = None  # which engine launch measured it (1, 2, ...), with --launches above 1


@dataclass(eq=False)
class Profile(_Part):
    enabled: bool | None = None
    steps: int | None = None
    extend: str | None = None
    decode: str | None = None
    breakdown: dict[str, Any] | None = None
    decomposition: dict[str, Any] | None = None
    step_times: dict[str, Any] | None = None
    error: str | None = None
    analysis_error: str | None = None

    def traces(self, stage: str) -> list[str]:
        """Every trace file of a stage (``extend`` or ``decode``)."""
        files = self.extra.get(f"{stage}_all") or ([getattr(self, stage)] if getattr(self, stage) else [])
        return [str(f) for f in files if f]


@dataclass(eq=False)
class Error(_Part):
    type: str | None = None
    message: str | None = None
    evidence: Any = None
    exception: str | None = None
    exit_code: int | None = None
    phase: str | None = None
    log_path: str | None = None
    predicted: bool | None = None

    def evidence_text(self) -> str | None:
        ev = self.evidence
        return "\n".join(str(x) for x in ev) if isinstance(ev, (list, tuple)) else (None if ev is None else str(ev))


@dataclass(eq=False)
class Stop(_Part):
    signalled: Any = None
    killed: Any = None
    survivors: Any = None
    port_free: bool | None = None


@dataclass(eq=False)
class EngineInfo(_Part):
    _parts: ClassVar[dict[str, type]] = {"stop": Stop}
    name: str | None = None
    external: bool | None = None
    launched_by_moetrace: bool | None = None
    model_path: str | None = None
    device: str | None = None
    command: list[str] | None = None
    env: dict[str, str] | None = None
    server_info: dict[str, Any] | None = None
    version: str | None = None
    # what the engine chose, from its server log (Engine.resolved_backends: "moe", "attention"...)
    resolved: dict[str, str] | None = None
    stop: Stop | None = None


def _or_empty(name: str, part: type[_Part]) -> property:
    """A record's part ``name`` when it is there, else an empty one of its type (readers need no None checks)."""
    return property(lambda self: v if isinstance(v := getattr(self, name), part) else part(),
                    doc=f"``{name}``, or an empty {part.__name__}")


@dataclass(eq=False)
class Record(_Part):
    """One attempt. Fields in the order the runner writes them."""

    _parts: ClassVar[dict[str, type]] = {"engine": EngineInfo, "workload": Workload, "metrics": Metrics,
                                         "profile": Profile, "error": Error}
    _lists: ClassVar[dict[str, type]] = {"runs": Run}
    schema: int | None = None
    attempt_id: str | None = None
    model: str | None = None
    config: str | None = None
    role: str | None = None
    config_detail: dict[str, Any] | None = None
    moetrace_version: str | None = None
    started_at: str | None = None
    host: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    attempt_dir: str | None = None
    phases: dict[str, Any] | None = None  # seconds per stage; ``launches``: each launch's (--launches N)
    engine: EngineInfo | None = None
    model_detail: dict[str, Any] | None = None  # a variant of the model (variants.py): what it stands for
    plan: dict[str, Any] | None = None
    key: str | None = None
    status: str | None = None
    finished_at: str | None = None
    recorded_by: str | None = None  # "driver": the Slurm driver recorded how Slurm ended the job
    slurm: dict[str, Any] | None = None  # the driver's record: the job id, its state, command and log
    predicted: bool | None = None
    imported: bool | None = None
    error: Error | None = None
    workload: Workload | None = None
    metrics: Metrics | None = None
    runs: list[Run] | None = None
    profile: Profile | None = None
    expert_load: dict[str, Any] | None = None  # measure/expert_load.py: tokens per expert per layer and stage
    log_path: str | None = None
    plan_check: str | None = None
    telemetry: dict[str, Any] | None = None  # measure/telemetry.py: throttled runs, clock and power ranges
    seq: int | None = None
    record_path: str | None = None

    @classmethod
    def new(cls, **fields: Any) -> Record:
        """A record being written: the current schema, and parts given as dicts parsed."""
        rec = cls(schema=SCHEMA)
        for k, v in fields.items():
            rec.set(k, v)
        return rec

    # ----- reading, with empty parts for absent ones
    @property
    def ok(self) -> bool:
        return self.status == "success"

    the_engine = _or_empty("engine", EngineInfo)
    the_workload = _or_empty("workload", Workload)
    the_metrics = _or_empty("metrics", Metrics)
    the_profile = _or_empty("profile", Profile)
    the_error = _or_empty("error", Error)

    @property
    def the_runs(self) -> list[Run]:
        return [r for r in (self.runs or []) if isinstance(r, Run)]

    @property
    def the_key(self) -> str:
        return str(self.key or result_key(str(self.model), str(self.config or "")))

    @property
    def was_predicted(self) -> bool:
        return bool(self.predicted or self.the_error.predicted)

    def workload_triple(self) -> tuple[int | None, int | None, int | None]:
        """(batch, input, output): a success's workload; a failure's from its key's suffix, or
        (none there: the spec's workload or another run of the same key) from its options."""
        w = self.the_workload
        bs, il, ol = _int(w.batch_size), _int(w.input_len), _int(w.output_len)
        if bs is not None:
            return bs, il, ol
        suffix = key_workload(self.the_key)
        if suffix:
            return suffix
        if self.ok:
            return None, None, None
        opts = self.options or {}
        sizes = opts.get("batch_sizes") or [None]
        return _int(sizes[0]), _int(opts.get("input_len")), _int(opts.get("output_len"))

    def last_updated(self) -> str:
        return self.finished_at or now_iso()


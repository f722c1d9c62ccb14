"""Failure classification: a pure function from (exception, exit code, server log)
to a class and a concise message.

The message is the decisive log line (the one that says *why*), not a
traceback's first line. The rules are one ordered table; the first rule that
matches wins, so more specific causes (out of memory) come before the generic
ones they trigger (a scheduler exception, a sigquit, a non-zero exit). What one
engine's log says is that engine's adapter's (``Engine.log_rules``), merged in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..text import clip

__all__ = ["ERROR_TYPES", "Classification", "classify", "MAX_MESSAGE"]

ERROR_TYPES = (
    "OOM", "Timeout", "ServerError", "LaunchError", "UnsupportedConfig", "ModelLoadError",
    "NCCLError", "CUDAError", "BenchmarkFailure", "Interrupted", "SlurmKilled", "Unknown",
)
MAX_MESSAGE = 500


@dataclass(frozen=True)
class Classification:
    error_type: str
    error_message: str
    evidence: str | list[str] | None = None  # the log line the class was decided from (an OOM: the engine's, PyTorch's)


# (class, pattern). Searched line by line over the log, in this order; each engine's own rules
# (``Engine.log_rules``) come after the first, its weaker ones (``Engine.weak_log_rules``) last.
_OOM = ("OOM", r"CUDA out of memory|torch\.OutOfMemoryError|OutOfMemoryError|CUDA error: out of memory")
_RULES: tuple[tuple[str, str], ...] = (
        # Out of memory: PyTorch, the C library, Python.
        ("OOM", r"Insufficient memory|Cannot allocate memory|MemoryError"),
        # A rejected argument: a choice the engine does not offer, an unsupported combination.
        ("UnsupportedConfig", r"error: argument [^:]+: invalid choice"),
        ("UnsupportedConfig", r"(?i)\bis not supported\b|\bnot supported (?:for|on|with|yet)\b|NotImplementedError"
                              r"|does not support (?:the|this|current)|Not enough allowed NUMA nodes"
                              r"|Failed to find a kernel that can implement|No \w+ MoE backend supports"),
        # A command the engine cannot take at all, or no engine.
        ("LaunchError", r"error: unrecognized arguments|error: the following arguments are required"),
        ("LaunchError", r"No module named '?(?:{modules})\b|ModuleNotFoundError|command not found"),
        ("LaunchError", r"Address already in use|address already in use"),
        # Checkpoint problems.
        ("ModelLoadError", r"KeyError: '[^']*(?:layers|weight|bias|experts)[^']*'"),
        ("ModelLoadError", r"SafetensorError|safetensors_rust|Error while deserializing header"
                           r"|Following weights were not initialized from checkpoint"),
        ("ModelLoadError", r"does not appear to have a file named|Can't load (?:the )?(?:configuration|tokenizer)"
                           r"|Repository Not Found|is not a local folder and is not a valid model identifier"
                           r"|Invalid repository ID or local directory|HFValidationError|"
                           r"Unrecognized model in|model type `[^`]+` but Transformers does not recognize"),
        # Distributed and device faults.
        ("NCCLError", r"NCCL error|ncclInternalError|ncclSystemError|ncclUnhandledCudaError|ncclRemoteError"
                      r"|NCCL WARN|Watchdog caught collective operation timeout"),
        # A device-side assert: the kernel's own assertion line says what broke (PyTorch prints it once a
        # thread, "<file>.cu:<line>: <fn>: block: [..], thread: [..] Assertion `<cond>` failed."); PyTorch's
        # closing hint "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions." says nothing.
        ("CUDAError", r"\.cu:\d+: .*Assertion `.*` failed"),
        ("CUDAError", r"CUDA error|illegal memory access|device-side assert(?!ions)|CUBLAS_STATUS_"
                      r"|cudaErrorLaunchFailure|no CUDA-capable device is detected|Found no NVIDIA driver"),
        # A crashed engine process (a segfault in a kernel, a worker killed by a signal).
        ("ServerError", r"died unexpectedly \(exit code: -?\d+\)|Segfault encountered|Segmentation fault"
                        r"|Fatal Python error|scheduler died during initialization \(exit code: -?\d+\)"),
)


def _compiled() -> tuple[tuple[tuple[str, re.Pattern[str]], ...], tuple[re.Pattern[str], ...]]:
    """The registered engines' rules, compiled once per set of engines: (:func:`_log_rules`'s rules, every
    engine's own words about running out of memory, ``Engine.oom_log_lines``)."""
    from ..engines.registry import engine_classes
    engines = tuple(engine_classes().values())
    if _table and _table[0] == engines:
        return _table[1], _table[2]
    modules = "|".join(re.escape(e.python_module) for e in engines if e.python_module)
    rules = (_OOM, *(r for e in engines for r in e.log_rules),
             *((cls, pat.replace("{modules}", modules)) for cls, pat in _RULES),
             *(r for e in engines for r in e.weak_log_rules))
    _table[:] = [engines, tuple((cls, re.compile(pat)) for cls, pat in rules),
                 tuple(re.compile(p) for e in engines for p in e.oom_log_lines)]
    return _table[1], _table[2]


def _log_rules() -> tuple[tuple[str, re.Pattern[str]], ...]:
    """The rules in order: the generic out-of-memory rule, every engine's rules, the generic rest (the engines'
    modules named in the missing-module rule), every engine's weak rules."""
    return _compiled()[0]


def _engine_oom_patterns() -> tuple[re.Pattern[str], ...]:
    """Every engine's own words about running out of memory (``Engine.oom_log_lines``)."""
    return _compiled()[1]


_table: list = []  # (the engines, their rules compiled, their oom_log_lines compiled)


def _with_engine_oom(line: str, log_lines: list[str]) -> tuple[str, str | list[str]]:
    """A PyTorch out-of-memory line with the engine's own line about it, engine's first (vLLM: "Failed to load
    model - not enough GPU memory ..."): (message, evidence). The engine's line alone when it already quotes
    PyTorch's (vLLM's "(original error: ...)"); ``line`` alone when the engine said nothing of its own."""
    if not re.search(_OOM[1], line):
        return line, line
    for pat in _engine_oom_patterns():
        for i in range(len(log_lines) - 1, -1, -1):
            if pat.search(log_lines[i]):
                own = _with_continuation(log_lines, i)
                if own == line:
                    return line, line
                core = line.split(": ", 1)[-1]  # PyTorch's text after "torch.OutOfMemoryError: "
                return (own if core in own else f"{own}; {line}"), [own, line]
    return line, line

# Lines that tell where a failure surfaced, used when no rule names a cause; best first:
# a Python exception line, then the engines' own words for a crash.
_GENERIC = (
    re.compile(r"^\s*(?:[\w.]+\.)?\w*(?:Error|Exception)\b:?"),
    re.compile(r"Engine core initialization failed|EngineCore failed|Scheduler hit an exception"),
    re.compile(r"Received sigquit|\bERROR\b|Error"),
)

# What moetrace's own exceptions mean, by class name (kept as strings to stay pure).
_EXCEPTION_CLASSES = {
    "LaunchTimeout": "Timeout",
    "RequestTimeout": "Timeout",
    "TimeoutError": "Timeout",
    "ReadTimeout": "Timeout",
    "BenchmarkFailure": "BenchmarkFailure",
    "KeyboardInterrupt": "Interrupted",
    "Interrupted": "Interrupted",
    "ServerDied": "ServerError",
    "ServerHTTPError": "ServerError",
    "LaunchError": "LaunchError",
    "FileNotFoundError": "LaunchError",
    "PermissionError": "LaunchError",
    "SlurmKilled": "SlurmKilled",
}


def _clip(text: str, n: int = MAX_MESSAGE) -> str:
    return clip(" ".join(text.split()), n, mark="...")


def _strip_prefix(line: str) -> str:
    """Drop log prefixes such as '[2025-11-27 23:50:00 TP0] ' or '(EngineCore pid=12) ERROR 11-26 ... '."""
    line = re.sub(r"^\s*\([\w-]+(?: pid=\d+)?\)\s*", "", line)
    line = re.sub(r"^\s*\[[^\]]{0,80}\]\s*", "", line)
    line = re.sub(r"^(?:ERROR|WARNING|INFO)\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]]+\]\s*", "", line)
    return line.strip()


def _with_continuation(log_lines: list[str], i: int) -> str:
    """The matched line, plus the next lines when it ends with ':' (a list of reasons follows)."""
    text = _strip_prefix(log_lines[i])
    j = i + 1
    while text.endswith(":") and j < len(log_lines) and j <= i + 3:
        nxt = _strip_prefix(log_lines[j])
        if not nxt:
            break
        text = f"{text} {nxt}"
        j += 1
    return text


def _find(log_lines: list[str], message: str = "") -> tuple[str, str] | None:
    """The first rule that matches; an out-of-memory the exception's own message states (an
    SGLang stream abort) counts like a log line of that rule."""
    for cls, pat in _log_rules():
        if cls == "OOM" and message and pat.search(message):
            return cls, message
        # Last match wins within a rule: the final, decisive occurrence (after retries, warnings).
        for i in range(len(log_lines) - 1, -1, -1):
            if pat.search(log_lines[i]):
                return cls, _with_continuation(log_lines, i)
    return None


# SGLang refuses an input longer than its request limit, which is the smaller of the context length
# and the KV pool (managers/utils.py validate_input_length); the pool is the limit when the
# startup log says so (managers/tp_worker.py).
_INPUT_TOO_LONG = re.compile(r"Input length \(\d+ tokens\) exceeds the maximum allowed length")
_KV_POOL_SMALL = re.compile(r"KV pool holds \d+ tokens, fewer than --context-length \d+")


def _input_over_kv_pool(message: str, log_lines: list[str]) -> str | None:
    if not _INPUT_TOO_LONG.search(message):
        return None
    for line in reversed(log_lines):
        m = _KV_POOL_SMALL.search(line)
        if m:
            return m.group(0)
    return None


# Lines that only wrap a cause reported above them.
_WRAPPERS = re.compile(r"See root cause above|See stack trace for root cause|Received sigquit|^File |^Traceback")


def _generic_line(log_lines: list[str]) -> str | None:
    for pat in _GENERIC:
        for line in reversed(log_lines):
            text = _strip_prefix(line)
            if pat.search(text) and not _WRAPPERS.search(text):
                return text
    return None


def classify(*, exception: str | None = None, message: str = "", exit_code: int | None = None,
             log_text: str = "", phase: str | None = None) -> Classification:
    """Classify one failed attempt.

    exception: class name of the exception that ended the attempt (``type(e).__name__``)
    message:   its message
    exit_code: the engine process's exit code, when it exited
    log_text:  the server log (or its tail)
    phase:     where it happened (launch, warmup, measure, profile), added to the message
    """
    where = f"[{phase}] " if phase else ""
    lines = log_text.splitlines()[-5000:]
    exc_cls = _EXCEPTION_CLASSES.get(exception or "")

    # Our own judgements that the log cannot override: a timeout is a timeout even if the
    # log shows a warning; an interrupt is the user's; a bad stream is the client's finding.
    if exc_cls in ("Interrupted", "BenchmarkFailure", "SlurmKilled"):
        return Classification(exc_cls, _clip(where + (message or exc_cls)))
    found = _find(lines, message)
    over_kv = _input_over_kv_pool(message, lines)
    if over_kv:
        return Classification("OOM", _clip(f"{where}{message}; {over_kv}"), evidence=over_kv)
    if exc_cls == "Timeout" and (found is None or found[0] not in ("OOM", "NCCLError", "CUDAError")):
        return Classification("Timeout", _clip(where + (message or "timed out")))
    if found:
        cls, line = found
        if cls == "OOM":
            text, evidence = _with_engine_oom(line, lines)
            return Classification(cls, _clip(where + text), evidence=evidence)
        return Classification(cls, _clip(where + line), evidence=line)
    if exc_cls == "LaunchError" and exit_code is not None:
        exc_cls = "ServerError"  # the engine started and then crashed: not a bad command
    if exc_cls:
        generic = _generic_line(lines)
        detail = message or exc_cls
        if exit_code is not None and f"exit code {exit_code}" not in detail:
            detail += f" (exit code {exit_code})"
        if generic and generic not in detail:
            detail += f": {generic}"
        return Classification(exc_cls, _clip(where + detail), evidence=generic)
    generic = _generic_line(lines)
    if exit_code not in (None, 0) or generic:
        text = generic or f"engine exited with code {exit_code}"
        return Classification("ServerError", _clip(where + text), evidence=generic)
    return Classification("Unknown", _clip(where + (message or exception or "unknown failure")))

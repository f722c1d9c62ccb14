"""A ready server from the measuring client's side: prompts, streamed requests, and the guard
that blames a failed request on the engine when the engine died."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Callable

import httpx

from ..engines.base import Engine
from ..engines.process import ServerProcess, port_is_free
from ..errors import MoetraceError, ServerDied
from ..measure.client import stream_batch
from ..measure.prompts import random_prompts
from ..options import RunOptions
from ..presets import Preset


class _Job:
    """A request in a background thread, cancellable (closing its stream aborts it)."""

    def __init__(self, fn: Callable[[Callable[[int], None]], None], on_token: Callable[[int], None] | None):
        self.error: BaseException | None = None
        self.done = False
        self._cancel = threading.Event()

        def tok(n: int) -> None:
            if on_token:
                on_token(n)
            if self._cancel.is_set():
                raise _Cancelled()

        def body() -> None:
            try:
                fn(tok)
            except _Cancelled:
                pass
            except BaseException as e:  # reported to the caller through .error
                self.error = e
            finally:
                self.done = True

        self._t = threading.Thread(target=body, daemon=True)
        self._t.start()

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        self._t.join(timeout)


class _Cancelled(Exception):
    pass


class Session:
    """A ready server, from the measurement's point of view."""

    def __init__(self, engine: Engine, base_url: str, preset: Preset, opts: RunOptions,
                 server: ServerProcess | None):
        self.engine, self.base_url, self.preset, self.opts, self.server = engine, base_url.rstrip("/"), preset, opts, server
        self.http = httpx.Client(timeout=opts.request_timeout_s)
        self.vocab = int(preset.hf_config.get("vocab_size", 32000))
        self.served_model: str | None = None
        self.nonce = uuid.uuid4().hex[:16]  # this attempt's prompts are its own (measure/prompts.py)

    def close(self) -> None:
        self.http.close()

    def prompts(self, *, batch: int, seed: int, input_len: int | None = None) -> list[list[int]]:
        """The token-id prompts a request of this seed sends (measure/prompts.py)."""
        return random_prompts(batch=batch, input_len=input_len or self.opts.input_len, vocab_size=self.vocab,
                              seed=seed, nonce=self.nonce)

    def model_name(self) -> str:
        """The name requests give the served model."""
        return self.served_model or self.opts.model_path or self.preset.hf_id

    def request(self, *, batch: int, seed: int, max_tokens: int, input_len: int | None = None,
                on_token: Callable[[int], None] | None = None):
        prompts = self.prompts(batch=batch, seed=seed, input_len=input_len)
        path, body, parse = self.engine.generate(prompts, max_tokens)
        if "model" in body and body["model"] is None:
            body["model"] = self.model_name()
        return stream_batch(self.base_url + path, body, batch=batch, parse=parse,
                            request_timeout_s=self.opts.request_timeout_s, on_token=on_token)

    def run_async(self, seed: int, max_tokens: int, on_token: Callable[[int], None] | None) -> _Job:
        return _Job(lambda tok: self.request(batch=1, seed=seed, max_tokens=max_tokens, on_token=tok), on_token)

    def guarded(self, *, batch: int, seed: int, max_tokens: int) -> Any:
        """:meth:`request` under :func:`guard_server`."""
        return guard_server(lambda: self.request(batch=batch, seed=seed, max_tokens=max_tokens), self.server, self)

    def warm_up(self) -> None:
        """One short request before anything is measured or counted (kernels built, caches warm)."""
        self.guarded(batch=self.opts.batch_sizes[0], seed=self.opts.seed + 999_983,
                     max_tokens=min(16, self.opts.output_len))


def guard_server(fn: Callable[[], Any], server: ServerProcess | None, session: Session | None) -> Any:
    """Run a request; if it fails and the server turns out dead or unhealthy, say so
    (a ServerError with the log) rather than blaming the stream."""
    before = server.alive_pids() if server else set()
    try:
        return fn()
    except MoetraceError as e:
        if server is None:
            raise
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            code = server.exit_code()
            if code is not None:
                raise ServerDied(f"engine exited with code {code} during the request ({e})",
                                 log_path=server.log_path, exit_code=code) from e
            lost = before - server.alive_pids()
            if lost:
                raise ServerDied(f"engine process(es) {sorted(lost)} died during the request ({e})",
                                 log_path=server.log_path) from e
            time.sleep(0.25)
        if server.port and port_is_free(server.port, server.host):
            # nothing listens on the engine's port any more while its processes wind down (seen in CI: vLLM's
            # EngineCore killed before the request began, its API server still exiting after 5 s)
            raise ServerDied(f"engine stopped listening on port {server.port} ({e})", log_path=server.log_path) from e
        raise

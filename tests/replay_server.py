"""A real local HTTP server that replays recorded response bytes, optionally altered,
for fault tests of the streaming client. Binds 127.0.0.1 only."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/event-stream"
    chunk_delay_s: float = 0.0  # pause between SSE events
    reset_after: int | None = None  # bytes sent before the connection is reset (RST)
    hang_after: int | None = None  # bytes sent before the server stops sending (keeps the socket open)
    requests: list = field(default_factory=list)


class ReplayServer:
    def __init__(self, reply: Reply):
        self.reply = reply
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                self._answer()

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                outer.reply.requests.append(self.rfile.read(n))
                self._answer()

            def _answer(self):
                r = outer.reply
                self.send_response(r.status)
                self.send_header("Content-Type", r.content_type)
                self.send_header("Connection", "close")
                self.end_headers()
                body = r.body
                limit = r.reset_after if r.reset_after is not None else r.hang_after
                if limit is not None:
                    body = body[:limit]
                for part in body.split(b"\n\n"):
                    if not part:
                        continue
                    self.wfile.write(part + b"\n\n")
                    self.wfile.flush()
                    if r.chunk_delay_s:
                        time.sleep(r.chunk_delay_s)
                if r.reset_after is not None:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    return
                if r.hang_after is not None:
                    time.sleep(30)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._t = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ReplayServer":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

"""An HTTP server on 127.0.0.1, in a thread of the test process, that serves one file and
misbehaves on cue: each request takes the next answer from a script, then the default one.

    with FileServer(body) as server:
        server.script(status(500), drop_after(1000))  # then: serve the file, honouring Range
        ... server.url() ...
        server.requests  # [(method, path, headers), ...] as received
"""
from __future__ import annotations

import http.server
import re
import threading
import time

WAIT_S = 600.0  # the longest a scripted stall waits for release(); tests release earlier or end


class FileServer:
    def __init__(self, body: bytes, path: str = "/cifar-100-python.tar.gz"):
        self.body, self.path = body, path
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.sent_after_body = 0  # junk bytes an `endless` answer wrote past the file
        self.default = serve()
        self.got_request = threading.Event()
        self._released = threading.Event()
        self._script: list = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str | None = None) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path or self.path}"

    def script(self, *answers) -> None:
        with self._lock:
            self._script.extend(answers)

    def release(self) -> None:
        """Lets stalled answers go on."""
        self._released.set()

    def wait_released(self) -> None:
        self._released.wait(WAIT_S)

    def gets(self) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.requests if r[0] == "GET"]

    def _next_answer(self):
        with self._lock:
            return self._script.pop(0) if self._script else self.default


def _handler_for(server: FileServer):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with server._lock:
                server.requests.append(("GET", self.path, dict(self.headers)))
            server.got_request.set()
            try:
                server._next_answer()(self, server)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (timed out, interrupted): nothing to answer

        def log_message(self, *args):  # keep the test output quiet
            pass

    return Handler


# Answers: each is a function (handler, server) -> None.

def serve(honour_range: bool = True, length: bool = True):
    """The file (only the requested part, as 206, when there is a Range and honour_range)."""
    def answer(handler, server):
        start = _range_start(handler) if honour_range else None
        if start is not None and start >= len(server.body):
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{len(server.body)}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        _send_headers(handler, server, start, length)
        handler.wfile.write(server.body[start or 0:])
    return answer


def drop_after(n: int, honour_range: bool = True):
    """Headers for the whole file (or the asked-for range), then `n` bytes, then the connection closes."""
    def answer(handler, server):
        start = _range_start(handler) if honour_range else None
        _send_headers(handler, server, start)
        handler.wfile.write(server.body[start or 0:(start or 0) + n])
        handler.wfile.flush()
        handler.close_connection = True
    return answer


def stall_after(n: int):
    """Like drop_after, but the connection stays open and silent until release()."""
    def answer(handler, server):
        start = _range_start(handler)
        _send_headers(handler, server, start)
        handler.wfile.write(server.body[start or 0:(start or 0) + n])
        handler.wfile.flush()
        server.wait_released()
        handler.close_connection = True
    return answer


def pause_after(n: int):
    """`n` bytes, a wait until release(), then the rest: a slow but complete transfer."""
    def answer(handler, server):
        start = _range_start(handler) or 0
        _send_headers(handler, server, start or None)
        handler.wfile.write(server.body[start:start + n])
        handler.wfile.flush()
        server.wait_released()
        handler.wfile.write(server.body[start + n:])
    return answer


def endless(most: int = 64 << 20):
    """200 without a Content-Length: the file, then junk until the client goes away (or
    `most` bytes in all, so that a client that never stops still ends)."""
    def answer(handler, server):
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(server.body)
        junk, sent = b"\0junk" * 13107, len(server.body)
        while sent < most:
            handler.wfile.write(junk)
            sent += len(junk)
            server.sent_after_body = sent - len(server.body)
        handler.close_connection = True
    return answer


def announce(length: int):
    """200 with a Content-Length of `length` (a lie), then the file as it is."""
    def answer(handler, server):
        handler.send_response(200)
        handler.send_header("Content-Length", str(length))
        handler.end_headers()
        handler.wfile.write(server.body)
        handler.close_connection = True
    return answer


def drip(n: int, every_s: float, for_s: float):
    """The file with its length, `n` bytes every `every_s` seconds, for at most `for_s`
    seconds (then the connection closes): a slow-drip server."""
    def answer(handler, server):
        _send_headers(handler, server, _range_start(handler))
        start, offset = time.monotonic(), _range_start(handler) or 0
        while time.monotonic() - start < for_s and offset < len(server.body):
            handler.wfile.write(server.body[offset:offset + n])
            handler.wfile.flush()
            offset += n
            time.sleep(every_s)
        handler.close_connection = True
    return answer


def status(code: int, headers: dict[str, str] | None = None):
    def answer(handler, server):
        handler.send_response(code)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


def redirect(path: str, code: int = 302):
    return status(code, {"Location": path})


def _range_start(handler) -> int | None:
    match = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range", ""))
    return int(match[1]) if match else None


def _send_headers(handler, server, start: int | None, length: bool = True) -> None:
    size = len(server.body)
    if start is None:
        handler.send_response(200)
        if length:
            handler.send_header("Content-Length", str(size))
    else:
        handler.send_response(206)
        handler.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        handler.send_header("Content-Length", str(size - start))
    handler.send_header("Content-Type", "application/x-gzip")
    handler.end_headers()


def wait_for(condition, timeout: float = 60.0, what: str = "a condition"):
    """Polls `condition()` until it is true; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)

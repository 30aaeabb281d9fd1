"""Real OpenAI-compatible servers started and stopped by a test: `transformers serve` on loopback."""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`transformers serve` in its own process group: on one checkpoint (`folder`), or loading whatever local
    model a request names (folder None). `threads`: its torch threads (the CPU is shared)."""

    def __init__(self, folder: Path | None, log: Path, threads: int = 1):
        script = Path(sys.executable).parent / "transformers"
        if not script.exists() or any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "openai")):
            pytest.skip("`transformers serve` is not available: pip install 'transformers[serving]'")
        self.model, self.port = (str(folder) if folder else None), free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        hub = log.parent / "hub"
        hub.mkdir(exist_ok=True)
        # An existing, empty hub cache: /v1/models scans it and answers 500 when it is missing.
        # Few threads: the CPU is shared, and oversubscribed threads slow decoding tenfold.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub), "OMP_NUM_THREADS": str(threads)}
        self.log = log
        self.proc = subprocess.Popen(
            [str(script), "serve", *([self.model] if self.model else []), "--device", "cpu",
             "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait(120)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"transformers serve did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


class Stub:
    """A real HTTP server on loopback whose answers come from `answer(method, path, body) -> (status, bytes)`:
    for the parts of a server's API that no local server has (vLLM's runtime LoRA API, its logprobs)."""

    def __init__(self, answer):
        import http.server
        import json
        import threading

        self.requests: list[tuple[str, str, dict | None]] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                stub.requests.append((method, self.path, body))
                status, data = answer(method, self.path, body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                    pass

            def do_GET(self):
                self._reply("GET")

            def do_POST(self):
                self._reply("POST")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""A stand-in for the Kubeflow Pipelines v2beta1 REST API, on loopback, recording every request.

For contract tests only: it implements just the endpoints `kfp.Client` calls to create experiments,
runs and recurring runs, and answers with the fields the client reads.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeKfp:
    def __init__(self):
        self.requests: list[tuple[str, str, dict]] = []
        self.experiments: dict[str, dict] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, body: dict, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                fake.requests.append(("GET", url.path, parse_qs(url.query)))
                if url.path.endswith("/healthz"):
                    return self._reply({"multi_user": False})
                if url.path.endswith("/experiments"):
                    wanted = json.dumps(parse_qs(url.query).get("filter", [""])[0])
                    found = [e for name, e in fake.experiments.items() if name in wanted]
                    return self._reply({"experiments": found, "total_size": len(found)})
                return self._reply({"error": f"unknown GET {url.path}"}, 404)

            def do_POST(self):
                url = urlparse(self.path)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.requests.append(("POST", url.path, body))
                if url.path.endswith("/experiments"):
                    experiment = {"experiment_id": f"exp-{len(fake.experiments) + 1}", **body}
                    fake.experiments[body["display_name"]] = experiment
                    return self._reply(experiment)
                if url.path.endswith("/recurringruns"):
                    return self._reply({"recurring_run_id": "rr-1", **body})
                if url.path.endswith("/runs"):
                    return self._reply({"run_id": "run-1", **body})
                return self._reply({"error": f"unknown POST {url.path}"}, 404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKfp:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def posted(self, suffix: str) -> list[dict]:
        return [body for method, path, body in self.requests if method == "POST" and path.endswith(suffix)]

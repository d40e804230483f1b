"""The webhook receiver: Label Studio says an annotation changed, this starts the pull.

Prefect's open-source server has no incoming-webhook endpoint, so the stack runs this small
HTTP server on a loopback address of its own (WEBHOOK_HOST; Label Studio may reach that one
address and no other local one, see infra.stack). `POST /labelstudio/{deployment}` with the
shared secret in the `X-Alpha-Webhook-Secret` header starts a run of
`pull-labels/{deployment}`; anything else is refused. It answers at once (Label Studio
sends webhooks inside the annotator's request and gives up after 1 s) and starts the run in
the background, at most once per DEBOUNCE_S per deployment (Prefect's idempotency key), and
not while a pull is due that has not started yet (flows.pending), so a burst of annotations
makes one pull at a time, not one process every few seconds. A lost webhook loses nothing:
the scheduled pull catches up.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEADER = "X-Alpha-Webhook-Secret"
SECRET_ENV = "ALPHA_WEBHOOK_SECRET"
DEBOUNCE_S = 5
MAX_BODY = 1 << 20  # Label Studio's payloads are small; a bigger one is not Label Studio
_TARGET = re.compile(r"^/labelstudio/(?P<deployment>[A-Za-z0-9_.-]{1,200})/?$")

log = logging.getLogger("alpha.webhook")


def start_pull(deployment: str) -> str | None:
    """Start `pull-labels/{deployment}` without waiting; its flow run id, or None when that
    deployment does not exist (nothing serves the project)."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    from flows.names import PULL_FLOW
    from flows.pending import runs_under_way

    window = int(time.time() // DEBOUNCE_S)
    try:
        if runs_under_way(f"{PULL_FLOW}/{deployment}", running=False):
            log.info("webhook for %s: a pull that has not read Label Studio yet is due; "
                     "it brings this annotation too", deployment)
            return None
        run = run_deployment(f"{PULL_FLOW}/{deployment}", timeout=0, as_subflow=False,
                             idempotency_key=f"webhook:{deployment}:{window}")
    except ObjectNotFound:
        log.warning("webhook for %s: no such deployment (is `alpha serve` running?)", deployment)
        return None
    log.info("webhook for %s: pull run %s", deployment, run.id)
    return str(run.id)


class Receiver(ThreadingHTTPServer):
    """The HTTP server, with the secret it checks and what it calls for a good request."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], secret: str,
                 on_event: Callable[[str], object] = start_pull):
        if not secret:
            raise ValueError(f"the webhook receiver needs a secret ({SECRET_ENV})")
        super().__init__(address, _Handler)
        self.secret = secret.encode()
        self.on_event = on_event
        self.workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="webhook")

    def server_close(self) -> None:
        super().server_close()
        self.workers.shutdown(wait=False)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver
    server_version = "alpha-webhook"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/health":
            self._answer(200, {"status": "ok"})
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        target = _TARGET.match(self.path)
        if target is None:
            self._answer(404, {"error": "not found"})
            return
        given = (self.headers.get(HEADER) or "").encode()
        if not hmac.compare_digest(given, self.server.secret):
            self._answer(403, {"error": f"missing or wrong {HEADER}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(413, {"error": "payload too large"})
            return
        self.rfile.read(length)  # the payload is not needed: the pull asks Label Studio
        deployment = target["deployment"]
        self._answer(202, {"pull": deployment})
        self.server.workers.submit(self._start, deployment)

    def _start(self, deployment: str) -> None:
        try:
            self.server.on_event(deployment)
        except Exception:  # logged, never raised: the scheduled pull catches up
            log.exception("webhook for %s: starting the pull failed", deployment)

    def _answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's name
        log.info("%s %s", self.address_string(), format % args)  # never headers: the secret


def main(argv: list[str] | None = None) -> None:
    """`python -m infra.webhook HOST PORT`, the secret from $ALPHA_WEBHOOK_SECRET; loopback
    addresses only, since the secret travels in plain HTTP."""
    host, port = (argv or sys.argv[1:])[:2]
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing to listen on {host}: the receiver is for loopback only")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect call
    # Imported now (seconds), not in the first webhook's pull.
    import prefect.deployments  # noqa: F401

    import flows.names  # noqa: F401

    receiver = Receiver((host, int(port)), os.environ.get(SECRET_ENV, ""))
    log.info("listening on http://%s:%s", host, port)
    try:
        receiver.serve_forever()
    finally:
        receiver.server_close()


if __name__ == "__main__":  # pragma: no cover
    main()

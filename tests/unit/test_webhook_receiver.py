"""The webhook receiver over real HTTP on loopback: only the secret starts a pull, it
answers before the pull starts, and Label Studio may reach it and no other local address."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator

import httpx
import pytest

from alpha.labelstudio.connection import WEBHOOK_HEADER
from infra import stack
from infra.webhook import HEADER, Receiver


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[str], threading.Event]]:
    started: list[str] = []
    release = threading.Event()

    def on_event(deployment: str) -> None:
        release.wait(5)  # a slow Prefect must not delay the answer to Label Studio
        started.append(deployment)

    server = Receiver(("127.0.0.1", 0), "s3cr3t-value", on_event)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", started, release
    server.shutdown()
    server.server_close()


def test_only_a_request_with_the_secret_starts_the_pull(receiver):
    url, started, release = receiver
    target = f"{url}/labelstudio/alpha-my-project"
    assert httpx.post(target, json={"action": "ANNOTATION_CREATED"}).status_code == 403
    assert httpx.post(target, headers={HEADER: "wrong"}, json={}).status_code == 403
    assert httpx.post(f"{url}/other", headers={HEADER: "s3cr3t-value"}).status_code == 404
    assert httpx.post(f"{url}/labelstudio/../x", headers={HEADER: "s3cr3t-value"}
                      ).status_code == 404
    answer = httpx.post(target, headers={HEADER: "s3cr3t-value"},
                        json={"action": "ANNOTATION_CREATED"}, timeout=1.0)
    assert answer.status_code == 202 and started == []  # answered before the pull started
    release.set()
    for _ in range(50):
        if started:
            break
        threading.Event().wait(0.1)
    assert started == ["alpha-my-project"]
    assert httpx.get(f"{url}/health").status_code == 200


def test_the_receiver_refuses_to_start_without_a_secret():
    with pytest.raises(ValueError, match="needs a secret"):
        Receiver(("127.0.0.1", 0), "")


def test_label_studio_may_reach_the_receiver_and_no_other_local_address():
    env = stack._labelstudio_ssrf_env()
    assert env["SSRF_PROTECTION_ENABLED"] == "true"
    banned = [ipaddress.ip_network(n) for n in env["USER_ADDITIONAL_BANNED_SUBNETS"].split(",")]

    def blocked(ip: str) -> bool:
        return any(ipaddress.ip_address(ip) in net for net in banned)

    assert not blocked(stack.WEBHOOK_HOST)
    for ip in ("127.0.0.1", "127.0.0.2", "127.255.255.254", "10.1.2.3", "192.168.1.1",
               "169.254.169.254", "::1", "172.16.0.1"):
        assert blocked(ip), ip
    assert not blocked("93.184.216.34")  # a public address stays reachable, as by default
    assert stack.SERVICES["webhook"].host == stack.WEBHOOK_HOST != stack.HOST
    assert HEADER == WEBHOOK_HEADER  # the receiver checks the header alpha registers

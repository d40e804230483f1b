"""Security of the local stack, checked on the REAL running services.

Nobody who should not may read people's images or hold alpha's keys: the servers listen on
loopback only, Label Studio refuses strangers' signups, each install has its own secrets in
private files, no secret leaks into logs, Prefect, the bucket or error messages after real
rounds, and annotators see an image only through a short-lived presigned URL handed out by
Label Studio behind its login. Every search here is first shown able to find what it seeks,
so an empty result means "not there" rather than "not looked at".
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from secrets import token_hex, token_urlsafe
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import numpy as np
import pytest
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.filters import EventAnyResourceFilter, EventFilter
from prefect.settings import get_current_settings

from alpha.config import load_settings
from alpha.errors import AlphaError
from alpha.ingest import ingest_folder
from alpha.loop import open_context
from alpha.simulate import simulate_annotations
from alpha.store import image_id_from_key
from flows.round import active_learning_round
from infra import stack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECRET_NAMES = ("s3_access_key_id", "s3_secret_access_key", "ls_token", "ls_password",
                "prefect_auth_string", "ls_s3_access_key_id", "ls_s3_secret_access_key",
                "postgres_password")
MAX_PRESIGN_S = 15 * 60
BATCH = 10
Places = dict[str, bytes]


# ---- the search -----------------------------------------------------------------------------
class Secrets(dict[str, str]):
    """The stack's secrets. Its repr names them only: pytest prints a failing test's
    arguments, and a security test must not put the keys into a CI log."""

    def __repr__(self) -> str:
        return f"Secrets({', '.join(self)}: values hidden)"


def scrub(text: str | bytes, secrets: Mapping[str, str]) -> str:
    """`text` fit for an assertion message: every secret replaced by its name."""
    text = text.decode(errors="replace") if isinstance(text, bytes) else text
    for name, value in secrets.items():
        text = text.replace(value, f"<{name}>")
    return text


@pytest.fixture(scope="module")
def secrets() -> Secrets:
    """The running stack's secrets, as generated for this install."""
    creds = json.loads(stack.stack_paths().credentials.read_text())
    found = Secrets({name: creds[name] for name in SECRET_NAMES})
    # As an HTTP client sends it (an Authorization header a log might print), and alone.
    auth = creds["prefect_auth_string"]
    found["prefect_auth_string (basic auth header)"] = base64.b64encode(auth.encode()).decode()
    found["prefect_auth_string (password)"] = auth.partition(":")[2]
    assert all(len(value) >= 16 for value in found.values()), "a secret too short to search"
    return found


def find_secrets(places: Mapping[str, bytes | str], secrets: Mapping[str, str]
                 ) -> list[tuple[str, str]]:
    """(place, secret name) for every secret found anywhere in a place's content."""
    hits = []
    for place, content in places.items():
        data = content.encode() if isinstance(content, str) else content
        hits += [(place, name) for name, value in secrets.items() if value.encode() in data]
    return hits


def read_folder(folder: Path) -> Places:
    """Every file under `folder` (recursively), by path."""
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_search_finds_a_planted_secret(tmp_path: Path, secrets: Secrets) -> None:
    """Without this, an empty result could come from a search that looks at nothing."""
    (tmp_path / "logs" / "deep").mkdir(parents=True)
    for index, value in enumerate(secrets.values()):
        text = f"line\nINFO request with {json.dumps({'key': value})} and more\n"
        (tmp_path / "logs" / "deep" / f"{index}.log").write_text(text)
    (tmp_path / "logs" / "clean.log").write_text("nothing here " * 100)
    hits = {(Path(place).name, name) for place, name in find_secrets(read_folder(tmp_path),
                                                                    secrets)}
    # Each file shows its own secret (the auth string's file shows its password too).
    assert all((f"{index}.log", name) in hits for index, name in enumerate(secrets))
    assert not any(place == "clean.log" for place, _ in hits)


# ---- 1. loopback only -------------------------------------------------------------------------
def _listening_sockets() -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket, from /proc/net/tcp{,6}."""
    found: dict[int, tuple[str, int]] = {}
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            if sys.byteorder == "little":  # the kernel prints 32-bit words in host order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found[int(fields[9])] = (socket.inet_ntop(family, raw), int(port, 16))
    return found


def _process_group(leader: int) -> list[int]:
    """Every process in the group `stack.up` started the service in (the server's children)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == leader:
            members.append(int(entry.name))
    return members


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _service_sockets(name: str) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the service's processes listen on."""
    leader = stack.recorded_pid(stack.stack_paths(), name)
    assert leader is not None, f"{name} is not running as the stack's own process"
    listening = _listening_sockets()
    inodes = set().union(*(_socket_inodes(pid) for pid in _process_group(leader)))
    return sorted(listening[i] for i in inodes if i in listening)


def test_every_stack_process_listens_on_loopback_only() -> None:
    seen: dict[str, list[tuple[str, int]]] = {}
    for name, service in stack.SERVICES.items():
        seen[name] = _service_sockets(name)
        assert service.port in {port for _, port in seen[name]}, (name, seen[name])
    exposed = {name: [s for s in sockets if not _is_loopback(s[0])]
               for name, sockets in seen.items()}
    print(f"\nlistening sockets of the stack: {seen}")
    assert not any(exposed.values()), exposed


# ---- 2. no signup without an invite -----------------------------------------------------------
def _csrf_form(browser: httpx.Client, path: str) -> str:
    page = browser.get(path)
    assert page.status_code == 200, page.status_code
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def test_label_studio_refuses_signup_without_an_invite(secrets: Secrets) -> None:
    url = stack.SERVICES["labelstudio"].url
    email = f"intruder-{uuid.uuid4().hex[:8]}@example.com"
    form = {"email": email, "password": "Intruder-pass-1234", "how_find_us": "Other"}
    with httpx.Client(base_url=url, timeout=30) as browser:
        # The same browser handshake passes CSRF on the login form (a wrong password shows
        # the form again, 200), so the signup's 403 below is the invite rule, not CSRF.
        token = _csrf_form(browser, "/user/login/")
        login = browser.post("/user/login/", data={"csrfmiddlewaretoken": token, "email": email,
                                                  "password": "wrong"},
                             headers={"Referer": f"{url}/user/login/"})
        assert login.status_code == 200
        for path in ("/user/signup/", "/user/signup/?token=not-the-invite"):
            token = _csrf_form(browser, path)
            refused = browser.post(path, data={**form, "csrfmiddlewaretoken": token},
                                   headers={"Referer": f"{url}{path}"})
            assert refused.status_code == 403, (path, refused.status_code)
            assert "CSRF verification failed" not in refused.text
    anonymous = httpx.post(f"{url}/api/users/", json={"email": email, "username": email},
                           timeout=30)
    assert anonymous.status_code in (401, 403)
    auth = {"Authorization": f"Token {secrets['ls_token']}"}
    users = httpx.get(f"{url}/api/users/", headers=auth, timeout=30).json()
    users = users.get("results", users) if isinstance(users, dict) else users
    emails = {u.get("email") for u in users}
    assert emails and email not in emails


# ---- 3. secrets per install, private, not in the code -------------------------------------------
def _readable_by_others(path: Path, home: Path) -> bool:
    """Whether a user other than the owner could read `path` (group or other bits)."""
    for read, enter in ((stat.S_IRGRP, stat.S_IXGRP), (stat.S_IROTH, stat.S_IXOTH)):
        if not path.stat().st_mode & read:
            continue
        folders = [p for p in path.parents if p == home or home in p.parents]
        if all(folder.stat().st_mode & enter for folder in folders):
            return True
    return False


def test_secrets_are_private_and_in_no_tracked_or_new_file(secrets: Secrets) -> None:
    paths = stack.stack_paths()
    assert stat.S_IMODE(paths.credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.env_file.stat().st_mode) == 0o600
    # Every file of the install that holds a secret (Label Studio's database does) is out of
    # other users' reach, by its own mode or a private folder above it.
    holders = [place for place, _ in find_secrets(read_folder(paths.home), secrets)]
    assert str(paths.credentials) in holders  # the search does see the home folder
    exposed = sorted({p for p in holders if _readable_by_others(Path(p), paths.home)})
    assert not exposed, f"readable by other users: {exposed}"

    # Command lines are readable by every local user (`ps`): no secret may be in one.
    command_lines = {f"command line of {name} ({pid})": Path(f"/proc/{pid}/cmdline").read_bytes()
                     for name in stack.SERVICES
                     for pid in _process_group(stack.recorded_pid(paths, name) or -1)}
    assert len(command_lines) >= len(stack.SERVICES)
    assert not find_secrets(command_lines, secrets)

    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    files = {name: (REPO / name).read_bytes() for name in listed if (REPO / name).is_file()}
    assert "infra/stack.py" in files
    assert not find_secrets(files, secrets)
    print(f"\nsecret holders under ALPHA_HOME: {sorted(set(holders))}; "
          f"repository files searched: {len(files)}")


# ---- a real project, two rounds, and errors on purpose ----------------------------------------
def _write_project(folder: Path, prefix: str) -> tuple[Path, dict[str, str]]:
    """30 seed labels and a pool of 40 real digits; the config; the pool's true labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = folder / "images"
    images.mkdir()
    order = np.random.default_rng(0).permutation(len(digits.target))
    seed = [i for c in range(10) for i in [j for j in order if digits.target[j] == c][:3]]
    pool = [i for i in order if i not in set(seed)][:40]
    for i in seed + pool:
        pixels = (digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"digit-{i:04d}.png")
    (folder / "seed.csv").write_text(
        "".join(f"digit-{i:04d}.png,{digits.target[i]}\n" for i in seed))
    config = folder / "alpha.toml"
    config.write_text(
        f'[s3]\nprefix = "{prefix}"\n'
        f'[labelstudio]\nproject_title = "alpha security test {prefix}"\n'
        '[task]\nlabels = ["0","1","2","3","4","5","6","7","8","9"]\n'
        "[train]\nimage_size = 8\nepochs = 2\nmin_steps = 20\nrefit = false\nthreads = 1\n"
        f"[loop]\nbatch_size = {BATCH}\n"
    )
    truth = {image_id_from_key(f"digit-{i:04d}.png"): str(digits.target[i]) for i in pool}
    return config, truth


def _error_text(error: BaseException) -> str:
    """What a user or a log could see of an error: its message and its whole traceback."""
    return f"{error}\n{''.join(traceback.format_exception(error))}"


def _caught(action) -> BaseException:
    try:
        action()
    except Exception as error:  # noqa: BLE001 - any error is what we want to read
        return error
    raise AssertionError("expected an error")


def wrong_values() -> Secrets:
    """Wrong keys of the real ones' shape, unrelated to them: an error or log that quotes what
    it was given is caught by searching for these too."""
    return Secrets({
        "wrong s3_access_key_id": "alpha" + token_hex(8),
        "wrong s3_secret_access_key": token_urlsafe(30),
        "wrong ls_token": token_hex(20),
        "wrong prefect_auth_string": "alpha:" + token_urlsafe(32),
    })


def _bad_config_errors(config: Path, secrets: Secrets, wrong: Secrets) -> Places:
    """Errors raised for wrong keys and tokens, and for a key of the wrong type."""
    bad_secret = open_context(config, s3={"secret_access_key": wrong["wrong s3_secret_access_key"]})
    bad_key = open_context(config, s3={"access_key_id": wrong["wrong s3_access_key_id"]})
    bad_token = open_context(config, labelstudio={"api_key": wrong["wrong ls_token"]})
    errors = {
        "wrong S3 secret key": _caught(lambda: list(bad_secret.store.list_keys("labels/"))),
        "wrong S3 access key": _caught(lambda: bad_key.store.get_json(
            bad_key.store.round_key("round-0001", "summary.json"))),
        "wrong Label Studio token": _caught(bad_token.project.ensure_project),
        "S3 key of the wrong type": _caught(lambda: load_settings(
            config, s3={"secret_access_key": [secrets["s3_secret_access_key"]]})),
    }
    for what, error in errors.items():
        assert isinstance(error, AlphaError), scrub(f"{what}: {error!r}", secrets)
    return {f"error: {what}": _error_text(e).encode() for what, e in errors.items()}


def _cli_errors(config: Path, secrets: Secrets, wrong: Secrets) -> Places:
    """What `alpha` prints for a wrong Label Studio token, a wrong S3 secret key and a wrong
    Prefect auth string (PREFECT_API_AUTH_STRING wins over the stack's, as a user's would)."""
    alpha = str(Path(sys.executable).parent / "alpha")
    runs = {
        "pull": ("ALPHA_LABELSTUDIO__API_KEY", "ls_token", b"refused the API token"),
        "push": ("ALPHA_S3__SECRET_ACCESS_KEY", "s3_secret_access_key", b"refused the access key"),
        "round": ("PREFECT_API_AUTH_STRING", "prefect_auth_string",
                  b"refused the request (401 Unauthorized)"),
    }
    out: Places = {}
    for command, (variable, name, expected) in runs.items():
        done = subprocess.run([alpha, command, "--config", str(config)], capture_output=True,
                              env={**os.environ, variable: wrong[f"wrong {name}"]}, timeout=300)
        assert done.returncode != 0 and expected in done.stderr, scrub(done.stderr, secrets)
        out[f"output of `alpha {command}` with {variable} wrong"] = done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def rounds(tmp_path_factory, secrets: Secrets) -> Iterator[dict]:
    """Two real rounds closed by the simulated annotator, a flow run that fails on a wrong S3
    secret (refused credentials are not retried) and CLI runs with wrong keys; removes the project's
    objects and its Label Studio project afterwards."""
    folder = tmp_path_factory.mktemp("security")
    prefix = f"security-{uuid.uuid4().hex[:8]}"
    config, truth = _write_project(folder, prefix)
    started = time.time()
    wrong = wrong_values()
    ctx = open_context(config)
    try:
        report = ingest_folder(ctx.store, ctx.settings, folder / "images", folder / "seed.csv")
        assert report.uploaded == 70 and report.seed_labels == 30
        states = [active_learning_round(config_file=str(config), return_state=True)]
        assert states[0].is_completed(), states[0]
        simulated = simulate_annotations(ctx.project, truth, random_state=0)
        assert simulated.annotated == BATCH
        states.append(active_learning_round(config_file=str(config), return_state=True))
        assert states[1].is_completed(), states[1]
        assert states[1].result()["pull"]["new"] == BATCH

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ALPHA_S3__SECRET_ACCESS_KEY", wrong["wrong s3_secret_access_key"])
            states.append(active_learning_round(config_file=str(config), return_state=True))
        assert states[2].is_failed(), states[2]
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[states[2].state_details.flow_run_id])))
        assert runs and all(r.run_count == 1 for r in runs)  # waiting would not help
        errors = {"error: failed flow run's result":
                  _error_text(_caught(states[2].result)).encode()}
        errors.update(_cli_errors(config, secrets, wrong))
        errors.update(_bad_config_errors(config, secrets, wrong))
        yield {"ctx": ctx, "config": config, "started": started, "errors": errors, "wrong": wrong,
               "flow_run_ids": [s.state_details.flow_run_id for s in states]}
    finally:
        keys = list(ctx.store.list_keys(""))
        for start in range(0, len(keys), 1000):
            ctx.store.client.delete_objects(Bucket=ctx.store.bucket, Delete={
                "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})
        found = ctx.project._find_project()
        if found is not None:
            ctx.project.client.projects.delete(id=found["id"])


# ---- 4. no secret anywhere after the rounds -----------------------------------------------------
def _prefect_places(flow_run_ids: list) -> Places:
    """Everything the Prefect server holds about these flow runs, plus every artifact."""
    places: Places = {}
    run_filter = FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=run_filter):
            places[f"flow run {run.id} parameters"] = json.dumps(run.parameters).encode()
            places[f"flow run {run.id}"] = run.model_dump_json().encode()
            states = client.read_flow_run_states(run.id)
            places[f"flow run {run.id} states"] = "\n".join(
                s.model_dump_json() for s in states).encode()
        for task_run in client.read_task_runs(flow_run_filter=run_filter):
            places[f"task run {task_run.id} {task_run.name}"] = task_run.model_dump_json().encode()
        logs, offset = [], 0
        while page := client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)),
                                       limit=200, offset=offset):
            logs += page
            offset += len(page)
        places["flow run logs"] = "\n".join(log.message for log in logs).encode()
        artifacts, offset = [], 0
        while page := client.read_artifacts(limit=200, offset=offset):
            artifacts += page
            offset += len(page)
        places["every artifact on the server"] = "\n".join(
            a.model_dump_json() for a in artifacts).encode()
        resources = [f"prefect.flow-run.{run_id}" for run_id in flow_run_ids]
        page = client.read_events(EventFilter(any_resource=EventAnyResourceFilter(id=resources)),
                                  limit=50)  # the server's maximum
        events = list(page.events)
        while page.next_page:
            page = client.read_events_page(str(page.next_page))
            events += page.events
        places["events of the flow runs"] = "\n".join(e.model_dump_json() for e in events).encode()
    print(f"\nPrefect: {len(flow_run_ids)} flow runs, {len(logs)} log lines, "
          f"{len(artifacts)} artifacts, {len(events)} events")
    return places


def _local_results(since: float) -> Places:
    """Task results Prefect persisted on this machine while the rounds ran, if any."""
    folder = Path(get_current_settings().results.local_storage_path)
    if not folder.is_dir():
        return {}
    return {str(p): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.stat().st_mtime >= since}


def test_no_secret_in_logs_prefect_bucket_or_errors_after_real_rounds(
    rounds: dict, secrets: Secrets
) -> None:
    ctx = rounds["ctx"]
    paths = stack.stack_paths()
    logs: Places = {}
    for name in stack.SERVICES:
        logs.update(read_folder(paths.log_file(name).parent))
    prefect = _prefect_places(rounds["flow_run_ids"])
    bucket = {key: ctx.store.client.get_object(Bucket=ctx.store.bucket, Key=key)["Body"].read()
              for key in ctx.store.list_keys("")}
    tasks = {"Label Studio tasks": json.dumps(list(ctx.project._list_tasks("id,data"))).encode()}
    places = {**logs, **prefect, **bucket, **tasks, **rounds["errors"],
              **_local_results(rounds["started"])}

    # Each place really holds what it should, so an empty search is not an empty read.
    assert {f"{n}.log" for n in stack.SERVICES} <= {Path(p).name for p in logs}
    assert b"config_file" in prefect[f"flow run {rounds['flow_run_ids'][0]} parameters"]
    assert b"round-0002" in prefect["flow run logs"]
    assert b"refused the access key" in prefect["flow run logs"]
    assert b"alpha round round-0002" in prefect["every artifact on the server"]
    assert sum(name.startswith("task run") for name in prefect) >= 8
    assert prefect["events of the flow runs"]
    for part in ("/labels/", "/rounds/round-0002/summary.json", "/metrics.json",
                 "/rounds/round-0002/pull.json", "/labelstudio/pull_cursor.json"):
        assert any(part in key for key in bucket), part
    assert all(b"refused" in text or b"nvalid" in text for text in rounds["errors"].values())

    # SeaweedFS logs the id of an unknown access key it refused (as AWS does): an id that
    # exists nowhere, so the wrong id is looked for everywhere but in the stack's logs.
    wrong = rounds["wrong"]
    sought = Secrets({**secrets, **wrong})
    in_logs = Secrets({k: v for k, v in sought.items() if k != "wrong s3_access_key_id"})
    s3_log = logs[str(paths.log_file("s3"))]
    assert wrong["wrong s3_access_key_id"].encode() in s3_log  # the logs are read fresh
    hits = find_secrets(logs, in_logs) + find_secrets(
        {k: v for k, v in places.items() if k not in logs}, sought)
    print(f"\nsearched {len(secrets)} secrets and {len(wrong)} wrong values in {len(places)} "
          "places "
          f"({len(logs)} log files, {len(prefect)} Prefect records, {len(bucket)} S3 objects, "
          f"{len(rounds['errors'])} error outputs, "
          f"{sum(len(v) for v in places.values())} bytes): {len(hits)} hits")
    assert not hits, hits


# ---- 5. images only through presigned URLs or Label Studio --------------------------------------
def test_images_reach_annotators_only_through_short_lived_presigned_urls(
    rounds: dict, secrets: Secrets
) -> None:
    ctx = rounds["ctx"]
    store = ctx.store
    task = next(ctx.project._list_tasks("id,data"))  # unresolved: data holds the s3:// URI
    key = task["data"]["image"].removeprefix(store.s3_uri(""))
    image = store.get_bytes(key)
    endpoint = stack.SERVICES["s3"].url
    anonymous_get = httpx.get(f"{endpoint}/{store.bucket}/{key}", timeout=30)
    assert anonymous_get.status_code == 403
    anonymous_list = httpx.get(f"{endpoint}/{store.bucket}/", params={"list-type": 2}, timeout=30)
    assert anonymous_list.status_code == 403
    anonymous_put = httpx.put(f"{endpoint}/{store.bucket}/{store.key('intruder.png')}",
                              content=b"x", timeout=30)
    assert anonymous_put.status_code == 403
    assert httpx.get(store.presigned_url(key, 60), timeout=30).content == image  # right URL

    ls_url = stack.SERVICES["labelstudio"].url
    auth = {"Authorization": f"Token {secrets['ls_token']}"}
    detail = httpx.get(f"{ls_url}/api/tasks/{task['id']}/", headers=auth, timeout=30).json()
    served = detail["data"]["image"]
    assert not served.startswith("s3://") and not served.startswith(endpoint), served
    served = served if served.startswith("http") else ls_url + served
    assert httpx.get(served, timeout=30).status_code in (401, 403)  # Label Studio's login first
    answer = httpx.get(served, headers=auth, timeout=30)
    if answer.is_redirect:  # presigned: short-lived, and the expiry is under the signature
        location = answer.headers["location"]
        query = parse_qs(urlsplit(location).query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Signature"]
        assert 0 < int(query["X-Amz-Expires"][0]) <= MAX_PRESIGN_S, query["X-Amz-Expires"]
        assert httpx.get(location, timeout=30).content == image
        # Signed with Label Studio's own read-only key: a leaked URL names no key that writes.
        key_id = query["X-Amz-Credential"][0].split("/")[0]
        signed_by_label_studio_s_key = key_id == secrets["ls_s3_access_key_id"]
        assert signed_by_label_studio_s_key, scrub(key_id, secrets)
        longer = location.replace(f"X-Amz-Expires={query['X-Amz-Expires'][0]}",
                                  "X-Amz-Expires=604800")
        assert httpx.get(longer, timeout=30).status_code == 403
        unsigned = urlunsplit(urlsplit(location)._replace(query=""))
        assert httpx.get(unsigned, timeout=30).status_code == 403
        print(f"\npresigned by Label Studio: X-Amz-Expires={query['X-Amz-Expires'][0]}")
    else:  # proxied by Label Studio itself
        assert answer.status_code == 200 and answer.content == image
        print("\nimage URL from Label Studio: proxied behind its login")


def test_no_other_port_of_the_s3_server_hands_out_images(rounds: dict) -> None:
    """SeaweedFS serves more than S3: its filer and volume ports must not give an image
    (or a listing) to a caller without credentials either (see stack._s3_security_config)."""
    store = rounds["ctx"].store
    key = next(k for k in store.list_keys("images/") if k.endswith(".png"))
    image = store.get_bytes(key)
    ports = sorted({port for _, port in _service_sockets("s3")})
    served = []
    for port in ports:
        for path in (f"/buckets/{store.bucket}/{key}", f"/{store.bucket}/{key}",
                     f"/buckets/{store.bucket}/{store.prefix}/images/"):
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5,
                                   headers={"Accept": "application/json"})
            except httpx.HTTPError:  # gRPC ports and the like do not speak HTTP/1.1
                continue
            if answer.status_code == 200 and (image in answer.content
                                              or key.encode() in answer.content):
                served.append(f"{port}{path}")
    print(f"\nS3 server ports tried without credentials: {ports}")
    leader = stack.recorded_pid(stack.stack_paths(), "s3")
    started_with_keys = b"-config_dir=" in Path(f"/proc/{leader}/cmdline").read_bytes()
    assert not served, (f"served without credentials: {served}" + (
        "" if started_with_keys else "; this S3 server was started without signing keys "
        "(before they were added): restart it (`alpha stack down && alpha stack up`)"))

"""A team's load on Label Studio: N simulated annotators at once while rounds push and pull.

Against running stacks (each started by `alpha stack up`; `--home` names each one's
ALPHA_HOME, e.g. one on SQLite and one started with `--db postgres`), for each N in
`--annotators`:

- a fresh project with N x `--per-annotator` small PNG images in S3; half of them are
  pushed with alpha's push (bulk import with predictions) before the annotators start, the
  rest by a pusher thread in `--pushes` rounds, `--push-every-s` apart;
- N SIMULATED annotators, each a Label Studio user of its own (signed up through the
  organisation's invite link, with its own API token), each in its own thread doing what
  the labeling page does: ask `/api/projects/{id}/next` for a task, save an annotation
  (`annotations.create`), `--think-s` in between; an empty queue (404 from `next`) is
  waited out, not counted as an error;
- a puller thread running alpha's pull every `--pull-every-s` into the project's S3 prefix;
- then a last pull, and the count: every HTTP attempt by status code, the SDK's retries
  (it retries 5xx, 408, 409, 429 and network errors twice), calls that failed after them,
  annotations saved but missing from Label Studio or from the bucket (lost), tasks or
  annotations that exist twice (duplicated), and pushed images without a task (lost tasks).

Alpha's own Label Studio traffic runs as the stack's admin token, as a round's would; the
webhook receiver is not registered (it would add its own 1 s per save on both databases).
Each run removes its projects and prefixes at the end; the annotator users stay.

    PYTHONPATH=. python bench/labelstudio.py --home .alpha-sqlite --home .alpha-pg \\
        --annotators 1,4,8 --per-annotator 20
"""

from __future__ import annotations

import argparse
import re
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import label_studio_sdk.core.http_client as sdk_http
import numpy as np
from label_studio_sdk import LabelStudio

from alpha.config import Settings, load_settings
from alpha.kinds.base import Target
from alpha.labelstudio import LabelStudioProject, PushItem
from alpha.records import read_all_records
from alpha.store import Store
from bench.push_pull import LABELS, cleanup, upload_images
from infra import postgres

ROLE = threading.local()  # which actor the current thread is, for the retry count


@dataclass
class Traffic:
    """Every HTTP attempt made to Label Studio (by actor and status), the SDK's retries and
    the calls that still failed after them. Thread-safe: every actor writes here."""

    statuses: Counter = field(default_factory=Counter)
    retries: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: ClassVar[Traffic | None] = None  # the run counted (SDK retries go there)

    def client(self, role: str) -> httpx.Client:
        """An httpx client for the SDK that counts each response it receives."""
        def seen(response: httpx.Response) -> None:
            with self.lock:
                self.statuses[(role, _endpoint(response.request), response.status_code)] += 1
        return httpx.Client(timeout=300, event_hooks={"response": [seen]})

    def count(self, counter: Counter, key: Any) -> None:
        with self.lock:
            counter[key] += 1


def _endpoint(request: httpx.Request) -> str:
    return "next" if request.url.path.rstrip("/").endswith("/next") else "other"


def _count_sdk_retries() -> None:
    """The SDK sleeps through one of these two before every retry: count them per actor,
    into the active run's Traffic."""
    for name in ("_retry_timeout", "_retry_timeout_from_retries"):
        original: Callable[..., float] = getattr(sdk_http, name)

        def counted(*args: Any, _original: Callable[..., float] = original, **kwargs: Any
                    ) -> float:
            if (traffic := Traffic.active) is not None:
                traffic.count(traffic.retries, getattr(ROLE, "name", "setup"))
            return _original(*args, **kwargs)

        setattr(sdk_http, name, counted)


# ---- annotators -------------------------------------------------------------------------------
@dataclass
class Annotator:
    """One simulated person: a Label Studio user with its own token and client."""

    email: str
    client: LabelStudio
    http: httpx.Client
    token: str
    saved: list[tuple[int, int]] = field(default_factory=list)  # (task id, annotation id)
    save_s: list[float] = field(default_factory=list)
    waits: int = 0


def sign_up(url: str, invite: str, email: str, password: str) -> str:
    """Sign a user up through the invite link as a browser would; their API token."""
    with httpx.Client(base_url=url, timeout=60, follow_redirects=True) as browser:
        path = f"/user/signup/?token={invite}"
        page = browser.get(path)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if csrf is None:
            raise RuntimeError(f"no signup form at {url}{path} ({page.status_code})")
        browser.post(path, data={"csrfmiddlewaretoken": csrf.group(1), "email": email,
                                 "password": password, "how_find_us": "Other"},
                     headers={"Referer": f"{url}{path}"})
        answer = browser.get("/api/current-user/token")
        if answer.status_code != 200:
            raise RuntimeError(f"signing up {email} failed: token answered {answer.status_code}")
        return answer.json()["token"]


def make_annotators(project: LabelStudioProject, n: int, run: str, traffic: Traffic
                    ) -> list[Annotator]:
    invite = project._request("GET", "api/invite")["token"]
    annotators = []
    for i in range(n):
        email = f"annotator-{run}-{i}@bench.alpha.local"
        token = sign_up(project.url, invite, email, f"Bench-{uuid.uuid4().hex}")
        http = traffic.client("annotate")
        client = LabelStudio(base_url=project.url, api_key=token, timeout=300,
                             httpx_client=http)
        annotators.append(Annotator(email, client, http, token))
    return annotators


def annotate(annotator: Annotator, project: LabelStudioProject, quota: int, truth: dict,
             traffic: Traffic, think_s: float, deadline: float) -> None:
    """Ask for the next task and save its true label, `quota` times (or until `deadline`)."""
    ROLE.name = "annotate"
    kind, labels = project.kind, project.labels
    next_url = f"{project.url}/api/projects/{project.project_id}/next/"
    headers = {"Authorization": f"Token {annotator.token}"}
    while len(annotator.saved) < quota and time.monotonic() < deadline:
        try:
            answer = annotator.http.get(next_url, headers=headers)
        except httpx.HTTPError:
            traffic.count(traffic.failures, "next (network)")
            time.sleep(0.5)
            continue
        if answer.status_code == 404:  # nothing to do until the next push
            annotator.waits += 1
            time.sleep(0.3)
            continue
        if answer.status_code != 200:  # the page would ask again: a retry by hand
            traffic.count(traffic.retries, "annotate")
            time.sleep(0.5)
            continue
        task = answer.json()
        label = truth[task["data"]["image_id"]]
        result = kind.result_from_target(Target(label=label), labels, (0, 0))
        started = time.monotonic()
        try:
            saved = annotator.client.annotations.create(id=task["id"], result=result)
        except Exception as error:  # noqa: BLE001 - counted; the next `next` serves it again
            traffic.count(traffic.failures, f"save ({type(error).__name__})")
            continue
        annotator.save_s.append(time.monotonic() - started)
        annotator.saved.append((int(task["id"]), int(saved.id)))
        if think_s:
            time.sleep(think_s)


# ---- alpha's rounds -------------------------------------------------------------------------
def push_rounds(project: LabelStudioProject, chunks: list[list[PushItem]], every_s: float,
                traffic: Traffic, pushed: list[str], stop: threading.Event) -> None:
    """Push each chunk as a round, `every_s` apart; a failed push is retried (as the
    round flow's task retries would) until it goes through."""
    ROLE.name = "push"
    for number, chunk in enumerate(chunks, start=1):
        if stop.wait(every_s):
            return
        for _ in range(10):
            try:
                project.push(chunk, "bench-v1", f"round-{number:04d}")
                pushed.extend(item.image_id for item in chunk)
                break
            except Exception as error:  # noqa: BLE001 - counted and retried
                traffic.count(traffic.failures, f"push ({type(error).__name__})")
                time.sleep(1.0)


def pull_loop(project: LabelStudioProject, every_s: float, traffic: Traffic,
              pulls: Counter, stop: threading.Event) -> None:
    ROLE.name = "pull"
    while not stop.wait(every_s):
        try:
            project.pull()
            pulls["ok"] += 1
        except Exception as error:  # noqa: BLE001 - counted; the next pull catches up
            traffic.count(traffic.failures, f"pull ({type(error).__name__})")


# ---- one run ------------------------------------------------------------------------------------
def settings_for(home: Path, run: str) -> Settings:
    """The settings of the stack under `home` (its stack.env), for this run's project."""
    return load_settings(
        env_file=home / "stack.env",
        s3={"prefix": f"bench-ls-{run}"},
        labelstudio={"project_title": f"alpha load bench {run}", "webhook_url": None,
                     "webhook_secret": None},
        task={"labels": LABELS},
    )


def project_for(home: Path, run: str, role: str, traffic: Traffic) -> LabelStudioProject:
    """A project object of its own per actor (its client counts as that actor)."""
    settings = settings_for(home, run)
    client = LabelStudio(base_url=settings.labelstudio.url,
                         api_key=settings.labelstudio.api_key.get_secret_value(),
                         timeout=300, httpx_client=traffic.client(role))
    return LabelStudioProject(settings, Store.from_settings(settings), client=client)


def load_run(home: Path, n: int, args: argparse.Namespace) -> dict:
    run = f"{uuid.uuid4().hex[:6]}-n{n}"
    traffic = Traffic()
    Traffic.active = traffic
    ROLE.name = "setup"
    setup = project_for(home, run, "setup", traffic)
    total = n * args.per_annotator
    items, truth = upload_images(setup.store, total, np.random.default_rng(n))
    try:
        setup.ensure_project()
        first, rest = items[: total // 2], items[total // 2:]
        setup.push(first, "bench-v1", "round-0000")
        pushed = [item.image_id for item in first]
        size = -(-len(rest) // args.pushes)
        chunks = [rest[i:i + size] for i in range(0, len(rest), size)]
        annotators = make_annotators(setup, n, run, traffic)
        stop, pulls = threading.Event(), Counter()
        pusher = threading.Thread(target=push_rounds, args=(
            project_for(home, run, "push", traffic), chunks, args.push_every_s, traffic,
            pushed, stop))
        puller = threading.Thread(target=pull_loop, args=(
            project_for(home, run, "pull", traffic), args.pull_every_s, traffic, pulls, stop))
        deadline = time.monotonic() + args.limit_s
        workers = [threading.Thread(target=annotate, args=(
            a, setup, args.per_annotator, truth, traffic, args.think_s, deadline))
            for a in annotators]
        started = time.monotonic()
        for thread in (pusher, puller, *workers):
            thread.start()
        for thread in workers:
            thread.join()
        annotating_s = time.monotonic() - started
        stop.set()
        pusher.join()
        puller.join()
        ROLE.name = "setup"
        setup.pull()
        return {"db": postgres.chosen_db(home), "annotators": n,
                **count(setup, annotators, pushed, items, traffic, annotating_s),
                "pulls": pulls["ok"] + 1}
    finally:
        cleanup(setup, setup.store)


def count(project: LabelStudioProject, annotators: list[Annotator], pushed: list[str],
          items: list[PushItem], traffic: Traffic, annotating_s: float) -> dict:
    """What Label Studio and the bucket hold against what was pushed and saved."""
    tasks = list(project._list_tasks("id,data,total_annotations"))
    per_image = Counter(project._image_id_of(t["data"]) for t in tasks)
    annotated = [int(t["id"]) for t in tasks if t.get("total_annotations")]
    exported = {int(t["id"]): t for t in project._export(annotated)}
    in_ls = {int(a["id"]): task_id for task_id, t in exported.items()
             for a in t.get("annotations") or []}
    saved = [pair for a in annotators for pair in a.saved]
    records = read_all_records(project.store)
    by_image: dict[str | None, set[int]] = {}
    for task in exported.values():
        by_image.setdefault(project._image_id_of(task["data"]), set()).update(
            int(a["id"]) for a in task.get("annotations") or [])
    lost_in_ls = sum(annotation_id not in in_ls for _, annotation_id in saved)
    # An annotated image is lost to the bucket unless its record names one of its annotations.
    lost_in_s3 = sum(image_id not in records or records[image_id].ls_annotation_id not in ids
                     for image_id, ids in by_image.items())
    errors = Counter()
    for (_role, endpoint, status), hits in traffic.statuses.items():
        if status >= 400 and not (endpoint == "next" and status == 404):
            errors[status] += hits
    saves = [s for a in annotators for s in a.save_s]
    queued = set(pushed)
    return {
        "saved": len(saved),
        "requests": sum(traffic.statuses.values()),
        "errors": dict(sorted(errors.items())),
        "retries": sum(traffic.retries.values()),
        "retries_by_actor": dict(traffic.retries),
        "failed": dict(traffic.failures),
        "lost_annotations": lost_in_ls + lost_in_s3,
        "duplicated_annotations": sum(len(t.get("annotations") or []) - 1
                                      for t in exported.values() if t.get("annotations")),
        "lost_tasks": sum(per_image[item.image_id] == 0 for item in items
                          if item.image_id in queued),
        "unpushed": len(items) - len(queued),
        "duplicated_tasks": sum(c - 1 for c in per_image.values() if c > 1),
        "annotations_per_s": len(saved) / annotating_s,
        "save_p50_ms": 1000 * statistics.median(saves) if saves else None,
        "save_p95_ms": 1000 * float(np.percentile(saves, 95)) if saves else None,
        "empty_queue_waits": sum(a.waits for a in annotators),
        "seconds": annotating_s,
    }


def table(rows: list[dict]) -> str:
    head = ("| db | annotators | annotations | requests | errors by status | retries | "
            "failed after retries | lost ann. / tasks | duplicated ann. / tasks | "
            "annotations/s | save p50 / p95 (ms) | `next` without a task | pulls |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
        failed = ", ".join(f"{k}: {v}" for k, v in r["failed"].items()) or "none"
        lines.append(
            f"| {r['db']} | {r['annotators']} | {r['saved']} | {r['requests']} | {errors} | "
            f"{r['retries']} | {failed} | {r['lost_annotations']} / {r['lost_tasks']} | "
            f"{r['duplicated_annotations']} / {r['duplicated_tasks']} | "
            f"{r['annotations_per_s']:.1f} | {r['save_p50_ms']:.0f} / {r['save_p95_ms']:.0f} | "
            f"{r['empty_queue_waits']} | {r['pulls']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, action="append",
                        help="ALPHA_HOME of a running stack (repeat for each database)")
    parser.add_argument("--annotators", default="1,4,8", help="N values, comma-separated")
    parser.add_argument("--per-annotator", type=int, default=20, help="tasks each annotates")
    parser.add_argument("--pushes", type=int, default=3, help="rounds pushed during the run")
    parser.add_argument("--push-every-s", type=float, default=3.0)
    parser.add_argument("--pull-every-s", type=float, default=2.0)
    parser.add_argument("--think-s", type=float, default=0.0,
                        help="pause after each save (0: as fast as the server answers)")
    parser.add_argument("--limit-s", type=float, default=300.0, help="per run, at most")
    args = parser.parse_args()
    homes = args.home or [Path(".alpha")]
    _count_sdk_retries()
    rows = []
    for home in homes:
        for n in (int(v) for v in args.annotators.split(",")):
            row = load_run(home.resolve(), n, args)
            print(row, flush=True)
            rows.append(row)
    print(table(rows))


if __name__ == "__main__":
    main()

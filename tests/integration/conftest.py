"""Fixtures for integration tests against the REAL local stack (S3, Label Studio).

Each test module gets its own S3 prefix and Label Studio project (unique names), real PNG
digits under `images/`, and removes both afterwards, so modules never see each other's data.
When the stack is not running the whole folder is skipped with the reason, except on CI
(`CI=true`), where a missing stack is a failure: a green CI run must have really tested it.
"""

from __future__ import annotations

import io
import json
import os
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageColor
from sklearn.datasets import load_digits

from alpha.config import Settings, alpha_home, load_settings
from alpha.errors import ConfigError
from alpha.ingest import ingest_folder
from alpha.kinds import get_kind
from alpha.kinds.base import Target
from alpha.labelstudio import LabelStudioProject, PushItem
from alpha.loop import RoundContext, open_context
from alpha.store import Store, image_id_from_key
from infra import stack

LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
N_IMAGES = 16
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def _why_unusable() -> str | None:
    """Why the integration tests cannot run here, or None when S3 and Label Studio can."""
    try:
        services = {s["service"]: s for s in stack.status()}
    except Exception as error:  # no stack folder, unreadable PID files...
        return f"cannot read the local stack's status: {error}"
    down = [name for name in ("s3", "labelstudio") if not services.get(name, {}).get("healthy")]
    if down:
        return (f"local stack not healthy ({', '.join(down)} down under "
                f"ALPHA_HOME={alpha_home()}): run `alpha stack up`")
    try:
        load_settings(task={"labels": LABELS})
    except ConfigError as error:
        return f"the stack's settings under ALPHA_HOME={alpha_home()} do not load: {error}"
    return None


@pytest.fixture(scope="session", autouse=True)
def stack_is_up() -> None:
    """Skip (or on CI fail) unless S3 and Label Studio answer and their settings load."""
    reason = _why_unusable()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def ls_credentials(stack_is_up) -> dict:
    """The Label Studio login the stack generated (for the browser test)."""
    creds = json.loads((alpha_home() / "stack" / "credentials.json").read_text())
    return {"username": creds["ls_username"], "password": creds["ls_password"]}


@pytest.fixture(scope="module")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def settings(stack_is_up, run_id) -> Settings:
    return load_settings(
        s3={"prefix": f"it-{run_id}"},
        labelstudio={"project_title": f"alpha integration test {run_id}"},
        task={"labels": LABELS},
    )


@pytest.fixture(scope="module")
def store(settings):
    store = Store.from_settings(settings)
    store.ensure_bucket()
    yield store
    keys = list(store.list_keys(""))
    for start in range(0, len(keys), 1000):
        store.client.delete_objects(
            Bucket=store.bucket,
            Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True},
        )


@dataclass(frozen=True)
class DigitImage:
    image_id: str
    key: str
    label: str
    png: bytes


def digit_png(pixels: np.ndarray) -> bytes:
    """An 8x8 sklearn digit (0..16) as a 32x32 grayscale PNG."""
    array = (np.asarray(pixels).reshape(8, 8) * (255 / 16)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).resize((32, 32), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(store) -> list[DigitImage]:
    """N_IMAGES real digit images uploaded under `images/`, with their true labels."""
    digits = load_digits()
    out = []
    for index in range(N_IMAGES):
        relative = f"digits/{index:03d}.png"
        key = store.image_key(relative)
        png = digit_png(digits.data[index])
        store.put_bytes(key, png, "image/png")
        out.append(DigitImage(image_id_from_key(relative), key, LABELS[digits.target[index]], png))
    return out


@pytest.fixture(scope="module")
def truth(images) -> dict[str, str]:
    return {image.image_id: image.label for image in images}


def make_push_items(images: list[DigitImage], seed: int = 0) -> list[PushItem]:
    """Fake model output for images: the best of random probabilities as the pre-annotation,
    its probability as the confidence."""
    rng = np.random.default_rng(seed)
    items = []
    for image in images:
        pre = get_kind("classification").pre_annotation(rng.dirichlet(np.ones(len(LABELS))),
                                                        LABELS)
        items.append(PushItem(image.image_id, image.key, pre.result, pre.score))
    return items


@pytest.fixture(scope="session")
def push_items():
    """`push_items(images, seed=0)`: PushItems with made-up model output for those images."""
    return make_push_items


@pytest.fixture(scope="session")
def labels() -> list[str]:
    return list(LABELS)


@contextmanager
def open_project(settings: Settings, store: Store) -> Iterator[LabelStudioProject]:
    """The module's Label Studio project, deleted afterwards."""
    project = LabelStudioProject(settings, store)
    yield project
    found = project._find_project()  # by title: also catches a project a failed test made
    if found is not None:
        project.client.projects.delete(id=found["id"])


@pytest.fixture(scope="module")
def project(settings, store, images):
    with open_project(settings, store) as project:
        yield project


def semantic_settings(name: str, run_id: str, labels: list[str], kind: str = "semantic",
                      **options) -> Settings:
    """Settings of a module's own prefix and project for a mask kind (semantic unless
    `kind` says another; `options`: its [task.options])."""
    return load_settings(
        s3={"prefix": f"it-{name}-{run_id}"},
        labelstudio={"project_title": f"alpha {name} test {run_id}"},
        task={"kind": kind, "labels": labels, "options": options},
    )


def label_colours(config: str) -> dict[str, tuple[int, int, int]]:
    """label -> the RGB of its `background` in the brush control of a label config."""
    brush = ET.fromstring(config).find(".//BrushLabels")
    assert brush is not None, config
    return {label.get("value"): ImageColor.getrgb(label.get("background"))[:3]
            for label in brush.findall("Label")}


@pytest.fixture(scope="session")
def label_colours_of():
    """`label_colours(config)`, for the browser tests that look for painted labels."""
    return label_colours


@pytest.fixture(scope="session")
def project_opener():
    """`open_project(settings, store)`, for modules that make their own project fixture."""
    return open_project


@pytest.fixture(scope="session")
def semantic_settings_for():
    """`semantic_settings(name, run_id, labels, kind=...)`, for the segmentation modules."""
    return semantic_settings


def make_digits_project(folder: Path, seed_per_class: int, pool: int, batch: int,
                        loop_toml: str = "", names: list[str] | None = None,
                        train_toml: str = "") -> tuple[Path, RoundContext, dict[str, str]]:
    """A fresh project of real sklearn digits (8x8) ingested from `folder`: `seed_per_class`
    seed labels of each digit and a pool of `pool` unlabeled ones; returns the config file,
    its context and the pool's truth (image id -> label) for the simulated annotator.
    `loop_toml` and `train_toml` add lines to the config's `[loop]` and `[train]` sections;
    `names` are the class names of the digits 0..9 (default "0".."9")."""
    names = names or [str(d) for d in range(10)]
    digits = load_digits()
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.target))
    seed: list[int] = []
    for c in range(10):
        seed += [i for i in order if digits.target[i] == c][:seed_per_class]
    chosen = set(seed)
    pooled = [i for i in order if i not in chosen][:pool]
    truth = {}
    for i in seed + pooled:
        name = f"digit-{i:04d}.png"
        Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).save(images / name)
        if i in pooled:
            truth[image_id_from_key(name)] = names[digits.target[i]]
    (folder / "seed.csv").write_text(
        "".join(f"digit-{i:04d}.png,{names[digits.target[i]]}\n" for i in seed))
    prefix = f"test-flow-{uuid.uuid4().hex[:8]}"
    config = folder / "alpha.toml"
    config.write_text(
        f'[s3]\nprefix = "{prefix}"\n'
        f'[labelstudio]\nproject_title = "alpha test {prefix}"\n'
        f"[task]\nlabels = {json.dumps(names)}\n"
        f"[train]\nimage_size = 8\nepochs = 15\n{train_toml}"
        f"[loop]\nbatch_size = {batch}\n{loop_toml}"
    )
    ctx = open_context(config)
    report = ingest_folder(ctx.store, ctx.settings, images, folder / "seed.csv")
    assert report.uploaded == len(seed) + pool and report.seed_labels == len(seed)
    return config, ctx, truth


@pytest.fixture(scope="session")
def digits_project_maker():
    """`make_digits_project(folder, seed_per_class, pool, batch, loop_toml="", names=None,
    train_toml="")`."""
    return make_digits_project


@contextmanager
def first_digits_project(folder: Path, tag: str, loop_toml: str
                         ) -> Iterator[tuple[Path, RoundContext, dict[str, str]]]:
    """A project of 30 seed labels (the first 3 of each digit) and a pool of the next 60 of
    the first 200 real digits, trained small (8x8, at least 60 steps, 5 epochs): (config,
    context, truth of every image). `loop_toml` is the config's [loop] section; the Label
    Studio project is deleted afterwards."""
    digits = load_digits()
    images = folder / "images"
    images.mkdir()
    seed = [int(np.flatnonzero(digits.target == c)[k]) for c in range(10) for k in range(3)]
    pool = [i for i in range(200) if i not in seed][:60]
    truth = {}
    for i in seed + pool:
        pixels = (digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"{tag}-{i:04d}.png")
        truth[image_id_from_key(f"{tag}-{i:04d}.png")] = str(digits.target[i])
    (folder / "seed.csv").write_text("".join(f"{tag}-{i:04d}.png,{digits.target[i]}\n"
                                             for i in seed))
    prefix = f"test-{tag}-{uuid.uuid4().hex[:8]}"
    config = folder / "alpha.toml"
    config.write_text(
        f'[s3]\nprefix = "{prefix}"\n[labelstudio]\nproject_title = "alpha test {prefix}"\n'
        '[task]\nlabels = ["0","1","2","3","4","5","6","7","8","9"]\n'
        "[train]\nimage_size = 8\nmin_steps = 60\nepochs = 5\n"
        f"[loop]\n{loop_toml}"
    )
    ctx = open_context(config)
    ingest_folder(ctx.store, ctx.settings, images, folder / "seed.csv")
    yield config, ctx, truth
    found = ctx.project._find_project()
    if found is not None:
        ctx.project.client.projects.delete(id=found["id"])


@pytest.fixture(scope="session")
def first_digits_maker():
    """`first_digits_project(folder, tag, loop_toml)`, a context manager."""
    return first_digits_project


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def open_task_page(page, project: LabelStudioProject, credentials: dict, task_id: int,
                   width: int) -> None:
    """Log in as a person does and open a task's labeling page until its image (of natural
    width `width`) is drawn: the page fetches it from S3 (a CORS request) into a blob."""
    page.goto(f"{project.url}/user/login/")
    page.fill("input[name=email]", credentials["username"])
    page.fill("input[name=password]", credentials["password"])
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url, timeout=30_000)
    page.goto(f"{project.url}/projects/{project.project_id}/data?task={task_id}")
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('img')).some("
        f"i => i.src.startsWith('blob:') && i.complete && i.naturalWidth === {width})",
        timeout=60_000,
    )


@pytest.fixture(scope="session")
def task_page():
    """`open_task_page(page, project, credentials, task_id, width)` for the browser tests."""
    return open_task_page


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, through Playwright (skipped where either is missing)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM}: `apt-get install chromium`")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class FinishedRounds:
    """A digits project after two real rounds on the stack (see `finished_rounds`)."""

    config: Path
    ctx: RoundContext
    summaries: list[dict]
    flow_run_ids: list
    second_annotator: str
    overlapped: list[str]  # image ids a second person annotated too
    skipped: str  # the image id the second person skipped


@pytest.fixture(scope="session")
def finished_rounds(stack_is_up, tmp_path_factory) -> Iterator[FinishedRounds]:
    """Two rounds of a small digits project as flow runs on the Prefect server, with real
    annotations in between: the simulated annotator labels 7 of round 1's 10 tasks, the
    API token's own user labels 3 of those again with a lead time (two agreeing, one not)
    and skips one more task, and 2 tasks stay in the queue. For the report, artifact and
    status tests; removed afterwards (Label Studio project and bucket prefix)."""
    from alpha.simulate import simulate_annotations
    from flows.round import active_learning_round

    config, ctx, truth = make_digits_project(tmp_path_factory.mktemp("rounds"), 3, 60, 10,
                                             names=LABELS, train_toml="min_steps = 60\n")
    states = [active_learning_round(config_file=str(config), return_state=True)]
    project = ctx.project
    simulated = simulate_annotations(project, truth, random_state=0, limit=7)
    assert simulated.annotated == 7
    overlapped = []
    images_of = {task: image for image, task in project.task_image_ids().items()}
    for number, task_id in enumerate(simulated.task_ids[:3]):
        image_id = images_of[task_id]
        label = truth[image_id] if number < 2 else LABELS[(LABELS.index(truth[image_id]) + 1) % 10]
        project.client.annotations.create(
            id=task_id, result=project.kind.result_from_target(
                Target(label=label), project.labels, (0, 0)), lead_time=20.0 + 10 * number)
        overlapped.append(image_id)
    waiting = project.unannotated_tasks()
    skipped_task, skipped = next(iter(waiting.items()))
    project.client.annotations.create(id=skipped_task, result=[], was_cancelled=True,
                                      lead_time=5.0)
    states.append(active_learning_round(config_file=str(config), return_state=True))
    assert all(state.is_completed() for state in states), states
    me = project._request("GET", "api/current-user/whoami")
    try:
        yield FinishedRounds(
            config=config, ctx=ctx, summaries=[s.result() for s in states],
            flow_run_ids=[s.state_details.flow_run_id for s in states],
            second_annotator=me.get("email") or me.get("username"), overlapped=overlapped,
            skipped=str(skipped))
    finally:
        found = project._find_project()
        if found is not None:
            project.client.projects.delete(id=found["id"])
        keys = list(ctx.store.list_keys(""))
        for start in range(0, len(keys), 1000):
            ctx.store.client.delete_objects(Bucket=ctx.store.bucket, Delete={
                "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})

"""A pushed segmentation task, opened by a person's browser: the image AND its mask show.

Brush pre-annotations that never render are a known Label Studio failure (issues #7998,
#4084, #6279), which no API call can see: this opens the task in headless Chromium (Debian's,
through Playwright), waits for the image, then reads the pixels Label Studio painted on its
Konva canvases, and counts the label's colour in a screenshot of the page.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alpha.kinds import get_kind
from alpha.kinds.base import Target
from alpha.labelstudio import PushItem
from alpha.store import Store

pytestmark = pytest.mark.integration

LABELS = ["background", "square", "disc"]
W, H = 160, 120
SHOT_COPY = Path("/tmp/semantic_browser.png")

# Per canvas: its size, how many pixels are painted at all, and how many of those have the
# label's colour in the left and the right half (Konva keeps each layer on its own canvas).
CANVAS_PIXELS = """([r, g, b]) => Array.from(document.querySelectorAll('canvas')).map(c => {
  let ctx = null;
  try { ctx = c.getContext('2d', {willReadFrequently: true}); } catch (e) {}
  if (!ctx || !c.width || !c.height) return {width: c.width, height: c.height, painted: 0,
                                             left: 0, right: 0};
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let painted = 0, left = 0, right = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] === 0) continue;
    painted++;
    if (Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 60) {
      if ((i / 4) % c.width < c.width / 2) left++; else right++;
    }
  }
  return {width: c.width, height: c.height, painted, left, right};
})"""
# Whether the canvases show the image on one layer and the class colour over about half of it
# on another layer of the same size.
SETTLED = """cs => {
  const painted = cs.filter(c => c.painted > 0);
  if (painted.length < 2) return false;
  const image = painted.reduce((a, c) => c.painted > a.painted ? c : a);
  const mask = painted.reduce((a, c) => c.left > a.left ? c : a);
  const area = image.width * image.height;
  return image !== mask && mask.width === image.width && mask.height === image.height
    && image.painted > 0.9 * area && mask.left > 0.45 * area && mask.left < 0.55 * area;
}"""


@pytest.fixture(scope="module")
def settings(stack_is_up, run_id, semantic_settings_for):
    """Overrides conftest's: this module's prefix and project, for the semantic kind."""
    return semantic_settings_for("sembrowser", run_id, LABELS)


@pytest.fixture(scope="module")
def project(settings, store, project_opener):
    """Overrides conftest's: no digit images, the semantic label config."""
    with project_opener(settings, store) as project:
        yield project






def saturation(rgb: tuple[int, int, int]) -> int:
    return max(rgb) - min(rgb)


def test_a_pushed_mask_is_painted_over_its_image(browser, project, store, settings,
                                                 ls_credentials, task_page, tmp_path,
                                                 label_colours_of):
    kind = get_kind("semantic")
    colours = label_colours_of(kind.label_config(LABELS, settings.task.options))
    # The most colourful class, so that its paint cannot be mistaken for the grey image.
    label = max(LABELS[1:], key=lambda name: saturation(colours[name]))
    colour = colours[label]
    assert saturation(colour) >= 80, colours

    yy, xx = np.mgrid[:H, :W]
    grey = (50 + 60 * ((xx // 20 + yy // 20) % 2)).astype(np.uint8)  # a grey checkerboard
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="PNG")
    key = store.image_key("browser/checkers.png")
    store.put_bytes(key, buffer.getvalue(), "image/png")
    image_id = store.image_id_for(key)
    mask = np.full((H, W), 255, np.uint8)  # unlabelled, but for the left half
    mask[:, : W // 2] = LABELS.index(label)
    result = kind.result_from_target(Target(mask=mask), LABELS, (W, H))
    assert len(result) == 1 and result[0]["value"]["brushlabels"] == [label]
    task_id = project.push([PushItem(image_id, key, result, 0.4)], model_version="m-sem-browser",
                           round_id="r-sem-browser").created[image_id]

    context = browser.new_context(viewport={"width": 1400, "height": 900},
                                  service_workers="block")
    page = context.new_page()
    task_page(page, project, ls_credentials, task_id, W)
    # The brush region is drawn on a canvas of its own once the image has been laid out; the
    # stage is resized while the panels settle, so wait for the painting to be complete.
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):  # if never, the assertions below say why
        page.wait_for_function(f"colour => ({SETTLED})(({CANVAS_PIXELS})(colour))",
                               arg=list(colour), timeout=60_000)
    page.get_by_text("m-sem-browser").first.wait_for(timeout=10_000)
    page.wait_for_timeout(300)
    canvases = page.evaluate(CANVAS_PIXELS, list(colour))
    shot = tmp_path / "semantic_labeling.png"
    page.screenshot(path=str(shot))
    context.close()
    shutil.copyfile(shot, SHOT_COPY)

    stage = [c for c in canvases if c["painted"] > 0]
    image_layer = max(stage, key=lambda c: c["painted"])  # the image covers its whole stage
    mask_layer = max(stage, key=lambda c: c["left"])
    area = image_layer["width"] * image_layer["height"]
    assert image_layer is not mask_layer and image_layer["painted"] > 0.9 * area, canvases
    assert (mask_layer["width"], mask_layer["height"]) == (image_layer["width"],
                                                           image_layer["height"]), canvases
    # The mask's layer holds the class colour over the left half of the image, nothing else.
    assert 0.45 * area <= mask_layer["left"] <= 0.55 * area, canvases
    assert mask_layer["right"] < 0.01 * area and mask_layer["painted"] < 0.56 * area, canvases

    # And a person sees it: the screenshot is tinted towards the class colour over half of
    # the (upscaled) image, far more than the label's small badges in the side panels.
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64).reshape(-1, 3)
    tint = pixels - pixels.mean(axis=1, keepdims=True)
    direction = np.asarray(colour, np.float64) - np.mean(colour)
    direction /= np.linalg.norm(direction)
    along = tint @ direction
    tinted = int(((along > 25) & (along > 0.9 * np.linalg.norm(tint, axis=1))).sum())
    assert tinted > 0.4 * area, (tinted, area)


# ---- the uncertainty map beside the image ----------------------------------------------------
HEAT_SHOT_COPY = Path("/tmp/semantic_uncertainty_browser.png")
# How many blob images of natural width W are drawn: the image, then the uncertainty map.
DRAWN_IMAGES = f"""() => Array.from(document.querySelectorAll('img')).filter(
  i => i.src.startsWith('blob:') && i.complete && i.naturalWidth === {W}).length"""


@pytest.fixture(scope="module")
def heat_project(stack_is_up, run_id, semantic_settings_for, project_opener):
    """A project of its own whose label config shows the uncertainty map."""
    heat = semantic_settings_for("semheat", run_id, LABELS, uncertainty_map=True)
    heat_store = Store.from_settings(heat)
    with project_opener(heat, heat_store) as project:
        yield project, heat_store
    keys = list(heat_store.list_keys(""))
    if keys:
        heat_store.client.delete_objects(Bucket=heat_store.bucket, Delete={
            "Objects": [{"Key": k} for k in keys], "Quiet": True})


def test_the_uncertainty_map_is_shown_under_the_image(browser, heat_project, ls_credentials,
                                                       task_page, tmp_path):
    from alpha.heatmaps import heatmap_png, heatmap_rgb

    project, store = heat_project
    kind = get_kind("semantic")
    grey = np.full((H, W), 120, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="PNG")
    key = store.image_key("browser/grey.png")
    store.put_bytes(key, buffer.getvalue(), "image/png")
    image_id = store.image_id_for(key)
    unsure = np.zeros((H, W))
    unsure[:, : W // 2] = 1.0  # unsure on the left (bright yellow), sure-ish on the right
    unsure[:, W // 2 :] = 0.25  # (purple): two colours a grey image and the UI cannot make
    heat_key = store.task_image_key(kind.UNCERTAINTY_KEY, image_id)
    store.put_bytes(heat_key, heatmap_png(unsure), "image/png")
    mask = np.zeros((H, W), np.uint8)
    result = kind.result_from_target(Target(mask=mask), LABELS, (W, H))
    item = PushItem(image_id, key, result, 0.4, {kind.UNCERTAINTY_KEY: heat_key})
    task_id = project.push([item], model_version="m-sem-heat",
                           round_id="r-sem-heat").created[image_id]

    context = browser.new_context(viewport={"width": 1400, "height": 1400},
                                  service_workers="block")
    page = context.new_page()
    task_page(page, project, ls_credentials, task_id, W)
    page.wait_for_function(f"({DRAWN_IMAGES})() >= 2", timeout=60_000)
    page.get_by_text("m-sem-heat").first.wait_for(timeout=10_000)
    page.wait_for_timeout(500)
    shot = tmp_path / "semantic_uncertainty.png"
    page.screenshot(path=str(shot), full_page=True)
    context.close()
    shutil.copyfile(shot, HEAT_SHOT_COPY)

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int64)
    half = W // 2 * H  # each colour covers half the map, shown at least at its natural size
    for value in (1.0, 0.25):
        colour = heatmap_rgb(np.array([[value]]))[0, 0].astype(np.int64)
        near = int((np.abs(pixels - colour).sum(axis=2) < 30).sum())
        assert near > 0.9 * half, (value, colour.tolist(), near, half)

"""A pushed instance task, opened by a person's browser: one region per object shows.

The instance kind pushes one brush region per object, so that annotators can fix, delete or
relabel each object by itself. That only holds if Label Studio keeps the regions apart on the
page: two touching objects of one class must not look (or behave) like one blob, which no API
call can see. This opens such a task in headless Chromium (Debian's, through Playwright) and
checks what a person gets: the editor's region list (the outliner) names three regions with
their classes, each object's area on the Konva canvas is painted in its class's colour on a
layer of its own, and hiding one of the two touching cells from the list greys out only that
cell in a screenshot.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from alpha.config import Settings
from alpha.kinds import get_kind
from alpha.kinds.base import Target
from alpha.labelstudio import PushItem

pytestmark = pytest.mark.integration

LABELS = ["cell", "blob"]
W, H = 120, 90
GREY = 100  # the image: one flat grey, so any colour on it is Label Studio's paint
# Objects by id: (class, x0, x1, y0, y1) in image pixels, ends exclusive. 1 and 2 touch at
# x = 35 and share a class; only the region boundary keeps them apart.
OBJECTS: dict[int, tuple[str, int, int, int, int]] = {
    1: ("cell", 10, 35, 20, 60),
    2: ("cell", 35, 60, 20, 60),
    3: ("blob", 80, 110, 30, 70),
}
UNION = (10, 110, 20, 70)  # the box around all objects (x0, x1, y0, y1)
MODEL_VERSION = "m-obj-browser"
SHOT_COPY = Path("/tmp/object_browser.png")
HIDDEN_SHOT_COPY = Path("/tmp/object_browser_hidden.png")

# The editor's region list: Label Studio 1.23's outliner is an ARIA tree in the Regions tab,
# one treeitem per region, the label's name as text.
REGION_TREE = ".lsf-outliner [role=tree]"
VISIBILITY = ".lsf-outliner-item__control_type_visibility button"  # shown on hover

# Per canvas (Konva keeps each layer, and each brush region, on a canvas of its own): its
# size, where it lies on the page, whether it is displayed, how many pixels are painted at
# all, and for each colour the count and bounding box of the pixels of about that colour.
CANVAS_PIXELS = """colours => Array.from(document.querySelectorAll('canvas')).map(c => {
  const r = c.getBoundingClientRect();
  const out = {width: c.width, height: c.height, left: r.left, top: r.top, cssWidth: r.width,
               cssHeight: r.height, shown: getComputedStyle(c).display !== 'none',
               painted: 0, colours: colours.map(() => ({count: 0, box: null}))};
  let ctx = null;
  try { ctx = c.getContext('2d', {willReadFrequently: true}); } catch (e) {}
  if (!ctx || !c.width || !c.height) return out;
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] === 0) continue;
    out.painted++;
    colours.forEach(([R, G, B], k) => {
      if (Math.abs(d[i] - R) + Math.abs(d[i + 1] - G) + Math.abs(d[i + 2] - B) >= 60) return;
      const x = (i / 4) % c.width, y = Math.floor(i / 4 / c.width), s = out.colours[k];
      s.count++;
      s.box = s.box ? [Math.min(s.box[0], x), Math.min(s.box[1], y), Math.max(s.box[2], x),
                       Math.max(s.box[3], y)] : [x, y, x, y];
    });
  }
  return out;
})"""
# Whether three displayed canvases carry label paint, with boxes of the objects' union's
# proportions (the stage is resized while the panels settle).
SETTLED = """cs => {
  const layers = cs.filter(c => c.shown && c.colours.some(s => s.count > 100));
  if (layers.length !== 3) return false;
  const boxes = layers.map(c => c.colours.find(s => s.count > 100).box);
  const x0 = Math.min(...boxes.map(b => b[0])), x1 = Math.max(...boxes.map(b => b[2]));
  const y0 = Math.min(...boxes.map(b => b[1])), y1 = Math.max(...boxes.map(b => b[3]));
  const ratio = (x1 - x0 + 1) / (y1 - y0 + 1);
  return Math.abs(ratio - RATIO) < 0.1;
}""".replace("RATIO", repr((UNION[1] - UNION[0]) / (UNION[3] - UNION[2])))


@pytest.fixture(scope="module")
def settings(stack_is_up, run_id, semantic_settings_for) -> Settings:
    """Overrides conftest's: this module's prefix and project, for the instance kind."""
    return semantic_settings_for("objbrowser", run_id, LABELS, kind="instance")


@pytest.fixture(scope="module")
def project(settings, store, project_opener):
    """Overrides conftest's: no digit images, the instance label config."""
    with project_opener(settings, store) as project:
        yield project




def id_mask() -> np.ndarray:
    """The objects as an instance-id mask (uint16, 0 = background)."""
    mask = np.zeros((H, W), np.uint16)
    for ident, (_, x0, x1, y0, y1) in OBJECTS.items():
        mask[y0:y1, x0:x1] = ident
    return mask


def region_layers(canvases: list[dict]) -> list[dict]:
    """The displayed canvases that carry label paint, each as {canvas, label index, box}."""
    layers = []
    for canvas in canvases:
        hits = [k for k, s in enumerate(canvas["colours"]) if s["count"] > 100]
        if canvas["shown"] and hits:
            assert len(hits) == 1, ("a region layer in two label colours", canvas)
            layers.append({"canvas": canvas, "label": hits[0],
                           "box": canvas["colours"][hits[0]]["box"]})
    return layers


def in_image(box: list[int], union: tuple[int, int, int, int]) -> tuple[float, ...]:
    """A canvas box (x0, y0, x1, y1 inclusive) in image pixels (x0, x1, y0, y1, ends
    exclusive), placing the union of all region boxes `union` on the objects' UNION: the
    stage's zoom and offset are Label Studio's layout, not ours."""
    ux0, uy0, ux1, uy1 = union
    sx = (ux1 + 1 - ux0) / (UNION[1] - UNION[0])
    sy = (uy1 + 1 - uy0) / (UNION[3] - UNION[2])
    return (UNION[0] + (box[0] - ux0) / sx, UNION[0] + (box[2] + 1 - ux0) / sx,
            UNION[2] + (box[1] - uy0) / sy, UNION[2] + (box[3] + 1 - uy0) / sy)


def union_of(boxes: list[list[int]]) -> tuple[int, int, int, int]:
    """The box around canvas boxes: where all objects together lie on the stage."""
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
            max(b[3] for b in boxes))


def seen_colour_shares(shot: Path, layer: dict[str, Any],
                       colours: list[tuple[int, int, int]]) -> list[float]:
    """In a screenshot, the share of the middle of a region's box (its inner half, clear of
    blurred edges) whose tint points to each label colour, and last the share that is plain
    grey (the image showing through)."""
    canvas, (x0, y0, x1, y1) = layer["canvas"], layer["box"]
    scale_x, scale_y = canvas["cssWidth"] / canvas["width"], canvas["cssHeight"] / canvas["height"]
    left, top = canvas["left"] + x0 * scale_x, canvas["top"] + y0 * scale_y
    width, height = (x1 + 1 - x0) * scale_x, (y1 + 1 - y0) * scale_y
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    middle = pixels[int(top + height / 4):int(top + 3 * height / 4),
                    int(left + width / 4):int(left + 3 * width / 4)].reshape(-1, 3)
    assert len(middle) > 100, (layer, pixels.shape)
    tint = middle - middle.mean(axis=1, keepdims=True)
    strength = np.linalg.norm(tint, axis=1)
    shares = []
    for colour in colours:
        direction = np.asarray(colour, np.float64) - np.mean(colour)
        direction /= np.linalg.norm(direction)
        along = tint @ direction
        shares.append(float(((along > 25) & (along > 0.9 * strength)).mean()))
    grey = (strength < 10) & (np.abs(middle.mean(axis=1) - GREY) < 15)
    return [*shares, float(grey.mean())]


def test_a_pushed_instance_task_shows_one_region_per_object(
        browser, project, store, settings, ls_credentials, task_page, tmp_path,
        label_colours_of):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    kind = get_kind("instance")
    by_label = label_colours_of(kind.label_config(LABELS, settings.task.options))
    colours = [by_label[label] for label in LABELS]
    assert np.abs(np.subtract(*colours)).sum() > 150, by_label  # told apart on sight

    buffer = io.BytesIO()
    Image.fromarray(np.full((H, W), GREY, np.uint8), mode="L").save(buffer, format="PNG")
    key = store.image_key("browser/objects.png")
    store.put_bytes(key, buffer.getvalue(), "image/png")
    image_id = store.image_id_for(key)
    segments = [{"id": ident, "label": label, "isthing": True}
                for ident, (label, *_) in OBJECTS.items()]
    result = kind.result_from_target(Target(mask=id_mask(), segments=segments), LABELS, (W, H))
    assert [(r["id"], r["value"]["brushlabels"]) for r in result] == [
        (f"instance-{ident}", [label]) for ident, (label, *_) in OBJECTS.items()], result
    task_id = project.push([PushItem(image_id, key, result, 0.4)], model_version=MODEL_VERSION,
                           round_id="r-obj-browser").created[image_id]

    context = browser.new_context(viewport={"width": 1400, "height": 900},
                                  service_workers="block")
    try:
        page = context.new_page()
        task_page(page, project, ls_credentials, task_id, W)
        page.get_by_text(MODEL_VERSION).first.wait_for(timeout=10_000)

        # (1) The region list names three regions: cell, cell, blob, each in its colour.
        items = page.locator(REGION_TREE).get_by_role("treeitem")
        expect(items).to_have_count(len(OBJECTS), timeout=30_000)
        names = [text.split("\n")[-1].strip() for text in items.all_inner_texts()]
        assert Counter(names) == Counter(label for label, *_ in OBJECTS.values()), names
        for item, name in zip(items.all(), names, strict=True):
            r, g, b = by_label[name]
            assert f"rgb({r},{g},{b})" in (item.get_attribute("style") or "").replace(" ", ""), (
                name, item.get_attribute("style"))

        # (2) The paint: each object on a canvas of its own, in its class's colour, where the
        # object is. The stage is resized while the panels settle: wait for the layout.
        with contextlib.suppress(PlaywrightTimeout):  # if never, the assertions say why
            page.wait_for_function(f"colours => ({SETTLED})(({CANVAS_PIXELS})(colours))",
                                   arg=[list(c) for c in colours], timeout=60_000)
        page.wait_for_timeout(300)
        canvases = page.evaluate(CANVAS_PIXELS, [list(c) for c in colours])
        shot = tmp_path / "object_labeling.png"
        page.screenshot(path=str(shot))
        shutil.copyfile(shot, SHOT_COPY)

        layers = region_layers(canvases)
        assert len(layers) == len(OBJECTS), canvases  # the touching cells: two layers
        union = union_of([layer["box"] for layer in layers])
        sx = (union[2] + 1 - union[0]) / (UNION[1] - UNION[0])
        sy = (union[3] + 1 - union[1]) / (UNION[3] - UNION[2])
        assert sx > 2 and abs(sx - sy) < 0.05 * sx, (union, sx, sy)  # an undistorted zoom
        unmatched = dict(OBJECTS)
        for layer in layers:
            x0, x1, y0, y1 = in_image(layer["box"], union)
            ident = next((i for i, (_, a0, a1, b0, b1) in unmatched.items()
                          if max(abs(x0 - a0), abs(x1 - a1), abs(y0 - b0), abs(y1 - b1)) < 1.5),
                         None)
            assert ident is not None, ("a region where no object is", (x0, x1, y0, y1),
                                       unmatched, layers)
            label, a0, a1, b0, b1 = unmatched.pop(ident)
            assert LABELS[layer["label"]] == label, (ident, layer)
            # The whole object is painted, and nothing around it.
            area = (layer["box"][2] + 1 - layer["box"][0]) * (layer["box"][3] + 1 - layer["box"][1])
            count = layer["canvas"]["colours"][layer["label"]]["count"]
            assert 0.9 * area <= count <= layer["canvas"]["painted"] <= 1.02 * area, layer
            layer["object"] = ident
        assert not unmatched, (unmatched, layers)

        # And a person sees it: in the screenshot each object's middle shows its colour.
        for layer in layers:
            shares = seen_colour_shares(shot, layer, colours)
            assert shares[layer["label"]] > 0.9, (layer["object"], shares)

        # The touching cells are two regions: hiding the second cell in the list greys out
        # that cell alone; the other cell and the blob stay painted.
        cell_items = [item for item, name in zip(items.all(), names, strict=True)
                      if name == "cell"]
        before = {layer["object"] for layer in layers}
        cell_items[1].hover()
        cell_items[1].locator(VISIBILITY).click()
        page.wait_for_function(
            f"colours => ({CANVAS_PIXELS})(colours).filter(c => c.shown && "
            "c.colours.some(s => s.count > 100)).length === 2",
            arg=[list(c) for c in colours], timeout=10_000)
        page.mouse.move(0, 0)  # no hover highlight over the stage
        page.wait_for_timeout(300)
        hidden_shot = tmp_path / "object_hidden.png"
        page.screenshot(path=str(hidden_shot))
        shutil.copyfile(hidden_shot, HIDDEN_SHOT_COPY)
        after = region_layers(page.evaluate(CANVAS_PIXELS, [list(c) for c in colours]))
        still = {layer["object"] for layer in layers
                 if any(other["box"] == layer["box"] for other in after)}
        gone = before - still
        assert len(gone) == 1 and OBJECTS[gone.pop()][0] == "cell", (layers, after)
        for layer in layers:
            shares = seen_colour_shares(hidden_shot, layer, colours)
            if layer["object"] in still:
                assert shares[layer["label"]] > 0.9, (layer["object"], shares)
            else:
                assert shares[-1] > 0.9 and max(shares[:-1]) < 0.05, (layer["object"], shares)
        expect(items).to_have_count(len(OBJECTS))  # hidden, not deleted
    finally:
        context.close()

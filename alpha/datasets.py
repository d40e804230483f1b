"""Real datasets that install from package registries, for the demo, tests and benchmarks.

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` (IDX files, gzip); scikit-learn's
digits is the fallback where apt is not available. Real nuclei with instance masks come from
the data files of PyPI's `stardist` wheel (installed with --no-deps, never imported). Nothing is
downloaded at run time.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
DIGITS_LABELS = [str(d) for d in range(10)]


@dataclass
class Dataset:
    """Grayscale images (n, H, W) uint8 with integer targets, a train and a test split."""

    name: str
    labels: list[str]
    train_images: np.ndarray
    train_targets: np.ndarray
    test_images: np.ndarray
    test_targets: np.ndarray

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[1])


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_available(root: Path = FASHION_MNIST_DIR) -> bool:
    return (root / "train-images-idx3-ubyte.gz").is_file()


def load_fashion_mnist(root: Path = FASHION_MNIST_DIR) -> Dataset:
    if not fashion_mnist_available(root):
        raise FileNotFoundError(
            f"Fashion-MNIST is not in {root}: `apt-get install dataset-fashion-mnist`."
        )
    return Dataset(
        "fashion-mnist", FASHION_MNIST_LABELS,
        _read_idx(root / "train-images-idx3-ubyte.gz"),
        _read_idx(root / "train-labels-idx1-ubyte.gz").astype(np.int64),
        _read_idx(root / "t10k-images-idx3-ubyte.gz"),
        _read_idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64),
    )


def load_digits_dataset(test_fraction: float = 0.25, random_state: int = 0) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.int64), test_size=test_fraction,
        stratify=digits.target, random_state=random_state,
    )
    return Dataset("digits", DIGITS_LABELS, x_train, y_train, x_test, y_test)


def load_demo_dataset() -> Dataset:
    """Fashion-MNIST where its Debian package is installed, else scikit-learn's digits."""
    return load_fashion_mnist() if fashion_mnist_available() else load_digits_dataset()


def class_subset(source: Dataset, labels: list[str]) -> Dataset:
    """The images of `labels` only (in that order, targets renumbered 0..k-1), e.g. a few
    garments that look unalike, so a small model trained from scratch on a few scenes can
    tell the objects apart."""
    unknown = [label for label in labels if label not in source.labels]
    if unknown:
        raise ValueError(f"{unknown} are not classes of {source.name} ({source.labels})")
    lookup = np.full(len(source.labels), -1, dtype=np.int64)
    for new, label in enumerate(labels):
        lookup[source.labels.index(label)] = new

    def split(images: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mapped = lookup[np.asarray(targets, dtype=np.int64)]
        keep = mapped >= 0
        return images[keep], mapped[keep]

    return Dataset(f"{source.name}-{len(labels)}", list(labels),
                   *split(source.train_images, source.train_targets),
                   *split(source.test_images, source.test_targets))


def write_png_folder(folder: Path, images: np.ndarray, names: list[str]) -> None:
    """Write grayscale uint8 arrays as PNG files (skipping ones already there)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(images, names, strict=True):
        path = folder / name
        if not path.exists():
            Image.fromarray(image, mode="L").save(path)


# ---- segmentation ---------------------------------------------------------------------------
SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
"""Real segmentation data for development and benchmarks (`../shared/data` from the project
root). Optional: nothing in the demo or the default tests needs it."""
CAMVID_DIR = SHARED_DATA_DIR / "camvid"
CAMVID_LABELS = [
    "sky", "building", "pole", "road", "pavement", "tree",
    "sign/symbol", "fence", "car", "pedestrian", "bicyclist",
]
CAMVID_UNLABELLED = 11  # CamVid's own "unlabelled" index; alpha stores it as IGNORE_INDEX
IGNORE_INDEX = 255
"""A stored mask pixel with this value is unlabelled: ignored in the loss and in metrics."""


@dataclass
class SegmentationDataset:
    """Images with a class index for every pixel.

    images: uint8 `(n, H, W)` grey or `(n, H, W, 3)` RGB; masks: uint8 `(n, H, W)`, class
    indices into `labels`, IGNORE_INDEX (255) for unlabelled pixels. `test_images` and
    `test_masks` hold a held-out split where the dataset has one. `names` are file names for
    `write_segmentation_folder`; `objects` (composed scenes only) says, per image, what was
    placed where: `(source index, class index, top, left, flipped)` in painting order.

    Instance and panoptic data add `instances`: uint16 `(n, H, W)` instance ids, 0 where no
    object (background or stuff), ids 1..k consecutive per image; `instance_classes`: per
    image, {instance id: class index into `labels`}; and `things`: the labels that are
    countable objects (the others are stuff). `masks` stays the class of every pixel, so every
    pixel of instance j in image i has class `instance_classes[i][j]`. `test_instances` and
    `test_instance_classes` are the same for the held-out split.
    """

    name: str
    labels: list[str]
    images: np.ndarray
    masks: np.ndarray
    test_images: np.ndarray | None = None
    test_masks: np.ndarray | None = None
    names: list[str] | None = None
    objects: list[list[tuple[int, int, int, int, bool]]] | None = None
    things: list[str] | None = None
    instances: np.ndarray | None = None
    instance_classes: list[dict[int, int]] | None = None
    test_instances: np.ndarray | None = None
    test_instance_classes: list[dict[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.images)


def _garments(source: Dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's garment crops (upscaled to about 24 px when they are as small as digits)
    and their class indices."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    images = source.train_images if split == "train" else source.test_images
    targets = source.train_targets if split == "train" else source.test_targets
    side = images.shape[1]
    if side < 16:
        factor = -(-24 // side)
        images = np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)
    return np.asarray(images, dtype=np.uint8), np.asarray(targets, dtype=np.int64)


def _interpolation(out: int, coarse: int) -> np.ndarray:
    """`(out, coarse)` linear interpolation weights, for upsampling noise with matmuls."""
    where = np.linspace(0, coarse - 1, out)
    low = np.clip(np.floor(where).astype(int), 0, coarse - 2)
    frac = where - low
    weights = np.zeros((out, coarse))
    weights[np.arange(out), low] = 1 - frac
    weights[np.arange(out), low + 1] = frac
    return weights


def _background(rng: np.random.Generator, up_h: np.ndarray, up_w: np.ndarray,
                rgb: bool) -> np.ndarray:
    """A textured background, uint8 `(H, W[, 3])` in about 0..110: a level, smooth blobs
    (coarse noise upsampled by the interpolation matrices) and fine pixel noise."""
    height, width = len(up_h), len(up_w)
    blobs = up_h @ rng.uniform(-1, 1, (up_h.shape[1], up_w.shape[1])) @ up_w.T
    grey = rng.uniform(35, 70) + 28 * blobs + rng.normal(0, 9, (height, width))
    if rgb:
        tint = rng.uniform(0.6, 1.0, 3)
        grey = grey[..., None] * tint + rng.normal(0, 4, (height, width, 3))
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def _paint_garments(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, crops: np.ndarray,
    classes: np.ndarray, count: int, threshold: int, rgb: bool, class_offset: int,
) -> tuple[list[tuple[int, int, int, int, bool]], np.ndarray]:
    """Paint `count` garments in place on one scene's `image` `(H, W[, 3])` and class `mask`
    `(H, W)`, class `class_offset + garment type`. Returns what was placed (painting order)
    and `owner` int32 `(H, W)`: the 1-based painting position of the garment seen at each
    pixel, 0 where none is, so occlusion by later garments is exact."""
    height, width = mask.shape
    crop_h, crop_w = crops.shape[1:3]
    owner = np.zeros((height, width), dtype=np.int32)
    placed = []
    for position in range(1, count + 1):
        index = int(rng.integers(len(crops)))
        top = int(rng.integers(height - crop_h + 1))
        left = int(rng.integers(width - crop_w + 1))
        flip = bool(rng.random() < 0.5)
        crop = crops[index, :, ::-1] if flip else crops[index]
        inside = crop > threshold
        region = (slice(top, top + crop_h), slice(left, left + crop_w))
        if rgb:
            tint = rng.uniform(0.55, 1.0, 3)
            tint /= tint.max()
            image[region][inside] = np.rint(crop[inside, None] * tint).astype(np.uint8)
        else:
            image[region][inside] = crop[inside]
        label = int(classes[index]) + class_offset
        mask[region][inside] = label
        owner[region][inside] = position
        placed.append((index, label, top, left, flip))
    return placed, owner


def _number_instances(
    owner: np.ndarray, placed: list[tuple[int, int, int, int, bool]], min_pixels: int,
) -> tuple[np.ndarray, dict[int, int], np.ndarray]:
    """Instance ids uint16 `(H, W)` from a scene's `owner` map: garments with at least
    `min_pixels` visible pixels (and at least one) are ids 1..k in painting order, the rest
    get none. Returns the ids, {id: class index}, and the bool `(H, W)` pixels of garments
    too small to keep (the caller turns them back into what lies beneath)."""
    visible = np.bincount(owner.ravel(), minlength=len(placed) + 1)
    kept = [p for p in range(1, len(placed) + 1) if visible[p] >= max(min_pixels, 1)]
    renumber = np.zeros(len(placed) + 1, dtype=np.uint16)
    renumber[kept] = np.arange(1, len(kept) + 1)
    ids = renumber[owner]
    dropped = (owner > 0) & (ids == 0)
    return ids, {j: placed[p - 1][1] for j, p in enumerate(kept, start=1)}, dropped


def compose_scenes(
    n: int,
    size: tuple[int, int] = (64, 64),
    garments: tuple[int, int] = (1, 4),
    random_state: int = 0,
    source: Dataset | None = None,
    *,
    split: str = "train",
    rgb: bool = False,
    threshold: int = 40,
    min_pixels: int = 1,
) -> SegmentationDataset:
    """`n` scenes of Fashion-MNIST garments on textured backgrounds, with exact masks.

    size: (width, height) of each scene. garments: the fewest and most garments per scene
    (inclusive), each placed whole at a random position, flipped left-right half the time;
    later garments occlude earlier ones. A pixel belongs to a garment where the garment's
    own value exceeds `threshold`; there the scene shows exactly that value (times the
    garment's tint when `rgb`), elsewhere the background. Class 0 is "background", class 1+t
    garment type t: labels = ["background", *source.labels], things = source.labels.

    Every garment still visible after occlusion is one instance (`instances`,
    `instance_classes`; its visible part may be in pieces where a later garment cuts across
    it), ids 1..k in painting order; a garment hidden entirely gets no id. `min_pixels`
    drops slivers: a garment left with fewer visible pixels gets no id and its pixels become
    background again in the image and both masks. The default 1 keeps every visible pixel,
    so `images` and `masks` are what they were before instances existed; pass 4 or so for
    instance training, where a 1-3 pixel object is noise nobody could annotate.

    The garments come from `source` (default: Fashion-MNIST, or scikit-learn's digits
    upscaled 3x where Fashion-MNIST is not installed), from its `split` ("train" or "test"):
    scenes for testing drawn from "test" never show a garment seen in training.
    Deterministic from (random_state, split), scene by scene: the first k of n scenes are
    the k scenes asked for with the same arguments.
    """
    width, height = size
    source, crops, classes, seeds, up_h, up_w = _scene_setup(
        n, size, garments, random_state, source, split)
    images = np.empty((n, height, width, 3) if rgb else (n, height, width), dtype=np.uint8)
    masks = np.zeros((n, height, width), dtype=np.uint8)
    instances = np.zeros((n, height, width), dtype=np.uint16)
    objects: list[list[tuple[int, int, int, int, bool]]] = []
    instance_classes: list[dict[int, int]] = []
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        background = _background(rng, up_h, up_w, rgb)
        images[i] = background
        count = int(rng.integers(garments[0], garments[1] + 1))
        placed, owner = _paint_garments(rng, images[i], masks[i], crops, classes, count,
                                        threshold, rgb, class_offset=1)
        instances[i], ids, dropped = _number_instances(owner, placed, min_pixels)
        images[i][dropped], masks[i][dropped] = background[dropped], 0
        objects.append(placed)
        instance_classes.append(ids)
    return SegmentationDataset(
        name=f"scenes-{source.name}", labels=["background", *source.labels],
        images=images, masks=masks, names=[f"scene_{i:05d}.png" for i in range(n)],
        objects=objects, things=list(source.labels), instances=instances,
        instance_classes=instance_classes,
    )


def _scene_setup(
    n: int, size: tuple[int, int], garments: tuple[int, int], random_state: int,
    source: Dataset | None, split: str,
) -> tuple[Dataset, np.ndarray, np.ndarray, list[np.random.SeedSequence], np.ndarray,
           np.ndarray]:
    """What every composer checks and draws first: the source, its split's garment crops
    and classes, one seed per scene, and the noise interpolation matrices."""
    width, height = size
    low, high = garments
    if not 0 <= low <= high:
        raise ValueError(f"garments must be (fewest, most) with 0 <= fewest <= most: {garments}")
    source = source if source is not None else load_demo_dataset()
    crops, classes = _garments(source, split)
    crop_h, crop_w = crops.shape[1:3]
    if height < crop_h or width < crop_w:
        raise ValueError(f"scenes of {width}x{height} cannot hold {crop_w}x{crop_h} garments")
    up_h = _interpolation(height, max(2, height // 8 + 1))
    up_w = _interpolation(width, max(2, width // 8 + 1))
    seeds = np.random.SeedSequence([random_state, 0 if split == "train" else 1]).spawn(n)
    return source, crops, classes, seeds, up_h, up_w


# Stuff textures, by stuff position (cycled): a grey level, the amplitude of smooth blobs
# (contrast) and of pixel noise (grain). Chosen so neighbouring stuff differs in all three
# and a small CNN can tell them apart from a 5x5 patch: a flat mid wall, a bright blotchy
# floor, dark grainy grass.
STUFF_TEXTURES = [(50.0, 5.0, 3.0), (95.0, 30.0, 6.0), (28.0, 8.0, 16.0)]
STUFF_TINTS = [(0.95, 0.9, 0.85), (0.8, 0.65, 0.5), (0.45, 0.85, 0.4)]
"""RGB tints of the stuff textures (cycled), for `rgb` scenes: off-white, brown, green."""


def _stuff_layout(rng: np.random.Generator, height: int, width: int,
                  count: int) -> np.ndarray:
    """Stuff index per pixel, uint8 `(H, W)`: with two or more stuff classes the first is
    above a horizontal split at a random 30-70 % of the height and the second below it;
    each further one is an irregular blob (a star-shaped outline of a few random harmonics
    about a random centre) painted over them in 3 of 4 scenes, so scenes show 2-3 regions."""
    layout = np.zeros((height, width), dtype=np.uint8)
    if count >= 2:
        layout[int(rng.integers(round(0.3 * height), round(0.7 * height) + 1)):] = 1
    rows, cols = np.mgrid[0:height, 0:width]
    for stuff in range(2, count):
        if rng.random() >= 0.75:
            continue
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        radius = rng.uniform(0.15, 0.28) * min(height, width)
        angle = np.arctan2(rows - cy, cols - cx)
        harmonics = np.arange(2, 6)[:, None, None]
        wobble = (rng.uniform(0, 0.15, (4, 1, 1))
                  * np.sin(harmonics * angle + rng.uniform(0, 2 * np.pi, (4, 1, 1)))).sum(0)
        layout[np.hypot(rows - cy, cols - cx) < radius * (1 + wobble)] = stuff
    return layout


def _stuff_background(rng: np.random.Generator, layout: np.ndarray, up_h: np.ndarray,
                      up_w: np.ndarray, rgb: bool) -> np.ndarray:
    """uint8 `(H, W[, 3])`: each stuff region filled with its own texture (STUFF_TEXTURES,
    its level jittered by +-5 per scene), drawn over the whole scene and kept where the
    layout says."""
    height, width = layout.shape
    grey = np.zeros((height, width))
    for stuff in np.unique(layout):
        level, contrast, grain = STUFF_TEXTURES[stuff % len(STUFF_TEXTURES)]
        blobs = up_h @ rng.uniform(-1, 1, (up_h.shape[1], up_w.shape[1])) @ up_w.T
        texture = level + rng.uniform(-5, 5) + contrast * blobs
        texture = texture + rng.normal(0, grain, (height, width))
        grey = np.where(layout == stuff, texture, grey)
    if rgb:
        tints = np.asarray(STUFF_TINTS)[layout % len(STUFF_TINTS)]
        grey = grey[..., None] * tints + rng.normal(0, 3, (height, width, 3))
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def compose_panoptic_scenes(
    n: int,
    size: tuple[int, int] = (64, 64),
    garments: tuple[int, int] = (1, 4),
    random_state: int = 0,
    source: Dataset | None = None,
    *,
    split: str = "train",
    stuff: tuple[str, ...] | list[str] = ("wall", "floor", "grass"),
    rgb: bool = False,
    threshold: int = 40,
    min_pixels: int = 4,
) -> SegmentationDataset:
    """`n` panoptic scenes: garments (things) on a background split into stuff regions,
    every pixel labelled.

    The background is a horizontal `stuff[0]` (top) / `stuff[1]` (bottom) split at a random
    height, and each further stuff class an irregular blob over them in 3 of 4 scenes (so
    2-3 regions with the default stuff); each stuff class has its own texture
    (STUFF_TEXTURES: level, contrast, grain; STUFF_TINTS when `rgb`). A single stuff class
    fills the whole background. Garments are placed on top as in `compose_scenes` (same
    `threshold`, occlusion, `min_pixels`, default 4 here since nothing older depends on it:
    a smaller sliver turns back into the stuff beneath it).

    labels = [*stuff, *source.labels], things = source.labels; `masks` holds the stuff class
    of every stuff pixel and the garment class of every garment pixel (nothing unlabelled);
    `instances` ids 1..k on garment pixels only. Deterministic from (random_state, split),
    the first k of n scenes being the k asked for, as in `compose_scenes`.
    """
    stuff = list(stuff)
    if not stuff or len(set(stuff)) != len(stuff):
        raise ValueError(f"stuff must be one or more distinct class names, got {stuff}")
    width, height = size
    source, crops, classes, seeds, up_h, up_w = _scene_setup(
        n, size, garments, random_state, source, split)
    overlap = set(stuff) & set(source.labels)
    if overlap:
        raise ValueError(f"stuff {sorted(overlap)} are also garment labels: rename them")
    images = np.empty((n, height, width, 3) if rgb else (n, height, width), dtype=np.uint8)
    masks = np.zeros((n, height, width), dtype=np.uint8)
    instances = np.zeros((n, height, width), dtype=np.uint16)
    objects: list[list[tuple[int, int, int, int, bool]]] = []
    instance_classes: list[dict[int, int]] = []
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        layout = _stuff_layout(rng, height, width, len(stuff))
        background = _stuff_background(rng, layout, up_h, up_w, rgb)
        images[i], masks[i] = background, layout
        count = int(rng.integers(garments[0], garments[1] + 1))
        placed, owner = _paint_garments(rng, images[i], masks[i], crops, classes, count,
                                        threshold, rgb, class_offset=len(stuff))
        instances[i], ids, dropped = _number_instances(owner, placed, min_pixels)
        images[i][dropped], masks[i][dropped] = background[dropped], layout[dropped]
        objects.append(placed)
        instance_classes.append(ids)
    return SegmentationDataset(
        name=f"panoptic-{source.name}", labels=[*stuff, *source.labels],
        images=images, masks=masks, names=[f"scene_{i:05d}.png" for i in range(n)],
        objects=objects, things=list(source.labels), instances=instances,
        instance_classes=instance_classes,
    )


def _with_test_split(train: SegmentationDataset,
                     test: SegmentationDataset) -> SegmentationDataset:
    train.test_images, train.test_masks = test.images, test.masks
    train.test_instances, train.test_instance_classes = test.instances, test.instance_classes
    return train


def compose_scene_splits(
    n_train: int, n_test: int, size: tuple[int, int] = (64, 64),
    garments: tuple[int, int] = (1, 4), random_state: int = 0, source: Dataset | None = None,
    **options,
) -> SegmentationDataset:
    """Training scenes from the source's train split and held-out scenes (`test_images`,
    `test_masks`, `test_instances`, `test_instance_classes`) from its test split, so no test
    garment is ever seen in training."""
    source = source if source is not None else load_demo_dataset()
    train = compose_scenes(n_train, size, garments, random_state, source, split="train",
                           **options)
    test = compose_scenes(n_test, size, garments, random_state, source, split="test", **options)
    return _with_test_split(train, test)


def compose_panoptic_scene_splits(
    n_train: int, n_test: int, size: tuple[int, int] = (64, 64),
    garments: tuple[int, int] = (1, 4), random_state: int = 0, source: Dataset | None = None,
    **options,
) -> SegmentationDataset:
    """`compose_scene_splits` for `compose_panoptic_scenes`: test scenes from the source's
    test split, in the `test_*` fields."""
    source = source if source is not None else load_demo_dataset()
    train = compose_panoptic_scenes(n_train, size, garments, random_state, source,
                                    split="train", **options)
    test = compose_panoptic_scenes(n_test, size, garments, random_state, source, split="test",
                                   **options)
    return _with_test_split(train, test)


def camvid_available(root: Path = CAMVID_DIR) -> bool:
    return (Path(root) / "train" / "masks").is_dir()


def load_camvid(root: Path = CAMVID_DIR, split: str = "train") -> SegmentationDataset:
    """One CamVid split (`{root}/{split}/images/*.png` with same-named `masks/*.png`): RGB
    images `(n, H, W, 3)`, masks with CamVid's unlabelled class 11 stored as IGNORE_INDEX."""
    from PIL import Image

    if split not in ("train", "val"):
        raise ValueError(f"CamVid split must be 'train' or 'val', not {split!r}")
    folder = Path(root) / split
    image_dir, mask_dir = folder / "images", folder / "masks"
    for path, what in ((image_dir, "images"), (mask_dir, "masks")):
        if not path.is_dir():
            raise FileNotFoundError(
                f"CamVid {split} {what} are not in {path}: put the CamVid folder "
                f"({split}/images/*.png with {split}/masks/*.png of the same names) there, or "
                "pass its root."
            )
    names = sorted(p.name for p in image_dir.glob("*.png"))
    if not names:
        raise FileNotFoundError(f"No CamVid images (*.png) in {image_dir}.")
    missing = [name for name in names if not (mask_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} CamVid {split} images have no mask in {mask_dir} (first: "
            f"{missing[0]}): every image needs a mask of the same name."
        )
    images, masks = [], []
    for name in names:
        with Image.open(image_dir / name) as image:
            images.append(np.asarray(image.convert("RGB")))
        with Image.open(mask_dir / name) as mask_image:
            mask = np.asarray(mask_image)
        if mask.ndim != 2 or mask.shape != images[-1].shape[:2]:
            raise ValueError(f"CamVid mask {mask_dir / name} has shape {mask.shape}, not its "
                             f"image's {images[-1].shape[:2]}.")
        if mask.max(initial=0) > CAMVID_UNLABELLED:
            raise ValueError(f"CamVid mask {mask_dir / name} holds class {mask.max()}: CamVid "
                             f"has classes 0..{CAMVID_UNLABELLED} (11 = unlabelled).")
        masks.append(np.where(mask == CAMVID_UNLABELLED, IGNORE_INDEX, mask).astype(np.uint8))
    if len({image.shape for image in images}) > 1:
        raise ValueError(f"CamVid images in {image_dir} differ in size: resize them alike.")
    return SegmentationDataset(name=f"camvid-{split}", labels=list(CAMVID_LABELS),
                               images=np.stack(images), masks=np.stack(masks), names=names)


def write_segmentation_folder(folder: Path, dataset: SegmentationDataset,
                              names: list[str] | None = None) -> None:
    """Write `folder/images/{name}` and `folder/masks/{name stem}.png`, the layout
    `alpha ingest folder/images --masks folder/masks` reads. Names default to the dataset's
    (or `00000.png`, ...); a JPEG name gives a JPEG image, masks are always PNG. Existing
    files are overwritten, so a folder never keeps a stale mask."""
    from PIL import Image

    folder = Path(folder)
    if names is None:
        names = dataset.names or [f"{i:05d}.png" for i in range(len(dataset.images))]
    for image, mask, name in zip(dataset.images, dataset.masks, names, strict=True):
        image_path = folder / "images" / name
        mask_path = (folder / "masks" / name).with_suffix(".png")
        image_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="RGB" if image.ndim == 3 else "L").save(image_path)
        Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="L").save(mask_path)


# ---- instance data: stardist's nuclei, and instance/panoptic folders ------------------------
STARDIST_VERSION = "0.9.2"
NUCLEI_LABELS = ["background", "nucleus"]


def stardist_data_dir() -> Path | None:
    """The `stardist/data/images` folder of an installed stardist wheel, or None. Found with
    `importlib.util.find_spec`, which locates the package without running it: importing
    stardist pulls in tensorflow and csbdeep, and only its data files are wanted."""
    import importlib.util

    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    return folder if (folder / "img2d.tif").is_file() else None


def stardist_available() -> bool:
    return stardist_data_dir() is not None


def _to_uint8(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Percentile stretch to uint8: the `low`-th percentile maps to 0, the `high`-th to 255,
    values beyond are clipped (a few saturated pixels do not squash the rest)."""
    lo, hi = np.percentile(image, [low, high])
    scaled = (image.astype(np.float64) - lo) / max(hi - lo, 1e-12)
    return np.rint(np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _renumber(ids: np.ndarray) -> np.ndarray:
    """Instance ids `(H, W)` renumbered 1..k in order of their old value, 0 kept."""
    values, inverse = np.unique(ids, return_inverse=True)
    new = np.arange(len(values), dtype=np.uint16) + (0 if values[0] == 0 else 1)
    return new[inverse.reshape(ids.shape)]


def load_stardist_tiles(
    tile: tuple[int, int] = (64, 64), random_state: int = 0, *, test_fraction: float = 0.25,
) -> SegmentationDataset:
    """Real nuclei with instance masks: stardist's 2-D example, cut into tiles.

    The PyPI `stardist` wheel ships `data/images/img2d.tif` (a 512x512 uint16 fluorescence
    image, values 0..235) and `mask2d.tif` (its uint16 instance ids: 125 nuclei, ids up to
    183, about 20 % of pixels), read with tifffile; stardist itself is never imported. The
    image is stretched to uint8 over the whole image (percentiles 1 to 99.8 map to 0 and 255,
    beyond is clipped) so all tiles share one scale; then both are cut into non-overlapping
    `tile` (width, height) tiles, partial edge tiles dropped. Per tile, ids are renumbered
    1..k; a nucleus cut by a tile edge is an object in each tile it reaches.

    images uint8 `(n, h, w)`, masks uint8 `(n, h, w)` 1 on nuclei else 0, instances uint16
    `(n, h, w)`; labels ["background", "nucleus"], things ["nucleus"]. A fixed
    `test_fraction` of the tiles, chosen by `random_state`, is held out in the `test_*`
    fields; `names` (`nuclei_r{top}_c{left}.png`) say where each training tile was cut.
    """
    import tifffile

    folder = stardist_data_dir()
    if folder is None:
        raise FileNotFoundError(
            "stardist's data files (stardist/data/images/img2d.tif) are not installed: "
            f"`pip install --no-deps stardist=={STARDIST_VERSION}` (data only; --no-deps "
            "keeps tensorflow out), or run infra/setup.sh."
        )
    image = _to_uint8(tifffile.imread(folder / "img2d.tif"))
    ids = np.asarray(tifffile.imread(folder / "mask2d.tif"))
    if image.shape != ids.shape or image.ndim != 2:
        raise ValueError(f"stardist's img2d.tif {image.shape} and mask2d.tif {ids.shape} "
                         "should be one 2-D image and its mask")
    width, height = tile
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, not {test_fraction}")
    corners = [(top, left) for top in range(0, image.shape[0] - height + 1, height)
               for left in range(0, image.shape[1] - width + 1, width)]
    if len(corners) < 2:
        raise ValueError(f"tiles of {width}x{height} leave fewer than 2 tiles of the "
                         f"{image.shape[1]}x{image.shape[0]} image: take smaller tiles")
    tiles = np.stack([image[t:t + height, s:s + width] for t, s in corners])
    instances = np.stack([_renumber(ids[t:t + height, s:s + width]) for t, s in corners])
    masks = (instances > 0).astype(np.uint8)
    classes = [dict.fromkeys(range(1, int(k.max()) + 1), 1) for k in instances]
    n_test = min(max(1, round(test_fraction * len(corners))), len(corners) - 1)
    order = np.random.default_rng(random_state).permutation(len(corners))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return SegmentationDataset(
        name="stardist-nuclei", labels=list(NUCLEI_LABELS), images=tiles[train],
        masks=masks[train], test_images=tiles[test], test_masks=masks[test],
        names=[f"nuclei_r{corners[i][0]:03d}_c{corners[i][1]:03d}.png" for i in train],
        things=["nucleus"], instances=instances[train],
        instance_classes=[classes[i] for i in train], test_instances=instances[test],
        test_instance_classes=[classes[i] for i in test],
    )


def segments(
    mask: np.ndarray, instances: np.ndarray, instance_classes: dict[int, int],
    stuff: list[int] | None = None,
) -> tuple[np.ndarray, dict[int, int]]:
    """One image's segment ids uint16 `(H, W)` and {segment id: class index}.

    Without `stuff` (instance data) the segments are the instances themselves. With `stuff`
    (the class indices that are stuff, panoptic data) each stuff class present in `mask` is
    one more segment, ids after the things' in class order, so every labelled pixel of a
    stuff or thing class is in exactly one segment; pixels of no segment (unlabelled, or a
    thing class without an instance id) are 0.
    """
    ids = np.asarray(instances, dtype=np.uint16).copy()
    present = [int(j) for j in np.unique(ids) if j]
    missing = [j for j in present if j not in instance_classes]
    if missing:
        raise ValueError(f"instance ids {missing} have no class in instance_classes")
    classes = {j: int(instance_classes[j]) for j in present}
    next_id = max(present, default=0) + 1
    for stuff_class in stuff or []:
        where = (np.asarray(mask) == stuff_class) & (ids == 0)
        if where.any():
            ids[where] = next_id
            classes[next_id] = int(stuff_class)
            next_id += 1
    return ids, classes


def write_instance_folder(
    folder: Path, dataset: SegmentationDataset, names: list[str] | None = None,
    *, panoptic: bool | None = None,
) -> None:
    """Write an instance (or panoptic) dataset as the folder `alpha ingest` reads for them.

    Layout, one row per segment of every image:

        folder/images/{name}            the image (PNG, or JPEG for a .jpg name)
        folder/masks/{name stem}.png    segment ids, one channel: 0 = no segment, 1..k;
                                        8-bit when all ids < 256, else 16-bit
                                        (alpha.masks.encode_mask_png)
        folder/classes.csv              header `filename,id,label`: the mask's path under
                                        masks/ (`sub/b.png`), a segment id in it, and its
                                        class name from `dataset.labels`

    Instance folders: the segments are the instances (`dataset.instances`, classes from
    `instance_classes`); background is 0 and has no row. Panoptic folders add, after an
    image's thing ids, one segment per stuff class present in it (the labels not in
    `dataset.things`), so every labelled pixel is in a segment and its row names its class;
    unlabelled pixels (255) are 0. `panoptic` defaults to whether the dataset has no
    "background" label: the instance datasets here (compose_scenes, load_stardist_tiles) name
    their no-object class so, while in a panoptic one every pixel is stuff or thing.
    Names default to the dataset's (or `00000.png`, ...); existing files are overwritten.
    """
    import csv

    from PIL import Image

    from alpha.masks import encode_mask_png

    if dataset.instances is None or dataset.instance_classes is None:
        raise ValueError(f"dataset {dataset.name!r} has no instances: write it with "
                         "write_segmentation_folder, or compose it with instances")
    folder = Path(folder)
    if names is None:
        names = dataset.names or [f"{i:05d}.png" for i in range(len(dataset.images))]
    if panoptic is None:
        panoptic = "background" not in dataset.labels
    things = set(dataset.things or [])
    stuff = ([c for c, label in enumerate(dataset.labels) if label not in things]
             if panoptic else None)
    rows = []
    for image, mask, ids, classes, name in zip(
            dataset.images, dataset.masks, dataset.instances, dataset.instance_classes, names,
            strict=True):
        image_path = folder / "images" / name
        mask_name = Path(name).with_suffix(".png").as_posix()
        mask_path = folder / "masks" / mask_name
        image_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(image_path)  # L or RGB
        segment_ids, segment_classes = segments(mask, ids, classes, stuff)
        mask_path.write_bytes(encode_mask_png(segment_ids))
        rows += [(mask_name, j, dataset.labels[c]) for j, c in sorted(segment_classes.items())]
    with open(folder / "classes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "id", "label"])
        writer.writerows(rows)

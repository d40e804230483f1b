"""Real datasets that install from package registries, for the demo, tests and benchmarks.

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` (IDX files, gzip); scikit-learn's
digits is the fallback where apt is not available. Nothing is downloaded at run time.
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
    """

    name: str
    labels: list[str]
    images: np.ndarray
    masks: np.ndarray
    test_images: np.ndarray | None = None
    test_masks: np.ndarray | None = None
    names: list[str] | None = None
    objects: list[list[tuple[int, int, int, int, bool]]] | None = None

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
) -> SegmentationDataset:
    """`n` scenes of Fashion-MNIST garments on textured backgrounds, with exact masks.

    size: (width, height) of each scene. garments: the fewest and most garments per scene
    (inclusive), each placed whole at a random position, flipped left-right half the time;
    later garments occlude earlier ones. A pixel belongs to a garment where the garment's
    own value exceeds `threshold`; there the scene shows exactly that value (times the
    garment's tint when `rgb`), elsewhere the background. Class 0 is "background", class 1+t
    garment type t: labels = ["background", *source.labels].

    The garments come from `source` (default: Fashion-MNIST, or scikit-learn's digits
    upscaled 3x where Fashion-MNIST is not installed), from its `split` ("train" or "test"):
    scenes for testing drawn from "test" never show a garment seen in training.
    Deterministic from (random_state, split), scene by scene: the first k of n scenes are
    the k scenes asked for with the same arguments.
    """
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
    images = np.empty((n, height, width, 3) if rgb else (n, height, width), dtype=np.uint8)
    masks = np.zeros((n, height, width), dtype=np.uint8)
    objects: list[list[tuple[int, int, int, int, bool]]] = []
    seeds = np.random.SeedSequence([random_state, 0 if split == "train" else 1]).spawn(n)
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        image, mask = images[i], masks[i]
        image[...] = _background(rng, up_h, up_w, rgb)
        placed = []
        for _ in range(rng.integers(low, high + 1)):
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
            label = int(classes[index]) + 1
            mask[region][inside] = label
            placed.append((index, label, top, left, flip))
        objects.append(placed)
    return SegmentationDataset(
        name=f"scenes-{source.name}", labels=["background", *source.labels],
        images=images, masks=masks, names=[f"scene_{i:05d}.png" for i in range(n)],
        objects=objects,
    )


def compose_scene_splits(
    n_train: int, n_test: int, size: tuple[int, int] = (64, 64),
    garments: tuple[int, int] = (1, 4), random_state: int = 0, source: Dataset | None = None,
    **options,
) -> SegmentationDataset:
    """Training scenes from the source's train split and held-out scenes (`test_images`,
    `test_masks`) from its test split, so no test garment is ever seen in training."""
    source = source if source is not None else load_demo_dataset()
    train = compose_scenes(n_train, size, garments, random_state, source, split="train",
                           **options)
    test = compose_scenes(n_test, size, garments, random_state, source, split="test", **options)
    train.test_images, train.test_masks = test.images, test.masks
    return train


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

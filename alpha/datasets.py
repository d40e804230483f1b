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

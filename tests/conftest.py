"""Shared test set-up: one torch thread per test process.

Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two threads per process
made 3-D convolutions 10-300x slower (oversubscription); one thread keeps the suite fast and steady.
"""

import pytest
import torch

from actdistill.data.synthetic_image import write_synthetic_stanford40

torch.set_num_threads(1)

# Overrides for a one-epoch CPU run of the tiny ViT student on `tiny_stanford40` (append data.root, out_dir, ...).
TINY_RUN = [
    "data.image_size=32",
    "data.num_workers=0",
    "train.epochs=1",
    "train.progress=false",
    "train.tensorboard=false",
    "train.precision=fp32",
    "train.device=cpu",
    "student.name=pvt_v2_demo",
]


@pytest.fixture(scope="session")
def tiny_stanford40(tmp_path_factory):
    """A 3-class, 8+4 images per class, 32 px synthetic Stanford 40 tree shared read-only by the tests."""
    root = tmp_path_factory.mktemp("synth") / "stanford40"
    return write_synthetic_stanford40(root, num_classes=3, train_per_class=8, test_per_class=4, image_size=32, seed=0)

"""The bench's training workload: a PyTorch DataLoader over a tree of JPEGs, as a training job
reads its dataset through a mount.

    python train.py make DIR COUNT          writes COUNT JPEGs (100-200 KiB each) under DIR
    python train.py epoch ROOT EPOCH        one shuffled epoch over ROOT: decode, resize, and a
                                            small convolutional step per batch; prints one
                                            JSON line with the epoch's time

Each epoch runs in its own process so that the bench can drop the kernel's caches between
epochs; the shuffle depends on the epoch number only, so every system reads the same order.
"""

import json
import os
import sys
import time
import warnings

# Four loader workers on a two-core machine is the point (a training job's setting), not a
# mistake to warn about.
warnings.filterwarnings("ignore", message="This DataLoader will create")

CLASSES = 10
SIDE = 64
BATCH = 32
WORKERS = 4


def make(root, count):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    for i in range(count):
        label = i % CLASSES
        d = os.path.join(root, f"class{label}")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"img{i:06d}.jpg")
        if os.path.exists(path):
            continue
        side = int(rng.integers(380, 460))
        # A smooth gradient per class under noise: real-looking JPEG sizes (noise does not
        # compress), and something for the model to learn.
        y, x = np.mgrid[0:side, 0:side]
        base = np.stack(
            [(x * (label + 1)) % 256, (y * (label + 3)) % 256, ((x + y) * 2) % 256], axis=-1
        )
        noise = rng.integers(0, 160, size=(side, side, 3))
        pixels = np.clip(base * 0.4 + noise, 0, 255).astype(np.uint8)
        tmp = path + ".tmp"
        Image.fromarray(pixels).save(tmp, format="JPEG", quality=int(rng.integers(84, 93)))
        os.rename(tmp, path)


def files_of(root):
    out = []
    for d in sorted(os.listdir(root)):
        sub = os.path.join(root, d)
        if d.startswith("class") and os.path.isdir(sub):
            label = int(d[len("class"):])
            out.extend((os.path.join(sub, f), label) for f in sorted(os.listdir(sub)))
    return out


def epoch(root, number):
    import torch
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    torch.set_num_threads(1)
    torch.manual_seed(0)

    class Images(Dataset):
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            path, label = self.items[i]
            with Image.open(path) as im:
                im = im.convert("RGB").resize((SIDE, SIDE))
                data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            x = data.view(SIDE, SIDE, 3).permute(2, 0, 1).float() / 255.0
            return x, label

    started = time.monotonic()
    items = files_of(root)
    listed = time.monotonic() - started
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, CLASSES),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(1000 + number)
    loader = DataLoader(
        Images(items),
        batch_size=BATCH,
        shuffle=True,
        generator=order,
        num_workers=WORKERS,
        persistent_workers=False,
    )
    images, loss_sum, batches = 0, 0.0, 0
    for x, y in loader:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        images += len(y)
        loss_sum += float(loss.detach())
        batches += 1
    seconds = time.monotonic() - started
    print(
        json.dumps(
            {
                "epoch": number,
                "images": images,
                "seconds": seconds,
                "list_seconds": listed,
                "loss": loss_sum / max(batches, 1),
            }
        ),
        flush=True,
    )


def main(argv):
    if len(argv) == 4 and argv[1] == "make":
        make(argv[2], int(argv[3]))
    elif len(argv) == 4 and argv[1] == "epoch":
        epoch(argv[2], int(argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)

"""A tiny MobileNetV2-like space and a tiny data set for the evaluator / supernet tests
(fast on a CPU; the real spaces and Fashion-MNIST are used by the benchmark)."""
from __future__ import annotations

import random

import numpy as np

from search_space.arch import Arch, BlockSpec, Head, Stem, make_divisible


class ToySpace:
    """3 stages (8, 16, 24 channels), depth 1-2, kernel 3/5, expansion 3/6, SE on/off, relu/hswish;
    the last stage may be a shufflev2 unit instead.  Enough elastic dimensions to exercise the
    supernet: kernel crop, leading channels, depth, SE, activation and block-type branches."""

    name = "toy"
    widths = (8, 16, 24)

    def sample(self, rng: random.Random) -> Arch:
        blocks, cin = [], 8
        for si, w in enumerate(self.widths):
            for i in range(rng.choice((1, 2))):
                s = 2 if i == 0 and si > 0 else 1
                if si == 2 and rng.random() < 0.3:
                    blocks.append(BlockSpec("shufflev2", cin, w, mid_ch=w // 2, kernel=rng.choice((3, 5)),
                                            stride=s, act="relu") if (s == 2 or cin == w) else
                                  BlockSpec("mbconv", cin, w, mid_ch=cin * 3, stride=s))
                else:
                    t = rng.choice((3, 6))
                    mid = cin * t
                    se = rng.choice((0, make_divisible(mid / 4)))
                    blocks.append(BlockSpec("mbconv", cin, w, mid_ch=mid, kernel=rng.choice((3, 5)), stride=s,
                                            se_ch=se, act=rng.choice(("relu", "hswish")),
                                            residual=(s == 1 and cin == w)))
                cin = w
        return Arch(Stem(8, act="hswish"), tuple(blocks), Head(last_ch=32, act="hswish"))

    def zoo_entries(self):
        return []

    def cardinalities(self):
        raise NotImplementedError

    def size(self):
        return 0


def toy_npz(path, n=240, size=16, seed=0):
    """Three classes that differ in brightness pattern: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, 60, size=(n, size, size), dtype=np.uint8)
    x[y == 1, : size // 2] += 150
    x[y == 2, :, : size // 2] += 150
    np.savez(path, x=x, y=y)
    return path

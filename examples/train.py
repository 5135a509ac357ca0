"""Examples for `skyctl run`: a plain generator and a training loop that reports per epoch."""

from __future__ import annotations

import math
import random
import time
from typing import Iterator


def fibonacci(n: int = 10) -> Iterator[int]:
    """The first n Fibonacci numbers, each yielded as soon as it is computed."""
    a, b = 0, 1
    for _ in range(n):
        yield a
        a, b = b, a + b


def train(epochs: int = 5, lr: float = 0.1, seconds_per_epoch: float = 0.2, seed: int = 0) -> Iterator[dict]:
    """A toy training loop: fits y = 3x + 1 by gradient descent, one metrics dict per epoch.

    Progress lines go to stdout on the remote; skyctl forwards them to stderr,
    so stdout carries only the metrics.
    """
    rng = random.Random(seed)
    xs = [rng.uniform(-1, 1) for _ in range(256)]
    ys = [3 * x + 1 + rng.gauss(0, 0.1) for x in xs]
    w, b = 0.0, 0.0
    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        grad_w = sum(2 * (w * x + b - y) * x for x, y in zip(xs, ys)) / len(xs)
        grad_b = sum(2 * (w * x + b - y) for x, y in zip(xs, ys)) / len(xs)
        w, b = w - lr * grad_w, b - lr * grad_b
        loss = sum((w * x + b - y) ** 2 for x, y in zip(xs, ys)) / len(xs)
        print(f"epoch {epoch}/{epochs}: loss {loss:.4f}", flush=True)
        time.sleep(max(0.0, seconds_per_epoch - (time.monotonic() - started)))
        yield {"epoch": epoch, "loss": round(loss, 6), "w": round(w, 4), "b": round(b, 4), "rmse": round(math.sqrt(loss), 6)}
    return {"w": round(w, 4), "b": round(b, 4)}

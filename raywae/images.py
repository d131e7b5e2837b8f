"""Pictures of a trained model: test images over their reconstructions, and latent traversals.
Written as PNG artifacts of each trial (the paper's Figure 2 is built from these models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def tile(rows: list[np.ndarray], pad: int = 2) -> Image.Image:
    """rows: list of (k, 64, 64) arrays in [0, 1] -> one grayscale image, a row per entry."""
    k = max(len(r) for r in rows)
    side = rows[0].shape[-1]
    canvas = np.ones((len(rows) * (side + pad) + pad, k * (side + pad) + pad), np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (side + pad), pad + j * (side + pad)
            canvas[y : y + side, x : x + side] = img
    return Image.fromarray((255 * (1 - canvas)).astype(np.uint8))  # shapes dark on white


@torch.no_grad()
def reconstruct(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """images: (k, 64, 64) {0,1} -> (k, 64, 64) float32 in [0, 1]: sigmoid(decode(μ(x)))."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(images.reshape(len(images), -1), dtype=torch.float32, device=device)
    mu, _ = model.encode(x)
    out = torch.sigmoid(model.decode(mu)).reshape(images.shape).cpu().numpy()
    model.train(was_training)
    return out


def reconstructions(model: torch.nn.Module, images: np.ndarray) -> Image.Image:
    """images: (k, 64, 64) {0,1} -> row of inputs over row of reconstructions (z = mean)."""
    return tile([images.astype(np.float32), reconstruct(model, images)])


@torch.no_grad()
def traversal(model: torch.nn.Module, image: np.ndarray, steps: int = 9) -> Image.Image:
    """One row per latent dim: the code of `image` (64, 64) with that dim swept over
    [-span, span] (span: a property of the model's prior) and every other dim at its mean,
    decoded."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(image.reshape(1, -1), dtype=torch.float32, device=device)
    mu, _ = model.encode(x)
    d = mu.shape[1]
    z = mu.repeat(d * steps, 1).reshape(d, steps, d)
    span = model.prior.span
    sweep = torch.linspace(-span, span, steps, device=device)
    for i in range(d):
        z[i, :, i] = sweep
    out = torch.sigmoid(model.decode(z.reshape(d * steps, d))).reshape(d, steps, 64, 64)
    return tile(list(out.cpu().numpy()))


def write_pictures(model: torch.nn.Module, images: np.ndarray, folder: Path) -> list[Path]:
    """Writes reconstructions.png (images over their reconstructions) and traversal.png
    (latent traversals of images[0]) into `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "reconstructions.png", folder / "traversal.png"]
    reconstructions(model, images).save(paths[0])
    traversal(model, images[0]).save(paths[1])
    return paths

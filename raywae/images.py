"""Pictures of a trained model: test images over their reconstructions, and latent traversals.
Written as PNG artifacts of each trial (the paper's Figure 2 is built from these models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def tile(rows: list[np.ndarray], pad: int = 2) -> Image.Image:
    """rows: list of (k, side, side) arrays in [0, 1] -> one grayscale image, a row per entry."""
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
    """images: (k, side, side) in [0, 1] -> the same shape, float32: sigmoid(decode(μ(x)))."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(images.reshape(len(images), -1), dtype=torch.float32, device=device)
    mu, _ = model.encode(x)
    out = torch.sigmoid(model.decode(mu)).reshape(images.shape).cpu().numpy()
    model.train(was_training)
    return out


def reconstructions(model: torch.nn.Module, images: np.ndarray) -> Image.Image:
    """images: (k, side, side) -> row of inputs over row of reconstructions (z = mean)."""
    return tile([images.astype(np.float32), reconstruct(model, images)])


@torch.no_grad()
def traversal(model: torch.nn.Module, image: np.ndarray, steps: int = 9) -> Image.Image:
    """One row per latent dim: the code of `image` (side, side) with that dim swept over
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
    out = torch.sigmoid(model.decode(z.reshape(d * steps, d))).reshape(d, steps, *image.shape)
    return tile(list(out.cpu().numpy()))


@torch.no_grad()
def interpolate(
    model: torch.nn.Module, start: np.ndarray, end: np.ndarray, frames: int = 16
) -> np.ndarray:
    """start, end: (k, side, side) in [0, 1] -> (k, frames, side, side) float32 in [0, 1]:
    sigmoid(decode((1 − t)·μ(start) + t·μ(end))) for t evenly spaced over [0, 1]."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    k, shape = len(start), start.shape[1:]
    x = torch.as_tensor(np.concatenate([start, end]).reshape(2 * k, -1), device=device)
    mu, _ = model.encode(x.float())
    t = torch.linspace(0, 1, frames, device=device)[None, :, None]
    z = (1 - t) * mu[:k, None] + t * mu[k:, None]  # (k, frames, d)
    out = torch.sigmoid(model.decode(z.reshape(k * frames, -1)))
    model.train(was_training)
    return out.reshape(k, frames, *shape).cpu().numpy()


def interpolation_strip(model: torch.nn.Module, start: np.ndarray, end: np.ndarray) -> Image.Image:
    """One row per pair: 16 decoded frames between the codes of start[i] and end[i]."""
    return tile(list(interpolate(model, start, end)))


def write_pictures(
    model: torch.nn.Module, images: np.ndarray, folder: Path, pairs: np.ndarray | None = None
) -> list[Path]:
    """Writes reconstructions.png (images over their reconstructions) and traversal.png
    (latent traversals of images[0]) into `folder`, and with pairs (2, k, side, side)
    interpolation.png (a strip per pair); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "reconstructions.png", folder / "traversal.png"]
    reconstructions(model, images).save(paths[0])
    traversal(model, images[0]).save(paths[1])
    if pairs is not None:
        paths.append(folder / "interpolation.png")
        interpolation_strip(model, pairs[0], pairs[1]).save(paths[-1])
    return paths

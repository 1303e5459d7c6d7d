"""Memory for the heavy steps of one job, from the number of photos and the working resolutions of its tier
(``plan_reconstruction`` plans it).

The steps whose peak memory grows with the job (``@step(memory_max=...)``) take the figure planned here through
their ``kai-memory`` parameter, which Argo applies to the pod through podSpecPatch: a 300-photo job gets what it
needs instead of an OOM kill, a 10-photo job does not reserve the 300-photo figure. Each figure is a measured
model, ``peak = base + per_megapixel_view * photos * megapixels``, times a headroom, rounded up to 256 MiB and
clamped between a floor and the step's ``memory_max``; a job beyond the maximum fails here, by name, before any
work is spent on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HEADROOM = 1.5  # over the model: allocator slack, and the spread between photo sets of the same size
ROUND_MIB = 256
ASPECT = 0.75  # a phone photo's height over its width (4:3): the working size names the longest side


class JobTooLargeError(ValueError):
    """The planned memory of a step is above what the step may be given (its memory_max)."""


@dataclass(frozen=True)
class MemoryModel:
    """Peak memory of a step in GiB: ``base + per_megapixel_view * photos * megapixels``."""

    base: float
    per_megapixel_view: float
    floor_mib: int  # never plan below this (the libraries' own footprint)

    def gib(self, photos: int, megapixels: float) -> float:
        return self.base + self.per_megapixel_view * photos * megapixels


MODELS: dict[str, MemoryModel] = {
    # 535 MiB at 30 and 100 views, 806 MiB at 200 (960x720): ~2.3 MiB per megapixel-view; twice that here, as
    # phone photos at the working size carry more features than the synthetic views. The base is what 11 real
    # photos took (fountain_p11, 3072x2048 worked at 1600 px: 1120 MiB, over the 1024 MiB a 0.55 GiB base planned).
    "camera_poses": MemoryModel(base=0.75, per_megapixel_view=0.0045, floor_mib=1024),
    # 0.85 GiB at 11 views of 1000 px, 1.5 GiB at 30 views, 1.9 GiB at 11 views of 1600 px (high density).
    "point_cloud": MemoryModel(base=0.5, per_megapixel_view=0.05, floor_mib=1024),
}
# The most each sized step may be given (its @step memory_max, which reads it from here): the largest node of its
# pool leaves room for the kubelet and Argo's executor. In GiB, not parsed: step images carry no Kubernetes client.
MEMORY_MAX_GIB = {"camera_poses": 16, "point_cloud": 32}
MEMORY_MAX = {name: f"{gib}Gi" for name, gib in MEMORY_MAX_GIB.items()}


def planned_memory(name: str, photos: int, image_size: int) -> str:
    """The memory to give step ``name`` for ``photos`` photos worked at ``image_size`` px (longest side)."""
    model = MODELS[name]
    megapixels = image_size * image_size * ASPECT / 1e6
    mib = model.gib(photos, megapixels) * HEADROOM * 1024
    mib = max(math.ceil(mib / ROUND_MIB) * ROUND_MIB, model.floor_mib)
    ceiling = MEMORY_MAX[name]
    if mib > MEMORY_MAX_GIB[name] * 1024:
        raise JobTooLargeError(
            f"{name.replace('_', '-')} would need about {mib / 1024:.1f} GiB for {photos} photos at {image_size} px, "
            f"above its maximum of {ceiling}: use a lower quality tier or fewer photos")
    return f"{mib}Mi"

"""How a run's samples are cut into chunks, and how several processes share the chunks
(DESIGN.md section 4): chunk boundaries depend only on the sample list and ``chunk_size``, so a
resumed run computes exactly the batches an uninterrupted one would."""

from __future__ import annotations

import os
from typing import Sequence


def plan_chunks(samples: Sequence, chunk_size: int) -> list[list[int]]:
    """Group sample positions by image (first-appearance order), then cut into chunks of whole
    images holding about ``chunk_size`` samples. Returns lists of sample positions."""
    groups: dict[str, list[int]] = {}
    for pos, sample in enumerate(samples):
        groups.setdefault(sample.image_id, []).append(pos)
    chunks: list[list[int]] = []
    current: list[int] = []
    for positions in groups.values():
        if current and len(current) + len(positions) > chunk_size:
            chunks.append(current)
            current = []
        current.extend(positions)
    if current:
        chunks.append(current)
    return chunks


class Processes:
    """Where this process stands among the processes of an ``accelerate launch``.

    Started by ``accelerate launch --num_processes P ...`` (which sets ``WORLD_SIZE``), each
    process starts with the chunks whose index is its rank modulo P (then helps with any others
    still free) and writes them into the one shared cache folder; all then wait for each other
    and read the merged table. Started normally, there is one process and nothing to wait for.
    """

    def __init__(self) -> None:
        self.state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch
            from accelerate import PartialState

            # without CUDA, accelerate needs cpu=True to join the processes (gloo backend)
            self.state = PartialState(cpu=not torch.cuda.is_available())
        self.rank = self.state.process_index if self.state is not None else 0
        self.world = self.state.num_processes if self.state is not None else 1

    @property
    def device(self) -> str | None:
        """The device accelerate assigned to this process (None: let the wrapper choose)."""
        if self.state is None or self.state.device.type == "cpu":
            return None
        return str(self.state.device)

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

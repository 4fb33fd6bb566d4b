"""An embedding cache: one pass of a frozen backbone over a prepared folder.

An embedding folder holds::

    embeddings.f16        N x D float16, C order, no header (shape in meta.json)
    index.csv             the prepared folder's index (row, path, patient, label, split, ...)
    progress-<r>.json     chunks finished by rank r (written atomically after each chunk)
    meta.json             written last: backbone, weights sha256, preprocessing, stain

Rows are embedded in chunks; a chunk is recorded as done only after its embeddings are flushed
to disk, so a killed run resumes where it stopped (same backbone and weights, checked) and
finishes with the same file a clean run writes. Under ``torchrun`` chunk ``i`` belongs to rank
``i % world_size``; each rank records its own progress and rank 0 writes ``meta.json`` once
every chunk is done. On CUDA the backbone runs under float16 autocast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from breastpath.data.cache import open_prepared
from breastpath.errors import CacheError
from breastpath.io import read_csv, read_json, write_csv, write_json

FORMAT = "breastpath-embeddings/1"
EMBEDDINGS_FILE = "embeddings.f16"


@dataclass
class Embeddings:
    """An embedding folder opened for reading."""

    root: Path
    vectors: np.ndarray
    labels: np.ndarray
    patients: np.ndarray
    splits: np.ndarray
    meta: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])


def open_embeddings(path: str | Path) -> Embeddings:
    """Open a finished embedding folder; :class:`CacheError` when it is missing or incomplete."""
    root = Path(path)
    if not (root / "meta.json").is_file():
        raise CacheError(
            f"{root}: not a finished embedding folder (meta.json missing); run `breastpath "
            "embed` (again: it resumes)"
        )
    meta = read_json(root / "meta.json")
    if meta.get("format") != FORMAT:
        raise CacheError(f"{root}: unsupported embedding format {meta.get('format')!r}")
    n, d = (int(v) for v in meta["shape"])
    file = root / EMBEDDINGS_FILE
    if not file.is_file() or file.stat().st_size != n * d * 2:
        raise CacheError(f"{root}: {EMBEDDINGS_FILE} is missing or has the wrong size")
    rows = read_csv(root / "index.csv")
    if len(rows) != n:
        raise CacheError(f"{root}: index.csv has {len(rows)} rows for {n} embeddings")
    return Embeddings(
        root=root,
        vectors=np.memmap(file, dtype=np.float16, mode="r", shape=(n, d)),
        labels=np.array([int(r["label"]) for r in rows], dtype=np.int64),
        patients=np.array([r["patient"] for r in rows]),
        splits=np.array([r["split"] for r in rows]),
        meta=meta,
    )


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _done_chunks(out: Path, key: dict[str, Any]) -> set[int]:
    done: set[int] = set()
    for file in sorted(out.glob("progress-*.json")):
        record = read_json(file)
        if record.get("key") != key:
            raise CacheError(
                f"{out}: holds embeddings of another backbone, weights or cache ({file.name}); "
                "give a new --out"
            )
        done.update(int(i) for i in record.get("done", []))
    return done


def embed_prepared(
    prepared_dir: str | Path,
    out_dir: str | Path,
    *,
    backbone: str,
    weights: str | None = None,
    pretrained: bool = False,
    args: dict[str, Any] | None = None,
    device: str = "auto",
    batch_size: int = 128,
    chunk_size: int = 1024,
    progress: Callable[[int], None] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Embed every row of ``prepared_dir`` into ``out_dir``; return the meta (see module doc).

    ``stop_after`` (tests) stops after that many chunks of this call, as a kill would.
    """
    from breastpath.inference.device import barrier, setup, teardown
    from breastpath.models.probe import build_backbone

    data = open_prepared(prepared_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info, dev = setup(device)
    try:
        built = build_backbone(backbone, weights=weights, pretrained=pretrained, args=args)
        model = built.module.to(dev)
        mean = built.mean or tuple(data.meta["mean"])
        std = built.std or tuple(data.meta["std"])
        n = len(data.labels)
        dim = _embedding_dim(model, data.images[:1], mean=mean, std=std, device=dev)
        key = {
            "backbone": built.spec(),
            "rows": n,
            "dim": dim,
            "chunk_size": chunk_size,
            "prepared": data.meta.get("shape"),
        }
        if info.is_main:
            _start(out, data.rows, n=n, dim=dim)
        barrier(info)
        options = {"mean": mean, "std": std, "device": dev, "batch_size": batch_size}
        if not _run_chunks(
            out, data.images, model, key, info, progress=progress, stop_after=stop_after, **options
        ):
            return {"stopped": True}
        barrier(info)
        meta = _meta(data, built, key, dim=dim, mean=mean, std=std, device=str(dev))
        if info.is_main:
            if _done_chunks(out, key) != set(range(len(_chunks(n, chunk_size)))):
                raise CacheError(f"{out}: some chunks are missing after the run; run it again")
            write_json(out / "meta.json", meta)
        return meta
    finally:
        teardown(info)


def _run_chunks(
    out: Path,
    images: np.ndarray,
    model: torch.nn.Module,
    key: dict[str, Any],
    info: Any,
    *,
    progress: Callable[[int], None] | None,
    stop_after: int | None,
    **options: Any,
) -> bool:
    """Embed this rank's unfinished chunks, recording each; False when ``stop_after`` hit."""
    n, dim, chunk_size = key["rows"], key["dim"], key["chunk_size"]
    chunks = _chunks(n, chunk_size)
    done = _done_chunks(out, key)
    vectors = np.memmap(out / EMBEDDINGS_FILE, dtype=np.float16, mode="r+", shape=(n, dim))
    mine = [i for i in range(len(chunks)) if i % info.world_size == info.rank]
    finished = sorted(done & set(mine))
    if progress is not None:
        progress(sum(b - a for i, (a, b) in enumerate(chunks) if i in done))
    ran = 0
    for index, (start, stop) in enumerate(chunks):
        if index not in mine or index in done:
            continue
        if stop_after is not None and ran >= stop_after:
            return False
        block = _embed_rows(model, images, np.arange(start, stop), **options)
        vectors[start:stop] = block.astype(np.float16)
        vectors.flush()
        finished.append(index)
        write_json(out / f"progress-{info.rank}.json", {"key": key, "done": finished})
        ran += 1
        if progress is not None:
            progress(stop - start)
    return True


def _start(out: Path, rows: list[dict[str, str]], *, n: int, dim: int) -> None:
    """Create (or keep, when resuming) the embedding file; write the index."""
    (out / "meta.json").unlink(missing_ok=True)
    file = out / EMBEDDINGS_FILE
    if not file.is_file() or file.stat().st_size != n * dim * 2:
        for stale in out.glob("progress-*.json"):
            stale.unlink()
        np.memmap(file, dtype=np.float16, mode="w+", shape=(max(n, 1), dim)).flush()
    write_csv(out / "index.csv", rows, list(rows[0]))


def _embed_rows(model, images, rows, *, mean, std, device, batch_size) -> np.ndarray:
    from breastpath.inference.batches import embed_rows

    autocast = (
        torch.autocast("cuda", dtype=torch.float16)
        if torch.device(device).type == "cuda"
        else contextlib.nullcontext()
    )
    with autocast:
        return embed_rows(
            model,
            images,
            rows,
            mean=torch.tensor(mean, dtype=torch.float32),
            std=torch.tensor(std, dtype=torch.float32),
            device=device,
            batch_size=batch_size,
        )


def _embedding_dim(model, images, *, mean, std, device) -> int:
    return int(
        _embed_rows(
            model, images, np.arange(1), mean=mean, std=std, device=device, batch_size=1
        ).shape[1]
    )


def _meta(data, built, key, *, dim, mean, std, device) -> dict[str, Any]:
    config = getattr(built.module, "data_config", None) or {}
    return {
        "format": FORMAT,
        "shape": [key["rows"], dim],
        "class_names": data.class_names,
        "dataset": data.meta.get("dataset"),
        "task": data.meta.get("task"),
        "prepared": str(data.root),
        "backbone": built.spec(),
        "init": built.info,
        "preprocessing": {
            "cache_image_size": list(data.image_size),
            "model_input_size": config.get("input_size", [3, *data.image_size])[1:],
            "resize": config.get("interpolation", "none"),
            "mean": list(mean),
            "std": list(std),
        },
        "stain": data.meta.get("stain"),
        "split": data.meta.get("split"),
        "device": device,
        "dtype": "float16",
    }

"""One prepared check of every accelerator path, on synthetic full-size data.

Each path runs on its own and reports ``pass``/``fail`` (with the error) or ``skip`` (with the
reason) instead of aborting the run; the figures are throughputs measured after a warm-up:

* training patches/s with AMP: CancerNet at 50x50, EfficientNet-Lite0 at 96x96 (float16 +
  GradScaler on CUDA; bfloat16 where supported), and a ``torch.compile`` step on CUDA;
* inference patches/s at a large batch (CancerNet, autocast);
* stain normalization tiles/s at 256x256: Vahadane, Macenko (the tile's stain matrix estimated,
  and with a cached matrix) and Reinhard, on the torch backend of the device;
* embeddings/s of a ViT-B/16 foundation-model stand-in (``kaiko_vitb16``, random weights);
* DDP: NCCL (gloo on the CPU) across every GPU, spawned with ``torch.multiprocessing``, with
  SyncBatchNorm; passes when every rank ends with the same weights;
* ONNX Runtime with the CUDA execution provider (CPU provider on the CPU);
* a short in-process load test of the web API (``POST /api/predict``) on the bundled model.

    python scripts/device_check.py                       # the full check (<= 8 minutes, 1 GPU)
    python scripts/device_check.py --device cpu --tiny   # seconds: what CI runs

Writes ``device_check.json`` and ``device_check.md`` to ``--out`` (default: the current folder).
The exit status is 1 when any path failed.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Budget:
    """Sizes of one run: full (a GPU) or tiny (seconds on a CPU)."""

    device: str
    train_batch: int
    train_steps: int
    infer_batch: int
    infer_batches: int
    stain_tiles: int
    vit_batch: int
    vit_batches: int
    serve_requests: int
    ddp_steps: int
    tiny: bool

    @classmethod
    def make(cls, device: str, tiny: bool) -> Budget:
        if tiny:
            return cls(device, 8, 2, 16, 1, 2, 2, 1, 4, 2, True)
        return cls(device, 256, 30, 4096, 10, 256, 128, 8, 200, 20, False)


def _timed(fn: Callable[[], Any], *, sync: Callable[[], None]) -> float:
    sync()
    started = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - started


def _sync_for(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _batch(n: int, side: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(60, 240, size=(n, side, side, 3), dtype=np.uint8)


def _input(batch: np.ndarray, device: str) -> torch.Tensor:
    x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.25


def train_speed(budget: Budget, *, model_name: str, side: int, dtype: str) -> dict[str, Any]:
    """Patches/s of optimizer steps under autocast (``float16`` with a GradScaler, ``bfloat16``)."""
    from breastpath.models import create_model

    device = budget.device
    cuda = device.startswith("cuda")
    if dtype == "bfloat16" and cuda and not torch.cuda.is_bf16_supported():
        return {"status": "skip", "reason": "bfloat16 not supported on this GPU"}
    args = {"input_size": side} if model_name != "cancernet" else {}
    model = create_model(model_name, num_classes=2, **args).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp_dtype = torch.float16 if dtype == "float16" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and dtype == "float16")
    x = _input(_batch(budget.train_batch, side), device)
    y = torch.randint(0, 2, (budget.train_batch,), device=device)

    def steps(n: int) -> None:
        for _ in range(n):
            with torch.autocast(device.split(":")[0], dtype=amp_dtype, enabled=cuda):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    steps(2)
    seconds = _timed(lambda: steps(budget.train_steps), sync=_sync_for(device))
    rate = budget.train_batch * budget.train_steps / seconds
    return {"status": "pass", "value": round(rate, 1), "unit": "patches/s", "amp": dtype}


def compile_step(budget: Budget) -> dict[str, Any]:
    """A ``torch.compile``d CancerNet forward/backward gives the eager loss."""
    if budget.tiny:
        return {"status": "skip", "reason": "compilation takes minutes on a CPU (--tiny)"}
    from breastpath.models import create_model

    model = create_model("cancernet", num_classes=2).to(budget.device)
    compiled = torch.compile(model)
    x = _input(_batch(64, 50), budget.device)
    started = time.perf_counter()
    loss = compiled(x).float().logsumexp(1).mean()
    loss.backward()
    eager = model(x).float().logsumexp(1).mean()
    ok = torch.allclose(loss, eager, atol=1e-3, rtol=1e-3)
    return {
        "status": "pass" if ok else "fail",
        "value": round(time.perf_counter() - started, 1),
        "unit": "s to compile",
        "error": "" if ok else "compiled loss differs",
    }


def inference_speed(budget: Budget) -> dict[str, Any]:
    """CancerNet patches/s at a large batch under autocast, no gradients."""
    from breastpath.models import create_model

    device, cuda = budget.device, budget.device.startswith("cuda")
    model = create_model("cancernet", num_classes=2).to(device).eval()
    x = _input(_batch(budget.infer_batch, 50), device)

    @torch.inference_mode()
    def run(n: int) -> None:
        for _ in range(n):
            with torch.autocast(device.split(":")[0], dtype=torch.float16, enabled=cuda):
                model(x).float().softmax(1)

    run(1)
    seconds = _timed(lambda: run(budget.infer_batches), sync=_sync_for(device))
    rate = budget.infer_batch * budget.infer_batches / seconds
    return {
        "status": "pass",
        "value": round(rate, 1),
        "unit": "patches/s",
        "batch": budget.infer_batch,
    }


def _he_tiles(n: int, side: int = 256) -> np.ndarray:
    rng = np.random.default_rng(0)
    he = np.array([[0.62, 0.72, 0.31], [0.20, 0.93, 0.30]])
    conc = rng.gamma(2.0, 0.25, (n, side * side, 2)) * (rng.random((n, side * side, 2)) < 0.6)
    rgb = 256 * np.exp(-(conc @ he)) - 1
    return np.clip(rgb, 0, 255).astype(np.uint8).reshape(n, side, side, 3)


def stain_speed(budget: Budget, *, method: str, cached: bool) -> dict[str, Any]:
    """Tiles/s of ``transform`` on 256x256 tiles on the device (torch backend)."""
    from breastpath.stain import get_normalizer

    tiles = _he_tiles(budget.stain_tiles)
    norm = get_normalizer(method, device=budget.device).fit(tiles[:1])
    batch = torch.from_numpy(tiles).to(budget.device)
    if cached:
        apply = _cached_transform(norm, batch)
    else:

        def apply() -> Any:
            return norm.transform(batch)

    apply()
    seconds = _timed(apply, sync=_sync_for(budget.device))
    return {"status": "pass", "value": round(len(tiles) / seconds, 1), "unit": "tiles/s"}


def _cached_transform(norm: Any, batch: torch.Tensor) -> Callable[[], Any]:
    """Normalization with each tile's stain matrix known in advance (estimated once)."""
    from breastpath.stain import _backend, _ops

    stains = torch.as_tensor(norm.extract(batch), dtype=torch.float32, device=batch.device)
    target = torch.as_tensor(norm.stain_matrix.T, dtype=torch.float32, device=batch.device)
    xp = _backend.ops_for(batch)
    rgb = batch.reshape(batch.shape[0], -1, 3)

    def apply() -> Any:
        od = _ops.rgb_to_od(xp, rgb, norm.io)
        conc = norm._concentrations(xp, od, stains)
        source = xp.percentile_all(conc, norm.percentile, axis=2)
        scale = torch.as_tensor(norm.max_concentrations, device=batch.device)[None] / source
        return _ops.od_to_rgb(xp, _ops.combine(xp, conc * scale[:, :, None].float(), target))

    return apply


def embedding_speed(budget: Budget) -> dict[str, Any]:
    """Embeddings/s of the ViT-B/16 stand-in at 224x224 (autocast float16 on CUDA)."""
    from breastpath.models import create_model

    device, cuda = budget.device, budget.device.startswith("cuda")
    name = "kaiko_vits16" if budget.tiny else "kaiko_vitb16"  # tiny: ViT-S, seconds on a CPU
    model = create_model(name, num_classes=0).to(device).eval()
    x = _input(_batch(budget.vit_batch, 224), device)

    @torch.inference_mode()
    def run(n: int) -> None:
        for _ in range(n):
            with torch.autocast(device.split(":")[0], dtype=torch.float16, enabled=cuda):
                model(x)

    run(1)
    seconds = _timed(lambda: run(budget.vit_batches), sync=_sync_for(device))
    rate = budget.vit_batch * budget.vit_batches / seconds
    return {"status": "pass", "value": round(rate, 1), "unit": "embeddings/s", "model": name}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, backend: str, steps: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from breastpath.models import create_model

    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        device = f"cuda:{rank}" if backend == "nccl" else "cpu"
        if backend == "nccl":
            torch.cuda.set_device(rank)
        torch.manual_seed(0)
        model = create_model("cancernet", num_classes=2)
        if backend == "nccl":  # SyncBatchNorm is GPU-only
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(device)
        ddp = DistributedDataParallel(model, device_ids=[rank] if backend == "nccl" else None)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
        x = _input(_batch(16, 50, seed=rank), device)
        y = torch.randint(0, 2, (16,), device=device, generator=None)
        started = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
        total = torch.cat([p.detach().flatten() for p in model.parameters()]).sum()[None]
        sums = [torch.zeros_like(total) for _ in range(world)]
        dist.all_gather(sums, total)
        if rank == 0:
            same = all(torch.allclose(s, sums[0]) for s in sums)
            Path(out).write_text(
                json.dumps({"same": same, "seconds": time.perf_counter() - started})
            )
    finally:
        dist.destroy_process_group()


def ddp_check(budget: Budget) -> dict[str, Any]:
    """DDP + SyncBatchNorm over every GPU (NCCL), or two CPU processes (gloo, plain BatchNorm:
    SyncBatchNorm is GPU-only)."""

    cuda = budget.device.startswith("cuda")
    world = torch.cuda.device_count() if cuda else 2
    backend = "nccl" if cuda else "gloo"
    here = str(Path(__file__).resolve().parent)  # children import this file's module by name
    added = here not in sys.path  # (spawned children start with the parent's sys.path)
    if added:
        sys.path.insert(0, here)
    try:
        return _spawn_ddp(budget, world=world, backend=backend)
    finally:
        if added:
            sys.path.remove(here)


def _spawn_ddp(budget: Budget, *, world: int, backend: str) -> dict[str, Any]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "ddp.json")
        mp.spawn(
            _ddp_worker,
            args=(world, _free_port(), backend, budget.ddp_steps, out),
            nprocs=world,
            join=True,
        )
        result = json.loads(Path(out).read_text())
    status = "pass" if result["same"] else "fail"
    return {
        "status": status,
        "value": world,
        "unit": f"ranks ({backend})",
        "error": "" if result["same"] else "ranks ended with different weights",
        "seconds": round(result["seconds"], 2),
    }


def onnx_check(budget: Budget) -> dict[str, Any]:
    """Export CancerNet and run it with onnxruntime's CUDA (or CPU) execution provider."""
    try:
        import onnxruntime
    except ImportError:
        return {"status": "skip", "reason": "onnxruntime is not installed (the onnx extra)"}
    from breastpath.inference.onnx import export_onnx_bytes
    from breastpath.models import create_model

    want = "CUDAExecutionProvider" if budget.device.startswith("cuda") else "CPUExecutionProvider"
    if want not in onnxruntime.get_available_providers():
        return {"status": "fail", "error": f"{want} not available in this onnxruntime"}
    model = create_model("cancernet", num_classes=2).eval()
    data = export_onnx_bytes(model, input_size=(50, 50))
    session = onnxruntime.InferenceSession(data, providers=[want])
    x = _input(_batch(32, 50), "cpu")
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ok = np.allclose(got, model(x).numpy(), atol=1e-3)
    return {
        "status": "pass" if ok else "fail",
        "value": session.get_providers()[0],
        "unit": "",
        "error": "" if ok else "onnx output differs from torch",
    }


def serve_check(budget: Budget) -> dict[str, Any]:
    """Requests/s of ``POST /api/predict`` in process, on the bundled model."""
    from fastapi.testclient import TestClient
    from PIL import Image

    from breastpath.inference.predictor import Predictor
    from breastpath.serve.app import create_app

    buffer = io.BytesIO()
    Image.fromarray(_he_tiles(1, 50)[0]).save(buffer, format="PNG")
    png = buffer.getvalue()
    app = create_app(Predictor.from_checkpoint("default", device=budget.device))
    with TestClient(app) as client:
        files = {"file": ("patch.png", png, "image/png")}
        first = client.post("/api/predict", files=files)
        if first.status_code != 200:
            return {"status": "fail", "error": f"HTTP {first.status_code}: {first.text[:200]}"}
        started = time.perf_counter()
        codes = [
            client.post("/api/predict", files=files).status_code
            for _ in range(budget.serve_requests)
        ]
        seconds = time.perf_counter() - started
    bad = [c for c in codes if c != 200]
    return {
        "status": "fail" if bad else "pass",
        "value": round(len(codes) / seconds, 1),
        "unit": "requests/s",
        "error": f"{len(bad)} non-200 answers" if bad else "",
    }


def checks(budget: Budget) -> dict[str, Callable[[], dict[str, Any]]]:
    """Every path, by name, in report order."""
    out: dict[str, Callable[[], dict[str, Any]]] = {}
    for dtype in ("float16", "bfloat16"):
        out[f"train cancernet 50px ({dtype})"] = lambda d=dtype: train_speed(
            budget, model_name="cancernet", side=50, dtype=d
        )
    out["train efficientnet_lite0 96px (float16)"] = lambda: train_speed(
        budget, model_name="efficientnet_lite0", side=96, dtype="float16"
    )
    out["torch.compile cancernet"] = lambda: compile_step(budget)
    out["inference cancernet (large batch)"] = lambda: inference_speed(budget)
    for method in ("vahadane", "macenko", "reinhard"):
        out[f"stain {method} 256px"] = lambda m=method: stain_speed(budget, method=m, cached=False)
    for method in ("vahadane", "macenko"):
        out[f"stain {method} 256px, cached matrix"] = lambda m=method: stain_speed(
            budget, method=m, cached=True
        )
    out["embeddings vit stand-in"] = lambda: embedding_speed(budget)
    out["ddp + syncbatchnorm"] = lambda: ddp_check(budget)
    out["onnxruntime provider"] = lambda: onnx_check(budget)
    out["serve load test"] = lambda: serve_check(budget)
    return out


def run_all(budget: Budget, *, only: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every check; a failure is recorded with its error, never raised."""
    results = []
    for name, fn in checks(budget).items():
        if only and not any(word in name for word in only):
            continue
        started = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:  # the point: report and go on
            lines = [line for line in str(exc).splitlines() if line.strip()]
            tail = lines[-1].strip() if lines else traceback.format_exception_only(exc)[-1]
            result = {"status": "fail", "error": f"{type(exc).__name__}: {tail}"[:500]}
        result.setdefault("seconds", round(time.perf_counter() - started, 2))
        results.append({"path": name, **result})
        print(
            f"{result['status']:>4}  {name}: {result.get('value', '')} "
            f"{result.get('unit', '')} {result.get('error') or result.get('reason', '')}",
            file=sys.stderr,
            flush=True,
        )
    return results


def environment(device: str) -> dict[str, Any]:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "cpu": platform.processor() or platform.machine(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpus=torch.cuda.device_count(),
            cuda=torch.version.cuda,
        )
    return info


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# Device check ({env['device']}{', tiny' if report['tiny'] else ''})",
        "",
        f"{env.get('gpu', env['cpu'])}; torch {env['torch']}, Python {env['python']}.",
        "",
        "| path | status | figure | note |",
        "| --- | --- | --- | --- |",
    ]
    for r in report["results"]:
        figure = f"{r['value']} {r.get('unit', '')}".strip() if "value" in r else ""
        note = (r.get("error") or r.get("reason") or "").replace("|", "/")
        lines.append(f"| {r['path']} | {r['status']} | {figure} | {note} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="Smallest sizes (seconds, CPU).")
    parser.add_argument("--only", nargs="*", help="Run the paths whose names contain a word.")
    parser.add_argument("--out", default=".", help="Folder for device_check.json/.md.")
    args = parser.parse_args(argv)
    budget = Budget.make(args.device, args.tiny)
    started = time.perf_counter()
    results = run_all(budget, only=args.only)
    report = {
        "environment": environment(args.device),
        "tiny": args.tiny,
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "device_check.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 1 if any(r["status"] == "fail" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

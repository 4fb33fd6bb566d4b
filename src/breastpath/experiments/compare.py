"""``breastpath compare``: train several models under one budget and split, then tabulate.

Models are registry names; ``svm:NAME`` is the CNN + SVM hybrid on NAME's embeddings: ImageNet
features when NAME has offline weights (or ``weights``), else the NAME trained earlier in the
same comparison (``cancernet,svm:cancernet``).

Every model trains on the same prepared folder (so the same patient-level split) with the same
number of epochs and steps, its own optimizer preset (its registry record's, see
:mod:`breastpath.train.presets`) and, for
timm backbones, offline ImageNet weights where installed (else from scratch, said in the table).
Each is then scored on the test split through the same :class:`~breastpath.inference.predictor.
Predictor` the CLI and the web app use: patch and patient balanced accuracy, F1 and ROC-AUC
(patient-cluster bootstrap 95% intervals at patch level), parameters, training time and
inference throughput. ``comparison.json`` and ``comparison.md`` are written to the output folder.

Throughput is measured twice: wall-clock patches/s with torch's threads, and patches per
CPU-second with one thread times 2 (an estimate for 2 otherwise idle cores: wall-clock figures on
a shared machine depend on what else runs).
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import breastpath
from breastpath.checkpoint import CheckpointMeta, load_checkpoint
from breastpath.choices import TTAMode
from breastpath.config import TrainConfig
from breastpath.data.cache import PreparedData, open_prepared
from breastpath.errors import ConfigError
from breastpath.evaluate.aggregate import patient_scores
from breastpath.evaluate.metrics import binary_metrics, bootstrap_ci, multiclass_metrics
from breastpath.inference.score import cancer_score, cancer_truth
from breastpath.io import markdown_table, write_json
from breastpath.models import list_models
from breastpath.models.pretrained import has_offline_weights
from breastpath.train.presets import preset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """What every model of a comparison gets.

    ``input_size`` is the working side of timm backbones (0: each model's own default, 224 or
    299); CancerNet always works at the cache's size.
    """

    epochs: int = 3
    max_steps_per_epoch: int = 0
    batch_size: int = 64
    input_size: int = 96
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0
    tta: TTAMode = "none"


def parse_models(text: str | Sequence[str]) -> list[str]:
    """``"cancernet,efficientnet_lite0,svm:efficientnet_lite0"`` -> names, checked.

    Examples
    --------
    >>> parse_models("cancernet, svm:resnet18")
    ['cancernet', 'svm:resnet18']
    """
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise ConfigError("give at least one model to compare")
    known = set(list_models()) - {"svm_hybrid"}
    for name in names:
        if name.removeprefix("svm:") not in known:
            raise ConfigError(f"unknown model {name!r}; choose from {', '.join(sorted(known))}")
    if len(set(names)) != len(names):
        raise ConfigError("a model is listed twice")
    return names


def model_config(
    name: str, budget: Budget, *, weights: dict[str, str] | None = None
) -> TrainConfig:
    """The training config of one compared model: its preset plus the shared budget."""
    hybrid = name.startswith("svm:")
    model = name.removeprefix("svm:")
    weight_file = (weights or {}).get(model, "")
    pretrained = not weight_file and has_offline_weights(model)
    options: dict[str, Any] = preset(
        model, pretrained=pretrained or bool(weight_file), epochs=budget.epochs
    )
    zoo = model != "cancernet" and budget.input_size > 0
    args = {"input_size": budget.input_size} if zoo else {}
    options.update(
        model=model,
        model_args=args,
        pretrained=pretrained,
        weights=weight_file,
        epochs=budget.epochs,
        max_steps_per_epoch=budget.max_steps_per_epoch,
        batch_size=budget.batch_size,
        seed=budget.seed,
        device=budget.device,
        num_threads=budget.num_threads,
        tta=budget.tta,
        patience=budget.epochs + 1,  # the budget, not early stopping, ends a run
        monitor="val_auc",
        progress=False,
        head="svm" if hybrid else "linear",
    )
    return TrainConfig.from_flat(options)


def evaluate_split(
    checkpoint: str | Path, data: PreparedData, *, split: str = "test", n_boot: int = 1000
) -> tuple[dict[str, Any], Any, np.ndarray]:
    """Patch and patient metrics of a checkpoint on one split (with the checkpoint's threshold).

    Returns the metrics, the :class:`Predictor` and the rows scored.
    """
    from breastpath.evaluate.pipeline import score_rows
    from breastpath.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    if predictor.class_names != data.class_names:
        raise ConfigError(f"{checkpoint} predicts {predictor.class_names}, not {data.class_names}")
    rows = data.indices(split)
    probs = score_rows(predictor, data, rows)
    cancer = cancer_score(probs, predictor.meta)
    truth = cancer_truth(data.labels[rows], predictor.meta)
    patients = data.patients[rows]
    threshold = predictor.threshold
    per_patient = patient_scores(patients, truth, cancer, reduce="mean")
    result: dict[str, Any] = {
        "patch": binary_metrics(truth, cancer, threshold=threshold),
        "patient": binary_metrics(
            per_patient["y_true"], per_patient["scores"], threshold=threshold
        ),
        "patch_ci": {
            metric: bootstrap_ci(
                truth, cancer, metric=metric, threshold=threshold, groups=patients, n_boot=n_boot
            )
            for metric in ("balanced_accuracy", "f1", "roc_auc")
        },
        "patients": len(per_patient["patients"]),
    }
    if len(data.class_names) > 2:
        result["classes"] = multiclass_metrics(
            data.labels[rows], probs, class_names=data.class_names
        )
    return result, predictor, rows


def measure_throughput(
    predictor: Any,
    data: PreparedData,
    rows: np.ndarray,
    *,
    patches: int = 512,
    rounds: int = 3,
    cores: int = 2,
) -> dict[str, Any]:
    """Inference speed of ``predictor`` on cache rows, preprocessing included.

    ``patches_per_s``: best wall-clock rate of ``rounds`` passes with torch's thread count.
    ``patches_per_cpu_s_1_thread``: best rate per CPU-second of this process with one thread,
    which other load on a shared machine barely changes; ``estimated_patches_per_s`` is that
    times ``cores`` (convolutions over a batch scale almost linearly with cores).
    """
    chosen = np.sort(rows[:patches])
    block = predictor.cache_input(np.array(data.images[chosen]), data.meta)

    def best(threads: int) -> tuple[float, float]:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            predictor.predict_proba(block)  # warm-up: allocations, kernel selection
            wall_s, cpu_s = np.inf, np.inf
            for _ in range(rounds):
                wall, cpu = time.perf_counter(), time.process_time()
                predictor.predict_proba(block)
                wall_s = min(wall_s, time.perf_counter() - wall)
                cpu_s = min(cpu_s, time.process_time() - cpu)
        finally:
            torch.set_num_threads(previous)
        return len(block) / wall_s, len(block) / max(cpu_s, 1e-9)

    threads = torch.get_num_threads()
    wall_rate, _ = best(threads)
    _, single = best(1)
    return {
        "patches_per_s": round(wall_rate, 1),
        "threads": threads,
        "patches_per_cpu_s_1_thread": round(single, 1),
        "estimated_patches_per_s": round(cores * single, 1),
        "estimate": f"{cores} x one-thread rate per CPU-second",
    }


def _describe_init(meta: CheckpointMeta) -> str:
    source = str(meta.init.get("source", "not recorded"))
    if meta.model.name == "svm_hybrid":
        return f"SVM on {meta.model.args['backbone']['name']} ({source})"
    return source


def _row(
    label: str, checkpoint: Path, data: PreparedData, *, seconds: float | None, n_boot: int
) -> dict[str, Any]:
    metrics, predictor, rows = evaluate_split(checkpoint, data, n_boot=n_boot)
    meta = load_checkpoint(checkpoint).meta
    model = predictor.model
    params = sum(p.numel() for p in model.parameters()) if model is not None else 0
    buffers = sum(b.numel() for b in model.buffers()) if model is not None else 0
    model_input = meta.working_size or meta.input_size
    return {
        "model": label,
        "checkpoint": str(checkpoint),
        "init": _describe_init(meta),
        "input_size": list(model_input[-2:]),
        "parameters": int(params),
        "stored_values": int(params + buffers),
        "train_seconds": None if seconds is None else round(seconds, 1),
        "threshold": predictor.threshold,
        "tta": meta.tta,
        "throughput": measure_throughput(predictor, data, rows),
        **metrics,
    }


def compare_models(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    models: Sequence[str],
    budget: Budget = Budget(),
    weights: dict[str, str] | None = None,
    baselines: Sequence[str] = (),
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Train ``models`` on ``data_dir`` under ``budget`` and compare them on its test split.

    ``baselines`` are existing checkpoints (``default``, a run folder) scored on the same split
    without training. Writes ``comparison.json`` and ``comparison.md`` to ``out_dir``.
    """
    from breastpath.train.loop import train

    names = parse_models(models)
    data = open_prepared(data_dir)
    if len(data.indices("test")) == 0:
        raise ConfigError(f"{data_dir}: the test split is empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if budget.num_threads > 0:
        torch.set_num_threads(budget.num_threads)
    rows = []
    trained: dict[str, Path] = {}
    for name in names:
        config = _with_backbone(name, model_config(name, budget, weights=weights), trained)
        run = out / "runs" / name.replace(":", "-")
        log.info("training %s for %d epoch(s)", name, config.stop.epochs)
        started = time.perf_counter()
        train(data_dir, run, config)
        seconds = time.perf_counter() - started
        trained[name] = run / "best.json"
        rows.append(_row(name, run / "best.json", data, seconds=seconds, n_boot=n_boot))
        log.info("%s: %s", name, _summary_line(rows[-1]))
    for baseline in baselines:
        label = f"{baseline} (as shipped)"
        rows.append(_row(label, _resolve(baseline), data, seconds=None, n_boot=n_boot))
    result = {
        "data": {
            "prepared": str(data_dir),
            "dataset": data.meta.get("dataset"),
            "task": data.meta.get("task"),
            "split": data.meta.get("split"),
            "test_patches": len(data.indices("test")),
        },
        "budget": asdict(budget),
        "machine": machine_description(),
        "version": breastpath.__version__,
        "results": rows,
    }
    write_json(out / "comparison.json", result)
    (out / "comparison.md").write_text(format_markdown(result), encoding="utf-8")
    return result


def _with_backbone(name: str, config: TrainConfig, trained: dict[str, Path]) -> TrainConfig:
    """An SVM hybrid without ImageNet weights embeds with the model trained earlier here."""
    model = config.model.name
    if config.head.kind != "svm" or config.model.pretrained or config.model.weights:
        return config
    if model not in trained:
        raise ConfigError(
            f"{name}: {model} has no offline ImageNet weights; list "
            f"{model} before {name} to embed with the model trained here"
        )
    return config.with_options(backbone_checkpoint=str(trained[model]))


def _resolve(name: str) -> Path:
    from breastpath.checkpoint import resolve_checkpoint

    return resolve_checkpoint(name)


def machine_description() -> dict[str, Any]:
    """CPU, cores, threads, GPU, library versions and load (what the timings depend on)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "load_average": None if load is None else [round(v, 2) for v in load],
    }


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _summary_line(row: dict[str, Any]) -> str:
    return (
        f"patch BAC {_fmt(row['patch']['balanced_accuracy'])}, "
        f"AUC {_fmt(row['patch']['roc_auc'])}, "
        f"{row['throughput']['patches_per_s']:.0f} patches/s"
    )


#: Columns of the comparison table.
COMPARISON_HEADER = [
    "model",
    "init",
    "input",
    "params",
    "train s",
    "patch BAC [95% CI]",
    "patch F1",
    "patch AUC [95% CI]",
    "patient BAC",
    "patient F1",
    "patient AUC",
    "patches/s",
    "est. 2-core patches/s",
]


def format_markdown(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table plus the budget and machine it was measured under."""
    rows = []
    for r in result["results"]:
        ci, p, q, t = r["patch_ci"], r["patch"], r["patient"], r["throughput"]
        seconds = "—" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        bac_ci = f"[{_fmt(ci['balanced_accuracy'][0])}–{_fmt(ci['balanced_accuracy'][1])}]"
        auc_ci = f"[{_fmt(ci['roc_auc'][0])}–{_fmt(ci['roc_auc'][1])}]"
        rows.append(
            [
                r["model"],
                r["init"],
                r["input_size"][0],
                f"{r['parameters']:,}",
                seconds,
                f"{_fmt(p['balanced_accuracy'])} {bac_ci}",
                _fmt(p["f1"]),
                f"{_fmt(p['roc_auc'])} {auc_ci}",
                _fmt(q["balanced_accuracy"]),
                _fmt(q["f1"]),
                _fmt(q["roc_auc"]),
                f"{t['patches_per_s']:,.0f}",
                f"{t['estimated_patches_per_s']:,.0f}",
            ]
        )
    lines = [markdown_table(COMPARISON_HEADER, rows)]
    b, m, d = result["budget"], result["machine"], result["data"]
    notes = [
        "",
        f"Data: `{d['prepared']}` ({d['dataset']}, {d['task']}), test split "
        f"{d['test_patches']} images; patient-level split seed {(d['split'] or {}).get('seed')}.",
        f"Budget per model: {b['epochs']} epoch(s), "
        f"{b['max_steps_per_epoch'] or 'all'} steps per epoch, batch {b['batch_size']}, "
        f"timm input {b['input_size'] or 'model default'} px, seed {b['seed']}, TTA {b['tta']}.",
        f"Machine: {m['processor']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads, "
        f"GPU {m['cuda'] or 'none'}, torch {m['torch']}, load average {m['load_average']}.",
        "Thresholds were chosen on the validation split; patient score = mean patch probability; "
        "95% CIs: patient-cluster bootstrap.",
    ]
    return "\n".join(lines + notes) + "\n"

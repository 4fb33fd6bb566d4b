"""Knowledge distillation: the teacher's targets drive the student, and cross-validation gives
each fold the teacher that never saw its test patients."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from breastpath.checkpoint import build_model, load_checkpoint, save_checkpoint
from breastpath.config import TrainConfig
from breastpath.data.cache import open_prepared
from breastpath.data.transforms import to_model_input
from breastpath.errors import ConfigError
from breastpath.experiments.crossval import fold_teacher
from breastpath.inference.batches import checkpoint_rows
from breastpath.train.distill import Teacher, distill_loss_sum
from breastpath.train.loop import train

TINY = {"widths": [8, 16, 16], "hidden": 32}


def _inverted_teacher(trained_run: Path, prepared: Path, out: Path) -> Path:
    """The trained run's best checkpoint made a confidently wrong teacher: its two logits
    swapped, centred on the data and spread to a standard deviation of 4 (a CancerNet trained
    for a few steps ranks the images but its probabilities barely move)."""
    checkpoint = load_checkpoint(trained_run / "best.json")
    model, data = build_model(checkpoint).eval(), open_prepared(prepared)
    mean = torch.tensor(checkpoint.meta.mean)
    std = torch.tensor(checkpoint.meta.std)
    with torch.no_grad():
        x = to_model_input(
            torch.from_numpy(np.array(data.images)), mean=mean, std=std, device="cpu"
        )
        logits = model(x).flip(1)
    scale = 4.0 / float((logits[:, 1] - logits[:, 0]).std())
    tensors = dict(checkpoint.tensors)
    weight, bias = tensors["model.classifier.weight"], tensors["model.classifier.bias"]
    tensors["model.classifier.weight"] = (weight.flip(0) * scale).contiguous()
    tensors["model.classifier.bias"] = ((bias.flip(0) - logits.mean(0)) * scale).contiguous()
    return save_checkpoint(out / "inverted", tensors=tensors, meta=checkpoint.meta)


def _student_auc(prepared: Path, run: Path) -> float:
    data = open_prepared(prepared)
    rows = np.arange(len(data.labels))
    probs = checkpoint_rows(load_checkpoint(run / "last.json"), data.images, rows, device="cpu")
    return float(roc_auc_score(data.labels, probs[:, 1]))


def test_distill_loss_is_zero_at_the_teacher_and_grows_away_from_it():
    teacher = torch.softmax(torch.tensor([[3.0, -1.0], [-2.0, 2.0]]) / 2.0, dim=1)
    at_teacher = distill_loss_sum(
        torch.tensor([[3.0, -1.0], [-2.0, 2.0]]), teacher, temperature=2.0
    )
    opposite = distill_loss_sum(torch.tensor([[-1.0, 3.0], [2.0, -2.0]]), teacher, temperature=2.0)
    assert abs(float(at_teacher)) < 1e-6
    assert float(opposite) > 1.0


@pytest.mark.parametrize("weight, learns_labels", [(0.0, True), (1.0, False)])
def test_the_teachers_targets_drive_the_student(
    prepared_idc, trained_run, tmp_path, weight, learns_labels
):
    """A student of a teacher that is always wrong learns the labels with weight 0 and the
    teacher's inverted answers with weight 1."""
    teacher = _inverted_teacher(trained_run, prepared_idc, tmp_path)
    config = TrainConfig.from_flat(
        epochs=4,
        batch_size=16,
        lr=0.01,
        progress=False,
        patience=10,
        model_args=TINY,
        teacher=[str(teacher)],
        distill_weight=weight,
        distill_temperature=1.0,
    )
    train(prepared_idc, tmp_path / "student", config)
    auc = _student_auc(prepared_idc, tmp_path / "student")
    assert (auc > 0.8) if learns_labels else (auc < 0.2), auc
    recorded = json.loads((tmp_path / "student" / "best.json").read_text())["train"]["distill"]
    assert recorded == {"teachers": [str(teacher)], "weight": weight, "temperature": 1.0}


def test_a_teacher_of_other_classes_is_refused(prepared_idc, trained_run, tmp_path):
    checkpoint = load_checkpoint(trained_run / "best.json")
    other = checkpoint.meta.replace(class_names=["benign", "malignant"])
    path = save_checkpoint(tmp_path / "other", tensors=checkpoint.tensors, meta=other)
    with pytest.raises(ConfigError, match="classes"):
        Teacher.load(
            [path],
            class_names=["non-IDC", "IDC"],
            image_size=(50, 50),
            stain=None,
            device=torch.device("cpu"),
        )


def test_a_teacher_needs_the_linear_head():
    with pytest.raises(ConfigError, match="linear head"):
        TrainConfig.from_flat(head="svm", teacher=["default"])


def test_fold_teacher_takes_the_fold_that_held_out_the_same_patients(tmp_path):
    cv = tmp_path / "teacher-cv"
    for fold, patients in enumerate((["a", "b"], ["c", "d"])):
        (cv / f"fold{fold}").mkdir(parents=True)
        done = {"settings": {}, "result": {"test_patients": patients}}
        (cv / f"fold{fold}" / "fold.json").write_text(json.dumps(done))
    assert fold_teacher(str(cv), 1, ["d", "c"]) == str(cv / "fold1" / "run" / "best.json")
    with pytest.raises(ConfigError, match="other patients"):
        fold_teacher(str(cv), 0, ["a", "c"])
    (cv / "fold1" / "fold.json").unlink()
    with pytest.raises(ConfigError, match="not finished"):
        fold_teacher(str(cv), 1, ["c", "d"])
    assert fold_teacher("default", 0, ["a"]) == "default"  # a checkpoint, not a folder


def test_crossval_gives_each_fold_its_own_teacher(tmp_path):
    import yaml

    from breastpath.config import DataConfig
    from breastpath.data.prepare import prepare
    from breastpath.experiments.crossval import cross_validate
    from test_crossval import make_tile_tree

    prepared = tmp_path / "prepared"
    prepare([make_tile_tree(tmp_path / "tiles")], prepared, config=DataConfig(image_size=32))
    config = TrainConfig.from_flat(
        epochs=1, batch_size=8, progress=False, model_args={"widths": [8, 16, 16], "hidden": 16}
    )
    teacher_cv = tmp_path / "teacher"
    cross_validate(prepared, teacher_cv, config, folds=2, val_frac=0.3, n_boot=10)
    student = config.with_options(teacher=[str(teacher_cv)])
    cross_validate(prepared, tmp_path / "student", student, folds=2, val_frac=0.3, n_boot=10)
    for fold in range(2):
        saved = tmp_path / "student" / f"fold{fold}" / "run" / "config.yaml"
        teachers = yaml.safe_load(saved.read_text())["train"]["distill"]["teachers"]
        assert teachers == [str(teacher_cv / f"fold{fold}" / "run" / "best.json")]
    with pytest.raises(ConfigError, match="other patients"):  # folds dealt with another seed
        cross_validate(prepared, tmp_path / "other", student, folds=2, seed=5, val_frac=0.3)

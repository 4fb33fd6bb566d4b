"""breastpath embed / probe: a resumable embedding cache, patient-level probes, and probe
checkpoints that rebuild their backbone from sha256-checked local weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from breastpath.errors import CacheError, CheckpointError
from breastpath.experiments.embed import EMBEDDINGS_FILE, embed_prepared, open_embeddings
from breastpath.experiments.probe import ProbeOptions, probe


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    """A local CancerNet state dict with seeded random weights (the backbone's weights file)."""
    from breastpath.models import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "cancernet.pth"
    torch.save(create_model("cancernet", num_classes=2).state_dict(), path)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every embedding in this module is computed on one thread, as the torchrun processes
    compute theirs (OMP_NUM_THREADS=1): CPU kernels may sum in another order on more threads,
    and the thread count an earlier test left must not decide the bytes compared here."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def embedded(prepared_idc, backbone_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("emb") / "cancernet"
    embed_prepared(
        prepared_idc, out, backbone="cancernet", weights=str(backbone_file), chunk_size=32
    )
    return out


def test_a_killed_embed_resumes_to_the_same_file(prepared_idc, backbone_file, embedded, tmp_path):
    out = tmp_path / "resumed"
    options = {"backbone": "cancernet", "weights": str(backbone_file), "chunk_size": 32}
    stopped = embed_prepared(prepared_idc, out, stop_after=1, **options)
    assert stopped["stopped"]
    with pytest.raises(CacheError, match="not a finished"):
        open_embeddings(out)
    seen: list[int] = []
    meta = embed_prepared(prepared_idc, out, progress=seen.append, **options)
    assert seen[0] == 32  # the chunk done before the kill is counted, not recomputed
    assert (out / EMBEDDINGS_FILE).read_bytes() == (embedded / EMBEDDINGS_FILE).read_bytes()
    emb = open_embeddings(out)
    assert emb.vectors.shape == tuple(meta["shape"]) and emb.vectors.dtype == np.float16
    assert meta["backbone"]["backbone_sha256"] == meta["init"]["sha256"]
    assert meta["preprocessing"]["cache_image_size"] == [50, 50]


def test_another_backbone_into_the_same_folder_is_refused(prepared_idc, backbone_file, tmp_path):
    out = tmp_path / "emb"
    embed_prepared(
        prepared_idc,
        out,
        backbone="cancernet",
        weights=str(backbone_file),
        chunk_size=32,
        stop_after=1,
    )
    with pytest.raises(CacheError, match="another backbone"):
        embed_prepared(prepared_idc, out, backbone="cancernet", chunk_size=32)


@pytest.fixture(scope="module")
def linear_probe(embedded, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "linear"
    options = ProbeOptions(head="linear", max_steps=300, patience_steps=100)
    result = probe(embedded, out, options=options, folds=3, n_boot=50)
    return out, result


def test_probe_reports_patient_level_cv_with_intervals(linear_probe, embedded):
    out, result = linear_probe
    pooled = result["pooled"]
    assert pooled["image"]["n"] == len(open_embeddings(embedded).labels)
    low, high = pooled["image"]["ci95"]["roc_auc"]
    assert low <= pooled["image"]["roc_auc"] <= high
    assert {f["fold"] for f in result["per_fold"]} == {0, 1, 2}
    assert (out / "probe_cv.md").read_text().count("|") > 10


def test_the_probe_checkpoint_rebuilds_backbone_and_head(linear_probe, embedded, prepared_idc):
    from breastpath.checkpoint import build_model, load_checkpoint
    from breastpath.data.cache import open_prepared
    from breastpath.experiments.probe import head_probs
    from breastpath.inference.batches import predict_rows

    out, _ = linear_probe
    checkpoint = load_checkpoint(out / "probe.json")
    assert checkpoint.meta.model.name == "probe"
    assert set(checkpoint.tensors) == {"model.head.weight", "model.head.bias"}
    model = build_model(checkpoint)
    data = open_prepared(prepared_idc)
    rows = np.arange(20)
    probs = predict_rows(
        model,
        data.images,
        rows,
        mean=torch.tensor(checkpoint.meta.mean),
        std=torch.tensor(checkpoint.meta.std),
    )
    emb = open_embeddings(embedded)
    expected = head_probs(model.head, np.asarray(emb.vectors[:20], dtype=np.float32))
    np.testing.assert_allclose(probs, expected, atol=2e-3)  # the cache stores float16


def test_a_changed_backbone_file_is_refused_when_the_probe_loads(
    prepared_idc, backbone_file, tmp_path
):
    from breastpath.checkpoint import build_model, load_checkpoint
    from breastpath.models import create_model

    weights = tmp_path / "backbone.pth"
    weights.write_bytes(backbone_file.read_bytes())
    emb = tmp_path / "emb"
    embed_prepared(prepared_idc, emb, backbone="cancernet", weights=str(weights))
    probe(emb, tmp_path / "p", options=ProbeOptions(head="logreg"), folds=2, n_boot=10)
    build_model(load_checkpoint(tmp_path / "p" / "probe.json"))  # loads while unchanged
    torch.manual_seed(1)
    torch.save(create_model("cancernet", num_classes=2).state_dict(), weights)
    with pytest.raises(CheckpointError, match="sha256"):
        build_model(load_checkpoint(tmp_path / "p" / "probe.json"))


@pytest.mark.parametrize("head", ["logreg", "knn", "svm"])
def test_every_head_gives_a_checkpoint_the_predictor_uses(embedded, prepared_idc, tmp_path, head):
    from breastpath.data.cache import open_prepared
    from breastpath.experiments.probe import head_probs
    from breastpath.inference.predictor import Predictor

    options = ProbeOptions(head=head, svm_c=(1.0,))
    probe(embedded, tmp_path / head, options=options, folds=2, n_boot=10)
    predictor = Predictor.from_checkpoint(tmp_path / head / "probe.json", device="cpu")
    images = np.asarray(open_prepared(prepared_idc).images[:8])
    probs = predictor.predict_proba(images)
    expected = head_probs(
        predictor.model.head, np.asarray(open_embeddings(embedded).vectors[:8], dtype=np.float32)
    )
    np.testing.assert_allclose(probs, expected, atol=5e-3)
    predictions = predictor.to_predictions(probs)
    assert all(p.label in ("non-IDC", "IDC") for p in predictions)


def test_embed_and_probe_commands(prepared_idc, backbone_file, tmp_path):
    from breastpath.cli.main import main

    emb = tmp_path / "emb"
    argv = [
        "embed",
        str(prepared_idc),
        "--backbone",
        "cancernet",
        "--weights",
        str(backbone_file),
        "--out",
        str(emb),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    assert main(["probe", str(emb), "--head", "logreg", "--folds", "2", "--bootstrap", "10"]) == 0
    assert (emb / "probe-logreg" / "probe.json").is_file()
    assert main(["embed", str(prepared_idc), "--backbone", "nope", "--out", str(emb)]) == 2


def test_two_torchrun_processes_write_what_one_process_writes(
    prepared_idc, backbone_file, embedded, tmp_path
):
    from conftest import torchrun

    out = tmp_path / "two"
    torchrun(
        "embed",
        str(prepared_idc),
        "--backbone",
        "cancernet",
        "--weights",
        str(backbone_file),
        "--out",
        str(out),
        "--chunk-size",
        "32",
        "--device",
        "cpu",
    )
    assert sorted(p.name for p in out.glob("progress-*.json")) == [
        "progress-0.json",
        "progress-1.json",
    ]
    assert (out / EMBEDDINGS_FILE).read_bytes() == (embedded / EMBEDDINGS_FILE).read_bytes()
    assert open_embeddings(out).meta["shape"] == open_embeddings(embedded).meta["shape"]


def test_a_probe_refuses_grad_cam_in_one_line(linear_probe):
    from breastpath.errors import ExplanationUnavailableError
    from breastpath.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(linear_probe[0] / "probe.json", device="cpu")
    with pytest.raises(ExplanationUnavailableError, match="frozen backbone"):
        predictor.grad_cam(np.zeros((1, 50, 50, 3), np.uint8), target_class=1)


def test_serve_scores_with_a_probe_checkpoint(linear_probe, prepared_idc):
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from breastpath.data.cache import open_prepared
    from breastpath.inference.predictor import Predictor
    from breastpath.serve.app import create_app

    predictor = Predictor.from_checkpoint(linear_probe[0] / "probe.json", device="cpu")
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(open_prepared(prepared_idc).images[0])).save(buffer, format="PNG")
    with TestClient(create_app(predictor)) as client:
        answer = client.post("/api/predict", files={"file": ("p.png", buffer.getvalue())})
    assert answer.status_code == 200, answer.text
    expected = predictor.predict_proba(np.asarray(open_prepared(prepared_idc).images[:1]))
    assert abs(answer.json()["probability"] - expected[0, 1]) < 1e-4

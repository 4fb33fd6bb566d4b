"""Pathology foundation models as frozen backbones, built from local weights only.

One :class:`FoundationRecord` per model, under the identifiers of the eva benchmark
(``mahmood_uni``, ``paige_virchow2``, ...). A record states the timm architecture and its
arguments, the input size and normalization, the embedding rule and its dimension, the key layout
of the published weights file, the licence and gating, and whether all of that was checked
against the public model card / config (``verified``; ``unverified`` says what was not).

``create_model(name, num_classes=0, weights=PATH)`` builds the architecture with
``pretrained=False`` (timm never downloads here) and loads ``PATH``: timm keys by name, or
Hugging Face ``transformers`` ViT / DINOv2 keys converted to timm's
(:func:`breastpath.models.pretrained.convert_hf_vit`). Nothing is fetched: the user downloads the
(often gated) weights themselves and accepts their licence.

The model resizes whatever it is given to the record's input size inside ``forward`` (as the
timm zoo models do), so a checkpoint keeps the cache's image size. ``num_classes=0`` returns the
embedding; ``num_classes > 0`` adds one linear layer on it (``head``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from breastpath.data.transforms import resize_batch
from breastpath.errors import UnknownModelError
from breastpath.models.registry import ModelData, ModelRecord, resolve_data_config

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

EmbeddingRule = Literal["cls", "cls+mean"]
KeyLayout = Literal["timm", "hf_vit", "hf_dinov2"]


@dataclass(frozen=True)
class FoundationRecord:
    """What is known about one foundation model (see the module docstring)."""

    name: str
    arch: str
    #: timm ``create_model`` keyword arguments; ``mlp_layer``/``act_layer`` are named as text
    arch_args: Mapping[str, Any]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding: EmbeddingRule
    #: width of the transformer (the CLS token); the embedding is twice this for ``cls+mean``
    width: int
    key_layout: KeyLayout
    weights_file: str
    source: str
    licence: str
    gated: bool | None
    verified: bool
    unverified: str = ""
    #: published parameter count of the encoder, for the architecture check
    params: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def embed_dim(self) -> int:
        """Length of the embedding vector."""
        return self.width * (2 if self.embedding == "cls+mean" else 1)


_SWIGLU = {"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"}

#: The foundation models, by eva identifier.
FOUNDATION_RECORDS: dict[str, FoundationRecord] = {
    r.name: r
    for r in (
        FoundationRecord(
            name="mahmood_uni",
            arch="vit_large_patch16_224",
            arch_args={"init_values": 1e-5, "dynamic_img_size": True},
            input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, embedding="cls", width=1024,
            key_layout="timm", weights_file="pytorch_model.bin (also published as uni.bin)",
            source="huggingface.co/MahmoodLab/UNI",
            licence="CC-BY-NC-ND-4.0, academic research only", gated=True, verified=False,
            unverified=("mean/std (ImageNet, from the card's timm data config) and the licence "
                        "text were not re-read; architecture and arguments match eva and the card"),
            params=303e6,
        ),
        FoundationRecord(
            name="mahmood_uni2_h",
            arch="vit_giant_patch14_224",
            arch_args={"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24,
                       "init_values": 1e-5, "embed_dim": 1536, "mlp_ratio": 2.66667 * 2,
                       "no_embed_class": True, "reg_tokens": 8, "dynamic_img_size": True,
                       **_SWIGLU},
            input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, embedding="cls", width=1536,
            key_layout="timm", weights_file="pytorch_model.bin",
            source="huggingface.co/MahmoodLab/UNI2-h",
            licence="CC-BY-NC-ND-4.0, academic research only", gated=True, verified=False,
            unverified=("mean/std (ImageNet) and the licence text were not re-read; the "
                        "architecture arguments are eva's and the card's"),
            params=681e6,
        ),
        FoundationRecord(
            name="paige_virchow2",
            arch="vit_huge_patch14_224",
            arch_args={"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375,
                       "reg_tokens": 4, "global_pool": "", "dynamic_img_size": True, **_SWIGLU},
            input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, embedding="cls+mean",
            width=1280, key_layout="timm", weights_file="pytorch_model.bin",
            source="huggingface.co/paige-ai/Virchow2",
            licence="CC-BY-NC-ND-4.0, non-commercial", gated=True, verified=True,
            unverified="licence text not re-read (architecture, mean/std, rule: the config's)",
            params=632e6,
            notes=("embedding = CLS token + mean of the patch tokens (the 4 register tokens "
                   "excluded), as the model card recommends; eva's default is the CLS token",),
        ),
        FoundationRecord(
            name="bioptimus_h_optimus_0",
            arch="vit_giant_patch14_reg4_dinov2",
            arch_args={"img_size": 224, "init_values": 1e-5, "global_pool": "token",
                       "dynamic_img_size": True},
            input_size=224, mean=(0.707223, 0.578729, 0.703617),
            std=(0.211883, 0.230117, 0.177517), embedding="cls", width=1536,
            key_layout="timm", weights_file="pytorch_model.bin",
            source="huggingface.co/bioptimus/H-optimus-0",
            licence="Apache-2.0", gated=None, verified=False,
            unverified="whether the Hugging Face repository is gated (access terms)",
            params=1.13e9,
        ),
        FoundationRecord(
            name="prov_gigapath",
            arch="vit_giant_patch14_dinov2",
            arch_args={"img_size": 224, "in_chans": 3, "patch_size": 16, "embed_dim": 1536,
                       "depth": 40, "num_heads": 24, "init_values": 1e-5,
                       "mlp_ratio": 5.33334, "dynamic_img_size": True},
            input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, embedding="cls", width=1536,
            key_layout="timm", weights_file="pytorch_model.bin",
            source="huggingface.co/prov-gigapath/prov-gigapath",
            licence="Apache-2.0 (code); weights under the model's terms, research use",
            gated=True, verified=False, params=1.13e9,
            unverified="mean/std (ImageNet, from the card's transform) not re-read",
            notes=("patch size 16 overrides the architecture name's 14 (as in the published "
                   "config.json)",),
        ),
        FoundationRecord(
            name="owkin_phikon",
            arch="vit_base_patch16_224",
            arch_args={"dynamic_img_size": True, "qkv_bias": True},
            input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, embedding="cls", width=768,
            key_layout="hf_vit", weights_file="model.safetensors / pytorch_model.bin (ViTModel)",
            source="huggingface.co/owkin/phikon",
            licence="Owkin non-commercial licence", gated=False, verified=False,
            unverified=("the transformers config (ViT-B/16 dimensions assumed; its LayerNorm eps "
                        "1e-12 against timm's 1e-6, not compared with transformers' output) and "
                        "the licence name"),
            params=86e6,
            notes=("embedding = CLS token of the last hidden state (after the final "
                   "LayerNorm), the pooler is not used, as in eva",),
        ),
        FoundationRecord(
            name="owkin_phikon_v2",
            arch="vit_large_patch16_224",
            arch_args={"init_values": 1e-5, "dynamic_img_size": True},
            input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, embedding="cls", width=1024,
            key_layout="hf_dinov2", weights_file="model.safetensors (Dinov2Model)",
            source="huggingface.co/owkin/phikon-v2",
            licence="Owkin non-commercial licence", gated=False, verified=False,
            unverified=("the exact transformers config (image_size of the stored position "
                        "embeddings: resampled to 14x14 when it differs; layerscale init) was not "
                        "read; ViT-L/16 without registers and ImageNet normalization are "
                        "confirmed"),
            params=303e6,
        ),
        FoundationRecord(
            name="kaiko_vits16",
            arch="vit_small_patch16_224",
            arch_args={"dynamic_img_size": True},
            input_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), embedding="cls",
            width=384, key_layout="timm", weights_file="vits16.pth (GitHub release 0.0.1)",
            source="github.com/kaiko-ai/towards_large_pathology_fms",
            licence="see the repository's licence", gated=False, verified=False,
            unverified="normalization (0.5, 0.5, 0.5) and the weights licence were not read",
            params=21.7e6,
        ),
        FoundationRecord(
            name="kaiko_vitb16",
            arch="vit_base_patch16_224",
            arch_args={"dynamic_img_size": True},
            input_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), embedding="cls",
            width=768, key_layout="timm", weights_file="vitb16.pth (GitHub release 0.0.1)",
            source="github.com/kaiko-ai/towards_large_pathology_fms",
            licence="see the repository's licence", gated=False, verified=False,
            unverified="normalization (0.5, 0.5, 0.5) and the weights licence were not read",
            params=85.8e6,
        ),
        FoundationRecord(
            name="lunit_vits16",
            arch="vit_small_patch16_224",
            arch_args={"dynamic_img_size": True},
            input_size=224, mean=(0.70322989, 0.53606487, 0.66096631),
            std=(0.21716536, 0.26081574, 0.20723464), embedding="cls", width=384,
            key_layout="timm", weights_file="dino_vit_small_patch16_ep200.torch",
            source="github.com/lunit-io/benchmark-ssl-pathology (release pretrained-weights)",
            licence="see the repository's licence (non-commercial terms not checked)",
            gated=False, verified=False,
            unverified=("key layout of the .torch file (timm names assumed; a 'backbone.'/"
                        "'module.' prefix is stripped) and the licence"),
            params=21.7e6,
        ),
    )
}  # fmt: skip


def get_record(name: str) -> FoundationRecord:
    """The record of ``name``; :class:`UnknownModelError` lists the known ones.

    Examples
    --------
    >>> get_record("paige_virchow2").embed_dim
    2560
    """
    if name not in FOUNDATION_RECORDS:
        raise UnknownModelError(
            f"unknown foundation model {name!r}; choose one of "
            f"{', '.join(sorted(FOUNDATION_RECORDS))}"
        )
    return FOUNDATION_RECORDS[name]


def timm_arguments(record: FoundationRecord) -> dict[str, Any]:
    """``record.arch_args`` with the layer names resolved to classes (for ``timm.create_model``)."""
    import timm.layers

    args = dict(record.arch_args)
    if args.get("mlp_layer") == "SwiGLUPacked":
        args["mlp_layer"] = timm.layers.SwiGLUPacked
    if args.get("act_layer") == "SiLU":
        args["act_layer"] = nn.SiLU
    return args


class FoundationBackbone(nn.Module):
    """A foundation model's encoder (timm ``backbone``) and an optional linear ``head``.

    Parameters
    ----------
    record
        A name of :data:`FOUNDATION_RECORDS`.
    num_classes
        ``0``: ``forward`` returns the embedding; else logits of a linear layer on it.

    Examples
    --------
    >>> import torch
    >>> net = FoundationBackbone("kaiko_vits16", num_classes=0).eval()
    >>> net(torch.zeros(1, 3, 50, 50)).shape
    torch.Size([1, 384])
    """

    def __init__(self, record: str, *, num_classes: int = 0) -> None:
        import timm

        super().__init__()
        self.record = get_record(record)
        self.backbone = timm.create_model(
            self.record.arch, pretrained=False, num_classes=0, **timm_arguments(self.record)
        )
        side = self.record.input_size
        self.input_size = (side, side)
        self.num_classes = num_classes
        self.embed_dim = self.record.embed_dim
        self.head: nn.Module = (
            nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        )
        self.data_config: dict[str, Any] = {
            "input_size": [3, side, side],
            "mean": list(self.record.mean),
            "std": list(self.record.std),
            "interpolation": "bilinear",
            "source": f"foundation record {self.record.name}",
        }
        self.head_prefixes: tuple[str, ...] = ("head",)
        self.init_info: dict[str, Any] = {"source": "scratch"}

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """Bring an NCHW batch to the record's input size (no-op when it already is)."""
        return resize_batch(x, self.input_size)

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The record's embedding: the CLS token, or CLS + mean of the patch tokens."""
        backbone: Any = self.backbone
        tokens = backbone.forward_features(self.resize(x))
        cls = tokens[:, 0]
        if self.record.embedding == "cls":
            return cls
        patches = tokens[:, int(backbone.num_prefix_tokens) :]
        return torch.cat([cls, patches.mean(dim=1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_embedding(x))


def _builder(name: str) -> Callable[..., nn.Module]:
    def build(*, num_classes: int) -> nn.Module:
        return FoundationBackbone(name, num_classes=num_classes)

    build.__doc__ = f"Build {name} (random weights; load yours with weights=PATH)."
    return build


def _record(record: FoundationRecord) -> ModelRecord:
    return ModelRecord(
        name=record.name,
        builder=_builder(record.name),
        preset={"optimizer": "adamw", "lr": 1e-4},
        head_prefixes=("head",),
        body="backbone",
        data=ModelData(
            side=record.input_size, mean=record.mean, std=record.std,
            source=f"foundation record {record.name}",
        ),
        description=f"{record.arch} from {record.source} ({record.licence}); local weights only",
    )  # fmt: skip


def _probe_data(args: Mapping[str, Any]) -> ModelData | None:
    backbone = args.get("backbone")
    if not isinstance(backbone, str):
        return None
    return resolve_data_config(backbone, args.get("backbone_args") or {})


def _probe_record() -> ModelRecord:
    from breastpath.models.probe import ProbeModel

    return ModelRecord(
        name="probe",
        builder=ProbeModel,
        transfer=False,
        head_prefixes=("head",),
        resolve_data=_probe_data,
        description="a frozen backbone (weights verified by sha256) + a probe head, built by "
        "`breastpath probe`",
    )


#: Registry records (read by :mod:`breastpath.models.registry` on first use).
RECORDS: tuple[ModelRecord, ...] = (
    *(_record(r) for r in FOUNDATION_RECORDS.values()),
    _probe_record(),
)

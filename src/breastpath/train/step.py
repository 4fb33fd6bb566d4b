"""One training step's parts: the model with its optimizer, loss and augmentation, built the
same way on every DDP rank (:class:`Step`), and the batch loader (:func:`make_loader`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from breastpath.checkpoint import CheckpointMeta
from breastpath.config import TrainConfig
from breastpath.data.augment import (
    add_background,
    augment_batch,
    negative_class_of,
    to_model_input,
)
from breastpath.data.cache import PreparedData
from breastpath.data.loader import BatchLoader
from breastpath.errors import ConfigError
from breastpath.inference.device import DistInfo
from breastpath.train import distributed, finetune
from breastpath.train.distill import Teacher, distill_loss_sum
from breastpath.train.ema import make_ema
from breastpath.train.optim import class_weights, make_optimizer
from breastpath.train.run import apply_runtime, checkpoint_meta, create_initial_model, normalization


@dataclass
class Step:
    """The model, its optimizer and loss, and what one training step needs."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    weight: torch.Tensor | None
    mean: torch.Tensor
    std: torch.Tensor
    generator: torch.Generator
    meta: CheckpointMeta
    info: DistInfo
    device: torch.device
    net: nn.Module | None = None  # the model as trained: under DDP, compiled
    use_amp: bool = False
    amp_dtype: torch.dtype = torch.float16
    scaler: Any = None
    negative_class: int = 0  # what background frames are labelled (augment.background_frac)
    teacher: Teacher | None = None  # config.distill.teachers, loaded
    distill_weight: float = 0.0
    distill_temperature: float = 1.0
    ema: AveragedModel | None = None  # optim.ema_half_life: the averaged weights

    @property
    def kept(self) -> nn.Module:
        """The weights that are validated and saved: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def start_average(self, config: TrainConfig, *, steps_per_epoch: int) -> None:
        """Keep the moving average of ``optim.ema_half_life`` (nothing when it is 0)."""
        self.ema = make_ema(
            self.model,
            half_life_epochs=config.optim.ema_half_life,
            steps_per_epoch=max(steps_per_epoch, 1),
        )

    def update_average(self) -> None:
        """Move the average towards the weights after an optimizer step."""
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    @classmethod
    def create(
        cls,
        config: TrainConfig,
        data: PreparedData,
        train_rows: np.ndarray,
        *,
        info: DistInfo,
        device: torch.device,
    ) -> Step:
        batch = config.optim.batch_size
        if batch % info.world_size or len(train_rows) < info.world_size:
            raise ConfigError(
                f"batch_size {batch} is the global batch: it must be a multiple of the "
                f"{info.world_size} processes, and the training split must have as many rows"
            )
        apply_runtime(config.runtime)
        torch.manual_seed(config.seed + info.rank)
        num_classes = len(data.class_names)
        model, init = create_initial_model(config, num_classes=num_classes)
        model = model.to(device).to(memory_format=torch.channels_last)
        if info.enabled:  # batch norm over the global batch, as in one process
            model = distributed.sync_batchnorm(model, device=device)
        optimizer = make_optimizer(finetune.param_groups(model, config), config.optim)
        mean, std = normalization(config.model.name, config.model.args, data)
        weights = class_weights(data.labels[train_rows], num_classes)
        weight = weights.to(device) if config.optim.class_weights else None
        # summed, then divided by the global batch's weight sum: the global (weighted) mean
        criterion = nn.CrossEntropyLoss(
            weight=weight, label_smoothing=config.optim.label_smoothing, reduction="sum"
        )
        meta = checkpoint_meta(config, data, dict(config.model.args), init=init)
        negative = 0  # background frames are labelled with the one non-cancer class
        if config.augment.background_frac > 0:
            negative = negative_class_of(data.class_names, list(meta.cancer_classes))
        teacher = None
        if config.distill.teachers:
            teacher = Teacher.load(
                config.distill.teachers,
                class_names=data.class_names,
                image_size=data.image_size,
                stain=data.meta.get("stain"),
                device=device,
            )
        return cls(
            model=model,
            optimizer=optimizer,
            criterion=criterion,
            weight=weight,
            mean=torch.tensor(mean, dtype=torch.float32, device=device),
            std=torch.tensor(std, dtype=torch.float32, device=device),
            # the same on every rank: augmentation is drawn for the whole global batch
            generator=torch.Generator().manual_seed(config.seed),
            meta=meta,
            info=info,
            device=device,
            negative_class=negative,
            teacher=teacher,
            distill_weight=config.distill.weight if teacher is not None else 0.0,
            distill_temperature=config.distill.temperature,
        )

    def wrap(self, config: TrainConfig) -> None:
        net: nn.Module = self.model
        if self.info.enabled:
            cuda = self.device.type == "cuda"
            net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if cuda else None
            )
        self.net = torch.compile(net) if config.runtime.compile else net  # type: ignore[assignment]
        self.use_amp = config.runtime.amp and self.device.type == "cuda"
        bf16 = self.use_amp and torch.cuda.is_bf16_supported()
        self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        fp16 = self.use_amp and self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    def loss_share(
        self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, denominator: torch.Tensor
    ) -> torch.Tensor:
        """This rank's share of the global batch's mean loss: the (class-weighted)
        cross-entropy, blended with the teacher's distillation loss when there is a teacher.
        ``denominator`` is ``[global weight sum, global rows]``."""
        share = self.criterion(logits, y) / denominator[0]
        if self.teacher is None:
            return share
        temperature = self.distill_temperature
        soft = self.teacher.probabilities(x, mean=self.mean, std=self.std, temperature=temperature)
        kd = distill_loss_sum(logits, soft, temperature=temperature) / denominator[1]
        return (1.0 - self.distill_weight) * share + self.distill_weight * kd

    def inputs(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        shard: tuple[int, int, int],
        config: TrainConfig,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's model input and targets; augmentation is drawn for the global batch on
        every rank and each keeps its slice, so that N processes see what one would."""
        if not config.augment.enabled:
            x = to_model_input(images, mean=self.mean, std=self.std, device=self.device)
            return x, targets
        augment = config.augment
        batch, targets = add_background(
            distributed.pad_to_global(images, shard),
            targets,
            rows=slice(shard[0], shard[1]),
            fraction=augment.background_frac,
            negative_class=self.negative_class,
            generator=self.generator,
        )
        x = augment_batch(
            batch,
            mean=self.mean,
            std=self.std,
            device=self.device,
            generator=self.generator,
            jitter=augment.color_jitter,
            stain=augment.stain_augment,
            stain_sigma=augment.stain_sigma,
            grayscale=augment.grayscale_frac,
        )[shard[0] : shard[1]]
        return x, targets


def make_loader(
    data: PreparedData, rows: np.ndarray, config: TrainConfig, *, info: DistInfo
) -> BatchLoader:
    batch = config.optim.batch_size
    return BatchLoader(
        data.images,
        data.labels,
        rows,
        batch_size=batch,
        shuffle=True,
        seed=config.seed,
        drop_last=len(rows) > batch,
        max_batches=config.stop.max_steps_per_epoch,
        rank=info.rank,
        world_size=info.world_size,
    )

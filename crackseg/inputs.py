"""Training and validation input for ``model.fit``: ``crackseg.data``'s augmentation in ``keras.utils.PyDataset``
objects, the same for every Keras backend. Under TensorFlow, tf.data's prefetch overlaps it with the training step;
a batch of four 256^2 crops costs ~28 ms against a CPU step of ~5 s.
"""
from __future__ import annotations

from typing import Callable

import keras
import numpy as np

from .data import (Augmentation, DataError, augment_sample, center_sample, check_extra, epoch_plan, mosaic, one_hot,
                   piece_size, sampling_shares, steps_per_epoch)
from .preprocess import pad_to_multiple, prepare

Targets = Callable[..., tuple]  # (image batch, one-hot batch[, extra batch]) -> what Keras' fit gets


class TrainBatches(keras.utils.PyDataset):
    """Shuffled, augmented training batches: ``(image [-1,1] (B,crop,crop,3), one-hot (B,crop,crop,2))``, or with
    ``extra`` per-image float arrays (H, W, C) (teacher soft labels) ``(image, one-hot, extra (B,crop,crop,C))``,
    passed through ``targets`` when given (e.g. to make a dict of per-head targets).

    Without ``sampling``, one epoch (``len``) = every image once, in the order of ``order(epoch)``. With
    ``sampling`` (``size`` | ``sqrt`` | ``equal`` | ``NAME=WEIGHT,...``) and the per-image ``datasets`` names, an
    epoch is ``samples_per_epoch`` tiles (0: as many as there are images), each drawn from a dataset by its share
    (``crackseg.data.sampling_shares``); a dataset of images much smaller than ``crop`` fills its tiles with four
    half-size crops (``crackseg.data.piece_size`` / ``mosaic``) instead of padding.

    Randomness comes from (seed, epoch, tile position) only, so runs are reproducible whatever the number of worker
    threads. ``epoch`` is set by the training loop (``crackseg.training.fit``) as each epoch begins; Keras' own
    ``on_epoch_end`` calls are not counted, because it also makes them when it resets its iterator.
    """

    def __init__(self, images: list, masks: list, crop: int = 256, batch_size: int = 4, seed: int = 0,
                 augment: bool = True, jitter: bool = True, extra: list | None = None,
                 targets: Targets | None = None, workers: int = 1, datasets: list[str] | None = None,
                 sampling: str | None = None, samples_per_epoch: int = 0, augmentation: Augmentation | None = None):
        # One worker: Keras then uses no thread pool of its own (under TensorFlow, tf.data's prefetch still overlaps
        # the next batch with the step). Its threaded enqueuer (workers > 1) once hung at the end of fit in the test
        # suite, with every thread asleep.
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=4 * max(workers, 1))
        if not images:
            raise DataError("training split is empty")
        check_extra(images, extra)
        self.images, self.masks, self.extra, self.targets = images, masks, extra, targets
        self.crop, self.batch_size, self.seed, self.augment, self.jitter = crop, batch_size, seed, augment, jitter
        self.augmentation = augmentation
        self.epoch = 0
        self.sampling = sampling or None
        self.tiles = samples_per_epoch if samples_per_epoch > 0 else len(images)
        self._plans: dict[int, list[tuple[int, ...]]] = {}
        if self.sampling:
            self.datasets = list(datasets) if datasets is not None else ["data"] * len(images)
            if len(self.datasets) != len(images):
                raise DataError(f"{len(self.datasets)} dataset names for {len(images)} images")
            self.shares = sampling_shares(self.datasets, self.sampling)
            self.pieces = {name: piece_size([im for im, d in zip(images, self.datasets) if d == name], crop)
                           for name in self.shares}

    def __len__(self) -> int:
        return steps_per_epoch(self.tiles if self.sampling else len(self.images), self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch`` (without ``sampling``)."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.images))

    def plan(self, epoch: int) -> list[tuple[int, ...]]:
        """The sample indices of every tile of ``epoch``: one image, or four for a mosaic tile."""
        if not self.sampling:
            return [(int(i),) for i in self.order(epoch)]
        if epoch not in self._plans:
            per_tile = {name: 1 if size == self.crop else 4 for name, size in self.pieces.items()}
            self._plans = {epoch: epoch_plan(self.datasets, self.shares, per_tile, self.tiles, self.seed, epoch)}
        return self._plans[epoch]

    def _sample(self, i: int, crop: int, rng: np.random.Generator) -> tuple:
        more = self.extra[i] if self.extra is not None else None
        if self.augment:
            return augment_sample(self.images[i], self.masks[i], crop, rng, self.jitter, more, self.augmentation)
        return center_sample(self.images[i], self.masks[i], crop, more)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        chosen = self.plan(self.epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        samples = []
        for slot, tile in enumerate(chosen):
            rng = np.random.default_rng([self.seed, self.epoch, index * self.batch_size + slot])
            if len(tile) == 1:
                samples.append(self._sample(tile[0], self.crop, rng))
            else:
                piece = self.pieces[self.datasets[tile[0]]]
                parts = [self._sample(i, piece, rng) for i in tile]
                samples.append(mosaic(parts))
        batch = tuple(np.stack(column) for column in zip(*samples))
        return self.targets(*batch) if self.targets else batch


class EvalImages(keras.utils.PyDataset):
    """Full-size validation images one at a time (sizes differ between datasets), prepared as for inference:
    ``(image (1,H,W,3), one-hot (1,H,W,2))``, or ``(image, one-hot, extra)`` with per-image (H, W, C) float
    ``extra`` arrays; passed through ``targets`` when given."""

    def __init__(self, images: list, masks: list, extra: list | None = None, targets: Targets | None = None):
        super().__init__(workers=1, use_multiprocessing=False)
        check_extra(images, extra)
        self.images, self.masks, self.extra, self.targets = images, masks, extra, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"image {index} of {len(self)}")
        image, (h, w) = prepare(self.images[index])  # what the deployed model sees, padding included
        pads = ((0, image.shape[1] - h), (0, image.shape[2] - w))
        batch = (image, one_hot(np.pad(self.masks[index], pads))[None])  # padding is background
        if self.extra is not None:
            batch += (pad_to_multiple(self.extra[index].astype(np.float32)[None])[0],)
        return self.targets(*batch) if self.targets else batch


def train_dataset(images: list, masks: list, crop: int = 256, batch_size: int = 4, seed: int = 0,
                  augment: bool = True, jitter: bool = True, extra: list | None = None,
                  targets: Targets | None = None, datasets: list[str] | None = None, sampling: str | None = None,
                  samples_per_epoch: int = 0, augmentation: Augmentation | None = None) -> TrainBatches:
    """Training batches for ``model.fit`` (see ``TrainBatches``)."""
    return TrainBatches(images, masks, crop, batch_size, seed, augment, jitter, extra, targets, datasets=datasets,
                        sampling=sampling, samples_per_epoch=samples_per_epoch, augmentation=augmentation)


def eval_dataset(images: list, masks: list, extra: list | None = None, targets: Targets | None = None):
    """Validation input for ``model.fit`` (see ``EvalImages``). Under TensorFlow it is wrapped in a tf.data set
    whose height and width are unknown: Keras would otherwise fix them from the first two images."""
    images_ds = EvalImages(images, masks, extra, targets)
    if keras.backend.backend() != "tensorflow" or not len(images_ds):
        return images_ds
    import tensorflow as tf

    def spec(x):
        return tf.TensorSpec((1, None, None) + tuple(np.shape(x)[3:]), tf.as_dtype(np.asarray(x).dtype))

    signature = keras.tree.map_structure(spec, images_ds[0])
    ds = tf.data.Dataset.from_generator(lambda: (images_ds[i] for i in range(len(images_ds))),
                                        output_signature=signature)
    # A known length, so Keras ends each validation pass without a "ran out of data" warning.
    return ds.apply(tf.data.experimental.assert_cardinality(len(images_ds))).prefetch(2)

"""Distributed train and evaluation steps: `strategy.run` per replica, losses averaged over the GLOBAL batch.

Why not `model.fit`: with TF 2.21 / Keras 3.15, `fit` under MultiWorkerMirroredStrategy fails before the
first step with `Attempt to convert a value (PerReplica...) to a Tensor` (keras-team/keras#20585,
tensorflow/tensorflow#72388). `fit` first "symbolically builds" the model from one input batch by calling
`strategy.reduce("MEAN", batch)` eagerly on the distributed batch, and MWMS's collective reduce cannot
convert that PerReplica of input tensors. The classic custom step below never reduces inputs: each replica
computes per-sample losses, `tf.nn.compute_average_loss` divides their sum by the GLOBAL batch size, the
optimizer all-reduces (sums) the replicas' gradients, and step results are reduced with `strategy.reduce`
inside a `tf.function`, where every worker takes part. One code path serves every strategy, so one device,
several GPUs and several machines compute the same update (a test checks mirrored == one device).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from spine_keras.metrics import confusion_matrix

SUM = tf.distribute.ReduceOp.SUM


def _as_list(outputs: Any) -> list:
    """Model outputs as a list (main `seg` output first)."""
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


class Steps:
    """Compiled train/eval steps of one model under one strategy."""

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        model: keras.Model,
        loss: Callable[[Any, Any], Any],
        global_batch: int,
        n_classes: int,
        jit: bool = False,
    ):
        self.strategy, self.model, self.loss = strategy, model, loss
        self.global_batch, self.n_classes = global_batch, n_classes
        with strategy.scope():  # create optimizer slots now: a compiled (XLA) step cannot create variables
            model.optimizer.build(model.trainable_variables)
        self.train = tf.function(self._train, autograph=False)
        # autograph off: the step has no tensor-dependent Python control flow, and autograph's conversion of
        # Keras internals fails depending on what an earlier model in the same process traced.
        compiled = tf.function(self._replica_gradients, jit_compile=True, autograph=False)
        self._gradients = compiled if jit else self._replica_gradients
        self.evaluate = tf.function(self._evaluate, autograph=False)

    def _replica_gradients(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, list]:
        """Forward, loss scaled by 1/global batch, backward (XLA-compiled with --jit)."""
        with tf.GradientTape() as tape:
            outputs = _as_list(self.model(images, training=True))
            per_sample = self.loss(labels, outputs)
            loss = tf.nn.compute_average_loss(per_sample, global_batch_size=self.global_batch)
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            scaled = self.model.optimizer.scale_loss(loss)
        return loss, tape.gradient(scaled, self.model.trainable_variables)

    def _replica_train(self, images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """Gradients of this replica, then the update (the optimizer sums the replicas' gradients)."""
        loss, gradients = self._gradients(images, labels)
        self.model.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        return loss

    def _train(self, iterator: Any) -> tf.Tensor:
        """One global step; returns the global mean loss."""
        per_replica = self.strategy.run(self._replica_train, args=next(iterator))
        return self.strategy.reduce(SUM, per_replica, axis=None)

    def _replica_evaluate(
        self, images: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Confusion matrix of the main output, summed loss and sample count of weighted (real) samples."""
        outputs = _as_list(self.model(images, training=False))
        predicted = tf.argmax(outputs[0], axis=-1, output_type=tf.int32)
        matrix = confusion_matrix(labels, predicted, self.n_classes, weights)
        loss_sum = tf.reduce_sum(tf.cast(self.loss(labels, outputs), tf.float32) * weights)
        return matrix, loss_sum, tf.reduce_sum(weights)

    def _evaluate(self, iterator: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One global evaluation step; every value summed over replicas and workers."""
        per_replica = self.strategy.run(self._replica_evaluate, args=next(iterator))
        return tuple(self.strategy.reduce(SUM, value, axis=None) for value in per_replica)

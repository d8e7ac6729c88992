"""The training engine: one loop for every model of the book.

- :mod:`speechssl.engine.config`      :class:`TrainConfig`, the validated settings of a run
- :mod:`speechssl.engine.trainer`     :class:`Trainer`, the loop (exact resume, clipping, mixed precision, DDP)
- :mod:`speechssl.engine.batches`     the training set of a configuration, batch plumbing, the metric file
- :mod:`speechssl.engine.metric_log`  the metric lines of a run
- :mod:`speechssl.engine.distributed` ``torchrun`` process groups

From Python (a notebook), with a recipe (:mod:`speechssl.recipes`)::

    r = recipe("wav2vec2", "tiny")
    trainer = Trainer(r.build(), r.train, make_train_dataset(r.train, utterances, root))
    history = trainer.fit()
"""

from .batches import METRICS_NAME, drop_short_utterances, make_train_dataset, read_metrics
from .config import OPTIMIZERS, PRECISIONS, TrainConfig
from .distributed import DistInfo, init_distributed, main_process_first
from .trainer import NonFiniteError, Trainer, seed_everything

__all__ = ["DistInfo", "METRICS_NAME", "NonFiniteError", "OPTIMIZERS", "PRECISIONS", "TrainConfig", "Trainer",
           "drop_short_utterances", "init_distributed", "main_process_first", "make_train_dataset", "read_metrics",
           "seed_everything"]

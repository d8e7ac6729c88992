"""The models of the book, each built from the shared parts in :mod:`speechssl.nn`.

Every model is an ``nn.Module`` with ``compute_loss(batch, num_updates) -> (loss, metrics)``, the
contract of the training engine (:mod:`speechssl.engine`), and a ``min_input_samples`` below which an
utterance is too short for its loss. How each is trained at each scale is its recipe
(:mod:`speechssl.recipes`).

- :class:`Wav2Vec`: Schneider et al. 2019
- :class:`VQWav2Vec` (Gumbel or k-means) and :class:`UnitBert`: Baevski, Schneider & Auli 2020
- :class:`Wav2Vec2` and :class:`Wav2Vec2CTC`: Baevski, Zhou, Mohamed & Auli 2020
- :class:`Hubert`: Hsu, Bolte, Tsai, Lakhotia, Salakhutdinov & Mohamed 2021 (the same masked encoder,
  :class:`~speechssl.models.encoder.MaskedEncoder`, with another target)
- :class:`Wav2VecU`: Baevski, Hsu, Conneau & Auli 2021 (a generator and a discriminator, trained by
  :mod:`speechssl.gan` rather than the engine, since the two alternate)
"""

from .ctc import CTCConfig, Wav2Vec2CTC
from .hubert import Hubert, HubertConfig
from .unit_bert import UnitBert, UnitBertConfig
from .vq_wav2vec import VQWav2Vec, VQWav2VecConfig
from .wav2vec import Wav2Vec, Wav2VecConfig
from .wav2vec2 import Wav2Vec2, Wav2Vec2Config
from .wav2vec_u import GanConfig, Wav2VecU

__all__ = ["CTCConfig", "GanConfig", "Hubert", "HubertConfig", "UnitBert", "UnitBertConfig", "VQWav2Vec", "VQWav2VecConfig", "Wav2Vec",
           "Wav2Vec2", "Wav2Vec2CTC", "Wav2Vec2Config", "Wav2VecConfig", "Wav2VecU"]

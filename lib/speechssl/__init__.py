"""speechssl: self-supervised speech learning built from scratch.

The package backs the chapters of the speechssl book. Sub-modules:

- :mod:`speechssl.data`     corpus synthesis, manifests, LibriSpeech reader, datasets and collate
- :mod:`speechssl.features` MFCC (+deltas) and log-mel features
- :mod:`speechssl.metrics`  phone/cluster purity, PNMI, codebook perplexity, phone error rate
- :mod:`speechssl.cluster`  mini-batch k-means with k-means++ initialisation
"""

__version__ = "0.1.0"

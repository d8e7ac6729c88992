"""Data: the synthetic phone-aligned corpus, LibriSpeech, manifests and batching."""

"""Exceptions with messages that name the file, what was expected and what was found."""

from __future__ import annotations


class SpeechSSLError(Exception):
    """Base class of every error this package raises on purpose."""


class AudioError(SpeechSSLError, ValueError):
    """Audio that cannot be used: wrong rate, stereo, empty, too short, NaN, corrupt."""


class CorpusNotFoundError(SpeechSSLError, FileNotFoundError):
    """A corpus folder, manifest or split that is not where it was expected."""


class ConfigError(SpeechSSLError, ValueError):
    """An invalid configuration value."""


class SynthesisError(SpeechSSLError, RuntimeError):
    """eSpeak NG is missing, or refused a voice or a text."""


def config_error(owner: str, field: str, expected: str, found: object) -> ConfigError:
    """A :class:`ConfigError` that names the field, what was expected and what was found."""
    return ConfigError(f"{owner}.{field}: expected {expected}, found {found!r}")

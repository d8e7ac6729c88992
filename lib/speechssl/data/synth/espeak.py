"""eSpeak NG through :mod:`ctypes`: loading ``libespeak-ng`` and its data, synthesis with
PHONEME events, and phonemisation without audio (step 1 of the pipeline described in
:mod:`speechssl.data.synth`)."""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, SynthesisError

#: Environment variables that override the library and data locations of ``espeakng-loader``.
LIBRARY_ENV = "SPEECHSSL_ESPEAK_LIBRARY"
DATA_ENV = "SPEECHSSL_ESPEAK_DATA"

ESPEAK_SAMPLE_RATE = 22_050

#: English voices of eSpeak NG 1.52 that ``espeak_SetVoiceByName`` accepts, one per accent:
#: General American, British (default), Received Pronunciation, Caribbean, Scottish, New York
#: City, Lancaster and West Midlands. (``en-gb`` is a language code, not a voice name.)
ENGLISH_VOICES: tuple[str, ...] = (
    "en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us-nyc", "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
)

# eSpeak NG C API constants (speak_lib.h, API revision 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_RATE_MIN, _RATE_MAX = 80, 450
_PITCH_MIN, _PITCH_MAX = 0, 100
_PHONEME_SEPARATOR = "+"   # not used in any phoneme mnemonic


class EmptyTextError(SynthesisError, ValueError):
    """The text to synthesise is empty or only whitespace."""


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),         # WORD and SENTENCE events
        ("name", ctypes.c_char_p),        # MARK and PLAY events
        ("string", ctypes.c_char * 8),    # PHONEME events: the name, NUL-terminated if < 8
    ]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of speak_lib.h (eSpeak NG 1.52)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),   # milliseconds
        ("sample", ctypes.c_int),           # samples since the start of this synthesis
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.POINTER(_Event))


def _default_paths() -> tuple[str, str, str]:
    """(library path, data path, where they came from), honouring the environment overrides."""
    lib = os.environ.get(LIBRARY_ENV)
    data = os.environ.get(DATA_ENV)
    source = []
    if lib:
        source.append(f"${LIBRARY_ENV}")
    if data:
        source.append(f"${DATA_ENV}")
    if not lib or not data:
        try:
            import espeakng_loader
        except ImportError as e:
            raise SynthesisError(
                "eSpeak NG is not available: the Python package `espeakng-loader` (which ships "
                f"libespeak-ng and its data) is not installed. Install it with `pip install "
                f"espeakng-loader`, or set ${LIBRARY_ENV} and ${DATA_ENV} to a libespeak-ng "
                "shared library and its espeak-ng-data folder."
            ) from e
        lib = lib or espeakng_loader.get_library_path()
        if not data:
            try:
                data = espeakng_loader.get_data_path()
            except RuntimeError as e:
                raise SynthesisError(f"espeakng-loader has no eSpeak NG data: {e}; reinstall it "
                                     "with `pip install --force-reinstall espeakng-loader`") from e
        source.append("espeakng-loader")
    return str(lib), str(data), " and ".join(source)


@dataclass(frozen=True)
class RawSynthesis:
    """eSpeak NG output before resampling: int16 audio at 22,050 Hz and its PHONEME events
    as ``(sample, mnemonic)`` pairs (stress marks included)."""

    audio: np.ndarray
    events: list[tuple[int, str]]
    sample_rate: int = ESPEAK_SAMPLE_RATE


class EspeakNG:
    """A loaded and initialised ``libespeak-ng``.

    One instance per process is enough and is what :func:`get_espeak` returns; the library
    has global state, so creating a second instance in the same process re-initialises the
    same library. Calls are serialised with a lock (the library is not thread-safe).

    Args:
        library_path: the shared library; default ``$SPEECHSSL_ESPEAK_LIBRARY`` or the one
            shipped by ``espeakng-loader``.
        data_path: the ``espeak-ng-data`` folder; default ``$SPEECHSSL_ESPEAK_DATA`` or the
            one shipped by ``espeakng-loader``.

    Raises:
        SynthesisError: when the library or its data cannot be found or loaded; the message
            names the path that was tried and how to install eSpeak NG.
    """

    def __init__(self, library_path: str | os.PathLike | None = None,
                 data_path: str | os.PathLike | None = None):
        if library_path is None or data_path is None:
            default_lib, default_data, source = _default_paths()
        else:
            default_lib = default_data = ""
            source = "arguments"
        self.library_path = str(library_path or default_lib)
        self.data_path = str(data_path or default_data)
        hint = (f"install it with `pip install espeakng-loader`, or set ${LIBRARY_ENV} / "
                f"${DATA_ENV} to an existing libespeak-ng and espeak-ng-data")
        if not Path(self.library_path).is_file():
            raise SynthesisError(
                f"libespeak-ng not found at {self.library_path} (from {source}); {hint}")
        if not Path(self.data_path, "phontab").is_file():
            raise SynthesisError(
                f"eSpeak NG data not found at {self.data_path} (from {source}; expected "
                f"{Path(self.data_path, 'phontab')}); {hint}")
        try:
            lib = ctypes.CDLL(self.library_path)
        except OSError as e:
            raise SynthesisError(f"libespeak-ng at {self.library_path} could not be loaded ({e}); "
                                 f"{hint}") from e
        self._lib = lib
        self._declare(lib)
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 500, self.data_path.encode(),
                                     _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
        if rate != ESPEAK_SAMPLE_RATE:
            raise SynthesisError(
                f"espeak_Initialize failed for data {self.data_path} (returned {rate}, expected "
                f"the sample rate {ESPEAK_SAMPLE_RATE}); {hint}")
        self.version = lib.espeak_Info(None).decode("ascii", "replace")
        self._callback = _SYNTH_CALLBACK(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()
        self._voice: str | None = None
        self._chunks: list[bytes] = []
        self._events: list[tuple[int, str]] = []
        variant_dir = Path(self.data_path, "voices", "!v")
        self.variants: tuple[str, ...] = tuple(sorted(
            p.name for p in variant_dir.iterdir() if p.is_file())) if variant_dir.is_dir() else ()

    @staticmethod
    def _declare(lib: ctypes.CDLL) -> None:
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint),
                                     ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                              ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        if hasattr(lib, "espeak_ng_SetRandSeed"):
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_ng_SetRandSeed.restype = ctypes.c_int

    # The callback runs inside espeak_Synth, on the calling thread.
    def _on_synth(self, wav, num_samples, events) -> int:
        if num_samples > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, 2 * num_samples))
        i = 0
        while True:
            ev = events[i]
            if ev.type == _EVENT_LIST_TERMINATED:
                break
            if ev.type == _EVENT_PHONEME:
                self._events.append((ev.sample, ev.id.string.decode("latin-1")))
            i += 1
        return 0

    def check_voice(self, voice: str) -> tuple[str, str | None]:
        """Split ``"base+variant"`` and check both parts.

        Only the English voices of :data:`ENGLISH_VOICES` are accepted, because the phone
        folding covers the English phoneme tables only.

        Raises:
            SynthesisError: naming the voice and listing the valid voices or variants.
        """
        if not isinstance(voice, str) or not voice:
            raise SynthesisError(f"voice must be a non-empty string like 'en-us+m3', got {voice!r}")
        base, _, variant = voice.partition("+")
        if base not in ENGLISH_VOICES:
            raise SynthesisError(
                f"unknown voice {voice!r}: {base!r} is not one of the English voices of eSpeak NG "
                f"{self.version} ({', '.join(ENGLISH_VOICES)}); add a variant with '+', e.g. "
                f"'en-us+m3'")
        if variant and variant not in self.variants:
            raise SynthesisError(
                f"unknown voice variant {variant!r} in {voice!r}; variants in "
                f"{Path(self.data_path, 'voices', '!v')}: {', '.join(self.variants)}")
        return base, (variant or None)

    def set_voice(self, voice: str) -> None:
        """Select ``voice`` (loading its phoneme table and dictionary) without synthesising."""
        with self._lock:
            self._set_voice(voice)

    def _set_voice(self, voice: str) -> None:
        if voice == self._voice:
            return
        self.check_voice(voice)
        rc = self._lib.espeak_SetVoiceByName(voice.encode("ascii"))
        if rc != 0:
            raise SynthesisError(f"eSpeak NG refused voice {voice!r} (error {rc}); English voices: "
                                 f"{', '.join(ENGLISH_VOICES)}")
        self._voice = voice

    def synthesize_raw(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
                       seed: int | None = None) -> RawSynthesis:
        """Synthesise ``text`` and return the 22,050 Hz audio with its PHONEME events.

        Args:
            text: UTF-8 text (not SSML; ``<`` and ``[[`` are read as text).
            voice: ``"<voice>"`` or ``"<voice>+<variant>"``, e.g. ``"en-gb-x-rp+f2"``.
            rate: speaking rate in words per minute (80 to 450; eSpeak's default is 175).
            pitch: base pitch, 0 to 100 (50 is the voice's normal pitch).
            seed: seed of eSpeak NG's noise generator (used by the Klatt voices and for
                breathiness), for reproducible audio; ``None`` leaves it as it is.

        Raises:
            EmptyTextError: for empty or whitespace-only text.
            SynthesisError: for an unknown voice or when eSpeak NG fails.
            ConfigError: for a rate or pitch out of range.
        """
        if not isinstance(text, str):
            raise SynthesisError(f"text must be a str, got {type(text).__name__}")
        if not text.strip():
            raise EmptyTextError(f"cannot synthesise empty text (got {text!r}); pass at least one word")
        _check_int("rate", rate, _RATE_MIN, _RATE_MAX)
        _check_int("pitch", pitch, _PITCH_MIN, _PITCH_MAX)
        data = text.encode("utf-8")
        with self._lock:
            self._set_voice(voice)
            self._lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
            self._lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            if seed is not None and hasattr(self._lib, "espeak_ng_SetRandSeed"):
                self._lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)
            self._chunks, self._events = [], []
            rc = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                        None, None)
            chunks, events = self._chunks, self._events
            self._chunks, self._events = [], []
        if rc != 0:
            raise SynthesisError(f"espeak_Synth failed with error {rc} for {text!r} ({voice})")
        audio = np.frombuffer(b"".join(chunks), dtype=np.int16)
        if audio.size == 0:
            raise SynthesisError(f"eSpeak NG produced no audio for {text!r} ({voice})")
        return RawSynthesis(audio=audio, events=events)

    def text_to_phonemes(self, text: str, voice: str = "en-us") -> list[list[list[str]]]:
        """eSpeak NG's phonemisation of ``text`` without synthesis, using
        ``espeak_TextToPhonemes``: a list of clauses (eSpeak splits at punctuation, where
        synthesis inserts a pause), each a list of words, each a list of mnemonics (stress
        marks included).

        It runs the same translation as synthesis, so the phonemes equal those of the
        PHONEME events apart from the pauses (checked by the tests).
        """
        if not isinstance(text, str) or not text.strip():
            raise EmptyTextError(f"cannot phonemise empty text (got {text!r})")
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        mode = ord(_PHONEME_SEPARATOR) << 8      # bits 8-23: separator between phonemes
        clauses: list[list[list[str]]] = []
        with self._lock:
            self._set_voice(voice)
            for _ in range(len(buf) + 1):        # each call consumes at least one clause
                if not ptr.value:
                    break
                out = self._lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, mode)
                words = [[n for token in w.split(_PHONEME_SEPARATOR) for n in _split_pause(token)]
                         for w in (out or b"").decode("latin-1").split()]
                words = [w for w in words if w]
                if words:
                    clauses.append(words)
        return clauses


#: Pause mnemonics, longest first (``espeak_TextToPhonemes`` writes no separator after a
#: pause that starts a word, e.g. ``_!w`` for "while" after a clause break).
_PAUSE_PREFIXES = ("_;_", "_^_", "_X1", "_::", "_:", "_!", "_|", "_")


def _split_pause(token: str) -> list[str]:
    if not token:
        return []
    if token.startswith("_"):
        for p in _PAUSE_PREFIXES:
            if token.startswith(p):
                return [p] + ([token[len(p):]] if token[len(p):] else [])
    return [token]


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ConfigError(f"{name}: expected an integer in [{lo}, {hi}], found {value!r}")


_ESPEAK: EspeakNG | None = None
_ESPEAK_LOCK = threading.Lock()


def get_espeak() -> EspeakNG:
    """The process-wide :class:`EspeakNG`, created on first use (lazy, one init per process)."""
    global _ESPEAK
    with _ESPEAK_LOCK:
        if _ESPEAK is None:
            _ESPEAK = EspeakNG()
        return _ESPEAK


def espeak_version() -> str:
    """Version of the eSpeak NG library that :func:`get_espeak` uses (loads it if needed)."""
    return get_espeak().version


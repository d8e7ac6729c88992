"""LibriSpeech reader.

LibriSpeech (Panayotov et al., 2015, openslr.org/12) is laid out as::

    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

where each transcript line is ``<speaker>-<chapter>-<utt> TEXT IN UPPER CASE``. All audio
is 16 kHz mono FLAC. :func:`read_librispeech` turns one or more subsets into
:class:`~speechssl.data.manifest.Utterance` records (lengths come from the FLAC headers, so
nothing is decoded), and :func:`librispeech_manifest` writes them as a manifest so that
LibriSpeech and the synthetic corpus are read the same way afterwards::

    librispeech_manifest("/data/librispeech", ["train-clean-100"], out_dir="/data/librispeech")
    utts = read_manifest("/data/librispeech", "train-clean-100")
    ds = AudioDataset(utts, "/data/librispeech")

LibriSpeech has no phone alignments, so ``phones`` and ``alignment`` stay empty.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import ConfigError, CorpusNotFoundError
from ..frames import SAMPLE_RATE
from .audio import audio_info, check_info
from .manifest import Utterance, write_manifest

__all__ = ["SUBSETS", "find_librispeech", "librispeech_manifest", "read_librispeech", "subsets_found"]

#: The seven standard subsets (960 h of training data in the three ``train-*`` subsets).
SUBSETS: tuple[str, ...] = (
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
)

_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def find_librispeech(root: str | os.PathLike) -> Path:
    """The ``LibriSpeech`` folder (the one holding the subsets) for a user-given ``root``.

    ``root`` may be the folder that contains ``LibriSpeech/`` (as ``tar xzf`` of the OpenSLR
    archives and torchaudio's ``LIBRISPEECH(root, download=True)`` leave it) or the
    ``LibriSpeech`` folder itself.

    Raises:
        CorpusNotFoundError: ``root`` does not exist or is not a directory.
    """
    root = Path(root)
    if not root.exists():
        raise CorpusNotFoundError(
            f"LibriSpeech root {root} does not exist; expected a folder containing "
            f"LibriSpeech/<subset>/ (download the subsets from https://www.openslr.org/12)"
        )
    if not root.is_dir():
        raise CorpusNotFoundError(f"LibriSpeech root {root} is not a directory")
    inner = root / "LibriSpeech"
    return inner if inner.is_dir() else root


def subsets_found(corpus: Path) -> list[str]:
    return sorted(p.name for p in corpus.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_transcript(path: Path, speaker: str, chapter: str) -> dict[str, tuple[int, str]]:
    """``{utterance id: (line number, text)}`` of one chapter's transcript."""
    out: dict[str, tuple[int, str]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise CorpusNotFoundError(
            f"{path}: expected a UTF-8 transcript, found undecodable bytes ({e})"
        ) from e
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        utt_id = parts[0]
        m = _ID.match(utt_id)
        if m is None or len(parts) < 2:
            raise CorpusNotFoundError(
                f"{path}:{lineno}: malformed transcript line: expected "
                f"'<speaker>-<chapter>-<utterance> TEXT', found {line!r}"
            )
        if (m.group(1), m.group(2)) != (speaker, chapter):
            raise CorpusNotFoundError(
                f"{path}:{lineno}: malformed transcript line: expected an id starting with "
                f"'{speaker}-{chapter}-' (the speaker and chapter folders), found {utt_id!r}"
            )
        if utt_id in out:
            raise CorpusNotFoundError(
                f"{path}:{lineno}: malformed transcript: utterance {utt_id} already appears on "
                f"line {out[utt_id][0]}"
            )
        out[utt_id] = (lineno, " ".join(parts[1].split()))
    return out


def _numeric_dirs(folder: Path) -> list[Path]:
    dirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for p in dirs:
        if not p.name.isdigit():
            raise CorpusNotFoundError(
                f"{p}: expected LibriSpeech's <subset>/<speaker>/<chapter>/ layout with numeric "
                f"folder names, found folder {p.name!r}"
            )
    return sorted(dirs, key=lambda p: int(p.name))


def _read_chapter(
    chapter_dir: Path, speaker: str, chapter: str, rel_to: Path, audio_ext: str, sample_rate: int
) -> list[Utterance]:
    trans = chapter_dir / f"{speaker}-{chapter}.trans.txt"
    audio = {
        p.name[: -len(audio_ext)]: p
        for p in chapter_dir.iterdir()
        if p.is_file() and p.name.endswith(audio_ext)
    }
    if not trans.is_file():
        if not audio:
            return []
        first = sorted(audio)[0]
        raise CorpusNotFoundError(
            f"{audio[first]}: audio without transcript: expected {trans} to exist, found "
            f"{len(audio)} {audio_ext} file(s) in {chapter_dir} and no transcript"
        )
    lines = _read_transcript(trans, speaker, chapter)
    for utt_id, (lineno, _) in lines.items():
        if utt_id not in audio:
            raise CorpusNotFoundError(
                f"{trans}:{lineno}: transcript line for {utt_id} but its audio file "
                f"{chapter_dir / (utt_id + audio_ext)} does not exist"
            )
    for utt_id, path in audio.items():
        if utt_id not in lines:
            raise CorpusNotFoundError(
                f"{path}: audio without transcript: expected a line '{utt_id} ...' in {trans}, "
                f"found none"
            )
    out = []
    for utt_id in sorted(lines, key=lambda u: int(u.rsplit("-", 1)[1])):
        path = audio[utt_id]
        info = check_info(audio_info(path), name=str(path), sample_rate=sample_rate)
        text = lines[utt_id][1]
        out.append(
            Utterance(
                id=utt_id,
                path=path.relative_to(rel_to).as_posix(),
                num_samples=info.num_samples,
                speaker=speaker,
                text=text,
                words=text.split(),
                sample_rate=info.sample_rate,
            )
        )
    return out


def read_librispeech(
    root: str | os.PathLike,
    subsets: str | Sequence[str] = ("train-clean-100",),
    *,
    audio_ext: str = ".flac",
    sample_rate: int = SAMPLE_RATE,
    progress: bool = False,
) -> list[Utterance]:
    """Read LibriSpeech subsets into utterance records, without decoding any audio.

    Args:
        root: the folder containing ``LibriSpeech/``, or the ``LibriSpeech`` folder itself.
        subsets: one subset name or several (see :data:`SUBSETS`); a custom subset folder
            with the same layout is accepted too.
        audio_ext: extension of the audio files (``.flac`` in the distribution; ``.wav`` for
            a converted copy).
        sample_rate: the rate every file must have.
        progress: show a progress bar per subset (reading train-960's headers takes a while).

    Returns:
        Utterances ordered by subset (in the order given), then speaker, chapter and
        utterance number (numerically). ``path`` is relative to ``root`` as given, ``speaker``
        is the speaker id, ``text`` the transcript and ``words`` its words.

    Raises:
        CorpusNotFoundError: missing root or subset (the message lists the subsets found),
            a transcript line whose audio file is missing, an audio file without a transcript
            line, or a malformed transcript line (file and line number).
        AudioError: an unreadable or empty file, or one that is not ``sample_rate`` mono.
        ConfigError: no subsets, or a subset named twice.
    """
    if isinstance(subsets, str):
        subsets = (subsets,)
    subsets = list(subsets)
    if not subsets:
        raise ConfigError(f"no LibriSpeech subsets requested; choose from {list(SUBSETS)}")
    if len(set(subsets)) != len(subsets):
        raise ConfigError(f"a LibriSpeech subset is requested twice: {subsets}")
    root = Path(root)
    corpus = find_librispeech(root)
    out: list[Utterance] = []
    for subset in subsets:
        subset_dir = corpus / subset
        if not subset_dir.is_dir():
            found = subsets_found(corpus)
            hint = "" if subset in SUBSETS else f"; the standard subsets are {list(SUBSETS)}"
            raise CorpusNotFoundError(
                f"LibriSpeech subset {subset!r} not found at {subset_dir}; subsets found in "
                f"{corpus}: {found}{hint}"
            )
        chapters = [
            (spk_dir.name, ch_dir)
            for spk_dir in _numeric_dirs(subset_dir)
            for ch_dir in _numeric_dirs(spk_dir)
        ]
        if progress:
            from tqdm.auto import tqdm

            chapters = tqdm(chapters, desc=f"LibriSpeech {subset}", unit="chapter")
        n_before = len(out)
        for speaker, ch_dir in chapters:
            out.extend(_read_chapter(ch_dir, speaker, ch_dir.name, root, audio_ext, sample_rate))
        if len(out) == n_before:
            raise CorpusNotFoundError(
                f"LibriSpeech subset {subset!r} at {subset_dir}: expected "
                f"<speaker>/<chapter>/*{audio_ext} files, found none"
            )
    return out


def librispeech_manifest(
    root: str | os.PathLike,
    subsets: str | Sequence[str] = ("train-clean-100",),
    out_dir: str | os.PathLike | None = None,
    name: str | None = None,
    **kwargs,
) -> Path:
    """Write LibriSpeech subsets as the manifest ``<out_dir>/<name>.jsonl``.

    Paths in the manifest are made relative to ``out_dir`` (the manifest's corpus root), so
    ``AudioDataset(read_manifest(out_dir, name), out_dir)`` finds the audio wherever
    ``out_dir`` is, as for the synthetic corpus.

    Args:
        root: as for :func:`read_librispeech`.
        subsets: as for :func:`read_librispeech`.
        out_dir: where to write the manifest (created if needed); defaults to ``root``.
        name: split name of the manifest; defaults to the subset names joined by ``+``
            (``train-clean-100+train-clean-360``).
        **kwargs: passed to :func:`read_librispeech` (``audio_ext``, ``sample_rate``,
            ``progress``).

    Returns:
        Path of the written manifest.
    """
    if isinstance(subsets, str):
        subsets = (subsets,)
    root = Path(root)
    out_dir = root if out_dir is None else Path(out_dir)
    name = "+".join(subsets) if name is None else name
    utts = read_librispeech(root, subsets, **kwargs)
    out_dir.mkdir(parents=True, exist_ok=True)
    if out_dir.resolve() != root.resolve():
        utts = list(_rebase(utts, root, out_dir))
    return write_manifest(out_dir, name, utts)


def _rebase(utts: Iterable[Utterance], root: Path, out_dir: Path) -> Iterable[Utterance]:
    """Make paths relative to ``out_dir`` (absolute where no relative path exists)."""
    root_abs, out_abs = root.resolve(), out_dir.resolve()
    for u in utts:
        target = root_abs / u.path
        try:
            rel = Path(os.path.relpath(target, out_abs)).as_posix()
        except ValueError:  # different drives on Windows
            rel = target.as_posix()
        yield dataclasses.replace(u, path=rel)

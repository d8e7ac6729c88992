"""The phone inventory of the synthetic corpus and the folding of eSpeak NG phonemes onto it.

Inventory
---------
:data:`PHONES` is ``sil`` followed by the 39 phones of the CMU Pronouncing Dictionary
(ARPAbet without stress): the label set used for phone purity, PNMI and phone error rate in
the HuBERT and wav2vec 2.0 literature, where LibriSpeech is force-aligned with a CMU-style
lexicon. ``sil`` has id 0.

Which eSpeak NG names are folded
--------------------------------
eSpeak NG reports every phoneme it synthesises with a PHONEME event. It can name it either by
its *mnemonic* (eSpeak's ASCII phoneme name, e.g. ``e@``, ``aI``, ``t#``) or by an IPA
string. We use the mnemonics, for three reasons:

1. The English phoneme tables (``en``, ``en-us``, ``en-sc``, ``en-rp``, ...) give each
   mnemonic the same *lexical* meaning in every accent and only change its sound: ``e@`` is
   the SQUARE vowel, realised [ɛɹ] by ``en-us`` and [eə] by ``en``; ``i:`` is FLEECE, realised
   [ei] by the West-Midlands voice. Folding mnemonics therefore gives the same labels for the
   same words in every accent, exactly like a forced alignment with a pronouncing dictionary
   (how LibriSpeech phone labels are made), whereas folding IPA would turn Birmingham "see"
   into ``S EY``.
2. Accent features that eSpeak implements by *replacing* phonemes (``en-029`` says ``d`` for
   ``D``, ``en-gb-x-gbcwmd`` drops ``h``, ``en-us`` tenses unstressed ``I`` to ``i``) do change
   the mnemonic, so the labels still follow what was actually said.
3. Mnemonics are at most four ASCII characters, so they always fit the 8-byte name field of
   the event; IPA names such as ``ˈaɪʊɚ`` do not and arrive truncated.

The complete set of mnemonics is the content of the compiled phoneme tables
(``espeak-ng-data/phontab``), so :data:`ESPEAK_TO_PHONES` covers *every* phoneme of every
table an English voice can use (:func:`english_phoneme_names` lists them; the tests check
the coverage), not only the ones seen in a sample.

Folding rules
-------------
* Stress and length marks are not part of a phoneme: the prefixes ``'`` (primary), ``,``
  (secondary), ``%`` and ``=`` are stripped.
* Pauses (``_``, ``_:``, ``_!``, ``||``, ``1`` and every name starting with ``_``) become
  ``sil``.
* Vowels fold to their General-American lexical set: LOT ``0`` -> ``AA``, THOUGHT ``O:`` ->
  ``AO``, BATH ``aa`` -> ``AE``, reduced ``a#``/``@``/``V`` -> ``AH``, lettER ``3`` and NURSE
  ``3:`` -> ``ER``, etc.
* Vowels that eSpeak treats as one phoneme but CMU spells with two phones map to a
  *sequence*, whose duration is split evenly by the aligner: r-coloured vowels (SQUARE ``e@``
  -> ``EH R``, START ``A@`` -> ``AA R``, NORTH/FORCE ``O@``/``o@`` -> ``AO R``, NEAR ``i@3`` ->
  ``IH R``, CURE ``U@`` -> ``UH R``), triphthongs (FIRE ``aI3`` -> ``AY ER``, ``aI@`` ->
  ``AY AH``, HOUR ``aU@`` -> ``AW ER``), ``i@`` (as in *idea*) -> ``IY AH``, and the syllabic
  consonants (``@L``/``l-`` -> ``AH L``, ``n-`` -> ``AH N``, ``m-`` -> ``AH M``), which CMU
  writes ``AH0 L`` / ``AH0 N``.
* Allophones fold to their phoneme: the flap ``t#`` and the glottal stop ``?`` (``en-us``
  uses it only for /t/ before syllabic n, as in *button*) -> ``T``; dental ``t[``/``d[`` ->
  ``T``/``D``; devoiced ``d#``/``z#`` -> ``D``/``Z``; dark or syllabic l -> ``L``; ``w#``
  ([ʍ], Scottish *wh*) -> ``W``; trilled or tapped r -> ``R``.
* Non-English consonants that the English dictionary uses for a handful of loanwords and
  names fold to the nearest English phone (``x``/``X`` as in *Bach* -> ``K``, ``l#`` [ɬ] ->
  ``L``, ``C`` [ç] -> ``HH``), and so do the remaining phonemes of the shared ``base1`` table,
  which English text never produces but which are mapped so that the table is complete.
* Context rules (:func:`fold_sequence`): eSpeak writes a word-internal or linking ``r`` as a
  separate phoneme after an r-coloured vowel (``S'e@rIN`` *sharing*, ``De@r ,A@`` *there
  are*). A vowel that folds to ``... R`` drops its own ``R`` when an r phoneme follows, and an
  r phoneme that follows a vowel folding to ``... ER`` is absorbed into the ``ER`` (CMU:
  *furry* ``F ER IY``). ``;``, the palatal glide eSpeak inserts between two vowels (*carrying*,
  *the adverb*), is absorbed into the preceding phone, as a dictionary would have no phone
  there. An absorbed phoneme's duration is added to the phone before it.

Unknown names raise :class:`UnknownPhonemeError`; nothing is ever dropped silently.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import SynthesisError

SILENCE = "sil"

#: ``sil`` followed by the 39 CMU phones, in alphabetical order. Ids are list indices.
PHONES: list[str] = [SILENCE] + [
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
    "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH",
    "UW", "V", "W", "Y", "Z", "ZH",
]
PHONE_TO_ID: dict[str, int] = {p: i for i, p in enumerate(PHONES)}

#: Characters eSpeak prefixes to a phoneme name to mark stress; they are not part of it.
STRESS_MARKS = "',%="

#: r phonemes: plain, linking and the trilled/tapped variants.
_R_PHONEMES = frozenset({"r", "r-", "r/", "R", "R2", "R3", "r.", 'r"', "*", "**"})

#: Phonemes absorbed into the preceding phone (see the module docstring).
_ABSORBED = frozenset({";"})


def _seq(s: str) -> tuple[str, ...]:
    return tuple(s.split())


#: eSpeak NG mnemonic (stress marks stripped) -> sequence of :data:`PHONES` (pauses excluded,
#: see :func:`is_pause`). Grouped as in the module docstring; comments give the IPA that the
#: American (``en-us``) and British (``en``) tables produce and an example word.
ESPEAK_TO_PHONES: dict[str, tuple[str, ...]] = {
    # --- monophthongs ----------------------------------------------------------------------
    "0": _seq("AA"),      # LOT      ɑː / ɒ     "lot"
    "0#": _seq("AA"),     # LOT variant          ɑː / ɒ
    "02": _seq("AH"),     # ʌ / ɒ   "what", "of" (CMU: W AH1 T)
    "A:": _seq("AA"),     # PALM     ɑː         "father"
    "A#": _seq("AA"),     # ɑː / a
    "A~": _seq("AA"),     # nasal ɑ̃ (French loans)
    "O~": _seq("AO"),     # nasal ɔ̃ (French loans)
    "O": _seq("AO"),      # ɔ
    "O2": _seq("AO"),     # CLOTH    ɔ / ɒ      "long", "off"
    "O:": _seq("AO"),     # THOUGHT  ɔː         "thought"
    "o": _seq("OW"),      # o
    "o:": _seq("OW"),     # oː
    "oU": _seq("OW"),     # GOAT     oʊ / əʊ    "goat"
    "oU#": _seq("AA"),    # ɑː / ɒ
    "a": _seq("AE"),      # TRAP     æ / a      "trap"
    "a2": _seq("AE"),
    "a/": _seq("AE"),
    "a#2": _seq("AE"),
    "aa": _seq("AE"),     # BATH     æ / ɑː     "bath" (CMU: AE)
    "a#": _seq("AH"),     # reduced  ɐ          "about", "a"
    "V": _seq("AH"),      # STRUT    ʌ          "strut"
    "@": _seq("AH"),      # schwa    ə          "the"
    "@#": _seq("AH"),
    "@-": _seq("AH"),     # weak schwa           "camera"
    "@2": _seq("AH"),     # schwa of "the" before consonants
    "@5": _seq("AH"),     # reduced vowel of "to"
    "3": _seq("ER"),      # lettER   ɚ / ə      "letter"
    "3:": _seq("ER"),     # NURSE    ɜː         "nurse"
    "IR": _seq("ER"),     # əɹ  (Scottish "bird")
    "VR": _seq("ER"),     # ʌɹ  (Scottish "word")
    "E": _seq("EH"),      # DRESS    ɛ          "dress"
    "E#": _seq("EH"),
    "E2": _seq("EH"),
    "e#": _seq("EH"),
    "e": _seq("EY"),      # e (close-mid, the FACE nucleus)
    "e:": _seq("EY"),     # eː
    "eI": _seq("EY"),     # FACE     eɪ / eː    "face"
    "I": _seq("IH"),      # KIT      ɪ          "kit"
    "I2": _seq("IH"),     # unstressed ɪ
    "I#": _seq("IH"),     # ᵻ        "roses"
    "I2#": _seq("IH"),
    "i": _seq("IY"),      # happY    i          "happy"
    "i:": _seq("IY"),     # FLEECE   iː         "fleece"
    "U": _seq("UH"),      # FOOT     ʊ          "foot"
    "u": _seq("UW"),
    "u:": _seq("UW"),     # GOOSE    uː         "goose"
    # --- diphthongs ------------------------------------------------------------------------
    "aI": _seq("AY"),     # PRICE    aɪ         "price"
    "aI2": _seq("AY"),    # Scottish PRICE variant
    "aU": _seq("AW"),     # MOUTH    aʊ         "mouth"
    "OI": _seq("OY"),     # CHOICE   ɔɪ         "choice"
    # --- vowels that CMU spells with two phones -------------------------------------------
    "A@": _seq("AA R"),   # START    ɑːɹ / ɑː   "car"
    "O@": _seq("AO R"),   # NORTH    ɔːɹ / ɔː   "north"
    "o@": _seq("AO R"),   # FORCE    ɔːɹ / ɔː   "force"
    "e@": _seq("EH R"),   # SQUARE   ɛɹ / eə    "square"
    "i@3": _seq("IH R"),  # NEAR     ɪɹ / iə    "near"
    "U@": _seq("UH R"),   # CURE     ʊɹ / ʊə    "cure", "your"
    "i@": _seq("IY AH"),  # iə                  "idea", "brilliant"
    "aI3": _seq("AY ER"), # FIRE     aɪɚ / aɪə  "fire"
    "aI@": _seq("AY AH"), # aɪə                 "science", "diet"
    "aU@": _seq("AW ER"), # HOUR     aʊɚ / aʊə  "hour"
    # --- syllabic consonants (CMU: AH0 + consonant) ------------------------------------------
    "@L": _seq("AH L"),   # əl                  "little"
    "l-": _seq("AH L"),   # l̩
    "n-": _seq("AH N"),   # n̩                  "button"
    "m-": _seq("AH M"),   # m̩
    "N-": _seq("AH NG"),  # ŋ̩
    # --- stops -----------------------------------------------------------------------------
    "p": _seq("P"),
    "b": _seq("B"),
    "t": _seq("T"),
    "t#": _seq("T"),      # flap ɾ (en-us "water")
    "t2": _seq("T"),
    "t[": _seq("T"),      # dental t̪ (Caribbean "thing")
    "?": _seq("T"),       # glottal stop ʔ, /t/ before syllabic n ("button")
    "d": _seq("D"),
    "d#": _seq("D"),      # devoiced d
    "d[": _seq("D"),      # dental d̪
    "k": _seq("K"),
    "g": _seq("G"),
    "c": _seq("K"),       # palatal c
    "J": _seq("G"),       # palatal ɟ
    "q": _seq("K"),       # uvular q
    # --- affricates ------------------------------------------------------------------------
    "tS": _seq("CH"),
    "tS;": _seq("CH"),    # tɕ
    "dZ": _seq("JH"),
    "dZ;": _seq("JH"),    # dʑ
    # --- fricatives ------------------------------------------------------------------------
    "f": _seq("F"),
    "v": _seq("V"),
    "v#": _seq("V"),      # ʋ
    "B": _seq("V"),       # β
    "T": _seq("TH"),
    "D": _seq("DH"),
    "s": _seq("S"),
    "s.": _seq("S"),      # ʂ
    "s;": _seq("S"),      # ʂ
    "z": _seq("Z"),
    "z#": _seq("Z"),      # devoiced z
    "z/2": _seq("Z"),
    "z.": _seq("Z"),      # ʐ
    "S": _seq("SH"),
    "S;": _seq("SH"),     # ɕ
    "Z": _seq("ZH"),
    "Z;": _seq("ZH"),     # ʑ
    "z;": _seq("ZH"),     # ʑ
    "h": _seq("HH"),
    "C": _seq("HH"),      # ç ("hue" in some accents)
    "#X1": _seq("HH"),    # aspiration
    "x": _seq("K"),       # x  ("Bach", CMU: K)
    "X": _seq("K"),       # χ
    "Q": _seq("G"),       # ɣ
    "Q^": _seq("G"),
    "J^": _seq("Y"),      # ʝ
    "Q\"": _seq("R"),     # ʁ
    # --- nasals ----------------------------------------------------------------------------
    "m": _seq("M"),
    "n": _seq("N"),
    "n.": _seq("N"),      # ɳ
    "n^": _seq("N"),      # ɲ
    "N": _seq("NG"),
    # --- approximants ----------------------------------------------------------------------
    "l": _seq("L"),
    "l/": _seq("L"),      # dark l
    "l/2": _seq("L"),
    "l/3": _seq("L"),
    "l.": _seq("L"),      # ɭ
    "l^": _seq("L"),      # ʎ
    "L": _seq("L"),       # ɫ
    "L/": _seq("L"),
    "l#": _seq("L"),      # ɬ ("Lloyd", "Cthulhu")
    "r": _seq("R"),
    "r-": _seq("R"),      # linking r ("there are")
    "r/": _seq("R"),
    "R": _seq("R"),       # trill
    "R2": _seq("R"),
    "R3": _seq("R"),
    "r.": _seq("R"),
    "r\"": _seq("R"),     # ʀ
    "*": _seq("R"),       # tap ɾ (base1)
    "**": _seq("R"),
    "j": _seq("Y"),
    "w": _seq("W"),
    "w#": _seq("W"),      # ʍ (Scottish "wh")
    # --- absorbed into the preceding phone -------------------------------------------------
    ";": (),              # palatal glide between vowels ("carrying")
}


class UnknownPhonemeError(SynthesisError, ValueError):
    """eSpeak NG produced a phoneme name that :data:`ESPEAK_TO_PHONES` does not map."""


def _check_table() -> None:
    for name, seq in ESPEAK_TO_PHONES.items():
        for p in seq:
            if p not in PHONE_TO_ID or p == SILENCE:
                raise AssertionError(f"ESPEAK_TO_PHONES[{name!r}] contains {p!r}, not a phone")


_check_table()


def strip_stress(name: str) -> str:
    """The phoneme name without eSpeak's leading stress marks (``'``, ``,``, ``%``, ``=``)."""
    return name.lstrip(STRESS_MARKS)


#: Pause phonemes whose name does not start with ``_`` (``1`` is a pause of the ``base`` table).
_OTHER_PAUSES = frozenset({"", "||", "1"})


def is_pause(name: str) -> bool:
    """Whether an (unstressed) eSpeak name is a pause: ``_...``, ``||``, ``1`` or empty."""
    return name.startswith("_") or name in _OTHER_PAUSES


def fold_phoneme(name: str, context: str = "") -> tuple[str, ...]:
    """Phones for one eSpeak mnemonic, without context rules.

    Returns ``("sil",)`` for a pause and ``()`` for a phoneme that is absorbed into the
    preceding phone.

    Raises:
        UnknownPhonemeError: for a name that is not in :data:`ESPEAK_TO_PHONES`; ``context``
            (e.g. the voice and text) is added to the message.
    """
    bare = strip_stress(name)
    if is_pause(bare):
        return (SILENCE,)
    try:
        return ESPEAK_TO_PHONES[bare]
    except KeyError:
        where = f" ({context})" if context else ""
        raise UnknownPhonemeError(
            f"eSpeak NG phoneme {name!r} has no mapping to the phone inventory{where}; add it to "
            f"speechssl.data.phones.ESPEAK_TO_PHONES (known: {len(ESPEAK_TO_PHONES)} names)"
        ) from None


def fold_sequence(names: Sequence[str], context: str = "") -> list[tuple[str, ...]]:
    """Phones for each eSpeak mnemonic of an utterance, with the context rules applied.

    The result has one tuple per input name (same order), so it can be zipped with event
    times: ``("sil",)`` for pauses, ``()`` for a phoneme whose duration belongs to the phone
    before it, otherwise one or more phones.
    """
    out = [fold_phoneme(n, context) for n in names]
    bare = [strip_stress(n) for n in names]
    for i in range(len(out) - 1):
        if bare[i + 1] not in _R_PHONEMES or not out[i]:
            continue
        last = out[i][-1]
        if last == "R" and len(out[i]) > 1:
            out[i] = out[i][:-1]            # e@ r -> EH + R
        elif last == "ER":
            out[i + 1] = ()                 # 3: r -> ER (r absorbed)
    for i, b in enumerate(bare):
        if b in _ABSORBED:
            out[i] = ()
    return out


def phones_of(names: Iterable[str], context: str = "") -> list[str]:
    """Flat phone transcript (no ``sil``) of a sequence of eSpeak mnemonics."""
    return [p for seq in fold_sequence(list(names), context) for p in seq if p != SILENCE]


# --- the compiled phoneme tables ------------------------------------------------------------

# Phoneme types in phontab (espeak-ng src/libespeak-ng/phoneme.h): 0 pause, 1 stress,
# 2 vowel, 3 liquid, 4 stop, 5 voiced stop, 6 fricative, 7 voiced fricative, 8 nasal,
# 9 virtual (never synthesised; used only inside phoneme programs).
_PAUSE_TYPE, _STRESS_TYPE, _VIRTUAL_TYPE = 0, 1, 9
_PHONEME_TAB = struct.Struct("<IIHBBBBBB")  # PHONEME_TAB in synthesize.h, 16 bytes


def read_phoneme_tables(data_path: str | os.PathLike) -> dict[str, tuple[str | None, dict[str, int]]]:
    """Parse ``<data_path>/phontab``: ``{table: (parent table, {mnemonic: phoneme type})}``.

    The format is eSpeak NG's ``LoadPhData``: a table count (1 byte, padded to 4), then per
    table the number of phonemes, the 1-based index of the table it includes (2 bytes, padded
    to 4), a 32-byte name and one 16-byte ``PHONEME_TAB`` record per phoneme, whose first
    4 bytes are the mnemonic.
    """
    data = Path(data_path, "phontab").read_bytes()
    n_tables, pos = data[0], 4
    raw: list[tuple[str, int, dict[str, int]]] = []
    for _ in range(n_tables):
        n_phonemes, includes = data[pos], data[pos + 1]
        pos += 4
        name = data[pos:pos + 32].split(b"\0", 1)[0].decode("ascii")
        pos += 32
        phonemes: dict[str, int] = {}
        for _ in range(n_phonemes):
            mnemonic, _flags, _prog, _code, ph_type, *_ = _PHONEME_TAB.unpack_from(data, pos)
            pos += _PHONEME_TAB.size
            phonemes[mnemonic.to_bytes(4, "little").rstrip(b"\0").decode("latin-1")] = ph_type
        raw.append((name, includes, phonemes))
    return {name: (raw[inc - 1][0] if inc else None, ph) for name, inc, ph in raw}


def english_phoneme_names(data_path: str | os.PathLike) -> dict[str, int]:
    """Every mnemonic an English voice can emit, with its type (the most specific table wins
    over the tables it includes).

    English tables are ``en`` and every table that includes it (``en-us``, ``en-sc``, ...),
    together with the tables ``en`` itself includes (``base1``, ``base``). Stress and virtual
    phonemes are left out: they never reach the event stream.
    """
    tables = read_phoneme_tables(data_path)

    def chain(t: str | None) -> list[str]:
        out: list[str] = []
        while t is not None:
            out.append(t)
            t = tables[t][0]
        return out

    english = [t for t in tables if "en" in chain(t)]
    if not english:
        raise SynthesisError(f"no English phoneme table in {Path(data_path, 'phontab')}")
    names: dict[str, int] = {}
    for t in english:
        for table in reversed(chain(t)):        # base first, most specific last
            for mnemonic, ph_type in tables[table][1].items():
                if ph_type == _PAUSE_TYPE and mnemonic in names:
                    continue                     # a placeholder entry in ``base``
                names[mnemonic] = ph_type
    return {n: t for n, t in names.items() if t not in (_STRESS_TYPE, _VIRTUAL_TYPE) and n}

"""Which files of the config directory a backup leaves out.

The lists are copies of Home Assistant's own (``homeassistant.components.backup
.const``), so a backup made here contains what Home Assistant's would; a test
compares them with the installed Home Assistant. Patterns are matched the way
Home Assistant matches them: ``PurePath("data/<relative path>").full_match(
"data/<pattern>")``, so ``*`` stays within one path segment, ``**`` spans
segments and a pattern without ``**`` is anchored at the config directory; but
in time linear in the path, whatever the pattern (see ``build_matcher``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
import fnmatch
from pathlib import PurePosixPath
import re
from typing import Final

# Home Assistant's EXCLUDE_FROM_BACKUP (newest release; older releases lack
# ".cache/*", which only leaves a cache directory out).
HA_EXCLUDES: Final = (
    "**/__pycache__/*",
    "**/.DS_Store",
    ".HA_RESTORE",
    "*.db-shm",
    "*.log.*",
    "*.log",
    "backups/*.tar",
    "tmp_backups/*.tar",
    "OZW_Log.txt",
    "tts/*",
    ".cache/*",
)

# Home Assistant's EXCLUDE_DATABASE_FROM_BACKUP: the recorder's SQLite files.
HA_DATABASE_EXCLUDES: Final = (
    "home-assistant_v2.db",
    "home-assistant_v2.db-wal",
)

# The members of the inner archive live under this directory.
ARCHIVE_ROOT: Final = "data"


def normalize_pattern(pattern: str) -> str:
    """Return ``pattern`` relative to the config directory, or raise ValueError.

    Accepts the forms a user types (``www/``, ``./www``); refuses absolute
    patterns and ``..``, which could never match a member under ``data/``.
    """
    text = pattern.strip()
    while text.startswith("./"):
        text = text[2:]
    text = text.rstrip("/")
    if not text:
        raise ValueError(f"Empty exclude pattern: {pattern!r}")
    if text.startswith("/"):
        raise ValueError(f"Exclude pattern must be relative: {pattern!r}")
    if ".." in PurePosixPath(text).parts:
        raise ValueError(f"Exclude pattern must not contain '..': {pattern!r}")
    return text


def exclude_patterns(extra: Iterable[str], *, include_database: bool) -> list[str]:
    """Return every pattern a backup excludes, Home Assistant's first."""
    patterns = list(HA_EXCLUDES)
    if not include_database:
        patterns.extend(HA_DATABASE_EXCLUDES)
    patterns.extend(normalize_pattern(pattern) for pattern in extra)
    return patterns


# --- matching -----------------------------------------------------------------
#
# ``glob.translate`` gives the regular expression ``full_match`` uses, but Python
# searches it by backtracking: ``*a*a*a*a*a*a*a*a*b`` takes seconds on one long
# name. The same language is decided here in time linear in the path: by an
# expression that never backtracks between the fixed pieces of a pattern (the
# usual case), or else by running the pattern's automaton on all positions of
# the path at once.

_NOT_SEP: Final = "[^/]"

# A pattern is read as glob.translate reads it: segments split at "/", with
#   "*" alone: one non-empty segment,
#   "**" followed by more: any number of whole segments ("(?:.+/)?"),
#   "**" at the end: anything (".*").
_SEP: Final = "/"
_ONE: Final = "*"
_ANY: Final = "**/"
_REST: Final = "**"

# The automaton's operations on the set of positions reached so far.
_CHAR: Final = 0  # one character of a class (key: its regular expression)
_STAR: Final = 1  # "*" within a segment: "[^/]*"
_PLUS: Final = 2  # "*" as a segment: "[^/]+"
_SKIP: Final = 3  # "**" followed by more: "(?:.+/)?"
_TAIL: Final = 4  # "**" at the end: ".*"

_Op = tuple[int, str]


@dataclass(frozen=True, slots=True)
class _Segment:
    """A segment: fixed pieces between its ``*``, one regex per character."""

    pieces: tuple[tuple[str, ...], ...]

    def regex(self) -> str:
        """Return an expression for the segment that never backtracks.

        The middle pieces take their leftmost places (atomic groups) and the
        last one ends the segment (checked backwards from its end): for
        pieces of fixed length that finds a match whenever backtracking
        would, in O(len(segment) * len(pattern)).
        """
        first, *rest = ("".join(piece) for piece in self.pieces)
        if not rest:
            return first
        *middle, last = rest
        regex = first + "".join(f"(?>{_NOT_SEP}*?{piece})" for piece in middle)
        if not last:
            return f"{regex}{_NOT_SEP}*+"
        width = len(self.pieces[-1])
        return f"{regex}(?={_NOT_SEP}{{{width}}}){_NOT_SEP}*+(?<={last})"

    def program(self) -> list[_Op]:
        """Return the segment as automaton operations."""
        ops: list[_Op] = []
        for index, piece in enumerate(self.pieces):
            if index:
                ops.append((_STAR, ""))
            ops.extend((_CHAR, char) for char in piece)
        return ops


def _class_end(part: str, start: int) -> int:
    """Return where the class opened before ``start`` closes (-1: it does not).

    As fnmatch reads it: a leading "!" negates, a "]" right after is literal.
    """
    index = start
    if part.startswith("!", index):
        index += 1
    if part.startswith("]", index):
        index += 1
    return part.find("]", index)


def _class(text: str) -> str:
    r"""Return the one-character expression of a class such as ``[!a-c]``.

    fnmatch's own translation: ranges, negation and odd cases exactly as Home
    Assistant's matching reads them. It comes as "(?s:[^a-c])" and an end
    anchor (\Z, or \z from Python 3.14 on), which is dropped.
    """
    return fnmatch.translate(text).removesuffix(r"\Z").removesuffix(r"\z")


def _segment(part: str) -> _Segment:
    """Split a segment at its ``*`` (runs of them are one) into fixed pieces."""
    pieces: list[list[str]] = [[]]
    index = 0
    while index < len(part):
        char = part[index]
        index += 1
        if char == "*":
            if pieces[-1] or len(pieces) == 1:
                pieces.append([])
        elif char == "?":
            pieces[-1].append(_NOT_SEP)
        elif char == "[" and (close := _class_end(part, index)) >= 0:
            pieces[-1].append(_class(part[index - 1 : close + 1]))
            index = close + 1
        else:
            pieces[-1].append(re.escape(char))
    return _Segment(tuple(tuple(piece) for piece in pieces))


def _items(pattern: str) -> list[_Segment | str]:
    """Return the pattern's segments and separators, as glob.translate reads them."""
    parts = pattern.split("/")
    last = len(parts) - 1
    items: list[_Segment | str] = []
    for index, part in enumerate(parts):
        if part == "**":
            if index == last:
                items.append(_REST)
            elif parts[index + 1] != "**":
                items.append(_ANY)
            continue
        items.append(_ONE if part == "*" else _segment(part))
        if index < last:
            items.append(_SEP)
    return items


def _item_regex(item: _Segment | str) -> str:
    if isinstance(item, _Segment):
        return item.regex()
    return f"{_NOT_SEP}++" if item == _ONE else item


def _regex(items: list[_Segment | str]) -> str:
    """Return an expression that backtracks at most within one ``**``.

    A run of segments between two ``**`` takes its leftmost place (an atomic
    group): it spans a fixed number of whole segments, so a later place could
    only leave the rest of the pattern fewer chances; except next to an empty
    segment ("//"), see ``_Pattern.leftmost``.
    """
    out: list[str] = []
    block: list[str] | None = None  # the segments after the last "**"
    for item in items:
        if item in (_ANY, _REST):
            if block is not None:
                out.append(f"(?>(?:.+?/)??{''.join(block)})")
            block = [] if item == _ANY else None
            if item == _REST:
                out.append(".*")
        elif block is not None:
            block.append(_item_regex(item))
        else:
            out.append(_item_regex(item))
    if block is not None:
        out.append(f"(?:.+/)?{''.join(block)}")
    return "".join(out) + r"\Z"


_ITEM_OPS: Final[dict[str, _Op]] = {
    _SEP: (_CHAR, "/"),
    _ONE: (_PLUS, ""),
    _ANY: (_SKIP, ""),
    _REST: (_TAIL, ""),
}


def _program(items: list[_Segment | str]) -> tuple[_Op, ...]:
    ops: list[_Op] = []
    for item in items:
        if isinstance(item, _Segment):
            ops.extend(item.program())
        else:
            ops.append(_ITEM_OPS[item])
    return tuple(ops)


class _Automaton:
    """Patterns run as automata on every position of a path at once.

    Bit ``i`` of a state set means "matched the path's first i characters";
    each operation of a pattern maps the set with a few operations on
    integers of len(path) bits, however the pattern is built. Exact for any
    path, but slower than a regular expression.
    """

    def __init__(self, programs: list[tuple[_Op, ...]]) -> None:
        keys = {"/"} | {key for ops in programs for kind, key in ops if kind == _CHAR}
        self._classes = {key: re.compile(key, re.DOTALL) for key in keys}
        # Per class: character -> "1" (in the class) or "0", for str.translate;
        # learnt as characters turn up (ASCII at once).
        self._tables: dict[str, dict[int, str]] = {key: {} for key in keys}
        self._known: set[str] = set()

    def _learn(self, path: str) -> None:
        chars = {chr(code) for code in range(128)} if not self._known else set()
        if not path.isascii():
            chars |= set(path)
        chars -= self._known
        for key, regex in self._classes.items():
            table = self._tables[key]
            for char in chars:
                table[ord(char)] = "1" if regex.fullmatch(char) else "0"
        self._known |= chars  # last: a table is complete for what is known

    def matches(self, path: str, programs: list[tuple[_Op, ...]]) -> bool:
        """Return whether one of ``programs`` matches all of ``path``."""
        if not self._known or not (path.isascii() or self._known.issuperset(path)):
            self._learn(path)
        backwards = path[::-1]
        masks: dict[str, int] = {}

        def mask(key: str) -> int:
            """Return the positions whose character is in the class ``key``."""
            if (bits := masks.get(key)) is None:
                digits = backwards.translate(self._tables[key])
                bits = masks[key] = int(digits, 2) if digits else 0
            return bits

        size = len(path)
        seps = mask("/")
        inside = ((1 << size) - 1) ^ seps
        return any(_run(ops, mask, inside, seps << 1, size) for ops in programs)


def _run(
    ops: tuple[_Op, ...],
    mask: Callable[[str], int],
    inside: int,
    after_sep: int,
    size: int,
) -> bool:
    """Run one pattern's automaton: ``inside`` has the non-separator positions."""
    reached = 1
    for kind, key in ops:
        if kind == _CHAR:
            reached = (reached & mask(key)) << 1
        elif kind == _STAR:
            # Adding the reached bits to a run of non-separators carries
            # through the run: every later position of it, and its end.
            reached |= ((reached & inside) + inside) ^ inside
        elif kind == _PLUS:
            reached = (reached & inside) << 1
            reached |= ((reached & inside) + inside) ^ inside
        else:
            low = (reached & -reached).bit_length() - 1
            if kind == _SKIP:  # after a "/" at least one character on
                reached |= after_sep >> (low + 2) << (low + 2)
            else:  # any position from the first one reached
                reached = ((1 << (size + 1)) - 1) >> low << low
        if not reached:
            return False
    return bool(reached >> size & 1)


@dataclass(frozen=True, slots=True)
class _Pattern:
    """A compiled exclude pattern."""

    program: tuple[_Op, ...]
    # None when a class matches "/" (as "[!a]" does): the expression reads
    # segment by segment and cannot follow it; the automaton decides.
    regex: str | None
    # The expression places a run between two "**" leftmost: exact unless
    # the path has an empty segment ("//"), then the automaton decides.
    leftmost: bool


def _compile(pattern: str) -> _Pattern:
    items = _items(pattern)
    program = _program(items)
    crosses = any(
        kind == _CHAR and key != "/" and re.fullmatch(key, "/", re.DOTALL)
        for kind, key in program
    )
    # A run of segments between two "**".
    leftmost = any(
        item == _ANY and any(later in (_ANY, _REST) for later in items[index + 1 :])
        for index, item in enumerate(items)
    )
    return _Pattern(program, None if crosses else _regex(items), leftmost)


def build_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """Return a predicate telling whether a path (config-dir relative) is excluded.

    Decides exactly as ``PurePath("data/<path>").full_match("data/<pattern>")``
    (the expression of ``glob.translate``, tests compare them), but in
    O(len(path) * len(pattern)): one expression without backtracking for the
    common case, the patterns' automaton for what it cannot decide.
    """
    compiled = [_compile(pattern) for pattern in patterns]
    if not compiled:
        return lambda rel_path: False
    everything = [pattern.program for pattern in compiled]
    crossing = [pattern.program for pattern in compiled if pattern.regex is None]
    leftmost = any(pattern.leftmost for pattern in compiled)
    automaton = _Automaton(everything)
    regexes = [f"(?:{pattern.regex})" for pattern in compiled if pattern.regex]
    match = re.compile("|".join(regexes) or "(?!)", re.DOTALL).match

    def is_excluded(rel_path: str) -> bool:
        if leftmost and ("//" in rel_path or rel_path.startswith("/")):
            return automaton.matches(rel_path, everything)
        if match(rel_path) is not None:
            return True
        return bool(crossing) and automaton.matches(rel_path, crossing)

    return is_excluded

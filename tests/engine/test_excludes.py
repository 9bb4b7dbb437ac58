"""Exclude patterns: Home Assistant's decisions, in time linear in the path."""

from __future__ import annotations

import glob
from pathlib import PurePosixPath
import random
import re
import time

from hypothesis import given, settings, strategies as st
import pytest

from custom_components.backup_offload.engine.archive.excludes import build_matcher


def full_match(path: str, pattern: str) -> bool:
    """Home Assistant's decision: does the pattern exclude the path."""
    return PurePosixPath("data", path).full_match(f"data/{pattern}")


def translated(path: str, pattern: str) -> bool:
    """The expression full_match compiles, on the path as given (not normalised)."""
    regex = glob.translate(
        f"data/{pattern}", recursive=True, include_hidden=True, seps="/"
    )
    return re.match(regex, f"data/{path}") is not None


# Characters of names: dots for hidden names, and the ones that are special in
# patterns, which are plain characters in a name.
NAME_CHARS = "ab.-_é*?[]!"
NAMES = st.one_of(
    st.sampled_from(["a", "b", ".a", "__pycache__", "ab.b", "..", "*", "[a]"]),
    st.text(NAME_CHARS, min_size=1, max_size=8),
).filter(lambda name: name != ".")
PATHS = st.lists(NAMES, min_size=1, max_size=6).map("/".join)

# Pieces of a pattern's segment. The classes have ranges and negations, some
# around "/" ("+-0", "!a"): full_match lets those match a "/" of the path.
CLASSES = st.builds(
    lambda negate, body: f"[{negate}{body}]",
    st.sampled_from(["", "!"]),
    st.lists(
        st.sampled_from(["a", "b", ".", "é", "]", "!", "a-b", "+-0", "--0", "b-a"]),
        max_size=4,
    ).map("".join),
)
PIECES = st.one_of(
    st.sampled_from(["a", "b", ".", "ab", ".a", "é", "*", "?", "-", "[", "]", "!"]),
    CLASSES,
)
# A segment: "*", "**", a name, or pieces (as a list, to draw paths that fit).
SEGMENTS = st.one_of(
    st.just("**"),
    st.sampled_from(["*", "a", ".a", "__pycache__", ".."]),
    st.lists(PIECES, min_size=1, max_size=5).filter(lambda p: "".join(p) != "."),
)


def _text(segment: str | list[str]) -> str:
    return segment if isinstance(segment, str) else "".join(segment)


def _fitting_name(draw: st.DrawFn, pieces: list[str]) -> str:
    """Draw a name the pieces match, or nearly: a class may give a "/"."""
    name = ""
    for piece in pieces:
        if piece == "*":
            name += draw(st.text(NAME_CHARS, max_size=3))
        elif piece == "?":
            name += draw(st.sampled_from(NAME_CHARS))
        elif len(piece) > 1 and piece[0] == "[" and piece[-1] == "]":
            name += draw(st.sampled_from("/ab.é]!+,-0/"))
        else:
            name += piece
    return name


def _fitting_path(
    draw: st.DrawFn, segments: list[str | list[str]], *, clean: bool
) -> str:
    """Draw a path that the segments match, or nearly."""
    names: list[str] = []
    for segment in segments:
        if segment == "**":
            names.extend(draw(st.lists(NAMES, max_size=2)))
        elif segment == "*":
            names.append(draw(NAMES))
        elif isinstance(segment, str):
            names.append(segment)
        else:
            names.append(_fitting_name(draw, segment))
    if not clean:
        return "/".join(names)
    # A path as the config directory has them: no empty or "." names.
    path = "/".join(names).split("/")
    return "/".join(name for name in path if name not in ("", ".")) or "a"


@st.composite
def patterns_with_paths(
    draw: st.DrawFn, count: int = 1, *, clean: bool = True
) -> tuple[list[str], list[str]]:
    """Draw patterns, and paths: random ones and ones the patterns (nearly) fit.

    ``clean=False`` keeps the empty names ("//") a fitting path may have.
    """
    patterns = []
    paths = draw(st.lists(PATHS, max_size=3))
    for _ in range(count):
        segments = draw(st.lists(SEGMENTS, min_size=1, max_size=5))
        patterns.append("/".join(map(_text, segments)))
        for _ in range(draw(st.integers(1, 4))):
            paths.append(_fitting_path(draw, segments, clean=clean))
    return patterns, paths


PROPERTY = settings(max_examples=300, deadline=None, database=None)


@PROPERTY
@given(patterns_with_paths())
def test_decides_as_full_match(case: tuple[list[str], list[str]]) -> None:
    """One pattern excludes exactly what Home Assistant's full_match does."""
    [pattern], paths = case
    matcher = build_matcher([pattern])
    for path in paths:
        assert matcher(path) is full_match(path, pattern), (pattern, path)


@settings(PROPERTY, max_examples=200)
@given(st.integers(2, 6).flatmap(patterns_with_paths))
def test_several_patterns_are_any(case: tuple[list[str], list[str]]) -> None:
    """Several patterns exclude what any one of them excludes."""
    patterns, paths = case
    matcher = build_matcher(patterns)
    for path in paths:
        expected = any(full_match(path, pattern) for pattern in patterns)
        assert matcher(path) is expected, (patterns, path)


# Odd changes to a path: an empty name, a "." name, a "/" at either end.
ODD = st.sampled_from(
    [
        lambda path: path,
        lambda path: path.replace("/", "//", 1),
        lambda path: path.replace("/", "/./", 1),
        lambda path: f"/{path}",
        lambda path: f"{path}/",
        lambda path: path.replace("/", "//"),
    ]
)


@PROPERTY
@given(
    patterns_with_paths(clean=False),
    st.lists(ODD, min_size=1, max_size=3),
    st.text("ab./*?[]!-", max_size=10),
)
def test_decides_as_the_expression_on_any_string(
    case: tuple[list[str], list[str]], odd: list, raw_pattern: str
) -> None:
    """Odd paths and patterns ("//", "/./", a "/" at the end) decide as before.

    full_match normalises them; the matcher never did: it decided as
    full_match's expression on the string as given, and still does.
    """
    [pattern], paths = case
    strings = [change(path) for path in paths for change in odd]
    for tried in (pattern, raw_pattern, raw_pattern.replace("/", "//")):
        matcher = build_matcher([tried])
        for path in strings:
            assert matcher(path) is translated(path, tried), (tried, path)


@pytest.mark.parametrize(
    ("pattern", "path", "excluded"),
    [
        # As in Python's full_match, a negated class or a range around "/"
        # matches the "/" between two names.
        ("x[!a]y", "x/y", True),
        ("x[+-0]y", "x/y", True),
        ("*[!a]*.tmp", "dir/file.tmp", True),
        ("x[ab]y", "x/y", False),
        # A run of names between two "**", placed leftmost.
        ("**/a/**/b", "a/a/x/b", True),
        ("**/a/*/**/b", "a/b", False),
        ("**/a/**/b/**", "x/a/b/y", True),
        # An empty name: "***" (unlike "*") matches it, and the run between
        # the "**" must take it, not the leftmost name.
        ("**/***/**/a", "b//a", True),
        ("**/*/**/a", "b//a", False),
        ("a/**", "a/", True),
        ("**", "", True),
        # The last piece after a "*" ends the name, after the other pieces.
        ("a*a", "a", False),
        ("a*a", "aa", True),
        ("*ab*b", "xab", False),
        # "**" runs are one "**"; "*" alone is one non-empty name.
        ("**/**/**/b", "a/b", True),
        ("*/b", "/b", False),
        ("***/b", "/b", True),
    ],
)
def test_odd_cases(pattern: str, path: str, excluded: bool) -> None:
    """Cases read in more than one way decide as full_match's expression."""
    assert build_matcher([pattern])(path) is excluded
    assert translated(path, pattern) is excluded


# Patterns a backtracking search takes exponential (or high polynomial) time
# on: ``glob.translate``'s expression took 1.4 s for the first on a name of
# 40 "a", and more than a minute on 60.
PATHOLOGICAL = {
    "stars": "*a*a*a*a*a*a*a*a*b",
    "stars anywhere": "**/*a*a*a*a*a*a*a*a*b",
    "30 stars": "*a" * 30 + "*b",
    "**": "**/" * 30 + "a*a*a*a*b",
    "runs between **": "**/a*/" * 10 + "**/*b",
    "classes": "*".join(["[abcdefghijklmnopqrstuvwxyz0123456789._-]"] * 20) + "*b",
    "negated classes": "*[!b]" * 20 + "*b",
    "question marks": "*" + "?" * 30 + "*" + "?a" * 15 + "*b",
}


@pytest.fixture(scope="module")
def names() -> list[str]:
    """10,000 names of 40-200 characters: one long name, or a path of short ones."""
    rng = random.Random(3)  # noqa: S311 - test data
    names = []
    for index in range(10_000):
        alphabet = "a" if index % 2 else "aaaaaaaaa/"
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(40, 200)))
        text = re.sub("/+", "/", text).strip("/")
        names.append(text + ("b" if index % 4 < 2 else ""))
    return names


@pytest.mark.parametrize("pattern", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_pathological_patterns_are_fast(pattern: str, names: list[str]) -> None:
    """10,000 long names against a pathological pattern take well under 2 s."""
    matcher = build_matcher([pattern])
    started = time.perf_counter()
    excluded = sum(matcher(name) for name in names)
    elapsed = time.perf_counter() - started
    assert elapsed < 2, f"{elapsed:.2f} s"
    assert 0 < excluded < len(names)  # the names exercise both answers

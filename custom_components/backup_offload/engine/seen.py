"""Remember names in memory that stops growing: exact, then a Bloom filter."""

from __future__ import annotations

from typing import Final

_MASK64: Final = (1 << 64) - 1
_ODD: Final = 0x9E3779B97F4A7C15  # spreads a hash into a second one


class SeenSet:
    """The names seen so far, in memory that stops growing.

    Exact up to ``exact`` names; beyond, a Bloom filter of ``bits`` bits
    (``bits // 8`` bytes), which never forgets a name but may, rarely, take
    a new one for one it saw.
    """

    def __init__(self, *, exact: int, bits: int, hashes: int = 6) -> None:
        """Start empty."""
        self._exact = exact
        self._names: set[str] | None = set()
        self._bits = bytearray()
        self._mask = bits - 1  # bits is a power of two
        self._hashes = hashes

    def add(self, name: str) -> bool:
        """Add ``name``; return whether it was new."""
        names = self._names
        if names is not None:
            if name in names:
                return False
            names.add(name)
            if len(names) > self._exact:
                self._to_filter(names)
            return True
        return self._set_bits(name)

    def __contains__(self, name: object) -> bool:
        """Return whether ``name`` was seen (the filter may rarely say yes wrongly)."""
        if not isinstance(name, str):
            return False
        if self._names is not None:
            return name in self._names
        return all(
            self._bits[bit >> 3] & (1 << (bit & 7)) for bit in self._bit_indices(name)
        )

    def _bit_indices(self, name: str) -> list[int]:
        first = hash(name) & _MASK64
        step = ((first * _ODD) & _MASK64) >> 20 | 1
        return [(first + index * step) & self._mask for index in range(self._hashes)]

    def _to_filter(self, names: set[str]) -> None:
        self._names = None
        self._bits = bytearray((self._mask + 1) // 8)
        for name in names:
            self._set_bits(name)

    def _set_bits(self, name: str) -> bool:
        bits = self._bits
        new = False
        for bit in self._bit_indices(name):
            byte, flag = bit >> 3, 1 << (bit & 7)
            if not bits[byte] & flag:
                bits[byte] |= flag
                new = True
        return new

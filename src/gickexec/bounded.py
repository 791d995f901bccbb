"""Bounded handling of untrusted input, shared by every layer that reads it.

Scenario files, kernel command lines, result documents and memory images come from users
and from other tools; a hostile one must end in a clear error, never in a traceback,
a hang or unbounded memory.  Three hazards are common to all of them:

* integers with more digits than CPython converts (``sys.get_int_max_str_digits()``):
  parsing them, and *printing* them in an error message, raises ``ValueError``;
  :func:`parse_uint` refuses long digit strings up front and :func:`show` describes a
  value without converting it;
* ``str.isdigit()`` and the regex ``\\d`` accept non-ASCII digits (``²``, ``٣``) that the
  kernel's ``simple_strtoul()`` does not;
* special files (``/dev/zero``, a FIFO) read until memory runs out or forever:
  :func:`read_input` reads only regular files (or standard input) and checks the size
  before it reads.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from typing import Any

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_NUMBER_DIGITS",
    "InputError",
    "clip",
    "open_regular",
    "parse_uint",
    "read_input",
    "show",
]

#: Inputs (result documents; scenario files have a lower bound) larger than this are
#: refused before reading.
MAX_INPUT_BYTES = 64 << 20
#: A number with more digits than this is no value the model uses (2^64 has 20).
MAX_NUMBER_DIGITS = 24
_DECIMAL = re.compile(r"[0-9]+", re.ASCII)
_PREFIXED = re.compile(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+", re.ASCII)
_SHOWN_CHARS = 60
_SHOWN_NAME_CHARS = 400


class InputError(ValueError):
    """An input the model refuses; the message says which and why."""


def parse_uint(text: str, what: str, *, bases: bool = True) -> int:
    """``text`` as a non-negative integer: ASCII decimal, or with ``bases`` also
    ``0x``/``0o``/``0b`` forms; at most :data:`MAX_NUMBER_DIGITS` digits."""
    prefixed = bases and _PREFIXED.fullmatch(text) is not None
    if not prefixed and not _DECIMAL.fullmatch(text):
        raise InputError(f"{what} {clip(text)!r} is not a number")
    if len(text) > MAX_NUMBER_DIGITS:
        raise InputError(f"{what}: a number of {len(text)} characters is out of range")
    return int(text, 0 if prefixed else 10)


def show(value: Any) -> str:
    """``repr(value)`` for an error message, safe and short whatever the value is."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit integer"
    if isinstance(value, list | dict | tuple):
        return f"a {'table' if isinstance(value, dict) else 'array'} of {len(value)} items"
    return clip(repr(value))


def clip(text: str, limit: int = _SHOWN_CHARS) -> str:
    """``text`` shortened to a length an error message can carry."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _name(name: str | os.PathLike[str]) -> str:
    # a path is worth more of the message than a value, but not thousands of characters
    return clip(str(name), _SHOWN_NAME_CHARS)


def open_regular(name: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    """A read-only descriptor of regular file ``name`` and its ``fstat``.

    The open is non-blocking and the check is made on the opened descriptor, so a FIFO
    (also one swapped in after a check by name) can neither block nor be read.
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise InputError(f"{_name(name)}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise InputError(f"{_name(name)}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InputError(f"{_name(name)}: not a regular file")
    return fd, st


def read_input(name: str, *, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of file ``name`` (``-``: standard input), at most ``limit`` of them.

    Only regular files are read (:func:`open_regular`): a FIFO would block,
    ``/dev/zero`` never ends.
    """
    if name == "-":
        data = sys.stdin.buffer.read(limit + 1)
        if len(data) > limit:
            raise InputError(f"standard input: more than {limit} bytes")
        return data
    fd, st = open_regular(name)
    try:
        if st.st_size > limit:
            raise InputError(f"{_name(name)}: {st.st_size} bytes (more than {limit})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise InputError(f"{_name(name)}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # grew while we read it
        raise InputError(f"{_name(name)}: more than {limit} bytes")
    return data

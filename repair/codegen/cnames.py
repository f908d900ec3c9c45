"""Untrusted names (model nodes, tensors, classes) into C, safely.

A name taken from a model is untrusted input: quotes, backslashes, newlines, ``*/``,
trigraphs such as ``??/``, non-ASCII and C keywords must never break or inject code.
Such text reaches generated C only as an escaped string literal (``c_string``) or as a
sanitised identifier (``c_identifier``); it is never written into a comment.
"""

from __future__ import annotations

import re

from ..errors import DataError

C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern float for goto if
inline int long register restrict return short signed sizeof static struct switch typedef union unsigned void
volatile while _Bool _Complex _Imaginary _Alignas _Alignof _Atomic _Generic _Noreturn _Static_assert
_Thread_local""".split())
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_IDENT = 48


def check_prefix(prefix: str) -> str:
    """A user-chosen symbol prefix must already be a plain C identifier (we do not guess)."""
    # a leading underscore would make reserved identifiers (_X..., __...) of the macros and symbols built on it
    if not _IDENT.match(prefix or "") or prefix in C_KEYWORDS or len(prefix) > 24 or not prefix[0].isalpha():
        raise DataError(f"--prefix {prefix!r} is not usable: give a C identifier of at most 24 letters, digits "
                        "and underscores, starting with a letter, not a C keyword")
    return prefix


def c_identifier(name: str, taken: set[str] | None = None) -> str:
    """A valid, unique C identifier derived from ``name``: other characters become ``_``.

    >>> c_identifier('conv/1:0')
    'conv_1_0'
    >>> c_identifier('int')
    'int_'
    >>> c_identifier('9lives')
    'n9lives'
    """
    s = re.sub(r"[^A-Za-z0-9_]", "_", name.encode("ascii", "replace").decode("ascii"))[:MAX_IDENT] or "unnamed"
    if s[0].isdigit():
        s = "n" + s
    if s in C_KEYWORDS or s.startswith("__"):
        s = s.lstrip("_") + "_" if s.startswith("__") else s + "_"
    if taken is not None:
        base, k = s, 2
        while s in taken:
            s = f"{base}_{k}"
            k += 1
        taken.add(s)
    return s


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,:=+")


def c_string(text: str) -> str:
    r"""A C string literal for ``text``: letters, digits, space and ``_-.,:=+`` kept, every other byte octal.

    So no quote, backslash, comment marker, trigraph (``??/``), preprocessor ``#`` or
    non-ASCII byte from the name appears in the source as itself.

    >>> c_string('conv 1.weight')
    '"conv 1.weight"'
    >>> c_string('a"b*/')
    '"a\\042b\\052\\057"'
    """
    return '"' + "".join(chr(b) if chr(b) in _SAFE else f"\\{b:03o}" for b in text.encode("utf-8")) + '"'

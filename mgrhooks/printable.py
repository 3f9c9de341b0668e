"""Text made safe to print on one line of a log or a terminal. Pure.

Values that reach the panel log, stderr and ``--out text`` come from callers and
handlers: a function name, a user name, a parameter value, a handler's stderr. Printed
as they are, a newline in one starts a line that looks like the log's own, and an ANSI
escape sequence recolours or rewrites the operator's terminal. :func:`printable` shows
such characters as escapes instead, the way Apache's and nginx's logs do (our choice of
form, after Python's string escapes):

* ``\\n``, ``\\r`` and ``\\t``;
* ``\\xNN`` for the other control characters below 0x80 (``\\x1b`` for ESC, ``\\x7f`` DEL)
  and for a byte that was not UTF-8 (a lone surrogate ``U+DC80``-``U+DCFF``, as Python's
  ``surrogateescape`` carries it: ``\\xff``);
* ``\\uNNNN`` for the C1 controls ``U+0080``-``U+009F`` (``U+0085``, NEL, ends a line for
  some readers), the line and paragraph separators ``U+2028``/``U+2029``, the bidirectional
  controls that reorder what a terminal shows (``U+061C``, ``U+200E``/``U+200F``,
  ``U+202A``-``U+202E``, ``U+2066``-``U+2069``: "Trojan Source") and other surrogates.

Every other character, Cyrillic or emoji, is kept as it is, the backslash too: the
escapes are for reading, not for parsing back (a value holding a backslash and an ``n``
looks like an escaped newline, but stays on its line), and messages that already quote a
value with ``repr()`` are not escaped twice (our choice).
"""

from __future__ import annotations

import re

#: the characters :func:`printable` escapes (see the module docstring), a pattern compiled
#: at the first text that is not printable ASCII (~1 ms: most calls never need it)
UNSAFE = "[\\x00-\\x1f\\x7f-\\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every character of :data:`UNSAFE` escaped: the result holds no line
    break and no control character (a newline becomes the two characters ``\\n``, an
    ESC the four ``\\x1b``).

    Printable ASCII, the common case, is told by ``str`` methods (of the ASCII characters,
    :data:`UNSAFE` holds exactly those ``isprintable`` refuses); other text costs one
    regular-expression scan when there is nothing to escape.
    """
    if text.isascii() and text.isprintable():
        return text
    unsafe = re.compile(UNSAFE)  # (re keeps the compiled pattern)
    if unsafe.search(text) is None:
        return text
    return unsafe.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, carried by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"

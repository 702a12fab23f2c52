"""JSON as clients send it, read without losing a value or being led astray by its shape (SPEC §7).

- Numbers stay exact: orjson turns an integer beyond 64 bits into a float and refuses a number beyond the double
  range; such a document is read again by the standard library, integers exact and fractions as `Decimal`, so that
  validation can refuse them (`invalid_number`) instead of storing a changed value.
- Nesting is bounded: a document nested deeper than `MAX_DEPTH` is refused before a parser builds it (ijson's
  cost grows with the square of the depth; a 128 MiB body of `[` would take the process down).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from itertools import accumulate
from typing import IO, Any

import orjson

# The whole document, envelope included. Metadata may nest 16 levels (core.records.schemas); a record sits at level
# 3 of a batch envelope, so 64 leaves room for every legitimate payload and its validation errors.
MAX_DEPTH = 64

# To find a number orjson would change — 19 digits or more (an integer near or past 64 bits), or an exponent of 3
# digits — at C speed: digits become 0, exponent marks e, signs +, the rest a space; then plain substring search.
_NUMBER_SHAPE = bytes.maketrans(b"0123456789eE+-", b"0000000000ee++").translate(
    bytes.maketrans(bytes(b for b in range(256) if b not in b"0123456789eE+-"), b" " * (256 - 14))
)
_SUSPECT_SHAPES = (b"0" * 19, b"e000", b"e+000")


def _suspect_number(data: bytes) -> bool:
    shape = data.translate(_NUMBER_SHAPE)
    return any(suspect in shape for suspect in _SUSPECT_SHAPES)


_NOT_MARKS = bytes(b for b in range(256) if b not in b'"[]{}')
_DEPTH_STEP = [0] * 256
for _byte in b"[{":
    _DEPTH_STEP[_byte] = 1
for _byte in b"]}":
    _DEPTH_STEP[_byte] = -1


class JsonSyntaxError(ValueError):
    """A document that is not JSON (or nests too deep), with where the trouble is."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def describe(self) -> str:
        where = f" at line {self.line} column {self.column}" if self.line is not None else ""
        return f"{self.message}{where}"


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _exact(data: bytes) -> Any:
    try:
        return json.loads(data, parse_float=Decimal, parse_constant=_no_constants)
    except RecursionError:
        raise JsonSyntaxError(f"the document nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise JsonSyntaxError(str(exc)) from None


def loads(data: bytes) -> Any:
    """Parse one JSON document, numbers exact (see the module's docstring); `JsonSyntaxError` if it is not JSON."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if not exc.msg.startswith("number is infinity"):
            raise JsonSyntaxError(exc.msg, exc.lineno, exc.colno) from None
        return _exact(data)
    if _suspect_number(data):
        return _exact(data)
    return value


def to_json(value: Any) -> bytes:
    """Serialize a parsed value; `Decimal`s become floats. Raises `TypeError` for a value JSON cannot carry
    exactly (an integer beyond 64 bits, a number beyond the double range, nesting past orjson's 255 levels)."""
    return orjson.dumps(value, default=_decimal_as_float)


def _decimal_as_float(value: Any) -> float:
    if isinstance(value, Decimal):
        number = float(value)
        if number - number == 0:  # finite
            return number
        raise TypeError(f"the number {value} is beyond the range of a double")
    raise TypeError(f"{type(value).__name__} is not JSON")


class ValueTooLarge(Exception):
    """A value nested in the document (a batch's record) runs past the bytes allowed for one."""


class DepthGuard:
    """A binary file whose reads fail with `JsonSyntaxError` once the JSON read so far nests past `limit`.

    Each buffer is checked before the parser sees it, at C speed: escapes and strings are cut out (a bracket in a
    string does not nest), and the running depth is followed over what is left. It also knows where the buffer
    being parsed starts, for error positions.

    `element_depth` and `element_bytes`: reads also fail, with `ValueTooLarge`, once the document has stayed nested
    deeper than `element_depth` for more than `element_bytes` bytes (one value of a batch's list, which a parser
    would otherwise build whole in memory before anything could look at its size). Counted by buffers: a value
    is taken to start with the buffer it starts in.
    """

    def __init__(
        self, raw: IO[bytes], limit: int = MAX_DEPTH, *, element_depth: int | None = None, element_bytes: int = 0
    ) -> None:
        self._raw = raw
        self._limit = limit
        self._element_depth = element_depth
        self._element_limit = element_bytes
        self._element_bytes = 0  # read since the depth was last at most `element_depth`
        self._brackets = b""  # the brackets outside strings of the last buffer checked, in order
        self._depth = 0
        self._in_string = False
        self._carry = b""  # a run of backslashes at the end of the last buffer: its escape continues here
        self._surrogate_tail = b""
        self.offset = 0  # where the last buffer returned starts
        self._next = 0  # how many bytes were read (`bytes_read`)

    @property
    def bytes_read(self) -> int:
        return self._next

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.offset = self._next
        self._next += len(data)
        self._check(data)
        return data

    def _check(self, data: bytes) -> None:
        start = self._depth
        self._check_depth(data)
        if self._element_depth is not None:
            self._count_element(start, data)

    def _count_element(self, start: int, data: bytes) -> None:
        """Follow how long the document has stayed deeper than `element_depth`, this buffer read."""
        depth = self._element_depth
        assert depth is not None
        if start <= depth or self._dipped_to(start, depth):
            self._element_bytes = len(data) if self._depth > depth else 0
        else:
            self._element_bytes += len(data)
        if self._element_bytes > self._element_limit:
            raise ValueTooLarge(f"a value nested {depth} levels deep is larger than {self._element_limit} bytes")

    def _dipped_to(self, start: int, depth: int) -> bool:
        """Whether the brackets of the last buffer checked took the depth from `start` down to `depth` or less."""
        brackets = self._brackets
        while True:  # matched pairs cancel out; what is left is the closers, then the openers
            shorter = brackets.replace(b"{}", b"").replace(b"[]", b"")
            if len(shorter) == len(brackets):
                break
            brackets = shorter
        closers = len(brackets) - len(brackets.lstrip(b"}]"))
        return start - closers <= depth

    def _check_depth(self, data: bytes) -> None:
        self._brackets = b""
        text = self._carry + data
        body = text.rstrip(b"\\") if data else text
        self._carry = text[len(body) :]
        if b"\\" in body:
            body = body.replace(b"\\\\", b"")
            self._check_surrogates(body, final=not data)
            body = body.replace(b'\\"', b"")
        elif not data and self._surrogate_tail:
            self._check_surrogates(b"", final=True)
        # Only quotes and brackets matter now. A string holding no bracket leaves two quotes side by side: cut
        # out at once, with the quotes of two strings meeting (nothing but brackets can lie between them, and there
        # were none); what is left alternates between outside and inside strings as before.
        marks = body.translate(None, _NOT_MARKS)
        if self._in_string:
            end = marks.find(b'"')
            if end < 0:
                return
            marks, self._in_string = marks[end + 1 :], False
        brackets = marks.replace(b'""', b"")
        if b'"' in brackets:
            pieces = brackets.split(b'"')
            self._in_string = len(pieces) % 2 == 0
            brackets = b"".join(pieces[0::2])
        if not brackets:
            return
        self._brackets = brackets
        if self._depth + len(brackets) > self._limit:
            peak = max(accumulate(map(_DEPTH_STEP.__getitem__, brackets), initial=self._depth))
            if peak > self._limit:
                raise JsonSyntaxError(f"the document nests deeper than {self._limit} levels", *self.position())
        self._depth += 2 * (brackets.count(b"{") + brackets.count(b"[")) - len(brackets)

    def _check_surrogates(self, body: bytes, *, final: bool) -> None:
        # yajl turns a lone UTF-16 surrogate escape into "?": refuse it rather than store a changed text.
        seen = len(self._surrogate_tail)  # judged in the last buffer, carried as context for this one
        text = self._surrogate_tail + body
        for match in _LONE_SURROGATE.finditer(text):
            high = match.group(1) is not None
            if (high and match.end() + 6 <= seen) or (not high and match.start() < seen):
                continue
            if high and not final and match.end() + 6 > len(text):
                continue  # a high surrogate whose low half may start the next buffer
            raise JsonSyntaxError("a string holds a lone UTF-16 surrogate escape", *self.position())
        self._surrogate_tail = text[-12:]

    def position(self) -> tuple[int, int]:
        """Line and column (1-based) where the last buffer read starts."""
        return self._line_column(self.offset)

    def _line_column(self, offset: int) -> tuple[int, int]:
        here = self._raw.tell()
        self._raw.seek(0)
        line, last_newline, done = 1, -1, 0
        while done < offset:
            block = self._raw.read(min(1 << 20, offset - done))
            if not block:
                break
            count = block.count(b"\n")
            if count:
                line += count
                last_newline = done + block.rindex(b"\n")
            done += len(block)
        self._raw.seek(here)
        return line, offset - last_newline

    def locate(self, context: str, caret: int) -> tuple[int, int]:
        """Line and column of a parse error, found from the text yajl shows around it (`caret`: the error's index
        in `context`; its messages carry no offset); the start of the last buffer if that text is not found."""
        shown = context.lstrip(" ")
        caret -= len(context) - len(shown)
        shown = shown.rstrip(" ")
        if caret < 0 or not shown:
            return self.position()
        here = self._raw.tell()
        start = max(0, self.offset - caret)
        self._raw.seek(start)
        window = self._raw.read(self._next - start).translate(_WHITESPACE_AS_SPACE)
        self._raw.seek(here)
        found = window.find(shown.encode("utf-8", "replace"))
        if found < 0:
            return self.position()
        return self._line_column(start + found + caret)


# After escaped backslashes are removed: a high surrogate escape not followed by a low one, or a low one alone.
_LONE_SURROGATE = re.compile(
    rb"(\\u[dD][89abAB][0-9a-fA-F]{2})(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_WHITESPACE_AS_SPACE = bytes.maketrans(b"\n\r\t", b"   ")

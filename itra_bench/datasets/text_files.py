"""Reading users' text and CSV files with one clear error for each way they can be wrong.

A byte that is not valid in the file's encoding is reported with its line, a UTF-8 byte-order
mark is accepted (editors on Windows write one), and a CSV whose quoting is broken is reported
at the line where the broken record starts, instead of a ``UnicodeDecodeError`` or a
``_csv.Error`` from deep inside the reader.
"""

from __future__ import annotations

import codecs
import csv
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from itra_bench.errors import UserError

#: How to convert a file to UTF-8, for the messages.
REENCODE_HINT = ("save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`, "
                 "naming the encoding it is in)")


def _is_utf8(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    except LookupError:
        return False


def check_encoding(encoding: object, where: str) -> str:
    """``encoding`` if Python knows a codec of that name; else a UserError naming ``where``
    (e.g. ``"tasks/my.yaml: key 'encoding'"``)."""
    if not isinstance(encoding, str):
        raise UserError(f"{where} must be a string naming an encoding, e.g. utf-8 or latin-1")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UserError(f"{where}: unknown encoding {encoding!r}; use a name Python knows, "
                        "e.g. utf-8, latin-1 or cp1252") from None
    return encoding


def _bom_note(raw: bytes) -> str:
    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return " (it starts with a UTF-32 byte-order mark)"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return " (it starts with a UTF-16 byte-order mark)"
    return ""


def _decode_error(path: Path, raw: bytes, start: int, encoding: str, fix: str,
                  first_line: int = 1) -> UserError:
    """The error for a byte at offset ``start`` of ``raw`` (text from line ``first_line`` on)
    that ``encoding`` cannot decode."""
    line = raw.count(b"\n", 0, start) + first_line
    column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
    bad = raw[start:start + 1].hex()
    return UserError(f"{path}, line {line}: byte 0x{bad} (column {column}) is not valid "
                     f"{encoding}{_bom_note(raw)}; {fix}")


def read_text(path: str | Path, encoding: str = "utf-8", fix: str = REENCODE_HINT) -> str:
    """The text of ``path`` in ``encoding`` (for UTF-8, a leading byte-order mark is dropped).

    A file that cannot be read or decoded is a UserError naming it (and the line of the first
    bad byte); ``fix`` says what to do about a bad byte.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    encoding = check_encoding(encoding, f"{path}: encoding")
    if _is_utf8(encoding):
        raw = raw.removeprefix(codecs.BOM_UTF8)
        encoding = "utf-8"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, raw, exc.start, encoding, fix) from None


def read_json(path: str | Path, what: str) -> Any:
    """The JSON document in ``path`` (UTF-8, a byte-order mark allowed); a file that is not
    JSON is a UserError naming it, the line and column, and ``what`` it should hold."""
    path = Path(path)
    text = read_text(path, fix=f"{what} is UTF-8 JSON: {REENCODE_HINT}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}, line {exc.lineno}, column {exc.colno}: not valid JSON "
                        f"({exc.msg}); expected {what}") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply; expected {what}") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise UserError(f"{path}: not valid JSON ({exc}); expected {what}") from None


def iter_lines(path: str | Path, fix: str = REENCODE_HINT) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` for each line of a UTF-8 file, read one line at a time
    (a byte-order mark on the first line is dropped; line ends are kept). A bad byte is a
    UserError naming the file and line; ``fix`` says what to do about it."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    with f:
        for number, raw in enumerate(f, start=1):
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _decode_error(path, raw, exc.start, "utf-8", fix, first_line=number
                                    ) from None


def _first_bad_byte(path: Path, encoding: str, fix: str) -> UserError:
    """The decode error of a file that failed while streamed: found again line by line, so
    the message names the line (the stream's own error only knows a buffer offset)."""
    with open(path, "rb") as f:
        raw = f.read()
    if _is_utf8(encoding):
        raw = raw.removeprefix(codecs.BOM_UTF8)
        encoding = "utf-8"
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        return _decode_error(path, raw, exc.start, encoding, fix)
    return UserError(f"{path}: not valid {encoding}; {fix}")  # changed while being read


def _csv_problem(message: str) -> str:
    if "field larger than field limit" in message:
        return (f"a field runs past {csv.field_size_limit():,} characters: most likely a "
                "double quote (\") on this line opens a quoted field that is never closed. "
                "Close the quote, or write a quote inside a quoted field as two (\"\")")
    if "unexpected end of data" in message:
        return ("a quoted field that starts on this line is never closed (the file ends "
                "inside it). Close the double quote (\"), or write a quote inside a quoted "
                "field as two (\"\")")
    if "expected after" in message:
        return ("text follows the closing double quote of a quoted field. Quote the whole "
                "field and write each quote inside it as two (\"\"), or do not start an "
                "unquoted field with a quote")
    return f"malformed CSV ({message})"


def csv_records(path: str | Path, separator: str, encoding: str = "utf-8",
                fix: str = REENCODE_HINT) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, fields)`` for each record of a CSV file, header included.

    The line number is the record's first line (a quoted field may span lines). Quoting
    follows the csv module's default dialect in strict mode, so a stray quote is an error
    at its line instead of silently swallowing the lines after it into one field. Bad bytes
    and bad quoting are UserErrors naming the file and line; ``fix`` says what to do about a
    bad byte.
    """
    path = Path(path)
    if not isinstance(separator, str) or len(separator) != 1 or separator in "\"\r\n":
        raise UserError(f"{path}: the separator must be one character other than a quote or "
                        f"a line break, got {separator!r}")
    encoding = check_encoding(encoding, f"{path}: encoding")
    stream_encoding = "utf-8-sig" if _is_utf8(encoding) else encoding
    try:
        f = open(path, newline="", encoding=stream_encoding)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    with f:
        reader = csv.reader(f, delimiter=separator, strict=True)
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise _first_bad_byte(path, encoding, fix) from None
            except csv.Error as exc:
                raise UserError(f"{path}, line {start}: {_csv_problem(str(exc))}") from None
            yield start, row


def check_no_nul(text: str, where: str) -> str:
    """``text`` (a file name read from a data file), refused if it holds a NUL character,
    which no file system accepts in a name; ``where`` names the file and line or field."""
    if "\0" in text:
        raise UserError(f"{where}: the file name {text!r} contains a NUL character; fix the "
                        "entry (the file may be damaged)")
    return text


@functools.cache
def _unique_keys(base: type) -> type:
    """``base`` (a PyYAML safe loader) refusing a mapping that gives one key twice: the
    loader of every YAML file the project reads (see :func:`load_yaml`)."""
    import yaml

    class UniqueKeyLoader(base):  # type: ignore[misc, valid-type]
        """A safe loader whose mappings refuse a repeated key (naming the key and both
        lines) instead of keeping the last value."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, Any] = {}
                for key_node, _ in node.value:
                    # A merge key (`<<: *anchor`) brings keys that the mapping may override.
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:
                        continue  # an unhashable key: the base constructor says so
                    if first is not key_node:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"found the key {key!r} a second time on line "
                            f"{key_node.start_mark.line + 1} (first on line "
                            f"{first.start_mark.line + 1}); keep only one of them",
                            key_node.start_mark)
            return super().construct_mapping(node, deep)

    UniqueKeyLoader.__name__ = UniqueKeyLoader.__qualname__ = f"Unique{base.__name__}"
    return UniqueKeyLoader


def _fast_loader() -> type | None:
    """libyaml's safe loader refusing a repeated key, or None where PyYAML was built
    without libyaml."""
    import yaml

    base = getattr(yaml, "CSafeLoader", None)
    return None if base is None else _unique_keys(base)


def load_yaml(text: str, shipped: bool = False) -> Any:
    """``yaml.safe_load(text)`` refusing a repeated key, raising what it raises (a repeated
    key raises :class:`yaml.constructor.ConstructorError` naming the key and its lines).

    ``shipped``: the text is one of itra-bench's own task files or cards, which libyaml
    parses ten times faster into the same documents (tests/test_shipped_yaml.py compares
    every one). A user's file is always read by the pure-Python parser, because libyaml
    accepts some text it refuses (a tab in a key, '?' inside a flow scalar), and any error
    comes from the pure-Python parser too: its messages show the offending line.
    """
    import yaml

    loader = _fast_loader() if shipped else None
    if loader is not None:
        try:
            return yaml.load(text, Loader=loader)  # noqa: S506 (a safe loader)
        except Exception:
            pass  # parsed again below, for the pure-Python parser's own message
    return yaml.load(text, Loader=_unique_keys(yaml.SafeLoader))  # noqa: S506 (safe)

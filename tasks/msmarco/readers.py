"""Streaming readers for MS MARCO passage-ranking files.

The formats (as in ``collectionandqueries.tar.gz`` of microsoft/MSMARCO-Passage-Ranking):

- ``collection.tsv``: ``pid<TAB>passage`` per line, 8.8M lines; the passage is the rest of the
  line after the first tab (it may itself hold tabs).
- ``queries.*.tsv``: ``qid<TAB>query`` per line.
- ``qrels.*.tsv``: TREC style ``qid 0 pid relevance``, separated by tabs or spaces.

Ids are non-negative integers. Blank lines are skipped. Files are read as UTF-8 one line at a
time, so a collection is never held in memory; every malformed line is a
:class:`~itra_bench.errors.UserError` naming the file, the line number and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from itra_bench.errors import MissingDataError, UserError

LAYOUT = ("MS MARCO passage ranking files (collectionandqueries.tar.gz): "
          "collection.tsv (pid<TAB>passage, one per line), queries.dev.small.tsv "
          "(qid<TAB>query), qrels.dev.small.tsv (TREC qrels: qid 0 pid relevance)")


def _open(path: Path, what: str):  # -> BinaryIO
    if not path.is_file():
        raise MissingDataError(f"MS MARCO {what} not found: {path}. Expected {LAYOUT}.")
    return path.open("rb")


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    if lineno == 1:
        raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}:{lineno}: not valid UTF-8 ({exc}); MS MARCO files are UTF-8: "
                        "re-encode the file (e.g. iconv -t UTF-8)") from exc


def _parse_id(text: str, path: Path, lineno: int, what: str, fix: str) -> int:
    text = text.strip()
    # Ids are stored as int64 (the passage store, faiss).
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) >= 2**63:
        raise UserError(f"{path}:{lineno}: {what} {text[:30]!r} is not a non-negative integer "
                        f"below 2**63; {fix}")
    return int(text)


def iter_tsv_pairs(path: str | Path, what: str = "collection",
                   id_name: str = "pid") -> Iterator[tuple[int, int, str]]:
    """Yield ``(line_number, id, text)`` for each non-blank ``id<TAB>text`` line of ``path``.

    ``what`` and ``id_name`` only word the errors (``collection``/``pid``,
    ``queries``/``qid``). The text may be empty or hold further tabs.
    """
    path = Path(path)
    layout = f"each line must be '{id_name}<TAB>text'"
    with _open(path, what) as f:
        for lineno, raw in enumerate(f, start=1):
            line = _decode(raw, path, lineno)
            if not line.strip():
                continue
            key, sep, text = line.partition("\t")
            if not sep:
                raise UserError(f"{path}:{lineno}: no tab in line {line[:60]!r}; {layout} "
                                f"(MS MARCO {what} format)")
            yield lineno, _parse_id(key, path, lineno, id_name, layout), text


def iter_collection(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(pid, passage)`` from an MS MARCO ``collection.tsv``, one line at a time."""
    for _, pid, text in iter_tsv_pairs(path, "collection", "pid"):
        yield pid, text


def read_queries(path: str | Path) -> dict[int, str]:
    """``{qid: query}`` from an MS MARCO queries file; a repeated qid is an error."""
    path = Path(path)
    queries: dict[int, str] = {}
    first_line: dict[int, int] = {}
    for lineno, qid, text in iter_tsv_pairs(path, "queries", "qid"):
        if qid in queries:
            raise UserError(f"{path}:{lineno}: qid {qid} already appeared on line "
                            f"{first_line[qid]}; each query must appear once")
        queries[qid] = text
        first_line[qid] = lineno
    return queries


def read_qrels(path: str | Path) -> dict[int, dict[int, int]]:
    """``{qid: {pid: relevance}}`` from TREC-style qrels (``qid iteration pid relevance``).

    Columns may be separated by tabs or spaces; the iteration column is ignored. A pid judged
    twice for one query keeps the last judgement (as trec_eval does).
    """
    path = Path(path)
    layout = "each line must be 'qid 0 pid relevance' (TREC qrels, tab or space separated)"
    qrels: dict[int, dict[int, int]] = {}
    with _open(path, "qrels") as f:
        for lineno, raw in enumerate(f, start=1):
            fields = _decode(raw, path, lineno).split()
            if not fields:
                continue
            if len(fields) != 4:
                raise UserError(f"{path}:{lineno}: {len(fields)} columns in "
                                f"{' '.join(fields)[:60]!r}; {layout}")
            qid = _parse_id(fields[0], path, lineno, "qid", layout)
            pid = _parse_id(fields[2], path, lineno, "pid", layout)
            try:
                rel = int(fields[3])
            except ValueError:
                raise UserError(f"{path}:{lineno}: relevance {fields[3]!r} is not an integer; "
                                f"{layout}") from None
            qrels.setdefault(qid, {})[pid] = rel
    if not qrels:
        raise UserError(f"{path}: no judgements found; {layout}")
    return qrels


def scan_collection(path: str | Path, pids_out: str | Path) -> int:
    """Check every line of a collection and write its pids, in order, to ``pids_out`` (raw
    int64); returns the number of passages.

    Memory stays flat: pids go to disk as they are read. Repeated pids are an error (found
    without sorting when, as in MS MARCO, they increase down the file).
    """
    import numpy as np

    path, pids_out = Path(path), Path(pids_out)
    buffer: list[int] = []
    count, last, increasing = 0, -1, True
    with pids_out.open("wb") as out:
        for _, pid, _ in iter_tsv_pairs(path, "collection", "pid"):
            increasing = increasing and pid > last
            last = pid
            buffer.append(pid)
            if len(buffer) >= 1 << 16:
                out.write(np.asarray(buffer, dtype=np.int64).tobytes())
                count += len(buffer)
                buffer.clear()
        out.write(np.asarray(buffer, dtype=np.int64).tobytes())
        count += len(buffer)
    if not increasing and count:
        pids = np.fromfile(pids_out, dtype=np.int64)
        values, counts = np.unique(pids, return_counts=True)
        if (counts > 1).any():
            dup = int(values[counts > 1][0])
            lines = [i + 1 for i in np.flatnonzero(pids == dup)[:3].tolist()]
            raise UserError(f"{path}: pid {dup} appears {int(counts[values == dup][0])} times "
                            f"(records {lines}); each passage id must be unique")
    return count

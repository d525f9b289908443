"""Raw-event ingestion with counted cleaning: raw CSV/Parquet events -> the dataset format.

:func:`clean_events` turns a raw events table into :data:`transact.schema.EVENT_SCHEMA`.
Every step either fixes rows and counts them in a :class:`CleaningReport`, or refuses the input
with a :class:`CleaningError` that says what is wrong and how to fix it. Nothing is dropped
silently. The steps, in order:

1. **Read**: a ``pa.Table``, a pandas DataFrame, or a path to a ``.csv`` / ``.csv.gz`` /
   ``.tsv`` / ``.parquet`` file (or a directory of them). Malformed or truncated files raise an
   error naming the file. Required columns: ``event_id``, ``user_id``, ``item_id``,
   ``action_type`` and ``timestamp`` (``timestamp_ms`` is accepted as the same column);
   optional: ``surface``, ``request_id``. Other columns are ignored and listed in the report.
2. **Ids**: ``event_id``, ``user_id``, ``item_id`` (and ``request_id``) must be integers.
   Rows with a null in a required column, a non-positive ``user_id`` / ``item_id`` (0 is the
   sequence padding id), a negative ``event_id`` or a negative ``request_id`` are invalid:
   an error by default, dropped and counted with ``on_invalid="drop"``.
3. **Action types**: names (``save``, ``repin``, ``impression``, ...; see
   :data:`transact.schema.ACTION_ALIASES`, case-insensitive) or codes 1-4. Unknown values are
   an error listing them by default; ``on_unknown="drop"`` drops and counts them.
4. **Timestamps**: each value is classified on its own. Values in
   ``[MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS]`` (2000-01-01 to 2100-01-01) are milliseconds; values
   in the same window divided by 1000 are seconds and are converted to milliseconds (counted;
   fractional seconds are rounded to the nearest ms). ISO 8601 strings and Arrow timestamp
   columns are accepted too (naive datetimes are read as UTC). Anything else (microseconds,
   zero, negative, NaN) is rejected with an error that shows examples. The window is a
   parameter (``min_timestamp_ms`` / ``max_timestamp_ms``) for sources older than 2000.
5. **Surface**: a missing column or null values become ``"unknown"`` (counted).
6. **Duplicate event ids**: exact duplicates (every column equal after steps 2-5) are dropped
   and counted; the same ``event_id`` with different content is an error listing the ids.
7. **Request ids**: when the column is missing, or for rows where it is null, the request id
   is derived (counted): the events of one user on one surface form one request until a gap of
   more than ``request_gap_ms`` (default 30 minutes) between consecutive events; derived ids
   are numbered from ``max(given request_id) + 1`` upwards, so they never collide with given
   ones.
8. **Order**: rows are sorted by ``(user_id, timestamp_ms, event_id)``.

Users with few events are fine: the report counts users, users with a single event and users
with no engagement at all (only skips: their realtime sequence is always empty).

:func:`import_events` writes a full dataset directory (``meta.json``, ``items.parquet``,
``events/part-*.parquet``) from raw events plus an optional items file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from transact.data.dataset import DatasetError, DatasetMeta, EventPartWriter
from transact.schema import (
    ACTION_ALIASES,
    EVENT_SCHEMA,
    HOUR_MS,
    ITEM_EMB_DIM,
    ITEM_SCHEMA,
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    SEQUENCE_ACTIONS,
    ActionType,
    known_action_names,
)

REQUIRED_COLUMNS: tuple[str, ...] = ("event_id", "user_id", "item_id", "action_type", "timestamp")
OPTIONAL_COLUMNS: tuple[str, ...] = ("surface", "request_id")
#: Accepted alternative spellings of input columns.
COLUMN_ALIASES: dict[str, str] = {"timestamp_ms": "timestamp"}
DEFAULT_REQUEST_GAP_MS = HOUR_MS // 2
UNKNOWN_SURFACE = "unknown"
_MAX_EXAMPLES = 5

OnUnknown = Literal["error", "drop"]


class CleaningError(DatasetError):
    """Raw events (or items) that cannot be cleaned without the user's decision."""


@dataclass
class CleaningReport:
    """What :func:`clean_events` changed, step by step (row counts unless named ``users``)."""

    rows_in: int = 0
    rows_out: int = 0
    invalid_rows_dropped: int = 0
    unknown_action_dropped: int = 0
    timestamps_seconds_converted: int = 0
    surface_filled: int = 0
    exact_duplicates_dropped: int = 0
    request_id_derived: int = 0
    users: int = 0
    users_single_event: int = 0
    users_without_engagement: int = 0
    #: unknown action values that were dropped -> rows
    unknown_action_values: dict[str, int] = field(default_factory=dict)
    #: input columns that are not part of the event schema and were not used
    ignored_columns: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """The integer counts, by step name (what :attr:`DatasetMeta.cleaning` holds)."""
        return {f.name: int(getattr(self, f.name)) for f in fields(self)
                if isinstance(getattr(self, f.name), int)}

    def merge(self, other: CleaningReport) -> CleaningReport:
        """Sum of two reports (e.g. of two raw files)."""
        merged = CleaningReport(**{k: a + b for (k, a), b in
                                   zip(self.counts().items(), other.counts().values(),
                                       strict=True)})
        merged.unknown_action_values = dict(self.unknown_action_values)
        for key, count in other.unknown_action_values.items():
            merged.unknown_action_values[key] = merged.unknown_action_values.get(key, 0) + count
        merged.ignored_columns = sorted(set(self.ignored_columns) | set(other.ignored_columns))
        return merged

    def merge_into(self, meta: DatasetMeta) -> DatasetMeta:
        """Add these counts to ``meta.cleaning`` (summing counts already there)."""
        for key, count in self.counts().items():
            meta.cleaning[key] = int(meta.cleaning.get(key, 0)) + count
        return meta

    def summary(self) -> str:
        """One line per non-zero count."""
        lines = [f"{key}: {count:,}" for key, count in self.counts().items() if count]
        if self.unknown_action_values:
            lines.append(f"unknown action values dropped: {self.unknown_action_values}")
        if self.ignored_columns:
            lines.append(f"ignored columns: {self.ignored_columns}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- reading


def read_raw_table(path: Path | str) -> pa.Table:
    """Read one raw CSV / TSV / Parquet file (or a directory of them) into an Arrow table."""
    path = Path(path)
    if not path.exists():
        raise CleaningError(f"{path} does not exist: pass a CSV or Parquet file of raw events")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if _file_kind(p) is not None)
        if not files:
            raise CleaningError(f"{path} holds no .csv, .tsv or .parquet files")
        tables = [read_raw_table(p) for p in files]
        try:
            return pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise CleaningError(f"the files in {path} have incompatible columns: {err}") from err
    kind = _file_kind(path)
    if kind is None:
        raise CleaningError(f"{path}: unsupported file type; use .csv, .csv.gz, .tsv or .parquet")
    try:
        if kind == "parquet":
            return pq.read_table(path)
        delimiter = "\t" if kind == "tsv" else ","
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, EOFError) as err:
        raise CleaningError(f"{path} is malformed or truncated ({kind}): {err}") from err


def _file_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".csv.bz2")):
        return "csv"
    if name.endswith((".tsv", ".tsv.gz")):
        return "tsv"
    return None


def _as_table(source: pa.Table | Path | str | object) -> tuple[pa.Table, str]:
    if isinstance(source, pa.Table):
        return source, "the events table"
    if isinstance(source, (str, Path)):
        return read_raw_table(source), str(source)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(source, pd.DataFrame):
        return pa.Table.from_pandas(source, preserve_index=False), "the events DataFrame"
    raise CleaningError(f"cannot read events from a {type(source).__name__}: pass a pyarrow "
                        f"Table, a pandas DataFrame or a path to a CSV/Parquet file")


# --------------------------------------------------------------------------- helpers


def _column_ints(table: pa.Table, name: str, where: str) -> np.ndarray:
    """Integer column -> ``(N,)`` int64 with nulls as 0 (validity checked separately)."""
    column = table.column(name)
    if pa.types.is_null(column.type):
        return np.zeros(table.num_rows, dtype=np.int64)
    try:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = pc.cast(pc.utf8_trim_whitespace(column), pa.int64())
        elif pa.types.is_floating(column.type):
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        column = pc.cast(column, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise CleaningError(f"{where}: column {name!r} must hold integers ({err}); "
                            f"fix the file or cast the column") from err
    return column.fill_null(0).to_numpy()


def _null_mask(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    mask = column.is_null(nan_is_null=True) if pa.types.is_floating(column.type) \
        else column.is_null()
    return mask.to_numpy(zero_copy_only=False)


def _examples(values: np.ndarray) -> list:
    return [v.item() if hasattr(v, "item") else v for v in values[:_MAX_EXAMPLES]]


def parse_action_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, dict[str, int]]:
    """Action names or codes -> ``(N,)`` int8 codes, ``-1`` where unknown.

    Returns the codes and ``{unknown value: rows}``. Each distinct value is parsed once, so
    the cost is one dictionary encoding of the column. Nulls map to ``-1`` but are not listed
    as unknown (they are counted as invalid rows).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_floating(column.type):
        as_int = pc.cast(column, pa.int64(), safe=False)
        whole = pc.fill_null(pc.equal(pc.cast(as_int, column.type), column), True)
        column = pc.if_else(whole, as_int.cast(pa.string()), column.cast(pa.string()))
    encoded = column.dictionary_encode()
    dictionary = encoded.dictionary.to_pylist()
    lookup = np.full(len(dictionary) + 1, -1, dtype=np.int8)
    for index, value in enumerate(dictionary):
        lookup[index] = _parse_one_action(value)
    indices = encoded.indices.fill_null(len(dictionary)).to_numpy().astype(np.int64)
    codes = lookup[indices]
    unknown: dict[str, int] = {}
    if (lookup[:-1] < 0).any():
        counts = np.bincount(indices, minlength=len(dictionary) + 1)
        for index, value in enumerate(dictionary):
            if lookup[index] < 0:
                unknown[str(value)] = int(counts[index])
    return codes, unknown


def _parse_one_action(value: object) -> int:
    if value is None:
        return -1
    text = str(value).strip().lower()
    if text.lstrip("-").isdigit():
        code = int(text)
        return code if code in {int(a) for a in ActionType if a is not ActionType.PAD} else -1
    action = ACTION_ALIASES.get(text)
    return int(action) if action is not None else -1


def timestamps_to_ms(
    column: pa.ChunkedArray | pa.Array,
    where: str = "events",
    min_timestamp_ms: int = MIN_TIMESTAMP_MS,
    max_timestamp_ms: int = MAX_TIMESTAMP_MS,
) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps in ms or s (per value) -> ``(N,)`` int64 ms and the ``(N,)`` seconds mask.

    A value in ``[min_timestamp_ms, max_timestamp_ms]`` is milliseconds, one in the same window
    divided by 1000 is seconds (the windows cannot overlap for any floor after 1970-02-17).
    Raises :class:`CleaningError` with examples when any value is neither (nulls included).
    """
    lo, hi = int(min_timestamp_ms), int(max_timestamp_ms)
    if not hi // 1000 < lo < hi:
        raise CleaningError(f"timestamp window [{lo}, {hi}] ms is empty or overlaps its own "
                            f"seconds window; choose a floor after 1970-02-17")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_null(column.type):  # e.g. an all-empty CSV column
        column = column.cast(pa.int64())
    if pa.types.is_timestamp(column.type):
        ms = pc.cast(column.cast(pa.timestamp("ms", tz=column.type.tz)), pa.int64())
        values = ms.to_numpy(zero_copy_only=False).astype(np.float64)
        values[column.is_null().to_numpy(zero_copy_only=False)] = np.nan
    else:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = _parse_time_strings(pc.utf8_trim_whitespace(column), where)
            if pa.types.is_timestamp(column.type):
                return timestamps_to_ms(column, where, lo, hi)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise CleaningError(f"{where}: timestamp column has type {column.type}; "
                                f"use Unix epoch milliseconds or seconds")
        if pa.types.is_integer(column.type):
            ints = column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            is_ms = (ints >= lo) & (ints <= hi)
            is_s = (ints >= -(-lo // 1000)) & (ints <= hi // 1000)
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            _check_plausible(ints.astype(np.float64), (is_ms | is_s) & valid, where, lo, hi)
            return np.where(is_s, ints * 1000, ints), is_s & valid
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        values[~column.is_valid().to_numpy(zero_copy_only=False)] = np.nan
    with np.errstate(invalid="ignore"):
        is_ms = (values >= lo) & (values <= hi)
        is_s = (values >= lo / 1000) & (values <= hi / 1000)
    _check_plausible(values, is_ms | is_s, where, lo, hi)
    ms = np.rint(np.where(is_s, values * 1000.0, values)).astype(np.int64)
    return ms, is_s


def _parse_time_strings(column: pa.Array, where: str) -> pa.Array:
    """Numeric strings -> float64; otherwise ISO 8601 datetimes (naive ones read as UTC)."""
    try:
        return pc.cast(column, pa.float64())
    except pa.ArrowInvalid:
        pass
    for target in (pa.timestamp("ms", tz="UTC"), pa.timestamp("ms")):
        try:
            return pc.cast(column, target)
        except pa.ArrowInvalid:
            continue
    raise CleaningError(f"{where}: timestamps must be Unix milliseconds or seconds, or ISO "
                        f"8601 datetimes all with or all without a UTC offset; examples: "
                        f"{column.slice(0, _MAX_EXAMPLES).to_pylist()}")


def _check_plausible(values: np.ndarray, ok: np.ndarray, where: str, lo: int, hi: int) -> None:
    if ok.all():
        return
    bad = values[~ok]
    hint = ""
    finite = bad[np.isfinite(bad)]
    if finite.size and (finite > hi).all():
        hint = " (they look like microseconds or nanoseconds: divide them to milliseconds)"
    raise CleaningError(
        f"{where}: {bad.size:,} implausible timestamps (null, NaN, or outside both the "
        f"milliseconds window [{lo}, {hi}] and the seconds window [{lo / 1000:.0f}, "
        f"{hi // 1000}], i.e. {_utc_date(lo)}..{_utc_date(hi)}){hint}; examples: "
        f"{_examples(bad)}; fix or remove those rows")


def _utc_date(ms: int) -> str:
    return str(np.datetime64(int(ms), "ms").astype("datetime64[D]"))


def derive_request_ids(user_id: np.ndarray, surface_code: np.ndarray, timestamp_ms: np.ndarray,
                       event_id: np.ndarray, gap_ms: int = DEFAULT_REQUEST_GAP_MS,
                       start: int = 1) -> np.ndarray:
    """Session-style request ids ``(N,)`` int64 (see step 7 of the module docstring).

    Events of one (user, surface) belong to one request until a gap of more than ``gap_ms``
    between consecutive events (ordered by timestamp, then event id); requests are numbered
    from ``start`` in (user, surface, time) order.
    """
    n_rows = user_id.shape[0]
    if n_rows == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((event_id, timestamp_ms, surface_code, user_id))
    u, s, t = user_id[order], surface_code[order], timestamp_ms[order]
    new_request = np.ones(n_rows, dtype=bool)
    new_request[1:] = (u[1:] != u[:-1]) | (s[1:] != s[:-1]) | (t[1:] - t[:-1] > gap_ms)
    ids_sorted = start - 1 + np.cumsum(new_request)
    ids = np.empty(n_rows, dtype=np.int64)
    ids[order] = ids_sorted
    return ids


# --------------------------------------------------------------------------- cleaning


def clean_events(
    source: pa.Table | Path | str | object,
    *,
    on_unknown: OnUnknown = "error",
    on_invalid: OnUnknown = "error",
    request_gap_ms: int = DEFAULT_REQUEST_GAP_MS,
    default_surface: str = UNKNOWN_SURFACE,
    min_timestamp_ms: int = MIN_TIMESTAMP_MS,
    max_timestamp_ms: int = MAX_TIMESTAMP_MS,
) -> tuple[pa.Table, CleaningReport]:
    """Clean raw events into an :data:`EVENT_SCHEMA` table sorted by (user, time, event id).

    ``source``: a ``pa.Table``, a pandas DataFrame or a path (CSV/TSV/Parquet file or a
    directory of them). Returns the ``(N, 7)`` events table and the :class:`CleaningReport`.
    Raises :class:`CleaningError` (a ``UserError``) for input it must not guess about.
    ``min_timestamp_ms`` / ``max_timestamp_ms`` bound plausible times (default: the schema's
    2000-01-01..2100-01-01; MovieLens-100K, rated in 1997-98, passes an earlier floor).
    """
    if on_unknown not in ("error", "drop") or on_invalid not in ("error", "drop"):
        raise CleaningError("on_unknown and on_invalid must be 'error' or 'drop'")
    table, where = _as_table(source)
    report = CleaningReport(rows_in=table.num_rows)
    table = _rename_aliases(table, where)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise CleaningError(f"{where} lacks required columns {missing} (has "
                            f"{table.column_names}); required: {list(REQUIRED_COLUMNS)}, "
                            f"optional: {list(OPTIONAL_COLUMNS)}")
    report.ignored_columns = [c for c in table.column_names
                              if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]

    # step 2: ids and invalid rows
    event_id = _column_ints(table, "event_id", where)
    user_id = _column_ints(table, "user_id", where)
    item_id = _column_ints(table, "item_id", where)
    has_request = "request_id" in table.column_names
    request_id = _column_ints(table, "request_id", where) if has_request \
        else np.zeros(table.num_rows, dtype=np.int64)
    request_null = _null_mask(table, "request_id") if has_request \
        else np.ones(table.num_rows, dtype=bool)
    null_rows = np.zeros(table.num_rows, dtype=bool)
    reasons: dict[str, int] = {}
    for name in REQUIRED_COLUMNS:
        nulls = _null_mask(table, name)
        if nulls.any():
            reasons[f"null {name}"] = int(nulls.sum())
            null_rows |= nulls
    checks = {
        "user_id <= 0": (user_id <= 0) & ~null_rows,
        "item_id <= 0 (0 is the padding id)": (item_id <= 0) & ~null_rows,
        "event_id < 0": (event_id < 0) & ~null_rows,
        "request_id < 0": (request_id < 0) & ~request_null,
    }
    invalid = null_rows.copy()
    for reason, mask in checks.items():
        if mask.any():
            reasons[reason] = int(mask.sum())
            invalid |= mask
    if invalid.any():
        if on_invalid == "error":
            raise CleaningError(f"{where}: {int(invalid.sum()):,} invalid rows ({reasons}); "
                                f"fix them, or pass on_invalid='drop' to drop and count them")
        report.invalid_rows_dropped = int(invalid.sum())

    # step 3: action types (only rows still valid are judged)
    codes, _ = parse_action_codes(table.column("action_type"))
    unknown_rows = (codes < 0) & ~invalid
    if unknown_rows.any():
        values = table.column("action_type").filter(pa.array(unknown_rows))
        counts = pc.value_counts(values.cast(pa.string())).to_pylist()
        unknown_values = {str(c["values"]): int(c["counts"]) for c in counts}
        if on_unknown == "error":
            raise CleaningError(
                f"{where}: {int(unknown_rows.sum()):,} rows have unknown action types "
                f"{dict(sorted(unknown_values.items(), key=lambda kv: -kv[1])[:10])}; known: "
                f"{known_action_names()} or codes 1-4; map them, or pass on_unknown='drop' "
                f"to drop and count them")
        report.unknown_action_dropped = int(unknown_rows.sum())
        report.unknown_action_values = unknown_values
    keep = ~(invalid | unknown_rows)

    # step 4: timestamps (judged on kept rows only)
    ts_column = table.column("timestamp").filter(pa.array(keep))
    timestamp_ms, seconds = timestamps_to_ms(ts_column, where, min_timestamp_ms,
                                             max_timestamp_ms)
    report.timestamps_seconds_converted = int(seconds.sum())

    event_id, user_id, item_id = event_id[keep], user_id[keep], item_id[keep]
    request_id, request_null, codes = request_id[keep], request_null[keep], codes[keep]

    # step 5: surface
    if "surface" in table.column_names:
        surface = table.column("surface").filter(pa.array(keep)).cast(pa.string())
        surface_nulls = surface.is_null().to_numpy(zero_copy_only=False)
        report.surface_filled = int(surface_nulls.sum())
        surface = surface.fill_null(default_surface).combine_chunks()
    else:
        surface = pa.array(np.full(int(keep.sum()), default_surface, dtype=object),
                           type=pa.string())
        report.surface_filled = int(keep.sum())
    surface_encoded = surface.dictionary_encode()
    surface_code = surface_encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)

    # step 6: duplicate event ids
    keys = (np.where(request_null, -1, request_id), surface_code, timestamp_ms, codes,
            item_id, user_id, event_id)
    order = np.lexsort(keys)
    same_id = event_id[order][1:] == event_id[order][:-1]
    same_all = same_id.copy()
    for key in keys[:-1]:
        same_all &= key[order][1:] == key[order][:-1]
    conflict = same_id & ~same_all
    if conflict.any():
        ids = np.unique(event_id[order][1:][conflict])
        raise CleaningError(
            f"{where}: {ids.size:,} event ids occur with different content (e.g. "
            f"{_examples(ids)}); event ids must be unique, so fix the source of these rows")
    dup_rows = np.zeros(event_id.shape[0], dtype=bool)
    dup_rows[order[1:][same_all]] = True
    report.exact_duplicates_dropped = int(dup_rows.sum())
    if dup_rows.any():
        unique = ~dup_rows
        event_id, user_id, item_id = event_id[unique], user_id[unique], item_id[unique]
        request_id, request_null = request_id[unique], request_null[unique]
        codes, timestamp_ms = codes[unique], timestamp_ms[unique]
        surface_code = surface_code[unique]
        surface = surface.filter(pa.array(unique))

    # step 7: request ids
    if request_null.any():
        start = int(request_id[~request_null].max()) + 1 if (~request_null).any() else 1
        sub = request_null
        request_id = request_id.copy()
        request_id[sub] = derive_request_ids(user_id[sub], surface_code[sub], timestamp_ms[sub],
                                             event_id[sub], request_gap_ms, start)
        report.request_id_derived = int(sub.sum())

    # step 8: assemble, sort, report per-user facts
    events = pa.table(
        {
            "event_id": pa.array(event_id, pa.int64()),
            "user_id": pa.array(user_id, pa.int64()),
            "item_id": pa.array(item_id, pa.int64()),
            "action_type": pa.array(codes.astype(np.int8), pa.int8()),
            "timestamp_ms": pa.array(timestamp_ms, pa.int64()),
            "surface": surface,
            "request_id": pa.array(request_id, pa.int64()),
        },
        schema=EVENT_SCHEMA,
    )
    events = events.sort_by([("user_id", "ascending"), ("timestamp_ms", "ascending"),
                             ("event_id", "ascending")])
    report.rows_out = events.num_rows
    _count_users(events, report)
    return events, report


def _rename_aliases(table: pa.Table, where: str) -> pa.Table:
    names = list(table.column_names)
    for alias, canonical in COLUMN_ALIASES.items():
        if alias in names:
            if canonical in names:
                raise CleaningError(f"{where} has both {alias!r} and {canonical!r}: keep one")
            names[names.index(alias)] = canonical
    return table.rename_columns(names)


def _count_users(events: pa.Table, report: CleaningReport) -> None:
    user_id = events.column("user_id").to_numpy()
    if user_id.size == 0:
        return
    _, inverse, counts = np.unique(user_id, return_inverse=True, return_counts=True)
    engaged = np.isin(events.column("action_type").to_numpy(), [int(a) for a in SEQUENCE_ACTIONS])
    engagements = np.bincount(inverse, weights=engaged, minlength=counts.size)
    report.users = int(counts.size)
    report.users_single_event = int((counts == 1).sum())
    report.users_without_engagement = int((engagements == 0).sum())


# --------------------------------------------------------------------------- items


def hashed_item_embeddings(item_ids: np.ndarray, dim: int = ITEM_EMB_DIM,
                           seed: int = 0) -> np.ndarray:
    """Deterministic stand-in content embeddings ``(N, dim)`` float32, one per item id.

    Each item's vector depends only on ``(seed, item_id)`` (a SplitMix64 hash turned into
    standard normals, scaled by ``1/sqrt(dim)`` so norms are about 1), so it is stable across
    datasets. Used when no content embeddings are given: they identify items but carry no
    content similarity.
    """
    ids = np.asarray(item_ids, dtype=np.uint64)[:, None]
    slots = np.arange(2 * dim, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        state = ids * np.uint64(0x9E3779B97F4A7C15) + slots * np.uint64(0xBF58476D1CE4E5B9) \
            + np.uint64(seed) * np.uint64(0x94D049BB133111EB)
        state ^= state >> np.uint64(30)
        state *= np.uint64(0xBF58476D1CE4E5B9)
        state ^= state >> np.uint64(27)
        state *= np.uint64(0x94D049BB133111EB)
        state ^= state >> np.uint64(31)
    uniform = ((state >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    u1, u2 = uniform[:, :dim], uniform[:, dim:]
    normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return (normal / np.sqrt(dim)).astype(np.float32)


def _parse_embedding_strings(column: pa.ChunkedArray, where: str) -> np.ndarray:
    text = pc.replace_substring_regex(column.cast(pa.string()), r"[\[\]\(\)]", "")
    parts = pc.split_pattern_regex(pc.utf8_trim_whitespace(text), r"[,;\s]+")
    lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    if lengths.size and (lengths != lengths[0]).any():
        raise CleaningError(f"{where}: content_emb strings have different lengths "
                            f"{sorted(set(lengths.tolist()))[:5]}; every item needs "
                            f"{ITEM_EMB_DIM} numbers")
    try:
        flat = pc.cast(pc.list_flatten(parts), pa.float32()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as err:
        raise CleaningError(f"{where}: content_emb holds non-numbers ({err})") from err
    return flat.reshape(column.length(), -1) if column.length() else flat.reshape(0, 0)


def read_items_file(path: Path | str, seed: int = 0) -> tuple[pa.Table, dict[str, int]]:
    """Read an items Parquet/CSV into :data:`ITEM_SCHEMA` (plus counts of what was filled).

    Columns: ``item_id`` (required, > 0, unique); ``content_emb`` as a list column, a string
    of numbers (``"[0.1, 0.2, ...]"`` or space separated) or columns ``content_emb_0`` ..
    ``content_emb_31``; optional ``topic`` and ``title``. Items without any embedding column
    get :func:`hashed_item_embeddings` (counted as ``items_hashed_emb``).
    """
    where = str(path)
    table = read_raw_table(path)
    if "item_id" not in table.column_names:
        raise CleaningError(f"{where} lacks the item_id column (has {table.column_names})")
    if _null_mask(table, "item_id").any():
        raise CleaningError(f"{where}: item_id has nulls; every item needs an id")
    item_id = _column_ints(table, "item_id", where)
    if (item_id <= 0).any():
        raise CleaningError(f"{where}: item ids must be > 0 (0 is the padding id); examples: "
                            f"{_examples(item_id[item_id <= 0])}")
    unique_ids, counts = np.unique(item_id, return_counts=True)
    if (counts > 1).any():
        raise CleaningError(f"{where}: duplicate item ids {_examples(unique_ids[counts > 1])}; "
                            f"keep one row per item")
    filled: dict[str, int] = {}
    emb_columns = [f"content_emb_{i}" for i in range(ITEM_EMB_DIM)]
    if "content_emb" in table.column_names:
        column = table.column("content_emb")
        if _null_mask(table, "content_emb").any():
            raise CleaningError(f"{where}: content_emb has nulls; give every item an embedding")
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            emb = _parse_embedding_strings(column, where)
        elif pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) \
                or pa.types.is_large_list(column.type):
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
            if lengths.size and (lengths != lengths[0]).any():
                raise CleaningError(f"{where}: content_emb lists have different lengths")
            flat = pc.list_flatten(column).cast(pa.float32()).to_numpy(zero_copy_only=False)
            emb = flat.reshape(table.num_rows, -1) if table.num_rows else flat.reshape(0, 0)
        else:
            raise CleaningError(f"{where}: content_emb has type {column.type}; use a list of "
                                f"{ITEM_EMB_DIM} floats or a string of numbers")
    elif all(c in table.column_names for c in emb_columns):
        emb = np.stack([table.column(c).cast(pa.float32()).fill_null(np.nan)
                        .to_numpy(zero_copy_only=False) for c in emb_columns], axis=1)
    else:
        emb = hashed_item_embeddings(item_id, ITEM_EMB_DIM, seed)
        filled["items_hashed_emb"] = int(item_id.size)
    if emb.shape[0] and emb.shape[1] != ITEM_EMB_DIM:
        raise CleaningError(f"{where}: content_emb has {emb.shape[1]} dimensions, the model "
                            f"expects {ITEM_EMB_DIM}; reduce it (e.g. PCA) first")
    if not np.isfinite(emb).all():
        raise CleaningError(f"{where}: content_emb holds NaN or infinite values")
    topic = table.column("topic").cast(pa.int32()) if "topic" in table.column_names \
        else pa.nulls(table.num_rows, pa.int32())
    title = table.column("title").cast(pa.string()) if "title" in table.column_names \
        else pa.nulls(table.num_rows, pa.string())
    return items_table(item_id, emb, topic, title), filled


def items_table(item_id: np.ndarray, emb: np.ndarray, topic: pa.Array | pa.ChunkedArray,
                 title: pa.Array | pa.ChunkedArray) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(emb, dtype=np.float32).reshape(-1), pa.float32())
    return pa.table(
        {
            "item_id": pa.array(item_id, pa.int64()),
            "content_emb": pa.FixedSizeListArray.from_arrays(flat, ITEM_EMB_DIM),
            "topic": topic,
            "title": title,
        },
        schema=ITEM_SCHEMA,
    ).sort_by("item_id")


def part_boundaries(user_id: np.ndarray, events_per_part: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` row ranges of at most ``events_per_part`` rows over events
    sorted by user, never splitting a user (a user with more events gets a part alone)."""
    n_rows = user_id.shape[0]
    if n_rows == 0:
        return [(0, 0)]
    starts = np.flatnonzero(np.r_[True, user_id[1:] != user_id[:-1]])
    bounds = [0]
    while bounds[-1] + events_per_part < n_rows:
        limit = bounds[-1] + max(1, events_per_part)
        cut = int(starts[np.searchsorted(starts, limit, side="right") - 1])
        if cut <= bounds[-1]:  # one user alone exceeds the limit: the part ends after them
            following = np.searchsorted(starts, bounds[-1], side="right")
            if following >= starts.size:
                break
            cut = int(starts[following])
        bounds.append(cut)
    bounds.append(n_rows)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def write_dataset(
    events: pa.Table,
    items: pa.Table,
    out_dir: Path | str,
    meta: DatasetMeta,
    *,
    events_per_part: int = 1_000_000,
    progress: bool = False,
) -> DatasetMeta:
    """Write ``items.parquet``, sorted events parts and ``meta.json`` (counts filled in)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    events = events.sort_by([("user_id", "ascending"), ("timestamp_ms", "ascending"),
                             ("event_id", "ascending")])
    pq.write_table(items.cast(ITEM_SCHEMA), out_dir / "items.parquet", compression="zstd")
    writer = EventPartWriter(out_dir)
    bounds = part_boundaries(events.column("user_id").to_numpy(), events_per_part)
    if progress:
        from rich.progress import track

        bounds_iter = track(bounds, description="writing events parts")
    else:
        bounds_iter = bounds
    for start, stop in bounds_iter:
        writer.write(events.slice(start, stop - start))
    meta.n_users = int(pc.count_distinct(events.column("user_id")).as_py())
    meta.n_items = items.num_rows
    meta.n_events = writer.n_events
    meta.n_parts = writer.n_parts
    meta.min_timestamp_ms = int(writer.min_ts or 0)
    meta.max_timestamp_ms = int(writer.max_ts or 0)
    meta.item_emb_dim = ITEM_EMB_DIM
    meta.write(out_dir)
    return meta


def import_events(
    raw_path: Path | str | Sequence[Path | str],
    items_path: Path | str | None,
    out_dir: Path | str,
    *,
    on_unknown: OnUnknown = "error",
    on_invalid: OnUnknown = "error",
    on_unknown_item: Literal["error", "drop", "add"] = "error",
    request_gap_ms: int = DEFAULT_REQUEST_GAP_MS,
    events_per_part: int = 1_000_000,
    source: str = "import",
    seed: int = 0,
    progress: bool = False,
) -> DatasetMeta:
    """Write a dataset directory from raw event files and an optional items file.

    ``raw_path``: a file, a directory of files, or a list of files (each cleaned with
    :func:`clean_events`, reports merged; event ids must be unique across files).
    ``items_path``: items Parquet/CSV (see :func:`read_items_file`) or ``None``, in which case
    the items are the event items with :func:`hashed_item_embeddings`. Events whose item is not
    in the items file: an error by default, ``"drop"`` drops and counts them
    (``events_unknown_item_dropped``), ``"add"`` adds those items with hashed embeddings
    (``items_added``).
    """
    paths = [raw_path] if isinstance(raw_path, (str, Path)) else list(raw_path)
    if not paths:
        raise CleaningError("import_events got no raw event files")
    tables: list[pa.Table] = []
    report: CleaningReport | None = None
    for path in paths:
        table, part_report = clean_events(path, on_unknown=on_unknown, on_invalid=on_invalid,
                                          request_gap_ms=request_gap_ms)
        tables.append(table)
        report = part_report if report is None else report.merge(part_report)
    assert report is not None
    events = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if len(tables) > 1:
        ids = events.column("event_id").to_numpy()
        unique_ids, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise CleaningError(f"event ids repeat across the raw files (e.g. "
                                f"{_examples(unique_ids[counts > 1])}); make them unique")
        # per-user facts must be counted on the union, not summed per file
        _count_users(events, report)

    extra: dict[str, int] = {}
    event_items = events.column("item_id").to_numpy()
    if items_path is None:
        item_ids = np.unique(event_items)
        items = items_table(item_ids, hashed_item_embeddings(item_ids, ITEM_EMB_DIM, seed),
                             pa.nulls(item_ids.size, pa.int32()),
                             pa.nulls(item_ids.size, pa.string()))
        extra["items_hashed_emb"] = int(item_ids.size)
    else:
        items, extra = read_items_file(items_path, seed)
        known = np.isin(event_items, items.column("item_id").to_numpy())
        if not known.all():
            missing = np.unique(event_items[~known])
            if on_unknown_item == "error":
                raise CleaningError(
                    f"{int((~known).sum()):,} events refer to {missing.size:,} items missing "
                    f"from {items_path} (e.g. {_examples(missing)}); add them, or pass "
                    f"on_unknown_item='drop' (drop those events) or 'add' (hashed embeddings)")
            if on_unknown_item == "drop":
                events = events.filter(pa.array(known))
                extra["events_unknown_item_dropped"] = int((~known).sum())
                report.rows_out = events.num_rows
                _count_users(events, report)
            else:
                added = items_table(missing, hashed_item_embeddings(missing, ITEM_EMB_DIM, seed),
                                     pa.nulls(missing.size, pa.int32()),
                                     pa.nulls(missing.size, pa.string()))
                items = pa.concat_tables([items, added]).sort_by("item_id")
                extra["items_added"] = int(missing.size)
    meta = DatasetMeta(source=source, seed=seed,
                       params={"raw_files": [str(p) for p in paths],
                               "items_file": str(items_path) if items_path else None,
                               "request_gap_ms": request_gap_ms,
                               "ignored_columns": report.ignored_columns,
                               "unknown_action_values": report.unknown_action_values},
                       request_grouping=(
                           "given request_id; where missing, a user's events on one surface "
                           f"with gaps of at most {request_gap_ms} ms form one request"))
    report.merge_into(meta)
    meta.cleaning.update(extra)
    return write_dataset(events, items, out_dir, meta, events_per_part=events_per_part,
                         progress=progress)

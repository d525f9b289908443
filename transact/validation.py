"""Great Expectations suites for raw events and training examples.

Two suites run on an in-memory (ephemeral) GX 1.x context with a pandas datasource, analytics
and progress bars off:

* **events** (:func:`validate_events`, :data:`transact.schema.EVENT_SCHEMA`): the columns in
  schema order; each column's type and no nulls (the failure shows the null rate); action
  types known (1..4); timestamps in Unix **milliseconds** inside the plausible window (a
  seconds timestamp is 1000 times too small and fails, with a hint); positive user/item ids,
  non-negative event/request ids; non-empty surfaces; unique ``event_id``.
* **examples** (:func:`validate_examples`, :func:`transact.schema.example_schema`): the
  columns in schema order and their types; no nulls; ``seq_len`` in ``[0, L]``; ``outcome`` an
  event action; labels in ``{0, 1}`` and consistent with the outcome (``label_h = 1`` exactly
  when the outcome is head ``h``'s action, so at most one label is set); ``request_time_ms`` in
  the plausible window; ids positive; ``surface_id`` known. The sequence columns are
  flattened into helper columns computed with numpy:

  ``max_seq_ts_minus_request``  newest real sequence timestamp minus ``request_time_ms``
                                (null for an empty sequence); must be ``< 0`` (**no leakage**)
  ``seq_padding_violations``    slots at or after ``seq_len`` that are not (0, 0, 0)
  ``seq_slot_violations``       slots before ``seq_len`` that are not an engagement
                                (click/save/hide) with item > 0 and timestamp > 0
  ``seq_order_violations``      adjacent real slots out of newest-first order
  ``label_outcome_mismatch``    labels that disagree with the outcome
  ``user_emb_non_finite``       NaN/inf entries of ``user_batch_emb``

GX runs on a deterministic sample of at most ``max_rows`` rows (seeded, sorted indices) for
speed. Checks that a sample cannot settle are also run on **all** rows, vectorised: unique
``event_id`` for events; no leakage, padding and slot consistency, and the list columns' Arrow
types for examples. Great Expectations is imported lazily (its import takes seconds).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transact.errors import CheckFailed, UserError
from transact.runtime import quiet_telemetry
from transact.schema import (
    COUNTER_COLUMNS,
    EVENT_ACTIONS,
    EVENT_SCHEMA,
    HEAD_ACTIONS,
    HEADS,
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    SEQ_LEN,
    SEQUENCE_ACTIONS,
    SURFACES,
    USER_EMB_DIM,
    example_schema,
)

DEFAULT_MAX_ROWS = 50_000
_N_EXAMPLES = 5
_BATCH_ROWS = 32_768


class ValidationFailed(CheckFailed):
    """A Great Expectations suite failed (a failed check, exit code 1); the message is the
    report's summary."""


@dataclass
class CheckResult:
    """The outcome of one expectation (GX on the sample) or one full-data check."""

    name: str
    success: bool
    expectation: str = ""
    column: str | None = None
    scope: str = "sample"  # "sample" (GX) or "all rows" (vectorised full-data check)
    unexpected_count: int | None = None
    element_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[Any] = field(default_factory=list)
    observed: Any = None
    hint: str = ""
    error: str = ""

    def describe(self) -> str:
        """One line: what failed, on how many rows, example bad values, and a hint."""
        where = f"{self.expectation}" + (f" on {self.column}" if self.column else "")
        text = f"{self.name} ({where}; {self.scope})"
        if self.error:
            return f"{text}: could not be evaluated: {self.error}"
        if self.unexpected_count is not None:
            total = f" of {self.element_count:,}" if self.element_count is not None else ""
            pct = (f" ({self.unexpected_percent:.2f}%)"
                   if self.unexpected_percent is not None else "")
            text += f": {self.unexpected_count:,}{total} rows{pct}"
        if self.observed is not None:
            text += f": observed {self.observed!r}"
        if self.examples:
            text += f"; e.g. {self.examples[:_N_EXAMPLES]}"
        if self.hint:
            text += f" -- {self.hint}"
        return text


@dataclass
class ValidationReport:
    """All checks of one suite run. ``success`` is true when every check passed."""

    suite: str
    n_rows: int
    n_sampled: int
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(check.success for check in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.success]

    def failed_names(self) -> list[str]:
        return [check.name for check in self.failures]

    def summary(self) -> str:
        """A readable text report: a header line, then one line per failed check."""
        head = (f"{self.suite} suite: {len(self.failures)} of {len(self.checks)} checks failed "
                f"({self.n_sampled:,} sampled of {self.n_rows:,} rows)")
        if self.success:
            return (f"{self.suite} suite: all {len(self.checks)} checks passed "
                    f"({self.n_sampled:,} sampled of {self.n_rows:,} rows)")
        return "\n".join([head] + [f"  FAILED {check.describe()}" for check in self.failures])

    def raise_if_failed(self) -> None:
        if not self.success:
            raise ValidationFailed(self.summary())


# --------------------------------------------------------------------------- GX plumbing

_GX_STATE: dict[str, Any] = {}


def _gx() -> tuple[Any, Any, Any]:
    """``(gx module, expectations module, batch definition)``, created once per process."""
    if "batch_definition" not in _GX_STATE:
        quiet_telemetry()
        os.environ["GX_ANALYTICS_ENABLED"] = "false"
        import great_expectations as gx
        import great_expectations.expectations as gxe
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        context = gx.get_context(mode="ephemeral", project_config=config)
        asset = context.data_sources.add_pandas("transact_memory").add_dataframe_asset("frame")
        _GX_STATE.update(gx=gx, gxe=gxe, context=context,
                         batch_definition=asset.add_batch_definition_whole_dataframe("whole"))
    return _GX_STATE["gx"], _GX_STATE["gxe"], _GX_STATE["batch_definition"]


@dataclass
class _Spec:
    """One expectation of a suite: a readable name, the GX expectation and a failure hint."""

    name: str
    build: Callable[[Any], Any]  # gxe module -> Expectation
    hint: Callable[[list[Any]], str] | str = ""


def _run_suite(suite_name: str, frame: Any, specs: list[_Spec]) -> list[CheckResult]:
    gx, gxe, batch_definition = _gx()
    expectations = []
    for index, spec in enumerate(specs):
        expectation = spec.build(gxe)
        expectation.meta = {"transact_check": index}  # GX does not keep the suite's order
        expectations.append(expectation)
    suite = gx.ExpectationSuite(name=suite_name, expectations=expectations)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={"result_format": "SUMMARY",
                                                  "partial_unexpected_count": 20})
    ordered = sorted(result.results,
                     key=lambda r: int((r.expectation_config.meta or {})["transact_check"]))
    if len(ordered) != len(specs):
        raise RuntimeError(f"GX returned {len(ordered)} results for {len(specs)} expectations")
    checks = []
    for spec, expectation_result in zip(specs, ordered, strict=True):
        config = expectation_result.expectation_config
        payload = expectation_result.result or {}
        info = expectation_result.exception_info or {}
        raised = bool(info.get("raised_exception")) if isinstance(info, dict) else False
        examples = list(payload.get("partial_unexpected_list") or [])
        examples = [v.item() if isinstance(v, np.generic) else v for v in examples]
        # show distinct values first: more informative than repeats
        distinct = list(dict.fromkeys(map(repr, examples)))
        shown = [examples[[repr(v) for v in examples].index(r)] for r in distinct]
        hint = spec.hint(shown) if callable(spec.hint) else spec.hint
        checks.append(CheckResult(
            name=spec.name,
            success=bool(expectation_result.success),
            expectation=config.type,
            column=config.kwargs.get("column"),
            scope="sample",
            unexpected_count=payload.get("unexpected_count"),
            element_count=payload.get("element_count"),
            unexpected_percent=payload.get("unexpected_percent"),
            examples=shown[:_N_EXAMPLES],
            observed=payload.get("observed_value") if not expectation_result.success else None,
            hint=hint if not expectation_result.success else "",
            error=str(info.get("exception_message") or "") if raised else "",
        ))
    return checks


# --------------------------------------------------------------------------- helpers


def _to_table(source: Any, what: str) -> pa.Table:
    if isinstance(source, pa.Table):
        return source
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source])
    if isinstance(source, (str, Path)):
        path = Path(source)
        if what == "events" and (path / "meta.json").exists():
            from transact.data.dataset import read_events

            return read_events(path)
        import pyarrow.parquet as pq

        files = sorted(path.glob("**/part-*.parquet")) if path.is_dir() else [path]
        if not files or not all(f.exists() for f in files):
            raise UserError(f"{path}: no Parquet {what} to validate")
        try:
            return pa.concat_tables([pq.read_table(f) for f in files])
        except (pa.ArrowInvalid, OSError) as err:
            raise UserError(f"{path}: unreadable {what} ({err})") from err
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return pa.Table.from_pandas(source, preserve_index=False)
    raise UserError(f"cannot validate {what} given as {type(source).__name__}: pass a pyarrow "
                    f"Table, a pandas DataFrame or a path")


def sample_indices(n_rows: int, max_rows: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a deterministic sample of ``min(n_rows, max_rows)`` rows."""
    if max_rows <= 0:
        raise UserError(f"max_rows must be positive, got {max_rows}")
    if n_rows <= max_rows:
        return np.arange(n_rows)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=max_rows, replace=False))


def _pandas_dtype(arrow_type: pa.DataType) -> str:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "str"
    return arrow_type.to_pandas_dtype().__name__


def _type_and_null_specs(schema: pa.Schema, present: list[str]) -> list[_Spec]:
    specs = []
    for arrow_field in schema:
        if arrow_field.name not in present:
            continue
        dtype = _pandas_dtype(arrow_field.type)
        specs.append(_Spec(
            f"{arrow_field.name} has type {dtype}",
            lambda gxe, c=arrow_field.name, t=dtype: gxe.ExpectColumnValuesToBeOfType(
                column=c, type_=t),
            "nulls in an integer column read as float64; cast or clean the column",
        ))
        specs.append(_Spec(
            f"{arrow_field.name} is not null",
            lambda gxe, c=arrow_field.name: gxe.ExpectColumnValuesToNotBeNull(column=c),
            "the percentage is the null rate",
        ))
    return specs


def _columns_spec(expected: list[str], actual: list[str]) -> _Spec:
    missing = [c for c in expected if c not in actual]
    extra = [c for c in actual if c not in expected]
    hint = ""
    if missing or extra:
        hint = f"missing {missing}, unexpected {extra}"
    elif expected != actual:
        hint = "same columns, different order"
    return _Spec("columns match the schema",
                 lambda gxe: gxe.ExpectTableColumnsToMatchOrderedList(column_list=expected),
                 hint)


def _timestamp_hint(lo: int, hi: int) -> Callable[[list[Any]], str]:
    def hint(examples: list[Any]) -> str:
        numbers = [v for v in examples if isinstance(v, int | float)]
        if numbers and all(hi / 1000 >= v >= lo / 1000 for v in numbers):
            return ("the values look like Unix seconds: multiply by 1000 "
                    "(transact.data.cleaning.clean_events converts them)")
        if numbers and all(v > hi for v in numbers):
            return "the values look like microseconds or nanoseconds"
        if numbers and all(hi / 1000 < v < lo for v in numbers):
            first = str(np.datetime64(int(min(numbers)), "ms").astype("datetime64[D]"))
            floor = str(np.datetime64(int(lo), "ms").astype("datetime64[D]"))
            return (f"milliseconds from {first}, before the window's floor {floor}: for older "
                    f"data pass min_timestamp_ms (MovieLens: MOVIELENS_MIN_TIMESTAMP_MS)")
        return f"expected Unix epoch milliseconds in [{lo}, {hi}]"

    return hint


def _between(name: str, column: str, lo: float | None, hi: float | None,
             hint: Callable[[list[Any]], str] | str = "") -> _Spec:
    return _Spec(name, lambda gxe: gxe.ExpectColumnValuesToBeBetween(
        column=column, min_value=lo, max_value=hi), hint)


def _in_set(name: str, column: str, values: list[int], hint: str = "") -> _Spec:
    return _Spec(name, lambda gxe: gxe.ExpectColumnValuesToBeInSet(
        column=column, value_set=values), hint)


def _full_check(name: str, bad: np.ndarray, n_rows: int, examples: list[Any],
                hint: str = "") -> CheckResult:
    count = int(bad.sum())
    return CheckResult(
        name=name, success=count == 0, expectation="vectorised check", scope="all rows",
        unexpected_count=count if count else 0, element_count=n_rows,
        unexpected_percent=100.0 * count / n_rows if n_rows else 0.0,
        examples=examples[:_N_EXAMPLES] if count else [], hint=hint if count else "")


# --------------------------------------------------------------------------- events


def validate_events(
    table: Any,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    seed: int = 0,
    min_timestamp_ms: int = MIN_TIMESTAMP_MS,
    max_timestamp_ms: int = MAX_TIMESTAMP_MS,
) -> ValidationReport:
    """Run the events suite on ``table`` (``pa.Table`` / DataFrame / dataset dir / Parquet).

    GX checks a deterministic sample of at most ``max_rows`` rows; ``event_id`` uniqueness is
    also checked on all rows. Returns the :class:`ValidationReport` (never raises on failing
    data; call :meth:`ValidationReport.raise_if_failed`).
    """
    table = _to_table(table, "events")
    present = table.column_names
    rows = sample_indices(table.num_rows, max_rows, seed)
    frame = table.take(pa.array(rows, pa.int64())).to_pandas()
    specs = [_columns_spec(EVENT_SCHEMA.names, present)]
    specs += _type_and_null_specs(EVENT_SCHEMA, present)
    ts_hint = _timestamp_hint(min_timestamp_ms, max_timestamp_ms)
    value_specs = {
        "action_type": _in_set(
            "action_type is a known event action (1..4)", "action_type",
            [int(a) for a in EVENT_ACTIONS],
            "codes: 1 skip, 2 click, 3 save, 4 hide; names must be parsed by clean_events"),
        "timestamp_ms": _between(
            "timestamp_ms is Unix milliseconds in the plausible window", "timestamp_ms",
            min_timestamp_ms, max_timestamp_ms, ts_hint),
        "user_id": _between("user_id is positive", "user_id", 1, None),
        "item_id": _between("item_id is positive (0 is padding)", "item_id", 1, None),
        "event_id": _between("event_id is non-negative", "event_id", 0, None),
        "request_id": _between("request_id is non-negative", "request_id", 0, None),
        "surface": _Spec("surface is a non-empty string", lambda gxe: (
            gxe.ExpectColumnValueLengthsToBeBetween(column="surface", min_value=1))),
    }
    specs += [spec for column, spec in value_specs.items() if column in present]
    if "event_id" in present:
        specs.append(_Spec("event_id is unique",
                           lambda gxe: gxe.ExpectColumnValuesToBeUnique(column="event_id"),
                           "drop exact duplicates with clean_events; conflicting ones are a "
                           "source bug"))
    checks = _run_suite("events", frame, specs)
    if "event_id" in present:
        ids = table.column("event_id")
        values = ids.drop_null().to_numpy(zero_copy_only=False)
        unique, counts = np.unique(values, return_counts=True)
        repeated = unique[counts > 1]
        checks.append(_full_check(
            "event_id is unique", counts[counts > 1] - 1, table.num_rows,
            [v.item() for v in repeated[:_N_EXAMPLES]],
            "rows beyond the first of each repeated event_id"))
    return ValidationReport("events", table.num_rows, int(rows.size), checks)


# --------------------------------------------------------------------------- examples


def _fixed_lists(column: pa.ChunkedArray, length: int, value_type: pa.DataType,
                 ) -> np.ndarray | None:
    """A list column as a dense ``(N, length)`` array (null rows as zeros), or None when its
    rows do not all have ``length`` entries."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
            or pa.types.is_fixed_size_list(array.type)):
        return None
    lengths = pc.list_value_length(array).fill_null(length).to_numpy(zero_copy_only=False)
    if (lengths != length).any():
        return None
    target = pa.list_(value_type, length)
    try:
        array = array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if array.null_count:
        array = pc.fill_null(array, pa.scalar([0] * length, target))
    flat = array.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(array), length)


def _infer_seq_len(table: pa.Table) -> int:
    if "seq_item_ids" in table.column_names:
        list_type = table.schema.field("seq_item_ids").type
        if pa.types.is_fixed_size_list(list_type):
            return list_type.list_size
        lengths = pc.list_value_length(table.column("seq_item_ids")).drop_null()
        if len(lengths):
            return int(pc.max(lengths).as_py())
    return SEQ_LEN


def _infer_emb_dim(table: pa.Table) -> int:
    if "user_batch_emb" in table.column_names:
        list_type = table.schema.field("user_batch_emb").type
        if pa.types.is_fixed_size_list(list_type):
            return list_type.list_size
    return USER_EMB_DIM


def example_helper_columns(table: pa.Table, seq_len: int) -> dict[str, np.ndarray]:
    """The flattened helper columns of the examples suite, for every row (vectorised).

    Returns ``{name: (N,) array}`` for the helpers listed in the module docstring that the
    table's columns allow; ``max_seq_ts_minus_request`` is float64 with NaN for empty
    sequences. Work is done in batches of rows to bound memory (``(B, L)`` arrays).
    """
    names = set(table.column_names)
    out: dict[str, list[np.ndarray]] = {}
    sequence_actions = np.array([int(a) for a in SEQUENCE_ACTIONS], dtype=np.int64)
    head_codes = np.array([int(a) for a in HEAD_ACTIONS], dtype=np.int64)
    has_seq = {"seq_len", "seq_item_ids", "seq_action_types", "seq_timestamps_ms",
               "request_time_ms"} <= names
    has_labels = {"outcome", *(f"label_{h}" for h in HEADS)} <= names
    emb_dim = _infer_emb_dim(table)
    for start in range(0, max(table.num_rows, 1), _BATCH_ROWS):
        batch = table.slice(start, _BATCH_ROWS)
        n = batch.num_rows
        if has_seq:
            items = _fixed_lists(batch.column("seq_item_ids"), seq_len, pa.int64())
            actions = _fixed_lists(batch.column("seq_action_types"), seq_len, pa.int64())
            stamps = _fixed_lists(batch.column("seq_timestamps_ms"), seq_len, pa.int64())
            if items is not None and actions is not None and stamps is not None:
                lengths = batch.column("seq_len").cast(pa.int64()).fill_null(0).to_numpy()
                request = batch.column("request_time_ms").cast(pa.int64()).fill_null(0)
                request = request.to_numpy()
                declared = np.arange(seq_len)[None, :] < lengths[:, None]
                padding_bad = ~declared & ((actions != 0) | (items != 0) | (stamps != 0))
                slot_bad = declared & (~np.isin(actions, sequence_actions) | (items <= 0)
                                       | (stamps <= 0))
                # leakage is judged on every slot that is real by either definition
                real = declared | (actions != 0)
                newest = np.where(real, stamps, np.iinfo(np.int64).min).max(axis=1)
                diff = np.where(real.any(axis=1), (newest - request).astype(np.float64), np.nan)
                order_bad = declared[:, 1:] & (stamps[:, 1:] > stamps[:, :-1])
                out.setdefault("max_seq_ts_minus_request", []).append(diff)
                out.setdefault("seq_padding_violations", []).append(padding_bad.sum(axis=1))
                out.setdefault("seq_slot_violations", []).append(slot_bad.sum(axis=1))
                out.setdefault("seq_order_violations", []).append(order_bad.sum(axis=1))
        if has_labels:
            outcome = batch.column("outcome").cast(pa.int64()).fill_null(-1).to_numpy()
            labels = np.stack([batch.column(f"label_{h}").cast(pa.int64()).fill_null(-1)
                               .to_numpy() for h in HEADS], axis=1)
            expected = (outcome[:, None] == head_codes[None, :]).astype(np.int64)
            out.setdefault("label_outcome_mismatch", []).append(
                (labels != expected).sum(axis=1))
        if "user_batch_emb" in names:
            emb = _fixed_lists(batch.column("user_batch_emb"), emb_dim, pa.float32())
            if emb is not None:
                out.setdefault("user_emb_non_finite", []).append(
                    (~np.isfinite(emb)).sum(axis=1))
        if n == 0:
            break
    return {name: np.concatenate(parts) for name, parts in out.items()}


def validate_examples(
    table: Any,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    seed: int = 0,
    seq_len: int | None = None,
    min_timestamp_ms: int = MIN_TIMESTAMP_MS,
    max_timestamp_ms: int = MAX_TIMESTAMP_MS,
) -> ValidationReport:
    """Run the examples suite on ``table`` (``pa.Table`` / DataFrame / Parquet file or dir).

    ``seq_len`` defaults to the size of the ``seq_item_ids`` lists. GX checks a deterministic
    sample of at most ``max_rows`` rows; leakage, padding/slot consistency and the list
    columns' types are checked on all rows.
    """
    table = _to_table(table, "examples")
    length = int(seq_len) if seq_len is not None else _infer_seq_len(table)
    present = table.column_names
    # the optional engagement-counter columns, when the builder wrote them
    schema = example_schema(seq_len=length, user_emb_dim=_infer_emb_dim(table),
                            counters=any(name in present for name in COUNTER_COLUMNS))
    list_columns = [f.name for f in schema if pa.types.is_fixed_size_list(f.type)]
    scalar_schema = pa.schema([f for f in schema if f.name not in list_columns])
    helpers = example_helper_columns(table, length)
    rows = sample_indices(table.num_rows, max_rows, seed)
    scalar_present = [c for c in scalar_schema.names if c in present]
    frame = table.select(scalar_present).take(pa.array(rows, pa.int64())).to_pandas()
    for name, values in helpers.items():
        frame[name] = values[rows]

    # the GX frame is a flattened view (list columns -> helper columns), so the column list
    # itself is checked on the Arrow table
    column_spec = _columns_spec(schema.names, present)
    columns_ok = list(present) == schema.names
    columns_check = CheckResult(
        name=column_spec.name, success=columns_ok, expectation="arrow schema",
        scope="all rows", observed=None if columns_ok else list(present),
        hint="" if columns_ok else str(column_spec.hint))
    specs = _type_and_null_specs(scalar_schema, present)
    ts_hint = _timestamp_hint(min_timestamp_ms, max_timestamp_ms)
    value_specs: list[tuple[str, _Spec]] = [
        ("seq_len", _between(f"seq_len is in [0, {length}]", "seq_len", 0, length)),
        ("outcome", _in_set("outcome is an event action (1..4)", "outcome",
                            [int(a) for a in EVENT_ACTIONS])),
        *[(f"label_{h}", _in_set(f"label_{h} is 0 or 1", f"label_{h}", [0, 1]))
          for h in HEADS],
        ("label_outcome_mismatch", _in_set(
            "labels match the outcome (label_h = 1 exactly when the outcome is h)",
            "label_outcome_mismatch", [0], "the value is the number of disagreeing labels")),
        ("request_time_ms", _between("request_time_ms is Unix milliseconds in the plausible "
                                     "window", "request_time_ms", min_timestamp_ms,
                                     max_timestamp_ms, ts_hint)),
        ("user_id", _between("user_id is positive", "user_id", 1, None)),
        ("item_id", _between("item_id is positive (0 is padding)", "item_id", 1, None)),
        ("request_id", _between("request_id is non-negative", "request_id", 0, None)),
        ("surface_id", _between("surface_id is a known surface", "surface_id", 0,
                                len(SURFACES) - 1)),
        ("max_seq_ts_minus_request", _between(
            "no leakage: every sequence action is strictly before the request",
            "max_seq_ts_minus_request", None, -1,
            "the value is newest sequence timestamp - request_time_ms (ms)")),
        ("seq_padding_violations", _in_set(
            "padding slots (from seq_len on) are action 0, item 0, timestamp 0",
            "seq_padding_violations", [0], "the value is the number of bad slots")),
        ("seq_slot_violations", _in_set(
            "real slots (before seq_len) hold an engagement with item > 0 and timestamp > 0",
            "seq_slot_violations", [0], "the value is the number of bad slots")),
        ("seq_order_violations", _in_set(
            "sequence is newest first", "seq_order_violations", [0],
            "the value is the number of out-of-order neighbours")),
        ("user_emb_non_finite", _in_set(
            "user_batch_emb is finite", "user_emb_non_finite", [0],
            "the value is the number of NaN/inf entries")),
    ]
    specs += [spec for column, spec in value_specs if column in frame.columns]
    checks = [columns_check] + _run_suite("examples", frame, specs)
    checks += _full_example_checks(table, schema, list_columns, helpers, length)
    return ValidationReport("examples", table.num_rows, int(rows.size), checks)


def _full_example_checks(table: pa.Table, schema: pa.Schema, list_columns: list[str],
                         helpers: dict[str, np.ndarray], length: int) -> list[CheckResult]:
    checks = []
    n_rows = table.num_rows
    for name in list_columns:
        if name not in table.column_names:
            continue  # reported by the columns check
        expected = schema.field(name).type
        actual = table.schema.field(name).type
        checks.append(CheckResult(
            name=f"{name} has type {expected}", success=actual == expected,
            expectation="arrow type", column=name, scope="all rows",
            observed=None if actual == expected else str(actual),
            hint="" if actual == expected else f"every row needs exactly {length} entries "
                                               f"of {expected.value_type}"))
        nulls = int(table.column(name).null_count)
        if nulls:
            checks.append(_full_check(f"{name} is not null", np.ones(nulls, dtype=bool),
                                      n_rows, []))
    request_ids = (table.column("request_id").to_numpy(zero_copy_only=False)
                   if "request_id" in table.column_names else None)

    def rows_where(bad: np.ndarray, values: np.ndarray | None = None) -> list[Any]:
        index = np.flatnonzero(bad)[:_N_EXAMPLES]
        shown = []
        for i in index:
            entry: dict[str, Any] = {"row": int(i)}
            if request_ids is not None:
                entry["request_id"] = request_ids[i].item()
            if values is not None:
                entry["value"] = values[i].item()
            shown.append(entry)
        return shown

    if "max_seq_ts_minus_request" in helpers:
        diff = helpers["max_seq_ts_minus_request"]
        with np.errstate(invalid="ignore"):
            leaked = diff >= 0
        checks.append(_full_check(
            "no leakage: every sequence action is strictly before the request", leaked,
            n_rows, rows_where(leaked, diff),
            "value = newest sequence timestamp - request_time_ms (ms); the sequence must only "
            "hold actions strictly before the request"))
    for name, title in (("seq_padding_violations", "padding slots are (0, 0, 0)"),
                        ("seq_slot_violations", "real slots hold engagements")):
        if name in helpers:
            bad = helpers[name] > 0
            checks.append(_full_check(title, bad, n_rows, rows_where(bad, helpers[name]),
                                      "value = number of bad slots in the row"))
    for name in COUNTER_COLUMNS:
        if name not in table.column_names or table.schema.field(name).type != schema.field(
                name).type:
            continue  # reported by the columns / type checks
        counts = np.asarray(table.column(name).combine_chunks().flatten(), np.int64).reshape(
            -1, 4)
        bad = (counts < 0).any(axis=1) | (counts[:, 1:].sum(axis=1) > counts[:, 0])
        checks.append(_full_check(
            f"{name} are counts: non-negative, clicks + saves + hides <= impressions", bad,
            n_rows, rows_where(bad), "(impressions, clicks, saves, hides) before the request"))
    return checks

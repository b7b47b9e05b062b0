"""TensorBoard HParams sessions, so runs compare side by side (HParams tab), each written beside the run's own
curves: in its events folder (RunResult.events_dir: RUN_DIR/tensorboard, or a grid run's
GRID_DIR/tensorboard/<name>). TensorBoard then lists each run once, under the name its curves have, and the
HParams tab links a session to them. No experiment summary (it would be one more entry in the runs list): the
hparams plugin infers the domains and the metrics from the sessions.

Hyper-parameters: model, task, training languages, seed, the table's differing columns, and the signature (the
run folder's name); metrics: test F1 per evaluation language (`test/f1_<lang>`) and the best epoch's dev F1
(`eval/best_f1`), as scalars beside the run's own train/ and eval/ curves.

One file per run, SESSION_FILE. It sorts after the run's own event files (TensorBoard reads a folder's files in
name order) and its events are at the run's last step: TensorBoard's Python reader drops every event from a
step onwards when an earlier step follows it (data "orphaned" by a restart), which a session at step 0 would
do to the run's curves. Its bytes depend only on the run's results (the time stamps are results.json's), so it
is rewritten only when they change and rerunning adds nothing.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from medtrain.grid.table import RunResult, Table
from medtrain.monitor import HISTORY

SESSION_FILE = "events.out.tfevents.medtrain-hparams"
"""Holds `tfevents`, as TensorBoard's readers require, and sorts after `events.out.tfevents.<10-digit time>...`."""


def _scalar(value: Any) -> int | float | str | bool:
    return value if isinstance(value, (int, float, str, bool)) else json.dumps(value)


def session(run: RunResult, table: Table) -> tuple[dict[str, Any], dict[str, float]]:
    """(hyper-parameters, metrics) of one run."""
    hparams = {"model": table.models[run.model], "task": run.task, "train": run.train, "seed": run.seed,
               **{c: _scalar(run.params.get(c, "")) for c in table.columns}, "signature": run.run_dir.name}
    metrics = {f"test/f1_{lang}": s["f1"] for lang, s in run.scores.items() if s["f1"] is not None}
    if run.dev_f1 is not None:
        metrics["eval/best_f1"] = run.dev_f1  # the eval/f1 curve ends at the last epoch, not the best
    return hparams, metrics


def last_step(run_dir: Path) -> int:
    """The run's last logged step (history.jsonl, as its TensorBoard curves), 0 without one."""
    try:
        lines = (run_dir / HISTORY).read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    steps = [json.loads(line).get("step", 0) for line in lines if line.strip()]
    return max(steps, default=0)


def session_events(run: RunResult, table: Table) -> bytes:
    """The run's session as an event file: the hparams plugin's start, the metrics, its end."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    hparams, metrics = session(run, table)
    when = (run.run_dir / "results.json").stat().st_mtime
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=when)
    for key, value in hparams.items():
        if isinstance(value, bool):
            start.hparams[key].bool_value = value
        elif isinstance(value, (int, float)):
            start.hparams[key].number_value = value
        else:
            start.hparams[key].string_value = value
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=when)

    def plugin_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
        return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))])

    step = last_step(run.run_dir)
    out = io.BytesIO()
    writer = RecordWriter(out)
    for event in (
            Event(wall_time=when, file_version="brain.Event:2"),
            Event(wall_time=when, step=step, summary=plugin_summary(
                metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start))),
            Event(wall_time=when, step=step, summary=Summary(
                value=[Summary.Value(tag=tag, simple_value=value) for tag, value in metrics.items()])),
            Event(wall_time=when, step=step, summary=plugin_summary(
                metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)))):
        writer.write(event.SerializeToString())
    return out.getvalue()


def write_hparams(runs: list[RunResult], table: Table) -> list[Path]:
    """Each run's session file, written where it changed; returns them all."""
    written = []
    for run in runs:
        path = run.events_dir / SESSION_FILE
        data = session_events(run, table)
        if not path.is_file() or path.read_bytes() != data:
            _write_atomic(path, data)
        written.append(path)
    return written


def _write_atomic(path: Path, data: bytes) -> None:
    """Through a temporary file whose name TensorBoard does not read (no `tfevents` in it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".hparams.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""Metrics sinks: JSONL rows per step, resume drops rows at or after the resume step, PNG plot is written."""

import json
import struct
import time

from skill1_jax.metrics import MetricsWriter, read_jsonl


def test_resume_drops_rows_from_resume_step_and_plot_is_written(tmp_path):
    w = MetricsWriter(tmp_path, tensorboard=False)
    for step in range(1, 5):
        w.write(step, {"loss": step * 0.5, "note": "not a number"})
    w.close()
    w = MetricsWriter(tmp_path, tensorboard=False, resume_step=3)  # a run restored from the step-2 checkpoint
    w.write(3, {"loss": 9.0})
    png = w.plot()
    w.close()
    assert [(r["step"], r["loss"]) for r in read_jsonl(tmp_path / "metrics.jsonl")] == [(1, 0.5), (2, 1.0), (3, 9.0)]
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_torn_last_line_is_ignored_and_tensorboard_events_written(tmp_path):
    w = MetricsWriter(tmp_path)
    w.write(1, {"loss": float("nan"), "acc": 1})
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')  # crash mid-write
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows == [{"step": 1, "loss": "nan", "acc": 1.0}]
    assert any(p.name.startswith("events") for p in (tmp_path / "tb").iterdir())
    json.dumps(rows)


def tensorboard_events(path):
    """The ``Event`` protos of one TFRecord events file (length, crc, payload, crc per record)."""
    from tensorboardX.proto.event_pb2 import Event

    data, i, out = path.read_bytes(), 0, []
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        out.append(Event.FromString(data[i + 12:i + 12 + n]))
        i += 12 + n + 4
    return out


def test_resumed_tensorboard_file_starts_with_a_purge_marker_at_the_resume_step(tmp_path):
    from tensorboardX.proto.event_pb2 import SessionLog

    w = MetricsWriter(tmp_path)
    for step in range(1, 5):
        w.write(step, {"loss": float(step)})
    w.close()
    first = {p.name for p in (tmp_path / "tb").iterdir()}
    time.sleep(1.1)  # event file names carry the second they were opened
    w = MetricsWriter(tmp_path, resume_step=3)
    w.write(3, {"loss": 9.0})
    w.close()
    (new,) = [p for p in (tmp_path / "tb").iterdir() if p.name not in first]
    events = tensorboard_events(new)
    starts = [e.step for e in events if e.HasField("session_log") and e.session_log.status == SessionLog.START]
    scalars = [(e.step, v.simple_value) for e in events for v in e.summary.value]
    assert starts == [3]  # TensorBoard hides the first file's steps 3 and 4
    assert scalars == [(3, 9.0)]
    old = [(e.step, v.simple_value) for p in (tmp_path / "tb").iterdir() if p.name in first
           for e in tensorboard_events(p) for v in e.summary.value]
    assert old == [(s, float(s)) for s in range(1, 5)]

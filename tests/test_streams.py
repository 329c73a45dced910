"""Streams in the data: which clips a device met one after another, and when."""

import numpy as np
import pytest

from edgeswitch.data import ClipBatch, load_dataset
from edgeswitch.data.streams import stream_lists, with_streams
from edgeswitch.dmd import DMDRecords
from edgeswitch.errors import DataError


def _npz(tmp_path, name="clips.npz", n=12, **arrays):
    rng = np.random.default_rng(0)
    base = {"X": rng.normal(size=(n, 8, 3)).astype(np.float32),
            "y": np.asarray(["a", "b"] * (n // 2))}
    path = tmp_path / name
    np.savez(path, **(base | arrays))
    return path


def test_npz_streams_and_times_are_read_and_met_in_time_order(tmp_path):
    streams = np.asarray(["s1"] * 6 + ["s2"] * 6)
    t = np.concatenate([np.arange(6), np.arange(6) * 2.0])
    data = load_dataset(_npz(tmp_path, streams=streams, t=t))
    assert data.streams_given and list(data.streams) == list(streams)
    lists = stream_lists(data.streams, data.t)
    assert [len(s) for s in lists] == [6, 6]
    assert all((np.diff(data.t[s]) > 0).all() for s in lists)
    # a stream is never cut by a split: without groups, the stream is the group
    assert set(data.groups) == {"s1", "s2"}


def test_a_file_without_streams_has_every_clip_alone(tmp_path):
    data = load_dataset(_npz(tmp_path))
    assert not data.streams_given
    assert len(stream_lists(data.streams, data.t)) == len(data)


@pytest.mark.parametrize("arrays, problem", [
    ({"streams": np.asarray(["s"] * 11)}, "'streams' has shape (11,), expected (12,)"),
    ({"streams": np.asarray(["s"] * 12), "t": np.r_[np.arange(11.0), np.nan]},
     "'t' holds NaN or inf at clip index 11"),
    ({"streams": np.asarray(["s"] * 12), "t": np.r_[np.arange(10.0), 8.5, 11.0]},
     "out of time order"),
    ({"streams": np.asarray(["s"] * 12), "t": np.r_[np.arange(11.0), 10.0]},
     "has two clips at t=10 s"),
    ({"t": np.arange(12.0)}, "'t' without 'streams'"),
])
def test_bad_streams_are_named(tmp_path, arrays, problem):
    with pytest.raises(DataError) as err:
        load_dataset(_npz(tmp_path, **arrays))
    assert problem in str(err.value)


def test_a_stream_across_two_groups_is_refused(tmp_path):
    with pytest.raises(DataError, match="spans groups"):
        load_dataset(_npz(tmp_path, streams=np.asarray(["s"] * 12), t=np.arange(12.0),
                          groups=np.asarray(["g1"] * 6 + ["g2"] * 6)))


def test_subject_streams_put_a_groups_recordings_end_to_end_in_a_seeded_order():
    data = load_dataset("watch")
    by_subject = with_streams(data, "subject", seed=3)
    assert set(by_subject.streams) == set(data.groups)
    for s in stream_lists(by_subject.streams, by_subject.t):
        t = by_subject.t[s]
        assert (np.diff(t) > 0).all()
        recs = [str(i).rsplit("/", 1)[0] for i in by_subject.ids[s]]
        # each recording is one contiguous run, in its own time order
        runs = [r for i, r in enumerate(recs) if i == 0 or r != recs[i - 1]]
        assert len(runs) == len(set(runs))
    again = with_streams(data, "subject", seed=3)
    other = with_streams(data, "subject", seed=4)
    assert np.array_equal(again.t, by_subject.t) and not np.array_equal(other.t, by_subject.t)
    alone = with_streams(data, "none")
    assert len(stream_lists(alone.streams, alone.t)) == len(data)
    assert with_streams(data, "recording") is data
    with pytest.raises(DataError, match="streams must be one of"):
        with_streams(data, "sessions")


def test_long_group_names_are_not_truncated_into_one_stream():
    """Stream ids shorter than the group names once merged distinct groups' clips."""
    n = 6
    data = ClipBatch(X=np.zeros((n, 4, 2)), y=np.zeros(n, int),
                     groups=np.asarray([f"a-rather-long-group-name-{i}" for i in range(n)]),
                     classes=("a", "b"), ids=np.asarray([f"c{i}" for i in range(n)]))
    out = with_streams(data, "subject")
    assert len(set(out.streams)) == n


def test_dmd_records_keep_their_streams_through_parquet(tmp_path):
    rng = np.random.default_rng(1)
    n = 8
    rec = DMDRecords(np.arange(n).astype(str), np.repeat(["g0", "g1"], 4),
                     rng.dirichlet(np.ones(3), n), rng.normal(size=(n, 2)),
                     rng.dirichlet(np.ones(3), n), ("a", "b", "c"), "e", "c",
                     streams=np.repeat(["s0", "s1"], 4), t=np.tile([3.0, 2.0, 1.0, 0.0], 2))
    back = DMDRecords.from_parquet(rec.to_parquet(tmp_path / "r.parquet"))
    assert np.array_equal(back.streams, rec.streams) and np.array_equal(back.t, rec.t)
    assert [list(s) for s in back.stream_lists()] == [[3, 2, 1, 0], [7, 6, 5, 4]]
    joined = back.concat(back)
    assert len(joined.streams) == 2 * n

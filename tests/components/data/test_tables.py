"""LazyBlobs: random access to a binary column, with row groups cached up to a byte budget."""

import pickle

import numpy as np
import pyarrow as pa
import pytest

from components.data.tables import LazyBlobs, write_table


@pytest.fixture
def blob_folder(tmp_path):
    """Two part files, 40 rows of 1000-byte blobs (row 7 null) in row groups of 4 rows."""
    rng = np.random.default_rng(0)
    values = [rng.bytes(1000) for _ in range(40)]
    values[7] = None
    for part, rows in enumerate((values[:24], values[24:])):
        write_table(pa.table({"blob": pa.array(rows, pa.binary())}), tmp_path / f"part-{part}.parquet",
                    row_group_size=4)
    return tmp_path, values


def test_rows_come_back_in_folder_order_under_random_access(blob_folder):
    folder, values = blob_folder
    blobs = LazyBlobs(folder, "blob")
    assert len(blobs) == 40
    for row in np.random.default_rng(1).integers(0, 40, size=200):
        assert blobs[int(row)] == values[row]
    with pytest.raises(IndexError, match="blob: row 40 outside"):
        blobs[40]


def test_a_column_within_the_budget_is_read_from_disk_once(blob_folder):
    folder, values = blob_folder
    blobs = LazyBlobs(folder, "blob")
    for _ in range(3):
        for row in np.random.default_rng(2).permutation(40):
            assert blobs[int(row)] == values[row]
    assert blobs.reads == 10  # 6 + 4 row groups, each read once


def test_a_small_budget_bounds_the_cache_and_rereads(blob_folder):
    folder, values = blob_folder
    blobs = LazyBlobs(folder, "blob", cache_bytes=9000)  # about two 4-row groups
    for row in np.random.default_rng(3).permutation(40):
        assert blobs[int(row)] == values[row]
        assert blobs.cached_bytes <= 9000
    assert len(blobs._cache) <= 2
    reads = blobs.reads
    for row in range(40):
        blobs[row]
    assert blobs.reads > reads  # evicted groups are read again


def test_a_pickled_copy_starts_with_an_empty_cache(blob_folder):
    folder, values = blob_folder
    blobs = LazyBlobs(folder, "blob")
    blobs[0]
    copy = pickle.loads(pickle.dumps(blobs))
    assert copy.cached_bytes == 0 and copy.reads == 0 and not copy._cache
    assert copy[39] == values[39] and copy.reads == 1

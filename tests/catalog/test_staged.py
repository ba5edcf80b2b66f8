"""The staged selection's join of one ID range (``catalog.staged.join_bucket``) on small hand-made files."""

from __future__ import annotations

import numpy as np

from survey_deblend.catalog.cuts import gold_quality_cut
from survey_deblend.catalog.staged import ROW, SHEAR_DTYPE, join_bucket, save_atomic
from survey_deblend.config.catalog import CutsConfig

GOLD = np.dtype([("COADD_OBJECTS_ID", "i8"), (ROW, "i8"), ("RA", "f8"), ("DEC", "f8"), ("MODEST_CLASS", "i2"),
                 ("FLAGS_I", "i2")])


def _shear(tmp_path, name, ids, rows):
    array = np.zeros(len(ids), dtype=SHEAR_DTYPE)
    array["coadd_objects_id"], array[ROW] = ids, rows
    order = np.argsort(array["coadd_objects_id"], kind="stable")
    return str(save_atomic(tmp_path / name, array[order]))


def _gold(tmp_path, name, ids, rows, ra):
    array = np.zeros(len(ids), dtype=GOLD)
    array["COADD_OBJECTS_ID"], array[ROW], array["RA"], array["MODEST_CLASS"] = ids, rows, ra, 1
    return str(save_atomic(tmp_path / name, array[np.argsort(array["COADD_OBJECTS_ID"], kind="stable")]))


def test_first_gold_copy_in_file_order_wins_and_repeats_are_counted(tmp_path):
    shear = [_shear(tmp_path, "s0.npy", [30, 10], [0, 1]), _shear(tmp_path, "s1.npy", [20, 40], [2, 3])]
    # ID 20 is in both gold files: the copy of the earlier row (file 0, row 5) wins, whatever the ID order
    gold = [_gold(tmp_path, "g0.npy", [20, 30, 99], [5, 6, 7], [2.0, 3.0, 9.0]),
            _gold(tmp_path, "g1.npy", [20, 10], [8, 9], [2.5, 1.0])]
    rows, stats = join_bucket(shear, gold, None, None, None)
    assert rows["coadd_objects_id"].tolist() == [10, 20, 30]  # 40 has no gold row
    assert rows["ra"].tolist() == [1.0, 2.0, 3.0]
    assert stats == {"n_selected": 4, "found": 3, "gold_duplicate_ids": 1, "quality": None, "repeated": 0}
    low, low_stats = join_bucket(shear, gold, None, 25, None)  # the range [.., 25): IDs 10 and 20 only
    assert low["coadd_objects_id"].tolist() == [10, 20] and low_stats["n_selected"] == 2


def test_a_range_without_gold_rows_keeps_nothing(tmp_path):
    shear = [_shear(tmp_path, "s.npy", [1, 2], [0, 1])]
    gold = [_gold(tmp_path, "g.npy", [7, 8], [0, 1], [0.0, 0.0])]
    rows, stats = join_bucket(shear, gold, None, None, gold_quality_cut(CutsConfig(gold_quality=True)))
    assert len(rows) == 0 and stats["found"] == 0 and stats["quality"] == 0 and stats["n_selected"] == 2


def test_repeated_shear_ids_report_the_first_in_file_order(tmp_path):
    shear = [_shear(tmp_path, "s0.npy", [5, 6], [0, 1]), _shear(tmp_path, "s1.npy", [3, 5, 3], [2, 3, 4])]
    rows, stats = join_bucket(shear, [], None, None, None)
    assert len(rows) == 0 and stats["repeated"] == 4 and stats["first_repeated"] == (0, 5)

"""The shipped Annex E table is generated from the standard and has not drifted."""

from __future__ import annotations

import pytest

from common.deid.data import generate
from common.deid.table import rows, safe_private
from tests.conftest import SHARED

SOURCE = SHARED / "data" / "dicom-standard"


@pytest.mark.skipif(not SOURCE.is_dir(), reason="the standard's data is not beside the repo")
def test_the_shipped_tables_equal_a_fresh_generation(tmp_path) -> None:
    generate.write(SOURCE, tmp_path)
    for name in ("annex_e.json", "safe_private.tsv"):
        assert (tmp_path / name).read_text() == (generate.HERE / name).read_text(), name


def test_the_table_holds_every_row_and_action_of_e_1_1() -> None:
    table = rows()
    assert len(table) == 621
    assert {r.basic for r in table} == {"X", "D", "U", "Z", "X/D", "X/Z", "X/Z/D", "Z/D", "X/Z/U*"}
    named = {option for r in table for option in r.options}
    assert len(named) == 10


def test_safe_private_attributes_include_known_vendor_entries() -> None:
    table = safe_private()
    assert table[(0x0019, "GEMS_ACQU_01", 0x02)].action == "keep"
    assert len(table) > 1500  # top-level entries of 8,786 rows, one per element

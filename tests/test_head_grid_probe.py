"""models/head_grid_probe.py's pooling: the regions a head on G x G regions reads."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "models"))
import head_grid_probe as probe


def test_one_region_is_the_global_average_the_shipped_head_reads() -> None:
    maps = np.random.default_rng(0).integers(-128, 128, (3, 6, 6, 5), dtype=np.int8)
    out = probe.grid_pool(maps, 0.5, -10, 1)
    np.testing.assert_allclose(out, (maps.astype(np.float32) + 10).mean(axis=(1, 2)) * 0.5)


def test_regions_come_in_row_column_channel_order() -> None:
    maps = np.zeros((1, 6, 6, 2), np.int8)
    maps[0, 3:, :3, 1] = 4  # bottom-left region, second channel
    out = probe.grid_pool(maps, 1.0, 0, 2).reshape(2, 2, 2)
    assert out[1, 0, 1] == 4 and out.sum() == 4
    with pytest.raises(ValueError, match="4x4"):
        probe.grid_pool(np.zeros((1, 6, 6, 2), np.int8), 1.0, 0, 4)

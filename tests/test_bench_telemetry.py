"""The long-run trend of bench_telemetry reports what it claims (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_telemetry import TrendRow, block_percentiles, trend_table


def test_each_block_gets_its_own_percentiles_and_a_partial_last_block_counts() -> None:
    latencies_ns = np.concatenate(
        [np.full(10, 1_000), np.full(10, 2_000), np.full(5, 3_000)]
    ).astype(np.int64)
    p50, p99 = block_percentiles(latencies_ns, 10)
    assert p50 == pytest.approx((1.0, 2.0, 3.0))
    assert p99 == pytest.approx((1.0, 2.0, 3.0))


def test_the_trend_table_gives_ratios_to_the_baseline_and_one_column_per_block() -> None:
    rows = [
        TrendRow("base", 20, 100.0, 200.0, 1000.0, (90.0, 110.0), (150.0, 250.0), 10.0),
        TrendRow("ours", 20, 150.0, 100.0, 2000.0, (140.0, 160.0), (90.0, 110.0), -5.0),
    ]
    text = trend_table(rows, baseline="base", block=10)
    ours = next(line for line in text.splitlines() if line.startswith("| ours | 20 "))
    assert "| 1.50 | 0.50 | 2.00 | -5 |" in ours
    assert "| requests 0-10 | requests 10-20 |" in text
    long_rows = [
        TrendRow(r.peer, 20_000, r.p50_us, r.p99_us, r.rps, r.block_p50_us, r.block_p99_us,
                 r.rss_growth_kib)
        for r in rows
    ]
    assert "| requests 0-10k | requests 10k-20k |" in trend_table(
        long_rows, baseline="base", block=10_000
    )
    assert "| ours | 140 / 90 | 160 / 110 |" in text

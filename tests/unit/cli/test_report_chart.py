"""The report's bar chart: bars in proportion to the largest counter, small ones visible."""

from __future__ import annotations

import io

from rich.console import Console

from services.cli.campaign_views import bar_chart


def _bars(values: list[tuple[str, int]], width: int = 40) -> dict[str, tuple[str, int]]:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(
        bar_chart([(name, value, "green") for name, value in values], width=width)
    )
    rows = {}
    for line in out.getvalue().splitlines():
        name, count, *bar = line.split()
        rows[name] = (count, len(bar[0]) if bar else 0)
    return rows


def test_bars_are_in_proportion_to_the_largest_counter():
    rows = _bars([("targeted", 1000), ("delivered", 750), ("bounced", 250), ("failed", 0)])
    assert rows == {
        "targeted": ("1,000", 40),
        "delivered": ("750", 30),
        "bounced": ("250", 10),
        "failed": ("0", 0),
    }


def test_a_handful_next_to_a_million_still_gets_a_cell():
    rows = _bars([("delivered", 1_000_000), ("failed", 3)])
    assert rows["delivered"] == ("1,000,000", 40)
    assert rows["failed"] == ("3", 1)


def test_all_zero_draws_no_bars():
    assert _bars([("targeted", 0), ("sent", 0)]) == {"targeted": ("0", 0), "sent": ("0", 0)}

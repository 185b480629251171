"""The search results table fits the terminal: on 80 columns one line a hit (title, score,
date; no URL), on a wide terminal the id and the URL too."""

import io

from rich.console import Console

from pipelines.cli.tables import search_table
from pipelines.serving.search import SearchHit

HITS = [SearchHit(id=f"news-2026-11-{i:02d}-economy", score=0.9 - i / 100,
                  title="반도체 수출이 석 달 연속 늘었다: 메모리 가격 반등과 인공지능 서버 수요가 이끌어 " * 2,
                  url=f"https://news.example.com/articles/2026/11/29/economy/semiconductor-exports-rise-{i}.html",
                  published_at=1764400000 + i) for i in range(5)]


def render(width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(search_table("반도체 수출", HITS, "news:koen-e5-tiny", None, console.width))
    return console.file.getvalue().splitlines()


def test_a_narrow_terminal_gets_one_line_per_hit_without_the_url():
    lines = render(80)
    assert all(len(line) <= 80 for line in lines)
    rows = [line for line in lines if line.startswith("│ ")]
    assert len(rows) == 5  # one line a hit: nothing folded onto a second line
    assert all("2025-11-29" in row and "반도체" in row for row in rows)
    assert not any("https://" in line for line in lines)


def test_a_wide_terminal_also_shows_the_id_and_the_url():
    lines = render(200)
    rows = [line for line in lines if line.startswith("│ ")]
    assert len(rows) == 5
    assert all("https://news.example.com/" in row and "news-2026-11-" in row for row in rows)

"""The editor's form state: the buttons' actions, blank items, and problems mapped back to the fields shown."""

from __future__ import annotations

import pytest

from newsletter.web.admin.digest_form import MAX_ITEMS, DigestForm


def form(*headlines: str) -> DigestForm:
    posted = {"title": "T", "date": "2025-04-26"}
    for index, headline in enumerate(headlines):
        posted |= {
            f"items-{index}-headline": headline,
            f"items-{index}-source": "S",
            f"items-{index}-url": f"https://example.com/{index}",
        }
    return DigestForm.posted(posted)


def headlines(state: DigestForm) -> list[str]:
    return [item["headline"] for item in state.items]


@pytest.mark.parametrize(
    ("action", "changed", "after"),
    [
        ("up:1", True, ["b", "a", "c"]),
        ("down:1", True, ["a", "c", "b"]),
        ("remove:1", True, ["a", "c"]),
        ("add", True, ["a", "b", "c", ""]),
        ("up:0", False, ["a", "b", "c"]),
        ("down:2", False, ["a", "b", "c"]),
        ("remove:9", False, ["a", "b", "c"]),
        ("explode", False, ["a", "b", "c"]),
        ("up:-1", False, ["a", "b", "c"]),
    ],
)
def test_buttons_move_add_and_remove_items_and_ignore_anything_else(
    action: str, changed: bool, after: list[str]
) -> None:
    state = form("a", "b", "c")
    assert state.apply(action) is changed
    assert headlines(state) == after


def test_removing_the_last_item_leaves_a_blank_one_to_fill_in() -> None:
    state = form("a")
    state.apply("remove:0")
    assert headlines(state) == [""]


def test_items_keep_their_order_by_index_not_by_arrival_and_stop_at_the_limit() -> None:
    posted = {
        "items-10-headline": "late",
        "items-2-headline": "early",
        f"items-{MAX_ITEMS}-headline": "too many",
        "items-x-headline": "not an index",
        "items-3-colour": "not a field",
    }
    assert headlines(DigestForm.posted(posted)) == ["early", "late"]


def test_blank_items_are_left_out_and_problems_point_at_the_field_shown() -> None:
    state = form("a", "b")
    state.items.insert(1, dict.fromkeys(state.items[0], ""))  # a blank item between them
    state.items[2]["url"] = "ftp://x"
    assert state.validate() is None
    assert list(state.problems) == ["items.2.url"]  # the third item on screen, the second saved
    assert state.problem_list() == [("items-2-url", "Item 3, URL: must be an absolute http(s) URL, got 'ftp://x'")]
    state.items[2]["url"] = "https://example.com/b"
    digest = state.validate(slug="kept")
    assert digest is not None and digest.slug == "kept" and [i.headline for i in digest.items] == ["a", "b"]


def test_textareas_are_stored_with_line_feeds() -> None:
    state = DigestForm.posted({"intro": "one\r\ntwo\rthree"})
    assert state.top["intro"] == "one\ntwo\nthree"

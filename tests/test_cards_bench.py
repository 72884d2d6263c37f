"""benchmarks/cards.py: every scored set names a shipped model and a split file that exist."""
from __future__ import annotations

from benchmarks import cards
from llm4seg.models import list_models


def test_every_card_set_names_a_shipped_model_and_an_existing_split():
    shipped = {entry.name for entry in list_models()}
    for s in cards.SETS:
        assert s.model in shipped
        assert s.names is None or (cards.REPO / s.names).is_file()


def test_missing_data_is_skipped_not_failed(tmp_path, capsys):
    assert cards.main(["--models", "polyp", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped: no") == 2 and "all within" in out

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.directory import InvalidSearchPattern, number_matches, search_numbers
from tests.core.conftest import BUSINESS_CONTRACT, contract_id_of


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ("03", True),
        ("0355501", True),
        ("0355501039", True),
        ("0455", False),
        ("*1039", True),
        ("03*39", True),
        ("03*38", False),
        ("*", True),
        ("0355-501*", True),
    ],
)
def test_number_matches(pattern: str, matches: bool) -> None:
    assert number_matches("0355501039", pattern) is matches


@pytest.mark.parametrize("pattern", ["", "abc", "03?", "0%"])
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(InvalidSearchPattern):
        number_matches("0355501039", pattern)


def test_search_a_40_number_contract(sample_db: sessionmaker[Session]) -> None:
    with sample_db() as session:
        contract_id = contract_id_of(session, BUSINESS_CONTRACT)
        assert len(search_numbers(session, contract_id, "0355501")) == 40
        assert search_numbers(session, contract_id, "035550103") == [f"035550103{i}" for i in range(10)]
        assert search_numbers(session, contract_id, "*5") == [
            "0355501005",
            "0355501015",
            "0355501025",
            "0355501035",
        ]
        assert search_numbers(session, contract_id, "0300001111") == []  # another contract's number

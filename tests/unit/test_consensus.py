"""The overlap rule: majority, ties to the latest annotation."""

import pytest

from alpha.consensus import majority_vote


def test_majority_wins_and_agreement_is_its_share():
    result = majority_vote(["cat", "dog", "cat"])
    assert (result.label, result.index) == ("cat", 2)  # the latest "cat"
    assert result.agreement == pytest.approx(2 / 3)
    assert result.votes == {"cat": 2, "dog": 1}


def test_a_tie_goes_to_the_latest_of_the_tied_labels():
    assert majority_vote(["cat", "dog"]).label == "dog"
    assert majority_vote(["dog", "cat", "bird", "bird", "cat"]).label == "cat"
    assert majority_vote(["dog", "cat", "bird", "bird", "cat"]).agreement == 0.4


def test_one_annotation_agrees_with_itself():
    result = majority_vote(["cat"])
    assert (result.label, result.index, result.agreement) == ("cat", 0, 1.0)


def test_no_annotation_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        majority_vote([])

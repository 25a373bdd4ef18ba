"""Credentials inside URIs and query strings, as logs, errors and `config show` print them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon import redaction


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://admin:s3cr3t@mlflow:5000/api", "http://admin:***@mlflow:5000/api"),
        ("postgresql+psycopg://retrain:pw@db/retrain", "postgresql+psycopg://retrain:***@db/retrain"),
        ("https://ghp_abcdef@github.com/x.git", "https://***@github.com/x.git"),
        (
            "connect to s3://k:v@host failed; retry s3://k2:v2@other",
            "connect to s3://k:***@host failed; retry s3://k2:***@other",
        ),
        ("https://hooks/x?token=abc&channel=ops", "https://hooks/x?token=***&channel=ops"),
        (
            "https://s3/b/k?X-Amz-Signature=f00;X-Amz-Credential=AKIA",
            "https://s3/b/k?X-Amz-Signature=***;X-Amz-Credential=***",
        ),
        ("u?api_key=1&PASSWORD=2#frag", "u?api_key=***&PASSWORD=***#frag"),
        ("'http://h/?secret=abc' quoted", "'http://h/?secret=***' quoted"),
        # Not credentials: an e-mail address, a plain key=value, a path with '@'.
        ("mail ops@example.com", "mail ops@example.com"),
        ("epochs=10 lr0=0.01", "epochs=10 lr0=0.01"),
        ("models:/pets@champion", "models:/pets@champion"),
        ("http://mlflow:5000", "http://mlflow:5000"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redaction.redact(text) == shown


def test_redact_tree_reaches_every_string() -> None:
    tree = {"a": "http://u:p@h", "b": ["s3://k:v@h", ("x?token=t",)], "c": 3, "d": None}
    assert redaction.redact_tree(tree) == {
        "a": "http://u:***@h",
        "b": ["s3://k:***@h", ["x?token=***"]],
        "c": 3,
        "d": None,
    }


@given(
    password=st.text(
        alphabet=st.characters(
            blacklist_characters="/@?# \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0",
            blacklist_categories=("Zs", "Zl", "Zp", "Cs"),
        ),
        min_size=1,
    )
)
def test_no_password_survives(password: str) -> None:
    text = f"failed: http://user:{password}@host:1/x"
    assert redaction.redact(text) == "failed: http://user:***@host:1/x"

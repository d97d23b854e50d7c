"""The kernel client's lean message reader: the same messages as jupyter_client's, signatures still checked."""

from __future__ import annotations

import pytest
from jupyter_client.session import Session

from daemon.notebooks.kernel import LeanSession


def signed(session: Session, content: dict[str, object], *, version: str = "5.3") -> list[bytes]:
    message = session.msg("execute_result", content=content)
    message["header"]["version"] = version
    return session.serialize(message)[1:]  # without the delimiter: what feed_identities hands over


def test_reads_what_the_stock_session_reads_but_leaves_dates_as_text() -> None:
    stock = Session(key=b"secret")
    lean = LeanSession.like(stock)
    parts = signed(stock, {"data": {"text/plain": "2"}, "metadata": {}, "execution_count": 1})
    expected, got = stock.deserialize(list(parts)), lean.deserialize(list(parts))
    assert got["content"] == expected["content"] and got["msg_type"] == expected["msg_type"] == "execute_result"
    assert got["header"]["msg_id"] == expected["header"]["msg_id"]
    assert isinstance(got["header"]["date"], str) and not isinstance(expected["header"]["date"], str)


def test_a_forged_or_unsigned_message_is_refused() -> None:
    stock = Session(key=b"secret")
    lean = LeanSession.like(stock)
    parts = signed(Session(key=b"not the key"), {"data": {}, "metadata": {}, "execution_count": 1})
    with pytest.raises(ValueError, match="Invalid Signature"):
        lean.deserialize(list(parts))
    with pytest.raises(ValueError, match="Invalid Signature"):
        lean.deserialize([b"", *parts[1:]])


def test_an_older_protocol_is_adapted_as_jupyter_client_does() -> None:
    stock = Session(key=b"secret")
    parts = signed(stock, {"data": {"text/plain": "2"}, "metadata": {}, "execution_count": 1}, version="4.1")
    assert LeanSession.like(stock).deserialize(list(parts))["header"]["version"].startswith("5.")

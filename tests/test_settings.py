from __future__ import annotations

import pytest

from msgcore import InvalidURLError, Settings
from msgcore.settings import transport_of


def test_defaults_to_embedded_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MSGCORE_URL", raising=False)
    settings = Settings()
    assert settings.url == "sqlite:///./msgcore.db"
    assert settings.transport == "sqlite"
    assert settings.request_timeout == 30.0


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("sqlite:///./x.db", "sqlite"),
        ("redis://localhost:6379/0", "redis"),
        ("rediss://h:6380/1", "redis"),
        ("amqp://guest:guest@localhost:5672/", "rabbit"),
        ("amqps://u:p@h/", "rabbit"),
    ],
)
def test_url_picks_the_transport(url: str, transport: str) -> None:
    assert transport_of(url) == transport
    assert Settings(url=url).transport == transport


def test_environment_and_nested_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGCORE_URL", "amqp://guest:guest@localhost:5672/")
    monkeypatch.setenv("MSGCORE_RABBIT__EXCHANGE", "orders")
    monkeypatch.setenv("MSGCORE_SQLITE__BUSY_TIMEOUT", "12.5")
    monkeypatch.setenv("MSGCORE_REQUEST_TIMEOUT", "3")
    settings = Settings()
    assert settings.transport == "rabbit"
    assert settings.rabbit.exchange == "orders"
    assert settings.sqlite.busy_timeout == 12.5
    assert settings.request_timeout == 3.0


def test_unknown_scheme_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(InvalidURLError) as info:
        Settings(url="postgres://app:hunter2@db/x")
    text = str(info.value)
    assert "hunter2" not in text
    assert "sqlite:///" in text
    assert "MSGCORE_URL" in text


def test_password_is_redacted_in_repr_and_safe_url() -> None:
    settings = Settings(url="redis://:s3cret@cache:6379/0", store_url="redis://u:pw@h/1")
    assert "s3cret" not in repr(settings)
    assert "pw@" not in repr(settings)
    assert settings.safe_url == "redis://:***@cache:6379/0"

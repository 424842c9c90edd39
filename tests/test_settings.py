from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from msgcore import ConfigurationError, InvalidURLError, Settings, SettingsError
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


def test_a_bad_value_is_a_settings_error_naming_field_and_variable() -> None:
    with pytest.raises(SettingsError) as info:
        Settings(request_timeout=-1)
    error = info.value
    assert isinstance(error, ConfigurationError) and isinstance(error, ValueError)
    assert str(error).startswith(
        "invalid setting request_timeout (MSGCORE_REQUEST_TIMEOUT): Input should be greater than 0"
    )
    assert isinstance(error.__cause__, ValidationError)  # pydantic's whole report


def test_a_bad_environment_variable_is_named_and_its_value_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MSGCORE_JOBS__RESULT_TTL", "-1")
    monkeypatch.setenv("MSGCORE_REQUEST_TIMEOUT", "hunter2")
    with pytest.raises(SettingsError) as info:
        Settings()
    text = str(info.value)
    assert "(MSGCORE_" in text and "(and 1 more)" in text
    assert "hunter2" not in text


@pytest.mark.parametrize("url", ["redis://h:6379/abc", "redis://:s3cret@h/0/1"])
def test_a_redis_url_path_is_a_database_number(url: str) -> None:
    """redis-py used database 0 for any path that is not a number, without a word."""
    with pytest.raises(InvalidURLError, match="database number") as info:
        Settings(url=url)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://:s3cret@127.0.0.1:notaport/0", "Port could not be cast"),
        ("amqp://u:s3cret@127.0.0.1:99999/", "Port out of range"),
        ("redis://u:s3cret@[::1/0", "Invalid IPv6 URL"),
        ("redis//u:s3cret@h", "without scheme://"),
        ("u:s3cret@h", "without scheme://"),
    ],
)
def test_a_malformed_url_is_an_invalid_url_error_without_the_password(url: str, says: str) -> None:
    """A bad port or host was a bare ValueError when connecting; a URL without scheme://
    was echoed with its password (the redaction needs the scheme to find it)."""
    with pytest.raises(InvalidURLError, match=re.escape(says)) as info:
        Settings(url=url)
    assert "s3cret" not in str(info.value)

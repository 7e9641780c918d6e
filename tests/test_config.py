"""Typed configuration: store settings from flags, variables and secrets files; typed
storage options."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from isloader.config import StoreSettings, parse_storage_options, read_token_file


def test_variables_fill_what_flags_leave_and_flags_win(monkeypatch) -> None:
    monkeypatch.setenv("ISLOADER_NUM_SAMPLES", "100")
    monkeypatch.setenv("ISLOADER_ALPHA", "0.1")
    monkeypatch.setenv("ISLOADER_METRICS_PORT", "9100")
    settings = StoreSettings(alpha="0.2")  # a flag's text, parsed like the variable
    assert (settings.num_samples, settings.alpha, settings.metrics_port) == (100, 0.2, 9100)
    assert StoreSettings().alpha == 0.1


def test_bad_values_are_named(monkeypatch) -> None:
    monkeypatch.setenv("ISLOADER_NUM_SAMPLES", "many")
    with pytest.raises(ValidationError, match="num_samples"):
        StoreSettings()
    monkeypatch.setenv("ISLOADER_NUM_SAMPLES", "10")
    with pytest.raises(ValidationError, match="alpha"):
        StoreSettings(alpha=1.5)


def test_the_token_comes_from_a_secrets_file(tmp_path, monkeypatch) -> None:
    (tmp_path / "isloader_token").write_text("s3cret\n")
    monkeypatch.setenv("ISLOADER_NUM_SAMPLES", "10")
    settings = StoreSettings(_secrets_dir=str(tmp_path))
    assert settings.bearer_token() == "s3cret"
    assert "s3cret" not in repr(settings)  # a secret is never printed
    (tmp_path / "token").write_text("")
    with pytest.raises(ValueError, match="empty"):
        StoreSettings(num_samples=10, token_file=str(tmp_path / "token")).bearer_token()


def test_compose_names_the_secret_twice_and_that_is_fine(tmp_path, monkeypatch) -> None:
    """Compose mounts the secret where the secrets source reads it *and* sets
    ISLOADER_TOKEN_FILE to it: one token from two places is accepted, two tokens not."""
    secret = tmp_path / "isloader_token"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("ISLOADER_TOKEN_FILE", str(secret))
    settings = StoreSettings(num_samples=10, _secrets_dir=str(tmp_path))
    assert settings.bearer_token() == "s3cret"
    other = tmp_path / "other"
    other.write_text("different")
    with pytest.raises(ValidationError, match="differ"):
        StoreSettings(num_samples=10, token_file=str(other), _secrets_dir=str(tmp_path))


def test_an_unreadable_token_file_says_who_must_read_it(tmp_path) -> None:
    """The images run as uid 10001 and a compose secret keeps the host file's mode: the
    error names the uid and the fix instead of a bare PermissionError."""
    token = tmp_path / "token"
    token.write_text("s3cret")
    token.chmod(0)
    pid = os.fork()  # a child drops root (root reads any file) and reports by exit code
    if pid == 0:
        code = 4
        try:
            if os.getuid() == 0:
                os.setuid(65534)
            read_token_file(token)
            code = 2
        except ValueError as exc:
            code = (
                0 if "cannot read the token file" in str(exc) and "chown 10001" in str(exc) else 3
            )
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["anon=false"], {"anon": False}),
        (["anon=true", "block_size=1048576"], {"anon": True, "block_size": 1048576}),
        (["profile=dev"], {"profile": "dev"}),
        (['client_kwargs={"endpoint_url": "http://127.0.0.1:9000"}'],
         {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}),
        (["token=a=b"], {"token": "a=b"}),
    ],
)  # fmt: skip
def test_storage_options_are_typed(pairs, expected) -> None:
    assert parse_storage_options(pairs) == expected


def test_a_storage_option_without_a_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="key=value"):
        parse_storage_options(["anon"])

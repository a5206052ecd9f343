"""Redis URLs in logs carry no password."""

from __future__ import annotations

from models.store.connect import redacted


def test_redacted_hides_the_password_only() -> None:
    assert redacted("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redacted("rediss://app:s3cret@10.0.0.5:6380/1") == "rediss://app:***@10.0.0.5:6380/1"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert "s3cret" not in redacted("redis://u:s3cret@[::1]:6379/0")

"""Config keys that were renamed: the old name is refused (as any unknown key is) with one
line that names the new one (``robustft.cli.errors``), on the command line and in YAML."""

from __future__ import annotations

from robustft.losses import LossConfig

# schema -> {old key: new key}
RENAMED_KEYS: dict[type, dict[str, str]] = {
    # it weights the classification term, whichever that is (docs/method.md §2)
    LossConfig: {"lambda_acc": "lambda_cls"},
}


def renamed_to(schema: object, key: str) -> str | None:
    """The key's new name in ``schema``, or None when ``key`` was not renamed."""
    return RENAMED_KEYS.get(schema, {}).get(key)  # type: ignore[call-overload]

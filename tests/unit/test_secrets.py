"""Secret values: resolved from the environment, masked whole and line by line, refused when too short."""

from __future__ import annotations

import pytest

from pipeline.errors import MissingSecretError
from pipeline.model import Secret
from pipeline.secrets import MIN_SECRET_LENGTH, Masker, check_lengths, resolve

PEM = "-----BEGIN KEY-----\nMIIEowIBAAKCAQEAx1\nq2w3e4r5t6y7u8i9o0\n=\n-----END KEY-----"


def test_a_multi_line_secret_is_masked_line_by_line() -> None:
    mask = Masker([PEM])
    assert mask(f"key: {PEM}") == "key: ***"
    printed = "\n".join(mask(line) for line in f"printing\n{PEM}\ndone".splitlines())
    assert printed == "printing\n***\n***\n***\n=\n***\ndone"


def test_a_short_line_of_a_multi_line_secret_is_not_masked_alone() -> None:
    assert Masker([PEM])("a = b") == "a = b"


def test_secrets_shorter_than_four_characters_are_refused() -> None:
    assert MIN_SECRET_LENGTH == 4
    with pytest.raises(MissingSecretError, match="shorter than 4 characters"):
        resolve([Secret(name="TOKEN")], {"TOKEN": "abc"})
    assert resolve([Secret(name="TOKEN")], {"TOKEN": "abcd"}) == {"TOKEN": "abcd"}
    with pytest.raises(MissingSecretError, match="secret TOKEN is shorter") as caught:
        check_lengths([Secret(name="TOKEN")], {"TOKEN": "ab"})
    assert caught.value.exit_code == 2
    check_lengths([Secret(name="TOKEN")], {})  # not set: nothing to say before a run


def test_masking_takes_the_longest_value_first() -> None:
    assert Masker(["token", "token-long"])("a token-long b token") == "a *** b ***"

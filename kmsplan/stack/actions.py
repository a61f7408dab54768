"""The action names `expect:` accepts, and the KMS action each one means.

A stack says `expect: {decrypt: [...]}` in the words people use (snake_case), or in IAM's own
(`kms:Decrypt`, any case, as IAM ignores the case of action names). Both spellings resolve to the
IAM action the who-can analysis (`kmsplan.policy.who_can`) speaks, so the validator can reject a
typo offline and `kmsplan verify` can check the expectation against the live policy. Only
actions that target a key are accepted: `kms:CreateKey` or `kms:ListKeys` cannot be expected of
one key.
"""

from __future__ import annotations

import difflib
import re

from kmsplan.policy import KEY_ACTIONS, KMS_ACTIONS


def snake_name(action: str) -> str:
    """`kms:GenerateDataKeyWithoutPlaintext` -> `generate_data_key_without_plaintext`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", action.split(":", 1)[1]).lower()


#: snake_case name -> IAM action, for every action on a key (docs/stack-reference.md lists them)
EXPECT_ACTIONS: dict[str, str] = {snake_name(action): action for action in KEY_ACTIONS}
_BY_LOWER = {action.lower(): action for action in KEY_ACTIONS}
#: KMS actions that exist but act on no key (CreateKey, ListKeys, ...), by both spellings
_NOT_ON_A_KEY = {spelling: action for action in KMS_ACTIONS if action not in KEY_ACTIONS
                 for spelling in (action.lower(), snake_name(action))}


def expect_action(name: str) -> str | None:
    """The IAM action an `expect:` name means (`decrypt` or `kms:Decrypt` -> `kms:Decrypt`),
    or None when it names no action on a key."""
    if name.lower().startswith("kms:"):
        return _BY_LOWER.get(name.lower())
    return EXPECT_ACTIONS.get(name)


def keyless_action(name: str) -> str | None:
    """The IAM action when `name` is a real KMS action that targets no key (kms:CreateKey)."""
    return _NOT_ON_A_KEY.get(name.lower() if name.lower().startswith("kms:") else name)


def suggest_action(name: str) -> str | None:
    """The closest accepted name, in the spelling the user chose (snake_case or kms:)."""
    if name.lower().startswith("kms:"):
        close = difflib.get_close_matches(name.lower(), list(_BY_LOWER), n=1, cutoff=0.6)
        return _BY_LOWER[close[0]] if close else None
    folded = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower().replace("-", "_")
    if folded in EXPECT_ACTIONS:
        return folded
    close = difflib.get_close_matches(folded, list(EXPECT_ACTIONS), n=1, cutoff=0.6)
    return close[0] if close else None

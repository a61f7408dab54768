"""What AWS KMS allows per key spec: usages, rotation, grant operations.

The validator runs in any pull request without an HSM, so it does not import `kmsplan.store`
(whose package pulls in PKCS#11); tests/stack/test_specs.py checks these tables agree with
`kmsplan.store.specs`.
"""

from __future__ import annotations

from kmsplan.policy.evaluate import CONTEXT_OPERATIONS

SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
SIGN_VERIFY = "SIGN_VERIFY"
GENERATE_VERIFY_MAC = "GENERATE_VERIFY_MAC"

RSA_SPECS = ("RSA_2048", "RSA_3072", "RSA_4096")
ECC_SPECS = ("ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521", "ECC_SECG_P256K1")
HMAC_SPECS = ("HMAC_224", "HMAC_256", "HMAC_384", "HMAC_512")

#: spec -> the usages it allows; the first is the default when there is only one
USAGES: dict[str, tuple[str, ...]] = {
    SYMMETRIC_DEFAULT: (ENCRYPT_DECRYPT,),
    **{spec: (ENCRYPT_DECRYPT, SIGN_VERIFY) for spec in RSA_SPECS},
    **{spec: (SIGN_VERIFY,) for spec in ECC_SPECS},
    **{spec: (GENERATE_VERIFY_MAC,) for spec in HMAC_SPECS},
}

_MANAGE = ("CreateGrant", "RetireGrant", "DescribeKey")
#: key family -> grant operations AWS accepts for it
OPERATIONS: dict[str, frozenset[str]] = {
    "symmetric": frozenset(("Decrypt", "Encrypt", "GenerateDataKey",
                            "GenerateDataKeyWithoutPlaintext", "GenerateDataKeyPair",
                            "GenerateDataKeyPairWithoutPlaintext", "ReEncryptFrom", "ReEncryptTo")
                           + _MANAGE),
    "rsa-encrypt": frozenset(("Encrypt", "Decrypt", "ReEncryptFrom", "ReEncryptTo",
                              "GetPublicKey") + _MANAGE),
    "sign": frozenset(("Sign", "Verify", "GetPublicKey") + _MANAGE),
    "hmac": frozenset(("GenerateMac", "VerifyMac") + _MANAGE),
}
FAMILY_NAMES = {"symmetric": "symmetric encryption", "rsa-encrypt": "RSA encryption",
                "sign": "signing", "hmac": "HMAC"}

#: grant operations that take an encryption context (and so can be constrained by one)
CONTEXT_OPS: frozenset[str] = frozenset(CONTEXT_OPERATIONS)


def default_usage(spec: str) -> str | None:
    """The usage AWS picks when none is given; None for RSA, which has two."""
    usages = USAGES.get(spec, ())
    return usages[0] if len(usages) == 1 else None


def family(spec: str, usage: str) -> str:
    """'symmetric', 'rsa-encrypt', 'sign' or 'hmac' for a valid spec/usage pair."""
    if spec == SYMMETRIC_DEFAULT:
        return "symmetric"
    if spec in HMAC_SPECS:
        return "hmac"
    if spec in RSA_SPECS and usage == ENCRYPT_DECRYPT:
        return "rsa-encrypt"
    return "sign"


def rotatable(spec: str, usage: str) -> bool:
    """Automatic rotation exists only for symmetric encryption keys."""
    return spec == SYMMETRIC_DEFAULT and usage == ENCRYPT_DECRYPT

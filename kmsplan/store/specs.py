"""Key specs, usages and algorithms as AWS KMS defines them: the tables every rule reads.

Kept as plain data so the store, the stack validator and the docs agree on one source.
"""

from __future__ import annotations

from dataclasses import dataclass

from kmsplan.policy.evaluate import CONTEXT_OPERATIONS

ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
SIGN_VERIFY = "SIGN_VERIFY"
GENERATE_VERIFY_MAC = "GENERATE_VERIFY_MAC"


@dataclass(frozen=True)
class KeySpecInfo:
    """What one key spec is: its usages, and what the token must generate for it."""

    name: str
    usages: tuple[str, ...]
    family: str  # "AES" | "RSA" | "EC" | "HMAC"
    size: int  # AES/HMAC key bytes, RSA modulus bits, EC field bits
    curve: str | None = None  # EC curve name as the token knows it

    @property
    def default_usage(self) -> str | None:
        """The usage AWS picks when CreateKey names none (RSA has two, so there is no default)."""
        return self.usages[0] if len(self.usages) == 1 else None


KEY_SPECS: dict[str, KeySpecInfo] = {
    info.name: info
    for info in (
        KeySpecInfo("SYMMETRIC_DEFAULT", (ENCRYPT_DECRYPT,), "AES", 32),
        KeySpecInfo("RSA_2048", (ENCRYPT_DECRYPT, SIGN_VERIFY), "RSA", 2048),
        KeySpecInfo("RSA_3072", (ENCRYPT_DECRYPT, SIGN_VERIFY), "RSA", 3072),
        KeySpecInfo("RSA_4096", (ENCRYPT_DECRYPT, SIGN_VERIFY), "RSA", 4096),
        KeySpecInfo("ECC_NIST_P256", (SIGN_VERIFY,), "EC", 256, "secp256r1"),
        KeySpecInfo("ECC_NIST_P384", (SIGN_VERIFY,), "EC", 384, "secp384r1"),
        KeySpecInfo("ECC_NIST_P521", (SIGN_VERIFY,), "EC", 521, "secp521r1"),
        KeySpecInfo("ECC_SECG_P256K1", (SIGN_VERIFY,), "EC", 256, "secp256k1"),
        KeySpecInfo("HMAC_224", (GENERATE_VERIFY_MAC,), "HMAC", 28),
        KeySpecInfo("HMAC_256", (GENERATE_VERIFY_MAC,), "HMAC", 32),
        KeySpecInfo("HMAC_384", (GENERATE_VERIFY_MAC,), "HMAC", 48),
        KeySpecInfo("HMAC_512", (GENERATE_VERIFY_MAC,), "HMAC", 64),
    )
}

# RSAES_OAEP plaintext limits in bytes: modulus bytes - 2 * hash bytes - 2.
RSA_ENCRYPTION_ALGORITHMS = {"RSAES_OAEP_SHA_1": "sha1", "RSAES_OAEP_SHA_256": "sha256"}
SYMMETRIC_ENCRYPTION_ALGORITHM = "SYMMETRIC_DEFAULT"

# Signing algorithm -> (hash name, scheme); which specs allow each.
SIGNING_ALGORITHMS: dict[str, tuple[str, str]] = {
    "RSASSA_PSS_SHA_256": ("sha256", "PSS"),
    "RSASSA_PSS_SHA_384": ("sha384", "PSS"),
    "RSASSA_PSS_SHA_512": ("sha512", "PSS"),
    "RSASSA_PKCS1_V1_5_SHA_256": ("sha256", "PKCS1"),
    "RSASSA_PKCS1_V1_5_SHA_384": ("sha384", "PKCS1"),
    "RSASSA_PKCS1_V1_5_SHA_512": ("sha512", "PKCS1"),
    "ECDSA_SHA_256": ("sha256", "ECDSA"),
    "ECDSA_SHA_384": ("sha384", "ECDSA"),
    "ECDSA_SHA_512": ("sha512", "ECDSA"),
}
EC_SIGNING_ALGORITHM = {
    "ECC_NIST_P256": "ECDSA_SHA_256",
    "ECC_SECG_P256K1": "ECDSA_SHA_256",
    "ECC_NIST_P384": "ECDSA_SHA_384",
    "ECC_NIST_P521": "ECDSA_SHA_512",
}
MAC_ALGORITHM = {
    "HMAC_224": "HMAC_SHA_224",
    "HMAC_256": "HMAC_SHA_256",
    "HMAC_384": "HMAC_SHA_384",
    "HMAC_512": "HMAC_SHA_512",
}

DATA_KEY_SPECS = {"AES_256": 32, "AES_128": 16}
DATA_KEY_PAIR_SPECS = (
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
)

_COMMON_GRANT_OPERATIONS = ("CreateGrant", "RetireGrant", "DescribeKey")
GRANT_OPERATIONS_BY_USAGE: dict[tuple[str, str], frozenset[str]] = {
    ("AES", ENCRYPT_DECRYPT): frozenset(
        _COMMON_GRANT_OPERATIONS
        + (
            "Decrypt",
            "Encrypt",
            "GenerateDataKey",
            "GenerateDataKeyWithoutPlaintext",
            "GenerateDataKeyPair",
            "GenerateDataKeyPairWithoutPlaintext",
            "ReEncryptFrom",
            "ReEncryptTo",
        )
    ),
    ("RSA", ENCRYPT_DECRYPT): frozenset(
        _COMMON_GRANT_OPERATIONS + ("Encrypt", "Decrypt", "ReEncryptFrom", "ReEncryptTo", "GetPublicKey")
    ),
    ("RSA", SIGN_VERIFY): frozenset(_COMMON_GRANT_OPERATIONS + ("Sign", "Verify", "GetPublicKey")),
    ("EC", SIGN_VERIFY): frozenset(_COMMON_GRANT_OPERATIONS + ("Sign", "Verify", "GetPublicKey")),
    ("HMAC", GENERATE_VERIFY_MAC): frozenset(_COMMON_GRANT_OPERATIONS + ("GenerateMac", "VerifyMac")),
}
ALL_GRANT_OPERATIONS = frozenset().union(*GRANT_OPERATIONS_BY_USAGE.values())
# A constrained grant may list only operations that take an encryption context (the evaluator's
# CONTEXT_OPERATIONS: the constraint applies to them), plus RetireGrant and DescribeKey, which act
# on the grant and the key, not on data, and which AWS accepts alongside a constraint.
CONTEXT_GRANT_OPERATIONS = CONTEXT_OPERATIONS | {"RetireGrant", "DescribeKey"}


def grant_operations_for(spec: str, usage: str) -> frozenset[str]:
    """The grant operations a key of this spec and usage accepts."""
    return GRANT_OPERATIONS_BY_USAGE[(KEY_SPECS[spec].family, usage)]


def rsa_max_plaintext(spec: str, algorithm: str) -> int:
    """Largest plaintext RSAES_OAEP can take for this modulus and hash (RFC 8017, 7.1.1)."""
    hash_bytes = 20 if algorithm == "RSAES_OAEP_SHA_1" else 32
    return KEY_SPECS[spec].size // 8 - 2 * hash_bytes - 2


def encryption_algorithms(spec: str, usage: str) -> list[str]:
    if usage != ENCRYPT_DECRYPT:
        return []
    return [SYMMETRIC_ENCRYPTION_ALGORITHM] if spec == "SYMMETRIC_DEFAULT" else sorted(RSA_ENCRYPTION_ALGORITHMS)


def signing_algorithms(spec: str, usage: str) -> list[str]:
    if usage != SIGN_VERIFY:
        return []
    if spec in EC_SIGNING_ALGORITHM:
        return [EC_SIGNING_ALGORITHM[spec]]
    return sorted(name for name in SIGNING_ALGORITHMS if name.startswith("RSASSA"))


def mac_algorithms(spec: str) -> list[str]:
    return [MAC_ALGORITHM[spec]] if spec in MAC_ALGORITHM else []

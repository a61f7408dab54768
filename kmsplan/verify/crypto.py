"""Checks that use the key: data keys round-trip, contexts bind, replicas decrypt, signatures and
MACs verify. Each makes real KMS calls as the verifying principal and keeps nothing: data keys,
messages and signatures are random, used once, and dropped; no key, grant or alias is created.

Before a call, the offline evaluator (kmsplan.verify.contexts) picks parameters the key's live
policy admits - an encryption context, an algorithm - so a failure means the key does not work,
not that verify asked the wrong way. When no admissible parameters exist, the check fails and
says which statement stands in the way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from kmsplan.errors import KMSError
from kmsplan.plan.live import LiveKey
from kmsplan.stack.specs import family
from kmsplan.verify.contexts import Context, candidates, derived_contexts, key_facts, wrong_contexts
from kmsplan.verify.model import Check
from kmsplan.verify.recorder import format_context
from kmsplan.verify.session import Copy, Session, live_grants, live_policy

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def crypto_checks(session: Session, copies: Sequence[Copy]) -> list[Check]:
    """The checks that fit the key's spec and usage, on every copy that is live and enabled."""
    key = copies[0].desired.key
    kind = family(key.spec, key.usage)
    if kind == "symmetric":
        return _symmetric(session, copies)
    usable = [copy for copy in copies if copy.usable]
    if kind == "rsa-encrypt":
        return [_rsa_round_trip(session, copy) for copy in usable]
    if kind == "sign":
        return [_sign_verify(session, copy) for copy in usable]
    return [_mac(session, copy) for copy in usable]


def _failed(copy: Copy, check: str, error: KMSError, doing: str) -> Check:
    return Check(copy.address, copy.region, check, False, f"{doing} failed: {error.code}: {error.message}")


# --- symmetric keys ----------------------------------------------------------------------------

def _choose_context(session: Session, needs: Sequence[tuple[LiveKey, str]]) -> tuple[Context | None, str]:
    """The first candidate context the live policies admit for every (key, action) in `needs`;
    else None and why the most natural candidate is refused."""
    keys = list({key.arn: key for key, _ in needs}.values())
    derived = derived_contexts([*(live_policy(k) for k in keys), *session.principal.policies],
                               [g for k in keys for g in live_grants(k)], session.principal, key_facts(keys[0]))
    tried = candidates(derived, session.run)
    for context in tried:
        if all(session.decide(key, action, {"EncryptionContext": context}).allowed for key, action in needs):
            return context, ""
    first = tried[0]
    key, action = next((k, a) for k, a in needs
                       if not session.decide(k, a, {"EncryptionContext": first}).allowed)
    reason = session.decide(key, action, {"EncryptionContext": first}).reason
    return None, (f"no encryption context verify could derive lets {session.principal.arn} call "
                  f"{', '.join(sorted({a for _, a in needs}))}: e.g. {action} on {key.arn} with "
                  f"{format_context(first)}: {reason}")


def _symmetric(session: Session, copies: Sequence[Copy]) -> list[Check]:
    out: list[Check] = []
    made: dict[str, tuple[bytes, bytes, Context]] = {}
    replicas = [c for c in copies[1:] if c.usable]
    for index, copy in enumerate(copies):
        if not copy.usable:
            continue
        assert copy.live is not None
        own = [(copy.live, "kms:GenerateDataKey"), (copy.live, "kms:Decrypt")]
        joint = own + ([(r.live, "kms:Decrypt") for r in replicas if r.live] if index == 0 else [])
        context, why = _choose_context(session, joint)
        if context is None and len(joint) > len(own):
            context, why = _choose_context(session, own)
        if context is None:
            out += [Check(copy.address, copy.region, "round-trip", False, why),
                    Check(copy.address, copy.region, "context-binding", False, "not run: no data key to decrypt")]
            continue
        check, result = _round_trip(session, copy, context)
        out.append(check)
        if result is None:
            out.append(Check(copy.address, copy.region, "context-binding", False, "not run: no data key to decrypt"))
            continue
        out.append(_binding(session, copy, result[0], context))
        made[copy.region] = (*result, context)
    return out + _cross_region(session, copies, made)


def _round_trip(session: Session, copy: Copy, context: Context) -> tuple[Check, tuple[bytes, bytes] | None]:
    assert copy.live is not None
    kms, arn = session.client(copy.region), copy.live.arn
    try:
        made = kms.generate_data_key(KeyId=arn, KeySpec="AES_256", EncryptionContext=context)
        back = kms.decrypt(CiphertextBlob=made["CiphertextBlob"], KeyId=arn, EncryptionContext=context)
    except KMSError as error:
        return _failed(copy, "round-trip", error, f"GenerateDataKey/Decrypt under {format_context(context)}"), None
    if back["Plaintext"] != made["Plaintext"]:
        return Check(copy.address, copy.region, "round-trip", False,
                     "Decrypt returned a different plaintext than GenerateDataKey made"), None
    return (Check(copy.address, copy.region, "round-trip", True,
                  f"GenerateDataKey (AES_256) then Decrypt under {format_context(context)}: the 32-byte data key "
                  "came back intact"), (made["CiphertextBlob"], made["Plaintext"]))


def _binding(session: Session, copy: Copy, blob: bytes, context: Context) -> Check:
    """Decrypting under any other context must fail: InvalidCiphertextException, since the
    context is authenticated with the ciphertext (or refused by a policy that admits no other)."""
    assert copy.live is not None
    tries = wrong_contexts(context)
    admitted = [w for w in tries if session.decide(copy.live, "kms:Decrypt", {"EncryptionContext": w}).allowed]
    wrong = (admitted or tries)[0]
    try:
        session.client(copy.region).decrypt(CiphertextBlob=blob, KeyId=copy.live.arn, EncryptionContext=wrong)
    except KMSError as error:
        if error.code == "InvalidCiphertextException":
            return Check(copy.address, copy.region, "context-binding", True,
                         f"Decrypt under the wrong context {format_context(wrong)} refused: InvalidCiphertextException")
        if error.code == "AccessDeniedException" and not admitted:
            return Check(copy.address, copy.region, "context-binding", True,
                         f"Decrypt under the wrong context {format_context(wrong)} refused by the policy before "
                         "decryption (AccessDeniedException): it admits no context verify could vary")
        return _failed(copy, "context-binding", error, f"Decrypt under the wrong context {format_context(wrong)}")
    return Check(copy.address, copy.region, "context-binding", False,
                 f"Decrypt under the wrong context {format_context(wrong)} returned the plaintext: the encryption "
                 "context is not bound to the ciphertext")


def _cross_region(session: Session, copies: Sequence[Copy],
                  made: dict[str, tuple[bytes, bytes, Context]]) -> list[Check]:
    """A multi-Region key's ciphertext decrypts in each replica region; a single-Region key's
    ciphertext decrypts nowhere but its own region."""
    primary, key = copies[0], copies[0].desired.key
    if not primary.desired.is_primary:
        return []  # only replicas were selected (--address): nothing to carry from the primary
    source = made.get(primary.region)
    if not key.multi_region:
        others = [r for r in session.regions if r != primary.region]
        if source is None or not others:
            return []
        blob, _, context = source
        try:
            session.client(others[0]).decrypt(CiphertextBlob=blob, EncryptionContext=context)
        except KMSError as error:
            return [Check(primary.address, primary.region, "cross-region", True,
                          f"its ciphertext does not decrypt in {others[0]}: {error.code} (single-Region key)")]
        return [Check(primary.address, primary.region, "cross-region", False,
                      f"its ciphertext decrypted in {others[0]}, but it is a single-Region key")]
    if source is None and not primary.desired.decl.enabled:
        return []  # a primary declared disabled encrypts nothing to carry across
    out = []
    for replica in copies[1:]:
        if not replica.desired.decl.enabled:
            continue
        if source is None:
            out.append(Check(replica.address, replica.region, "cross-region", False,
                             f"not run: no ciphertext from the primary in {primary.region}"))
            continue
        if not replica.usable or replica.live is None:
            out.append(Check(replica.address, replica.region, "cross-region", False,
                             f"no usable replica in {replica.region} to decrypt the primary's ciphertext"))
            continue
        blob, plaintext, context = source
        try:
            back = session.client(replica.region).decrypt(CiphertextBlob=blob, KeyId=replica.live.arn,
                                                          EncryptionContext=context)
        except KMSError as error:
            out.append(_failed(replica, "cross-region", error,
                               f"Decrypt of the primary's ciphertext in {replica.region}"))
            continue
        passed = back["Plaintext"] == plaintext
        out.append(Check(replica.address, replica.region, "cross-region", passed,
                         f"a data key generated in {primary.region} decrypted in {replica.region}"
                         + ("" if passed else " to a different plaintext")))
    return out


# --- asymmetric and HMAC keys ------------------------------------------------------------------

def _algorithm(session: Session, key: LiveKey, offered: Sequence[str], actions: Sequence[str], param: str,
               preferred: str | None = None) -> tuple[str | None, str]:
    """The first algorithm of `offered` the policy admits for every action (None: why not)."""
    ordered = sorted(offered, key=lambda a: a != preferred)
    for name in ordered:
        if all(session.decide(key, action, {param: name}).allowed for action in actions):
            return name, ""
    if not ordered:
        return None, "the key offers no algorithm"
    denied = next(a for a in actions if not session.decide(key, a, {param: ordered[0]}).allowed)
    return None, (f"the policy lets {session.principal.arn} use none of {', '.join(ordered)}: e.g. {denied} "
                  f"with {ordered[0]}: {session.decide(key, denied, {param: ordered[0]}).reason}")


def _rsa_round_trip(session: Session, copy: Copy) -> Check:
    assert copy.live is not None
    kms, arn = session.client(copy.region), copy.live.arn
    try:
        offered = kms.describe_key(KeyId=arn)["KeyMetadata"].get("EncryptionAlgorithms", [])
        algorithm, why = _algorithm(session, copy.live, offered, ("kms:Encrypt", "kms:Decrypt"),
                                    "EncryptionAlgorithm", "RSAES_OAEP_SHA_256")
        if algorithm is None:
            return Check(copy.address, copy.region, "round-trip", False, why)
        message = os.urandom(32)
        blob = kms.encrypt(KeyId=arn, Plaintext=message, EncryptionAlgorithm=algorithm)["CiphertextBlob"]
        back = kms.decrypt(KeyId=arn, CiphertextBlob=blob, EncryptionAlgorithm=algorithm)["Plaintext"]
    except KMSError as error:
        return _failed(copy, "round-trip", error, "Encrypt/Decrypt")
    return Check(copy.address, copy.region, "round-trip", back == message,
                 f"Encrypt then Decrypt ({algorithm}) of a random 32-byte message: "
                 + ("it came back intact" if back == message else "a different message came back"))


def _sign_verify(session: Session, copy: Copy) -> Check:
    assert copy.live is not None
    kms, arn = session.client(copy.region), copy.live.arn
    try:
        public = kms.get_public_key(KeyId=arn)
        algorithm, why = _algorithm(session, copy.live, public.get("SigningAlgorithms", []),
                                    ("kms:Sign", "kms:Verify"), "SigningAlgorithm")
        if algorithm is None:
            return Check(copy.address, copy.region, "sign-verify", False, why)
        message = os.urandom(64)
        signature = kms.sign(KeyId=arn, Message=message, MessageType="RAW", SigningAlgorithm=algorithm)["Signature"]
        valid = kms.verify(KeyId=arn, Message=message, MessageType="RAW", Signature=signature,
                           SigningAlgorithm=algorithm)["SignatureValid"]
    except KMSError as error:
        return _failed(copy, "sign-verify", error, "Sign/Verify")
    problem = _verify_locally(public["PublicKey"], algorithm, message, signature)
    if not valid or problem:
        return Check(copy.address, copy.region, "sign-verify", False,
                     f"{algorithm}: " + (problem or "KMS Verify said the signature is not valid"))
    return Check(copy.address, copy.region, "sign-verify", True,
                 f"{algorithm}: Sign, then Verify (SignatureValid), and the public key from GetPublicKey verifies "
                 "the signature with the cryptography library")


def _verify_locally(der: bytes, algorithm: str, message: bytes, signature: bytes) -> str | None:
    """None when the published public key verifies `signature`; else what went wrong."""
    digest = _HASHES[algorithm.rsplit("_", 1)[1]]()
    try:
        key: Any = serialization.load_der_public_key(der)
        if isinstance(key, rsa.RSAPublicKey):
            pad = (padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size) if "_PSS_" in algorithm
                   else padding.PKCS1v15())
            key.verify(signature, message, pad, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(digest))
        else:
            return f"GetPublicKey returned a {type(key).__name__}, not an RSA or EC key"
    except InvalidSignature:
        return "the public key from GetPublicKey does not verify the signature (cryptography library)"
    except ValueError as error:
        return f"GetPublicKey returned a public key the cryptography library cannot read: {error}"
    return None


def _mac(session: Session, copy: Copy) -> Check:
    assert copy.live is not None
    kms, arn = session.client(copy.region), copy.live.arn
    try:
        offered = kms.describe_key(KeyId=arn)["KeyMetadata"].get("MacAlgorithms", [])
        algorithm, why = _algorithm(session, copy.live, offered, ("kms:GenerateMac", "kms:VerifyMac"), "MacAlgorithm")
        if algorithm is None:
            return Check(copy.address, copy.region, "mac", False, why)
        message = os.urandom(64)
        mac = kms.generate_mac(KeyId=arn, Message=message, MacAlgorithm=algorithm)["Mac"]
        valid = kms.verify_mac(KeyId=arn, Message=message, MacAlgorithm=algorithm, Mac=mac)["MacValid"]
    except KMSError as error:
        return _failed(copy, "mac", error, "GenerateMac/VerifyMac")
    tampered = bytes([message[0] ^ 1]) + message[1:]
    try:
        kms.verify_mac(KeyId=arn, Message=tampered, MacAlgorithm=algorithm, Mac=mac)
    except KMSError as error:
        refused = error.code
    else:
        refused = None
    if not valid or refused != "KMSInvalidMacException":
        why = "VerifyMac rejected the MAC just made" if not valid else \
            f"VerifyMac of a changed message answered {refused or 'MacValid'}, not KMSInvalidMacException"
        return Check(copy.address, copy.region, "mac", False, f"{algorithm}: {why}")
    return Check(copy.address, copy.region, "mac", True,
                 f"{algorithm}: GenerateMac then VerifyMac (MacValid); a changed message is refused "
                 "(KMSInvalidMacException)")

"""The PKCS#11 boundary: every call to the HSM goes through `Token`, under one process-wide lock.

Why the lock: python-pkcs11 initialises the library without OS locking but releases the GIL around
each call, and SoftHSM crashes under concurrent calls (../shared/HSM-NOTES.md). Parallelism comes
from processes, never threads.

Key material never leaves a token in plaintext. Secret and private objects are created sensitive
and non-extractable; multi-Region material is sensitive but extractable, and only ever leaves
wrapped (AES key wrap with padding) under a transport key that both tokens derive by ECDH from
their own agreement key pairs, so no shared secret passes through Python memory.

PKCS#11 words (object, handle, mechanism, CKA_ID) stay in this module; the rest of the store speaks
KMS. Every PKCS#11 failure is raised as `TokenError` (or `TokenRejected` for a failed integrity
check) for the store to translate into an AWS error code.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import weakref
from dataclasses import dataclass, field

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.constants import DEFAULT
from pkcs11.mechanisms import KDF
from pkcs11.util.ec import decode_ec_public_key, encode_named_curve_parameters
from pkcs11.util.rsa import decode_rsa_public_key

from kmsplan.store.specs import KeySpecInfo

HSM_LOCK = threading.RLock()
TRANSPORT_ID = b"kmsplan-transport-agreement"
# CKA_ID prefix of the SigV4 secrets of `kmsplan serve`'s access keys (kmsplan.server.credentials).
CREDENTIAL_PREFIX = b"kmsplan-credential/"

_CURVES = {
    "secp256r1": ec.SECP256R1(),
    "secp384r1": ec.SECP384R1(),
    "secp521r1": ec.SECP521R1(),
    "secp256k1": ec.SECP256K1(),
}
_HASH_MECHANISMS = {
    "sha1": (Mechanism.SHA_1, MGF.SHA1),
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}
_HMAC_MECHANISMS = {
    28: Mechanism.SHA224_HMAC,
    32: Mechanism.SHA256_HMAC,
    48: Mechanism.SHA384_HMAC,
    64: Mechanism.SHA512_HMAC,
}
# DER DigestInfo prefixes (RFC 8017, 9.2 note 1) for RSASSA-PKCS1-v1_5 over a host-computed digest.
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
# Attributes python-pkcs11 fills in for every key type; private keys must not carry them.
_NOT_ON_PRIVATE = {Attribute.ENCRYPT: DEFAULT, Attribute.VERIFY: DEFAULT, Attribute.WRAP: DEFAULT}


class TokenError(Exception):
    """The HSM failed or refused an operation (the store reports KMSInternalException)."""


class TokenRejected(Exception):
    """An integrity check failed inside the HSM: wrong GCM tag, wrong AAD, bad padding."""


@dataclass
class _Loaded:
    library: pkcs11.lib
    path: str
    conf: str | None
    tokens: weakref.WeakSet = field(default_factory=weakref.WeakSet)

    def reload(self) -> None:
        """Finalize and re-initialize the module, then reopen every token's session.

        SoftHSM2 keeps each process's own view of a token's object files. Caught at the wrong
        moment while another process writes a new object, that view can miss the object for as
        long as the process lives (seen in the served test runs: a key created by one `serve`
        worker, then not found by the other). Re-initializing drops the view; it costs one
        re-read of the token folders, so it is only the last resort of a lookup that failed.
        """
        self.library.reinitialize()
        for token in list(self.tokens):
            try:
                token.open_session()
            except TokenError:  # its token is gone (a deleted store): its own calls will say so
                self.tokens.discard(token)


_LOADED: _Loaded | None = None


def load_library(module_path: str, softhsm_conf: str | None) -> _Loaded:
    """Load (once per process) the PKCS#11 module, re-initialising it for another SoftHSM2 config.

    A PKCS#11 library is initialised once per process, and SoftHSM2 reads its token folder from
    SOFTHSM2_CONF at C_Initialize. Opening a second store in one process therefore finalizes the
    first store's sessions (its tokens notice and refuse further calls).
    """
    global _LOADED
    with HSM_LOCK:
        if _LOADED and _LOADED.path == module_path and _LOADED.conf == softhsm_conf:
            return _LOADED
        if softhsm_conf:
            os.environ["SOFTHSM2_CONF"] = softhsm_conf
        try:
            if _LOADED and _LOADED.path == module_path:
                _LOADED.library.reinitialize()
                library = _LOADED.library
            else:
                library = pkcs11.lib(module_path)
        except pkcs11.PKCS11Error as error:
            raise TokenError(f"cannot load PKCS#11 module {module_path}: {type(error).__name__} {error}") from None
        _LOADED = _Loaded(library, module_path, softhsm_conf)
        return _LOADED


def _hsm_call(method):
    """Run a Token method under the HSM lock, translating PKCS#11 errors to TokenError."""

    def wrapper(self: Token, *args, **kwargs):
        with HSM_LOCK:
            if self._loaded is not _LOADED:
                raise TokenError("this store was closed because another store was opened in this process")
            try:
                return method(self, *args, **kwargs)
            except pkcs11.PKCS11Error as error:
                raise TokenError(f"{method.__name__}: {type(error).__name__} {error}".strip()) from None

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class Token:
    """One region's token: a logged-in read/write session and a cache of object handles by CKA_ID.

    Object search scans every object of a SoftHSM token, so each handle is looked up once and
    cached; `destroy` evicts it.
    """

    def __init__(self, loaded: _Loaded, label: str, pin: str) -> None:
        self._loaded = loaded
        self.label = label
        self._pin = pin
        self.open_session()
        loaded.tokens.add(self)

    def close(self) -> None:
        """Leave the module's reload list (the store was closed); the session ends with the module."""
        self._loaded.tokens.discard(self)

    def open_session(self) -> None:
        """Open the logged-in read/write session; forget every cached handle (they die with it)."""
        with HSM_LOCK:
            try:
                token = self._loaded.library.get_token(token_label=self.label)
                try:
                    self._session = token.open(rw=True, user_pin=self._pin)
                except pkcs11.UserAlreadyLoggedIn:
                    # Login state belongs to the application, not the session: another Token
                    # object of this process (e.g. `store init` just before) is logged in already.
                    self._session = token.open(rw=True)
            except pkcs11.PKCS11Error as error:
                raise TokenError(f"cannot open token {self.label!r}: {type(error).__name__} {error}") from None
        self._handles: dict[tuple[bytes, ObjectClass], object] = {}

    # -- lookup -----------------------------------------------------------------------------
    def _object(self, hsm_id: bytes, object_class: ObjectClass):
        """The handle of one object; callers look it up before creating any session object,
        because the last-resort `reload` closes the session those would live in."""
        handle = self._handles.get((hsm_id, object_class))
        if handle is None:
            found = self._find({Attribute.ID: hsm_id, Attribute.CLASS: object_class})
            if not found:
                raise TokenError(f"no {object_class.name} object {hsm_id!r} in token {self.label}")
            handle = found[0]
            self._handles[(hsm_id, object_class)] = handle
        return handle

    def _find(self, template: dict) -> list:
        """Objects matching `template`, looking again when none does: callers ask for objects the
        metadata records (or, destroying, may record), so a miss may be this process's stale view
        of a file another process just wrote, and leaving material behind is worse than a reload."""
        found = list(self._session.get_objects(template))
        for pause in (0.01, 0.05):
            if found:
                return found
            time.sleep(pause)
            found = list(self._session.get_objects(template))
        if not found:
            self._loaded.reload()
            found = list(self._session.get_objects(template))
        return found

    @_hsm_call
    def object_ids(self) -> set[bytes]:
        """Every CKA_ID in the token (a full scan: for consistency checks, never the hot path)."""
        return {obj[Attribute.ID] for obj in self._session.get_objects({Attribute.TOKEN: True})}

    @_hsm_call
    def has(self, hsm_id: bytes) -> bool:
        return bool(list(self._session.get_objects({Attribute.ID: hsm_id})))

    @_hsm_call
    def destroy(self, hsm_id: bytes) -> None:
        """Destroy every object (secret, private, public) carrying this CKA_ID."""
        for obj in self._find({Attribute.ID: hsm_id}):
            obj.destroy()
        self._handles = {k: v for k, v in self._handles.items() if k[0] != hsm_id}

    # -- generation -------------------------------------------------------------------------
    @_hsm_call
    def generate(self, hsm_id: bytes, spec: KeySpecInfo, usage_sign: bool, extractable: bool) -> bytes | None:
        """Create key material for `spec`; return the SubjectPublicKeyInfo DER of asymmetric keys."""
        private = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: extractable}
        if spec.family in ("AES", "HMAC"):
            key_type = KeyType.AES if spec.family == "AES" else KeyType.GENERIC_SECRET
            template = dict(private)
            if spec.family == "HMAC":
                template.update({Attribute.SIGN: True, Attribute.VERIFY: True, Attribute.ENCRYPT: DEFAULT,
                                 Attribute.DECRYPT: DEFAULT, Attribute.WRAP: DEFAULT, Attribute.UNWRAP: DEFAULT})
            key = self._session.generate_key(key_type, spec.size * 8, id=hsm_id, store=True, template=template)
            self._handles[(hsm_id, ObjectClass.SECRET_KEY)] = key
            return None
        public_caps = {Attribute.VERIFY: usage_sign, Attribute.ENCRYPT: not usage_sign}
        private_caps = {Attribute.SIGN: usage_sign, Attribute.DECRYPT: not usage_sign, **private}
        if spec.family == "RSA":
            public, priv = self._session.generate_keypair(
                KeyType.RSA, spec.size, id=hsm_id, store=True,
                public_template=public_caps, private_template=private_caps,
            )
        else:
            params = self._session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(spec.curve)}, local=True
            )
            public, priv = params.generate_keypair(
                id=hsm_id, store=True, public_template={Attribute.VERIFY: True},
                private_template={Attribute.SIGN: True, Attribute.DERIVE: False, **private},
            )
        self._handles[(hsm_id, ObjectClass.PUBLIC_KEY)] = public
        self._handles[(hsm_id, ObjectClass.PRIVATE_KEY)] = priv
        return _public_key_der(public, spec)

    @_hsm_call
    def random(self, count: int) -> bytes:
        return bytes(self._session.generate_random(count * 8))

    # -- symmetric --------------------------------------------------------------------------
    @_hsm_call
    def encrypt_gcm(self, hsm_id: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM; returns ciphertext || 16-byte tag."""
        key = self._object(hsm_id, ObjectClass.SECRET_KEY)
        return key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=pkcs11.GCMParams(iv, aad, 128))

    def decrypt_gcm(self, hsm_id: bytes, iv: bytes, sealed: bytes, aad: bytes) -> bytes:
        with HSM_LOCK:
            key = self._call(self._object, hsm_id, ObjectClass.SECRET_KEY)
            try:
                return key.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=pkcs11.GCMParams(iv, aad, 128))
            except pkcs11.PKCS11Error:
                # SoftHSM reports a wrong tag as a generic error (HSM-NOTES): an integrity failure.
                raise TokenRejected("GCM authentication failed") from None

    def _call(self, function, *args):
        if self._loaded is not _LOADED:
            raise TokenError("this store was closed because another store was opened in this process")
        try:
            return function(*args)
        except pkcs11.PKCS11Error as error:
            raise TokenError(f"{type(error).__name__} {error}") from None

    # -- RSA decryption ---------------------------------------------------------------------
    def rsa_decrypt_oaep(self, hsm_id: bytes, ciphertext: bytes, hash_name: str, modulus_bytes: int) -> bytes:
        """RSAES-OAEP: the private-key operation runs in the token (raw RSA), the padding check here.

        SoftHSM 2.6 accepts only SHA-1 for CKM_RSA_PKCS_OAEP; one path for both hashes keeps the
        behaviour identical on every HSM.
        """
        if len(ciphertext) != modulus_bytes:
            raise TokenRejected("ciphertext length does not match the key")
        with HSM_LOCK:
            key = self._call(self._object, hsm_id, ObjectClass.PRIVATE_KEY)
            try:
                encoded = key.decrypt(ciphertext, mechanism=Mechanism.RSA_X_509)
            except pkcs11.PKCS11Error:
                raise TokenRejected("RSA decryption failed") from None
        return _oaep_decode(encoded.rjust(modulus_bytes, b"\0"), hash_name)

    # -- signatures -------------------------------------------------------------------------
    @_hsm_call
    def sign_digest(self, hsm_id: bytes, scheme: str, hash_name: str, digest: bytes) -> bytes:
        """Sign a host-computed digest (SoftHSM 2.6 lacks hashed ECDSA); DER for ECDSA."""
        key = self._object(hsm_id, ObjectClass.PRIVATE_KEY)
        if scheme == "ECDSA":
            raw = key.sign(digest, mechanism=Mechanism.ECDSA)
            half = len(raw) // 2
            return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
        if scheme == "PSS":
            hash_mech, mgf = _HASH_MECHANISMS[hash_name]
            return key.sign(digest, mechanism=Mechanism.RSA_PKCS_PSS, mechanism_param=(hash_mech, mgf, len(digest)))
        return key.sign(_DIGEST_INFO[hash_name] + digest, mechanism=Mechanism.RSA_PKCS)

    def verify_digest(self, hsm_id: bytes, scheme: str, hash_name: str, digest: bytes, signature: bytes,
                      field_bytes: int) -> bool:
        with HSM_LOCK:
            key = self._call(self._object, hsm_id, ObjectClass.PUBLIC_KEY)
            try:
                if scheme == "ECDSA":
                    r, s = decode_dss_signature(signature)
                    raw = r.to_bytes(field_bytes, "big") + s.to_bytes(field_bytes, "big")
                    return bool(key.verify(digest, raw, mechanism=Mechanism.ECDSA))
                if scheme == "PSS":
                    hash_mech, mgf = _HASH_MECHANISMS[hash_name]
                    return bool(key.verify(digest, signature, mechanism=Mechanism.RSA_PKCS_PSS,
                                           mechanism_param=(hash_mech, mgf, len(digest))))
                return bool(key.verify(_DIGEST_INFO[hash_name] + digest, signature, mechanism=Mechanism.RSA_PKCS))
            except (ValueError, OverflowError, pkcs11.PKCS11Error):
                return False

    # -- MACs -------------------------------------------------------------------------------
    @_hsm_call
    def mac(self, hsm_id: bytes, key_bytes: int, message: bytes) -> bytes:
        return self._object(hsm_id, ObjectClass.SECRET_KEY).sign(message, mechanism=_HMAC_MECHANISMS[key_bytes])

    def verify_mac(self, hsm_id: bytes, key_bytes: int, message: bytes, mac: bytes) -> bool:
        with HSM_LOCK:
            key = self._call(self._object, hsm_id, ObjectClass.SECRET_KEY)
            try:
                return bool(key.verify(message, mac, mechanism=_HMAC_MECHANISMS[key_bytes]))
            except pkcs11.PKCS11Error:
                return False

    # -- SigV4 secrets (kmsplan serve) ------------------------------------------------------
    @_hsm_call
    def import_hmac_secret(self, hsm_id: bytes, value: bytes) -> None:
        """Store a caller-chosen HMAC key: sensitive, non-extractable, able to sign and nothing else.

        SigV4 verification needs HMAC keyed by an access key's secret; keeping that key here means
        no file or database column ever holds the secret, and the host only sees day-scoped keys
        derived from it (kmsplan.server.credentials)."""
        key = self._session.create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
            Attribute.VALUE: value, Attribute.ID: hsm_id, Attribute.TOKEN: True, Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
            Attribute.VERIFY: False, Attribute.ENCRYPT: False, Attribute.DECRYPT: False, Attribute.WRAP: False,
            Attribute.UNWRAP: False, Attribute.DERIVE: False,
        })
        self._handles[(hsm_id, ObjectClass.SECRET_KEY)] = key

    @_hsm_call
    def hmac_sha256(self, hsm_id: bytes, message: bytes) -> bytes:
        """HMAC-SHA256 of `message` under a key imported with `import_hmac_secret`."""
        return self._object(hsm_id, ObjectClass.SECRET_KEY).sign(message, mechanism=Mechanism.SHA256_HMAC)

    # -- multi-Region transport -------------------------------------------------------------
    @_hsm_call
    def create_agreement_key(self) -> bytes:
        """Create this token's ECDH key pair for transport keys; return the public EC point."""
        params = self._session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
        )
        public, _ = params.generate_keypair(
            id=TRANSPORT_ID, store=True, public_template={Attribute.VERIFY: False},
            private_template={Attribute.DERIVE: True, Attribute.SIGN: False, Attribute.SENSITIVE: True,
                              Attribute.EXTRACTABLE: False},
        )
        return public[Attribute.EC_POINT]

    def _transport_key(self, peer_point: bytes):
        private = self._object(TRANSPORT_ID, ObjectClass.PRIVATE_KEY)
        return private.derive_key(
            KeyType.AES, 256, mechanism_param=(KDF.NULL, None, peer_point),
            template={Attribute.TOKEN: False, Attribute.WRAP: True, Attribute.UNWRAP: True,
                      Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )

    @_hsm_call
    def export_wrapped(self, hsm_id: bytes, spec: KeySpecInfo, peer_point: bytes) -> bytes:
        """Wrap multi-Region material under the transport key shared with the peer token."""
        object_class = ObjectClass.SECRET_KEY if spec.family in ("AES", "HMAC") else ObjectClass.PRIVATE_KEY
        material = self._object(hsm_id, object_class)
        transport = self._transport_key(peer_point)
        try:
            return transport.wrap_key(material, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        finally:
            transport.destroy()

    @_hsm_call
    def import_wrapped(self, hsm_id: bytes, spec: KeySpecInfo, usage_sign: bool, wrapped: bytes,
                       peer_point: bytes, public_der: bytes | None) -> None:
        """Unwrap material exported by the peer token; recreate the public half from its DER."""
        transport = self._transport_key(peer_point)
        common = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True}
        try:
            if spec.family in ("AES", "HMAC"):
                template = dict(common)
                key_type = KeyType.AES
                if spec.family == "HMAC":
                    key_type = KeyType.GENERIC_SECRET
                    template.update({Attribute.SIGN: True, Attribute.VERIFY: True, Attribute.ENCRYPT: DEFAULT,
                                     Attribute.DECRYPT: DEFAULT, Attribute.WRAP: DEFAULT, Attribute.UNWRAP: DEFAULT})
                else:
                    template.update({Attribute.ENCRYPT: True, Attribute.DECRYPT: True})
                key = transport.unwrap_key(ObjectClass.SECRET_KEY, key_type, wrapped, id=hsm_id, store=True,
                                           mechanism=Mechanism.AES_KEY_WRAP_PAD, capabilities=0, template=template)
                self._handles[(hsm_id, ObjectClass.SECRET_KEY)] = key
                return
            key_type = KeyType.RSA if spec.family == "RSA" else KeyType.EC
            caps = {Attribute.SIGN: usage_sign, Attribute.DECRYPT: not usage_sign} if key_type == KeyType.RSA \
                else {Attribute.SIGN: True}
            priv = transport.unwrap_key(ObjectClass.PRIVATE_KEY, key_type, wrapped, id=hsm_id, store=True,
                                        mechanism=Mechanism.AES_KEY_WRAP_PAD, capabilities=0,
                                        template={**common, **caps, **_NOT_ON_PRIVATE})
            self._handles[(hsm_id, ObjectClass.PRIVATE_KEY)] = priv
            self._handles[(hsm_id, ObjectClass.PUBLIC_KEY)] = self._create_public(hsm_id, spec, usage_sign, public_der)
        finally:
            transport.destroy()

    def _create_public(self, hsm_id: bytes, spec: KeySpecInfo, usage_sign: bool, public_der: bytes):
        if spec.family == "RSA":
            pkcs1 = serialization.load_der_public_key(public_der).public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.PKCS1
            )
            attrs = decode_rsa_public_key(pkcs1, capabilities=0)
            attrs.update({Attribute.VERIFY: usage_sign, Attribute.ENCRYPT: not usage_sign})
        else:
            attrs = decode_ec_public_key(public_der)
            attrs[Attribute.VERIFY] = True
        attrs.update({Attribute.TOKEN: True, Attribute.ID: hsm_id})
        return self._session.create_object(attrs)


def _public_key_der(public, spec: KeySpecInfo) -> bytes:
    """SubjectPublicKeyInfo DER, as GetPublicKey returns it (python-pkcs11 gives PKCS#1 for RSA)."""
    if spec.family == "RSA":
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"), int.from_bytes(public[Attribute.MODULUS], "big")
        )
        key = numbers.public_key()
    else:
        point = public[Attribute.EC_POINT]
        # EC_POINT is a DER OCTET STRING around the uncompressed point.
        header = 3 if point[1] & 0x80 else 2
        key = ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[spec.curve], point[header:])
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _mgf1(seed: bytes, length: int, hash_name: str) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.new(hash_name, seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def _oaep_decode(encoded: bytes, hash_name: str) -> bytes:
    """EME-OAEP decoding (RFC 8017, 7.1.2 step 3) with an empty label; one error for every failure."""
    h_len = hashlib.new(hash_name).digest_size
    if len(encoded) < 2 * h_len + 2:
        raise TokenRejected("OAEP decoding failed")
    masked_seed, masked_db = encoded[1 : 1 + h_len], encoded[1 + h_len :]
    seed = bytes(a ^ b for a, b in zip(masked_seed, _mgf1(masked_db, h_len, hash_name)))
    db = bytes(a ^ b for a, b in zip(masked_db, _mgf1(seed, len(masked_db), hash_name)))
    label_hash, rest = db[:h_len], db[h_len:]
    separator = rest.find(b"\x01")
    valid = (
        encoded[0] == 0
        and label_hash == hashlib.new(hash_name, b"").digest()
        and separator >= 0
        and not rest[:separator].strip(b"\0")
    )
    if not valid:
        raise TokenRejected("OAEP decoding failed")
    return rest[separator + 1 :]

"""Keys: the key-encryption key, data keys, AES-256-GCM envelopes, salted commitments and
the Ed25519 checkpoint signing key.

Nothing else in the archive touches ciphertext. Data keys are scoped to (contact, retention
class, period) and stored in the catalog wrapped by the KEK; destroying one crypto-shreds
every record under it while the hash chain (over ciphertext) stays verifiable.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from archiver.canonical import sha256_hex
from archiver.errors import ConfigError, IntegrityError

NONCE = 12
SALT = 16


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class Kek:
    """The key-encryption key (a local 0600 file in the embedded default)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        # A separate key for derived secrets (HMAC-SHA256 of the KEK with a label), so the
        # AES key itself never signs anything.
        self._derive_key = hmac.new(key, b"archiver-derive-v1", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "Kek(<redacted>)"

    @classmethod
    def from_file(cls, path: Path, *, create: bool = True) -> "Kek":
        """Load the KEK, generating it on first run. Raises ConfigError if unusable."""
        if not path.exists():
            if not create:
                raise ConfigError(f"key-encryption key {path} does not exist")
            _write_private(path, secrets.token_bytes(32))
        key = path.read_bytes()
        if len(key) != 32:
            raise ConfigError(f"key-encryption key {path} must hold 32 bytes")
        return cls(key)

    def wrap(self, data_key: bytes, key_id: str) -> bytes:
        """Encrypt a data key, bound to its id."""
        nonce = secrets.token_bytes(NONCE)
        return nonce + self._aead.encrypt(nonce, data_key, key_id.encode())

    def derive(self, label: str) -> bytes:
        """A 32-byte secret for ``label`` (the console's cookie signing key), the same in every process."""
        return hmac.new(self._derive_key, label.encode(), hashlib.sha256).digest()

    def unwrap(self, blob: bytes, key_id: str) -> bytes:
        """Decrypt a wrapped data key. Raises IntegrityError if it was altered."""
        try:
            return self._aead.decrypt(blob[:NONCE], blob[NONCE:], key_id.encode())
        except InvalidTag as exc:
            raise IntegrityError(f"data key {key_id}", "wrapped key does not decrypt") from exc


def new_data_key() -> bytes:
    """A fresh AES-256 data key."""
    return AESGCM.generate_key(bit_length=256)


def scope_id(contact: str | None, retention_class: str, period: str) -> str:
    """Data key id for (contact, class, period); the contact appears only as a digest."""
    who = sha256_hex((contact or "_service").encode())[:20]
    return f"{retention_class}/{period}/{who}"


def cipher(data_key: bytes) -> AESGCM:
    """The AES-256-GCM cipher of a data key, for ``seal_payload`` calls that share the key
    (making one costs more than encrypting a 1 KB payload with it)."""
    return AESGCM(data_key)


def seal_payload(data_key: bytes | AESGCM, plaintext: bytes, aad: bytes) -> tuple[bytes, str]:
    """Encrypt ``salt || plaintext``; return (nonce || ciphertext, salted commitment hex).

    ``data_key`` is the key's bytes or its ``cipher``.

    The commitment SHA-256(salt || plaintext) sits in the clear: an export reveals salt and
    plaintext to prove them, and once the key is destroyed the salt is gone with it.
    """
    fresh = os.urandom(SALT + NONCE)  # one call for both (the CSPRNG behind secrets.token_bytes)
    salt, nonce = fresh[:SALT], fresh[SALT:]
    aead = data_key if isinstance(data_key, AESGCM) else AESGCM(data_key)
    ct = aead.encrypt(nonce, salt + plaintext, aad)
    return nonce + ct, commitment(salt, plaintext)


def open_payload(data_key: bytes, blob: bytes, aad: bytes, where: str) -> tuple[bytes, bytes]:
    """Decrypt a sealed payload; return (salt, plaintext). Raises IntegrityError."""
    try:
        inner = AESGCM(data_key).decrypt(blob[:NONCE], blob[NONCE:], aad)
    except (InvalidTag, ValueError) as exc:
        raise IntegrityError(where, "payload does not decrypt (altered or wrong key)") from exc
    return inner[:SALT], inner[SALT:]


def commitment(salt: bytes, plaintext: bytes) -> str:
    """Salted commitment of a plaintext."""
    return sha256_hex(salt + plaintext)


def load_signing_key(path: Path, *, create: bool = True) -> Ed25519PrivateKey:
    """Load the Ed25519 checkpoint key, generating it (0600 PEM) on first run.

    Raises ConfigError if the file is missing (and ``create`` is false) or not an Ed25519 key.
    """
    if not path.exists():
        if not create:
            raise ConfigError(f"signing key {path} does not exist")
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        _write_private(path, pem)
        _write_public(path.with_suffix(".pub"), key.public_key())
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is not an Ed25519 key")
    return loaded


def _write_public(path: Path, public: Ed25519PublicKey) -> None:
    """Publish the public half next to the private key, for offline verifiers."""
    path.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo))

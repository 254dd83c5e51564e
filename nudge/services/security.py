"""Password and token hashing, password rules, and AES-256-GCM field encryption."""
import base64
import hashlib
import hmac
import os
import re
import secrets

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import current_app

from nudge.errors import ValidationError

PASSWORD_MIN_LENGTH = 12
_production_hasher = PasswordHasher()
# Tests hash thousands of passwords; the cheapest profile keeps them fast and is never used otherwise.
_testing_hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)


def _hasher():
    return _testing_hasher if current_app.config.get("TESTING") else _production_hasher


def password_problems(password):
    """The spec's rule: 12+ characters with lower case, upper case, a digit and a symbol."""
    problems = []
    if len(password or "") < PASSWORD_MIN_LENGTH:
        problems.append(f"at least {PASSWORD_MIN_LENGTH} characters")
    if not re.search(r"[a-z]", password or ""):
        problems.append("a lower-case letter")
    if not re.search(r"[A-Z]", password or ""):
        problems.append("an upper-case letter")
    if not re.search(r"[0-9]", password or ""):
        problems.append("a digit")
    if not re.search(r"[^A-Za-z0-9]", password or ""):
        problems.append("a symbol")
    return problems


def check_password_strength(password, field="password"):
    problems = password_problems(password)
    if problems:
        raise ValidationError("Password needs " + ", ".join(problems) + ".",
                              [{"field": field, "issue": "Password needs " + ", ".join(problems) + "."}])


def hash_password(password):
    return _hasher().hash(password)


def verify_password(password_hash, password):
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


_dummy_hashes = {}


def dummy_verify(password):
    """Verify against a hash no password matches, so an unknown email takes as long as a wrong password."""
    hasher = _hasher()
    if id(hasher) not in _dummy_hashes:
        _dummy_hashes[id(hasher)] = hasher.hash(secrets.token_hex(16))
    verify_password(_dummy_hashes[id(hasher)], password)


def new_token(nbytes=32):
    return secrets.token_urlsafe(nbytes)


def hash_token(token):
    """SHA-256 for high-entropy random tokens (API secrets, invitations, recovery codes)."""
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(a, b):
    return hmac.compare_digest(a, b)


def _key_id(key):
    return hashlib.sha256(key).digest()[:4]


def encrypt(plaintext):
    """AES-256-GCM with the newest NUDGE_ENCRYPTION_KEYS key; the key id travels with the ciphertext."""
    key = current_app.config["ENCRYPTION_KEYS"][0]
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), None)
    return base64.urlsafe_b64encode(_key_id(key) + nonce + sealed).decode()


def decrypt(token):
    raw = base64.urlsafe_b64decode(token.encode())
    key_id, nonce, sealed = raw[:4], raw[4:16], raw[16:]
    for key in current_app.config["ENCRYPTION_KEYS"]:
        if _key_id(key) == key_id:
            return AESGCM(key).decrypt(nonce, sealed, None).decode()
    raise ValueError("no configured encryption key matches this value (was NUDGE_ENCRYPTION_KEYS rotated?)")

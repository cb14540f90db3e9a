"""Trove's RPC encryption, for calling an agent that was given an
``instance_rpc_encr_key``.

With the key, the agent's RPC server encrypts and expects encrypted every
context and every argument and result (``trove/common/rpc/
secure_serializer.py``; the cipher in ``trove/common/crypto_utils.py``):
AES-CBC keyed with the hex MD5 of the key (32 bytes), a random 16-byte IV in
front, padding of N bytes of value N, then base64. A context travels as
``{"context": <that of its JSON>}``, an entity as that of its JSON.
"""
import base64
import hashlib
import json
import os

IV_BYTES = 16


def _cipher(key: str, iv: bytes):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    aes_key = hashlib.md5(key.encode()).hexdigest().encode()   # noqa: S324 - Trove's choice
    return Cipher(algorithms.AES(aes_key), modes.CBC(iv))


def encrypt(text: str, key: str, iv: bytes | None = None) -> str:
    data = text.encode()
    iv = iv if iv is not None else os.urandom(IV_BYTES)
    pad = IV_BYTES - len(data) % IV_BYTES
    enc = _cipher(key, iv).encryptor()
    return base64.b64encode(iv + enc.update(data + bytes((pad,)) * pad) + enc.finalize()).decode()


def decrypt(blob: str, key: str) -> str:
    raw = base64.b64decode(blob)
    dec = _cipher(key, raw[:IV_BYTES]).decryptor()
    data = dec.update(raw[IV_BYTES:]) + dec.finalize()
    if not data or not 1 <= data[-1] <= IV_BYTES:
        raise ValueError("bad padding: not encrypted with this key")
    return data[:-data[-1]].decode()


def serializer(key: str):
    """An oslo.messaging serializer that speaks to an agent given key."""
    import oslo_messaging as messaging

    class SecureSerializer(messaging.NoOpSerializer):
        def serialize_entity(self, ctxt, entity):
            return encrypt(json.dumps(entity), key)

        def deserialize_entity(self, ctxt, entity):
            try:
                return json.loads(decrypt(entity, key))
            except (ValueError, TypeError):
                return entity      # as Trove's: what does not decrypt is taken as it is

        def serialize_context(self, ctxt):
            return {"context": encrypt(json.dumps(ctxt), key)}

        def deserialize_context(self, ctxt):
            try:
                return json.loads(decrypt(ctxt["context"], key))
            except (ValueError, TypeError, KeyError):
                return ctxt

    return SecureSerializer()

"""Trove's encrypted RPC (instance_rpc_encr_key): the cipher against
openssl's own AES, and calls to an agent that was given a key."""
import base64
import hashlib
import json
import shutil
import subprocess

import pytest

oslo_messaging = pytest.importorskip("oslo_messaging")

from tests.helpers.agent import serving_agent  # noqa: E402
from trove_image_builder.vm import rabbit, secure_rpc  # noqa: E402

KEY = "bzH6y0SGmjuoY0FNSTptrhgieGXNDX6P"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
@pytest.mark.parametrize("text", ["{}", '{"user": "trove", "roles": ["admin"]}', "x" * 16])
def test_encrypt_is_aes_cbc_keyed_with_the_md5_hex_of_the_key(text):
    """Against openssl: AES-256-CBC with the 32 ASCII bytes of md5(key) as
    the key, the IV in front, PKCS#7 padding (what Trove's crypto_utils does)."""
    iv = bytes(range(16))
    ours = base64.b64decode(secure_rpc.encrypt(text, KEY, iv=iv))
    aes_key = hashlib.md5(KEY.encode()).hexdigest().encode().hex()
    theirs = subprocess.run(["openssl", "enc", "-aes-256-cbc", "-K", aes_key, "-iv", iv.hex()],
                            input=text.encode(), capture_output=True, check=True).stdout
    assert ours == iv + theirs


def test_decrypt_reverses_encrypt_and_refuses_another_key():
    blob = secure_rpc.encrypt('{"a": 1}', KEY)
    assert json.loads(secure_rpc.decrypt(blob, KEY)) == {"a": 1}
    with pytest.raises(ValueError):
        json.loads(secure_rpc.decrypt(blob, "another key entirely"))


def test_a_keyed_agent_answers_a_keyed_call():
    with serving_agent("fake://", rpc_key=KEY) as agent:
        answer = rabbit.rpc_call("fake://", agent.guest_id, "get_hwinfo", timeout=10,
                                 rpc_key=KEY, flavor=3)
    assert answer == {"mem_total": 2048, "flavor": 3}
    # the agent saw the argument decrypted
    assert agent.calls == [("get_hwinfo", {"flavor": 3})]


def test_a_keyed_agent_does_not_answer_a_plain_call():
    with serving_agent("fake://", rpc_key=KEY) as agent:
        with pytest.raises(Exception) as err:
            rabbit.rpc_call("fake://", agent.guest_id, timeout=3)
    assert not isinstance(err.value, AssertionError)
    assert agent.calls == []

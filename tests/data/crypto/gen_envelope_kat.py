# Regenerates envelope_kat.json with Python's `cryptography` (independent of the
# Rust code): python3 gen_envelope_kat.py
import base64, json
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

def last4(pt):
    al = [c for c in pt if c.isascii() and c.isalnum()]
    assert len(al) >= 4
    return "xxxx" if len(al) < 8 else "".join(al[-4:])

vectors = []
cases = [
    (bytes(range(32)), "k1", bytes(range(0xa0, 0xac)), "card_number", "4111 1111 1111 1111"),
    (bytes([0xff] * 32), "k2", bytes(12), "card_number", "5500-0000-0000-0004"),
    (bytes(range(32, 64)), "k17", bytes(range(12)), "card_expiry", "12/27"),
    (bytes(range(64, 96)), "prod_2024-q3", bytes([7] * 12), "bank_account", "000123456789"),
    (bytes(range(96, 128)), "k1", bytes([0x42] * 12), "ssn", "123-45-6789"),
]
for key, kid, nonce, cls, pt in cases:
    l4 = last4(pt)
    aad = b"maskgate-envelope-v1\0" + cls.encode() + b"\0" + kid.encode() + b"\0" + l4.encode()
    ct = AESGCM(key).encrypt(nonce, pt.encode(), aad)
    env = "mg1.%s.%s.%s" % (kid, l4, base64.urlsafe_b64encode(nonce + ct).decode().rstrip("="))
    vectors.append(dict(key_hex=key.hex(), key_id=kid, nonce_hex=nonce.hex(), class_=cls,
                        plaintext=pt, aad_hex=aad.hex(), envelope=env))
out = json.dumps(vectors, indent=2).replace('"class_"', '"class"')
open(__import__("os").path.join(__import__("os").path.dirname(__file__), "envelope_kat.json"), "w").write(out + "\n")
print(vectors[0]["envelope"])

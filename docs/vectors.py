#!/usr/bin/env python3
"""Recomputes the known-answer vectors of docs/FORMAT.md §10 (and the WAL bytes of §11.5).

Independent of epochfs's Swift code: HKDF, AES-GCM (counter mode and GHASH over single AES
block encryptions), AES-SIV (S2V and counter mode over AES-CMAC), base64url and CRC-32C are
written out here; the AES block cipher, CMAC, SHA-256 and scrypt come from `cryptography` and
hashlib (OpenSSL), and every AEAD result is also compared with `cryptography`'s own AESGCM and
AESSIV. Needs Python 3.9+ and `pip install cryptography`.

Run: python3 docs/vectors.py    (prints every vector; exits 1 if any differs from FORMAT.md)
"""

import base64
import hashlib
import hmac
import struct
import sys

from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

# --------------------------------------------------------------------------- primitives


def hkdf_sha256(ikm, salt, info, length):
    """RFC 5869, written out: extract, then expand."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def aes_block(key, block):
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def _gf_mult(x, y):
    """Multiplication in GF(2^128) with GCM's bit order (NIST SP 800-38D, 6.3)."""
    r = 0xE1000000000000000000000000000000
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ r if v & 1 else v >> 1
    return z


def _ghash(h, data):
    y = 0
    for i in range(0, len(data), 16):
        y = _gf_mult(y ^ int.from_bytes(data[i:i + 16], "big"), h)
    return y


def _pad16(data):
    return data + bytes(-len(data) % 16)


def gcm_seal(key, nonce, aad, plaintext):
    """AES-GCM with a 96-bit nonce and a 128-bit tag, from single AES blocks."""
    assert len(nonce) == 12
    h = int.from_bytes(aes_block(key, bytes(16)), "big")
    j0 = nonce + b"\x00\x00\x00\x01"
    out = bytearray()
    for i in range(0, len(plaintext), 16):
        counter = nonce + struct.pack(">I", 2 + i // 16)
        stream = aes_block(key, counter)
        chunk = plaintext[i:i + 16]
        out += bytes(a ^ b for a, b in zip(chunk, stream))
    lengths = struct.pack(">QQ", 8 * len(aad), 8 * len(out))
    s = _ghash(h, _pad16(aad) + _pad16(bytes(out)) + lengths)
    tag = (s ^ int.from_bytes(aes_block(key, j0), "big")).to_bytes(16, "big")
    return bytes(out) + tag


def _dbl(block):
    value = int.from_bytes(block, "big") << 1
    if value >> 128:
        value = (value ^ 0x87) & ((1 << 128) - 1)
    return value.to_bytes(16, "big")


def _cmac(key, data):
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def siv_seal(key, ad, plaintext):
    """AES-SIV (RFC 5297) with one associated-data component: SIV (16) || ciphertext."""
    k1, k2 = key[:len(key) // 2], key[len(key) // 2:]
    d = _cmac(k1, bytes(16))
    d = bytes(a ^ b for a, b in zip(_dbl(d), _cmac(k1, ad)))
    if len(plaintext) >= 16:
        t = plaintext[:-16] + bytes(a ^ b for a, b in zip(plaintext[-16:], d))
    else:
        padded = plaintext + b"\x80" + bytes(15 - len(plaintext))
        t = bytes(a ^ b for a, b in zip(_dbl(d), padded))
    v = _cmac(k1, t)
    q = bytearray(v)
    q[8] &= 0x7F
    q[12] &= 0x7F
    encryptor = Cipher(algorithms.AES(k2), modes.CTR(bytes(q))).encryptor()
    return v + encryptor.update(plaintext) + encryptor.finalize()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sha256(data):
    return hashlib.sha256(data).digest()


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c_update(crc, data):
    """Go's crc32.Update for the Castagnoli table (pre- and post-inverted)."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --------------------------------------------------------------------------- epochfs layouts


def file_key(storage_dek, volume_id, file_id):
    return hkdf_sha256(storage_dek, volume_id, b"epochfs/v1/file" + file_id, 32)


def storage_aad(key_id, volume_id, file_id, block_index):
    return b"S\x01\x00" + struct.pack(">I", key_id) + volume_id + file_id + struct.pack(">Q", block_index)


def raft_aad(key_id):
    return b"R\x01" + struct.pack(">I", key_id)


def envelope(key, key_id, nonce, aad, plaintext):
    sealed = gcm_seal(key, nonce, aad, plaintext)
    assert sealed == AESGCM(key).encrypt(nonce, plaintext, aad), "own GCM disagrees with OpenSSL"
    return b"\x01\x00" + struct.pack(">I", key_id) + nonce + sealed


def name_seal(name_key, ad, plaintext):
    sealed = siv_seal(name_key, ad, plaintext)
    assert sealed == AESSIV(name_key).encrypt(plaintext, [ad]), "own SIV disagrees with OpenSSL"
    return sealed


def varint(value):
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def wal_frame(record_type, crc, data):
    record = b"\x08" + varint(record_type) + b"\x10" + varint(crc)
    if data is not None:
        record += b"\x1a" + varint(len(data)) + data
    pad = (8 - len(record) % 8) % 8
    word = len(record) | ((0x80 | pad) << 56 if pad else 0)
    return struct.pack("<Q", word) + record + bytes(pad)


# --------------------------------------------------------------------------- checks

FAILURES = 0


def check(label, actual, expected=None):
    """Prints a vector; compares it with the value written in FORMAT.md when one is given."""
    global FAILURES
    text = actual.hex() if isinstance(actual, (bytes, bytearray)) else str(actual)
    if expected is not None and text != expected:
        FAILURES += 1
        print(f"MISMATCH {label}\n  computed {text}\n  expected {expected}")
    else:
        print(f"{label} = {text}")


H = bytes.fromhex
STORAGE_DEK = H("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
RAFT_DEK = H("202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f")
VOLUME_ID = H("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
FILE_ID = H("00112233445566778899aabbccddeeff")
KEY_ID = 7
NONCE = H("a0a1a2a3a4a5a6a7a8a9aaab")
NAME_KEY = bytes(range(64))
DIR_IV = H("00112233445566778899aabbccddeeff")
WRAPPING_KEY = bytes(range(0x40, 0x60))
KEYRING_NONCE = H("b0b1b2b3b4b5b6b7b8b9babb")
CLUSTER_ID = b"5f0c8a2e-4b1d-4c3e-9a7f-1e2d3c4b5a69"


def primitives():
    print("# §10.2 primitives (standard vectors the Swift tests also check)")
    check("AES-256-GCM, NIST test case 14 (zero key, zero nonce, 16 zero bytes)",
          gcm_seal(bytes(32), bytes(12), b"", bytes(16)),
          "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919")
    check("HKDF-SHA256, RFC 5869 test case 1",
          hkdf_sha256(b"\x0b" * 22, H("000102030405060708090a0b0c"), H("f0f1f2f3f4f5f6f7f8f9"), 42),
          "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    check("SHA-256('abc')", sha256(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def envelopes():
    print("# §10.3 per-file key")
    fk = file_key(STORAGE_DEK, VOLUME_ID, FILE_ID)
    hk = HKDF(algorithm=hashes.SHA256(), length=32, salt=VOLUME_ID, info=b"epochfs/v1/file" + FILE_ID).derive(STORAGE_DEK)
    assert fk == hk, "own HKDF disagrees with OpenSSL"
    check("file_key", fk, "04e8586636cc0a310b3da81de0dbd7abde2fcacbab137b98faa2449414395feb")

    print("# §10.4 storage envelope, block 0")
    aad = storage_aad(KEY_ID, VOLUME_ID, FILE_ID, 0)
    check("aad", aad, "530100000000070f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff0000000000000000")
    env = envelope(fk, KEY_ID, NONCE, aad, b"epochfs block zero")
    check("envelope", env, "010000000007a0a1a2a3a4a5a6a7a8a9aaabc4423f0cb5ae1722f76aa024358f7a24934b8ae501c4e952874d968af15868a150bc")

    print("# §10.5 storage envelope, block 3, 4096 zero bytes")
    aad = storage_aad(KEY_ID, VOLUME_ID, FILE_ID, 3)
    check("aad", aad, "530100000000070f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff0000000000000003")
    env = envelope(fk, KEY_ID, NONCE, aad, bytes(4096))
    check("length", len(env), "4130")
    check("first 34 bytes", env[:34], "010000000007a0a1a2a3a4a5a6a7a8a9aaaba132506fddc864029506cf475eaf0041")
    check("tag", env[-16:], "aa6ad98dc9d106e7288505c40bc9c594")
    check("sha256", sha256(env), "2a300f9ed5c2d8753c7792a0cb4f4aa3f2f723984a6dae5a732ad07b34056a8e")

    print("# §10.6 raft envelope and its proposal layout")
    payload = b'{"op":"put","key":"k1","value":"v1"}'
    check("aad", raft_aad(KEY_ID), "520100000007")
    raft = envelope(RAFT_DEK, KEY_ID, NONCE, raft_aad(KEY_ID), payload)
    check("envelope", raft, "010000000007a0a1a2a3a4a5a6a7a8a9aaab051ecb44e6eda2dad45c8f96043613dfb345e36c0d960a0079f3a78cb64495da69641fc9d15938807e54a5a991dd0cbc04035b91")
    check("entry data", b"\x01" + struct.pack(">Q", 31337) + raft,
          "010000000000007a69010000000007a0a1a2a3a4a5a6a7a8a9aaab051ecb44e6eda2dad45c8f96043613dfb345e36c0d960a0079f3a78cb64495da69641fc9d15938807e54a5a991dd0cbc04035b91")


def names():
    print("# §10.7 names")
    sealed = name_seal(NAME_KEY, DIR_IV, b"hello.txt")
    check("siv(hello.txt)", sealed, "5c74e6c53f8191fe063539d3004ec8bb310bca29d6375dd6da")
    check("backing name", b64url(sealed), "XHTmxT-Bkf4GNTnTAE7IuzELyinWN13W2g")
    long_name = b"n" * 200
    encoded = b64url(name_seal(NAME_KEY, DIR_IV, long_name))
    check("encoded length (200-byte name)", len(encoded), "288")
    check("side file content sha256", sha256(encoded.encode()),
          "5d7755e7ca3a39dae331bd5bfb36e44d56ea904d4412aca5cfdf9b20d93fa47e")
    check("entry name", "epochfs.long." + b64url(sha256(encoded.encode())),
          "epochfs.long.XXdV58o6OdrjMb1b-zbkTVbqkE1EEqylz9-bINk_pH4")

    print("# §10.8 extended attribute")
    xattr_ad = b"epochfs/v1/xattr"
    xname = b"user.comment"
    check("backing attribute name", "user.epochfs." + b64url(name_seal(NAME_KEY, xattr_ad, xname)),
          "user.epochfs.FeQ1TwqLhpTYZdhwjba0G_5MXz90MLBd2MZ6mA")
    pseudo_id = sha256(xattr_ad + xname)[:16]
    check("pseudo-file id", pseudo_id, "5b8fdf34c5563cef73aa3d5cf60109b8")
    key = file_key(STORAGE_DEK, VOLUME_ID, pseudo_id)
    check("value envelope", envelope(key, KEY_ID, NONCE, storage_aad(KEY_ID, VOLUME_ID, pseudo_id, 0), b"hello"),
          "010000000007a0a1a2a3a4a5a6a7a8a9aaab4f281da84db5f0c307a25e6b6b647c1b3254eaaaef")

    print("# §10.9 symlink")
    key = file_key(STORAGE_DEK, VOLUME_ID, FILE_ID)
    sealed_target = FILE_ID + envelope(key, KEY_ID, NONCE, storage_aad(KEY_ID, VOLUME_ID, FILE_ID, 0), b"../target")
    check("sealed_target", sealed_target,
          "00112233445566778899aabbccddeeff010000000007a0a1a2a3a4a5a6a7a8a9aaab8f1c7f1bbcba0367e17036160d41b9b8e23b0aa93c53f7d3d7")
    check("backing target", b64url(sealed_target),
          "ABEiM0RVZneImaq7zN3u_wEAAAAAB6ChoqOkpaanqKmqq48cfxu8ugNn4XA2Fg1BubjiOwqpPFP309c")


def header():
    print("# §10.10 keyring and header slot")
    keyring = b"\x01" + NAME_KEY + struct.pack(">H", 1) + struct.pack(">IB", KEY_ID, 1) + STORAGE_DEK + RAFT_DEK
    check("keyring", keyring,
          "01000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e"
          "1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e"
          "3f00010000000701000102030405060708090a0b0c0d0e0f1011121314151617"
          "18191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637"
          "38393a3b3c3d3e3f")
    spec = b"file:/etc/epochfs/keys/%d.key"
    sealed_length = 12 + len(keyring) + 16
    clear = (b"EPOCHFS\x01" + struct.pack(">HH", 2, 0) + VOLUME_ID + struct.pack(">QIIQ", 1, KEY_ID, 4096, 2**64 - 1)
             + bytes(1 + 1 + 4 + 4 + 32) + struct.pack(">H", len(spec)) + spec + bytes(1024 - len(spec))
             + struct.pack(">I", sealed_length))
    assert len(clear) == 1124
    check("bytes 0..95", clear[:96],
          "45504f4348465301000200000f1e2d3c4b5a69788796a5b4c3d2e1f000000000"
          "000000010000000700001000ffffffffffffffff000000000000000000000000"
          "000000000000000000000000000000000000000000000000000000000000001d")
    check("bytes 1120..1123", clear[1120:1124], "000000a4")
    sealed = gcm_seal(WRAPPING_KEY, KEYRING_NONCE, clear, keyring)
    assert sealed == AESGCM(WRAPPING_KEY).encrypt(KEYRING_NONCE, keyring, clear)
    check("sealed_keyring", KEYRING_NONCE + sealed,
          "b0b1b2b3b4b5b6b7b8b9babb02008187c24eee9f3ce62ef2e6fa41c5b118953a"
          "5701c389e4de792192acef8e9e1ba4b2a1159ba87188582526f349c092a50a14"
          "40cf7cc9a181c2028850a0e59376f37a90306ce21458dec9c56dea67f09555f8"
          "fc967ec55a62d50823dd6ed5364b08d667576e8bff889cd492f80287fca026bd"
          "54eac954602854c3b3ad6e06f88f9311f036d3763fe12bc6d771e0c1a6898902"
          "912b3af4")
    body = clear + KEYRING_NONCE + sealed
    body += bytes(65504 - len(body))
    check("checksum (bytes 65504..65535)", sha256(body),
          "d8bf3fa9ab924ab09562f59f47b5f737448e86f3f502ee4c39e43271e5f87022")
    check("sha256 of the whole slot", sha256(body + sha256(body)),
          "1f1dacc5c24fb76c2b88befab22dcdd93be15b2e8d1bd80acd6a27958e1c4b49")

    print("# §10.2 scrypt and §10.11 passphrase wrapping key")
    check("scrypt RFC 7914 (password, NaCl, N=1024, r=8, p=16, 64)",
          hashlib.scrypt(b"password", salt=b"NaCl", n=1024, r=8, p=16, dklen=64),
          "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
          "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640")
    wrapping = hashlib.scrypt(b"correct horse", salt=bytes(range(32)), n=1 << 16, r=8, p=1, maxmem=80 << 20, dklen=32)
    assert wrapping == Scrypt(salt=bytes(range(32)), length=32, n=1 << 16, r=8, p=1).derive(b"correct horse")
    check("wrapping key (correct horse, salt 00..1f, N=2^16, r=8, p=1)", wrapping,
          "d88dd954315ef92b27d902c52d3c1b2c90b4f0f755030167664638ca506f2a5c")


def cluster():
    print("# §10.14 raft DEKs shared by a cluster (§3.7)")
    def raft_dek(cluster_secret, epoch):
        info = b"epochfs/v1/raft" + struct.pack(">I", epoch)
        derived = hkdf_sha256(cluster_secret, CLUSTER_ID, info, 32)
        assert derived == HKDF(algorithm=hashes.SHA256(), length=32, salt=CLUSTER_ID, info=info).derive(cluster_secret)
        return derived
    raft_7 = raft_dek(WRAPPING_KEY, 7)
    check("raft_DEK[7], kdf 0 (cluster secret = wrapping_key)", raft_7,
          "f00b2d376bca9884835d41643166babfe89b907da098dbba8802396c6609026a")
    check("raft_DEK[8], kdf 0 (same secret)", raft_dek(WRAPPING_KEY, 8),
          "fb950ed92945dafd035149f7c48a1379a79ff93c3ef056130cc24c34d2fe3406")
    salt = b"epochfs/v1/raft" + CLUSTER_ID
    secret = hashlib.scrypt(b"correct horse", salt=salt, n=1 << 16, r=8, p=1, maxmem=80 << 20, dklen=32)
    assert secret == Scrypt(salt=salt, length=32, n=1 << 16, r=8, p=1).derive(b"correct horse")
    check("cluster secret, kdf 1 (correct horse, N=2^16, r=8, p=1)", secret,
          "604c75d6cba3dc5e7ba5032e9cc1067bc9b8c9088d15925b16985d6e78e2665e")
    check("raft_DEK[7], kdf 1", raft_dek(secret, 7),
          "424ca4d5da31fdb531dd4d84c2e73076bca6e9b28fa0dd3a7c2aeb21323d12f5")
    keyring = (b"\x02" + NAME_KEY + bytes([len(CLUSTER_ID)]) + CLUSTER_ID + struct.pack(">H", 1)
               + struct.pack(">IB", KEY_ID, 1) + STORAGE_DEK + raft_7)
    check("keyring, version 2", keyring,
          "02000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e"
          "1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e"
          "3f2435663063386132652d346231642d346333652d396137662d316532643363"
          "34623561363900010000000701000102030405060708090a0b0c0d0e0f101112"
          "131415161718191a1b1c1d1e1ff00b2d376bca9884835d41643166babfe89b90"
          "7da098dbba8802396c6609026a")


def content():
    print("# §10.12 content sizes, B = 4096")
    def backing_size(p, h, b=4096):
        if p == 0:
            return 0
        return h + (p // b) * (b + 34) + (p % b + 34 if p % b else 0)
    def plaintext_size(s, h, b=4096):
        if s <= h:
            return 0
        return (s - h) // (b + 34) * b + max(0, (s - h) % (b + 34) - 34)
    format2 = 2 * (32 + 4096 + 34) + 18
    check("format 2 H", format2, "8342")
    for p, expected2, expected1 in ((0, 0, 0), (1, 8377, 53), (4096, 12472, 4148), (4097, 12507, 4183),
                                    (9000, 17444, 9120), (10000, 18444, 10120), (20000, 28512, 20188)):
        check(f"backing_size({p}), format 2", backing_size(p, format2), str(expected2))
        check(f"backing_size({p}), format 1", backing_size(p, 18), str(expected1))
        assert plaintext_size(backing_size(p, format2), format2) == p
        assert plaintext_size(backing_size(p, 18), 18) == p
    slot = (5).to_bytes(8, "big") + (1722).to_bytes(2, "big") + NONCE + bytes(10)
    check("slot header", slot.hex(), "000000000000000506baa0a1a2a3a4a5a6a7a8a9aaab00000000000000000000")
    record_offset = (2 * (32 + 4096 + 34) + 511) // 512 * 512
    format3 = record_offset + 512
    check("format 3 R", record_offset, "8704")
    check("format 3 H", format3, "9216")
    for p, expected3 in ((0, 0), (1, 9251), (4096, 13346), (4097, 13381), (9000, 18318), (10000, 19318), (20000, 29386)):
        check(f"backing_size({p}), format 3", backing_size(p, format3), str(expected3))
        assert plaintext_size(backing_size(p, format3), format3) == p


def record():
    print("# §10.15 file record (§6.2)")
    record_key = hkdf_sha256(NAME_KEY, VOLUME_ID, b"epochfs/v3/record", 32)
    assert record_key == HKDF(algorithm=hashes.SHA256(), length=32, salt=VOLUME_ID, info=b"epochfs/v3/record").derive(NAME_KEY)
    check("record_key", record_key, "97d6741d9839f25f5f8b1fe88a43298f607cefad4e154bab43e7fad810eeafd1")
    other_nonce = bytes(range(0xc0, 0xcc))
    fields = (struct.pack(">HH", 3, 0) + FILE_ID + struct.pack(">QQQ", 2, 10000, 3)
              + b"\x01" + bytes(7) + struct.pack(">Q", 2) + NONCE + other_nonce
              + b"\x02" + bytes(7) + struct.pack(">Q", 0) + other_nonce + bytes(range(0xd0, 0xdc)))
    fields += bytes(484 - len(fields))
    tag = gcm_seal(record_key, KEYRING_NONCE, fields, b"")
    assert tag == AESGCM(record_key).encrypt(KEYRING_NONCE, b"", fields)
    check("record bytes 0..123", fields[:124],
          "0003000000112233445566778899aabbccddeeff000000000000000200000000"
          "00002710000000000000000301000000000000000000000000000002a0a1a2a3"
          "a4a5a6a7a8a9aaabc0c1c2c3c4c5c6c7c8c9cacb020000000000000000000000"
          "00000000c0c1c2c3c4c5c6c7c8c9cacbd0d1d2d3d4d5d6d7d8d9dadb")
    check("record tag", tag, "7fbf2d40ee6d234d46915b0d48c8a4b2")
    check("sha256 of the whole record", sha256(fields + KEYRING_NONCE + tag),
          "3baac25296bb6339f45fb4a551b4c5b098527691a0e047385454f8058348feea")


def directory_record():
    print("# §10.16 directory record (§5.6)")
    directory_key = hkdf_sha256(NAME_KEY, VOLUME_ID, b"epochfs/v4/directory", 32)
    assert directory_key == HKDF(algorithm=hashes.SHA256(), length=32, salt=VOLUME_ID, info=b"epochfs/v4/directory").derive(NAME_KEY)
    check("directory_key", directory_key, "745202a70ffa5fe4977258bb443b8edef5d1af84d17b2427771efe26fec38a90")
    iv = bytes(range(0xf0, 0x100))
    entries = sorted([(sha256(b"name-one")[:16], 8, FILE_ID, 7), (sha256(b"name-two")[:16], 4, bytes(range(0xe0, 0xf0)), 0)])
    fields = struct.pack(">HHIQ", 4, 0, len(entries), 5) + b"".join(d + bytes([t]) + i + struct.pack(">Q", q) for d, t, i, q in entries)
    tag = gcm_seal(directory_key, KEYRING_NONCE, iv + fields, b"")
    assert tag == AESGCM(directory_key).encrypt(KEYRING_NONCE, b"", iv + fields)
    check("directory record fields", fields,
          "00040000000000020000000000000005cf97a9ff4da3c751d3d473a5c99ae6da"
          "0800112233445566778899aabbccddeeff0000000000000007f1cc0c8644fd0a"
          "33598ca1f9138808dd04e0e1e2e3e4e5e6e7e8e9eaebecedeeef0000000000000000")
    check("directory record tag", tag, "51ca2824940ded645a4407e5122fd734")
    check("sha256 of the IV file", sha256(iv + fields + KEYRING_NONCE + tag), "8d202a24146ae97c74d9bd608dc348f03362ba42d09259584be92cbb5160f48b")


def attribute_binding():
    print("# §10.18 attribute binding (§5.5)")
    name = b"user.epochfs.FeQ1TwqLhpTYZdhwjba0G_5MXz90MLBd2MZ6mA"
    value = bytes.fromhex("010000000007a0a1a2a3a4a5a6a7a8a9aaab4f281da84db5f0c307a25e6b6b647c1b3254eaaaef")
    empty = sha256(b"")[:16]
    check("digest of no attribute", empty, "e3b0c44298fc1c149afbf4c8996fb924")
    digest = sha256(struct.pack(">H", len(name)) + name + struct.pack(">I", len(value)) + value)[:16]
    check("digest of the §10.8 attribute", digest, "0e4dfbd1daf298048de0ec336c7768b9")
    directory_key = hkdf_sha256(NAME_KEY, VOLUME_ID, b"epochfs/v4/directory", 32)
    iv = bytes(range(0xf0, 0x100))
    entries = sorted([(sha256(b"name-one")[:16], 8, FILE_ID, 7), (sha256(b"name-two")[:16], 4, bytes(range(0xe0, 0xf0)), 0)])
    fields = (struct.pack(">HHIQ", 5, 0, len(entries), 6) + digest + empty
              + b"".join(d + bytes([t]) + i + struct.pack(">Q", q) for d, t, i, q in entries))
    tag = gcm_seal(directory_key, KEYRING_NONCE, iv + fields, b"")
    assert tag == AESGCM(directory_key).encrypt(KEYRING_NONCE, b"", iv + fields)
    check("directory record v5 fields 0..47", fields[:48], "000500000000000200000000000000060e4dfbd1daf298048de0ec336c7768b9e3b0c44298fc1c149afbf4c8996fb924")
    check("directory record v5 tag", tag, "6b7efbedeb15b2186960bcce4668ef45")
    check("sha256 of the IV file", sha256(iv + fields + KEYRING_NONCE + tag), "8e103b44cccb41cefbd44bbe4a838c76c997176aa479cc15936846d221b400de")


def anchor():
    print("# §10.17 anchor record (§3.8)")
    anchor_key = hkdf_sha256(NAME_KEY, VOLUME_ID, b"epochfs/v4/anchor", 32)
    assert anchor_key == HKDF(algorithm=hashes.SHA256(), length=32, salt=VOLUME_ID, info=b"epochfs/v4/anchor").derive(NAME_KEY)
    check("anchor_key", anchor_key, "775570923bb77e131583aa022460183b2598e701c55d22331dbd0fb54f3fddb5")
    fields = struct.pack(">HHQ", 1, 0, 42)
    tag = gcm_seal(anchor_key, KEYRING_NONCE, VOLUME_ID + fields, b"")
    assert tag == AESGCM(anchor_key).encrypt(KEYRING_NONCE, b"", VOLUME_ID + fields)
    check("anchor record fields", fields, "00010000000000000000002a")
    check("anchor record tag", tag, "97b16a4edf9e653bc28367ff8fd1ba44")
    check("epochfs.anchor", fields + KEYRING_NONCE + tag,
          "00010000000000000000002ab0b1b2b3b4b5b6b7b8b9babb97b16a4edf9e653bc28367ff8fd1ba44")
    machine = "epochfs anchor\nvolume " + VOLUME_ID.hex() + "\nsequence " + f"{42:020d}" + "\n"
    check("machine's file", machine.encode().hex(), "65706f6368667320616e63686f720a766f6c756d652030663165326433633462356136393738383739366135623463336432653166300a73657175656e63652030303030303030303030303030303030303034320a")


def wal():
    print("# §11.4, §11.5 etcd WAL")
    check("crc32c('123456789')", f"{crc32c_update(0, b'123456789'):08x}", "e3069283")
    check("crc32c(a) then b == crc32c(a||b)",
          crc32c_update(crc32c_update(0, b"etcd wal "), b"\x5a" * 100) == crc32c_update(0, b"etcd wal " + b"\x5a" * 100), "True")
    metadata = b"node 1 cluster 7"
    snapshot = b"\x08\x00\x10\x00"
    crc = 0
    segment = wal_frame(4, crc, None)
    crc = crc32c_update(crc, metadata)
    segment += wal_frame(1, crc, metadata)
    crc = crc32c_update(crc, snapshot)
    segment += wal_frame(5, crc, snapshot)
    check("first 16 bytes", segment[:16], "04000000000000840804100000000000")
    check("first segment head", segment,
          "040000000000008408041000000000001a00000000000086080110da988ed90f"
          "1a106e6f6465203120636c757374657220370000000000000e00000000000082"
          "080510d4aa90b1081a04080010000000")
    check("running crc", f"{crc:08x}", "86241554")


if __name__ == "__main__":
    primitives()
    envelopes()
    names()
    header()
    cluster()
    content()
    record()
    directory_record()
    attribute_binding()
    anchor()
    wal()
    if FAILURES:
        print(f"{FAILURES} mismatch(es)")
        sys.exit(1)
    print("all vectors match")

"""Password hashing: hash and verify times of datalayer's hashers next to the libraries'.

No database.  Each line puts ``datalayer.auth.passwords`` beside the call it
wraps, interleaved in one run: argon2-cffi's ``PasswordHasher`` with the same
parameters for argon2id (the default for new hashes), ``hashlib.scrypt`` for
the scrypt hashes of release 0.1.  A last pair of lines shows what
``harden_runtime`` buys: a wrong password against a release 0.1 hash costs
at least one current verification, like an unknown e-mail address
(``dummy_verify``).  The absolute times are the figures docs/library/index.md quotes.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

import argon2

from benchmarks._common import Result, interleaved, print_results
from datalayer.auth import passwords

PASSWORD = "benchmark password"


def main(argv: list[str] | None = None) -> int:
    """Time hashing and verifying with the default argon2id and release 0.1's scrypt."""
    started = time.perf_counter()
    params = passwords.DEFAULT_PARAMS
    assert isinstance(params, passwords.Argon2Params)
    anchor = argon2.PasswordHasher(time_cost=params.time_cost, memory_cost=params.memory_cost,
                                   parallelism=params.parallelism, hash_len=32, salt_len=16)
    ours = passwords.hash_password(PASSWORD)
    theirs = anchor.hash(PASSWORD)
    old = passwords.ScryptParams()  # release 0.1: ln=14, r=8, p=1
    old_hash = passwords.hash_password(PASSWORD, params=old)
    salt = os.urandom(16)

    def repeat(fn: Callable[[], object]) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                fn()
        return run

    results: list[Result] = []
    p, r, q = interleaved(repeat(lambda: passwords.hash_password(PASSWORD)),
                          repeat(lambda: anchor.hash(PASSWORD)), rounds=9, batch=3)
    results.append(Result(f"hash, argon2id {params.encode()}", p, r, unit="ms",
                          ratio_override=q, note="raw: argon2.PasswordHasher().hash"))
    p, r, q = interleaved(repeat(lambda: passwords.verify_password(PASSWORD, ours)),
                          repeat(lambda: anchor.verify(theirs, PASSWORD)), rounds=9, batch=3)
    results.append(Result("verify, argon2id (right password)", p, r, unit="ms",
                          ratio_override=q, note="raw: argon2.PasswordHasher().verify"))

    def raw_scrypt() -> None:
        hashlib.scrypt(PASSWORD.encode(), salt=salt, n=1 << old.ln, r=old.r, p=old.p,
                       maxmem=old.maxmem, dklen=32)

    p, r, q = interleaved(repeat(lambda: passwords.verify_password(PASSWORD, old_hash)),
                          repeat(raw_scrypt), rounds=9, batch=3)
    results.append(Result("verify, scrypt ln=14 (release 0.1)", p, r, unit="ms",
                          ratio_override=q, note="raw: hashlib.scrypt"))

    def wrong_old() -> None:
        if not passwords.verify_password("wrong", old_hash):
            passwords.harden_runtime("wrong", old_hash)

    passwords.dummy_verify("warm up")  # the dummy hash is made once
    p, r, q = interleaved(repeat(wrong_old), repeat(lambda: passwords.dummy_verify("wrong")),
                          rounds=9, batch=3)
    results.append(Result("wrong password vs release 0.1 hash (hardened)", p, r, unit="ms",
                          ratio_override=q,
                          note="raw: dummy_verify (an unknown address); ratio <= 1: no faster"))
    print_results("password hashing: datalayer vs the libraries", results)
    print(f"(took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Identifiers: prefixed, unique, in creation order, the same shape as ever."""

from __future__ import annotations

import os
import re
import time

from core import ids

_SHAPE = re.compile(r"^cus_[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def test_ids_are_unique_and_sort_in_creation_order_even_within_a_millisecond() -> None:
    made = ids.new_ids(ids.CUSTOMER, 50_000)  # far more than one millisecond's worth of ids
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(_SHAPE.match(i) for i in made)


def test_an_id_starts_with_its_millisecond_so_later_ids_sort_after_older_ones() -> None:
    before = time.time_ns() // 1_000_000
    made = ids.new_id(ids.CUSTOMER)
    after = time.time_ns() // 1_000_000
    stamp = int(made[4:14].translate(str.maketrans("JKMNPQRSTVWXYZ", "IJKLMNOPQRSTUV")), 32)
    assert before <= stamp <= after + 1
    time.sleep(0.002)
    assert ids.new_id(ids.CUSTOMER) > made


def test_random_digits_are_spread_over_the_whole_alphabet() -> None:
    tails = "".join(i[-13:] for i in ids.new_ids(ids.CUSTOMER, 2_000))
    counts = [tails.count(digit) for digit in "0123456789ABCDEFGHJKMNPQRSTVWXYZ"]
    expected = len(tails) / 32
    assert all(0.8 * expected < c < 1.2 * expected for c in counts)


def test_a_forked_child_does_not_reuse_its_parents_random_digits() -> None:
    ids.new_id(ids.CUSTOMER)  # the parent holds a pool of random digits
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, ids.new_id(ids.CUSTOMER).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    parent = ids.new_id(ids.CUSTOMER)
    assert child[-13:] != parent[-13:]

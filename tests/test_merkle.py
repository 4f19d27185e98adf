"""AIGP hashing (spec 8.8): flat hash, leaf hash, promote-odd Merkle root, hash shape."""

from __future__ import annotations

import hashlib

import pytest
from aigp.events import compute_governance_hash, compute_leaf_hash, compute_merkle_governance_hash
from hypothesis import given
from hypothesis import strategies as st

from aigp_otel_bridge.merkle import EMPTY_SHA256, flat_hash, is_sha256_hex, leaf_hash, merkle_root


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_empty_sha256_is_the_digest_of_the_empty_string() -> None:
    assert EMPTY_SHA256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("content", ["", "hello", "Trading limits: max $1M", "ünïcødé ✓", "a\nb\x00c"])
def test_flat_hash_is_sha256_of_utf8_content(content: str) -> None:
    assert flat_hash(content) == hashlib.sha256(content.encode("utf-8")).hexdigest()
    assert flat_hash(content) == compute_governance_hash(content)


def test_flat_hash_of_known_vector() -> None:
    assert flat_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_leaf_hash_is_sha256_of_type_name_content() -> None:
    expected = _sha("policy:policy.trading-limits:max 1M")
    assert leaf_hash("policy", "policy.trading-limits", "max 1M") == expected


def test_leaf_hash_separates_domains() -> None:
    # Same content under a different type or name gives a different leaf, and no leaf is the flat hash.
    policy = leaf_hash("policy", "policy.x", "same")
    prompt = leaf_hash("prompt", "policy.x", "same")
    other_name = leaf_hash("policy", "policy.y", "same")
    assert len({policy, prompt, other_name, flat_hash("same")}) == 4


@pytest.mark.parametrize(
    ("resource_type", "name", "content"),
    [
        ("policy", "policy.trading-limits", "Max position: $1M"),
        ("prompt", "prompt.system", ""),
        ("tool", "tool.web-search", "https://example.com"),
        ("compliance", "not an agrn name", "ünïcødé"),
    ],
)
def test_leaf_hash_matches_reference_sdk(resource_type: str, name: str, content: str) -> None:
    assert leaf_hash(resource_type, name, content) == compute_leaf_hash(resource_type, name, content)


def test_one_leaf_is_its_own_root() -> None:
    only = _sha("x")
    assert merkle_root([only]) == only


def test_no_leaves_is_an_error() -> None:
    with pytest.raises(ValueError):
        merkle_root([])


def test_two_leaves_sorted_then_hashed_as_hex_text() -> None:
    a, b = sorted([_sha("one"), _sha("two")])
    expected = hashlib.sha256((a + b).encode("ascii")).hexdigest()
    assert merkle_root([b, a]) == expected
    assert merkle_root([a, b]) == expected
    # Hashing the raw bytes instead of the hex text would give another value.
    assert expected != hashlib.sha256(bytes.fromhex(a) + bytes.fromhex(b)).hexdigest()


def test_worked_example_three_leaves_promote_the_odd_last_node() -> None:
    leaves = [
        leaf_hash("policy", "policy.trading-limits", "Max position: $1M"),
        leaf_hash("prompt", "prompt.analyst", "You are a careful analyst."),
        leaf_hash("tool", "tool.market-data", "GET /quotes"),
    ]
    # Step 1: sort the hex strings ascending.
    first, second, third = sorted(leaves)
    # Step 2: pair left to right; the odd last leaf is promoted unchanged (not paired with itself).
    parent = hashlib.sha256((first + second).encode("ascii")).hexdigest()
    level = [parent, third]
    # Step 3: one more level gives the root.
    root = hashlib.sha256((level[0] + level[1]).encode("ascii")).hexdigest()

    assert merkle_root(leaves) == root
    assert merkle_root(reversed(leaves)) == root
    duplicated = hashlib.sha256(
        (parent + hashlib.sha256((third + third).encode("ascii")).hexdigest()).encode("ascii")
    ).hexdigest()
    assert merkle_root(leaves) != duplicated


def test_five_leaves_by_hand() -> None:
    h = sorted(_sha(str(i)) for i in range(5))

    def parent(left: str, right: str) -> str:
        return hashlib.sha256((left + right).encode("ascii")).hexdigest()

    level1 = [parent(h[0], h[1]), parent(h[2], h[3]), h[4]]
    level2 = [parent(level1[0], level1[1]), level1[2]]
    assert merkle_root(h[::-1]) == parent(level2[0], level2[1])


_TYPES = ["policy", "prompt", "tool", "context", "memory", "model", "lineage"]


def _resources(count: int) -> list[tuple[str, str, str]]:
    return [(t, f"{t}.r{i}", f"content {i}") for i, t in enumerate(_TYPES[:count])]


RESOURCE_LISTS = [
    _resources(2),
    _resources(3),
    _resources(4),
    _resources(5),
    _resources(7),
    [("policy", "policy.same", "x"), ("prompt", "policy.same", "x"), ("policy", "policy.other", "x")],
]


@pytest.mark.parametrize("resources", RESOURCE_LISTS, ids=lambda r: f"{len(r)}-resources")
def test_merkle_root_matches_reference_sdk(resources: list[tuple[str, str, str]]) -> None:
    expected_root, tree = compute_merkle_governance_hash(resources)
    assert tree is not None
    ours = [leaf_hash(*resource) for resource in resources]
    assert sorted(ours) == sorted(leaf["hash"] for leaf in tree["leaves"])
    assert merkle_root(ours) == expected_root
    assert is_sha256_hex(expected_root)


def test_single_resource_reference_hash_is_the_flat_hash() -> None:
    expected, tree = compute_merkle_governance_hash([("policy", "policy.a", "alpha")])
    assert tree is None
    assert flat_hash("alpha") == expected


@given(st.lists(st.text(max_size=20), min_size=1, max_size=12))
def test_root_is_independent_of_leaf_order(contents: list[str]) -> None:
    leaves = [_sha(c) for c in contents]
    assert merkle_root(leaves) == merkle_root(list(reversed(leaves))) == merkle_root(sorted(leaves))
    assert is_sha256_hex(merkle_root(leaves))


@pytest.mark.parametrize(
    "value",
    [
        EMPTY_SHA256,
        "0" * 64,
        "f" * 64,
        "0123456789abcdef" * 4,
    ],
)
def test_is_sha256_hex_accepts_64_lowercase_hex(value: str) -> None:
    assert is_sha256_hex(value)


@pytest.mark.parametrize(
    "value",
    [
        EMPTY_SHA256.upper(),
        "A" + EMPTY_SHA256[1:],
        EMPTY_SHA256[:63],
        EMPTY_SHA256 + "0",
        "",
        "g" * 64,
        " " + EMPTY_SHA256[1:],
        EMPTY_SHA256[:63] + "\n",
        EMPTY_SHA256 + "\n",
        None,
        0,
        int(EMPTY_SHA256, 16),
        EMPTY_SHA256.encode("ascii"),
        [EMPTY_SHA256],
    ],
)
def test_is_sha256_hex_rejects_everything_else(value: object) -> None:
    assert not is_sha256_hex(value)

"""Sub-network code parsing (docs/checkpoints.md, "Sub-network codes")."""

import pytest

from adn_edge import subnet
from adn_edge.errors import AdnError


@pytest.mark.parametrize(("spec", "code"), [
    ("1010", "1010"), ("super", "1111"), ("BASE", "0000"), ("TFFF", "0111"), ("tfff", "0111"),
    ("FFFF", "1111"), ("TTTT", "0000"), (" 0101 ", "0101"),
])
def test_parse_accepts_every_documented_spelling(spec: str, code: str) -> None:
    assert subnet.parse_code(spec, 4) == code


@pytest.mark.parametrize("spec", ["101", "10101", "1021", "TFX F", "", "all", "yes", "TF1F"])
def test_parse_rejects_with_a_message_naming_model_s_and_examples(spec: str) -> None:
    with pytest.raises(AdnError) as err:
        subnet.parse_code(spec, 4, "resnet50")
    msg = err.value.paragraph()
    assert "resnet50" in msg and "4 skippable stages" in msg
    assert all(repr(e) in msg for e in subnet.examples(4))


def test_skip_cfg_round_trip_and_official_meaning() -> None:
    # The official --skip-cfg uses T for *skipped*: TFFF skips the first stage.
    assert subnet.to_skip_cfg("0111") == "TFFF"
    assert subnet.to_skip("0111") == [True, False, False, False]
    for code in subnet.all_codes(5):
        assert subnet.from_skip(subnet.to_skip(code)) == code
        assert subnet.parse_code(subnet.to_skip_cfg(code), 5) == code


def test_expand_all_orders_super_first_then_by_cost_and_dedupes() -> None:
    cost = {c: c.count("1") + 0.1 * int(c, 2) / 16 for c in subnet.all_codes(4)}
    codes = subnet.expand(["all"], 4, cost=cost.__getitem__)
    assert codes[0] == "1111" and len(codes) == 16 and len(set(codes)) == 16
    assert [cost[c] for c in codes[1:]] == sorted((cost[c] for c in codes[1:]), reverse=True)
    assert subnet.expand(["1010", "FTFT", "base,super"], 4) == ["1010", "0000", "1111"]
    with pytest.raises(AdnError):
        subnet.expand([""], 4)

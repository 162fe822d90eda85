"""GMACs per sub-network against the official README's GFLOPs column (issue 2's floors:
within 3 % for ResNet50, ViT-B/16 and Swin-T, within 7 % for MobileNetV2, whose README
figures also count BN/ReLU/pooling operations)."""

import pytest

from adn_edge import subnet
from adn_edge.flops import arch_costs

README = {
    "resnet50": ({"FFFF": 4.11, "TFFF": 3.90, "TTFF": 3.46, "TTTF": 2.80, "TTTT": 2.58}, 0.03),
    "vit_b_16": ({"FFFF": 17.58, "FFFT": 16.20, "TTFF": 14.67, "TTFT": 13.21, "TTTT": 11.76}, 0.03),
    "swin_t": ({"FFFF": 4.49, "TFFF": 4.11, "TTFF": 3.75, "TTTT": 2.34}, 0.03),
    "mobilenet_v2": ({"FFFFF": 0.32, "TTTTT": 0.22}, 0.07),
}


@pytest.mark.parametrize("arch", list(README))
def test_gmacs_match_the_official_readme(arch: str) -> None:
    figures, tolerance = README[arch]
    costs = arch_costs(arch)
    for cfg, gflops in figures.items():
        code = subnet.parse_code(cfg, len(cfg))
        assert costs[code].gmacs == pytest.approx(gflops, rel=tolerance), (arch, cfg)


def test_costs_fall_when_a_stage_is_skipped() -> None:
    costs = arch_costs("resnet50")
    for code, cost in costs.items():
        for k, c in enumerate(code):
            if c == "1":
                fewer = code[:k] + "0" + code[k + 1:]
                assert costs[fewer].macs < cost.macs and costs[fewer].params <= cost.params

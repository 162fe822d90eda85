"""``adn-edge subnets``: the sub-networks of an architecture and what each costs."""

from __future__ import annotations

import typer

from adn_edge.cli.output import gmacs, print_json, round_gmacs, table


def subnet_rows(arch: str, num_classes: int | None = None, input_size: int | None = None) -> list[dict]:
    """One row per sub-network, in the order every other table uses
    (:func:`adn_edge.subnet.ordered_all`: super-net first, then by descending MACs)."""
    from adn_edge import subnet
    from adn_edge.flops import arch_costs
    from adn_edge.models import get_spec

    spec = get_spec(arch)
    costs = arch_costs(arch, num_classes, input_size)
    codes = subnet.ordered_all(spec.num_stages, cost=lambda c: costs[c].macs)
    return [{"code": c, "skip_cfg": subnet.to_skip_cfg(c), "gmacs": round_gmacs(costs[c].gmacs),
             "macs": int(costs[c].macs), "params": costs[c].params} for c in codes]


def register(app: typer.Typer) -> None:
    @app.command()
    def subnets(
        arch: str = typer.Option(..., "--arch", "-a", help="Registered architecture (an unknown name prints the "
                                 "list of registered ones)."),
        input_size: int = typer.Option(None, "--input-size", help="Image side in pixels (default: the arch's)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """List every sub-network of ARCH: code, official skip_cfg, GMACs (batch 1), parameters read."""
        rows = subnet_rows(arch, input_size=input_size)
        if as_json:
            print_json({"arch": arch, "subnets": rows})
            return
        table(f"{arch}: {len(rows)} sub-networks (GMACs = conv/linear/attention multiply-accumulates, batch 1)",
              ["code", "skip_cfg", "GMACs", "params"],
              [(r["code"], r["skip_cfg"], gmacs(r["gmacs"]), f"{r['params']:,}") for r in rows])

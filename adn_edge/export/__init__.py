"""ONNX export of ADN sub-networks: graph building, parity checks, the manifest."""

from adn_edge.export.exporter import ExportedSubnet, Exporter, ExportOptions, export

__all__ = ["ExportOptions", "ExportedSubnet", "Exporter", "export"]

"""moetrace: benchmark and trace large MoE models on inference engines."""

__version__ = "0.1.0"

"""rksearch: architecture search and ablation studies over Runge-Kutta CNNs."""

__version__ = "0.1.0"

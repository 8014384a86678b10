"""spikefed: federated learning of spiking neural networks on heterogeneous neuromorphic devices."""

__version__ = "0.1.0"

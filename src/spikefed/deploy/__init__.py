"""Deployment on real machines through Flower: ServerApp/ClientApp, the launcher, certificates, SecAgg+.

Sits above :mod:`spikefed.experiment` (it builds runs from the same config) and runs the same round stages as
the simulation in :mod:`spikefed.federated`.
"""

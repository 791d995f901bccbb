"""Stateful hardware: memory, GIC distributor/redistributors/ITS/CPU interfaces, devices."""

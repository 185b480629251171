"""The worker core under seeded schedules of faults, in simulated time (see sim.py)."""

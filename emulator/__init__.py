"""The physical world in SimPy: drive, reservoir, catheter, battery, clock, faults, patient."""

"""The simulation stage: GalSim galaxy populations, PSFs, LSST training stamps and DES-like survey fields.

Never imports torch (DESIGN.md); the training stage reads the data sets through ``sim.dataset``.
"""

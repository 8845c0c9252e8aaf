"""Generators for the test world and the demo: images, sources in their released formats, servers on loopback, and
a tiny model with a mixture to train it on (`train`, which needs the `train` extra).

Nothing here reaches the network; everything is generated on the spot from a seed.
"""

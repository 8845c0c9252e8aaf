"""Generators for the test world and the demo: images, sources in their released formats, servers on loopback.

Nothing here reaches the network; everything is generated on the spot from a seed.
"""

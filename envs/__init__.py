"""Simulators and robots behind one interface, and CALVIN's evaluation protocol.

Imports nothing else from the project.
"""

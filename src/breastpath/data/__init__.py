"""Data: scan sources into an index, split by patient, decode once into a packed cache."""

"""Data: atomic-file checks, whole-sequence training batches, raw-data conversion.

A model-specific dataset class ``<Model>Dataset`` defined here is picked before RecBole's.
"""

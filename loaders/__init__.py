"""Datasets for anysweep: sources on disk, the registry, prepared files (.beton or .npy),
class subsets and size controls, and training/test loaders on the FFCV or in-memory backend."""

"""Data sources: each module builds datasets and loaders plus the metadata models need."""

"""Readers of image data on disk (and embedded), feeding the shared protocols."""

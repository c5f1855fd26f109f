"""Reading the user's data: an `ImageSet` (images, labels, bands, preprocessing) from arrays,
GeoTIFF folders, CSV lists, HDF5, NumPy files or torch datasets, with what the files and sensor
presets say about the bands (names, wavelengths, spectral groups and regions)."""

"""The results file: versioned model with units in names, writer/reader, environment capture."""

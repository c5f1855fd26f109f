"""Loading the user's classifier into PyTorch, whatever its format, with the conversion's
measured fidelity (the converters themselves live in the top-level `converters` package)."""

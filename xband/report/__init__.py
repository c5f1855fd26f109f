"""What the user reads: the verdict per class, the figures and the HTML report."""

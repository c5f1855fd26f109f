"""The attribution run: settings, the network as the methods call it, the batch runner, rounds
until each class is settled (or every image, or Ray), and the per-class tables of the result."""

"""Applications around the bundles (not imported by the package): ``monailabel/`` is a MONAI Label app folder."""

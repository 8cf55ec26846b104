"""A MONAI Label app serving the monai-contrastive bundles (``main.py``; MONAI Label loads it from this folder).

Importing this package does not import MONAI Label; ``main.py`` does, and is loaded by ``monailabel start_server
--app <a copy of this folder>`` only.
"""

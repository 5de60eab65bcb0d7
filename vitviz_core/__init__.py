"""vitviz_core: what Vision Transformers learn, as small tested functions.

The package behind the vitviz book. It reproduces Ghiasi, Kazemi et al. (2022) "What do
Vision Transformers Learn? A Visual Exploration" and Nguyen et al. (2022) "Vision
Transformer Visualization: What Neurons Tell and How Neurons Behave?" on any timm model.

Modules (import them directly; nothing heavy is imported here):

- ``config``   where data, weights and caches live (arguments and environment variables)
- ``errors``   the one-line user-facing exception types
- ``models``   model zoo: built-in offline weights, local files, the timm hub, random init
- ``hooks``    readable hook-point names for every ViT family and a capture context manager
- ``data``     ImageNet-style folders, a built-in photo gallery, robust image reading, boxes
"""

import logging as _logging

__version__ = "0.1.0"

# Library convention: log records go nowhere unless the application configures logging
# (a book chapter's cell must not show cache housekeeping on stderr).
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

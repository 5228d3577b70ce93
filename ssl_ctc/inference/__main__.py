"""``python -m ssl_ctc.inference EXPERIMENT...``: (re)write experiments' inference folders.

``python -m ssl_ctc.inference export FOLDER... --format onnx [--int8]``: export their
acoustic models to ONNX, checked against PyTorch (``ssl_ctc.inference.onnx_export``).
"""

import sys

from ssl_ctc.inference.writer import main

sys.exit(main())

"""``python -m ssl_ctc.inference EXPERIMENT...``: (re)write experiments' inference folders."""

import sys

from ssl_ctc.inference.writer import main

sys.exit(main())

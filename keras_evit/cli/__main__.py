"""``python -m keras_evit.cli``, as the ``keras-evit`` command."""

import sys

from .main import main

sys.exit(main())

"""`python -m keras_vae.cli ...` runs the `keras-vae` command."""

import sys

from keras_vae.cli.commands import main

sys.exit(main())

import sys

from keras_unroll_cli import main

sys.exit(main())

import sys

from keras_unroll.cli import main

sys.exit(main())

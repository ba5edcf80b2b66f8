import sys

from survey_deblend.cli import main

sys.exit(main())

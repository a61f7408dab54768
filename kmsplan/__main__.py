"""`python -m kmsplan` runs the same CLI as the `kmsplan` console script."""

from kmsplan.cli import main

main()

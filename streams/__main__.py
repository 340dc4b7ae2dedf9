"""`python -m streams worker -l info` is the same as `faust -A streams.app worker -l info`."""

from streams.app import main

main()
